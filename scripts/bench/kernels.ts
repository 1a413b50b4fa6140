/**
 * The weight-matmul kernels a decoder graph can use, side by side at the shapes block diffusion runs
 * (1, 8, 16 and prefill-sized row counts), on stacks of decoder layers with the real layer widths and no
 * attention (the weight matmuls are ~90 % of a forward). For each kernel: milliseconds per call, bytes per
 * weight as stored, the ratio to the memory floor (bytes / measured bandwidth), and the error of one linear
 * against a float64 reference, with plain activations and with a few residual-stream-like outlier channels
 * 50-100x larger than the rest (what per-tensor activation quantization handles worst).
 *
 * Every variant's sessions live in one process and their calls are interleaved, so machine drift hits them
 * alike; medians are reported.
 */
import fs from 'node:fs';
import path from 'node:path';
import { GraphBuilder } from '../../src/convert/onnx/graph-builder.js';
import { quantizeBlockwise, quantizePerChannelInt8 } from '../../src/convert/quantize.js';
import { outlierSplitLinear } from '../../src/convert/onnx/ops.js';
import { type Ort, ort } from '../../src/runtime/onnxruntime.js';
import { prng } from '../../test/helpers/random-weights.js';
import { median } from './machine.js';

export type KernelId = 'nbits4-b32' | 'nbits4-b64' | 'nbits4-b128' | 'nbits8-b32' | 'dqmm-int8' | 'dqmm-int8-ol' | 'mmint-int8' | 'fp32';
export const KERNELS: readonly KernelId[] = ['nbits4-b32', 'nbits4-b64', 'nbits4-b128', 'nbits8-b32', 'dqmm-int8', 'dqmm-int8-ol', 'mmint-int8', 'fp32'];

export const KERNEL_LABEL: Record<KernelId, string> = {
  'nbits4-b32': 'MatMulNBits int4, block 32, int8 activations per block (int4 and int4-all)',
  'nbits4-b64': 'MatMulNBits int4, block 64, int8 activations per block',
  'nbits4-b128': 'MatMulNBits int4, block 128, int8 activations per block',
  'nbits8-b32': 'MatMulNBits int8, block 32, int8 activations per block',
  'dqmm-int8': 'DynamicQuantizeMatMul: int8 weights per output channel, uint8 activations per tensor',
  'dqmm-int8-ol': 'DynamicQuantizeMatMul as above, the 8 largest input channels of each call split off in float32',
  'mmint-int8': 'DynamicQuantizeLinear + MatMulInteger: as above, in standard ONNX ops',
  fp32: 'float32 Gemm',
};

export interface LayerWidths {
  hidden: number;
  intermediate: number;
  /** q + k + v output width. */
  qkv: number;
}

/** One linear y = x W^T with W [N, K] in checkpoint layout, written in the kernel's format. */
export function kernelLinear(g: GraphBuilder, x: string, weight: Float32Array, N: number, K: number, kernel: KernelId, name: string): string {
  if (kernel === 'fp32') return g.op('Gemm', [x, g.initializer(`${name}.w`, 'float32', [N, K], weight)], { transB: 1 }, name);
  if (kernel.startsWith('nbits')) {
    const bits = kernel.startsWith('nbits8') ? 8 : 4;
    const blockSize = Number(kernel.split('-b')[1]);
    const q = quantizeBlockwise(weight, N, K, bits, blockSize);
    const kBlocks = Math.ceil(K / blockSize);
    const inputs = [
      x,
      g.initializer(`${name}.q`, 'uint8', [N, kBlocks, (blockSize * bits) / 8], q.packed),
      g.initializer(`${name}.scales`, 'float32', [N, kBlocks], q.scales),
      g.initializer(`${name}.zp`, 'uint8', [N, q.zeroPoints.length / N], q.zeroPoints),
    ];
    return g.op('MatMulNBits', inputs, { K, N, bits, block_size: blockSize, accuracy_level: 4 }, name, 'com.microsoft');
  }
  // int8 per output channel, symmetric, stored transposed as B [K, N].
  const { values, scales } = quantizePerChannelInt8(weight, N, K);
  const b = g.initializer(`${name}.b`, 'int8', [K, N], values);
  const bScale = g.initializer(`${name}.b_scale`, 'float32', [N], scales);
  if (kernel === 'dqmm-int8') return g.op('DynamicQuantizeMatMul', [x, b, bScale], {}, name, 'com.microsoft');
  if (kernel === 'dqmm-int8-ol') return outlierSplitLinear(g, x, b, bScale, K, name);
  const [xq, xScale, xZero] = g.node('DynamicQuantizeLinear', [x], {}, { outputs: [`${name}.xq`, `${name}.xs`, `${name}.xz`] });
  const acc = g.op('MatMulInteger', [xq, b, xZero], {}, `${name}.acc`);
  const accF = g.op('Cast', [acc], { to: 1 }, `${name}.accf`);
  return g.op('Mul', [accF, g.op('Mul', [xScale, bScale], {}, `${name}.scale`)], {}, name);
}

/** Bytes per weight as stored on disk (onnxruntime's packed layout can be larger: see the report). */
export function bytesPerWeight(kernel: KernelId): number {
  if (kernel === 'fp32') return 4;
  if (kernel === 'dqmm-int8' || kernel === 'dqmm-int8-ol' || kernel === 'mmint-int8') return 1;
  const bits = kernel.startsWith('nbits8') ? 8 : 4;
  const blockSize = Number(kernel.split('-b')[1]);
  return bits / 8 + 5 / blockSize; // fp32 scale + a zero point byte (4-bit: half a byte) per block, rounded up
}

