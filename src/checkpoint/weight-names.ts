/**
 * Tensor names every family shares: the Qwen2 language model's canonical names (`model.*`, `lm_head.weight`),
 * and the mapping of a checkpoint's stored names to a family's canonical ones (a family says how each stored
 * name maps: models/<family>/).
 */
import { modelError } from '../util/errors.js';

/** The language model's tensors, by their canonical names (see types.ts WeightSource). */
export const TEXT_TENSOR_NAME = new RegExp(
  '^(?:' +
    [
      String.raw`model\.embed_tokens\.weight`,
      String.raw`model\.norm\.weight`,
      String.raw`model\.layers\.\d+\.self_attn\.[qkv]_proj\.(?:weight|bias)`,
      String.raw`model\.layers\.\d+\.self_attn\.o_proj\.weight`,
      String.raw`model\.layers\.\d+\.mlp\.(?:gate|up|down)_proj\.weight`,
      String.raw`model\.layers\.\d+\.(?:input|post_attention)_layernorm\.weight`,
      String.raw`lm_head\.weight`,
    ].join('|') +
    ')$',
);

export const isTextTensorName = (name: string): boolean => TEXT_TENSOR_NAME.test(name);

export interface NameMapping {
  /** canonical name -> stored name */
  canonical: Map<string, string>;
  /** Stored names that map to nothing we use (kept for --verbose / debugging). */
  ignored: string[];
}

/**
 * Maps every stored name. Two stored tensors with the same canonical name (e.g. both `visual.` and
 * `model.visual.` copies) make the checkpoint ambiguous: that is an error, not a silent choice.
 */
export function mapWeightNames(storedNames: Iterable<string>, source: string, toCanonical: (stored: string) => string | undefined): NameMapping {
  const canonical = new Map<string, string>();
  const ignored: string[] = [];
  for (const stored of storedNames) {
    const name = toCanonical(stored);
    if (name === undefined) {
      ignored.push(stored);
      continue;
    }
    const previous = canonical.get(name);
    if (previous !== undefined) {
      throw modelError(`${source}: tensors ${previous} and ${stored} both map to ${name}`);
    }
    canonical.set(name, stored);
  }
  return { canonical, ignored };
}
