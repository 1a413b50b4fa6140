/**
 * The DiffusionVL-Qwen SigLIP tower + projector graph (models/siglip-qwen/vision-graph.ts) against the float64
 * reference of test/reference/siglip-tower.ts on tiny random weights stored under the real checkpoint names, and
 * the shape inference of models/siglip-qwen/vision-config.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WeightSource } from '../src/checkpoint/types.js';
import { type SiglipVisionConfig, inferProjectorShape, inferSiglipConfig } from '../src/models/siglip-qwen/vision-config.js';
import { buildSiglipVisionGraph } from '../src/models/siglip-qwen/vision-graph.js';
import { type Ort, ort } from '../src/runtime/onnxruntime.js';
import { MemoryWeights, prng, roundToBf16 } from './helpers/random-weights.js';
import { referenceSiglipTower } from './reference/siglip-tower.js';
import { maxAbs, maxAbsDiff, relativeRms } from './helpers/compare.js';
import { expectModelError } from './helpers/errors.js';

const TOWER = 'model.vision_tower.vision_tower.vision_model.';

interface TinyShape {
  hidden: number;
  intermediate: number;
  storedLayers: number;
  patch: number;
  grid: number;
  mmOut: number;
  /** Also store what upstream ignores: a deleted last layer (index storedLayers) and the pooling head. */
  extras?: boolean;
}

/** Every tower and projector tensor of a checkpoint with these shapes: name -> shape. */
function tensorShapes(s: TinyShape): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const C = s.hidden;
  m.set(`${TOWER}embeddings.patch_embedding.weight`, [C, 3, s.patch, s.patch]);
  m.set(`${TOWER}embeddings.patch_embedding.bias`, [C]);
  m.set(`${TOWER}embeddings.position_embedding.weight`, [s.grid * s.grid, C]);
  const layers = s.storedLayers + (s.extras ? 1 : 0);
  for (let i = 0; i < layers; i++) {
    const l = `${TOWER}encoder.layers.${i}.`;
    for (const n of ['layer_norm1', 'layer_norm2']) {
      m.set(`${l}${n}.weight`, [C]);
      m.set(`${l}${n}.bias`, [C]);
    }
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      m.set(`${l}self_attn.${n}.weight`, [C, C]);
      m.set(`${l}self_attn.${n}.bias`, [C]);
    }
    m.set(`${l}mlp.fc1.weight`, [s.intermediate, C]);
    m.set(`${l}mlp.fc1.bias`, [s.intermediate]);
    m.set(`${l}mlp.fc2.weight`, [C, s.intermediate]);
    m.set(`${l}mlp.fc2.bias`, [C]);
  }
  m.set(`${TOWER}post_layernorm.weight`, [C]);
  m.set(`${TOWER}post_layernorm.bias`, [C]);
  if (s.extras) {
    m.set(`${TOWER}head.probe`, [1, 1, C]);
    m.set(`${TOWER}head.attention.in_proj_weight`, [3 * C, C]);
    m.set(`${TOWER}head.layernorm.weight`, [C]);
  }
  m.set('model.mm_projector.0.weight', [s.mmOut, C]);
  m.set('model.mm_projector.0.bias', [s.mmOut]);
  m.set('model.mm_projector.2.weight', [s.mmOut, s.mmOut]);
  m.set('model.mm_projector.2.bias', [s.mmOut]);
  return m;
}

/** Random bf16-valued weights: norms near 1, biases small, matrices ~ 1/sqrt(fan_in). */
function randomSiglipWeights(s: TinyShape, seed: number): MemoryWeights {
  const weights = new MemoryWeights();
  const rand = prng(seed);
  const uniform = () => rand() * 2 - 1;
  for (const [name, shape] of tensorShapes(s)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (/norm\d?\.weight$/.test(name)) for (let i = 0; i < n; i++) data[i] = 1 + 0.2 * uniform();
    else if (name.endsWith('.bias')) for (let i = 0; i < n; i++) data[i] = 0.1 * uniform();
    else if (name.endsWith('position_embedding.weight')) for (let i = 0; i < n; i++) data[i] = 0.5 * uniform();
    else {
      const fanIn = n / shape[0];
      for (let i = 0; i < n; i++) data[i] = (1.7 / Math.sqrt(fanIn)) * uniform();
    }
    weights.tensors.set(name, { shape, data: roundToBf16(data) });
  }
  return weights;
}

const shapeLookup = (w: WeightSource) => (name: string) => (w.has(name) ? w.info(name).shape : undefined);

