/**
 * Deterministic random weights for tiny models, held in memory, behind the WeightSource interface.
 * Values are rounded to bf16 so that the same numbers can be written to a bf16 checkpoint on disk.
 */
import { expectedTensors } from '../../src/models/qwen25vl/expected-tensors.js';
import type { TensorInfo, WeightSource } from '../../src/checkpoint/types.js';
import type { ModelConfig } from '../../src/models/qwen25vl/types.js';

/** mulberry32: a tiny seeded PRNG (test data only). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Rounds float32 values to the nearest bf16 (ties to even), in place. */
export function roundToBf16(values: Float32Array): Float32Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i];
    const rounded = (b + 0x7fff + ((b >>> 16) & 1)) >>> 0;
    bits[i] = rounded & 0xffff0000;
  }
  return values;
}

/**
 * Scale per tensor kind: norms near 1, biases small, matrices ~ 1/sqrt(fan_in) so activations stay O(1)
 * and logits are spread enough for argmax to be meaningful.
 */
function initTensor(name: string, shape: number[], rand: () => number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const uniform = () => rand() * 2 - 1;
  if (name.endsWith('norm.weight') || /norm[12]\.weight$/.test(name) || name.endsWith('ln_q.weight') || name.endsWith('layernorm.weight')) {
    for (let i = 0; i < n; i++) out[i] = 1 + 0.2 * uniform();
  } else if (name.endsWith('.bias')) {
    for (let i = 0; i < n; i++) out[i] = 0.1 * uniform();
  } else {
    const fanIn = name.startsWith('visual.patch_embed') ? n / shape[0] : shape[shape.length - 1];
    const scale = name.includes('embed_tokens') ? 1 : 1.7 / Math.sqrt(fanIn);
    for (let i = 0; i < n; i++) out[i] = scale * uniform();
  }
  return roundToBf16(out);
}

export class MemoryWeights implements WeightSource {
  readonly tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  has(name: string): boolean {
    return this.tensors.has(name);
  }
  names(): string[] {
    return [...this.tensors.keys()];
  }
  info(name: string): TensorInfo {
    const t = this.get(name);
    return { name, storedName: name, dtype: 'F32', shape: t.shape, file: '<memory>', offset: 0, byteLength: t.data.byteLength };
  }
  readF32(name: string): Float32Array {
    return this.get(name).data.slice();
  }
  /** Direct access for references (no copy). */
  get(name: string): { shape: number[]; data: Float32Array } {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`no tensor ${name}`);
    return t;
  }
}

/** All canonical tensors of `config`, filled deterministically from `seed`. */
export function randomWeights(config: ModelConfig, seed: number): MemoryWeights {
  const weights = new MemoryWeights();
  const rand = prng(seed);
  for (const { name, shape } of expectedTensors(config)) {
    weights.tensors.set(name, { shape, data: initTensor(name, shape, rand) });
  }
  return weights;
}

/** A small model with the real structure: vocab large enough for the mask id 151671. */
export function tinyConfig(overrides: { text?: Partial<ModelConfig['text']>; vision?: Partial<ModelConfig['vision']>; blockSize?: number } = {}): ModelConfig {
  const text = {
    hiddenSize: 64,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    intermediateSize: 96,
    vocabSize: 151680,
    rmsNormEps: 1e-6,
    ropeTheta: 1_000_000,
    tieWordEmbeddings: true,
    maxPositionEmbeddings: 128000,
    ...overrides.text,
  };
  text.headDim = text.hiddenSize / text.numHeads;
  const vision = {
    depth: 4,
    hiddenSize: 32,
    numHeads: 2,
    intermediateSize: 48,
    patchSize: 14,
    temporalPatchSize: 2,
    spatialMergeSize: 2,
    windowSize: 112,
    fullattBlockIndexes: [1, 3],
    outHiddenSize: text.hiddenSize,
    inChannels: 3,
    ...overrides.vision,
  };
  return {
    modelType: 'diffusionvl_qwenvl',
    text,
    vision,
    blockSize: overrides.blockSize ?? 8,
    imageTokenId: 151655,
    maskTokenId: 151671,
    eosTokenId: 151645,
  };
}
