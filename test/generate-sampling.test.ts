import { describe, expect, it } from 'vitest';
import { createRng, type Rng } from '../src/generate/rng.js';
import { greedyToken, kthLargest, TokenSampler, type SamplingParams } from '../src/generate/sampling.js';
import { DvlError } from '../src/util/errors.js';
import { prng, roundToBf16 } from './helpers/random-weights.js';

/** An Rng that returns the given uniforms. */
function fixedRng(...uniforms: number[]): Rng {
  let i = 0;
  return { nextFloat: () => uniforms[i++], nextUint32: () => 0 };
}

const f32 = (values: number[]) => Float32Array.from(values);

/** Normalised probabilities (float64) of the sampler's filtered distribution, as a map id -> p. */
function keptProbabilities(sampler: TokenSampler, logits: Float32Array): Map<number, number> {
  const d = sampler.distribution(logits, 0);
  const out = new Map<number, number>();
  for (let j = 0; j < d.count; j++) if (d.weights[j] > 0) out.set(d.ids[j], d.weights[j] / d.total);
  return out;
}

/**
 * Naive top-k/top-p on the whole vocabulary with full sorts (a test oracle): kept ids, ascending.
 * top-k keeps values >= the k-th largest; top-p keeps the sorted prefix (value desc, id asc) up to and including
 * the first token at which the cumulative softmax exceeds float32(p).
 */
function naiveKept(logits: Float32Array, { temperature, topK, topP }: SamplingParams): number[] {
  let values = Array.from(logits, (x) => (temperature === 1 ? x : Math.fround(x / Math.fround(temperature))));
  if (topK > 0 && topK < values.length) {
    const kth = [...values].sort((a, b) => b - a)[topK - 1];
    values = values.map((v) => (v < kth ? -Infinity : v));
  }
  let kept = values.map((v, i) => i).filter((i) => values[i] > -Infinity);
  if (topP < 1) {
    const order = [...kept].sort((a, b) => (values[a] === values[b] ? a - b : values[b] - values[a]));
    const max = values[order[0]];
    let total = 0;
    for (const i of kept) total += Math.exp(values[i] - max);
    let cumulative = 0;
    let end = order.length;
    for (let r = 0; r < order.length; r++) {
      cumulative += Math.exp(values[order[r]] - max) / total;
      if (cumulative > Math.fround(topP)) {
        end = r + 1;
        break;
      }
    }
    kept = order.slice(0, end).sort((a, b) => a - b);
  }
  return kept;
}

describe('greedyToken', () => {
  it('argmax (first index of the maximum) and its softmax probability, rounded to float32', () => {
    const logits = f32([1, 3, 3, 2]);
    const choice = greedyToken(logits, 0, 4);
    expect(choice.id).toBe(1);
    const e = Math.E;
    expect(choice.prob).toBe(Math.fround(e ** 3 / (e + 2 * e ** 3 + e ** 2)));
  });

  it('reads the row at an offset', () => {
    const logits = f32([9, 9, 9, 0, -1, 5, 4]);
    expect(greedyToken(logits, 3, 4)).toEqual({ id: 2, prob: Math.fround(1 / (Math.exp(-5) + Math.exp(-6) + 1 + Math.exp(-1))) });
  });

  it('rejects NaN logits as a model error', () => {
    expect(() => greedyToken(f32([0, Number.NaN, 1]), 0, 3)).toThrow(DvlError);
  });
});

describe('kthLargest', () => {
  it('counts repeated values like torch.topk(...).values[-1]', () => {
    const v = f32([1, 5, 3, 5, 2, 4]);
    expect([1, 2, 3, 4, 5, 6].map((k) => kthLargest(v, k))).toEqual([5, 5, 4, 3, 2, 1]);
  });

  it('matches a full sort on a large vocabulary with many repeated (bf16) values', () => {
    const rand = prng(3);
    const n = 151_936;
    const values = roundToBf16(Float32Array.from({ length: n }, () => (rand() + rand() + rand() - 1.5) * 6));
    values[17] = -Infinity;
    const sorted = Float32Array.from(values).sort().reverse();
    for (const k of [1, 2, 40, 1000, 75_000, n - 1, n]) expect(kthLargest(values, k)).toBe(sorted[k - 1]);
  });
});

