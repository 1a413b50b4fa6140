/**
 * The decoder ONNX graph against the float64 reference (test/reference/text-decoder.ts), run with
 * onnxruntime-node on tiny random models: cache / no cache, block-causal bias, GQA group sizes, untied
 * lm_head, logits_index subsets, and the fp16/int8/int4 weight formats.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelConfig } from '../src/models/qwen25vl/types.js';
import { type DecoderDtype, buildDecoderGraph } from '../src/convert/decoder-graph.js';
import type { DecoderPlan } from '../src/convert/recipes.js';
import type { QuantSettings } from '../src/convert/onnx/ops.js';
import { dequantizeBlockwise, quantizeBlockwise } from '../src/convert/quantize.js';
import { float16BitsToNumber, float32ToFloat16Bits } from '../src/util/half.js';
import { DvlError } from '../src/util/errors.js';
import { MemoryWeights, prng, randomWeights, tinyConfig } from './helpers/random-weights.js';
import { type KvRows, blockCausal, referenceDecoderForward, referenceSequenceLogits } from './reference/text-decoder.js';
import { maxAbsDiff } from './helpers/compare.js';

const tempDirs: string[] = [];
afterAll(() => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

async function buildSession(weights: MemoryWeights, config: ModelConfig, dtype: DecoderDtype, quant?: Partial<QuantSettings>, plan?: DecoderPlan): Promise<ort.InferenceSession> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-decoder-'));
  tempDirs.push(dir);
  const modelPath = path.join(dir, 'decoder.onnx');
  buildDecoderGraph(weights, config, { modelPath, dtype, quant, plan });
  return ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1 });
}

interface Call {
  embeds: Float32Array;
  positions: number[];
  past: KvRows[];
  attend: (row: number, col: number) => boolean;
  logitRows: number[];
}

/** Random new rows and random cached K/V (P rows per layer). */
function randomCall(config: ModelConfig, seed: number, S: number, P: number, positions: number[], attend: Call['attend'], logitRows: number[]): Call {
  const t = config.text;
  const rand = prng(seed);
  const uniform = () => rand() * 2 - 1;
  const embeds = Float32Array.from({ length: S * t.hiddenSize }, uniform);
  const kvSize = P * t.numKvHeads * t.headDim;
  // Cached values are float32 numbers (the runtime's cache is float32).
  const past = Array.from({ length: t.numLayers }, () => ({
    k: Float64Array.from(Float32Array.from({ length: kvSize }, uniform)),
    v: Float64Array.from(Float32Array.from({ length: kvSize }, uniform)),
    rows: P,
  }));
  return { embeds, positions, past, attend, logitRows };
}

/** Runs the graph with the contract's inputs; logits per requested row and the new K/V per layer. */
async function runGraph(session: ort.InferenceSession, config: ModelConfig, call: Call) {
  const t = config.text;
  const S = call.positions.length;
  const P = call.past[0]?.rows ?? 0;
  const T = P + S;
  const bias = new Float32Array(S * T);
  for (let r = 0; r < S; r++) for (let c = 0; c < T; c++) bias[r * T + c] = call.attend(r, c) ? 0 : -Infinity;
  const feeds: Record<string, ort.Tensor> = {
    inputs_embeds: new ort.Tensor('float32', call.embeds, [1, S, t.hiddenSize]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from(call.positions.map(BigInt)), [1, S]),
    attention_bias: new ort.Tensor('float32', bias, [1, 1, S, T]),
    logits_index: new ort.Tensor('int64', BigInt64Array.from(call.logitRows.map(BigInt)), [call.logitRows.length]),
  };
  for (let i = 0; i < t.numLayers; i++) {
    feeds[`past_key.${i}`] = new ort.Tensor('float32', Float32Array.from(call.past[i].k), [1, P, t.numKvHeads, t.headDim]);
    feeds[`past_value.${i}`] = new ort.Tensor('float32', Float32Array.from(call.past[i].v), [1, P, t.numKvHeads, t.headDim]);
  }
  const out = await session.run(feeds);
  const V = t.vocabSize;
  expect(out.logits.dims).toEqual([1, call.logitRows.length, V]);
  const flat = out.logits.data as Float32Array;
  const logits = call.logitRows.map((_, r) => flat.subarray(r * V, (r + 1) * V));
  const newKv = Array.from({ length: t.numLayers }, (_, i) => {
    expect(out[`new_key.${i}`].dims).toEqual([1, S, t.numKvHeads, t.headDim]);
    expect(out[`new_value.${i}`].dims).toEqual([1, S, t.numKvHeads, t.headDim]);
    return { k: out[`new_key.${i}`].data as Float32Array, v: out[`new_value.${i}`].data as Float32Array };
  });
  return { logits, newKv, feeds };
}

