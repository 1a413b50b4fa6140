/**
 * The SigLIP tower and mlp2x_gelu projector of DiffusionVL-Qwen2.5 (spec diffusionvl-qwen.md §1, §3, §4): their
 * shapes, from a `vision_config` block when config.json has one, otherwise from the checkpoint's tensor shapes.
 *
 * Upstream (DiffusionVL `siglip_encoder.py`) builds the tower from the SigLIP directory named by
 * `mm_vision_tower`, deletes its last encoder layer when it loads, and returns the output of the last remaining
 * layer (no post_layernorm, no pooling head). So:
 * - with `vision_config`: its keys (missing ones take the defaults of upstream's SigLipVisionConfig, which are the
 *   so400m values), and `num_hidden_layers − 1` layers run;
 * - without: width and patch size from `patch_embedding.weight` [C, 3, p, p], MLP width from `fc1`, as many
 *   layers as the checkpoint stores (the deleted one is normally not saved), 16 heads (not inferable from shapes),
 *   eps 1e-6, tanh GELU, image size 384 (a constant of the image processor).
 * Either way the result is checked against the tensor shapes, so a config that disagrees with the weights fails
 * here with a model error rather than in the graph builder or at run time.
 */
import { modelError } from '../../util/errors.js';

/** Stored name prefix of the tower's tensors. */
export const SIGLIP_PREFIX = 'model.vision_tower.vision_tower.vision_model.';
/** Stored name prefix of the projector (`<prefix>0.*` and `<prefix>2.*`: the two Linears around the GELU). */
export const PROJECTOR_PREFIX = 'model.mm_projector.';

import type { SiglipActivation, SiglipVisionConfig } from './types.js';

export type { SiglipActivation, SiglipVisionConfig };

/** Defaults of upstream's SigLipVisionConfig (siglip-so400m-patch14-384). */
const SIGLIP_DEFAULTS = {
  hiddenSize: 1152,
  intermediateSize: 4304,
  numHiddenLayers: 27,
  numHeads: 16,
  imageSize: 384,
  patchSize: 14,
  layerNormEps: 1e-6,
  hiddenAct: 'gelu_pytorch_tanh' as SiglipActivation,
};

/** transformers' ACT2FN names that are the tanh approximation (gelu_new and gelu_fast are the same formula). */
const TANH_GELU_NAMES = new Set(['gelu_pytorch_tanh', 'gelu_new', 'gelu_fast']);

/** The shape of a stored tensor (full stored name), or undefined when the checkpoint lacks it. */
export type TensorShapeLookup = (name: string) => number[] | undefined;

/** Tokens per crop: the patch grid of a valid (unpadded) convolution, trailing pixels unused. */
export function siglipGridSize(vision: Pick<SiglipVisionConfig, 'imageSize' | 'patchSize'>): number {
  return Math.floor(vision.imageSize / vision.patchSize);
}

export function siglipTokensPerCrop(vision: Pick<SiglipVisionConfig, 'imageSize' | 'patchSize'>): number {
  return siglipGridSize(vision) ** 2;
}

/** Full stored name of a tower tensor, e.g. siglipTensor('encoder.layers.0.mlp.fc1.weight'). */
export const siglipTensor = (name: string): string => SIGLIP_PREFIX + name;

/** Stored name of an encoder layer's tensor. */
export const siglipLayerTensor = (layer: number, name: string): string => siglipTensor(`encoder.layers.${layer}.${name}`);

export function inferSiglipConfig(visionConfigJson: unknown | undefined, tensorShape: TensorShapeLookup): SiglipVisionConfig {
  const shape = (name: string): number[] => {
    const s = tensorShape(name);
    if (!s) throw modelError(`checkpoint has no tensor ${name}`);
    return s;
  };
  const patchName = siglipTensor('embeddings.patch_embedding.weight');
  const positionName = siglipTensor('embeddings.position_embedding.weight');
  const fc1Name = siglipLayerTensor(0, 'mlp.fc1.weight');
  const patch = shape(patchName);
  const position = shape(positionName);
  const fc1 = shape(fc1Name);
  if (patch.length !== 4 || patch[1] !== 3 || patch[2] !== patch[3]) {
    throw modelError(`tensor ${patchName} has shape [${patch.join(', ')}], expected [hidden, 3, patch, patch]`);
  }
  const [storedHidden, , storedPatch] = patch;
  if (position.length !== 2 || position[1] !== storedHidden) {
    throw modelError(`tensor ${positionName} has shape [${position.join(', ')}], expected [tokens, ${storedHidden}]`);
  }
  if (fc1.length !== 2 || fc1[1] !== storedHidden) {
    throw modelError(`tensor ${fc1Name} has shape [${fc1.join(', ')}], expected [intermediate, ${storedHidden}]`);
  }
  const storedLayers = countStoredLayers(tensorShape);

  let config: SiglipVisionConfig;
  if (visionConfigJson === undefined || visionConfigJson === null) {
    if (storedLayers === 0) throw modelError(`checkpoint has no tensor ${siglipLayerTensor(0, 'self_attn.q_proj.weight')}`);
    config = {
      hiddenSize: storedHidden,
      intermediateSize: fc1[0],
      numLayers: storedLayers,
      numHeads: SIGLIP_DEFAULTS.numHeads,
      imageSize: SIGLIP_DEFAULTS.imageSize,
      patchSize: storedPatch,
      layerNormEps: SIGLIP_DEFAULTS.layerNormEps,
      hiddenAct: SIGLIP_DEFAULTS.hiddenAct,
    };
  } else {
    config = fromVisionConfig(visionConfigJson);
    if (config.hiddenSize !== storedHidden || config.patchSize !== storedPatch) {
      throw modelError(
        `vision_config (hidden_size ${config.hiddenSize}, patch_size ${config.patchSize}) does not match ${patchName} [${patch.join(', ')}]`,
      );
    }
    if (config.intermediateSize !== fc1[0]) {
      throw modelError(`vision_config intermediate_size ${config.intermediateSize} does not match ${fc1Name} [${fc1.join(', ')}]`);
    }
    if (storedLayers < config.numLayers) {
      throw modelError(
        `vision_config num_hidden_layers ${config.numLayers + 1} runs ${config.numLayers} layers, but checkpoint has no tensor ` +
          siglipLayerTensor(storedLayers, 'self_attn.q_proj.weight'),
      );
    }
  }

  if (config.hiddenSize % config.numHeads !== 0) {
    throw modelError(`SigLIP hidden size ${config.hiddenSize} is not a multiple of ${config.numHeads} heads`);
  }
  const tokens = siglipTokensPerCrop(config);
  if (tokens === 0) throw modelError(`SigLIP image size ${config.imageSize} is smaller than the patch size ${config.patchSize}`);
  if (position[0] !== tokens) {
    throw modelError(
      `tensor ${positionName} has ${position[0]} rows, but a ${config.imageSize}-pixel crop at patch size ${config.patchSize} has ${tokens} tokens`,
    );
  }
  return config;
}

