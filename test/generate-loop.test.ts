/**
 * The block-diffusion loop (src/generate/bd3lm.ts) against the naive cache-free reference
 * (test/reference/bd3lm-reference.ts), both driving the same small float64 toy model:
 * - the loop talks to ToyDecoder, which keeps a real per-layer K/V cache and implements the DecoderRequest
 *   attention rule (cached rows + new rows of blocks up to the row's own);
 * - the reference recomputes everything through toyFullForward with the visibility it derives itself.
 * The logits depend on every attended row (attention with position-dependent inputs), so a wrong cache
 * content, a wrong mask or a wrong position changes the tokens.
 */
import { describe, expect, it } from 'vitest';
import { generate, type GenerateOptions, type GenerationEvent } from '../src/generate/bd3lm.js';
import { createRng } from '../src/generate/rng.js';
import type { BlockDecoder, DecoderRequest, DecoderResult, EmbeddingTable } from '../src/generate/types.js';
import { DvlError } from '../src/util/errors.js';
import { referenceGenerate, type ForwardRow } from './reference/bd3lm-reference.js';
import { prng } from './helpers/random-weights.js';

const V = 200;
const H = 16;
const MASK = 190;
const EOS = 191;
/** A token whose embedding row is a copy of the mask row. */
const MASK_TWIN = 192;
const LAYERS = 2;

type Bias = (position: number) => Array<[number, number]>;

interface ToyConfig {
  seed: number;
  /** Scale of the output projection: larger = more confident predictions. */
  sharpness?: number;
  /** Extra logit bias per absolute position (on top of the default suppression). */
  bias?: Bias;
  /** Do not suppress these ids by default. */
  allow?: number[];
}

class ToyModel {
  readonly embed: Float32Array;
  private readonly layers: { wq: Float64Array; wk: Float64Array; wv: Float64Array; wo: Float64Array; w1: Float64Array; w2: Float64Array }[] = [];
  private readonly wout: Float64Array;

  constructor(private readonly config: ToyConfig) {
    const rand = prng(config.seed);
    const uniform = (n: number, scale: number) => Float64Array.from({ length: n }, () => (rand() * 2 - 1) * scale);
    this.embed = Float32Array.from({ length: V * H }, () => rand() * 2 - 1);
    this.embed.copyWithin(MASK_TWIN * H, MASK * H, (MASK + 1) * H);
    const s = 1.5 / Math.sqrt(H);
    for (let l = 0; l < LAYERS; l++) {
      this.layers.push({ wq: uniform(H * H, 2 * s), wk: uniform(H * H, 2 * s), wv: uniform(H * H, s), wo: uniform(H * H, s), w1: uniform(H * H, s), w2: uniform(H * H, s) });
    }
    this.wout = uniform(V * H, (config.sharpness ?? 1) * 2 * s);
  }

  row(id: number): Float32Array {
    return this.embed.slice(id * H, (id + 1) * H);
  }

  /** Layer input: embedding plus a sinusoidal position signal. */
  input(embed: Float32Array, position: number): Float64Array {
    return Float64Array.from(embed, (v, h) => v + Math.sin(position * (0.7 + 0.3 * h)));
  }

  private static matvec(w: Float64Array, x: Float64Array, rows: number): Float64Array {
    const out = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let acc = 0;
      for (let c = 0; c < x.length; c++) acc += w[r * x.length + c] * x[c];
      out[r] = acc;
    }
    return out;
  }

  qkv(layer: number, h: Float64Array) {
    const w = this.layers[layer];
    return { q: ToyModel.matvec(w.wq, h, H), k: ToyModel.matvec(w.wk, h, H), v: ToyModel.matvec(w.wv, h, H) };
  }

  /** Residual attention + MLP given the row's query and the keys/values it attends to, in order. */
  mix(layer: number, h: Float64Array, q: Float64Array, keys: Float64Array[], values: Float64Array[]): Float64Array {
    const w = this.layers[layer];
    const scores = keys.map((k) => k.reduce((acc, kv, c) => acc + kv * q[c], 0) / Math.sqrt(H));
    const max = Math.max(...scores);
    const e = scores.map((x) => Math.exp(x - max));
    let sum = 0;
    for (const x of e) sum += x;
    const att = new Float64Array(H);
    values.forEach((v, j) => v.forEach((x, c) => (att[c] += (e[j] / sum) * x)));
    const o = ToyModel.matvec(w.wo, att, H);
    const a = h.map((x, c) => x + o[c]);
    const m = ToyModel.matvec(w.w2, ToyModel.matvec(w.w1, a, H).map(Math.tanh), H);
    return a.map((x, c) => x + m[c]);
  }

  logits(h: Float64Array, position: number): Float64Array {
    const out = ToyModel.matvec(this.wout, h, V);
    for (const id of [MASK, EOS, MASK_TWIN]) if (!this.config.allow?.includes(id)) out[id] -= 20;
    for (const [id, value] of this.config.bias?.(position) ?? []) out[id] += value;
    return out;
  }
}

