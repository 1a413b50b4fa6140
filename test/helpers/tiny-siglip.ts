/**
 * Tiny checkpoints of the SigLIP family (DiffusionVL-Qwen2.5: `model_type: "diffusionvl_qwen"`) in the training
 * layout: config.json with the keys train.py saves (a flat Qwen2Config plus LLaVA's mm_* keys), optionally a
 * `vision_config` block for the tiny tower, and bf16 weights under the real names (LLM under `model.`, tower
 * under `model.vision_tower.vision_tower.vision_model.`, projector `model.mm_projector.{0,2}`,
 * `model.image_newline`). The post_layernorm (and with a vision_config, the deleted last layer) are stored, as
 * a SigLIP checkpoint stores them, with weights that would change the answer if they were used.
 */
import fs from 'node:fs';
import path from 'node:path';
import { textTensors } from '../../src/checkpoint/expected-tensors.js';
import type { TextConfig } from '../../src/checkpoint/types.js';
import type { SiglipQwenConfig, SiglipVisionConfig } from '../../src/models/siglip-qwen/types.js';
import { SIGLIP_PREFIX } from '../../src/models/siglip-qwen/vision-config.js';
import { siglipQwen } from '../../src/models/siglip-qwen/index.js';
import { MemoryWeights, prng, roundToBf16, tinyConfig } from './random-weights.js';
import { copyTokenizerFiles, writeBf16Tensors, writeSyntheticTensors } from './tiny-checkpoint.js';

export interface TinySiglipOptions {
  seed: number;
  text?: Partial<TextConfig>;
  /** The tower that runs (numLayers layers). */
  vision?: Partial<SiglipVisionConfig>;
  /** Write a vision_config block (num_hidden_layers = numLayers + 1, the last stored too); else shapes are inferred. */
  visionConfig?: boolean;
  imageAspectRatio?: string;
  blockSize?: number;
  shards?: number;
}

export function tinySiglipConfig(options: TinySiglipOptions): SiglipQwenConfig {
  // The QwenVL family's tiny LLM (the same Qwen2 decoder), untied by default as train.py saves this family.
  const text: TextConfig = tinyConfig({ text: { tieWordEmbeddings: false, ...options.text } }).text;
  // Inferred towers have 16 heads (the so400m value, not in the weights).
  const vision: SiglipVisionConfig = {
    hiddenSize: 32,
    intermediateSize: 48,
    numLayers: 2,
    numHeads: options.visionConfig ? 4 : 16,
    imageSize: 384,
    patchSize: 48,
    layerNormEps: 1e-6,
    hiddenAct: 'gelu_pytorch_tanh',
    ...options.vision,
  };
  const pinpoints: [number, number][] = [];
  for (let i = 1; i <= 6; i++) for (let j = 1; j <= 6; j++) pinpoints.push([384 * i, 384 * j]);
  const aspect = options.imageAspectRatio ?? 'anyres_max_4';
  return {
    family: 'siglip-qwen',
    modelType: 'diffusionvl_qwen',
    text,
    vision,
    projectorInput: vision.hiddenSize,
    imageAspectRatio: aspect,
    anyresMax: /^anyres_max_(\d+)/.exec(aspect) ? Number(/^anyres_max_(\d+)/.exec(aspect)![1]) : null,
    pinpoints,
    maxLength: 8192,
    blockSize: options.blockSize ?? 8,
    maskTokenId: 151671,
    eosTokenId: 151645,
  };
}

