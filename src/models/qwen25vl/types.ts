/** The QwenVL family's config: the Qwen2 text keys every family has, Qwen2.5-VL's tower, DiffusionVL's keys. */
import type { TextConfig } from '../../checkpoint/types.js';

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

