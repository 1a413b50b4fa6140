/**
 * Image tokens of DiffusionVL-Qwen (SigLIP tower + anyres tiling + `spatial_unpad`), spec
 * diffusionvl-qwen.md §5: from the projected features of an image's crops to the rows of embeddings that
 * replace its `<image>` placeholder.
 *
 * One image (`anyres_max_N`): the base crop's 729 features, then the tiles laid out as one feature map,
 * unpadded back to the original aspect ratio, bilinearly shrunk when it holds more than about 1.21·N crops'
 * worth of tokens, with `image_newline` after every row. Several images (`pad`): 729 features + 1 newline.
 *
 * Everything here is plain float32/double arithmetic in a fixed order: deterministic, no threads.
 * Feature maps are channels-last, `[rows, cols, D]` row-major, because features come per token.
 */

/** Columns and rows of the tile grid (the best-resolution pinpoint divided by the crop size). */
export interface TileGrid {
  cols: number;
  rows: number;
}

/**
 * Python's float floor division `a // t`, exactly as CPython computes it (`float_floor_div`, via
 * `_float_div_mod` in Objects/floatobject.c):
 *
 *   mod = fmod(a, t); div = (a - mod) / t;
 *   if mod != 0 and sign(mod) != sign(t): mod += t, div -= 1;
 *   q = floor(div), plus one if div - q > 0.5   (snap to the nearest integer, halves down);
 *   q = ±0 with the sign of a / t when div == 0.
 *
 * This is the floor of the *exact* quotient of the two doubles (for moderate quotients), which is not
 * `Math.floor(a / t)`: `a / t` is rounded first and can land on the next integer (`1 // 0.1` is 9,
 * `Math.floor(1 / 0.1)` is 10). JS `%` on numbers is C's `fmod` (exact, sign of the dividend).
 * Division by zero raises ZeroDivisionError in Python; here a RangeError.
 */
export function pythonFloorDiv(a: number, t: number): number {
  if (t === 0) throw new RangeError('float floor division by zero');
  let mod = a % t;
  let div = (a - mod) / t;
  if (mod !== 0) {
    // `mod !== 0` is also true for NaN, as C's `if (mod)` is.
    if (t < 0 !== mod < 0) {
      mod += t;
      div -= 1;
    }
  }
  if (div !== 0) {
    let q = Math.floor(div);
    if (div - q > 0.5) q += 1;
    return q;
  }
  const quotient = a / t;
  return quotient < 0 || Object.is(quotient, -0) ? -0 : 0;
}

/**
 * What `unpad_image` keeps of a `mapH × mapW` feature map of an image that was `origW × origH` pixels
 * (spec §5.2, upstream llava_arch.py): the map was made from the image scaled to fit the pinpoint and
 * centred on a black canvas, so the padded bands are cut off again.
 *
 * Padding was added to the height when `origW / origH > mapW / mapH` (doubles): `nh = trunc(origH ·
 * (mapW / origW))`, `p = (mapH − nh) // 2`, rows `p .. mapH − p − 1` are kept (`mapH − 2p` of them, one
 * more than `nh` when `mapH − nh` is odd). Otherwise the same on the width. `top`/`bottom`/`left`/`right`
 * are how many rows/columns are cut on each side; `rows`/`cols` what remains (rows `top .. top + rows − 1`).
 */
export interface UnpadShape {
  top: number;
  bottom: number;
  left: number;
  right: number;
  rows: number;
  cols: number;
}

export function unpadShape(origW: number, origH: number, mapW: number, mapH: number): UnpadShape {
  for (const [name, v] of [
    ['origW', origW],
    ['origH', origH],
    ['mapW', mapW],
    ['mapH', mapH],
  ] as const) {
    if (!Number.isInteger(v) || v <= 0) {
      throw new RangeError(`unpadShape: ${name} must be a positive integer, got ${v}`);
    }
  }
  if (origW / origH > mapW / mapH) {
    const newHeight = Math.trunc(origH * (mapW / origW));
    const p = Math.floor((mapH - newHeight) / 2);
    const [start, stop] = pythonSlice(p, mapH - p, mapH);
    return { top: start, bottom: mapH - stop, left: 0, right: 0, rows: stop - start, cols: mapW };
  }
  const newWidth = Math.trunc(origW * (mapH / origH));
  const p = Math.floor((mapW - newWidth) / 2);
  const [start, stop] = pythonSlice(p, mapW - p, mapW);
  return { top: 0, bottom: 0, left: start, right: mapW - stop, rows: mapH, cols: stop - start };
}

