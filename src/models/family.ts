/**
 * What differs between DiffusionVL model families, behind one small interface; everything else (the decoder
 * graph, the generation loop, the prompt, the store, the CLI and the server) is shared and never asks which
 * family it has. A family says how to read its config.json and weight names, which vision tensors it needs,
 * how its vision graph is written, how an image becomes the tower's input, and how the tower's output
 * becomes prompt rows. A new family is a new folder here and one line in index.ts.
 */
import type { TextConfig, WeightSource } from '../checkpoint/types.js';
import type { ExpectedTensor } from '../checkpoint/expected-tensors.js';
import type { GenerationQuirks } from '../generate/bd3lm.js';
import type { Ort } from '../runtime/onnxruntime.js';
import type { WeightDtype } from '../convert/manifest.js';

export type FamilyId = 'qwen25vl' | 'siglip-qwen';

/** The part of every family's config that the shared stages read. */
export interface BaseModelConfig {
  /** Absent in conversions made before families existed: the QwenVL family. */
  family?: FamilyId;
  modelType: string;
  text: TextConfig;
  /** bd3lm_block_size. */
  blockSize: number;
  maskTokenId: number;
  eosTokenId: number;
}

/** How a request wants its images read (what a family does not use, it ignores). */
export interface ImageOptions {
  minPixels: number;
  maxPixels: number;
  /** Images in the whole prompt, earlier turns included (the SigLIP family reads several images differently). */
  imagesInPrompt: number;
  /** SigLIP family: anyres_max_N's N (default: the config's). */
  tiles?: number;
  /** SigLIP family: 'pad' reads every image as one crop (the multi-image mode), the cheapest. */
  imageMode?: 'anyres' | 'pad';
  /** Name for error messages when the input is bytes. */
  name?: string;
}

/** An image ready for the tower. */
export interface PreparedImage {
  /** Size after decoding and EXIF orientation. */
  original: { width: number; height: number };
  /** The size it was resized to (the padded canvas for tiled images). */
  resized: { width: number; height: number };
  /** Tower passes it takes (absent: 1, a family without crops). */
  crops?: number;
}

export interface EncodedImage {
  /** [tokens, text hidden] prompt rows. */
  embeds: Float32Array;
  tokens: number;
}

export interface FamilyVisionEncoder {
  /** `onCrop(done, total)` after each tower pass. */
  encode(image: PreparedImage, onCrop?: (done: number, total: number) => void): Promise<EncodedImage>;
}

export interface VisionGraphRequest {
  /** Directory the conversion is written to (the vision graph and any side files of the family). */
  dir: string;
  /** File name of the vision graph in `dir`. */
  file: string;
  dtype: WeightDtype;
  onProgress?: (done: number, total: number) => void;
}

export interface ModelFamily<C extends BaseModelConfig = BaseModelConfig> {
  readonly id: FamilyId;
  /** config.json `model_type` values of this family. */
  readonly modelTypes: readonly string[];
  /** A stored tensor name -> the name the family's graphs read, or undefined for tensors it does not use. */
  canonicalName(stored: string): string | undefined;
  /**
   * config.json -> the config. `shapeOf` gives a tensor's shape by canonical name, for what a config leaves
   * out (the SigLIP tower's shape).
   */
  parseConfig(json: Record<string, unknown>, source: string, shapeOf: (name: string) => number[] | undefined): C;
  /** What can be checked of config.json before the weights are downloaded (throws a model error). */
  precheck(json: Record<string, unknown>, source: string): void;
  /** Whether a parsed config (from a manifest) is this family's. */
  owns(config: BaseModelConfig): config is C;
  /** The vision tensors a conversion needs, with shapes (the text ones are shared). */
  visionTensors(config: C): ExpectedTensor[];
  writeVision(weights: WeightSource, config: C, request: VisionGraphRequest): void;
  prepareImage(input: string | Buffer, config: C, options: ImageOptions): Promise<PreparedImage>;
  /** What of `options` changes prepareImage's result (part of the image cache's key). */
  imageKey(config: C, options: ImageOptions): string;
  visionEncoder(session: Ort.InferenceSession, config: C, dir: string): FamilyVisionEncoder;
  /** Lines for `dvl show`. */
  describe(config: C): string[];
  /** Image prompts longer than this are cut (after splicing), as the reference does; undefined: no limit. */
  maxImagePromptLength(config: C): number | undefined;
  readonly generation: GenerationQuirks;
}
