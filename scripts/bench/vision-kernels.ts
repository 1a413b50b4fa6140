/**
 * The vision tower's weight kernels side by side (issue "The right answer, faster", item 3): the tower is the
 * slowest stage of a first answer with an image, and runs all its rows (every 14-pixel patch) through every layer.
 *
 * - Layer stacks at the 3B tower's widths (hidden 1280, MLP 3420, fused qkv 3840; no attention), each kernel
 *   timed at the row counts a real image gives (1296 patches: a 504x504 image; 4096: about 900x900), interleaved
 *   in one process, medians.
 * - The real tower graph (models/qwen25vl/vision-graph.ts) at the 3B widths but 2 layers deep (one windowed, one
 *   full attention, then the merger), per storage format: its time at 1296 patches and its output's relative L2
 *   error against the float64 reference of the tests (test/reference/vision-tower.ts).
 *
 * Random weights: the error says how far a format moves the tower's output, not what that does to answers (the
 * agreement table on the trained proxy does).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { LinearPlan } from '../../src/convert/recipes.js';
import { NBITS_ACT8 } from '../../src/convert/recipes.js';
import { buildVisionGraph } from '../../src/models/qwen25vl/vision-graph.js';
import { type GridThw, patchWidth, visionFeeds } from '../../src/models/qwen25vl/vision-layout.js';
import { plainToOrt } from '../../src/models/qwen25vl/vision-encoder.js';
import type { Ort } from '../../src/runtime/onnxruntime.js';
import { prng, randomWeights, tinyConfig } from '../../test/helpers/random-weights.js';
import { referenceVisionTower } from '../../test/reference/vision-tower.js';
import { KERNEL_LABEL, type KernelId, sessionFor, timeKernels, writeLayerStack } from './kernels.js';
import { median } from './machine.js';

export const VISION_STACK_KERNELS: readonly KernelId[] = ['nbits8-b32', 'dqmm-int8', 'dqmm-int8-ol', 'mmint-int8', 'nbits4-b32', 'fp32'];

/** The tower formats a conversion can write (recipes.ts), compared on the real graph. */
export const VISION_FORMATS: readonly { name: string; plan: LinearPlan }[] = [
  { name: "int8 MatMulNBits b32 act8 (int4-all's tower)", plan: { format: 'int8', quant: NBITS_ACT8 } },
  { name: 'int8 per-channel DynamicQuantizeMatMul, outliers split', plan: { format: 'int8-dq', quant: NBITS_ACT8 } },
  { name: 'int8 per-channel DynamicQuantizeMatMul, no split', plan: { format: 'int8-dq', quant: { ...NBITS_ACT8, outlierChannels: 0 } } },
  { name: 'int4 MatMulNBits b32 act8', plan: { format: 'int4', quant: NBITS_ACT8 } },
  { name: 'fp32', plan: { format: 'fp32', quant: NBITS_ACT8 } },
];

export interface VisionProbe {
  stack: { layers: number; timings: { kernel: KernelId; rows: number; ms: number }[] };
  tower: { name: string; layers: number; patches: number; ms: number; relL2: number; dataBytes: number }[];
}

const TOWER_3B = { hidden: 1280, intermediate: 3420, qkv: 3 * 1280 };

