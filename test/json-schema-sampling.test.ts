/**
 * Sampling restricted to the allowed tokens (TokenSampler.chooseAmong), against two independent references:
 * the unrestricted sampler on the row with every other logit set to -inf (same seed: same token, same
 * confidence), and hand-computed values.
 */
import { describe, expect, it } from 'vitest';
import { createRng } from '../src/generate/rng.js';
import { greedyTokenAmong, TokenSampler, type SamplingParams } from '../src/generate/sampling.js';
import { DvlError } from '../src/util/errors.js';
import { prng } from './helpers/random-weights.js';

const V = 2000;

function randomRow(seed: number, scale: number): Float32Array {
  const rand = prng(seed);
  return Float32Array.from({ length: V }, () => (rand() * 2 - 1) * scale);
}

function randomAllowed(seed: number, size: number): Int32Array {
  const rand = prng(seed);
  const ids = new Set<number>();
  while (ids.size < size) ids.add(Math.floor(rand() * V));
  return Int32Array.from([...ids].sort((a, b) => a - b));
}

function maskedRow(row: Float32Array, allowed: Int32Array): Float32Array {
  const out = new Float32Array(V).fill(-Infinity);
  for (const id of allowed) out[id] = row[id];
  return out;
}

describe('TokenSampler.chooseAmong', () => {
  const settings: SamplingParams[] = [
    { temperature: 0, topK: 0, topP: 1 },
    { temperature: 1, topK: 0, topP: 1 },
    { temperature: 0.7, topK: 0, topP: 1 },
    { temperature: 1.5, topK: 20, topP: 1 },
    { temperature: 0.7, topK: 0, topP: 0.9 },
    { temperature: 1.2, topK: 50, topP: 0.8 },
    { temperature: 0.7, topK: 3000, topP: 0.95 },
    { temperature: 1.5, topK: 0, topP: 1, confidence: 'plain' },
    { temperature: 0.5, topK: 10, topP: 0.7, confidence: 'plain' },
  ];

  it.each(settings)('equals the unrestricted sampler on the -inf-masked row: %o', (params) => {
    const restricted = new TokenSampler(V, params);
    const reference = new TokenSampler(V, params);
    for (const size of [1, 2, 7, 150, 1500, V]) {
      for (let trial = 0; trial < 12; trial++) {
        const row = randomRow(size * 100 + trial, trial % 2 ? 3 : 12);
        const allowed = randomAllowed(size * 7 + trial, size);
        // the row sits at an offset, as in a decoder's multi-row output
        const logits = new Float32Array(2 * V);
        logits.set(row, V);
        const masked = new Float32Array(2 * V);
        masked.set(maskedRow(row, allowed), V);
        const a = restricted.chooseAmong(logits, V, allowed, createRng(trial));
        const b = reference.choose(masked, V, createRng(trial));
        expect(a).toEqual(b);
        expect(allowed.includes(a.id)).toBe(true);
      }
    }
  });

  it('hand-computed: greedy takes the first largest allowed logit; its confidence is among the allowed only', () => {
    const logits = Float32Array.from([5, 1, 3, 3, 9, 0]);
    const allowed = Int32Array.from([1, 2, 3, 5]);
    const choice = greedyTokenAmong(logits, 0, allowed);
    expect(choice.id).toBe(2); // 3 and 3 tie: the lower id; 9 (id 4) and 5 (id 0) are not allowed
    const expected = 1 / (Math.exp(1 - 3) + 1 + 1 + Math.exp(0 - 3));
    expect(choice.prob).toBe(Math.fround(expected));
    // one allowed token: certain
    expect(greedyTokenAmong(logits, 0, Int32Array.of(5))).toEqual({ id: 5, prob: 1 });
  });

  it('hand-computed: temperature sampling draws in id order from the allowed softmax', () => {
    const logits = Float32Array.from([0, Math.log(3), 100, Math.log(1)]);
    const allowed = Int32Array.from([0, 1, 3]); // weights 1, 3, 1 (id 2 is not allowed)
    const sampler = new TokenSampler(4, { temperature: 1, topK: 0, topP: 1 });
    const fixed = (u: number) => ({ nextFloat: () => u, nextUint32: () => 0 });
    expect(sampler.chooseAmong(logits, 0, allowed, fixed(0.1))).toEqual({ id: 0, prob: Math.fround(1 / 5) });
    expect(sampler.chooseAmong(logits, 0, allowed, fixed(0.5))).toEqual({ id: 1, prob: Math.fround(3 / 5) });
    expect(sampler.chooseAmong(logits, 0, allowed, fixed(0.9))).toEqual({ id: 3, prob: Math.fround(1 / 5) });
    // top-k = 1 among the allowed keeps id 1 only
    const topK = new TokenSampler(4, { temperature: 1, topK: 1, topP: 1 });
    expect(topK.chooseAmong(logits, 0, allowed, fixed(0.01))).toEqual({ id: 1, prob: 1 });
  });

  it('refuses NaN and all -inf allowed logits like the unrestricted sampler', () => {
    const sampler = new TokenSampler(4, { temperature: 0.7, topK: 0, topP: 1 });
    const nan = Float32Array.from([0, NaN, 1, 2]);
    expect(() => sampler.chooseAmong(nan, 0, Int32Array.from([1, 2]), createRng(1))).toThrow(DvlError);
    const inf = Float32Array.from([0, -Infinity, -Infinity, 2]);
    expect(() => sampler.chooseAmong(inf, 0, Int32Array.from([1, 2]), createRng(1))).toThrow(/every allowed token/);
    expect(() => greedyTokenAmong(inf, 0, Int32Array.from([1, 2]))).toThrow(/every allowed token/);
  });
});
