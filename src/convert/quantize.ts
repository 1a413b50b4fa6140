/**
 * Weight encodings for the converted graphs, as pure functions over typed arrays:
 *
 * - Block-wise integer quantisation in the layout of onnxruntime's com.microsoft MatMulNBits: a weight
 *   W [N, K] (checkpoint layout, out x in) is cut into blocks of `blockSize` consecutive values along K
 *   (the last block zero-padded); each block gets a float32 scale and an unsigned zero point, and
 *   W ≈ (q - zeroPoint) * scale.
 * - float32 -> IEEE 754 half conversion (round to nearest even, subnormals kept) for fp16 weights.
 */
import { usageError } from '../util/errors.js';

export type QuantBits = 4 | 8;

export interface BlockQuantized {
  /** [N, kBlocks, blockSize * bits / 8]; 4-bit values two per byte, element 2j in the low nibble. */
  packed: Uint8Array;
  /** [N, kBlocks] float32. */
  scales: Float32Array;
  /** [N, ceil(kBlocks * bits / 8)]: one byte per block at 8 bits, two per byte (low nibble first) at 4 bits. */
  zeroPoints: Uint8Array;
}

export interface QuantizeOptions {
  /**
   * Symmetric: zero point fixed at 2^(bits-1) and scale = max|w| / (2^(bits-1) - 1), so the graph can
   * omit the zero points. Asymmetric (default): the block's [min, max] (widened to contain 0) spans the
   * whole integer range. Asymmetric measured lower error on the decoder (see decoder-graph.ts).
   */
  symmetric?: boolean;
  /**
   * Search each block's range for the smallest squared error instead of taking its min/max: the range shrunk by
   * each of RANGE_FACTORS in turn (outliers then clip, every other weight gets finer levels), the best kept.
   * Never worse than min/max, which is the first candidate.
   */
  search?: boolean;
}

/** Range shrink factors tried by the error search (1 = the block's min/max). */
export const RANGE_FACTORS = [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6];

/** Number of blocks along K and bytes per block. */
export function blockLayout(K: number, bits: QuantBits, blockSize: number): { kBlocks: number; blobBytes: number; zeroPointBytesPerRow: number } {
  if (blockSize < 16 || (blockSize & (blockSize - 1)) !== 0) throw usageError(`quantization block size ${blockSize} is not a power of two >= 16`);
  const kBlocks = Math.ceil(K / blockSize);
  return { kBlocks, blobBytes: (blockSize * bits) / 8, zeroPointBytesPerRow: Math.ceil((kBlocks * bits) / 8) };
}

/**
 * Quantises W [N, K] (row-major, rows are output channels) block by block along K.
 * Rounding is to nearest, ties away from zero (Math.round on |x|), then clamped to [0, 2^bits - 1].
 */
export function quantizeBlockwise(
  weight: Float32Array,
  N: number,
  K: number,
  bits: QuantBits,
  blockSize = 32,
  options: QuantizeOptions = {},
): BlockQuantized {
  if (weight.length !== N * K) throw usageError(`quantize: ${weight.length} values for a ${N}x${K} matrix`);
  const { kBlocks, blobBytes, zeroPointBytesPerRow } = blockLayout(K, bits, blockSize);
  const maxQ = (1 << bits) - 1;
  const packed = new Uint8Array(N * kBlocks * blobBytes);
  const scales = new Float32Array(N * kBlocks);
  const zeroPoints = new Uint8Array(N * zeroPointBytesPerRow);
  const q = new Uint8Array(blockSize);

  for (let n = 0; n < N; n++) {
    for (let b = 0; b < kBlocks; b++) {
      const start = n * K + b * blockSize;
      const count = Math.min(blockSize, K - b * blockSize);
      const { scale, zeroPoint } = options.search
        ? searchBlockParameters(weight, start, count, bits, options.symmetric ?? false)
        : blockParameters(weight, start, count, bits, options.symmetric ?? false);
      const inv = scale === 0 ? 0 : 1 / scale;
      q.fill(zeroPoint); // padding past K decodes to exactly 0
      for (let i = 0; i < count; i++) q[i] = quantLevel(weight[start + i], inv, zeroPoint, maxQ);
      scales[n * kBlocks + b] = scale;
      const blob = (n * kBlocks + b) * blobBytes;
      if (bits === 8) {
        packed.set(q, blob);
        zeroPoints[n * zeroPointBytesPerRow + b] = zeroPoint;
      } else {
        for (let j = 0; j < blobBytes; j++) packed[blob + j] = q[2 * j] | (q[2 * j + 1] << 4);
        const zpByte = n * zeroPointBytesPerRow + (b >> 1);
        zeroPoints[zpByte] |= (b & 1) === 0 ? zeroPoint : zeroPoint << 4;
      }
    }
  }
  return { packed, scales, zeroPoints };
}

