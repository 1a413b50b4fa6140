/**
 * Maps the tensor names stored in a checkpoint to the canonical names of types.ts
 * (the older vanilla Qwen2.5-VL layout: `model.*` for the LLM, `visual.*` for the tower and merger).
 *
 * Stored layouts:
 * - `diffusionvl`: the DiffusionVL release (LLaVA-style model): LLM under `model.`, vision tower under
 *   `model.vision_tower.vision_tower.`, projector (Qwen2.5-VL's merger) under `model.mm_projector.merger.`.
 *   The reference deletes the tower's own `merger` after loading, so `model.vision_tower.vision_tower.merger.*`,
 *   if present, is not the projector that runs and is ignored.
 * - `qwen2_5_vl`: vanilla Qwen2.5-VL saved by newer transformers: `model.language_model.`, `model.visual.`.
 * - `qwen2_5_vl_legacy`: vanilla Qwen2.5-VL saved by older transformers: `model.`, `visual.`.
 * - a bare `vision_tower.` prefix for the tower (the upstream loader accepts it).
 * - the upstream converter's files (convert_qwen2.5vl_to_diffusionvl.py): `model.safetensors` holds the LLM
 *   only, `vision_tower.safetensors` the tower under bare names (`patch_embed.proj.weight`, `blocks.N...`),
 *   `projector.safetensors` the merger without its `merger.` prefix (`ln_q.weight`, `mlp.0.weight`):
 *   towerFileName / projectorFileName map those files' names.
 * `lm_head.weight` is top-level in all of them.
 */
import { isTextTensorName, mapWeightNames as mapNames, type NameMapping } from '../../checkpoint/weight-names.js';

export type WeightLayout = 'diffusionvl' | 'qwen2_5_vl' | 'qwen2_5_vl_legacy';

/** The tower's and projector's canonical names (the language model's are shared: checkpoint/weight-names.ts). */
const VISION_CANONICAL = new RegExp(
  '^(?:' +
    [
      String.raw`visual\.patch_embed\.proj\.weight`,
      String.raw`visual\.blocks\.\d+\.norm[12]\.weight`,
      String.raw`visual\.blocks\.\d+\.attn\.(?:qkv|proj)\.(?:weight|bias)`,
      String.raw`visual\.blocks\.\d+\.mlp\.(?:gate_proj|up_proj|down_proj)\.(?:weight|bias)`,
      String.raw`visual\.merger\.ln_q\.weight`,
      String.raw`visual\.merger\.mlp\.[02]\.(?:weight|bias)`,
    ].join('|') +
    ')$',
);

/** Matches exactly the names listed in checkpoint/types.ts (anything else is not a tensor we use). */
export function isCanonicalName(name: string): boolean {
  return isTextTensorName(name) || VISION_CANONICAL.test(name);
}

/**
 * Prefix rewrites, most specific first (`model.vision_tower.` and `model.visual.` must win over `model.`).
 * `skip` marks stored prefixes whose tensors exist but are deliberately not used.
 */
const RULES: { stored: string; canonical: string; skip?: boolean }[] = [
  { stored: 'model.vision_tower.vision_tower.merger.', canonical: '', skip: true },
  { stored: 'model.vision_tower.vision_tower.', canonical: 'visual.' },
  { stored: 'model.mm_projector.merger.', canonical: 'visual.merger.' },
  { stored: 'model.language_model.', canonical: 'model.' },
  { stored: 'model.visual.', canonical: 'visual.' },
  { stored: 'visual.', canonical: 'visual.' },
  { stored: 'vision_tower.merger.', canonical: '', skip: true },
  { stored: 'vision_tower.', canonical: 'visual.' },
  { stored: 'model.', canonical: 'model.' },
  { stored: 'lm_head.', canonical: 'lm_head.' },
];

/** The canonical name of a stored tensor name, or undefined for tensors we do not use. */
export function canonicalName(stored: string): string | undefined {
  const rule = RULES.find((r) => stored.startsWith(r.stored));
  if (!rule || rule.skip) return undefined;
  const candidate = rule.canonical + stored.slice(rule.stored.length);
  return isCanonicalName(candidate) ? candidate : undefined;
}

/**
 * How names stored in vision_tower.safetensors map to canonical ones. As the upstream loader does, the file's
 * prefix is the first of these that any of its names uses (or none); names without it are not the tower's, and
 * the tower's own merger is dropped (the projector comes from projector.safetensors).
 */
export function towerFileNames(storedNames: readonly string[]): (stored: string) => string | undefined {
  const prefix = ['model.vision_tower.vision_tower.', 'visual.', 'vision_tower.'].find((p) => storedNames.some((n) => n.startsWith(p))) ?? '';
  return (stored) => {
    if (!stored.startsWith(prefix)) return undefined;
    const bare = stored.slice(prefix.length);
    if (bare.startsWith('merger.')) return undefined;
    const candidate = `visual.${bare}`;
    return isCanonicalName(candidate) && !candidate.startsWith('visual.merger.') ? candidate : undefined;
  };
}

/** A name stored in projector.safetensors (the merger's, without `merger.`) -> its canonical name. */
export function projectorFileName(stored: string): string | undefined {
  const candidate = `visual.merger.${stored}`;
  return isCanonicalName(candidate) ? candidate : undefined;
}

/** The name a canonical tensor has in a given layout (the inverse of canonicalName; used to write checkpoints). */
export function storedName(canonical: string, layout: WeightLayout): string {
  if (!isCanonicalName(canonical)) throw new Error(`not a canonical tensor name: ${canonical}`);
  if (canonical.startsWith('lm_head.')) return canonical;
  const rest = (prefix: string) => canonical.slice(prefix.length);
  switch (layout) {
    case 'diffusionvl':
      if (canonical.startsWith('visual.merger.')) return 'model.mm_projector.merger.' + rest('visual.merger.');
      if (canonical.startsWith('visual.')) return 'model.vision_tower.vision_tower.' + rest('visual.');
      return canonical;
    case 'qwen2_5_vl':
      if (canonical.startsWith('visual.')) return 'model.visual.' + rest('visual.');
      return 'model.language_model.' + rest('model.');
    case 'qwen2_5_vl_legacy':
      return canonical;
  }
}

/** mapWeightNames with this family's names by default. */
export function mapWeightNames(storedNames: Iterable<string>, source: string, toCanonical: (stored: string) => string | undefined = canonicalName): NameMapping {
  return mapNames(storedNames, source, toCanonical);
}