export async function probeVision(dir: string, threads: number, repeats: number, log: (line: string) => void): Promise<VisionProbe> {
  fs.mkdirSync(dir, { recursive: true });
  const layers = 4;
  const sessions = new Map<KernelId, Ort.InferenceSession>();
  for (const kernel of VISION_STACK_KERNELS) {
    const file = path.join(dir, `vision-${kernel}-${layers}.onnx`);
    if (!fs.existsSync(`${file}.done`)) {
      log(`  vision kernels: writing the ${kernel} stack (once)`);
      writeLayerStack(file, TOWER_3B, layers, kernel, 5);
      fs.writeFileSync(`${file}.done`, '');
    }
    sessions.set(kernel, await sessionFor(file, threads));
  }
  log('  vision kernels: timing 1296 and 4096 rows');
  const timings = await timeKernels(sessions, TOWER_3B.hidden, [1296, 4096], repeats);
  for (const s of sessions.values()) await s.release();

  // The real graph, 2 layers deep at the 3B widths.
  const config = tinyConfig({
    vision: { depth: 2, hiddenSize: 1280, numHeads: 16, intermediateSize: 3420, fullattBlockIndexes: [1], outHiddenSize: 2048 },
  });
  const weights = randomWeights(config, 21);
  const grid: GridThw = [1, 36, 36];
  const rand = prng(22);
  const patches = Float32Array.from({ length: grid[1] * grid[2] * patchWidth(config.vision) }, () => rand() * 4 - 1.8);
  log('  vision tower: float64 reference (2 layers at the 3B widths, 1296 patches)');
  const expected = referenceVisionTower(weights, config.vision, patches, grid);
  const tower: VisionProbe['tower'] = [];
  const built: { name: string; session: Ort.InferenceSession; dataBytes: number }[] = [];
  for (const { name, plan } of VISION_FORMATS) {
    const modelPath = path.join(dir, `tower-${plan.format}-${plan.quant.outlierChannels ?? 'd'}.onnx`);
    const { dataBytes } = buildVisionGraph(weights, config, { modelPath, dtype: 'fp32', plan });
    built.push({ name, session: await sessionFor(modelPath, threads), dataBytes });
  }
  const { feeds, reverse } = visionFeeds(patches, grid, config.vision);
  const tensors: Record<string, Ort.Tensor> = {};
  for (const [name, t] of Object.entries(feeds)) tensors[name] = plainToOrt(t);
  const samples = new Map<string, number[]>();
  const outputs = new Map<string, Float32Array>();
  for (const b of built) outputs.set(b.name, reverse((await b.session.run(tensors)).image_embeds.data as Float32Array, config.vision.outHiddenSize));
  for (let r = 0; r < repeats; r++) {
    for (const b of built) {
      const t0 = performance.now();
      await b.session.run(tensors);
      samples.set(b.name, [...(samples.get(b.name) ?? []), performance.now() - t0]);
    }
  }
  for (const b of built) {
    await b.session.release();
    tower.push({ name: b.name, layers: 2, patches: grid[1] * grid[2], ms: median(samples.get(b.name)!), relL2: relativeL2(outputs.get(b.name)!, expected), dataBytes: b.dataBytes });
  }
  return { stack: { layers, timings }, tower };
}

function relativeL2(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num += (actual[i] - expected[i]) ** 2;
    den += expected[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** The vision tables in markdown. */
export function renderVision(p: VisionProbe): string {
  const rows = [...new Set(p.stack.timings.map((t) => t.rows))];
  const kernels = [...new Set(p.stack.timings.map((t) => t.kernel))];
  const ms = (k: KernelId, r: number) => p.stack.timings.find((t) => t.kernel === k && t.rows === r)?.ms ?? NaN;
  const base = (r: number) => ms('nbits8-b32', r);
  return [
    `### Vision tower kernels: ${p.stack.layers} layers at the 3B tower's widths (qkv, o, gate, up, down; no attention), ms per call (x faster than 8-bit MatMulNBits)`,
    '',
    `| kernel | ${rows.map((r) => `${r} rows`).join(' | ')} |`,
    `|---|${rows.map(() => '---').join('|')}|`,
    ...kernels.map((k) => `| ${KERNEL_LABEL[k]} | ${rows.map((r) => `${ms(k, r).toFixed(0)} (${(base(r) / ms(k, r)).toFixed(2)}x)`).join(' | ')} |`),
    '',
    `### The tower graph, ${p.tower[0]?.layers ?? 2} layers at the 3B widths (one windowed, one full attention, the merger), ${p.tower[0]?.patches ?? 0} patches`,
    '',
    '| storage | ms | relative L2 error vs float64 | weights |',
    '|---|---|---|---|',
    ...p.tower.map((t) => `| ${t.name} | ${t.ms.toFixed(0)} | ${t.relL2.toExponential(2)} | ${(t.dataBytes / 1e6).toFixed(0)} MB |`),
  ].join('\n');
}
