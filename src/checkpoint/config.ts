/**
 * Reads a QwenVL-family checkpoint's config.json into a ModelConfig (which family a config.json is, models/index.ts
 * decides first).
 *
 * The kinds of config accepted:
 * - DiffusionVL (`model_type: "diffusionvl_qwenvl"`, or the upstream builder's alias `llada_qwen`): the text keys
 *   appear at the top level AND under `text_config`; the vision keys under `vision_config` (or in a
 *   `vision_config.json` beside it: the upstream converter's layout, whose file wins as it does upstream);
 *   `bd3lm_block_size`, `image_token_id`, `min_pixels` / `max_pixels` at the top level.
 * - a DiffusionVL checkpoint saved as `model_type: "qwen2_5_vl"`: older transformers write the text keys at the top
 *   level, newer ones under `text_config` (often both). It must carry a `bd3lm_*` or `enable_bd3lm` key: without one
 *   it is an ordinary autoregressive Qwen2.5-VL model, which run as a diffusion model writes gibberish.
 *
 * Precedence for text keys: `text_config` first (the reference config class copies every text_config value over
 * the top-level attributes, so the nested value wins), then the top level. Where the reference would instead fall
 * back to a class default for a key missing from a present `text_config`, we use the top-level value: that only
 * differs for a hand-edited config and the top-level value is what its author meant.
 *
 * Defaults are used only where the reference config classes define one and a default cannot silently produce
 * wrong shapes (norm eps, rope theta, tying, vision geometry). Shape-defining keys are required: the class
 * defaults (e.g. vision hidden_size 3584, text hidden_size 8192) match no released model. One default is the
 * evaluation's rather than the config class's: a missing `bd3lm_block_size` means 8 (the class says 4, but every
 * released model was trained with blocks of 8 and the upstream evaluation scripts force 8).
 */
import fs from 'node:fs';
import path from 'node:path';
import { modelError } from '../util/errors.js';
import type { ModelConfig, TextConfig, VisionConfig } from './types.js';

/** The reference hard-codes these ids in generate_with_bd3lm (they are not read from config.json). */
export const MASK_TOKEN_ID = 151671;
export const EOS_TOKEN_ID = 151645;

/** Defaults of Qwen2_5_VLTextConfig / Qwen2_5_VLVisionConfig / DiffusionVLQwenVLConfig (transformers, DiffusionVL). */
const DEFAULTS = {
  rmsNormEps: 1e-5,
  ropeTheta: 1_000_000,
  tieWordEmbeddings: false,
  patchSize: 14,
  temporalPatchSize: 2,
  spatialMergeSize: 2,
  windowSize: 112,
  fullattBlockIndexes: [7, 15, 23, 31],
  inChannels: 3,
  imageTokenId: 151655,
};

/** A missing bd3lm_block_size: the block size every released model was trained and evaluated with. */
export const DEFAULT_BLOCK_SIZE = 8;

/** The config.json model_type values of the QwenVL family: DiffusionVL's, the upstream builder's alias, Qwen2.5-VL's. */
export const QWENVL_MODEL_TYPES = ['diffusionvl_qwenvl', 'llada_qwen', 'qwen2_5_vl'] as const;

export type JsonObject = Record<string, unknown>;

export const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Reads and parses `<dir>/config.json`. */
export function readModelConfig(dir: string): ModelConfig {
  return parseModelConfig(readConfigJson(dir), path.join(dir, 'config.json'));
}

/** `<dir>/config.json` as a JSON object (a family reads its keys); a model error naming the file otherwise. */
export function readConfigJson(dir: string): JsonObject {
  return readJsonObject(path.join(dir, 'config.json'));
}

/** A JSON object file of a checkpoint (config.json, vision_config.json); a model error naming it otherwise. */
export function readJsonObject(file: string): JsonObject {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw modelError(`cannot read ${file}: ${(e as Error).message}`, e);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw modelError(`${file} is not valid JSON: ${(e as Error).message}`, e);
  }
  if (!isObject(json)) throw modelError(`${file}: expected a JSON object`);
  return json;
}