interface LogitStats {
  maxAbs: number;
  /** max |reference logit| (the scale the errors are judged against). */
  maxRef: number;
  rms: number;
  /** standard deviation of the reference logits. */
  spread: number;
  top1: number;
  rows: number;
}

function compareLogits(actual: Float32Array[], expected: Float64Array[]): LogitStats {
  const s: LogitStats = { maxAbs: 0, maxRef: 0, rms: 0, spread: 0, top1: 0, rows: expected.length };
  let count = 0;
  let sum = 0;
  let sumSquares = 0;
  for (let r = 0; r < expected.length; r++) {
    expect(actual[r].length).toBe(expected[r].length);
    let best = 0;
    let bestRef = 0;
    for (let j = 0; j < expected[r].length; j++) {
      const diff = actual[r][j] - expected[r][j];
      s.maxAbs = Math.max(s.maxAbs, Math.abs(diff));
      s.maxRef = Math.max(s.maxRef, Math.abs(expected[r][j]));
      s.rms += diff * diff;
      sum += expected[r][j];
      sumSquares += expected[r][j] ** 2;
      count++;
      if (actual[r][j] > actual[r][best]) best = j;
      if (expected[r][j] > expected[r][bestRef]) bestRef = j;
    }
    if (best === bestRef) s.top1++;
  }
  s.rms = Math.sqrt(s.rms / count);
  s.spread = Math.sqrt(sumSquares / count - (sum / count) ** 2);
  return s;
}

/** fp32 tolerance: max |logit error| <= 1e-5 of the largest logit (measured ~6e-7). */
function expectFp32Logits(actual: Float32Array[], expected: Float64Array[]): LogitStats {
  const stats = compareLogits(actual, expected);
  expect(stats.maxAbs).toBeLessThan(1e-5 * stats.maxRef);
  expect(stats.top1).toBe(stats.rows);
  return stats;
}

/** Compares graph and reference for one call: logits and new K/V. */
async function checkCall(session: ort.InferenceSession, weights: MemoryWeights, config: ModelConfig, call: Call): Promise<LogitStats> {
  const ref = referenceDecoderForward(weights, config, call);
  const got = await runGraph(session, config, call);
  for (let i = 0; i < config.text.numLayers; i++) {
    expect(maxAbsDiff(got.newKv[i].k, ref.newKv[i].k)).toBeLessThan(1e-5);
    expect(maxAbsDiff(got.newKv[i].v, ref.newKv[i].v)).toBeLessThan(1e-5);
  }
  return expectFp32Logits(got.logits, ref.logits);
}

const range = (n: number, start = 0, step = 1) => Array.from({ length: n }, (_, i) => start + i * step);
const attendAll = () => true;

