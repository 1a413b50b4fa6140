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
 *   int8-dq    int8 W per output channel through com.microsoft DynamicQuantizeMatMul (MLAS's u8s8 GEMM), with
 *              the call's largest input channels split off in float32 (see outlierSplitLinear).
 */
import { modelError } from '../../util/errors.js';
import { toFloat16 } from '../../util/half.js';
import { type QuantBits, quantizeBlockwise, quantizePerChannelInt8 } from '../quantize.js';
import { type GraphBuilder, float } from './graph-builder.js';

export type WeightFormat = 'fp32' | 'fp16' | 'int8' | 'int4' | 'int8-dq';

export interface QuantSettings {
  /** MatMulNBits block size along K. */
  blockSize: number;
  symmetric: boolean;
  /** MatMulNBits accuracy_level: 0 = float32 compute after dequantisation, 4 = int8 activations. */
  accuracyLevel: number;
  /** How a block's scale is chosen: its min/max (default), or the range that minimises the squared error. */
  rounding?: 'minmax' | 'mse';
  /**
   * int8-dq only: input channels split off in float32 per call (outlierSplitLinear; default OUTLIER_CHANNELS).
   * 0: a plain DynamicQuantizeMatMul, for activations without outlier channels.
   */
  outlierChannels?: number;
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

  if (options.format === 'int8-dq') {
    const { values, scales } = quantizePerChannelInt8(weight, N, K);
    const b = g.initializer(`${options.name}.weight_s8`, 'int8', [K, N], values);
    const bScale = g.initializer(`${options.name}.weight_scale`, 'float32', [N], scales);
    const split = options.quant.outlierChannels ?? OUTLIER_CHANNELS;
    if (split === 0) return g.op('DynamicQuantizeMatMul', bias ? [x, b, bScale, '', bias] : [x, b, bScale], {}, options.name, 'com.microsoft');
    return outlierSplitLinear(g, x, b, bScale, K, options.name, bias, split);
  }

  const bits: QuantBits = options.format === 'int8' ? 8 : 4;
  const { blockSize, symmetric, accuracyLevel, rounding } = options.quant;
  const q = quantizeBlockwise(weight, N, K, bits, blockSize, { symmetric, search: rounding === 'mse' });
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

/**
 * Input channels taken out of the quantised product per call (outlierSplitLinear). Trained Qwen2.5 models
 * carry a handful of residual-stream channels 50-100x larger than the rest; 8 covers them with room to spare
 * and costs an [rows, 8] x [8, N] float32 product.
 */
export const OUTLIER_CHANNELS = 8;

/**
 * y = x W^T (+ bias) with W as int8 B [K, N] and per-column scales, through DynamicQuantizeMatMul, whose one
 * activation scale per call (per tensor) would be set by any outlier channel and leave every other channel a
 * few levels. So the call's OUTLIER_CHANNELS channels of largest |x| (over its rows) are found at run time,
 * zeroed in the quantised product, and multiplied exactly in float32 with their dequantised weight rows
 * (LLM.int8()'s decomposition, with the channels chosen per call instead of by a threshold). Measured on one
 * 2048 -> 11008 linear, 8 rows, 4 channels 50-100x: relative error 8.7e-3 (8-bit weights), against 1.1e-1
 * without the split and 8.2e-2 for MatMulNBits int4 (scripts/bench/kernels.ts).
 */
export function outlierSplitLinear(g: GraphBuilder, x: string, b: string, bScale: string, K: number, name: string, bias?: string, channels = OUTLIER_CHANNELS): string {
  const top = Math.min(channels, K);
  const channelMax = g.op('ReduceMax', [g.op('Abs', [x], {}, `${name}.abs`), g.int64s(`${name}.rows_axis`, [0])], { keepdims: 0 }, `${name}.channel_max`);
  const [, picked] = g.node('TopK', [channelMax, g.int64s(`${name}.k`, [top])], { axis: 0 }, { outputs: [`${name}.top_values`, `${name}.top_channels`] });
  const xTop = g.op('Gather', [x, picked], { axis: 1 }, `${name}.x_top`);
  // keep[k] = 0 for the split-off channels, 1 elsewhere (TopK's indices are distinct).
  const oneHot = g.op('OneHot', [picked, g.int64s(`${name}.depth`, [K], []), g.floats(`${name}.off_on`, [0, 1])], { axis: -1 }, `${name}.one_hot`);
  const hit = g.op('ReduceSum', [oneHot, g.int64s(`${name}.top_axis`, [0])], { keepdims: 0 }, `${name}.hit`);
  const keep = g.op('Sub', [g.floats(`${name}.one`, [1]), hit], {}, `${name}.keep`);
  const xRest = g.op('Mul', [x, keep], {}, `${name}.x_rest`);
  const mainInputs = bias ? [xRest, b, bScale, '', bias] : [xRest, b, bScale];
  const main = g.op('DynamicQuantizeMatMul', mainInputs, {}, `${name}.quantized`, 'com.microsoft');
  const wTop = g.op('Mul', [g.op('Cast', [g.op('Gather', [b, picked], { axis: 0 }, `${name}.b_top`)], { to: FLOAT32 }, `${name}.b_top_f`), bScale], {}, `${name}.w_top`);
  return g.op('Add', [main, g.op('MatMul', [xTop, wTop], {}, `${name}.split`)], {}, name);
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
