/**
 * The SigLIP family: DiffusionVL-Qwen2.5-7B, the Qwen2.5-7B-Instruct LLM with a SigLIP tower
 * (siglip2-so400m-patch14-384), the mlp2x_gelu projector and LLaVA-OneVision's any-resolution tiles
 * (spec diffusionvl-qwen.md). One image is a base crop plus the tiles of its best grid (anyres.ts), each
 * crop one tower pass (vision-graph.ts); the tiles' features are unpadded, downsampled to at most N tiles'
 * worth and given a newline per row (image-tokens.ts). Several images in one prompt are read in `pad` mode:
 * one square crop each.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { SiglipQwenConfig } from './types.js';
import { isTextTensorName } from '../../checkpoint/weight-names.js';
import { decodeImage } from '../../preprocess/decode.js';
import type { RgbImage } from '../../preprocess/pillow-bicubic.js';
import { DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS } from '../../preprocess/pixel-budget.js';
import { ort } from '../../runtime/onnxruntime.js';
import { modelError } from '../../util/errors.js';
import type { ModelFamily, PreparedImage } from '../family.js';
import { anyresGrid, cropsForImage, normalizeCrop, padCrop, SIGLIP_CROP_SIZE } from './anyres.js';
import { isSiglipTowerName, parseSiglipQwenConfig, parseTopLevel, SIGLIP_MODEL_TYPES } from './config.js';
import { assembleImageTokens, imageTokenCount, padImageTokens } from './image-tokens.js';
import { PROJECTOR_PREFIX, SIGLIP_PREFIX, siglipGridSize, siglipLayerTensor, siglipTensor, siglipTokensPerCrop } from './vision-config.js';
import { buildSiglipVisionGraph } from './vision-graph.js';

/** The image_newline vector, beside the vision graph (it is added on the host, after the tower). */
export const NEWLINE_FILE = 'image_newline.f32';

interface SiglipPrepared extends PreparedImage {
  mode: 'anyres' | 'pad';
  /** uint8 crops, [base, tiles...] for anyres, one for pad. */
  pixels: RgbImage[];
  grid: { cols: number; rows: number };
  /** anyres_max_N's N (Infinity: plain anyres, no downsampling). */
  maxTiles: number;
}

