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
import type { LinearPlan } from '../convert/recipes.js';
import type { WeightDtype } from '../convert/weight-dtype.js';

export type FamilyId = 'qwen25vl' | 'siglip-qwen';

/** The part of every family's config that the shared stages read. */
export interface BaseModelConfig {
  /** Absent in conversions made before families existed: the QwenVL family. */
  family?: FamilyId;
  modelType: string;
  text: TextConfig;
  /** bd3lm_block_size. */
  blockSize: number;
  /**
   * 'default': config.json has no `bd3lm_block_size`, so blockSize is 8 (every released model was trained and
   * evaluated with blocks of 8). Absent: config.json's value.
   */
  blockSizeFrom?: 'default';
  /**
   * What a reader should know about how config.json was read (an unknown model_type recognised by its
   * architecture, a tower name that its tensors contradict): printed as warnings when converting, and by `dvl show`.
   */
  notes?: string[];
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

/** An image's size after decoding and EXIF orientation (what a family's token count depends on). */
export interface ImageSize {
  width: number;
  height: number;
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
  /** The tower's large linears, when not the dtype's (recipes.ts visionPlan): measurements. */
  plan?: LinearPlan;
  onProgress?: (done: number, total: number) => void;
}

export interface SideWeightFile {
  file: string;
  names(stored: readonly string[]): (stored: string) => string | undefined;
}

/** The image area budget (pixels after resizing) of a family that resizes images to one, and where it came from. */
export interface PixelBudget {
  minPixels: number;
  maxPixels: number;
  /** 'config': config.json's min_pixels / max_pixels (either); 'default': DiffusionVL's training budget 384²..512². */
  from: 'config' | 'default';
}

export interface ModelFamily<C extends BaseModelConfig = BaseModelConfig> {
  readonly id: FamilyId;
  /** What the family is called in messages ("DiffusionVL-Qwen2.5VL"). */
  readonly title: string;
  /** config.json `model_type` values of this family (the upstream loader's aliases included). */
  readonly modelTypes: readonly string[];
  /**
   * For a model_type dvl does not know: whether a class name from config.json's `architectures` or `auto_map`
   * names this family. The name comes lower-cased with everything but letters and digits removed
   * ("DiffusionVL_Qwen2_5_VL_ForConditionalGeneration" -> "diffusionvlqwen25vlforconditionalgeneration").
   */
  namesFamily(name: string): boolean;
  /** Failing a name: whether config.json's keys have this family's structure. */
  hasStructure(json: Record<string, unknown>): boolean;
  /** A stored tensor name -> the name the family's graphs read, or undefined for tensors it does not use. */
  canonicalName(stored: string): string | undefined;
  /**
   * Weight files a checkpoint may hold besides model.safetensors (or its shards), with how each file's stored
   * names map to canonical ones (given all of the file's names). A tensor found in one of them wins over the
   * main files' copy, as the upstream loader prefers a dedicated vision_tower.safetensors.
   */
  readonly sideWeightFiles: readonly SideWeightFile[];
  /** A file of config keys beside config.json that the family reads when present (vision_config.json). */
  readonly sideConfigFile?: string;
  /**
   * config.json -> the config. `shapeOf` gives a tensor's shape by canonical name, for what a config leaves
   * out (the SigLIP tower's shape); `sideConfig` is the sideConfigFile's object when the checkpoint has one.
   */
  parseConfig(json: Record<string, unknown>, source: string, shapeOf: (name: string) => number[] | undefined, sideConfig?: Record<string, unknown>): C;
  /** What can be checked of config.json before the weights are downloaded (throws a model error). */
  precheck(json: Record<string, unknown>, source: string): void;
  /** Whether a parsed config (from a manifest) is this family's. */
  owns(config: BaseModelConfig): config is C;
  /** The vision tensors a conversion needs, with shapes (the text ones are shared). */
  visionTensors(config: C): ExpectedTensor[];
  writeVision(weights: WeightSource, config: C, request: VisionGraphRequest): void;
  prepareImage(input: string | Buffer, config: C, options: ImageOptions): Promise<PreparedImage>;
  /**
   * The prompt tokens an image of this (upright) size becomes, without decoding it: what lets a prompt's length
   * be checked against the context before any work. Equal to the encoder's output rows.
   */
  imageTokens(config: C, size: ImageSize, options: ImageOptions): number;
  /** The context length when config.json has no max_position_embeddings (the family's config class default). */
  readonly defaultContextLength: number;
  /** What of `options` changes prepareImage's result (part of the image cache's key). */
  imageKey(config: C, options: ImageOptions): string;
  visionEncoder(session: Ort.InferenceSession, config: C, dir: string): FamilyVisionEncoder;
  /** The model's default pixel budget (families whose images are not resized to a budget return the default, unused). */
  pixelBudget(config: C): PixelBudget;
  /** Lines for `dvl show`. */
  describe(config: C): string[];
  /** Image prompts longer than this are cut (after splicing), as the reference does; undefined: no limit. */
  maxImagePromptLength(config: C): number | undefined;
  readonly generation: GenerationQuirks;
}