/**
 * Bounds of the Python slice `[start:stop]` on a sequence of length n, as [first, end) with end ≥ first.
 * With `p = (n − nh) // 2` and 0 ≤ nh ≤ n (always, in exact arithmetic) this is just [p, n − p); the
 * general form only guards against a negative p, which Python would count from the end.
 */
function pythonSlice(start: number, stop: number, n: number): [number, number] {
  const clamp = (i: number) => (i < 0 ? Math.max(0, n + i) : Math.min(i, n));
  const first = clamp(start);
  return [first, Math.max(first, clamp(stop))];
}

/**
 * How the source coordinate of a bilinear tap is computed.
 * - `double` (default; the spec's wording, §5.3): `s = ratio·(d + 0.5) − 0.5` in double, `λ1 = float32(s − i0)`.
 * - `float32`: PyTorch's `area_pixel_compute_source_index<float>` as written in current sources: every
 *   operation rounded to float32 (`d + 0.5f`, the product, the subtraction), `λ1 = s − i0` (exact).
 * - `fma`: the same when the compiler contracts `ratio·x − 0.5f` into one fused multiply-add (GCC does
 *   for the AVX2/AVX512 builds of ATen's CPU kernels): `s = float32(exact ratio·(d + 0.5) − 0.5)`.
 * The three agree to a few float32 ulps of λ; `ratio = float32(in / out)` in all of them.
 */
export type SourceIndexMath = 'double' | 'float32' | 'fma';

/**
 * Order of the float32 combination of the four taps.
 * - `generic` (default; spec §5.3, ATen's `upsample_generic_Nd_kernel_impl`):
 *   `λ0h·(λ0w·v00 + λ1w·v01) + λ1h·(λ0w·v10 + λ1w·v11)`.
 * - `channels-last` (ATen's `cpu_upsample_linear_channels_last`, vectorised path): weights
 *   `wij = λih·λjw` first, then `v00·w00 + (v01·w01 + (v10·w10 + v11·w11))`.
 * - `auto`: what ATen's CPU `upsample_bilinear2d` picks for an NCHW float input: `channels-last` when
 *   `outH + outW ≤ 128` (`_use_vectorized_kernel_cond_2d`), else `generic`.
 */
export type CombineOrder = 'generic' | 'channels-last' | 'auto';

export interface BilinearOptions {
  sourceIndex?: SourceIndexMath;
  order?: CombineOrder;
}

/** The two taps and weights of every output index along one axis. */
interface AxisTaps {
  i0: Int32Array;
  i1: Int32Array;
  l0: Float32Array;
  l1: Float32Array;
}

/**
 * Taps of `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` along one axis, output
 * size given (no scale factor): `ratio = float32(in / out)`; for each output index d the source
 * `s = max(ratio·(d + 0.5) − 0.5, 0)`, `i0 = min(trunc(s), in − 1)`, `i1 = min(i0 + 1, in − 1)`,
 * `λ1 = clamp(s − i0, 0, 1)` as float32, `λ0 = float32(1 − λ1)`. An axis whose size does not change is
 * copied (ATen's `compute_source_index_and_lambda` special case): `i0 = i1 = d`, `λ0 = 1`, `λ1 = 0`.
 */
