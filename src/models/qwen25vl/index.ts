/**
 * The QwenVL family: DiffusionVL-Qwen2.5VL-3B/7B (and vanilla Qwen2.5-VL checkpoints), whose vision tower is
 * Qwen2.5-VL's own (windowed attention, 2-D rotary, a 2x2 merger), fed smart-resized 14-pixel patches.
 * The implementation lives in the stage folders it grew up in (checkpoint/config.ts, checkpoint/weight-names.ts,
 * convert/vision-graph.ts, preprocess/, runtime/vision-encoder.ts); this is the family's face to the rest.
 */
import path from 'node:path';
import { parseModelConfig } from '../../checkpoint/config.js';
import { qwenVisionTensors } from '../../checkpoint/expected-tensors.js';
import type { ModelConfig } from '../../checkpoint/types.js';
import { canonicalName } from '../../checkpoint/weight-names.js';
import { buildVisionGraph } from '../../convert/vision-graph.js';
import { QWENVL_GENERATION } from '../../generate/bd3lm.js';
import { preprocessImage, type PreprocessedImage } from '../../preprocess/index.js';
import { VisionEncoder } from '../../runtime/vision-encoder.js';
import type { ModelFamily, PreparedImage } from '../family.js';

type QwenPrepared = PreparedImage & PreprocessedImage;

export const qwen25vl: ModelFamily<ModelConfig> = {
  id: 'qwen25vl',
  modelTypes: ['diffusionvl_qwenvl', 'qwen2_5_vl'],
  canonicalName,
  parseConfig: (json, source) => parseModelConfig(json, source),
  precheck: (json, source) => void parseModelConfig(json, source),
  owns: (config): config is ModelConfig => config.family === undefined || config.family === 'qwen25vl',
  visionTensors: qwenVisionTensors,
  writeVision(weights, config, request) {
    buildVisionGraph(weights, config, { modelPath: path.join(request.dir, request.file), dtype: request.dtype, onProgress: request.onProgress });
  },
  // One tower pass per image: no `crops` (the result's images and events stay as they always were).
  prepareImage: (input, _config, options): Promise<QwenPrepared> => preprocessImage(input, { minPixels: options.minPixels, maxPixels: options.maxPixels, name: options.name }),
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
  describe: (config) => [`vision      ${config.vision.depth} layers, hidden ${config.vision.hiddenSize}, ${config.vision.numHeads} heads`],
  maxImagePromptLength: () => undefined,
  generation: QWENVL_GENERATION,
};