/** The loop's view of the toy model: a real K/V cache and the DecoderRequest attention rule. */
class ToyDecoder implements BlockDecoder {
  readonly vocabSize = V;
  readonly requests: DecoderRequest[] = [];
  private cacheK: Float64Array[][] = Array.from({ length: LAYERS }, () => []);
  private cacheV: Float64Array[][] = Array.from({ length: LAYERS }, () => []);

  constructor(private readonly model: ToyModel) {}

  get cacheLength(): number {
    return this.cacheK[0].length;
  }

  reset(): void {
    this.cacheK = Array.from({ length: LAYERS }, () => []);
    this.cacheV = Array.from({ length: LAYERS }, () => []);
  }

  async forward(request: DecoderRequest): Promise<DecoderResult> {
    this.requests.push({ ...request, embeds: request.embeds.slice(0, request.count * H), logitRows: [...request.logitRows] });
    const { count, start, blockSize } = request;
    let h = Array.from({ length: count }, (_, r) => this.model.input(request.embeds.subarray(r * H, (r + 1) * H), start + r));
    const newK: Float64Array[][] = [];
    const newV: Float64Array[][] = [];
    for (let layer = 0; layer < LAYERS; layer++) {
      const proj = h.map((x) => this.model.qkv(layer, x));
      newK.push(proj.map((p) => p.k));
      newV.push(proj.map((p) => p.v));
      h = h.map((x, i) => {
        const keys = [...this.cacheK[layer]];
        const values = [...this.cacheV[layer]];
        for (let j = 0; j < count; j++) {
          if (Math.floor((start + j) / blockSize) <= Math.floor((start + i) / blockSize)) {
            keys.push(proj[j].k);
            values.push(proj[j].v);
          }
        }
        return this.model.mix(layer, x, proj[i].q, keys, values);
      });
    }
    const logits = new Float32Array(request.logitRows.length * V);
    request.logitRows.forEach((r, i) => logits.set(this.model.logits(h[r], start + r), i * V));
    if (request.commit) {
      // a fused call commits only its first commitRows rows (the finished block)
      const kept = request.commitRows ?? count;
      for (let layer = 0; layer < LAYERS; layer++) {
        this.cacheK[layer].push(...newK[layer].slice(0, kept));
        this.cacheV[layer].push(...newV[layer].slice(0, kept));
      }
    }
    return { logits };
  }
}

/** The reference's view: recompute every row with an explicit attention predicate. */
function toyFullForward(model: ToyModel) {
  return (rows: ForwardRow[], attend: (i: number, j: number) => boolean): Float64Array[] => {
    let h = rows.map((r) => model.input(r.embed, r.position));
    for (let layer = 0; layer < LAYERS; layer++) {
      const proj = h.map((x) => model.qkv(layer, x));
      h = h.map((x, i) => {
        const js = rows.map((_, j) => j).filter((j) => attend(i, j));
        return model.mix(layer, x, proj[i].q, js.map((j) => proj[j].k), js.map((j) => proj[j].v));
      });
    }
    return h.map((x, i) => model.logits(x, rows[i].position));
  };
}

function toyTable(model: ToyModel): EmbeddingTable {
  return {
    vocabSize: V,
    hiddenSize: H,
    rowInto: (id, out, offset) => out.set(model.embed.subarray(id * H, (id + 1) * H), offset),
  };
}

