/**
 * The model families dvl runs: the one place that lists them, and that decides which family a config.json is.
 */
import { type PixelBounds, resolvePixelBudget } from '../preprocess/pixel-budget.js';
import { modelError } from '../util/errors.js';
import type { ModelFamily } from './family.js';
import type { ModelConfig } from './qwen25vl/types.js';
import type { SiglipQwenConfig } from './siglip-qwen/types.js';
import { qwen25vl } from './qwen25vl/index.js';
import { siglipQwen } from './siglip-qwen/index.js';
import { textTensors } from '../checkpoint/expected-tensors.js';

export type { ImageOptions, ImageSize, ModelFamily, PixelBudget, PreparedImage } from './family.js';

/** Any family's config, as a manifest holds it. */
export type AnyModelConfig = ModelConfig | SiglipQwenConfig;

const FAMILIES = [qwen25vl, siglipQwen] as unknown as readonly ModelFamily<AnyModelConfig>[];

export interface RecognisedFamily {
  family: ModelFamily<AnyModelConfig>;
  /** How it was recognised when the model_type was not one dvl knows (for a warning); undefined otherwise. */
  note?: string;
}

/**
 * The family of a config.json, decided as the upstream loader would open it: by `model_type` (its aliases
 * included); for a model_type nobody has quoted yet, by a DiffusionVL class named in `architectures` or
 * `auto_map`; failing that, by the structure of the keys (a Qwen2.5-VL tower with a qwen_merger projector, or a
 * SigLIP tower with an mlpN_gelu projector). Nothing fits: a model error listing model_type and architectures.
 */
export function familyForConfig(json: Record<string, unknown>, source: string): RecognisedFamily {
  const modelType = json.model_type;
  const byType = FAMILIES.find((f) => typeof modelType === 'string' && f.modelTypes.includes(modelType));
  if (byType) return { family: byType };
  const shown = modelType === undefined ? 'no model_type' : `model_type ${JSON.stringify(modelType)}`;

  for (const name of classNames(json)) {
    const normalised = name.toLowerCase().replace(/[^a-z0-9]/g, '');
    if (!normalised.includes('diffusionvl')) continue;
    const family = FAMILIES.find((f) => f.namesFamily(normalised));
    if (family) return { family, note: `config.json has ${shown}, which dvl does not know; read as ${family.title} because it names ${name}` };
  }
  const byStructure = FAMILIES.filter((f) => f.hasStructure(json));
  if (byStructure.length === 1) {
    const family = byStructure[0];
    return { family, note: `config.json has ${shown}, which dvl does not know; read as ${family.title} because its keys have that family's structure` };
  }
  const known = FAMILIES.flatMap((f) => f.modelTypes);
  const architectures = Array.isArray(json.architectures) ? `architectures ${JSON.stringify(json.architectures)}` : 'no architectures';
  throw modelError(
    `${source}: ${shown} and ${architectures} name no DiffusionVL model dvl knows (expected model_type ${known.slice(0, -1).join(', ')} or ${known.at(-1)}, or a DiffusionVL class in architectures or auto_map)`,
  );
}

/** Class names in `architectures` and `auto_map` ("modeling_x.ClassName", or [tokenizer, fast tokenizer] lists). */
function classNames(json: Record<string, unknown>): string[] {
  const out: string[] = [];
  const add = (v: unknown) => {
    if (typeof v === 'string') out.push(v.slice(v.lastIndexOf('.') + 1));
    else if (Array.isArray(v)) v.forEach(add);
  };
  add(json.architectures);
  if (typeof json.auto_map === 'object' && json.auto_map !== null) Object.values(json.auto_map).forEach(add);
  return out;
}

/** The longest prompt plus answer the model takes: max_position_embeddings, else its family's default. */
export function contextLength(config: AnyModelConfig): number {
  return config.text.maxPositionEmbeddings ?? familyOf(config).defaultContextLength;
}

/** Where a config's block size came from, in words (dvl show, --verbose). */
export function blockSizeSource(config: { blockSizeFrom?: 'default' }): string {
  return config.blockSizeFrom === 'default'
    ? 'not in config.json: 8, what the released models were trained and evaluated with'
    : 'config.json bd3lm_block_size';
}

/** The pixel budget a request gets: the bounds it gave over the model's default (config.json's, else 384²..512²). */
export interface RequestPixelBudget {
  minPixels: number;
  maxPixels: number;
  /** 'given': the request set a bound; else where the model's default came from. */
  from: 'given' | 'config' | 'default';
  /** The bound the request did not give that was moved to fit the one it gave. */
  moved?: 'min' | 'max';
}

export function pixelBudgetFor(config: AnyModelConfig, given: PixelBounds): RequestPixelBudget {
  const model = familyOf(config).pixelBudget(config);
  const { minPixels, maxPixels } = resolvePixelBudget(model, given);
  const gaveAny = given.minPixels !== undefined || given.maxPixels !== undefined;
  const moved = given.minPixels === undefined && minPixels < model.minPixels ? 'min' : given.maxPixels === undefined && maxPixels > model.maxPixels ? 'max' : undefined;
  return { minPixels, maxPixels, from: gaveAny ? 'given' : model.from, ...(moved ? { moved } : {}) };
}

/** The family of a parsed config (a manifest's). */
export function familyOf(config: AnyModelConfig): ModelFamily<AnyModelConfig> {
  const family = FAMILIES.find((f) => f.owns(config));
  if (!family) throw modelError(`unknown model family ${JSON.stringify((config as { family?: unknown }).family)}`);
  return family;
}

/** The parameters a model's config gives its decoder and its tower (embeddings and lm_head included). */
export function parameterCount(config: AnyModelConfig): number {
  const tensors = [...textTensors(config.text), ...familyOf(config).visionTensors(config)];
  return tensors.reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1), 0);
}