describe('decoder graph, fp32, tiny model (vocab 151680, 4 heads / 2 kv heads, tied lm_head)', () => {
  const config = tinyConfig();
  const weights = randomWeights(config, 11);
  let session: ort.InferenceSession;
  beforeAll(async () => {
    session = await buildSession(weights, config, 'fp32');
  });

  it('S=1, P=0', async () => {
    const stats = await checkCall(session, weights, config, randomCall(config, 1, 1, 0, [0], attendAll, [0]));
    console.log(`fp32 S=1 P=0: max |logit err| ${stats.maxAbs.toExponential(2)} (max |logit| ${stats.maxRef.toFixed(1)})`);
  });

  it('S=8, P=0, one bidirectional block, logits of every row', async () => {
    const stats = await checkCall(session, weights, config, randomCall(config, 2, 8, 0, range(8), attendAll, range(8)));
    console.log(`fp32 S=8 P=0: max |logit err| ${stats.maxAbs.toExponential(2)} (max |logit| ${stats.maxRef.toFixed(1)})`);
  });

  it('S=8 against P=13 cached rows, odd positions, logits_index out of order with a repeat', async () => {
    // Row r may see cached columns except column 4, and new rows r' <= r + 2: an arbitrary bias pattern.
    const attend = (r: number, c: number) => (c < 13 ? c !== 4 : c - 13 <= r + 2);
    const positions = [13, 17, 19, 1001, 1003, 2047, 30001, 30003];
    const stats = await checkCall(session, weights, config, randomCall(config, 3, 8, 13, positions, attend, [5, 0, 7, 5]));
    console.log(`fp32 S=8 P=13: max |logit err| ${stats.maxAbs.toExponential(2)} (max |logit| ${stats.maxRef.toFixed(1)})`);
  });

  it('S=16 over two blocks with a block-causal bias, P=8', async () => {
    const P = 8;
    const blocks = blockCausal(8);
    const positions = range(16, P);
    const attend = (r: number, c: number) => blocks(positions[r], c);
    const stats = await checkCall(session, weights, config, randomCall(config, 4, 16, P, positions, attend, [0, 7, 8, 15]));
    console.log(`fp32 S=16 P=8 block-causal: max |logit err| ${stats.maxAbs.toExponential(2)} (max |logit| ${stats.maxRef.toFixed(1)})`);
  });

  it('M = 0 (empty logits_index) returns logits [1, 0, V] and the new K/V', async () => {
    const call = randomCall(config, 5, 8, 3, range(8, 3), attendAll, []);
    const ref = referenceDecoderForward(weights, config, call);
    const got = await runGraph(session, config, call);
    expect(got.logits).toHaveLength(0);
    expect(maxAbsDiff(got.newKv[1].k, ref.newKv[1].k)).toBeLessThan(1e-5);
  });

  it('new K/V fed back as the cache reproduces a cache-free run of the whole sequence', async () => {
    // Three blocks of 8: block 0 committed, then block 1 committed, then block 2 queried. The reference
    // runs all 24 rows at once with the block-causal rule and no cache.
    const t = config.text;
    const rand = prng(6);
    const embeds = Float32Array.from({ length: 24 * t.hiddenSize }, () => rand() * 2 - 1);
    const blocks = blockCausal(8);
    const expected = referenceSequenceLogits(weights, config, { embeds, attend: blocks, logitRows: range(8, 16) });

    let past: KvRows[] = Array.from({ length: t.numLayers }, () => ({ k: new Float64Array(0), v: new Float64Array(0), rows: 0 }));
    let logits: Float32Array[] = [];
    for (let block = 0; block < 3; block++) {
      const P = block * 8;
      const call: Call = {
        embeds: embeds.subarray(P * t.hiddenSize, (P + 8) * t.hiddenSize),
        positions: range(8, P),
        past,
        attend: (r, c) => blocks(P + r, c),
        logitRows: block === 2 ? range(8) : [],
      };
      const got = await runGraph(session, config, call);
      logits = got.logits;
      past = past.map((cache, i) => ({
        k: Float64Array.from([...cache.k, ...got.newKv[i].k]),
        v: Float64Array.from([...cache.v, ...got.newKv[i].v]),
        rows: cache.rows + 8,
      }));
    }
    const stats = expectFp32Logits(logits, expected);
    console.log(`fp32 3 blocks via the cache vs whole sequence: max |logit err| ${stats.maxAbs.toExponential(2)}`);
  });

  it('times one 8-row forward at P=256 (logits of 8 rows and of 1 row)', async () => {
    for (const logitRows of [range(8), [7]]) {
      const call = randomCall(config, 7, 8, 256, range(8, 256), attendAll, logitRows);
      const { feeds } = await runGraph(session, config, call);
      for (let i = 0; i < 2; i++) await session.run(feeds);
      const runs = 10;
      const start = performance.now();
      for (let i = 0; i < runs; i++) await session.run(feeds);
      console.log(`fp32 tiny model, S=8, P=256, M=${logitRows.length}: ${((performance.now() - start) / runs).toFixed(2)} ms per forward (1 thread)`);
    }
  });
});

