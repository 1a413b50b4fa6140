/**
 * Reusable layer helpers on top of GraphBuilder: each adds the nodes (and weights) of one familiar
 * building block and returns the name of its output. Weights come in as float32 in the checkpoint's
 * PyTorch layout; how they are stored is decided by `WeightFormat`.
 *
 * Activations are float32 everywhere. Weight formats:
 *   fp32  Gemm(x, W, transB=1): W stays in the checkpoint layout [N, K] (no transposed copy at conversion).
 *   fp16  W stored as IEEE half [N, K], Cast to float32, then the same Gemm. onnxruntime folds the Cast
 *         into a float32 constant when the session is created (graph optimisation 'basic' and above), so
 *         fp16 halves the file, not the memory of a running session.
 *   int8/int4  com.microsoft MatMulNBits with block-wise quantised W (see quantize.ts).
 */
import { modelError } from '../../util/errors.js';
import { toFloat16 } from '../../util/half.js';
import { type QuantBits, quantizeBlockwise } from '../quantize.js';
import { type GraphBuilder, float } from './graph-builder.js';

export type WeightFormat = 'fp32' | 'fp16' | 'int8' | 'int4';

export interface QuantSettings {
  /** MatMulNBits block size along K. */
  blockSize: number;
  symmetric: boolean;
  /** MatMulNBits accuracy_level: 0 = float32 compute after dequantisation, 4 = int8 activations. */
  accuracyLevel: number;
}

export interface LinearOptions {
  format: WeightFormat;
  /** Prefix for value and initializer names (e.g. `layers.3.q_proj`). */
  name: string;
  bias?: Float32Array;
  quant: QuantSettings;
}

/**
 * y = x W^T + b for a 2-D activation x [rows, K]; `weight` is [N, K] row-major (nn.Linear layout).
 * Returns y [rows, N] float32.
 */
export function linear(g: GraphBuilder, x: string, weight: Float32Array, N: number, K: number, options: LinearOptions): string {
  if (weight.length !== N * K) throw modelError(`${options.name}: weight has ${weight.length} values, expected ${N}x${K}`);
  if (options.bias && options.bias.length !== N) throw modelError(`${options.name}: bias has ${options.bias.length} values, expected ${N}`);
  const bias = options.bias ? g.initializer(`${options.name}.bias`, 'float32', [N], options.bias) : undefined;

  if (options.format === 'fp32' || options.format === 'fp16') {
    const w = options.format === 'fp32'
      ? g.initializer(`${options.name}.weight`, 'float32', [N, K], weight)
      : g.op('Cast', [g.initializer(`${options.name}.weight_fp16`, 'float16', [N, K], toFloat16(weight))], { to: FLOAT32 }, `${options.name}.weight`);
    const inputs = bias ? [x, w, bias] : [x, w];
    return g.op('Gemm', inputs, { transB: 1 }, options.name);
  }

  const bits: QuantBits = options.format === 'int8' ? 8 : 4;
  const { blockSize, symmetric, accuracyLevel } = options.quant;
  const q = quantizeBlockwise(weight, N, K, bits, blockSize, { symmetric });
  const kBlocks = Math.ceil(K / blockSize);
  const inputs = [
    x,
    g.initializer(`${options.name}.weight_q${bits}`, 'uint8', [N, kBlocks, (blockSize * bits) / 8], q.packed),
    g.initializer(`${options.name}.scales`, 'float32', [N, kBlocks], q.scales),
  ];
  // Without zero points MatMulNBits uses 2^(bits-1), which is what symmetric quantisation produced.
  const zeroPoints = symmetric ? '' : g.initializer(`${options.name}.zero_points`, 'uint8', [N, q.zeroPoints.length / N], q.zeroPoints);
  // The bias is MatMulNBits' own input 5 (after g_idx, unused): one node fewer than a separate Add.
  if (bias) inputs.push(zeroPoints, '', bias);
  else if (zeroPoints) inputs.push(zeroPoints);
  return g.op('MatMulNBits', inputs, { K, N, bits, block_size: blockSize, accuracy_level: accuracyLevel }, options.name, 'com.microsoft');
}

/** x * rsqrt(mean(x^2, last axis) + eps) * weight, computed in float32 (ONNX RMSNormalization, opset >= 23). */
export function rmsNorm(g: GraphBuilder, x: string, weight: Float32Array, eps: number, name: string): string {
  const w = g.initializer(`${name}.weight`, 'float32', [weight.length], weight);
  return g.op('RMSNormalization', [x, w], { axis: -1, epsilon: float(eps), stash_type: 1 }, name);
}

/**
 * RMSNorm(x + skip) together with the sum x + skip, in one node (com.microsoft
 * SkipSimplifiedLayerNormalization): a residual add and the next norm cost one pass over the rows.
 */
export function skipRmsNorm(g: GraphBuilder, x: string, skip: string, weight: Float32Array, eps: number, name: string): { normed: string; sum: string } {
  const w = g.initializer(`${name}.weight`, 'float32', [weight.length], weight);
  const outputs = [name, '', '', `${name}.residual`];
  const [normed, , , sum] = g.node('SkipSimplifiedLayerNormalization', [x, skip, w], { epsilon: float(eps) }, { outputs, domain: 'com.microsoft' });
  return { normed, sum };
}

/** silu(a) * b = a * sigmoid(a) * b. */
export function siluGate(g: GraphBuilder, a: string, b: string, name: string): string {
  const silu = g.op('Mul', [a, g.op('Sigmoid', [a], {}, `${name}.sigmoid`)], {}, `${name}.silu`);
  return g.op('Mul', [silu, b], {}, name);
}

/** Reshape to a fixed shape spec (0 = copy that input dim, -1 = infer). */
export function reshape(g: GraphBuilder, x: string, shape: number[], name: string): string {
  return g.op('Reshape', [x, g.int64s(`${name}.shape`, shape)], {}, name);
}

/** onnx TensorProto.DataType.FLOAT, for Cast. */
export const FLOAT32 = 1;

/**
 * Rotary embedding, rotate_half layout over the whole head: for j < D/2 the pair (j, j + D/2) of every head
 * turns by the angle whose cos/sin are given. x is [1, S, heads * D]; cos and sin are [1, S, D/2]
 * (one angle vector per row, shared by all heads). ONNX RotaryEmbedding (opset >= 23) without position ids.
 */
export function rotary(g: GraphBuilder, x: string, cos: string, sin: string, numHeads: number, name: string): string {
  return g.op('RotaryEmbedding', [x, cos, sin], { num_heads: numHeads, interleaved: 0 }, name);
}