describe('TokenSampler: top-k and top-p (hand-derived)', () => {
  const logits = f32([1, 5, 3, 5, 2, 4]);

  it('top-k keeps ties with the k-th value', () => {
    const two = keptProbabilities(new TokenSampler(6, { temperature: 1, topK: 2, topP: 1 }), logits);
    expect([...two.keys()]).toEqual([1, 3]);
    expect(two.get(1)).toBeCloseTo(0.5, 15);
    const three = keptProbabilities(new TokenSampler(6, { temperature: 1, topK: 3, topP: 1 }), logits);
    expect([...three.keys()]).toEqual([1, 3, 5]);
    const z = 2 + Math.exp(-1);
    expect(three.get(5)).toBeCloseTo(Math.exp(-1) / z, 15);
    // k >= vocabulary: no filtering
    expect(keptProbabilities(new TokenSampler(6, { temperature: 1, topK: 6, topP: 1 }), logits).size).toBe(6);
    expect(keptProbabilities(new TokenSampler(6, { temperature: 1, topK: 99, topP: 1 }), logits).size).toBe(6);
  });

  // probabilities 0.15, 0.5, 0.05, 0.3 for ids 0..3
  const probs = [0.15, 0.5, 0.05, 0.3];
  const fromProbs = f32(probs.map(Math.log));

  it('top-p keeps the sorted prefix through the first token whose cumulative probability exceeds p', () => {
    const kept = (topP: number) => [...keptProbabilities(new TokenSampler(4, { temperature: 1, topK: 0, topP }), fromProbs).keys()];
    expect(kept(0.45)).toEqual([1]); // 0.5 > 0.45 already: the first token only
    expect(kept(0.7)).toEqual([1, 3]); // 0.5, 0.8 > 0.7
    expect(kept(0.9)).toEqual([0, 1, 3]); // 0.5, 0.8, 0.95 > 0.9
    expect(kept(0.97)).toEqual([0, 1, 2, 3]); // never exceeds before the last
    expect(kept(1)).toEqual([0, 1, 2, 3]);
    // renormalised over the kept tokens
    const p = keptProbabilities(new TokenSampler(4, { temperature: 1, topK: 0, topP: 0.7 }), fromProbs);
    expect(p.get(1)).toBeCloseTo(0.5 / 0.8, 6);
    expect(p.get(3)).toBeCloseTo(0.3 / 0.8, 6);
  });

  it('top-p ties in the sort: lower id first', () => {
    // ids 0 and 2 tie at 0.4, id 1 has 0.2: with p = 0.3 only one of the tied tokens is kept
    const tied = f32([Math.log(0.4), Math.log(0.2), Math.log(0.4)]);
    const kept = keptProbabilities(new TokenSampler(3, { temperature: 1, topK: 0, topP: 0.3 }), tied);
    expect([...kept.keys()]).toEqual([0]);
  });

  it('temperature divides the logits (in float32) before filtering', () => {
    const p = keptProbabilities(new TokenSampler(4, { temperature: 2, topK: 0, topP: 1 }), fromProbs);
    const root = probs.map(Math.sqrt);
    const z = root.reduce((a, b) => a + b, 0);
    root.forEach((r, i) => expect(p.get(i)).toBeCloseTo(r / z, 6));
  });

  it('top-k then top-p on what is left', () => {
    // top-3 keeps ids 1, 3, 0 (0.5, 0.3, 0.15 -> renormalised 0.526, 0.316, 0.158); p = 0.6: 0.526, 0.842 > 0.6
    const kept = keptProbabilities(new TokenSampler(4, { temperature: 1, topK: 3, topP: 0.6 }), fromProbs);
    expect([...kept.keys()]).toEqual([1, 3]);
  });
});