/** W ≈ (q - zeroPoint) * scale, back to [N, K] float32 (for tests and error measurements). */
export function dequantizeBlockwise(quantized: BlockQuantized, N: number, K: number, bits: QuantBits, blockSize = 32): Float32Array {
  const { kBlocks, blobBytes, zeroPointBytesPerRow } = blockLayout(K, bits, blockSize);
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < kBlocks; b++) {
      const scale = quantized.scales[n * kBlocks + b];
      const zpByte = quantized.zeroPoints[n * zeroPointBytesPerRow + (bits === 8 ? b : b >> 1)];
      const zeroPoint = bits === 8 ? zpByte : (b & 1) === 0 ? zpByte & 0x0f : zpByte >> 4;
      const blob = (n * kBlocks + b) * blobBytes;
      const count = Math.min(blockSize, K - b * blockSize);
      for (let i = 0; i < count; i++) {
        const level = bits === 8 ? quantized.packed[blob + i] : (quantized.packed[blob + (i >> 1)] >> ((i & 1) * 4)) & 0x0f;
        out[n * K + b * blockSize + i] = (level - zeroPoint) * scale;
      }
    }
  }
  return out;
}

/** The stored level of one weight: round to nearest (ties away from zero), shift by the zero point, clamp. */
function quantLevel(value: number, inv: number, zeroPoint: number, maxQ: number): number {
  const level = roundHalfAway(value * inv) + zeroPoint;
  return level < 0 ? 0 : level > maxQ ? maxQ : level;
}

/** Scale and zero point of the block's range shrunk by each RANGE_FACTORS, the one with the least squared error. */
function searchBlockParameters(weight: Float32Array, start: number, count: number, bits: QuantBits, symmetric: boolean): { scale: number; zeroPoint: number } {
  const maxQ = (1 << bits) - 1;
  let best = blockParameters(weight, start, count, bits, symmetric);
  let bestError = blockError(weight, start, count, best, maxQ);
  for (let f = 1; f < RANGE_FACTORS.length && bestError > 0; f++) {
    const candidate = blockParameters(weight, start, count, bits, symmetric, RANGE_FACTORS[f]);
    const error = blockError(weight, start, count, candidate, maxQ);
    if (error < bestError) {
      best = candidate;
      bestError = error;
    }
  }
  return best;
}

/** Squared error of a block stored with these parameters (as dequantizeBlockwise would read it back). */
function blockError(weight: Float32Array, start: number, count: number, p: { scale: number; zeroPoint: number }, maxQ: number): number {
  const inv = p.scale === 0 ? 0 : 1 / p.scale;
  let error = 0;
  for (let i = 0; i < count; i++) {
    const back = (quantLevel(weight[start + i], inv, p.zeroPoint, maxQ) - p.zeroPoint) * p.scale;
    const d = weight[start + i] - back;
    error += d * d;
  }
  return error;
}

/** Scale and zero point covering the block's range (min/max, or max |w|), shrunk by `shrink` (1: all of it). */
function blockParameters(weight: Float32Array, start: number, count: number, bits: QuantBits, symmetric: boolean, shrink = 1): { scale: number; zeroPoint: number } {
  if (symmetric) {
    let maxAbs = 0;
    for (let i = 0; i < count; i++) maxAbs = Math.max(maxAbs, Math.abs(weight[start + i]));
    maxAbs *= shrink;
    const half = 1 << (bits - 1);
    // Levels -(half-1)..(half-1) around zero point `half`: the extra level -half stays unused so that
    // +max and -max are both exact.
    return { scale: Math.fround(maxAbs / (half - 1)), zeroPoint: half };
  }
  // The range always contains 0 so that zero (and the K padding) is exactly representable.
  let min = 0;
  let max = 0;
  for (let i = 0; i < count; i++) {
    const value = weight[start + i];
    if (value < min) min = value;
    if (value > max) max = value;
  }
  const maxQ = (1 << bits) - 1;
  if (max === min) return { scale: 0, zeroPoint: 0 };
  min *= shrink;
  max *= shrink;
  const scale = Math.fround((max - min) / maxQ);
  const zeroPoint = Math.min(maxQ, Math.max(0, roundHalfAway(-min / scale)));
  return { scale, zeroPoint };
}

function roundHalfAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

/**
 * Symmetric 7-bit weights per output channel for DynamicQuantizeMatMul: W[n, :] ≈ q[:, n] * scale[n], q in
 * [-63, 63], stored as int8 B [K, N] (the operator's layout). Rounding to nearest, ties away from zero.
 *
 * 7 bits, not 8: onnxruntime's x86 u8s8 kernel adds pairs of uint8 x int8 products in int16 (pmaddubsw) and
 * saturates: measured on one 128x64 linear, relative error 8.0e-2 with [-127, 127] against 1.4e-2 with
 * [-63, 63] (the "reduce_range" of onnxruntime's own quantization tools, for the same reason).
 */
export const PER_CHANNEL_LEVELS = 63;
export function quantizePerChannelInt8(weight: Float32Array, N: number, K: number): { values: Int8Array; scales: Float32Array } {
  if (weight.length !== N * K) throw usageError(`quantize: ${weight.length} values for a ${N}x${K} matrix`);
  const values = new Int8Array(K * N);
  const scales = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    let maxAbs = 0;
    for (let k = 0; k < K; k++) maxAbs = Math.max(maxAbs, Math.abs(weight[n * K + k]));
    const scale = Math.fround(maxAbs / PER_CHANNEL_LEVELS);
    scales[n] = scale;
    const inv = scale === 0 ? 0 : 1 / scale;
    for (let k = 0; k < K; k++) {
      const level = roundHalfAway(weight[n * K + k] * inv);
      values[k * N + n] = level < -PER_CHANNEL_LEVELS ? -PER_CHANNEL_LEVELS : level > PER_CHANNEL_LEVELS ? PER_CHANNEL_LEVELS : level;
    }
  }
  return { values, scales };
}

