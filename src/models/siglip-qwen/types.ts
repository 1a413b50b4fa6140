/** The SigLIP family's config: a flat Qwen2 config, the SigLIP tower's shape, LLaVA's image keys. */
import type { TextConfig } from '../../checkpoint/types.js';

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