describe.each([
  { label: 'MHA (4 kv heads)', text: { numKvHeads: 4 } },
  { label: 'MQA (1 kv head)', text: { numKvHeads: 1 } },
  { label: '8 heads / 2 kv heads, untied lm_head, 3 layers', text: { numHeads: 8, numKvHeads: 2, numLayers: 3, tieWordEmbeddings: false } },
])('decoder graph, fp32, $label', ({ text }) => {
  const config = tinyConfig({ text: { vocabSize: 3000, ...text } });
  const weights = randomWeights(config, 21);

  it('matches the reference with a cache and a block-causal bias', async () => {
    if (!config.text.tieWordEmbeddings) expect(weights.has('lm_head.weight')).toBe(true);
    const session = await buildSession(weights, config, 'fp32');
    const P = 5;
    const positions = range(12, 40, 3);
    const attend = (r: number, c: number) => c < P || Math.floor((c - P) / 6) <= Math.floor(r / 6);
    await checkCall(session, weights, config, randomCall(config, 8, 12, P, positions, attend, range(12)));
  });
});

describe('decoder graph, quantized and fp16 weights', () => {
  // Vocab 4096: enough rows for the top-1 statistics, small enough to be quick.
  const config = tinyConfig({ text: { vocabSize: 4096, numLayers: 3 } });
  const weights = randomWeights(config, 31);
  const S = 16;
  const P = 8;
  const blocks = blockCausal(8);
  const positions = range(S, P);
  const call = randomCall(config, 9, S, P, positions, (r, c) => blocks(positions[r], c), range(S));

  /** The weights the graph should hold: every 2-D decoder matrix through `transform`. */
  function transformedWeights(source: MemoryWeights, transform: (data: Float32Array, N: number, K: number) => Float32Array): MemoryWeights {
    const out = new MemoryWeights();
    for (const name of source.names()) {
      const { shape, data } = source.get(name);
      const isMatrix = shape.length === 2 && !name.startsWith('visual.');
      out.tensors.set(name, { shape, data: isMatrix ? transform(data, shape[0], shape[1]) : data });
    }
    return out;
  }

  it('fp16: bf16 checkpoint weights are exact in half precision, so logits match the reference like fp32', async () => {
    const session = await buildSession(weights, config, 'fp16');
    const got = await runGraph(session, config, call);
    const stats = expectFp32Logits(got.logits, referenceDecoderForward(weights, config, call).logits);
    console.log(`fp16 (bf16 weights): max |logit err| ${stats.maxAbs.toExponential(2)}`);
  });

  it('fp16: weights that are not bf16 are rounded to half precision (the graph computes with the rounded values)', async () => {
    // Nudge every matrix off the bf16 grid so that half precision has to round.
    const rand = prng(4);
    const nudged = transformedWeights(weights, (d) => d.map((x) => x * (1 + 1e-3 * (rand() - 0.5))));
    const asHalf = transformedWeights(nudged, (d) => d.map((x) => float16BitsToNumber(float32ToFloat16Bits(x))));
    const session = await buildSession(nudged, config, 'fp16');
    const got = await runGraph(session, config, call);
    const vsHalf = compareLogits(got.logits, referenceDecoderForward(asHalf, config, call).logits);
    const vsExact = compareLogits(got.logits, referenceDecoderForward(nudged, config, call).logits);
    expect(vsHalf.maxAbs).toBeLessThan(1e-5 * vsHalf.maxRef);
    expect(vsExact.rms).toBeLessThan(1e-2 * vsExact.spread); // the documented fp16 tolerance
    console.log(`fp16 (non-bf16 weights): max |logit err| vs half-rounded ${vsHalf.maxAbs.toExponential(2)}, vs exact: max ${vsExact.maxAbs.toExponential(2)}, rms/spread ${(vsExact.rms / vsExact.spread).toExponential(2)}, top-1 ${vsExact.top1}/${vsExact.rows}`);
  });

  // int8 is DynamicQuantizeMatMul (always quantises activations); its exactness is in test/int8-dq.test.ts.
  for (const [dtype, bits] of [['int4', 4]] as const) {
    it(`${dtype}, accuracy_level 0: the graph computes exactly with the dequantized weights`, async () => {
      const session = await buildSession(weights, config, dtype, { accuracyLevel: 0 });
      const dequantized = transformedWeights(weights, (d, N, K) => dequantizeBlockwise(quantizeBlockwise(d, N, K, bits), N, K, bits));
      const got = await runGraph(session, config, call);
      const stats = compareLogits(got.logits, referenceDecoderForward(dequantized, config, call).logits);
      expect(stats.maxAbs).toBeLessThan(1e-5 * stats.maxRef);
      console.log(`${dtype} acc0 vs dequantized-weight reference: max |logit err| ${stats.maxAbs.toExponential(2)}`);
    });
  }

  // Documented tolerances of the shipped settings (asymmetric, block 32, accuracy_level 4) against the
  // unquantized float64 reference, as RMS logit error over the spread (std) of the reference logits.
  // Measured: int8 (DynamicQuantizeMatMul, 7-bit weights per channel, outlier channels split off) 2.9e-2
  // (top-1 16/16), int4 1.95e-1 (top-1 7/16). Random weights give flat logits
  // (the top-2 gap among 4096 logits is ~0.25 of their spread), so int4's top-1 rate here says little
  // about a trained model; the int4 weight error itself is at the theoretical 1/(15*sqrt(3)) of a
  // uniform block's range (quantize.test.ts).
  const tolerances = { int8: { rms: 0.04, top1: 0.9 }, int4: { rms: 0.3, top1: 0.25 } };
  for (const dtype of ['int8', 'int4'] as const) {
    it(`${dtype}, shipped settings: logit error within the documented tolerance`, async () => {
      const session = await buildSession(weights, config, dtype);
      const got = await runGraph(session, config, call);
      const stats = compareLogits(got.logits, referenceDecoderForward(weights, config, call).logits);
      console.log(`${dtype} (acc 4) vs float64: max |logit err| ${stats.maxAbs.toExponential(2)}, rms ${stats.rms.toExponential(2)}, spread ${stats.spread.toFixed(2)}, rms/spread ${(stats.rms / stats.spread).toExponential(2)}, top-1 ${stats.top1}/${stats.rows}`);
      expect(stats.rms / stats.spread).toBeLessThan(tolerances[dtype].rms);
      expect(stats.top1 / stats.rows).toBeGreaterThanOrEqual(tolerances[dtype].top1);
    });
  }

  // Trained Qwen2.5 models carry a few residual-stream channels 50-100x larger than the rest; random weights
  // have none, and per-tensor activation quantisation is exactly what such channels break. The cache rows and
  // the new rows get four such channels, and every dtype must still be no worse than int4 (the old default).
  it('residual-stream outlier channels (50-100x): int8 stays 5x below int4, which stays within its tolerance', async () => {
    const H = config.text.hiddenSize;
    const outlierCall: Call = { ...call, embeds: Float32Array.from(call.embeds), past: call.past.map((kv) => ({ ...kv })) };
    const channels = [3, 17, 40, 61];
    for (let r = 0; r < S; r++) channels.forEach((c, i) => (outlierCall.embeds[r * H + c] *= 50 + (50 * i) / 3));
    const ref = referenceDecoderForward(weights, config, outlierCall).logits;
    const errors: Record<string, number> = {};
    for (const dtype of ['int8', 'int4'] as const) {
      const stats = compareLogits((await runGraph(await buildSession(weights, config, dtype), config, outlierCall)).logits, ref);
      errors[dtype] = stats.rms / stats.spread;
      console.log(`${dtype} with outlier channels vs float64: rms/spread ${errors[dtype].toExponential(2)}, top-1 ${stats.top1}/${stats.rows}`);
    }
    expect(errors.int4).toBeLessThan(tolerances.int4.rms);
    // Without the outlier split int8 measured 1.9e-2 here (2.3x its 8.1e-3 with it): /5 holds only with the split.
    expect(errors.int8).toBeLessThan(errors.int4 / 5);
  });

  it('a plan: the head and the first and last layers at 8 bits, the rest at 4 with searched ranges: each matrix exactly as planned', async () => {
    const exact = { blockSize: 32, symmetric: false, accuracyLevel: 0 };
    const plan: DecoderPlan = {
      body: { format: 'int4', quant: { ...exact, rounding: 'mse' } },
      head: { format: 'int8', quant: exact },
      edgeLayers: { count: 1, plan: { format: 'int8', quant: exact } },
    };
    const session = await buildSession(weights, config, 'int4', undefined, plan);
    // Independently: which bits each stored matrix should have (layer 0 and the last: 8, the middle: 4 searched).
    const last = config.text.numLayers - 1;
    const expected = new MemoryWeights();
    for (const name of weights.names()) {
      const { shape, data } = weights.get(name);
      const layer = /^model\.layers\.(\d+)\./.exec(name)?.[1];
      const isMatrix = shape.length === 2 && !name.startsWith('visual.');
      if (!isMatrix) {
        expected.tensors.set(name, { shape, data });
        continue;
      }
      const eightBit = layer === undefined ? true : Number(layer) === 0 || Number(layer) === last;
      const [N, K] = shape;
      const stored = eightBit ? dequantizeBlockwise(quantizeBlockwise(data, N, K, 8), N, K, 8) : dequantizeBlockwise(quantizeBlockwise(data, N, K, 4, 32, { search: true }), N, K, 4);
      expected.tensors.set(name, { shape, data: stored });
    }
    const got = await runGraph(session, config, call);
    const stats = compareLogits(got.logits, referenceDecoderForward(expected, config, call).logits);
    expect(stats.maxAbs).toBeLessThan(1e-5 * stats.maxRef);
    // And the plan is closer to float64 than plain int4 (the searched ranges and the 8-bit ends).
    const vsExact = compareLogits(got.logits, referenceDecoderForward(weights, config, call).logits);
    const int4 = compareLogits((await runGraph(await buildSession(weights, config, 'int4', { accuracyLevel: 0 }), config, call)).logits, referenceDecoderForward(weights, config, call).logits);
    console.log(`plan (8-bit head and ends, int4 mse body) vs float64 rms/spread ${(vsExact.rms / vsExact.spread).toExponential(2)}; plain int4 ${(int4.rms / int4.spread).toExponential(2)}`);
    expect(vsExact.rms).toBeLessThan(int4.rms);
  });

  it('int4 with K not a multiple of the block size (hidden 40: the last block is padded)', async () => {
    const odd = tinyConfig({ text: { hiddenSize: 40, numHeads: 4, numKvHeads: 2, vocabSize: 500, intermediateSize: 72 } });
    const oddWeights = randomWeights(odd, 41);
    const session = await buildSession(oddWeights, odd, 'int4', { accuracyLevel: 0 });
    const dequantized = transformedWeights(oddWeights, (d, N, K) => dequantizeBlockwise(quantizeBlockwise(d, N, K, 4), N, K, 4));
    const oddCall = randomCall(odd, 10, 8, 3, range(8, 3), attendAll, range(8));
    const got = await runGraph(session, odd, oddCall);
    const stats = compareLogits(got.logits, referenceDecoderForward(dequantized, odd, oddCall).logits);
    expect(stats.maxAbs).toBeLessThan(1e-5 * stats.maxRef);
  });
});

