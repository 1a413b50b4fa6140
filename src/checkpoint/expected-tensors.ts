/**
 * Every tensor a conversion needs, with its shape, under the canonical names of types.ts.
 * Used to validate a checkpoint before converting (a clear error instead of a failure halfway through).
 */
import type { ModelConfig, TextConfig } from './types.js';

export interface ExpectedTensor {
  name: string;
  shape: number[];
}

/** Every tensor a QwenVL-family conversion needs: the text decoder's and the tower's. */
export function expectedTensors(config: ModelConfig): ExpectedTensor[] {
  return [...textTensors(config.text), ...qwenVisionTensors(config)];
}

/** The Qwen2 text decoder's tensors (every family's LLM). */
export function textTensors(t: TextConfig): ExpectedTensor[] {
  const out: ExpectedTensor[] = [];
  const add = (name: string, shape: number[]) => out.push({ name, shape });
  const kvWidth = t.numKvHeads * t.headDim;

  add('model.embed_tokens.weight', [t.vocabSize, t.hiddenSize]);
  for (let i = 0; i < t.numLayers; i++) {
    const p = `model.layers.${i}`;
    add(`${p}.input_layernorm.weight`, [t.hiddenSize]);
    add(`${p}.self_attn.q_proj.weight`, [t.numHeads * t.headDim, t.hiddenSize]);
    add(`${p}.self_attn.q_proj.bias`, [t.numHeads * t.headDim]);
    add(`${p}.self_attn.k_proj.weight`, [kvWidth, t.hiddenSize]);
    add(`${p}.self_attn.k_proj.bias`, [kvWidth]);
    add(`${p}.self_attn.v_proj.weight`, [kvWidth, t.hiddenSize]);
    add(`${p}.self_attn.v_proj.bias`, [kvWidth]);
    add(`${p}.self_attn.o_proj.weight`, [t.hiddenSize, t.numHeads * t.headDim]);
    add(`${p}.post_attention_layernorm.weight`, [t.hiddenSize]);
    add(`${p}.mlp.gate_proj.weight`, [t.intermediateSize, t.hiddenSize]);
    add(`${p}.mlp.up_proj.weight`, [t.intermediateSize, t.hiddenSize]);
    add(`${p}.mlp.down_proj.weight`, [t.hiddenSize, t.intermediateSize]);
  }
  add('model.norm.weight', [t.hiddenSize]);
  if (!t.tieWordEmbeddings) add('lm_head.weight', [t.vocabSize, t.hiddenSize]);
  return out;
}

/** The Qwen2.5-VL tower's and merger's tensors. */
export function qwenVisionTensors(config: ModelConfig): ExpectedTensor[] {
  const v = config.vision;
  const out: ExpectedTensor[] = [];
  const add = (name: string, shape: number[]) => out.push({ name, shape });
  add('visual.patch_embed.proj.weight', [v.hiddenSize, v.inChannels, v.temporalPatchSize, v.patchSize, v.patchSize]);
  for (let i = 0; i < v.depth; i++) {
    const p = `visual.blocks.${i}`;
    add(`${p}.norm1.weight`, [v.hiddenSize]);
    add(`${p}.attn.qkv.weight`, [3 * v.hiddenSize, v.hiddenSize]);
    add(`${p}.attn.qkv.bias`, [3 * v.hiddenSize]);
    add(`${p}.attn.proj.weight`, [v.hiddenSize, v.hiddenSize]);
    add(`${p}.attn.proj.bias`, [v.hiddenSize]);
    add(`${p}.norm2.weight`, [v.hiddenSize]);
    add(`${p}.mlp.gate_proj.weight`, [v.intermediateSize, v.hiddenSize]);
    add(`${p}.mlp.gate_proj.bias`, [v.intermediateSize]);
    add(`${p}.mlp.up_proj.weight`, [v.intermediateSize, v.hiddenSize]);
    add(`${p}.mlp.up_proj.bias`, [v.intermediateSize]);
    add(`${p}.mlp.down_proj.weight`, [v.hiddenSize, v.intermediateSize]);
    add(`${p}.mlp.down_proj.bias`, [v.hiddenSize]);
  }
  const mergedWidth = v.hiddenSize * v.spatialMergeSize * v.spatialMergeSize;
  add('visual.merger.ln_q.weight', [v.hiddenSize]);
  add('visual.merger.mlp.0.weight', [mergedWidth, mergedWidth]);
  add('visual.merger.mlp.0.bias', [mergedWidth]);
  add('visual.merger.mlp.2.weight', [v.outHiddenSize, mergedWidth]);
  add('visual.merger.mlp.2.bias', [v.outHiddenSize]);
  return out;
}