/**
 * Looks keys up in an ordered list of JSON objects and checks their types.
 * `where` names the objects in messages ("text_config.hidden_size", "hidden_size").
 */
export class KeyReader {
  constructor(
    private readonly source: string,
    private readonly scopes: { obj: JsonObject; prefix: string }[],
  ) {}

  /** First scope that has the key (a JSON null counts as absent, as in the Python classes' `is None` checks). */
  private find(key: string): { value: unknown; where: string } | undefined {
    for (const { obj, prefix } of this.scopes) {
      if (key in obj && obj[key] !== null) return { value: obj[key], where: prefix + key };
    }
    return undefined;
  }

  private missing(key: string): Error {
    const places = this.scopes.map((s) => (s.prefix ? `in ${s.prefix.slice(0, -1)}` : 'at the top level'));
    return modelError(`${this.source}: missing "${key}" (looked ${places.join(' and ')})`);
  }

  private bad(where: string, value: unknown, what: string): Error {
    return modelError(`${this.source}: "${where}" must be ${what}, got ${JSON.stringify(value)}`);
  }

  has(key: string): boolean {
    return this.find(key) !== undefined;
  }

  /** The key is written as JSON null somewhere and has no value anywhere. */
  isNull(key: string): boolean {
    return !this.has(key) && this.scopes.some(({ obj }) => obj[key] === null);
  }

  positiveInt(key: string, fallback?: number): number {
    const found = this.find(key);
    if (!found) {
      if (fallback === undefined) throw this.missing(key);
      return fallback;
    }
    const v = found.value;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw this.bad(found.where, v, 'a positive integer');
    return v;
  }

  positiveNumber(key: string, fallback?: number): number {
    const found = this.find(key);
    if (!found) {
      if (fallback === undefined) throw this.missing(key);
      return fallback;
    }
    const v = found.value;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw this.bad(found.where, v, 'a positive number');
    return v;
  }

  boolean(key: string, fallback: boolean): boolean {
    const found = this.find(key);
    if (!found) return fallback;
    if (typeof found.value !== 'boolean') throw this.bad(found.where, found.value, 'true or false');
    return found.value;
  }

  intList(key: string, fallback: number[]): number[] {
    const found = this.find(key);
    if (!found) return [...fallback];
    const v = found.value;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) {
      throw this.bad(found.where, v, 'a list of non-negative integers');
    }
    return [...(v as number[])];
  }

  /** The raw value (for nested objects such as rope_parameters). */
  raw(key: string): unknown {
    return this.find(key)?.value;
  }
}

/**
 * Parses a config.json object. `source` names the file in error messages. `visionConfig`: the upstream
 * converter's vision_config.json, which replaces config.json's `vision_config` (as the upstream loader does).
 */
export function parseModelConfig(json: unknown, source: string, visionConfig?: JsonObject): ModelConfig {
  const top = parseTopLevel(json, source);
  const vision = visionConfig
    ? parseVisionConfig(visionConfig, `${source} (vision_config.json beside it)`, '')
    : parseVisionConfig((json as JsonObject).vision_config, source, 'vision_config.');
  const config: ModelConfig = { ...top, vision };
  checkConsistency(config, source);
  return config;
}