/** A WeightSource that hides some tensors or serves other data for some (the rest from `base`). */
function edited(base: MemoryWeights, options: { drop?: string[]; replace?: Record<string, Float32Array> }): WeightSource {
  const drop = new Set(options.drop ?? []);
  const replace = options.replace ?? {};
  return {
    has: (n) => !drop.has(n) && base.has(n),
    info: (n) => base.info(n),
    names: () => base.names().filter((n) => !drop.has(n)),
    readF32: (n) => (n in replace ? replace[n].slice() : base.readF32(n)),
  };
}

function randomPixels(crops: number, size: number, seed: number): Float32Array {
  const rand = prng(seed);
  // Normalised crops ((x - 0.5) / 0.5) lie in [-1, 1].
  return Float32Array.from({ length: crops * 3 * size * size }, () => rand() * 2 - 1);
}

// hidden 32, 4 heads of 8, MLP 48, 3 stored layers, 56x56 crops at patch 14 (4x4 = 16 tokens), projector to 64.
const tiny: TinyShape = { hidden: 32, intermediate: 48, storedLayers: 3, patch: 14, grid: 4, mmOut: 64 };
const TEXT_HIDDEN = 64;
const visionConfigJson = { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 4, num_attention_heads: 4, image_size: 56, patch_size: 14, layer_norm_eps: 1e-6, hidden_act: 'gelu_pytorch_tanh' };
const weights = randomSiglipWeights(tiny, 4321);

describe('SigLIP tower config', () => {
  it('takes a vision_config block and runs num_hidden_layers - 1 layers', () => {
    const config = inferSiglipConfig(visionConfigJson, shapeLookup(weights));
    expect(config).toEqual({ hiddenSize: 32, intermediateSize: 48, numLayers: 3, numHeads: 4, imageSize: 56, patchSize: 14, layerNormEps: 1e-6, hiddenAct: 'gelu_pytorch_tanh' });
    // gelu_new is the same tanh formula; the deleted last layer being stored changes nothing.
    const withExtras = randomSiglipWeights({ ...tiny, extras: true }, 1);
    expect(inferSiglipConfig({ ...visionConfigJson, hidden_act: 'gelu_new' }, shapeLookup(withExtras))).toEqual(config);
  });

  it('infers the so400m tower from the shapes alone (no vision_config)', () => {
    const so400m = tensorShapes({ hidden: 1152, intermediate: 4304, storedLayers: 26, patch: 14, grid: 27, mmOut: 3584 });
    const lookup = (n: string) => so400m.get(n);
    const expected: SiglipVisionConfig = { hiddenSize: 1152, intermediateSize: 4304, numLayers: 26, numHeads: 16, imageSize: 384, patchSize: 14, layerNormEps: 1e-6, hiddenAct: 'gelu_pytorch_tanh' };
    expect(inferSiglipConfig(undefined, lookup)).toEqual(expected);
    expect(inferSiglipConfig(null, lookup)).toEqual(expected);
    // The SigLIP directory's own config (27 layers, one deleted at load).
    const siglipJson = { hidden_size: 1152, intermediate_size: 4304, num_hidden_layers: 27, num_attention_heads: 16, image_size: 384, patch_size: 14, hidden_act: 'gelu_pytorch_tanh', layer_norm_eps: 1e-6 };
    expect(inferSiglipConfig(siglipJson, lookup)).toEqual(expected);
    // Missing keys take upstream's SigLipVisionConfig defaults (the so400m values).
    expect(inferSiglipConfig({}, lookup)).toEqual(expected);
    expect(inferProjectorShape(lookup)).toEqual({ inputSize: 1152, outputSize: 3584 });
    expect(inferProjectorShape(lookup, { visionHidden: 1152, textHidden: 3584 })).toEqual({ inputSize: 1152, outputSize: 3584 });
  });

  it('fails with a model error naming what is missing or inconsistent', () => {
    const lookupWithout = (missing: string) => (n: string) => (n === missing ? undefined : weights.has(n) ? weights.info(n).shape : undefined);
    for (const missing of [
      `${TOWER}embeddings.patch_embedding.weight`,
      `${TOWER}embeddings.position_embedding.weight`,
      `${TOWER}encoder.layers.0.mlp.fc1.weight`,
    ]) {
      expectModelError(() => inferSiglipConfig(undefined, lookupWithout(missing)), new RegExp(`no tensor ${missing.replaceAll('.', '\\.')}$`));
    }
    expectModelError(
      () => inferSiglipConfig(undefined, lookupWithout(`${TOWER}encoder.layers.0.self_attn.q_proj.weight`)),
      /no tensor model\.vision_tower\.vision_tower\.vision_model\.encoder\.layers\.0\.self_attn\.q_proj\.weight/,
    );
    // vision_config asks for 4 layers to run, 3 are stored.
    expectModelError(() => inferSiglipConfig({ ...visionConfigJson, num_hidden_layers: 5 }, shapeLookup(weights)), /runs 4 layers.*no tensor .*encoder\.layers\.3\.self_attn\.q_proj\.weight/);
    // Without vision_config the image size is 384: 16 position rows do not fit a 384 crop at patch 14.
    expectModelError(() => inferSiglipConfig(undefined, shapeLookup(weights)), /position_embedding\.weight has 16 rows, but a 384-pixel crop at patch size 14 has 729 tokens/);
    expectModelError(() => inferSiglipConfig({ ...visionConfigJson, hidden_size: 64 }, shapeLookup(weights)), /hidden_size 64.*does not match/);
    expectModelError(() => inferSiglipConfig({ ...visionConfigJson, intermediate_size: 64 }, shapeLookup(weights)), /intermediate_size 64 does not match/);
    expectModelError(() => inferSiglipConfig({ ...visionConfigJson, num_attention_heads: 5 }, shapeLookup(weights)), /not a multiple of 5 heads/);
    expectModelError(() => inferSiglipConfig({ ...visionConfigJson, hidden_act: 'quick_gelu' }, shapeLookup(weights)), /vision_config\.hidden_act/);
    expectModelError(() => inferSiglipConfig([], shapeLookup(weights)), /"vision_config" must be an object/);
    expectModelError(() => inferProjectorShape(lookupWithout('model.mm_projector.2.bias')), /no tensor model\.mm_projector\.2\.bias/);
    expectModelError(() => inferProjectorShape(shapeLookup(weights), { textHidden: 128 }), /mm_projector\.0\.weight has shape \[64, 32\], expected \[128, 32\]/);
  });
});