function axisTaps(inSize: number, outSize: number, math: SourceIndexMath): AxisTaps {
  const taps: AxisTaps = {
    i0: new Int32Array(outSize),
    i1: new Int32Array(outSize),
    l0: new Float32Array(outSize),
    l1: new Float32Array(outSize),
  };
  const f = Math.fround;
  // in and out are exact in float32, and a double quotient rounded to float32 is the float32 quotient.
  const ratio = f(inSize / outSize);
  for (let d = 0; d < outSize; d++) {
    if (inSize === outSize) {
      taps.i0[d] = d;
      taps.i1[d] = d;
      taps.l0[d] = 1;
      taps.l1[d] = 0;
      continue;
    }
    let s: number;
    if (math === 'double') s = ratio * (d + 0.5) - 0.5;
    else if (math === 'float32') s = f(f(ratio * f(d + 0.5)) - 0.5);
    // The double expression is exact here (a 24-bit ratio times a short d + 0.5, minus 0.5), so one
    // rounding to float32 is what a fused multiply-add gives.
    else s = f(ratio * (d + 0.5) - 0.5);
    if (s < 0) s = 0;
    const i0 = Math.min(Math.trunc(s), inSize - 1);
    const l1 = f(Math.min(Math.max(s - i0, 0), 1));
    taps.i0[d] = i0;
    taps.i1[d] = i0 < inSize - 1 ? i0 + 1 : i0;
    taps.l1[d] = l1;
    taps.l0[d] = f(1 - l1);
  }
  return taps;
}

/**
 * A feature map read in place: the value of channel k at (r, c) is `data[rowOffset[r] + colOffset[c] + k]`.
 * This lets the tiled map of crops be resized without first copying it into one array.
 */
interface MapView {
  data: Float32Array;
  rows: number;
  cols: number;
  rowOffset: ArrayLike<number>;
  colOffset: ArrayLike<number>;
}

/**
 * Resizes `src` to `outH × outW` into `dst`: output pixel (r, c) goes to
 * `dst[dstOffset + r·dstRowStride + c·channels ..]`.
 */
function resizeInto(
  src: MapView,
  channels: number,
  outH: number,
  outW: number,
  dst: Float32Array,
  dstOffset: number,
  dstRowStride: number,
  options: BilinearOptions,
): void {
  if (outH <= 0 || outW <= 0 || !Number.isInteger(outH) || !Number.isInteger(outW)) {
    // torch: "Input and output sizes should be greater than 0".
    throw new RangeError(`bilinear resize: output size must be positive integers, got ${outH}×${outW}`);
  }
  const math = options.sourceIndex ?? 'double';
  const orderOption = options.order ?? 'generic';
  const order = orderOption === 'auto' ? (outH + outW <= 128 ? 'channels-last' : 'generic') : orderOption;
  const th = axisTaps(src.rows, outH, math);
  const tw = axisTaps(src.cols, outW, math);
  const f = Math.fround;
  const v = src.data;
  for (let r = 0; r < outH; r++) {
    const row0 = src.rowOffset[th.i0[r]];
    const row1 = src.rowOffset[th.i1[r]];
    const h0 = th.l0[r];
    const h1 = th.l1[r];
    for (let c = 0; c < outW; c++) {
      const col0 = src.colOffset[tw.i0[c]];
      const col1 = src.colOffset[tw.i1[c]];
      const w0 = tw.l0[c];
      const w1 = tw.l1[c];
      const p00 = row0 + col0;
      const p01 = row0 + col1;
      const p10 = row1 + col0;
      const p11 = row1 + col1;
      const out = dstOffset + r * dstRowStride + c * channels;
      // Products of two float32 are exact in double and a double sum of two float32 rounded to float32 is
      // the float32 sum, so Math.fround after each operation is float32 arithmetic.
      if (order === 'generic') {
        for (let k = 0; k < channels; k++) {
          const top = f(f(w0 * v[p00 + k]) + f(w1 * v[p01 + k]));
          const bottom = f(f(w0 * v[p10 + k]) + f(w1 * v[p11 + k]));
          dst[out + k] = f(h0 * top) + f(h1 * bottom);
        }
      } else {
        const w00 = f(h0 * w0);
        const w01 = f(h0 * w1);
        const w10 = f(h1 * w0);
        const w11 = f(h1 * w1);
        for (let k = 0; k < channels; k++) {
          const low = f(f(v[p10 + k] * w10) + f(v[p11 + k] * w11));
          const mid = f(f(v[p01 + k] * w01) + low);
          dst[out + k] = f(v[p00 + k] * w00) + mid;
        }
      }
    }
  }
}

