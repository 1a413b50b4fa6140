/**
 * Bicubic resize of an 8-bit RGB image that gives the same bytes as Pillow's
 * `Image.resize((w, h), Image.BICUBIC)` (checked against Pillow 9.4, Debian's python3-pil).
 *
 * The model was trained on images resized this way, and no sharp/libvips kernel reproduces it (they differ
 * by several levels), so this is our own implementation of the algorithm Pillow uses (libImaging/Resample.c):
 *
 * - Separable, two passes: horizontal first into a temporary image, then vertical. A pass whose dimension
 *   does not change is skipped (Pillow's `need_horizontal` / `need_vertical`); no change at all is a copy.
 * - Each output sample at `center = (i + 0.5) * scale` (scale = in / out) takes the input samples in
 *   `[trunc(center - support + 0.5), trunc(center + support + 0.5))`, clamped to the image, where
 *   `support = 2 * max(scale, 1)`: when shrinking the kernel is stretched by the shrink factor, which is what
 *   antialiases. The kernel is Keys' cubic with a = -0.5 evaluated at `(j - center + 0.5) / max(scale, 1)`.
 * - Weights are normalised to sum to 1 in double precision, then converted to fixed point with
 *   PRECISION_BITS = 32 - 8 - 2 = 22 fractional bits, rounding half away from zero.
 * - Each output value is `clamp((2^21 + sum(weight * sample)) >> 22, 0, 255)`: integer arithmetic,
 *   rounded and clipped to uint8 after *each* pass (the temporary image is 8-bit too).
 * - Pillow's `resize` has `reducing_gap=None` by default, so there is no extra box-reduce step.
 *
 * Every sum of products stays below 2^31 (weights sum to 2^22 with small negative lobes, samples <= 255),
 * so plain JS numbers are exact and `>> 22` behaves like C's arithmetic shift on int32.
 */
import { usageError } from '../util/errors.js';

export interface RgbImage {
  /** Interleaved RGB, row-major, `width * height * 3` bytes. */
  data: Uint8Array;
  width: number;
  height: number;
}

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);
/** The bicubic kernel is non-zero on (-2, 2). */
const BICUBIC_SUPPORT = 2;

/** Keys' cubic convolution kernel with a = -0.5, written in the same operation order as Pillow. */
function bicubicKernel(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/**
 * Fixed-point weights for resampling one axis from `inSize` to `outSize` samples.
 * Output sample `i` reads `count[i]` input samples starting at `first[i]`, with weights
 * `weights[i * taps .. i * taps + count[i])`.
 */
export interface AxisWeights {
  taps: number;
  first: Int32Array;
  count: Int32Array;
  weights: Int32Array;
}

export function axisWeights(inSize: number, outSize: number): AxisWeights {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = BICUBIC_SUPPORT * filterScale;
  const taps = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * taps);
  const raw = new Float64Array(taps);
  const invFilterScale = 1 / filterScale;

  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    // C's (int) cast truncates; negatives are clamped to 0 right after, so truncation is all that matters.
    const lo = Math.max(0, Math.trunc(center - support + 0.5));
    const hi = Math.min(inSize, Math.trunc(center + support + 0.5));
    const n = hi - lo;
    let total = 0;
    for (let j = 0; j < n; j++) {
      const w = bicubicKernel((j + lo - center + 0.5) * invFilterScale);
      raw[j] = w;
      total += w;
    }
    for (let j = 0; j < n; j++) {
      const w = total !== 0 ? raw[j] / total : raw[j];
      // Round half away from zero, as C's (int)(w * ONE +/- 0.5) does.
      weights[i * taps + j] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
    }
    first[i] = lo;
    count[i] = n;
  }
  return { taps, first, count, weights };
}

/** Fixed-point accumulator -> uint8, clipping like Pillow's lookup table. */
function toUint8(acc: number): number {
  const v = acc >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Horizontal pass over `rows` input rows starting at `rowOffset`. */
function resampleRows(src: RgbImage, rowOffset: number, rows: number, outWidth: number, ax: AxisWeights): RgbImage {
  const { taps, first, count, weights } = ax;
  const inStride = src.width * 3;
  const outStride = outWidth * 3;
  const out = new Uint8Array(rows * outStride);
  const s = src.data;
  for (let y = 0; y < rows; y++) {
    const rowStart = (y + rowOffset) * inStride;
    const outRow = y * outStride;
    for (let x = 0; x < outWidth; x++) {
      const k0 = x * taps;
      const n = count[x];
      let p = rowStart + first[x] * 3;
      let r = HALF;
      let g = HALF;
      let b = HALF;
      for (let j = 0; j < n; j++) {
        const w = weights[k0 + j];
        r += s[p] * w;
        g += s[p + 1] * w;
        b += s[p + 2] * w;
        p += 3;
      }
      const o = outRow + x * 3;
      out[o] = toUint8(r);
      out[o + 1] = toUint8(g);
      out[o + 2] = toUint8(b);
    }
  }
  return { data: out, width: outWidth, height: rows };
}

/**
 * Vertical pass. `firstRow` is subtracted from the weights' row indices (the source may be a horizontally
 * resampled band that starts at that input row). Accumulates whole rows at a time, which reads memory in
 * order; integer sums are the same in any order.
 */
function resampleColumns(src: RgbImage, firstRow: number, outHeight: number, ax: AxisWeights): RgbImage {
  const { taps, first, count, weights } = ax;
  const stride = src.width * 3;
  const out = new Uint8Array(outHeight * stride);
  const acc = new Float64Array(stride);
  const s = src.data;
  for (let y = 0; y < outHeight; y++) {
    acc.fill(HALF);
    const k0 = y * taps;
    const n = count[y];
    const top = first[y] - firstRow;
    for (let j = 0; j < n; j++) {
      const w = weights[k0 + j];
      const rowStart = (top + j) * stride;
      for (let i = 0; i < stride; i++) acc[i] += s[rowStart + i] * w;
    }
    const outRow = y * stride;
    for (let i = 0; i < stride; i++) out[outRow + i] = toUint8(acc[i]);
  }
  return { data: out, width: src.width, height: outHeight };
}

/** Resize like Pillow's `Image.resize((width, height), Image.BICUBIC)` on an RGB image. */
export function resizeBicubic(src: RgbImage, width: number, height: number): RgbImage {
  for (const [name, v] of [['width', width], ['height', height]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw usageError(`resize ${name} must be a positive integer, got ${v}`);
  }
  if (src.data.length !== src.width * src.height * 3) {
    throw usageError(`RGB buffer has ${src.data.length} bytes, expected ${src.width}x${src.height}x3`);
  }
  const needHorizontal = width !== src.width;
  const needVertical = height !== src.height;
  if (!needHorizontal && !needVertical) {
    return { data: Uint8Array.from(src.data), width, height };
  }
  const vertical = needVertical ? axisWeights(src.height, height) : undefined;
  let image = src;
  let firstRow = 0;
  if (needHorizontal) {
    // Only the input rows that the vertical pass will read need the horizontal pass.
    let rowStart = 0;
    let rowEnd = src.height;
    if (vertical) {
      rowStart = vertical.first[0];
      rowEnd = vertical.first[height - 1] + vertical.count[height - 1];
    }
    image = resampleRows(src, rowStart, rowEnd - rowStart, width, axisWeights(src.width, width));
    firstRow = rowStart;
  }
  if (vertical) image = resampleColumns(image, firstRow, height, vertical);
  return image;
}