describe('SigLIP vision graph', () => {
  let dir: string;
  const sessions = new Map<string, Ort.InferenceSession>();
  const config = inferSiglipConfig(visionConfigJson, shapeLookup(weights));

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-siglip-'));
  });

  afterAll(async () => {
    for (const s of sessions.values()) await s.release();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Builds (once per key) and opens a graph. */
  async function session(
    key: string,
    source: WeightSource,
    vision: SiglipVisionConfig,
    dtype: 'fp32' | 'fp16' | 'int8' | 'int4' = 'fp32',
    onProgress?: (done: number, total: number) => void,
  ): Promise<{ session: Ort.InferenceSession; dataBytes: number }> {
    const modelPath = path.join(dir, `${key}.onnx`);
    const started = performance.now();
    const sizes = buildSiglipVisionGraph(source, vision, TEXT_HIDDEN, { modelPath, dtype, onProgress });
    const s = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1 });
    console.log(`${key}: build + session ${(performance.now() - started).toFixed(0)} ms, model ${sizes.modelBytes} B, data ${sizes.dataBytes} B`);
    sessions.set(key, s);
    return { session: s, dataBytes: sizes.dataBytes };
  }

  async function run(s: Ort.InferenceSession, pixels: Float32Array, crops: number, vision: SiglipVisionConfig): Promise<Float32Array> {
    const S = vision.imageSize;
    const out = await s.run({ pixel_values: new ort.Tensor('float32', pixels, [crops, 3, S, S]) });
    const features = out.image_features;
    const tokens = Math.floor(S / vision.patchSize) ** 2;
    expect(features.dims).toEqual([crops, tokens, TEXT_HIDDEN]);
    return features.data as Float32Array;
  }

  let fp32: Ort.InferenceSession;
  const pixels = randomPixels(2, 56, 77);

  it('reads every tensor it uses once, and matches the float64 reference on 2 crops at once', async () => {
    const progress: [number, number][] = [];
    fp32 = (await session('fp32', weights, config, 'fp32', (done, total) => progress.push([done, total]))).session;
    const total = 3 + 16 * 3 + 4;
    expect(progress.length).toBe(total);
    expect(progress.at(-1)).toEqual([total, total]);

    const actual = await run(fp32, pixels, 2, config);
    const expected = referenceSiglipTower(weights, config, TEXT_HIDDEN, pixels, 2);
    const err = maxAbsDiff(actual, expected);
    const scale = maxAbs(expected);
    console.log(`fp32: max abs error ${err.toExponential(2)} (max |value| ${scale.toFixed(3)}), relative L2 ${relativeRms(actual, expected).toExponential(2)}`);
    expect(scale).toBeGreaterThan(0.1);
    expect(err).toBeLessThan(1e-5 * scale);

    // The reference is sensitive to what the graph must leave out: post_layernorm, or one layer fewer/more.
    const withPostLn = referenceSiglipTower(weights, config, TEXT_HIDDEN, pixels, 2, { applyPostLayernorm: true });
    expect(maxAbsDiff(withPostLn, expected)).toBeGreaterThan(1e-2 * scale);
    const fewer = referenceSiglipTower(weights, { ...config, numLayers: 2 }, TEXT_HIDDEN, pixels, 2);
    expect(maxAbsDiff(fewer, expected)).toBeGreaterThan(1e-2 * scale);
  });

  it('treats crops independently: crop 1 alone gives the same features as in the batch', async () => {
    const both = await run(fp32, pixels, 2, config);
    const per = 3 * 56 * 56;
    const alone = await run(fp32, pixels.slice(per), 1, config);
    const inBatch = both.subarray(both.length / 2);
    const err = maxAbsDiff(alone, inBatch);
    console.log(`crop 1 alone vs in the batch: max abs difference ${err.toExponential(2)}`);
    expect(err).toBeLessThan(1e-6 * maxAbs(inBatch));
    // And crop 0's pixels do not reach crop 1: a different crop 0 leaves crop 1 as it was.
    const otherFirst = Float32Array.from(pixels);
    otherFirst.set(randomPixels(1, 56, 5));
    const changed = await run(fp32, otherFirst, 2, config);
    expect(maxAbsDiff(changed.subarray(changed.length / 2), inBatch)).toBeLessThan(1e-6 * maxAbs(inBatch));
    expect(maxAbsDiff(changed.subarray(0, changed.length / 2), both.subarray(0, both.length / 2))).toBeGreaterThan(1e-2);
  });

  it('ignores the pixels past the last whole patch (60x60 crops: 4x4 patches, 4 rows and columns unused)', async () => {
    const vision60 = inferSiglipConfig({ ...visionConfigJson, image_size: 60 }, shapeLookup(weights));
    expect(vision60.imageSize).toBe(60);
    const s = (await session('fp32-60', weights, vision60)).session;
    const px = randomPixels(2, 60, 91);
    const actual = await run(s, px, 2, vision60);
    const expected = referenceSiglipTower(weights, vision60, TEXT_HIDDEN, px, 2);
    expect(maxAbsDiff(actual, expected)).toBeLessThan(1e-5 * maxAbs(expected));
    // Rewrite every pixel in rows 56..59 or columns 56..59: nothing changes.
    const edges = Float32Array.from(px);
    for (let crop = 0; crop < 2; crop++) {
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < 60; y++) {
          for (let x = 0; x < 60; x++) if (y >= 56 || x >= 56) edges[((crop * 3 + c) * 60 + y) * 60 + x] = 5 * Math.sin(y * 7 + x);
        }
      }
    }
    expect(Array.from(await run(s, edges, 2, vision60))).toEqual(Array.from(actual));
    // ... while the same pixels of a 56x56 window matter (the check above could not pass trivially).
    const inside = Float32Array.from(px);
    inside[55 * 60 + 55] += 1;
    expect(maxAbsDiff(await run(s, inside, 2, vision60), actual)).toBeGreaterThan(1e-4);
  });

  it('runs the exact GELU in the encoder MLP for hidden_act "gelu"', async () => {
    const vision = inferSiglipConfig({ ...visionConfigJson, hidden_act: 'gelu' }, shapeLookup(weights));
    expect(vision.hiddenAct).toBe('gelu');
    const s = (await session('fp32-gelu-erf', weights, vision)).session;
    const actual = await run(s, pixels, 2, vision);
    const expected = referenceSiglipTower(weights, vision, TEXT_HIDDEN, pixels, 2);
    expect(maxAbsDiff(actual, expected)).toBeLessThan(1e-5 * maxAbs(expected));
    // The two GELU forms differ by up to ~1e-3 per activation: enough to tell them apart here.
    expect(maxAbsDiff(expected, referenceSiglipTower(weights, config, TEXT_HIDDEN, pixels, 2))).toBeGreaterThan(1e-4);
  });

  it('does not use post_layernorm, a stored deleted last layer or the pooling head', async () => {
    const withExtras = randomSiglipWeights({ ...tiny, extras: true }, 4321);
    // Layers 0..2, the embeddings and the projector as in `weights`; layer 3, the head and post_layernorm differ.
    const C = tiny.hidden;
    const source = edited(withExtras, {
      replace: {
        ...Object.fromEntries(weights.names().map((n) => [n, weights.get(n).data])),
        [`${TOWER}post_layernorm.weight`]: Float32Array.from({ length: C }, (_, i) => 3 + i),
        [`${TOWER}post_layernorm.bias`]: Float32Array.from({ length: C }, (_, i) => -2 + 0.1 * i),
      },
    });
    const vision = inferSiglipConfig(visionConfigJson, shapeLookup(source));
    expect(vision.numLayers).toBe(3);
    const s = (await session('fp32-extras', source, vision)).session;
    expect(Array.from(await run(s, pixels, 2, vision))).toEqual(Array.from(await run(fp32, pixels, 2, config)));
  });

  it('runs a tower whose shape was inferred without vision_config (16 heads of 4, 384 crops, patch 96)', async () => {
    const shape: TinyShape = { hidden: 64, intermediate: 80, storedLayers: 2, patch: 96, grid: 4, mmOut: TEXT_HIDDEN };
    const w = randomSiglipWeights(shape, 99);
    const vision = inferSiglipConfig(undefined, shapeLookup(w));
    expect(vision).toEqual({ hiddenSize: 64, intermediateSize: 80, numLayers: 2, numHeads: 16, imageSize: 384, patchSize: 96, layerNormEps: 1e-6, hiddenAct: 'gelu_pytorch_tanh' });
    const s = (await session('fp32-inferred', w, vision)).session;
    const px = randomPixels(2, 384, 13);
    const actual = await run(s, px, 2, vision);
    const expected = referenceSiglipTower(w, vision, TEXT_HIDDEN, px, 2);
    const err = maxAbsDiff(actual, expected);
    console.log(`inferred 16-head tower: max abs error ${err.toExponential(2)} (max |value| ${maxAbs(expected).toFixed(3)})`);
    expect(err).toBeLessThan(1e-5 * maxAbs(expected));
  });

  it('stores fp16 weights losslessly (bf16 values) and 8-bit weights for int8 and int4 with a small error', async () => {
    const expected = referenceSiglipTower(weights, config, TEXT_HIDDEN, pixels, 2);
    const fp32Bytes = fs.statSync(path.join(dir, 'fp32.onnx.data')).size;
    const scale = maxAbs(expected);
    const outputs: Record<string, Float32Array> = {};
    for (const dtype of ['fp16', 'int8', 'int4'] as const) {
      const { session: s, dataBytes } = await session(dtype, weights, config, dtype);
      const actual = await run(s, pixels, 2, config);
      outputs[dtype] = actual;
      const err = maxAbsDiff(actual, expected);
      const rel = relativeRms(actual, expected);
      console.log(`${dtype}: data ${dataBytes} B (fp32 ${fp32Bytes} B), max abs error ${err.toExponential(2)}, relative L2 ${rel.toExponential(2)}`);
      // Tiny tensors: the 4 KiB alignment of the external data dominates, so only "smaller" is checked.
      expect(dataBytes).toBeLessThan(fp32Bytes);
      if (dtype === 'fp16') {
        expect(err).toBeLessThan(1e-5 * scale);
      } else {
        // 8-bit block weights with int8 activations (accuracy level 4): relative L2 1.8e-2 and max abs 2% of the
        // largest value measured here (one block per row at these widths); 3e-2 as for the Qwen tower.
        expect(rel).toBeLessThan(3e-2);
        expect(err).toBeLessThan(0.1 * scale);
      }
    }
    // int4 keeps the tower at 8 bits (visionWeightFormat): the same graph as int8.
    expect(Array.from(outputs.int4)).toEqual(Array.from(outputs.int8));
  });

  it('refuses a checkpoint with a missing or misshapen tensor', () => {
    const modelPath = path.join(dir, 'broken.onnx');
    const missing = `${TOWER}encoder.layers.1.mlp.fc2.bias`;
    expectModelError(
      () => buildSiglipVisionGraph(edited(weights, { drop: [missing] }), config, TEXT_HIDDEN, { modelPath, dtype: 'fp32' }),
      /no tensor model\.vision_tower\.vision_tower\.vision_model\.encoder\.layers\.1\.mlp\.fc2\.bias/,
    );
    expectModelError(
      () => buildSiglipVisionGraph(weights, config, 128, { modelPath, dtype: 'fp32' }),
      /mm_projector\.0\.weight has shape \[64, 32\], expected \[128, 32\]/,
    );
    expectModelError(() => buildSiglipVisionGraph(weights, { ...config, numLayers: 4 }, TEXT_HIDDEN, { modelPath, dtype: 'fp32' }), /no tensor .*encoder\.layers\.3\./);
    expectModelError(() => buildSiglipVisionGraph(weights, { ...config, numHeads: 5 }, TEXT_HIDDEN, { modelPath, dtype: 'fp32' }), /not a multiple of 5 heads/);
  });
});