function checkDims(what: string, dims: Record<string, number>): void {
  for (const [name, value] of Object.entries(dims)) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new RangeError(`${what}: ${name} must be a positive integer, got ${value}`);
    }
  }
}

/**
 * Bilinear resize of a channels-last map `[h, w, channels]` to `[outH, outW, channels]` as PyTorch's CPU
 * `upsample_bilinear2d` with `align_corners=False`, no antialias, output size given (see `axisTaps` for the
 * taps and `CombineOrder` for the float32 combination). The defaults are the spec's §5.3 formula.
 */
export function bilinearResize(
  map: Float32Array,
  h: number,
  w: number,
  channels: number,
  outH: number,
  outW: number,
  options: BilinearOptions = {},
): Float32Array {
  checkDims('bilinearResize', { h, w, channels, outH, outW });
  if (map.length !== h * w * channels) {
    throw new RangeError(`bilinearResize: map has ${map.length} values, expected ${h}×${w}×${channels}`);
  }
  const rowOffset = Array.from({ length: h }, (_, r) => r * w * channels);
  const colOffset = Array.from({ length: w }, (_, c) => c * channels);
  const out = new Float32Array(outH * outW * channels);
  const view: MapView = { data: map, rows: h, cols: w, rowOffset, colOffset };
  resizeInto(view, channels, outH, outW, out, 0, outW * channels, options);
  return out;
}

/** The shape of one image's anyres tokens, known before any feature is computed. */
export interface ImageTokenPlan {
  /** The tiled map before unpadding: `grid.rows·tokensPerSide × grid.cols·tokensPerSide`. */
  mapRows: number;
  mapCols: number;
  unpad: UnpadShape;
  /** `sqrt(rows·cols / (N·tokensPerSide²))` of the unpadded map. */
  times: number;
  downsampled: boolean;
  /** The map that gets newlines: the unpadded map, or its downsampled size `(rows // times, cols // times)`. */
  rows: number;
  cols: number;
  /** tokensPerSide² base tokens + rows·(cols + 1). */
  tokens: number;
}

export function planImageTokens(
  origW: number,
  origH: number,
  grid: TileGrid,
  maxTiles: number,
  tokensPerSide = 27,
): ImageTokenPlan {
  checkDims('planImageTokens', { origW, origH, cols: grid.cols, rows: grid.rows, maxTiles, tokensPerSide });
  const mapRows = grid.rows * tokensPerSide;
  const mapCols = grid.cols * tokensPerSide;
  const unpad = unpadShape(origW, origH, mapCols, mapRows);
  // Python: h * w / (N * unit**2) is a true division of two ints (correctly rounded, as here).
  const times = Math.sqrt((unpad.rows * unpad.cols) / (maxTiles * tokensPerSide * tokensPerSide));
  const downsampled = times > 1.1;
  const rows = downsampled ? pythonFloorDiv(unpad.rows, times) : unpad.rows;
  const cols = downsampled ? pythonFloorDiv(unpad.cols, times) : unpad.cols;
  if (downsampled && (rows <= 0 || cols <= 0)) {
    throw new RangeError(`image tokens: the ${unpad.rows}×${unpad.cols} map would shrink to ${rows}×${cols}`);
  }
  return {
    mapRows,
    mapCols,
    unpad,
    times,
    downsampled,
    rows,
    cols,
    tokens: tokensPerSide * tokensPerSide + rows * (cols + 1),
  };
}

/** Number of image tokens one `anyres_max_N` image gives (spec §5.5), without any features. */
export function imageTokenCount(
  origW: number,
  origH: number,
  grid: TileGrid,
  maxTiles: number,
  tokensPerSide = 27,
): number {
  return planImageTokens(origW, origH, grid, maxTiles, tokensPerSide).tokens;
}