const gaussian = (rand: () => number) => {
  const u = Math.max(rand(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
};

function randomMatrix(count: number, std: number, rand: () => number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = gaussian(rand) * std;
  return out;
}

/** A stack of `layers` layers of the decoder's weight matmuls (qkv, o, gate, up, down), no attention. */
export function writeLayerStack(file: string, widths: LayerWidths, layers: number, kernel: KernelId, seed: number): void {
  const { hidden: H, intermediate: I, qkv } = widths;
  const g = new GraphBuilder({ graphName: `stack_${kernel}`, modelPath: file, opset: 21 });
  const rand = prng(seed);
  let x = g.input('x', 'float32', ['rows', H]);
  for (let l = 0; l < layers; l++) {
    const w = (N: number, K: number) => randomMatrix(N * K, 0.02, rand);
    const qkvOut = kernelLinear(g, x, w(qkv, H), qkv, H, kernel, `l${l}.qkv`);
    const attnLike = g.op('Slice', [qkvOut, g.int64s(`l${l}.s0`, [0]), g.int64s(`l${l}.s1`, [H]), g.int64s(`l${l}.s2`, [1])], {}, `l${l}.attn`);
    const o = kernelLinear(g, attnLike, w(H, H), H, H, kernel, `l${l}.o`);
    const h = g.op('Add', [x, o], {}, `l${l}.h`);
    const gate = kernelLinear(g, h, w(I, H), I, H, kernel, `l${l}.gate`);
    const up = kernelLinear(g, h, w(I, H), I, H, kernel, `l${l}.up`);
    const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate], {}, `l${l}.sig`)], {}, `l${l}.silu`), up], {}, `l${l}.act`);
    const down = kernelLinear(g, act, w(H, I), H, I, kernel, `l${l}.down`);
    x = g.op('Add', [h, down], {}, `l${l}.out`);
  }
  g.output(x, 'y', 'float32', ['rows', H]);
  g.finish();
}

export interface KernelTiming {
  kernel: KernelId;
  rows: number;
  ms: number;
}

export interface KernelError {
  kernel: KernelId;
  /** Relative RMS error of one [rows, K] x [K, N] linear against float64, plain Gaussian activations. */
  plain: number;
  /** The same with 4 of K channels 50-100x larger. */
  outliers: number;
}

export async function sessionFor(file: string, threads: number): Promise<Ort.InferenceSession> {
  return ort.InferenceSession.create(file, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionProviders: ['cpu'] });
}

/** Interleaved timings: for each row count, `repeats` rounds of one call per kernel. */
export async function timeKernels(
  sessions: Map<KernelId, Ort.InferenceSession>,
  hidden: number,
  rowCounts: number[],
  repeats: number,
): Promise<KernelTiming[]> {
  const out: KernelTiming[] = [];
  const rand = prng(7);
  for (const rows of rowCounts) {
    const x = new ort.Tensor('float32', randomMatrix(rows * hidden, 1, rand), [rows, hidden]);
    const samples = new Map<KernelId, number[]>();
    for (const session of sessions.values()) await session.run({ x }); // warm-up
    for (let r = 0; r < repeats; r++) {
      for (const [kernel, session] of sessions) {
        const t0 = performance.now();
        await session.run({ x });
        const ms = performance.now() - t0;
        samples.set(kernel, [...(samples.get(kernel) ?? []), ms]);
      }
    }
    for (const [kernel, ms] of samples) out.push({ kernel, rows, ms: median(ms) });
  }
  return out;
}

/** Error of one linear of the given width, per kernel, against float64 (rows of activations given). */
export async function kernelErrors(dir: string, kernels: readonly KernelId[], N: number, K: number, rows: number, threads: number): Promise<KernelError[]> {
  const rand = prng(11);
  const weight = randomMatrix(N * K, 0.02, rand);
  const plain = randomMatrix(rows * K, 1, rand);
  const outliers = Float32Array.from(plain);
  const channels = [17, 401, 1111, K - 5];
  for (let r = 0; r < rows; r++) channels.forEach((c, i) => (outliers[r * K + c] *= 50 + (50 * i) / (channels.length - 1)));
  const reference = (x: Float32Array) => {
    const y = new Float64Array(rows * N);
    for (let r = 0; r < rows; r++) {
      for (let n = 0; n < N; n++) {
        let sum = 0;
        for (let k = 0; k < K; k++) sum += x[r * K + k] * weight[n * K + k];
        y[r * N + n] = sum;
      }
    }
    return y;
  };
  const refs = { plain: reference(plain), outliers: reference(outliers) };
  const out: KernelError[] = [];
  for (const kernel of kernels) {
    const file = path.join(dir, `linear-${kernel}-${N}x${K}.onnx`);
    if (!fs.existsSync(file)) {
      const g = new GraphBuilder({ graphName: `linear_${kernel}`, modelPath: file, opset: 21 });
      g.output(kernelLinear(g, g.input('x', 'float32', ['rows', K]), weight, N, K, kernel, 'lin'), 'y', 'float32', ['rows', N]);
      g.finish();
    }
    const session = await sessionFor(file, threads);
    const err = async (x: Float32Array, ref: Float64Array) => {
      const y = (await session.run({ x: new ort.Tensor('float32', x, [rows, K]) })).y.data as Float32Array;
      let num = 0;
      let den = 0;
      for (let i = 0; i < ref.length; i++) {
        num += (y[i] - ref[i]) ** 2;
        den += ref[i] ** 2;
      }
      return Math.sqrt(num / den);
    };
    out.push({ kernel, plain: await err(plain, refs.plain), outliers: await err(outliers, refs.outliers) });
    await session.release();
  }
  return out;
}
