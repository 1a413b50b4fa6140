import { describe, expect, it } from 'vitest';
import { expectedTensors } from '../src/models/qwen25vl/expected-tensors.js';
import { canonicalName, isCanonicalName, mapWeightNames, storedName, type WeightLayout } from '../src/models/qwen25vl/weight-names.js';
import { DvlError } from '../src/util/errors.js';
import { tinyConfig } from './helpers/random-weights.js';

/** [stored name, canonical name] pairs written out by hand for each layout. */
const DIFFUSIONVL: [string, string][] = [
  ['model.embed_tokens.weight', 'model.embed_tokens.weight'],
  ['model.layers.0.self_attn.q_proj.bias', 'model.layers.0.self_attn.q_proj.bias'],
  ['model.layers.35.mlp.down_proj.weight', 'model.layers.35.mlp.down_proj.weight'],
  ['model.layers.3.post_attention_layernorm.weight', 'model.layers.3.post_attention_layernorm.weight'],
  ['model.norm.weight', 'model.norm.weight'],
  ['lm_head.weight', 'lm_head.weight'],
  ['model.vision_tower.vision_tower.patch_embed.proj.weight', 'visual.patch_embed.proj.weight'],
  ['model.vision_tower.vision_tower.blocks.31.attn.qkv.bias', 'visual.blocks.31.attn.qkv.bias'],
  ['model.vision_tower.vision_tower.blocks.0.mlp.gate_proj.weight', 'visual.blocks.0.mlp.gate_proj.weight'],
  ['model.vision_tower.vision_tower.blocks.7.norm2.weight', 'visual.blocks.7.norm2.weight'],
  ['model.mm_projector.merger.ln_q.weight', 'visual.merger.ln_q.weight'],
  ['model.mm_projector.merger.mlp.0.weight', 'visual.merger.mlp.0.weight'],
  ['model.mm_projector.merger.mlp.2.bias', 'visual.merger.mlp.2.bias'],
];

const QWEN_NEW: [string, string][] = [
  ['model.language_model.embed_tokens.weight', 'model.embed_tokens.weight'],
  ['model.language_model.layers.12.self_attn.o_proj.weight', 'model.layers.12.self_attn.o_proj.weight'],
  ['model.language_model.norm.weight', 'model.norm.weight'],
  ['lm_head.weight', 'lm_head.weight'],
  ['model.visual.patch_embed.proj.weight', 'visual.patch_embed.proj.weight'],
  ['model.visual.blocks.5.attn.proj.weight', 'visual.blocks.5.attn.proj.weight'],
  ['model.visual.merger.mlp.2.weight', 'visual.merger.mlp.2.weight'],
];

const QWEN_OLD: [string, string][] = [
  ['model.embed_tokens.weight', 'model.embed_tokens.weight'],
  ['model.layers.1.self_attn.k_proj.weight', 'model.layers.1.self_attn.k_proj.weight'],
  ['model.layers.1.input_layernorm.weight', 'model.layers.1.input_layernorm.weight'],
  ['lm_head.weight', 'lm_head.weight'],
  ['visual.blocks.2.mlp.up_proj.bias', 'visual.blocks.2.mlp.up_proj.bias'],
  ['visual.blocks.2.norm1.weight', 'visual.blocks.2.norm1.weight'],
  ['visual.merger.ln_q.weight', 'visual.merger.ln_q.weight'],
];

describe('weight names', () => {
  it.each([
    ['diffusionvl', DIFFUSIONVL],
    ['qwen2_5_vl', QWEN_NEW],
    ['qwen2_5_vl_legacy', QWEN_OLD],
  ] as [WeightLayout, [string, string][]][])('maps the %s layout both ways', (layout, pairs) => {
    for (const [stored, canonical] of pairs) {
      expect(canonicalName(stored)).toBe(canonical);
      expect(storedName(canonical, layout)).toBe(stored);
    }
  });

  it('round-trips every tensor of a model through each layout', () => {
    for (const layout of ['diffusionvl', 'qwen2_5_vl', 'qwen2_5_vl_legacy'] as const) {
      for (const { name } of expectedTensors(tinyConfig({ text: { tieWordEmbeddings: false } }))) {
        expect(isCanonicalName(name)).toBe(true);
        expect(canonicalName(storedName(name, layout))).toBe(name);
      }
    }
  });

  it('ignores tensors that are not used, including the tower copy of the merger that the reference deletes', () => {
    const ignored = [
      'model.vision_tower.vision_tower.merger.ln_q.weight',
      'model.vision_tower.vision_tower.merger.mlp.0.weight',
      'model.rotary_emb.inv_freq',
      'model.vision_resampler.pos_embed',
      'model.layers.0.self_attn.o_proj.bias', // o_proj has no bias in Qwen2
      'model.layers.x.mlp.up_proj.weight',
      'visual.blocks.0.attn.qkv.weight.extra',
      'lm_head.bias',
      'optimizer.state',
      'embed_tokens.weight',
    ];
    for (const name of ignored) expect(canonicalName(name)).toBeUndefined();
    const mapping = mapWeightNames([...ignored, 'model.norm.weight'], 'ckpt');
    expect([...mapping.canonical]).toEqual([['model.norm.weight', 'model.norm.weight']]);
    expect(mapping.ignored).toEqual(ignored);
  });

  it('refuses two stored tensors that map to the same canonical name', () => {
    let caught: unknown;
    try {
      mapWeightNames(['visual.blocks.0.norm1.weight', 'model.norm.weight', 'model.visual.blocks.0.norm1.weight'], '/ckpt');
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(DvlError);
    expect((caught as Error).message).toBe('/ckpt: tensors visual.blocks.0.norm1.weight and model.visual.blocks.0.norm1.weight both map to visual.blocks.0.norm1.weight');
    expect(() => mapWeightNames(['model.mm_projector.merger.ln_q.weight', 'model.visual.merger.ln_q.weight'], 'x')).toThrow(/both map to visual\.merger\.ln_q\.weight/);
  });
});