export interface AssembleOptions {
  origW: number;
  origH: number;
  grid: TileGrid;
  tokensPerSide: number;
  hidden: number;
  /** N of `anyres_max_N`. */
  maxTiles: number;
  /** `model.image_newline`, [hidden]. */
  newline: Float32Array;
  /** How to do the downsampling; the defaults are the spec's formula. */
  resize?: BilinearOptions;
}

/**
 * The image tokens of one `anyres_max_N` image, `[T, hidden]` with T = `imageTokenCount(...)`.
 *
 * `crops` is `[1 + cols·rows, tokensPerSide², hidden]`: crop 0 is the base image, crop `1 + r·cols + c`
 * the tile at grid row r, column c (tiles in raster order). The tiles form one map of
 * `rows·tokensPerSide × cols·tokensPerSide` tokens (tile (r, c) at map rows `r·tps..`, columns `c·tps..`);
 * the map is unpadded, bilinearly shrunk to `(rows // t, cols // t)` when `t > 1.1`, and gets `newline`
 * after every row; the base crop's tokens come first, without a newline.
 *
 * The map is read in place from `crops`: nothing is allocated but the result.
 */
export function assembleImageTokens(crops: Float32Array, options: AssembleOptions): Float32Array {
  const { origW, origH, grid, tokensPerSide: tps, hidden: D, maxTiles, newline } = options;
  checkDims('assembleImageTokens', { hidden: D });
  const plan = planImageTokens(origW, origH, grid, maxTiles, tps);
  const perCrop = tps * tps;
  const numCrops = 1 + grid.cols * grid.rows;
  if (crops.length !== numCrops * perCrop * D) {
    throw new RangeError(
      `assembleImageTokens: crops has ${crops.length} values, expected ${numCrops} crops × ${perCrop} tokens × ${D}`,
    );
  }
  if (newline.length !== D) {
    throw new RangeError(`assembleImageTokens: newline has ${newline.length} values, expected ${D}`);
  }

  const { unpad } = plan;
  // Element offset of map row (top + r) and map column (left + c) inside `crops`.
  const rowOffset = new Float64Array(unpad.rows);
  for (let r = 0; r < unpad.rows; r++) {
    const mr = unpad.top + r;
    const tileRow = Math.floor(mr / tps);
    rowOffset[r] = (perCrop * (1 + tileRow * grid.cols) + (mr % tps) * tps) * D;
  }
  const colOffset = new Float64Array(unpad.cols);
  for (let c = 0; c < unpad.cols; c++) {
    const mc = unpad.left + c;
    colOffset[c] = (perCrop * Math.floor(mc / tps) + (mc % tps)) * D;
  }

  const out = new Float32Array(plan.tokens * D);
  out.set(crops.subarray(0, perCrop * D), 0);
  const base = perCrop * D;
  const rowStride = (plan.cols + 1) * D;
  if (plan.downsampled) {
    const view: MapView = { data: crops, rows: unpad.rows, cols: unpad.cols, rowOffset, colOffset };
    resizeInto(view, D, plan.rows, plan.cols, out, base, rowStride, options.resize ?? {});
  } else {
    for (let r = 0; r < plan.rows; r++) {
      for (let c = 0; c < plan.cols; c++) {
        const from = rowOffset[r] + colOffset[c];
        out.set(crops.subarray(from, from + D), base + r * rowStride + c * D);
      }
    }
  }
  for (let r = 0; r < plan.rows; r++) out.set(newline, base + r * rowStride + plan.cols * D);
  return out;
}

/**
 * The tokens of one image in `pad` mode (several images per prompt): its single crop's features, then
 * one `newline` — `[729 + 1, hidden]` for a 729-token crop.
 */
export function padImageTokens(features: Float32Array, newline: Float32Array): Float32Array {
  const D = newline.length;
  if (D === 0 || features.length === 0 || features.length % D !== 0) {
    throw new RangeError(`padImageTokens: ${features.length} feature values are not whole rows of ${D}`);
  }
  const out = new Float32Array(features.length + D);
  out.set(features, 0);
  out.set(newline, features.length);
  return out;
}