/** Prompt rows: token rows and a few arbitrary "image" vectors. */
function makePrompt(model: ToyModel, length: number, seed: number): Float32Array[] {
  const rand = prng(seed);
  return Array.from({ length }, (_, i) =>
    i % 4 === 1 ? Float32Array.from({ length: H }, () => rand() * 2 - 1) : model.row(Math.floor(rand() * 180)),
  );
}

interface Case {
  model: ToyConfig;
  promptLength: number;
  genLength: number;
  steps: number;
  blockSize: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  remasking?: GenerateOptions['remasking'];
  threshold?: number;
  seed?: number;
  /** Replace prompt rows by the mask row. */
  maskPromptRows?: number[];
  prefillChunkRows?: number;
}

async function runBoth(c: Case) {
  const model = new ToyModel(c.model);
  const prompt = makePrompt(model, c.promptLength, c.model.seed + 1);
  for (const r of c.maskPromptRows ?? []) prompt[r] = model.row(MASK);
  const params = {
    genLength: c.genLength,
    steps: c.steps,
    blockSize: c.blockSize,
    temperature: c.temperature ?? 0,
    topK: c.topK ?? 0,
    topP: c.topP ?? 1,
    remasking: c.remasking ?? 'low_confidence_static',
    threshold: c.threshold ?? 0.85,
    maskTokenId: MASK,
    eosTokenId: EOS,
    ...(c.prefillChunkRows !== undefined ? { prefillChunkRows: c.prefillChunkRows } : {}),
  } as const;
  const decoder = new ToyDecoder(model);
  const events: GenerationEvent[] = [];
  const promptEmbeds = new Float32Array(c.promptLength * H);
  prompt.forEach((row, i) => promptEmbeds.set(row, i * H));
  const seed = c.seed ?? 1;
  const result = await generate({
    ...params,
    decoder,
    embeddings: toyTable(model),
    promptEmbeds,
    promptLength: c.promptLength,
    seed,
    onEvent: (e) => events.push(e),
  });
  // The same generation with the reference's call schedule (a commit call of its own per finished block).
  const referenceScheduleDecoder = new ToyDecoder(model);
  const withReferenceSchedule = await generate({
    ...params,
    decoder: referenceScheduleDecoder,
    embeddings: toyTable(model),
    promptEmbeds,
    promptLength: c.promptLength,
    seed,
    referenceSchedule: true,
  });
  const rng = createRng(seed);
  const reference = referenceGenerate({
    ...params,
    fullForward: toyFullForward(model),
    embedRow: (id) => model.row(id),
    vocabSize: V,
    prompt,
    nextFloat: () => rng.nextFloat(),
  });
  // Logits are only asked for rows still masked: check against the request's own embeddings.
  const maskRow = model.row(MASK);
  for (const request of decoder.requests) {
    const maskedRows: number[] = [];
    for (let r = 0; r < request.count; r++) {
      if (request.embeds.subarray(r * H, (r + 1) * H).every((v, h) => Math.abs(v - maskRow[h]) < 1e-5)) maskedRows.push(r);
    }
    // the prefill and separate commit calls ask for no logits; a fused call for the next block's masked rows
    const commitsAll = request.commit && (request.commitRows ?? request.count) === request.count;
    expect(request.logitRows).toEqual(commitsAll ? [] : maskedRows);
  }
  // Same tokens on both schedules; the reference schedule makes exactly the reference's calls, ours every
  // one of them except the reference's commit calls (fused into the next block's first call, or not needed).
  expect(withReferenceSchedule.tokens).toEqual(result.tokens);
  expect(withReferenceSchedule.nfe).toBe(reference.nfe);
  expect(result.nfe).toBe(reference.nfe - reference.commitCalls);
  return { result, reference, events, decoder, referenceScheduleDecoder };
}

const blockEnds = (events: GenerationEvent[]) =>
  events.filter((e): e is Extract<GenerationEvent, { type: 'block-end' }> => e.type === 'block-end');

