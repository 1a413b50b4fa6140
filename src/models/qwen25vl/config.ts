/**
 * config.json of the QwenVL family (DiffusionVL-Qwen2.5VL) into a ModelConfig. Which family a config.json is,
 * models/index.ts decides first; the text keys are read as every family reads them (checkpoint/config.ts).
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
 * The vision geometry has the reference classes' defaults; its shape-defining keys are required (the class
 * defaults, e.g. vision hidden_size 3584, match no released model).
 */
import path from 'node:path';
import { checkTextConfig, DEFAULT_BLOCK_SIZE, EOS_TOKEN_ID, isObject, type JsonObject, KeyReader, MASK_TOKEN_ID, parseTextConfig, readConfigJson } from '../../checkpoint/config.js';
import type { ModelConfig, VisionConfig } from './types.js';
import { modelError } from '../../util/errors.js';

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

/** The config.json model_type values of the QwenVL family: DiffusionVL's, the upstream builder's alias, Qwen2.5-VL's. */
export const QWENVL_MODEL_TYPES = ['diffusionvl_qwenvl', 'llada_qwen', 'qwen2_5_vl'] as const;

/** Reads and parses `<dir>/config.json`. */
export function readModelConfig(dir: string): ModelConfig {
  return parseModelConfig(readConfigJson(dir), path.join(dir, 'config.json'));
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
  const text = parseTextConfig(json, source, DEFAULTS);
  checkTextConfig(text, source);
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