export const siglipQwen: ModelFamily<SiglipQwenConfig> = {
  id: 'siglip-qwen',
  title: 'DiffusionVL-Qwen2.5 (SigLIP)',
  modelTypes: SIGLIP_MODEL_TYPES,
  // DiffusionVLQwenForCausalLM: a DiffusionVL class on Qwen that is not the QwenVL family's (checked first).
  namesFamily: (name) => name.includes('qwen'),
  hasStructure: (json) =>
    typeof json.mm_vision_tower === 'string' && isSiglipTowerName(json.mm_vision_tower) && typeof json.mm_projector_type === 'string' && /^mlp\d+x_gelu$/.test(json.mm_projector_type),
  sideWeightFiles: [],
  // Stored names are the names here: the LLM's are already the canonical Qwen2 ones.
  canonicalName(stored) {
    if (stored.startsWith(SIGLIP_PREFIX) || stored.startsWith(PROJECTOR_PREFIX) || stored === 'model.image_newline') return stored;
    return isTextTensorName(stored) ? stored : undefined;
  },
  parseConfig: parseSiglipQwenConfig,
  // The tower's shape needs the weights; the rest is checked before they are downloaded.
  precheck: (json, source) => void parseTopLevel(json, source),
  owns: (config): config is SiglipQwenConfig => config.family === 'siglip-qwen',
  visionTensors(config) {
    const v = config.vision;
    const D = config.text.hiddenSize;
    const C = v.hiddenSize;
    const out = [
      { name: siglipTensor('embeddings.patch_embedding.weight'), shape: [C, 3, v.patchSize, v.patchSize] },
      { name: siglipTensor('embeddings.patch_embedding.bias'), shape: [C] },
      { name: siglipTensor('embeddings.position_embedding.weight'), shape: [siglipTokensPerCrop(v), C] },
    ];
    for (let i = 0; i < v.numLayers; i++) {
      for (const norm of ['layer_norm1', 'layer_norm2']) {
        out.push({ name: siglipLayerTensor(i, `${norm}.weight`), shape: [C] }, { name: siglipLayerTensor(i, `${norm}.bias`), shape: [C] });
      }
      for (const proj of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
        out.push({ name: siglipLayerTensor(i, `self_attn.${proj}.weight`), shape: [C, C] }, { name: siglipLayerTensor(i, `self_attn.${proj}.bias`), shape: [C] });
      }
      out.push(
        { name: siglipLayerTensor(i, 'mlp.fc1.weight'), shape: [v.intermediateSize, C] },
        { name: siglipLayerTensor(i, 'mlp.fc1.bias'), shape: [v.intermediateSize] },
        { name: siglipLayerTensor(i, 'mlp.fc2.weight'), shape: [C, v.intermediateSize] },
        { name: siglipLayerTensor(i, 'mlp.fc2.bias'), shape: [C] },
      );
    }
    out.push(
      { name: `${PROJECTOR_PREFIX}0.weight`, shape: [D, config.projectorInput] },
      { name: `${PROJECTOR_PREFIX}0.bias`, shape: [D] },
      { name: `${PROJECTOR_PREFIX}2.weight`, shape: [D, D] },
      { name: `${PROJECTOR_PREFIX}2.bias`, shape: [D] },
      { name: 'model.image_newline', shape: [D] },
    );
    return out;
  },
  writeVision(weights, config, request) {
    buildSiglipVisionGraph(weights, config.vision, config.text.hiddenSize, {
      modelPath: path.join(request.dir, request.file),
      dtype: request.dtype,
      plan: request.plan,
      onProgress: request.onProgress,
    });
    const newline = weights.readF32('model.image_newline');
    fs.writeFileSync(path.join(request.dir, NEWLINE_FILE), new Uint8Array(newline.buffer, newline.byteOffset, newline.byteLength));
  },
  async prepareImage(input, config, options): Promise<SiglipPrepared> {
    const rgb = await decodeImage(input, { name: options.name });
    const original = { width: rgb.width, height: rgb.height };
    if (imageMode(config, options) === 'pad') {
      return { mode: 'pad', original, resized: { width: SIGLIP_CROP_SIZE, height: SIGLIP_CROP_SIZE }, crops: 1, pixels: [padCrop(rgb)], grid: { cols: 1, rows: 1 }, maxTiles: 1 };
    }
    const { grid, best, crops } = cropsForImage(rgb, config.pinpoints);
    return { mode: 'anyres', original, resized: { width: best[0], height: best[1] }, crops: crops.length, pixels: crops, grid, maxTiles: maxTiles(config, options) };
  },
  // pad: the crop's tokens and one newline; anyres: the base crop plus the unpadded, downsampled tile map.
  imageTokens(config, size, options) {
    const perCrop = siglipTokensPerCrop(config.vision);
    if (imageMode(config, options) === 'pad') return perCrop + 1;
    const { cols, rows } = anyresGrid(size.width, size.height, config.pinpoints);
    return imageTokenCount(size.width, size.height, { cols, rows }, maxTiles(config, options), siglipGridSize(config.vision));
  },
  // Qwen2Config's default.
  defaultContextLength: 32_768,
  imageKey: (config, options) => (imageMode(config, options) === 'pad' ? 'pad' : `anyres:${maxTiles(config, options)}`),
  visionEncoder(session, config, dir) {
    let newline: Float32Array;
    try {
      const bytes = fs.readFileSync(path.join(dir, NEWLINE_FILE));
      newline = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    } catch (error) {
      throw modelError(`cannot read ${path.join(dir, NEWLINE_FILE)}: ${(error as Error).message}`, error);
    }
    const D = config.text.hiddenSize;
    const S = SIGLIP_CROP_SIZE;
    const perCrop = siglipTokensPerCrop(config.vision);
    return {
      async encode(prepared, onCrop) {
        const image = prepared as SiglipPrepared;
        // One crop per tower pass: memory is one crop's activations, plus the features kept for assembly.
        const features = new Float32Array(image.pixels.length * perCrop * D);
        const input = new Float32Array(3 * S * S);
        for (let k = 0; k < image.pixels.length; k++) {
          normalizeCrop(image.pixels[k], input, 0);
          const out = await session.run({ pixel_values: new ort.Tensor('float32', input, [1, 3, S, S]) });
          features.set(out.image_features.data as Float32Array, k * perCrop * D);
          onCrop?.(k + 1, image.pixels.length);
        }
        const embeds =
          image.mode === 'pad'
            ? padImageTokens(features, newline)
            : assembleImageTokens(features, {
                origW: image.original.width,
                origH: image.original.height,
                grid: image.grid,
                tokensPerSide: siglipGridSize(config.vision),
                hidden: D,
                maxTiles: image.maxTiles,
                newline,
              });
        return { embeds, tokens: embeds.length / D };
      },
    };
  },
  pixelBudget: () => ({ minPixels: DEFAULT_MIN_PIXELS, maxPixels: DEFAULT_MAX_PIXELS, from: 'default' }),
  describe: (config) => [
    `vision      SigLIP, ${config.vision.numLayers} layers run, hidden ${config.vision.hiddenSize}, ${config.vision.numHeads} heads, ${siglipTokensPerCrop(config.vision)} tokens per ${SIGLIP_CROP_SIZE}-pixel crop`,
    `images      ${config.imageAspectRatio} over ${config.pinpoints.length} grids (several images: pad, one crop each)`,
  ],
  maxImagePromptLength: (config) => config.maxLength ?? undefined,
  generation: { fullDiffusionSchedule: 'genLength', confidence: 'plain' },
};

/** The eval reads every image of a multi-image prompt in `pad` mode (spec §2). */
function imageMode(config: SiglipQwenConfig, options: { imagesInPrompt: number; imageMode?: 'anyres' | 'pad' }): 'anyres' | 'pad' {
  if (options.imageMode === 'pad' || options.imagesInPrompt > 1 || config.imageAspectRatio === 'pad') return 'pad';
  return 'anyres';
}

function maxTiles(config: SiglipQwenConfig, options: { tiles?: number }): number {
  // A huge N never downsamples: plain `anyres`.
  return options.tiles ?? config.anyresMax ?? Number.MAX_SAFE_INTEGER;
}

