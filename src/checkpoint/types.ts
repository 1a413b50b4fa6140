/**
 * The shapes every later stage needs, read from a checkpoint's config.json.
 * Names follow the architecture, not the config keys (config.ts maps the keys).
 */
export interface TextConfig {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number; // hidden_size / num_attention_heads
  intermediateSize: number;
  vocabSize: number; // rows of embed_tokens
  rmsNormEps: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
  /**
   * max_position_embeddings: the longest sequence (prompt plus answer) the model was made for; absent when
   * config.json does not say (the family's config class default applies: see contextLength).
   */
  maxPositionEmbeddings?: number;
}

export interface VisionConfig {
  depth: number;
  hiddenSize: number;
  numHeads: number;
  intermediateSize: number;
  patchSize: number; // 14
  temporalPatchSize: number; // 2
  spatialMergeSize: number; // 2
  windowSize: number; // 112 (pixels)
  fullattBlockIndexes: number[];
  outHiddenSize: number; // the LLM width
  inChannels: number; // 3
}

/** A QwenVL-family config (DiffusionVL-Qwen2.5VL, vanilla Qwen2.5-VL). */
export interface ModelConfig {
  /** Absent in conversions made before families existed. */
  family?: 'qwen25vl';
  modelType: string;
  text: TextConfig;
  vision: VisionConfig;
  /** bd3lm_block_size; 8 when absent (what the released models were trained and evaluated with). */
  blockSize: number;
  /** 'default': config.json has no bd3lm_block_size (absent: its value). */
  blockSizeFrom?: 'default';
  imageTokenId: number;
  maskTokenId: number; // 151671
  eosTokenId: number; // 151645 (<|im_end|>)
  /** config.json's min_pixels / max_pixels (the training script writes them there): the default pixel budget. */
  minPixels?: number;
  maxPixels?: number;
  /** See BaseModelConfig.notes. */
  notes?: string[];
}

/** Activations of the SigLIP encoder MLP, as transformers names them: tanh-approximated GELU, or exact GELU. */
export type SiglipActivation = 'gelu_pytorch_tanh' | 'gelu';

export interface SiglipVisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  /** Encoder layers to RUN (layers 0 .. numLayers-1); a stored deleted last layer is not counted. */
  numLayers: number;
  numHeads: number;
  /** Crop side in pixels (384); tokens per crop = floor(imageSize / patchSize)^2. */
  imageSize: number;
  patchSize: number;
  layerNormEps: number;
  hiddenAct: SiglipActivation;
}

/** A SigLIP-family config (DiffusionVL-Qwen2.5: Qwen2.5 LLM, SigLIP tower, anyres tiles). */
export interface SiglipQwenConfig {
  family: 'siglip-qwen';
  modelType: string;
  text: TextConfig;
  vision: SiglipVisionConfig;
  /** mlp2x_gelu's input width (mm_hidden_size). */
  projectorInput: number;
  /** image_aspect_ratio, e.g. anyres_max_4 ('pad' and 'anyres' too). */
  imageAspectRatio: string;
  /** anyres_max_N's N; null for plain anyres (no downsampling). */
  anyresMax: number | null;
  /** image_grid_pinpoints as [width, height] pairs. */
  pinpoints: [number, number][];
  /** tokenizer_model_max_length: image prompts are cut to it; null: absent, no limit. */
  maxLength: number | null;
  blockSize: number;
  blockSizeFrom?: 'default';
  maskTokenId: number;
  eosTokenId: number;
  notes?: string[];
}

/** Any family's config, as a manifest holds it. */
export type AnyModelConfig = ModelConfig | SiglipQwenConfig;

/** Element types found in safetensors files that we read. */
export type SafetensorsDtype = 'BF16' | 'F16' | 'F32';

export interface TensorInfo {
  /** Canonical name (vanilla Qwen2.5-VL layout, see weight-names.ts). */
  name: string;
  /** Name as stored in the checkpoint. */
  storedName: string;
  dtype: SafetensorsDtype;
  shape: number[];
  file: string; // absolute path of the shard
  offset: number; // absolute byte offset in the file
  byteLength: number;
}

/**
 * Read access to a checkpoint's weights, one tensor at a time (never the whole checkpoint in memory).
 * Canonical names:
 *   model.embed_tokens.weight, model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias},
 *   model.layers.{i}.self_attn.o_proj.weight, model.layers.{i}.mlp.{gate,up,down}_proj.weight,
 *   model.layers.{i}.{input,post_attention}_layernorm.weight, model.norm.weight, lm_head.weight (absent if tied),
 *   visual.patch_embed.proj.weight, visual.blocks.{i}.{norm1,norm2}.weight, visual.blocks.{i}.attn.{qkv,proj}.{weight,bias},
 *   visual.blocks.{i}.mlp.{gate_proj,up_proj,down_proj}.{weight,bias},
 *   visual.merger.ln_q.weight, visual.merger.mlp.{0,2}.{weight,bias}
 */
export interface WeightSource {
  has(name: string): boolean;
  info(name: string): TensorInfo;
  names(): string[];
  /** The tensor converted to float32 (bf16/f16 widened exactly). */
  readF32(name: string): Float32Array;
}