describe('generate (bd3lm loop) against the naive reference', () => {
  it('prompt length a multiple of B, B=8, S=8 static: prefill + 8 calls per block, commits fused', async () => {
    const { result, reference, decoder, referenceScheduleDecoder } = await runBoth({ model: { seed: 11 }, promptLength: 16, genLength: 24, steps: 8, blockSize: 8 });
    expect(result.tokens).toEqual(reference.tokens);
    expect(result.tokens).toHaveLength(24);
    expect(result.tokens.filter((t) => t === MASK || t === EOS || t === MASK_TWIN)).toEqual([]);
    // the reference: prefill, then 8 denoising calls and a commit call per block
    expect(reference.nfe).toBe(1 + 3 * 9);
    expect(reference.commitCalls).toBe(3);
    expect(result.nfe).toBe(1 + 3 * 8);
    expect(result.blocks).toBe(3);
    expect(result.stoppedAtEos).toBe(false);
    // prefill of two blocks, 8 denoising calls of block 2, then block 2's commit fused with block 3's first
    // step: 16 rows from position 16, the first 8 committed, logits of block 3's 8 masked rows
    expect(decoder.requests[0]).toMatchObject({ count: 16, start: 0, blockSize: 8, commit: true, logitRows: [] });
    expect(decoder.requests[0].commitRows).toBeUndefined();
    expect(decoder.requests.slice(1, 10).map((r) => [r.start, r.count, r.commit, r.commitRows, r.logitRows.length])).toEqual([
      ...[8, 7, 6, 5, 4, 3, 2, 1].map((n) => [16, 8, false, undefined, n]),
      [16, 16, true, 8, 8],
    ]);
    expect(decoder.requests[9].logitRows).toEqual([8, 9, 10, 11, 12, 13, 14, 15]);
    // blocks 2 and 3 reach the cache, the last block (4) is never committed: nothing reads it
    expect(decoder.requests.at(-1)).toMatchObject({ start: 32, count: 8, commit: false });
    expect(decoder.cacheLength).toBe(16 + 16);
    expect(referenceScheduleDecoder.cacheLength).toBe(16 + 24);
  });

  it('a long prompt is prefilled in calls of whole blocks, each attending to the cache: the one-shot tokens', async () => {
    // 45 rows, B=4: 44 whole-block rows; chunks of 10 rows round down to 8 (whole blocks): 8+8+8+8+8+4.
    const { result, reference, decoder } = await runBoth({ model: { seed: 17 }, promptLength: 45, genLength: 12, steps: 4, blockSize: 4, prefillChunkRows: 10 });
    expect(result.tokens).toEqual(reference.tokens);
    const prefill = decoder.requests.slice(0, 6);
    expect(prefill.map((r) => [r.start, r.count, r.commit, r.logitRows.length])).toEqual([0, 8, 16, 24, 32, 40].map((start) => [start, start === 40 ? 4 : 8, true, 0]));
    // No call holds more than a chunk of prompt rows: memory follows the cache, not the prompt's square.
    expect(Math.max(...decoder.requests.map((r) => r.count))).toBeLessThanOrEqual(8);
    // The chunked prefill is one evaluation of the prompt, as the reference's one call (runBoth checks nfe).
    expect(decoder.requests.length).toBe(result.nfe + 5);
  });

  it('prompt length not a multiple of B: the prompt tail is re-encoded with the first block', async () => {
    const { result, reference, decoder } = await runBoth({ model: { seed: 12 }, promptLength: 13, genLength: 20, steps: 8, blockSize: 8 });
    expect(result.tokens).toEqual(reference.tokens);
    // prefill 8 rows; block 1 holds 5 prompt rows + 3 masks: 3 steps (+ commit); blocks 2..4: 8 (+ 1) calls each
    expect(reference.nfe).toBe(1 + 4 + 3 * 9);
    expect(result.nfe).toBe(1 + 3 + 3 * 8);
    expect(decoder.requests[0].count).toBe(8);
    expect(decoder.requests[1]).toMatchObject({ start: 8, count: 8, logitRows: [5, 6, 7] });
    // the prompt tail block (its 5 prompt rows included) is committed with block 2's first step
    expect(decoder.requests[4]).toMatchObject({ start: 8, count: 16, commit: true, commitRows: 8, logitRows: [8, 9, 10, 11, 12, 13, 14, 15] });
    expect(Array.from(decoder.requests[4].embeds.subarray(0, 5 * H))).toEqual(Array.from(decoder.requests[1].embeds.subarray(0, 5 * H)));

    // shorter than one block (but L + G > B): nothing to prefill, block 0 starts with the prompt
    const short = await runBoth({ model: { seed: 31 }, promptLength: 5, genLength: 12, steps: 4, blockSize: 8 });
    expect(short.result.tokens).toEqual(short.reference.tokens);
    // schedule [2,2,2,2,2]: block 0 (3 masks) 2 steps (+ commit), block 1 (8 masks) 4 steps (+ commit), block 2 likewise
    expect(short.reference.nfe).toBe(3 + 5 + 5);
    expect(short.result.nfe).toBe(2 + 4 + 4);
    expect(short.decoder.requests[0]).toMatchObject({ start: 0, count: 8, logitRows: [5, 6, 7], commit: false });
  });

  it('steps > block size (zeros in the schedule) and steps = 1', async () => {
    const more = await runBoth({ model: { seed: 13 }, promptLength: 9, genLength: 10, steps: 6, blockSize: 4 });
    expect(more.result.tokens).toEqual(more.reference.tokens);
    // schedule [1,1,1,1,0,0,0]: block 2 (1 prompt row + 3 masks) 3 steps (+ commit), blocks 3..4: 4 steps (+ commit)
    expect(more.reference.nfe).toBe(1 + 4 + 2 * 5);
    expect(more.result.nfe).toBe(1 + 3 + 2 * 4);

    const one = await runBoth({ model: { seed: 14 }, promptLength: 8, genLength: 16, steps: 1, blockSize: 8 });
    expect(one.result.tokens).toEqual(one.reference.tokens);
    expect(one.reference.nfe).toBe(1 + 2 * 2);
    expect(one.result.nfe).toBe(1 + 2 * 1);
  });

  it('stops after the block holding EOS; later positions stay mask ids', async () => {
    const c: Case = {
      model: { seed: 15, allow: [EOS], bias: (p) => (p === 16 + 11 ? [[EOS, 40]] : []) },
      promptLength: 16,
      genLength: 32,
      steps: 4,
      blockSize: 8,
    };
    const { result, reference, events, decoder } = await runBoth(c);
    expect(result.tokens).toEqual(reference.tokens);
    expect(result.stoppedAtEos).toBe(true);
    expect(result.blocks).toBe(2);
    expect(result.tokens[11]).toBe(EOS);
    // tokens after EOS in the same block are still decoded; the next blocks are never started
    expect(result.tokens.slice(12, 16).every((t) => t !== MASK)).toBe(true);
    expect(result.tokens.slice(16)).toEqual(new Array(16).fill(MASK));
    // the reference commits the EOS block too (nothing reads it): blocks 2 and 3, 4 steps + commit each
    expect(reference.nfe).toBe(1 + 2 * 5);
    expect(result.nfe).toBe(1 + 2 * 4);
    expect(decoder.cacheLength).toBe(16 + 8);
    expect(events.at(-1)).toMatchObject({ type: 'finished' });
  });

  it('a predicted token whose embedding is the mask row stays masked; the block is never committed', async () => {
    for (const forced of [MASK, MASK_TWIN]) {
      const c: Case = {
        model: { seed: 16, allow: [forced], bias: (p) => (p === 8 + 3 ? [[forced, 40]] : []) },
        promptLength: 8,
        genLength: 24,
        steps: 8,
        blockSize: 8,
      };
      const { result, reference, events, decoder } = await runBoth(c);
      expect(result.tokens).toEqual(reference.tokens);
      expect(result.tokens[3]).toBe(forced);
      expect(blockEnds(events).map((e) => e.committed)).toEqual([false, true, true]);
      expect(reference.committedBlocks).toEqual([0, 2, 3]);
      // block 1: 9 denoising calls and no commit; blocks 2 and 3: 8 calls (+ a commit in the reference) each
      expect(reference.nfe).toBe(1 + 9 + 9 + 9);
      expect(result.nfe).toBe(1 + 9 + 8 + 8);
      // later blocks run against a cache without block 1: block 2's first call is a plain 8-row call (nothing
      // to fuse), block 3's first call commits block 2 only
      const firstOfBlock2 = decoder.requests.findIndex((r) => r.start === 16);
      expect(decoder.requests[firstOfBlock2]).toMatchObject({ count: 8, commit: false });
      expect(decoder.requests[firstOfBlock2 + 8]).toMatchObject({ start: 16, count: 16, commit: true, commitRows: 8 });
      expect(decoder.cacheLength).toBe(8 + 8);
    }
  });

  it('an uncommitted block that was completed in its last iteration (S=2)', async () => {
    // schedule [4,4,4]: with one position re-masked at step 0, steps 1 and 2 finish the block and the loop ends
    // without a commit call.
    const c: Case = {
      model: { seed: 17, allow: [MASK_TWIN], bias: (p) => (p === 9 ? [[MASK_TWIN, 6]] : []) },
      promptLength: 8,
      genLength: 16,
      steps: 2,
      blockSize: 8,
    };
    const { result, reference, events, decoder } = await runBoth(c);
    expect(result.tokens).toEqual(reference.tokens);
    // block 1: 3 denoising calls and no commit, block 2: 2 denoising calls (+ a commit in the reference)
    expect(reference.nfe).toBe(1 + 3 + 3);
    expect(result.nfe).toBe(1 + 3 + 2);
    // nothing was fused: block 1 never reached the cache
    expect(decoder.requests.every((r) => r.count === 8)).toBe(true);
    expect(decoder.cacheLength).toBe(8);
    // the block ended uncommitted although none of its ids is mask-like any more
    const uncommitted = blockEnds(events).filter((e) => !e.committed);
    expect(uncommitted).toHaveLength(1);
    expect(uncommitted[0].ids).not.toContain(MASK_TWIN);
    expect(reference.committedBlocks).not.toContain(uncommitted[0].block);
  });

  it('full-diffusion ablation when B >= L + G: one block, no prefill', async () => {
    const { result, reference, decoder } = await runBoth({ model: { seed: 18 }, promptLength: 5, genLength: 6, steps: 4, blockSize: 16 });
    expect(result.tokens).toEqual(reference.tokens);
    // schedule from B=16: [4,4,4,4,4]; 6 masks: 4 + 2, then the reference's commit, which we skip (last block)
    expect(reference.nfe).toBe(3);
    expect(result.nfe).toBe(2);
    expect(decoder.cacheLength).toBe(0);
    expect(decoder.requests[0]).toMatchObject({ start: 0, count: 11, logitRows: [5, 6, 7, 8, 9, 10] });
  });

  it('a prompt row equal to the mask embedding counts as masked (like the reference)', async () => {
    const { result, reference, decoder } = await runBoth({
      model: { seed: 19 },
      promptLength: 11,
      genLength: 12,
      steps: 4,
      blockSize: 8,
      maskPromptRows: [9],
    });
    expect(result.tokens).toEqual(reference.tokens);
    expect(result.nfe).toBe(reference.nfe - reference.commitCalls);
    expect(decoder.requests[1].logitRows).toEqual([1, 3, 4, 5, 6, 7]);
  });

  it('dynamic remasking fills every position above the threshold', async () => {
    const c: Case = { model: { seed: 20, sharpness: 4 }, promptLength: 10, genLength: 30, steps: 8, blockSize: 8, remasking: 'low_confidence_dynamic', threshold: 0.6 };
    const { result, reference, events } = await runBoth(c);
    expect(result.tokens).toEqual(reference.tokens);
    expect(result.nfe).toBe(reference.nfe - reference.commitCalls);
    // the threshold did something: some step filled more positions than the schedule's 1
    const unmasks = events.filter((e): e is Extract<GenerationEvent, { type: 'unmask' }> => e.type === 'unmask');
    expect(unmasks.some((e) => e.indices.length > 1)).toBe(true);
    const staticRun = await runBoth({ ...c, remasking: 'low_confidence_static' });
    expect(result.nfe).toBeLessThan(staticRun.result.nfe);
  });

  it('temperature > 0 with top-k / top-p: same seed, same tokens as the reference', async () => {
    const settings = [
      { temperature: 1, topK: 0, topP: 1 },
      { temperature: 0.7, topK: 20, topP: 1 },
      { temperature: 1.3, topK: 0, topP: 0.8 },
      { temperature: 0.9, topK: 50, topP: 0.9 },
    ];
    for (const [i, s] of settings.entries()) {
      const c: Case = { model: { seed: 21 + i, sharpness: 2 }, promptLength: 12, genLength: 20, steps: 5, blockSize: 8, seed: 1234 + i, ...s };
      const a = await runBoth(c);
      expect(a.result.tokens).toEqual(a.reference.tokens);
      expect(a.result.nfe).toBe(a.reference.nfe - a.reference.commitCalls);
      expect(a.result.seed).toBe(1234 + i);
      const again = await runBoth(c);
      expect(again.result.tokens).toEqual(a.result.tokens);
      const other = await runBoth({ ...c, seed: 999 });
      expect(other.result.tokens).not.toEqual(a.result.tokens);
    }
  });

  it('events replay to the output tokens', async () => {
    const { result, events } = await runBoth({ model: { seed: 30 }, promptLength: 13, genLength: 21, steps: 3, blockSize: 8 });
    const replay = new Array<number>(21).fill(MASK);
    for (const e of events) if (e.type === 'unmask') e.indices.forEach((idx, k) => (replay[idx] = e.ids[k]));
    expect(replay).toEqual(result.tokens);
    const ends = blockEnds(events);
    expect(ends.map((e) => e.firstIndex)).toEqual([0, 3, 11, 19]);
    expect(ends.flatMap((e) => e.ids)).toEqual(result.tokens);
    expect(events[0]).toEqual({ type: 'prefill', rows: 8, cached: 0 });
  });
});