describe('decoder graph errors', () => {
  const config = tinyConfig({ text: { vocabSize: 300 } });
  const modelPath = () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-decoder-'));
    tempDirs.push(dir);
    return path.join(dir, 'decoder.onnx');
  };

  it('names a missing tensor', () => {
    const weights = randomWeights(config, 1);
    weights.tensors.delete('model.layers.1.mlp.up_proj.weight');
    expect(() => buildDecoderGraph(weights, config, { modelPath: modelPath(), dtype: 'fp32' })).toThrow(/model\.layers\.1\.mlp\.up_proj\.weight/);
  });

  it('names a tensor of the wrong shape, as a model error', () => {
    const weights = randomWeights(config, 1);
    weights.tensors.set('model.norm.weight', { shape: [63], data: new Float32Array(63) });
    let error: unknown;
    try {
      buildDecoderGraph(weights, config, { modelPath: modelPath(), dtype: 'int4' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(DvlError);
    expect((error as DvlError).kind).toBe('model');
    expect((error as Error).message).toMatch(/model\.norm\.weight.*\[63\].*\[64\]/);
  });

  it('refuses an unknown dtype and a head count that is not a multiple of the kv heads', () => {
    const weights = randomWeights(config, 1);
    expect(() => buildDecoderGraph(weights, config, { modelPath: modelPath(), dtype: 'bf16' as DecoderDtype })).toThrow(/dtype 'bf16'/);
    const bad = tinyConfig({ text: { vocabSize: 300, numHeads: 4, numKvHeads: 3 } });
    expect(() => buildDecoderGraph(weights, bad, { modelPath: modelPath(), dtype: 'fp32' })).toThrow(/multiple of 3 kv heads/);
  });

  it('reports progress once per checkpoint tensor', () => {
    const weights = randomWeights(config, 1);
    const calls: [number, number][] = [];
    buildDecoderGraph(weights, config, { modelPath: modelPath(), dtype: 'fp32', onProgress: (done, total) => calls.push([done, total]) });
    const total = config.text.numLayers * 12 + 2;
    expect(calls).toHaveLength(total);
    expect(calls[total - 1]).toEqual([total, total]);
  });
});
