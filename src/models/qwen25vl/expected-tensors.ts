/** The tensors a QwenVL-family conversion needs, with their shapes, under the canonical names of checkpoint/types.ts. */
import { type ExpectedTensor, textTensors } from '../../checkpoint/expected-tensors.js';
import type { ModelConfig } from './types.js';

/** Every tensor a QwenVL-family conversion needs: the text decoder's and the tower's. */
export function expectedTensors(config: ModelConfig): ExpectedTensor[] {
  return [...textTensors(config.text), ...qwenVisionTensors(config)];
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