describe('generate: options and interruption', () => {
  const model = new ToyModel({ seed: 40 });
  const base = (): GenerateOptions => ({
    decoder: new ToyDecoder(model),
    embeddings: toyTable(model),
    promptEmbeds: new Float32Array(4 * H).fill(0.1),
    promptLength: 4,
    genLength: 8,
    steps: 4,
    blockSize: 4,
    temperature: 0,
    topK: 0,
    topP: 1,
    remasking: 'low_confidence_static',
    threshold: 0.85,
    maskTokenId: MASK,
    eosTokenId: EOS,
  });

  it.each([
    [{ steps: 0 }, /steps must be an integer >= 1/],
    [{ genLength: 0 }, /gen length must be an integer >= 1/],
    [{ blockSize: 0 }, /block size must be an integer >= 1/],
    [{ topP: 0 }, /top-p must be in \(0, 1\]/],
    [{ topP: 1.5 }, /top-p must be in \(0, 1\]/],
    [{ topK: -1 }, /top-k must be an integer >= 0/],
    [{ temperature: -0.1 }, /temperature must be >= 0/],
    [{ threshold: 1.2 }, /threshold must be in \[0, 1\]/],
    [{ seed: -3 }, /seed must be a non-negative integer/],
  ] as const)('rejects %o', async (patch, message) => {
    const error = await generate({ ...base(), ...patch }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DvlError);
    expect((error as DvlError).kind).toBe('usage');
    expect((error as DvlError).message).toMatch(message);
  });

  it('rejects a mask id outside the vocabulary as a model error', async () => {
    const error = await generate({ ...base(), maskTokenId: 151671 }).catch((e: unknown) => e);
    expect((error as DvlError).kind).toBe('model');
  });

  it('rejects a decoder that predicts tokens without an embedding row', async () => {
    const table = { ...toyTable(model), vocabSize: V - 1 };
    const error = await generate({ ...base(), embeddings: table }).catch((e: unknown) => e);
    expect((error as DvlError).kind).toBe('model');
    expect((error as DvlError).message).toMatch(/embedding table has 199 rows/);
  });

  it('draws and reports a seed when none is given', async () => {
    const result = await generate(base());
    expect(Number.isSafeInteger(result.seed)).toBe(true);
  });

  it('stops with an interrupted error when the signal aborts', async () => {
    const controller = new AbortController();
    const options = { ...base(), signal: controller.signal, onEvent: (e: GenerationEvent) => e.type === 'unmask' && controller.abort() };
    const error = await generate(options).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DvlError);
    expect((error as DvlError).kind).toBe('interrupted');
  });
});

