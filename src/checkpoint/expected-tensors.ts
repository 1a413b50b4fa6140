/**
 * The tensors a conversion needs, with their shapes, under the canonical names of types.ts: here the language
 * model's, which every family has (a family lists its tower's: models/<family>/). Used to validate a checkpoint
 * before converting (a clear error instead of a failure halfway through).
 */
import type { TextConfig } from './types.js';

export interface ExpectedTensor {
  name: string;
  shape: number[];
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
