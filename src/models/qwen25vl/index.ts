/**
 * The QwenVL family: DiffusionVL-Qwen2.5VL-3B/7B (also saved under vanilla Qwen2.5-VL names), whose vision tower is
 * Qwen2.5-VL's own (windowed attention, 2-D rotary, a 2x2 merger), fed smart-resized 14-pixel patches.
 * config.json's model_type is `diffusionvl_qwenvl` (or the upstream alias `llada_qwen`, or `qwen2_5_vl` with bd3lm
 * keys); the upstream converter's layout (vision_tower.safetensors, projector.safetensors, vision_config.json)
 * is read as well as the release layout.
 * This file is the family's face to the rest (the ModelFamily interface); the implementation is beside it: config
 * and types, weight names and expected tensors, smart_resize and the patch layout (preprocess.ts), the tower graph
 * with its window layout, and the vision encoder.
 */
import path from 'node:path';
import { parseModelConfig, parseTopLevel, QWENVL_MODEL_TYPES } from './config.js';
import { qwenVisionTensors } from './expected-tensors.js';
import type { ModelConfig } from './types.js';
import { canonicalName, projectorFileName, towerFileNames } from './weight-names.js';
import { buildVisionGraph } from './vision-graph.js';
import { QWENVL_GENERATION } from '../../generate/bd3lm.js';
import { preprocessImage, type PreprocessedImage } from './preprocess.js';
import { smartResize } from './smart-resize.js';
import { DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, resolvePixelBudget } from '../../preprocess/pixel-budget.js';
import { VisionEncoder } from './vision-encoder.js';
import type { ModelFamily, PreparedImage } from '../family.js';

type QwenPrepared = PreparedImage & PreprocessedImage;

export const qwen25vl: ModelFamily<ModelConfig> = {
  id: 'qwen25vl',
  title: 'DiffusionVL-Qwen2.5VL',
  modelTypes: QWENVL_MODEL_TYPES,
  // DiffusionVLQwenVLForCausalLM, DiffusionVL_Qwen2_5_VL_ForConditionalGeneration: the upstream builder's rule
  // ("diffusionvl" and "qwenvl" in the name), with Qwen2.5-VL's own spelling too.
  namesFamily: (name) => /qwen(2|25)?vl/.test(name.replace('diffusionvl', '')),
  hasStructure: (json) =>
    typeof json.vision_config === 'object' && json.vision_config !== null && 'out_hidden_size' in json.vision_config && json.mm_projector_type === 'qwen_merger',
  canonicalName,
  sideWeightFiles: [
    { file: 'vision_tower.safetensors', names: towerFileNames },
    { file: 'projector.safetensors', names: () => projectorFileName },
  ],
  sideConfigFile: 'vision_config.json',
  parseConfig: (json, source, _shapeOf, sideConfig) => parseModelConfig(json, source, sideConfig),
  // The tower's keys may be in a vision_config.json that is not downloaded yet: config.json's own are checked.
  precheck: (json, source) => void parseTopLevel(json, source),
  owns: (config): config is ModelConfig => config.family === undefined || config.family === 'qwen25vl',
  visionTensors: qwenVisionTensors,
  writeVision(weights, config, request) {
    buildVisionGraph(weights, config, { modelPath: path.join(request.dir, request.file), dtype: request.dtype, plan: request.plan, onProgress: request.onProgress });
  },
  // One tower pass per image: no `crops` (the result's images and events stay as they always were).
  prepareImage: (input, _config, options): Promise<QwenPrepared> => preprocessImage(input, { minPixels: options.minPixels, maxPixels: options.maxPixels, name: options.name }),
  // One token per 2x2 merged patch of 14 pixels, after smart_resize.
  imageTokens: (_config, size, options) => {
    const resized = smartResize(size.height, size.width, { minPixels: options.minPixels, maxPixels: options.maxPixels });
    return (resized.height / 28) * (resized.width / 28);
  },
  // Qwen2_5_VLTextConfig's default.
  defaultContextLength: 128_000,
  imageKey: (_config, options) => `${options.minPixels}:${options.maxPixels}`,
  visionEncoder(session, config) {
    const encoder = new VisionEncoder(session, config.vision);
    return {
      async encode(image, onCrop) {
        const encoded = await encoder.encode(image as QwenPrepared);
        onCrop?.(1, 1);
        return encoded;
      },
    };
  },
  // The upstream tower reads min_pixels / max_pixels from the model's config and falls back to 384²..512².
  pixelBudget: (config) => ({
    ...resolvePixelBudget({ minPixels: DEFAULT_MIN_PIXELS, maxPixels: DEFAULT_MAX_PIXELS }, { minPixels: config.minPixels, maxPixels: config.maxPixels }),
    from: config.minPixels !== undefined || config.maxPixels !== undefined ? 'config' : 'default',
  }),
  describe(config) {
    const budget = this.pixelBudget(config);
    const from = budget.from === 'config' ? 'config.json min_pixels / max_pixels' : "DiffusionVL's training budget; config.json sets none";
    return [
      `vision      ${config.vision.depth} layers, hidden ${config.vision.hiddenSize}, ${config.vision.numHeads} heads`,
      `images      resized to ${budget.minPixels}..${budget.maxPixels} pixels (${from})`,
    ];
  },
  maxImagePromptLength: () => undefined,
  generation: QWENVL_GENERATION,
};
