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