/** The projector's widths: `mm_projector.0` [D, mmHidden] and `mm_projector.2` [D, D] with biases [D]. */
export interface ProjectorShape {
  /** mm_hidden_size: the tower width it reads. */
  inputSize: number;
  /** The LLM width D it writes. */
  outputSize: number;
}

/** Reads and checks the mlp2x_gelu projector's shapes (optionally against the tower width and the LLM width). */
export function inferProjectorShape(tensorShape: TensorShapeLookup, expected: { visionHidden?: number; textHidden?: number } = {}): ProjectorShape {
  const get = (name: string): number[] => {
    const s = tensorShape(PROJECTOR_PREFIX + name);
    if (!s) throw modelError(`checkpoint has no tensor ${PROJECTOR_PREFIX}${name}`);
    return s;
  };
  const w0 = get('0.weight');
  if (w0.length !== 2) throw modelError(`tensor ${PROJECTOR_PREFIX}0.weight has shape [${w0.join(', ')}], expected [out, in]`);
  const [outputSize, inputSize] = w0;
  const want: [string, number[]][] = [
    ['0.weight', [expected.textHidden ?? outputSize, expected.visionHidden ?? inputSize]],
    ['0.bias', [outputSize]],
    ['2.weight', [outputSize, outputSize]],
    ['2.bias', [outputSize]],
  ];
  for (const [name, dims] of want) {
    const actual = get(name);
    if (actual.length !== dims.length || actual.some((d, i) => d !== dims[i])) {
      throw modelError(`tensor ${PROJECTOR_PREFIX}${name} has shape [${actual.join(', ')}], expected [${dims.join(', ')}]`);
    }
  }
  return { inputSize, outputSize };
}

/** Encoder layers 0, 1, ... whose q_proj is stored, up to the first absent one. */
function countStoredLayers(tensorShape: TensorShapeLookup): number {
  let n = 0;
  while (tensorShape(siglipLayerTensor(n, 'self_attn.q_proj.weight')) !== undefined) n++;
  return n;
}

function fromVisionConfig(json: unknown): SiglipVisionConfig {
  if (typeof json !== 'object' || Array.isArray(json) || json === null) {
    throw modelError(`config.json: "vision_config" must be an object, got ${JSON.stringify(json)}`);
  }
  const obj = json as Record<string, unknown>;
  const bad = (key: string, what: string) => modelError(`config.json: "vision_config.${key}" must be ${what}, got ${JSON.stringify(obj[key])}`);
  const int = (key: string, fallback: number): number => {
    const v = obj[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw bad(key, 'a positive integer');
    return v;
  };
  const positive = (key: string, fallback: number): number => {
    const v = obj[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw bad(key, 'a positive number');
    return v;
  };
  const act = obj.hidden_act ?? SIGLIP_DEFAULTS.hiddenAct;
  let hiddenAct: SiglipActivation;
  if (typeof act === 'string' && TANH_GELU_NAMES.has(act)) hiddenAct = 'gelu_pytorch_tanh';
  else if (act === 'gelu') hiddenAct = 'gelu';
  else throw bad('hidden_act', `one of ${[...TANH_GELU_NAMES, 'gelu'].map((n) => `"${n}"`).join(', ')}`);
  const numHiddenLayers = int('num_hidden_layers', SIGLIP_DEFAULTS.numHiddenLayers);
  if (numHiddenLayers < 2) throw bad('num_hidden_layers', 'at least 2 (the last layer is deleted, at least one must run)');
  return {
    hiddenSize: int('hidden_size', SIGLIP_DEFAULTS.hiddenSize),
    intermediateSize: int('intermediate_size', SIGLIP_DEFAULTS.intermediateSize),
    numLayers: numHiddenLayers - 1,
    numHeads: int('num_attention_heads', SIGLIP_DEFAULTS.numHeads),
    imageSize: int('image_size', SIGLIP_DEFAULTS.imageSize),
    patchSize: int('patch_size', SIGLIP_DEFAULTS.patchSize),
    layerNormEps: positive('layer_norm_eps', SIGLIP_DEFAULTS.layerNormEps),
    hiddenAct,
  };
}