/** Everything but the tower: what config.json alone says (checked before a download, too). */
export function parseTopLevel(json: unknown, source: string): Omit<ModelConfig, 'vision'> {
  if (!isObject(json)) throw modelError(`${source}: expected a JSON object`);
  const modelType = typeof json.model_type === 'string' ? json.model_type : '';
  refuseAutoregressive(json, modelType, source);
  const text = parseTextConfig(json, source);
  checkText(text, source);
  const top = new KeyReader(source, [{ obj: json, prefix: '' }]);
  const hasBlockSize = top.has('bd3lm_block_size');
  const minPixels = top.has('min_pixels') ? top.positiveInt('min_pixels') : undefined;
  const maxPixels = top.has('max_pixels') ? top.positiveInt('max_pixels') : undefined;
  if (minPixels !== undefined && maxPixels !== undefined && minPixels > maxPixels) {
    throw modelError(`${source}: min_pixels ${minPixels} is larger than max_pixels ${maxPixels}`);
  }
  return {
    modelType,
    text,
    blockSize: hasBlockSize ? top.positiveInt('bd3lm_block_size') : DEFAULT_BLOCK_SIZE,
    ...(hasBlockSize ? {} : { blockSizeFrom: 'default' as const }),
    imageTokenId: top.positiveInt('image_token_id', DEFAULTS.imageTokenId),
    maskTokenId: MASK_TOKEN_ID,
    eosTokenId: EOS_TOKEN_ID,
    ...(minPixels !== undefined ? { minPixels } : {}),
    ...(maxPixels !== undefined ? { maxPixels } : {}),
  };
}

/**
 * `model_type: "qwen2_5_vl"` without any `bd3lm_*` / `enable_bd3lm` key is a plain autoregressive Qwen2.5-VL
 * model (what DiffusionVL starts from, not what it releases): refused rather than run into gibberish.
 */
function refuseAutoregressive(json: JsonObject, modelType: string, source: string): void {
  if (modelType !== 'qwen2_5_vl') return;
  if (Object.keys(json).some((key) => key.startsWith('bd3lm_') || key === 'enable_bd3lm')) return;
  throw modelError(
    `${source}: this is an autoregressive Qwen2.5-VL checkpoint (model_type "qwen2_5_vl" without bd3lm_block_size or enable_bd3lm), not a DiffusionVL one; dvl runs block-diffusion models only (a DiffusionVL release such as hustvl/DiffusionVL-Qwen2.5VL-3B)`,
  );
}

/** Defaults a family's config class gives the text keys. */
export interface TextDefaults {
  rmsNormEps: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
}

