/**
 * config.json of the SigLIP family (`model_type: "diffusionvl_qwen"`, spec diffusionvl-qwen.md §1): a flat
 * Qwen2Config plus LLaVA's keys as train.py saves them. The tower's shape comes from a `vision_config` block
 * when there is one, otherwise from the weights (vision-config.ts): the released checkpoint has none.
 */
import { checkTextConfig, DEFAULT_BLOCK_SIZE, EOS_TOKEN_ID, isObject, KeyReader, MASK_TOKEN_ID, parseTextConfig, type JsonObject } from '../../checkpoint/config.js';
import type { SiglipQwenConfig } from './types.js';
import { modelError } from '../../util/errors.js';
import { anyresMaxFromAspect, isAnyresAspect, parseGridPinpoints, SIGLIP_CROP_SIZE } from './anyres.js';
import { inferProjectorShape, inferSiglipConfig, siglipTensor } from './vision-config.js';

export const SIGLIP_MODEL_TYPES = ['diffusionvl_qwen'] as const;

/** Qwen2Config's defaults (transformers v4.55): note rope theta 10000, not Qwen2.5-VL's 1e6. */
const TEXT_DEFAULTS = { rmsNormEps: 1e-6, ropeTheta: 10_000, tieWordEmbeddings: false };

export function parseSiglipQwenConfig(json: JsonObject, source: string, shapeOf: (name: string) => number[] | undefined): SiglipQwenConfig {
  const base = parseTopLevel(json, source);
  const notes = towerNameNotes(json, source, shapeOf);
  const visionJson = json.vision_config;
  if (visionJson !== undefined && visionJson !== null && !isObject(visionJson)) throw modelError(`${source}: "vision_config" must be an object`);
  const vision = inferSiglipConfig(visionJson ?? undefined, shapeOf);
  if (vision.imageSize !== SIGLIP_CROP_SIZE) {
    throw modelError(`${source}: the SigLIP tower's image size is ${vision.imageSize}, but the image processor makes ${SIGLIP_CROP_SIZE}-pixel crops`);
  }
  const projector = inferProjectorShape(shapeOf, { visionHidden: vision.hiddenSize, textHidden: base.text.hiddenSize });
  if (base.mmHiddenSize !== undefined && base.mmHiddenSize !== projector.inputSize) {
    throw modelError(`${source}: mm_hidden_size ${base.mmHiddenSize} does not match the projector's input width ${projector.inputSize}`);
  }
  const newline = shapeOf('model.image_newline');
  if (!newline) throw modelError(`${source}: the checkpoint has no tensor model.image_newline`);
  if (newline.length !== 1 || newline[0] !== base.text.hiddenSize) {
    throw modelError(`${source}: model.image_newline has shape [${newline.join(', ')}], expected [${base.text.hiddenSize}]`);
  }
  const { mmHiddenSize: _unused, ...rest } = base;
  return { ...rest, vision, projectorInput: projector.inputSize, ...(notes.length > 0 ? { notes } : {}) };
}

/**
 * The tower is SigLIP when mm_vision_tower names it (upstream's builder rule: "siglip" in the name and not
 * "qwen"). A name that does not, on a checkpoint whose tensors are a SigLIP tower's, is only worth a warning
 * (a renamed local copy of the tower); without those tensors it is not this family's model.
 */
function towerNameNotes(json: JsonObject, source: string, shapeOf: (name: string) => number[] | undefined): string[] {
  const towerName = json.mm_vision_tower;
  if (typeof towerName !== 'string' || isSiglipTowerName(towerName)) return [];
  if (shapeOf(siglipTensor('embeddings.patch_embedding.weight')) && shapeOf(siglipTensor('embeddings.position_embedding.weight'))) {
    return [`config.json's mm_vision_tower ${JSON.stringify(towerName)} does not name a SigLIP tower, but the checkpoint's tensors are a SigLIP tower's: read as SigLIP`];
  }
  throw modelError(`${source}: mm_vision_tower ${JSON.stringify(towerName)} is not a SigLIP tower, and the checkpoint has no SigLIP tower tensors; dvl supports only SigLIP for ${String(json.model_type)}`);
}

export const isSiglipTowerName = (name: string) => name.toLowerCase().includes('siglip') && !name.toLowerCase().includes('qwen');

/** Everything but the tower: what config.json alone says (checked before a download, too). */
export function parseTopLevel(json: JsonObject, source: string): Omit<SiglipQwenConfig, 'vision' | 'projectorInput'> & { mmHiddenSize?: number } {
  const top = new KeyReader(source, [{ obj: json, prefix: '' }]);
  // Flat keys only: a text_config here would be some other model's.
  const { text_config: _ignored, ...flat } = json;
  const text = parseTextConfig(flat, source, TEXT_DEFAULTS);
  if (top.has('head_dim')) {
    const headDim = top.positiveInt('head_dim');
    if (headDim !== text.hiddenSize / text.numHeads) {
      throw modelError(`${source}: head_dim ${headDim} is not hidden_size / num_attention_heads (${text.hiddenSize / text.numHeads}); dvl does not support that`);
    }
  }
  checkTextConfig(text, source);

  // The tower's name is checked against its tensors in parseSiglipQwenConfig (they are not downloaded yet here).
  const projectorType = json.mm_projector_type ?? 'mlp2x_gelu';
  if (projectorType !== 'mlp2x_gelu') throw modelError(`${source}: mm_projector_type ${JSON.stringify(projectorType)} is not supported (only mlp2x_gelu)`);
  const mergeType = json.mm_patch_merge_type ?? 'spatial_unpad';
  if (mergeType !== 'spatial_unpad') throw modelError(`${source}: mm_patch_merge_type ${JSON.stringify(mergeType)} is not supported (only spatial_unpad)`);

  const aspect = json.image_aspect_ratio ?? 'anyres_max_4';
  if (typeof aspect !== 'string' || !(aspect === 'pad' || isAnyresAspect(aspect))) {
    throw modelError(`${source}: image_aspect_ratio ${JSON.stringify(aspect)} is not supported (anyres_max_N, anyres or pad)`);
  }
  const pinpoints = json.image_grid_pinpoints === undefined || json.image_grid_pinpoints === null ? defaultPinpoints() : parseGridPinpoints(json.image_grid_pinpoints);
  const maxLength = top.has('tokenizer_model_max_length') ? top.positiveInt('tokenizer_model_max_length') : null;
  return {
    family: 'siglip-qwen',
    modelType: String(json.model_type),
    text,
    mmHiddenSize: top.has('mm_hidden_size') ? top.positiveInt('mm_hidden_size') : undefined,
    imageAspectRatio: aspect,
    anyresMax: aspect === 'pad' ? null : anyresMaxFromAspect(aspect),
    pinpoints,
    maxLength,
    blockSize: top.positiveInt('bd3lm_block_size', DEFAULT_BLOCK_SIZE),
    ...(top.has('bd3lm_block_size') ? {} : { blockSizeFrom: 'default' as const }),
    maskTokenId: MASK_TOKEN_ID,
    eosTokenId: EOS_TOKEN_ID,
  };
}

/** The released models' grid: [384·i, 384·j] for i, j = 1..6, i outer. */
function defaultPinpoints(): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 1; i <= 6; i++) for (let j = 1; j <= 6; j++) out.push([SIGLIP_CROP_SIZE * i, SIGLIP_CROP_SIZE * j]);
  return out;
}