describe('TokenSampler: the draw', () => {
  const probs = [0.15, 0.5, 0.05, 0.3];
  const logits = f32(probs.map(Math.log));
  const sampler = new TokenSampler(4, { temperature: 1, topK: 0, topP: 1 });

  it('inverse CDF in id order: the first id whose cumulative weight exceeds u * total', () => {
    // cumulative 0.15, 0.65, 0.70, 1.0
    const pick = (u: number) => sampler.choose(logits, 0, fixedRng(u)).id;
    expect([0, 0.1, 0.149, 0.151, 0.6, 0.66, 0.69, 0.71, 0.999999].map(pick)).toEqual([0, 0, 0, 1, 1, 2, 2, 3, 3]);
  });

  it('returns the drawn token probability under the filtered distribution, rounded to float32', () => {
    const choice = sampler.choose(logits, 0, fixedRng(0.5));
    expect(choice.id).toBe(1);
    const d = sampler.distribution(logits, 0);
    expect(choice.prob).toBe(Math.fround(d.weights[1] / d.total));
    expect(choice.prob).toBeCloseTo(0.5, 6);
    const filtered = new TokenSampler(4, { temperature: 1, topK: 2, topP: 1 }).choose(logits, 0, fixedRng(0.9));
    expect(filtered.id).toBe(3);
    expect(filtered.prob).toBeCloseTo(0.3 / 0.8, 6);
  });

  it('never draws a token removed by top-k / top-p, and draws the rest at their frequencies', () => {
    const rng = createRng(11);
    const filtered = new TokenSampler(4, { temperature: 1, topK: 0, topP: 0.7 });
    const counts = [0, 0, 0, 0];
    const n = 20_000;
    for (let i = 0; i < n; i++) counts[filtered.choose(logits, 0, rng).id]++;
    expect(counts[0]).toBe(0);
    expect(counts[2]).toBe(0);
    expect(Math.abs(counts[1] / n - 0.625)).toBeLessThan(0.015);
    const all = [0, 0, 0, 0];
    for (let i = 0; i < n; i++) all[sampler.choose(logits, 0, rng).id]++;
    probs.forEach((p, id) => expect(Math.abs(all[id] / n - p)).toBeLessThan(0.015));
  });

  it('is reproducible from the seed', () => {
    const run = (seed: number) => {
      const rng = createRng(seed);
      return Array.from({ length: 50 }, () => sampler.choose(logits, 0, rng).id);
    };
    expect(run(3)).toEqual(run(3));
    expect(run(3)).not.toEqual(run(4));
  });

  it('rejects NaN logits', () => {
    expect(() => sampler.choose(f32([0, Number.NaN, 0, 0]), 0, fixedRng(0.5))).toThrow(DvlError);
  });
});

describe('TokenSampler on a full vocabulary (candidate shortcut of top-p vs full sort)', () => {
  const n = 151_936;
  const rand = prng(8);
  const rows = [1.5, 4, 10].map((spread) =>
    roundToBf16(Float32Array.from({ length: n }, () => (rand() + rand() + rand() + rand() - 2) * spread)),
  );

  it.each([
    { temperature: 1, topK: 0, topP: 0.9 },
    { temperature: 0.7, topK: 0, topP: 0.5 },
    { temperature: 1.2, topK: 0, topP: 0.999 },
    { temperature: 0.8, topK: 40, topP: 0.95 },
    { temperature: 1, topK: 1000, topP: 1 },
  ])('%o', (params) => {
    const sampler = new TokenSampler(n, params);
    for (const row of rows) {
      const d = sampler.distribution(row, 0);
      expect(Array.from(d.ids.subarray(0, d.count))).toEqual(naiveKept(row, params));
    }
  });
});