/** Writes the checkpoint; returns the config reading it back must give and its weights (canonical = stored names). */
export function writeTinySiglipCheckpoint(dir: string, options: TinySiglipOptions): { config: SiglipQwenConfig; weights: MemoryWeights } {
  const config = tinySiglipConfig(options);
  const rand = prng(options.seed);
  const weights = new MemoryWeights();
  const v = config.vision;
  const stored = storedTensors(config);
  if (options.visionConfig) {
    // The layer upstream deletes at load time: stored, never run.
    const last = v.numLayers;
    for (const t of siglipQwen.visionTensors({ ...config, vision: { ...v, numLayers: last + 1 } })) {
      if (t.name.includes(`encoder.layers.${last}.`)) stored.push(t);
    }
  }
  for (const { name, shape } of stored) weights.tensors.set(name, { shape, data: init(name, shape, rand) });

  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(configJson(config, options.visionConfig ?? false), null, 2)}\n`);
  fs.writeFileSync(path.join(dir, 'generation_config.json'), `${JSON.stringify({ bos_token_id: 151643, eos_token_id: 151645, pad_token_id: 151643 }, null, 2)}\n`);
  copyTokenizerFiles(dir);
  writeBf16Tensors(dir, [...weights.tensors].map(([name, t]) => ({ name, ...t })), options.shards ?? 1);
  return { config, weights };
}

/** Every tensor the family reads, plus the tower's post_layernorm (stored by SigLIP, never used). */
function storedTensors(config: SiglipQwenConfig): { name: string; shape: number[] }[] {
  const v = config.vision;
  return [
    ...textTensors(config.text),
    ...siglipQwen.visionTensors(config),
    { name: `${SIGLIP_PREFIX}post_layernorm.weight`, shape: [v.hiddenSize] },
    { name: `${SIGLIP_PREFIX}post_layernorm.bias`, shape: [v.hiddenSize] },
  ];
}

/** config.json as train.py saves it for this family (Qwen2Config.to_dict() plus the LLaVA model args). */
function configJson(config: SiglipQwenConfig, withVisionConfig: boolean): Record<string, unknown> {
  const t = config.text;
  const v = config.vision;
  return {
    architectures: ['DiffusionVLQwenForCausalLM'],
    model_type: 'diffusionvl_qwen',
    hidden_size: t.hiddenSize,
    intermediate_size: t.intermediateSize,
    num_hidden_layers: t.numLayers,
    num_attention_heads: t.numHeads,
    num_key_value_heads: t.numKvHeads,
    vocab_size: t.vocabSize,
    rms_norm_eps: t.rmsNormEps,
    rope_theta: t.ropeTheta,
    tie_word_embeddings: t.tieWordEmbeddings,
    hidden_act: 'silu',
    max_position_embeddings: 32768,
    max_window_layers: 28,
    rope_scaling: null,
    use_sliding_window: false,
    sliding_window: 131072,
    attention_dropout: 0,
    torch_dtype: 'bfloat16',
    use_cache: true,
    bos_token_id: 151643,
    eos_token_id: 151645,
    mm_vision_tower: 'google/siglip2-so400m-patch14-384',
    mm_projector_type: 'mlp2x_gelu',
    mm_hidden_size: v.hiddenSize,
    mm_vision_select_layer: -2,
    mm_vision_select_feature: 'patch',
    mm_patch_merge_type: 'spatial_unpad',
    image_aspect_ratio: config.imageAspectRatio,
    image_grid_pinpoints: config.pinpoints,
    image_crop_resolution: null,
    image_split_resolution: null,
    mm_use_im_start_end: false,
    mm_use_im_patch_token: false,
    tokenizer_model_max_length: config.maxLength,
    tokenizer_padding_side: 'right',
    bd3lm_block_size: config.blockSize,
    enable_bd3lm: true,
    transformers_version: '4.55.0',
    ...(withVisionConfig
      ? {
          vision_config: {
            model_type: 'siglip_vision_model',
            hidden_size: v.hiddenSize,
            intermediate_size: v.intermediateSize,
            num_hidden_layers: v.numLayers + 1,
            num_attention_heads: v.numHeads,
            image_size: v.imageSize,
            patch_size: v.patchSize,
            hidden_act: v.hiddenAct,
            layer_norm_eps: v.layerNormEps,
          },
        }
      : {}),
  };
}

/** Norms near 1, biases small, matrices ~ 1/sqrt(fan_in), embeddings O(1); bf16-exact. */
function init(name: string, shape: number[], rand: () => number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const u = () => rand() * 2 - 1;
  if (/(norm|layer_norm[12]|layernorm)\.weight$/.test(name)) for (let i = 0; i < n; i++) out[i] = 1 + 0.2 * u();
  else if (name.endsWith('.bias')) for (let i = 0; i < n; i++) out[i] = 0.1 * u();
  else if (name.endsWith('image_newline') || name.includes('position_embedding') || name.includes('embed_tokens')) for (let i = 0; i < n; i++) out[i] = u();
  else {
    const fanIn = name.includes('patch_embedding') ? n / shape[0] : shape[shape.length - 1];
    const scale = 1.7 / Math.sqrt(fanIn);
    for (let i = 0; i < n; i++) out[i] = scale * u();
  }
  return roundToBf16(out);
}

/**
 * DiffusionVL-Qwen2.5-7B's real shapes (Qwen2.5-7B + siglip2-so400m-patch14-384, 26 tower layers stored, as
 * the released checkpoint most likely stores them, no vision_config) with cheap random bf16 values: ~16 GB,
 * for measurements, never committed.
 */
export function writeSyntheticSiglip7b(dir: string, seed: number): { config: SiglipQwenConfig } {
  const config = tinySiglipConfig({
    seed,
    text: { hiddenSize: 3584, numLayers: 28, numHeads: 28, numKvHeads: 4, intermediateSize: 18944, vocabSize: 152064, tieWordEmbeddings: false, ropeTheta: 1_000_000 },
    vision: { hiddenSize: 1152, intermediateSize: 4304, numLayers: 26, numHeads: 16, patchSize: 14 },
  });
  const tensors = storedTensors(config);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(configJson(config, false), null, 2)}\n`);
  copyTokenizerFiles(dir);
  writeSyntheticTensors(dir, tensors, seed, (name) => /(norm|layer_norm[12]|layernorm)\.weight$/.test(name));
  return { config };
}
