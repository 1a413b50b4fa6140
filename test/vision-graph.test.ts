/**
 * The vision graph (models/qwen25vl/vision-graph.ts) fed by the host layout (models/qwen25vl/vision-layout.ts) against the
 * float64 reference of test/reference/vision-tower.ts, on random tiny weights.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WeightSource } from '../src/checkpoint/types.js';
import { buildVisionGraph } from '../src/models/qwen25vl/vision-graph.js';
import { type GridThw, patchWidth, visionFeeds } from '../src/models/qwen25vl/vision-layout.js';
import { plainToOrt } from '../src/models/qwen25vl/vision-encoder.js';
import { prng, randomWeights, tinyConfig } from './helpers/random-weights.js';
import { referenceVisionTower } from './reference/vision-tower.js';
import { maxAbs, maxAbsDiff } from './helpers/compare.js';
import { expectModelError } from './helpers/errors.js';

const config = tinyConfig();
const vision = config.vision;
const weights = randomWeights(config, 1234);

function randomPatches(grid: GridThw, seed: number): Float32Array {
  const rand = prng(seed);
  const n = grid[0] * grid[1] * grid[2];
  // Normalised pixel values lie roughly in [-1.8, 2.2].
  return Float32Array.from({ length: n * patchWidth(vision) }, () => rand() * 4 - 1.8);
}

describe('vision graph', () => {
  let dir: string;
  let session: ort.InferenceSession;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-vision-'));
    const modelPath = path.join(dir, 'vision.onnx');
    const started = performance.now();
    const progress: number[] = [];
    const sizes = buildVisionGraph(weights, config, { modelPath, dtype: 'fp32', onProgress: (done) => progress.push(done) });
    const built = performance.now();
    session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1 });
    console.log(
      `tiny vision graph: build ${(built - started).toFixed(0)} ms, session ${(performance.now() - built).toFixed(0)} ms, ` +
        `model ${sizes.modelBytes} B, data ${sizes.dataBytes} B`,
    );
    // Every tensor of the tower and projector is read exactly once.
    const visionTensors = weights.names().filter((n) => n.startsWith('visual.'));
    expect(progress.length).toBe(visionTensors.length);
    expect(progress.at(-1)).toBe(visionTensors.length);
  });

  afterAll(async () => {
    await session?.release();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function runGraph(grid: GridThw, patches: Float32Array, windows?: 'one window'): Promise<Float32Array> {
    const { feeds, reverse } = visionFeeds(patches, grid, vision);
    const tensors: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) tensors[name] = plainToOrt(t);
    if (windows === 'one window') {
      // All rows in a single window: the windowed blocks attend to every row too.
      const n = feeds.pixel_patches.dims[0];
      const identity = BigInt64Array.from({ length: n }, (_, i) => BigInt(i));
      tensors.window_rows = new ort.Tensor('int64', identity, [1, n]);
      tensors.window_slots = new ort.Tensor('int64', identity, [n]);
      tensors.window_bias = new ort.Tensor('float32', new Float32Array(n * n), [1, 1, n, n]);
    }
    const started = performance.now();
    const out = await session.run(tensors);
    const elapsed = performance.now() - started;
    const embeds = out.image_embeds;
    const units = (grid[1] * grid[2]) / 4;
    expect(embeds.dims).toEqual([units, vision.outHiddenSize]);
    console.log(`grid ${grid.join('x')}: ${grid[1] * grid[2]} patches, run ${elapsed.toFixed(1)} ms`);
    return reverse(embeds.data as Float32Array, vision.outHiddenSize);
  }

  // 1x8x12: two windows side by side, the right one partial (4x2 merged units).
  // 1x10x10: windows padded at the bottom and the right (4x4, 4x1, 1x4, 1x1 merged units).
  // 1x18x4: three windows stacked, the last one a single row of merged units.
  // 1x4x6: the whole image is one partial window.
  const grids: GridThw[] = [[1, 8, 12], [1, 10, 10], [1, 18, 4], [1, 4, 6]];
  for (const [index, grid] of grids.entries()) {
    it(`matches the float64 reference for grid ${grid.join('x')}`, async () => {
      const patches = randomPatches(grid, 100 + index);
      const actual = await runGraph(grid, patches);
      const expected = referenceVisionTower(weights, vision, patches, grid);
      const err = maxAbsDiff(actual, expected);
      const scale = maxAbs(expected);
      console.log(`grid ${grid.join('x')}: max abs error ${err.toExponential(2)} (max |value| ${scale.toFixed(3)})`);
      expect(scale).toBeGreaterThan(0.1);
      expect(err).toBeLessThan(2e-5 * Math.max(1, scale));
    });
  }

  it('depends on the window restriction (and one window of every row gives full attention in every block)', async () => {
    const grid: GridThw = [1, 8, 12];
    const patches = randomPatches(grid, 7);
    const windowed = referenceVisionTower(weights, vision, patches, grid);
    const fullEverywhere = referenceVisionTower(weights, vision, patches, grid, { allFullAttention: true });
    // The two references differ by far more than the tolerance above, so a graph ignoring windows would fail.
    expect(maxAbsDiff(windowed, fullEverywhere)).toBeGreaterThan(1e-2);
    const graphFull = await runGraph(grid, patches, 'one window');
    expect(maxAbsDiff(graphFull, fullEverywhere)).toBeLessThan(2e-5 * Math.max(1, maxAbs(fullEverywhere)));
  });

  it('stores fp16 weights losslessly (bf16 values) and int8 weights with a small error', async () => {
    const grid: GridThw = [1, 8, 12];
    const patches = randomPatches(grid, 11);
    const expected = referenceVisionTower(weights, vision, patches, grid);
    const fp32Bytes = fs.statSync(path.join(dir, 'vision.onnx.data')).size;
    for (const dtype of ['fp16', 'int8', 'int4'] as const) {
      const modelPath = path.join(dir, `vision-${dtype}.onnx`);
      const sizes = buildVisionGraph(weights, config, { modelPath, dtype });
      const other = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1 });
      const { feeds, reverse } = visionFeeds(patches, grid, vision);
      const tensors: Record<string, ort.Tensor> = {};
      for (const [name, t] of Object.entries(feeds)) tensors[name] = plainToOrt(t);
      const actual = reverse((await other.run(tensors)).image_embeds.data as Float32Array, vision.outHiddenSize);
      await other.release();
      const err = maxAbsDiff(actual, expected);
      const relL2 = Math.sqrt(actual.reduce((a, v, i) => a + (v - expected[i]) ** 2, 0) / expected.reduce((a, v) => a + v * v, 0));
      console.log(`${dtype}: data ${sizes.dataBytes} B (fp32 ${fp32Bytes} B), max abs error ${err.toExponential(2)}, relative L2 ${relL2.toExponential(2)}`);
      expect(sizes.dataBytes).toBeLessThan(fp32Bytes * 0.75);
      if (dtype === 'fp16') expect(err).toBeLessThan(1e-5 * maxAbs(expected));
      // int8/int4 towers: int8 weights per channel, activations quantised per call (DynamicQuantizeMatMul): 3.3e-2
      // measured here; MatMulNBits' per-block activations gave 1.4e-2, at about twice the time.
      else expect(relL2).toBeLessThan(5e-2);
    }
  });

  it('refuses a checkpoint with a missing or misshapen vision tensor', () => {
    const modelPath = path.join(dir, 'broken.onnx');
    const missing = 'visual.blocks.2.attn.proj.bias';
    const without: WeightSource = {
      has: (n) => n !== missing && weights.has(n),
      info: (n) => weights.info(n),
      names: () => weights.names().filter((n) => n !== missing),
      readF32: (n) => weights.readF32(n),
    };
    expectModelError(() => buildVisionGraph(without, config, { modelPath, dtype: 'fp32' }), /no tensor visual\.blocks\.2\.attn\.proj\.bias/);

    const transposed = 'visual.blocks.0.attn.qkv.weight';
    const misshapen: WeightSource = { ...without, has: (n) => weights.has(n), info: (n) => (n === transposed ? { ...weights.info(n), shape: [32, 96] } : weights.info(n)) };
    expectModelError(() => buildVisionGraph(misshapen, config, { modelPath, dtype: 'fp32' }), /qkv\.weight has shape \[32, 96\], expected \[96, 32\]/);

    const badIndexes = { ...config, vision: { ...vision, fullattBlockIndexes: [1, 4] } };
    expectModelError(() => buildVisionGraph(weights, badIndexes, { modelPath, dtype: 'fp32' }), /fullatt_block_indexes entry 4/);
  });
});