/** The Qwen2 text keys (`text_config` first, then the top level); defaults are the family's config class's. */
export function parseTextConfig(json: JsonObject, source: string, defaults: TextDefaults = DEFAULTS): TextConfig {
  const scopes: { obj: JsonObject; prefix: string }[] = [];
  if (json.text_config !== undefined && json.text_config !== null) {
    if (!isObject(json.text_config)) throw modelError(`${source}: "text_config" must be an object`);
    scopes.push({ obj: json.text_config, prefix: 'text_config.' });
  }
  scopes.push({ obj: json, prefix: '' });
  const r = new KeyReader(source, scopes);

  const hiddenSize = r.positiveInt('hidden_size');
  const numHeads = r.positiveInt('num_attention_heads');
  // An explicit null means "same as num_attention_heads" (backward-compatibility rule of the config class).
  const numKvHeads = r.isNull('num_key_value_heads') ? numHeads : r.positiveInt('num_key_value_heads');
  return {
    hiddenSize,
    numLayers: r.positiveInt('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim: hiddenSize / numHeads, // checked to be an integer in checkConsistency
    intermediateSize: r.positiveInt('intermediate_size'),
    vocabSize: r.positiveInt('vocab_size'),
    rmsNormEps: r.positiveNumber('rms_norm_eps', defaults.rmsNormEps),
    ropeTheta: readRopeTheta(r, source, defaults.ropeTheta),
    tieWordEmbeddings: r.boolean('tie_word_embeddings', defaults.tieWordEmbeddings),
    ...(r.has('max_position_embeddings') ? { maxPositionEmbeddings: r.positiveInt('max_position_embeddings') } : {}),
  };
}

/** `rope_theta` (transformers < 5) or `rope_parameters.rope_theta` (newer configs). */
function readRopeTheta(r: KeyReader, source: string, fallback: number): number {
  if (r.has('rope_theta')) return r.positiveNumber('rope_theta');
  const params = r.raw('rope_parameters');
  if (isObject(params) && params.rope_theta !== undefined) {
    const theta = params.rope_theta;
    if (typeof theta !== 'number' || !Number.isFinite(theta) || theta <= 0) {
      throw modelError(`${source}: "rope_parameters.rope_theta" must be a positive number, got ${JSON.stringify(theta)}`);
    }
    return theta;
  }
  return fallback;
}

/** The tower's keys: config.json's `vision_config` (prefix 'vision_config.'), or a vision_config.json (prefix ''). */
function parseVisionConfig(vision: unknown, source: string, prefix: string): VisionConfig {
  if (!isObject(vision)) throw modelError(`${source}: missing "vision_config" (an object; or a vision_config.json beside it)`);
  const r = new KeyReader(source, [{ obj: vision, prefix }]);
  return {
    depth: r.positiveInt('depth'),
    hiddenSize: r.positiveInt('hidden_size'),
    numHeads: r.positiveInt('num_heads'),
    intermediateSize: r.positiveInt('intermediate_size'),
    patchSize: r.positiveInt('patch_size', DEFAULTS.patchSize),
    temporalPatchSize: r.positiveInt('temporal_patch_size', DEFAULTS.temporalPatchSize),
    spatialMergeSize: r.positiveInt('spatial_merge_size', DEFAULTS.spatialMergeSize),
    windowSize: r.positiveInt('window_size', DEFAULTS.windowSize),
    fullattBlockIndexes: r.intList('fullatt_block_indexes', DEFAULTS.fullattBlockIndexes),
    outHiddenSize: r.positiveInt('out_hidden_size'),
    // Released Qwen2.5-VL configs write `in_chans`; the transformers class reads `in_channels`.
    inChannels: r.has('in_channels') ? r.positiveInt('in_channels') : r.positiveInt('in_chans', DEFAULTS.inChannels),
  };
}

/** Relations between text keys that every later stage relies on. */
function checkText(t: TextConfig, source: string): void {
  const fail = (msg: string) => {
    throw modelError(`${source}: ${msg}`);
  };
  if (t.hiddenSize % t.numHeads !== 0) fail(`hidden_size ${t.hiddenSize} is not divisible by num_attention_heads ${t.numHeads}`);
  if (t.numHeads % t.numKvHeads !== 0) fail(`num_attention_heads ${t.numHeads} is not divisible by num_key_value_heads ${t.numKvHeads}`);
  if (t.headDim % 2 !== 0) fail(`text head size ${t.headDim} must be even for rotary embeddings`);
  if (t.vocabSize <= MASK_TOKEN_ID) fail(`vocab_size ${t.vocabSize} has no row for the mask token ${MASK_TOKEN_ID}`);
}

/** Relations between the tower's keys and the text's. */
function checkConsistency(c: ModelConfig, source: string): void {
  const fail = (msg: string) => {
    throw modelError(`${source}: ${msg}`);
  };
  const t = c.text;
  const v = c.vision;
  if (v.hiddenSize % v.numHeads !== 0) fail(`vision_config.hidden_size ${v.hiddenSize} is not divisible by vision_config.num_heads ${v.numHeads}`);
  // The 2-D vision rotary splits head_dim/2 between rows and columns, each needing an even count.
  if ((v.hiddenSize / v.numHeads) % 4 !== 0) fail(`vision head size ${v.hiddenSize / v.numHeads} must be divisible by 4 for 2-D rotary embeddings`);
  if (v.outHiddenSize !== t.hiddenSize) fail(`vision_config.out_hidden_size ${v.outHiddenSize} does not match the text hidden_size ${t.hiddenSize}`);
  if (Math.floor(v.windowSize / v.spatialMergeSize / v.patchSize) < 1) {
    fail(`vision_config.window_size ${v.windowSize} is smaller than one merged patch (${v.spatialMergeSize * v.patchSize} pixels)`);
  }
  const badIndex = v.fullattBlockIndexes.find((i) => i >= v.depth);
  if (badIndex !== undefined) fail(`vision_config.fullatt_block_indexes has ${badIndex}, but depth is ${v.depth}`);
}
