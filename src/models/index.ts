/**
 * The model families dvl runs, by config.json `model_type`: the one place that lists them.
 */
import type { AnyModelConfig } from '../checkpoint/types.js';
import { modelError } from '../util/errors.js';
import type { ModelFamily } from './family.js';
import { qwen25vl } from './qwen25vl/index.js';
import { siglipQwen } from './siglip-qwen/index.js';

export type { ImageOptions, ModelFamily, PreparedImage } from './family.js';

const FAMILIES = [qwen25vl, siglipQwen] as unknown as readonly ModelFamily<AnyModelConfig>[];

/** The family of a config.json's model_type; a model error naming the supported ones otherwise. */
export function familyForModelType(modelType: unknown, source: string): ModelFamily<AnyModelConfig> {
  if (modelType === undefined) throw modelError(`${source}: missing "model_type"`);
  const family = FAMILIES.find((f) => typeof modelType === 'string' && f.modelTypes.includes(modelType));
  if (!family) {
    const known = FAMILIES.flatMap((f) => f.modelTypes);
    throw modelError(`${source}: model_type ${JSON.stringify(modelType)} is not supported (expected ${known.slice(0, -1).join(', ')} or ${known.at(-1)})`);
  }
  return family;
}

/** The family of a parsed config (a manifest's). */
export function familyOf(config: AnyModelConfig): ModelFamily<AnyModelConfig> {
  const family = FAMILIES.find((f) => f.owns(config));
  if (!family) throw modelError(`unknown model family ${JSON.stringify((config as { family?: unknown }).family)}`);
  return family;
}
