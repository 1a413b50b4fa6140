/**
 * Each --dtype's recipe, as the converted graphs hold it (the binary's `dvl pull` on a 4-layer tiny checkpoint,
 * unpacked): which kernel multiplies each weight. int4 keeps the output head and the first and last layers at
 * 8 bits (DynamicQuantizeMatMul with the outlier split: a float32 MatMul beside it) and the layers between at
 * 4 bits (MatMulNBits); int4-all is 4 bits everywhere with the old 8-bit MatMulNBits tower; int8 is
 * DynamicQuantizeMatMul everywhere; the int8 and int4 towers use it without the split.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const { onnx } = onnxProto;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-recipes-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home'), DVL_PREPACK: '0' };

beforeAll(() => writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { numLayers: 4, tieWordEmbeddings: false } }), seed: 3 }));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** For each weight a matmul reads (its second input), the kernel: "MatMulNBits", "DQMM", "DQMM+split", "fp32". */
function kernels(graphFile: string): Map<string, string> {
  const graph = onnx.ModelProto.decode(fs.readFileSync(graphFile)).graph!;
  const out = new Map<string, string>();
  for (const node of graph.node ?? []) {
    const weight = node.input?.[1] ?? '';
    // `<linear>.weight_q4` / `_q8` / `_s8` and, for the split, `<linear>.w_top`: both name `<linear>.weight`.
    const base = weight.replace(/\.w_top$/, '.weight').replace(/_(q4|q8|s8)$/, '');
    if (node.opType === 'MatMulNBits') out.set(base, 'MatMulNBits');
    else if (node.opType === 'DynamicQuantizeMatMul') out.set(base, out.get(base) === 'split' ? 'DQMM+split' : 'DQMM');
    else if (node.opType === 'MatMul' && weight.endsWith('.w_top')) out.set(base, out.get(base) === 'DQMM' ? 'DQMM+split' : 'split');
  }
  return out;
}

function pulled(dtype: string): { decoder: Map<string, string>; vision: Map<string, string> } {
  const run = runDvl(['pull', ckpt, '--dtype', dtype, '--quiet'], { env });
  expect(run.status, run.stderr).toBe(0);
  const local = path.join(env.DVL_HOME, 'models', 'local');
  const dir = path.join(local, fs.readdirSync(local)[0], dtype);
  return { decoder: kernels(path.join(dir, 'decoder.onnx')), vision: kernels(path.join(dir, 'vision.onnx')) };
}

const LINEARS = ['self_attn.qkv_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'];
const layer = (g: Map<string, string>, i: number) => LINEARS.map((l) => g.get(`model.layers.${i}.${l}.weight`));
const towerKernels = (g: Map<string, string>) => new Set([...g].filter(([name]) => name.startsWith('blocks.')).map(([, k]) => k));

describe('the recipe of each dtype in the converted graphs', () => {
  it('int4: head and first/last layers 8-bit with the split, the layers between 4-bit; tower DQMM without the split', () => {
    const { decoder, vision } = pulled('int4');
    for (const i of [0, 3]) expect(layer(decoder, i)).toEqual(LINEARS.map(() => 'DQMM+split'));
    for (const i of [1, 2]) expect(layer(decoder, i)).toEqual(LINEARS.map(() => 'MatMulNBits'));
    expect(decoder.get('lm_head.weight')).toBe('DQMM+split');
    expect(towerKernels(vision)).toEqual(new Set(['DQMM']));
  });

  it('int4-all: every decoder linear 4-bit, the tower 8-bit MatMulNBits', () => {
    const { decoder, vision } = pulled('int4-all');
    for (const i of [0, 1, 2, 3]) expect(layer(decoder, i)).toEqual(LINEARS.map(() => 'MatMulNBits'));
    expect(decoder.get('lm_head.weight')).toBe('MatMulNBits');
    expect(towerKernels(vision)).toEqual(new Set(['MatMulNBits']));
  });

  it('int8: every decoder linear DQMM with the split; the tower DQMM without', () => {
    const { decoder, vision } = pulled('int8');
    for (const i of [0, 1, 2, 3]) expect(layer(decoder, i)).toEqual(LINEARS.map(() => 'DQMM+split'));
    expect(decoder.get('lm_head.weight')).toBe('DQMM+split');
    expect(towerKernels(vision)).toEqual(new Set(['DQMM']));
  });
});
