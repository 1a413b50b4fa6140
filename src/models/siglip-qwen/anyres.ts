/**
 * Image preprocessing of DiffusionVL-Qwen (SigLIP tower, LLaVA-OneVision style): `anyres_max_N` tiling for a
 * single image and `pad` for several, then the SigLIP image processor's normalisation
 * (docs: diffusionvl-qwen.md §2; reference: hustvl/DiffusionVL `train/llava/mm_utils.py` and
 * `train/llava/model/multimodal_encoder/siglip_encoder.py`). Our own implementation of that behaviour:
 *
 * - Best resolution: among the pinpoints (W, H), in list order, maximise
 *   `effective = min(trunc(w·s)·trunc(h·s), w·h)` with `s = min(W/w, H/h)`, then minimise `W·H − effective`;
 *   a full tie keeps the earlier one. Everything is computed literally in double arithmetic, as Python does:
 *   `trunc(w·(W/w))` can be `W − 1` (w = 47, W = 384), and that changes the pick for some inputs.
 * - Resize and pad: the image is resized (Pillow bicubic) to fill one side of W×H exactly, the other side
 *   `min(ceil(side·scale), limit)`, and pasted on a black canvas at `((W − nw) // 2, (H − nh) // 2)`; the canvas
 *   is cut into S×S tiles, row by row. The crop list is `[base, tile_0, …]` where the base is the original image
 *   resized to S×S directly (aspect ratio not kept).
 * - Pad mode: the image is pasted on a square canvas of side `max(w, h)` filled with (127, 127, 127)
 *   (`int(0.5 · 255)`), centred along the short side, then resized to S×S.
 * - The processor's own resize to S×S is a no-op for all of these (Pillow copies when the size is unchanged), so
 *   only the normalisation remains: `float32(u8 · (1/255))` (product in double), then `(x − 0.5) / 0.5` in
 *   float32, channels first.
 *
 * Memory: crops stay uint8 (at most 37 × 384 × 384 × 3 bytes ≈ 16 MB); callers normalise one crop at a time into
 * their own float buffer with `normalizeCrop`.
 */
import { resizeBicubic, type RgbImage } from '../../preprocess/pillow-bicubic.js';
import { modelError } from '../../util/errors.js';

/** The SigLIP image processor's crop size (`size`, `crop_size`, `shortest_edge`): a constant of the processor. */
export const SIGLIP_CROP_SIZE = 384;
/** Fill of the pad-mode canvas: `int(image_mean · 255)` with mean 0.5. */
export const SIGLIP_PAD_FILL = 127;
/** SigLIP normalisation: mean = std = 0.5 on every channel (not the CLIP constants). */
export const SIGLIP_MEAN = 0.5;
export const SIGLIP_STD = 0.5;
export const SIGLIP_RESCALE_FACTOR = 1 / 255;

/** A (width, height) pair. */
export type Resolution = [number, number];

const isPositiveInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v > 0;

function checkCropSize(cropSize: number): void {
  if (!isPositiveInt(cropSize)) throw modelError(`crop size must be a positive integer, got ${cropSize}`);
}

function checkImageSize(width: number, height: number): void {
  if (!isPositiveInt(width) || !isPositiveInt(height)) {
    throw new RangeError(`image size must be positive integers, got ${width}x${height}`);
  }
}

/** Checks one pinpoint: two positive integers, each a multiple of the crop size (otherwise the tiles would not
 * line up with the feature grid, which the reference builds with `W // S` × `H // S` and then fails to reshape). */
function checkPinpoint(pair: unknown, index: number, cropSize: number): Resolution {
  const show = () => JSON.stringify(pair) ?? String(pair);
  if (!Array.isArray(pair) || pair.length !== 2 || !isPositiveInt(pair[0]) || !isPositiveInt(pair[1])) {
    throw modelError(
      `image_grid_pinpoints[${index}] must be a [width, height] pair of positive integers, got ${show()}`,
    );
  }
  if (pair[0] % cropSize !== 0 || pair[1] % cropSize !== 0) {
    throw modelError(`image_grid_pinpoints[${index}] = ${show()} is not a multiple of the crop size ${cropSize}`);
  }
  return [pair[0], pair[1]];
}

function checkPinpoints(list: unknown, cropSize: number, what: string): Resolution[] {
  if (!Array.isArray(list) || list.length === 0) {
    throw modelError(`image_grid_pinpoints must be a non-empty list of [width, height] pairs, got ${what}`);
  }
  return list.map((pair, i) => checkPinpoint(pair, i, cropSize));
}

/**
 * `image_grid_pinpoints` from config.json as a list of [width, height] pairs.
 *
 * Accepted forms, as the reference reads them:
 * - a list of pairs (`[[384, 384], [384, 768], …]`);
 * - a string containing `x`: the `(AxB)` groups in it are found, and only the first and the last count: they
 *   give the ranges `i = A_first..A_last` (outer loop) and `j = B_first..B_last` (inner), each pair becoming
 *   `[i·S, j·S]`. So `"(1x1),...,(6x6)"` is the 36 pairs `[384·i, 384·j]` with i outer, and the groups in between
 *   are ignored;
 * - any other string: a Python literal of a list of pairs (`"[(384, 768), (768, 384)]"`).
 *
 * Throws `modelError` for anything else, for an empty expansion, and for sizes that are not positive multiples
 * of the crop size.
 */
export function parseGridPinpoints(value: unknown, cropSize: number = SIGLIP_CROP_SIZE): Resolution[] {
  checkCropSize(cropSize);
  if (Array.isArray(value)) return checkPinpoints(value, cropSize, 'an empty list');
  if (typeof value !== 'string') {
    throw modelError(`image_grid_pinpoints must be a list of [width, height] pairs or a string, got ${typeof value}`);
  }
  if (value.includes('x')) {
    const groups = [...value.matchAll(/\((\d+)x(\d+)\)/g)];
    if (groups.length === 0) {
      throw modelError(`image_grid_pinpoints ${JSON.stringify(value)} has no "(AxB)" group`);
    }
    const [, a0, b0] = groups[0];
    const [, a1, b1] = groups[groups.length - 1];
    const [i0, j0, i1, j1] = [a0, b0, a1, b1].map(Number);
    if (![i0, j0, i1, j1].every(Number.isSafeInteger) || i0 < 1 || j0 < 1) {
      throw modelError(`image_grid_pinpoints ${JSON.stringify(value)}: tile counts must be positive integers`);
    }
    const pairs: Resolution[] = [];
    for (let i = i0; i <= i1; i++) {
      for (let j = j0; j <= j1; j++) pairs.push([i * cropSize, j * cropSize]);
    }
    if (pairs.length === 0) {
      throw modelError(
        `image_grid_pinpoints ${JSON.stringify(value)} expands to no resolution (last group below the first)`,
      );
    }
    return checkPinpoints(pairs, cropSize, 'nothing');
  }
  // A Python literal such as "[(384, 768), (768, 384)]" or "[[384, 768],]": tuples become lists, trailing
  // commas go, then it must be JSON.
  const json = value.replace(/\(/g, '[').replace(/\)/g, ']').replace(/,\s*\]/g, ']');
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw modelError(`image_grid_pinpoints ${JSON.stringify(value)} is neither "(AxB),..." nor a list of pairs`);
  }
  return checkPinpoints(parsed, cropSize, JSON.stringify(value));
}

/**
 * The pinpoint the image is resized and padded to (reference `select_best_resolution`), computed literally in
 * double arithmetic: largest effective resolution, then the smallest waste, then the earliest.
 */
export function selectBestResolution(width: number, height: number, pinpoints: readonly Resolution[]): Resolution {
  checkImageSize(width, height);
  let best: Resolution | undefined;
  let maxEffective = 0;
  let minWasted = Infinity;
  for (const [W, H] of pinpoints) {
    const scale = Math.min(W / width, H / height);
    const downW = Math.trunc(width * scale);
    const downH = Math.trunc(height * scale);
    // Integer products: exact in doubles for any realistic size (< 2^53).
    const effective = Math.min(downW * downH, width * height);
    const wasted = W * H - effective;
    if (effective > maxEffective || (effective === maxEffective && wasted < minWasted)) {
      maxEffective = effective;
      minWasted = wasted;
      best = [W, H];
    }
  }
  if (!best) throw modelError('image_grid_pinpoints is empty');
  return best;
}

/** `anyres_max_N` → N; `anyres`, or anything else without a leading `anyres_max_<digits>`, → null (no cap).
 * Like the reference's `re.match`, only the start must match (`anyres_max_4x` → 4). N = 0 would divide by zero
 * in the reference and is rejected. */
export function anyresMaxFromAspect(imageAspectRatio: string): number | null {
  const m = /^anyres_max_(\d+)/.exec(imageAspectRatio);
  if (!m) return null;
  const n = Number(m[1]);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw modelError(`image_aspect_ratio ${JSON.stringify(imageAspectRatio)}: the maximum must be a positive integer`);
  }
  return n;
}

/** Whether `image_aspect_ratio` selects anyres tiling for a single image (reference `process_images`:
 * exactly `anyres`, or containing `anyres_max` anywhere). */
export function isAnyresAspect(imageAspectRatio: string): boolean {
  return imageAspectRatio === 'anyres' || imageAspectRatio.includes('anyres_max');
}

/** Size and position of the resized image on the W×H canvas (reference `resize_and_pad_image`). */
export interface PadLayout {
  width: number;
  height: number;
  x: number;
  y: number;
}

export function resizeAndPadLayout(width: number, height: number, target: Resolution): PadLayout {
  checkImageSize(width, height);
  const [W, H] = target;
  const scaleW = W / width;
  const scaleH = H / height;
  let nw: number;
  let nh: number;
  if (scaleW < scaleH) {
    nw = W;
    nh = Math.min(Math.ceil(height * scaleW), H);
  } else {
    nh = H;
    nw = Math.min(Math.ceil(width * scaleH), W);
  }
  return { width: nw, height: nh, x: Math.floor((W - nw) / 2), y: Math.floor((H - nh) / 2) };
}

/** Tile grid for an image (reference `get_anyres_image_grid_shape`): `cols = W / S`, `rows = H / S`. */
export function anyresGrid(
  width: number,
  height: number,
  pinpoints: readonly Resolution[],
  cropSize: number = SIGLIP_CROP_SIZE,
): { cols: number; rows: number; best: Resolution } {
  checkCropSize(cropSize);
  const best = selectBestResolution(width, height, pinpoints);
  const [W, H] = best;
  if (W % cropSize !== 0 || H % cropSize !== 0) {
    throw modelError(`grid pinpoint ${W}x${H} is not a multiple of the crop size ${cropSize}`);
  }
  return { cols: W / cropSize, rows: H / cropSize, best };
}

export interface AnyresCrops {
  /** Tiles per row (`cols`) and tile rows (`rows`) of the padded canvas. */
  grid: { cols: number; rows: number };
  /** The chosen pinpoint (W, H). */
  best: Resolution;
  /** Where the resized image sits on the canvas. */
  layout: PadLayout;
  /** `[base, tile_0, …, tile_{cols·rows−1}]`, each S×S; tiles row-major (left to right, then top to bottom). */
  crops: RgbImage[];
}

/**
 * The `anyres` crops of one RGB image (reference `process_anyres_image` up to the processor): base image, then
 * the tiles of the resized-and-padded canvas. Tiles are cut straight from the resized image (the black canvas
 * is never materialised); the bytes are those of Pillow's paste + crop.
 */
export function cropsForImage(
  rgb: RgbImage,
  pinpoints: readonly Resolution[],
  cropSize: number = SIGLIP_CROP_SIZE,
): AnyresCrops {
  const { cols, rows, best } = anyresGrid(rgb.width, rgb.height, pinpoints, cropSize);
  const layout = resizeAndPadLayout(rgb.width, rgb.height, best);
  const resized = resizeBicubic(rgb, layout.width, layout.height);
  const S = cropSize;
  const crops: RgbImage[] = [resizeBicubic(rgb, S, S)];
  const srcStride = layout.width * 3;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const data = new Uint8Array(S * S * 3); // black
      // Canvas columns [c·S, c·S + S) ∩ [x, x + nw), as source columns.
      const x0 = Math.max(c * S, layout.x);
      const x1 = Math.min(c * S + S, layout.x + layout.width);
      if (x1 > x0) {
        for (let ty = 0; ty < S; ty++) {
          const sy = r * S + ty - layout.y;
          if (sy < 0 || sy >= layout.height) continue;
          const from = sy * srcStride + (x0 - layout.x) * 3;
          data.set(resized.data.subarray(from, from + (x1 - x0) * 3), (ty * S + (x0 - c * S)) * 3);
        }
      }
      crops.push({ data, width: S, height: S });
    }
  }
  return { grid: { cols, rows }, best, layout, crops };
}

/** Square canvas and paste position of pad mode (reference `expand2square`). */
export function padLayout(width: number, height: number): { side: number; x: number; y: number } {
  checkImageSize(width, height);
  if (width === height) return { side: width, x: 0, y: 0 };
  if (width > height) return { side: width, x: 0, y: Math.floor((width - height) / 2) };
  return { side: height, x: Math.floor((height - width) / 2), y: 0 };
}

/** The single crop of pad mode: the image centred on a (127, 127, 127) square, resized to S×S. */
export function padCrop(rgb: RgbImage, cropSize: number = SIGLIP_CROP_SIZE): RgbImage {
  checkCropSize(cropSize);
  const { side, x, y } = padLayout(rgb.width, rgb.height);
  if (rgb.data.length !== rgb.width * rgb.height * 3) {
    throw new RangeError(`RGB buffer has ${rgb.data.length} bytes, expected ${rgb.width}x${rgb.height}x3`);
  }
  let square = rgb;
  if (side !== rgb.width || side !== rgb.height) {
    const data = new Uint8Array(side * side * 3).fill(SIGLIP_PAD_FILL);
    const stride = rgb.width * 3;
    for (let row = 0; row < rgb.height; row++) {
      data.set(rgb.data.subarray(row * stride, row * stride + stride), ((row + y) * side + x) * 3);
    }
    square = { data, width: side, height: side };
  }
  return resizeBicubic(square, cropSize, cropSize);
}

let table: Float32Array | undefined;

/** `table[v]` = the processor's float32 value for byte v: `(float32(v · (1/255)) − 0.5) / 0.5` in float32. */
export function siglipNormalisationTable(): Float32Array {
  if (!table) {
    table = new Float32Array(256);
    const mean = Math.fround(SIGLIP_MEAN);
    const std = Math.fround(SIGLIP_STD);
    for (let v = 0; v < 256; v++) {
      const rescaled = Math.fround(v * SIGLIP_RESCALE_FACTOR); // float64 product, then cast to float32
      // A double operation on float32 inputs, rounded once to float32, is the float32 operation.
      table[v] = Math.fround(Math.fround(rescaled - mean) / std);
    }
  }
  return table;
}

/**
 * Writes one crop, normalised, channels first (`[3, h, w]`), into `out` from `offset`: `3·w·h` values. The crop
 * is taken as it is (the crops made here are already S×S, where the processor's resize does nothing).
 */
export function normalizeCrop(crop: RgbImage, out: Float32Array, offset: number): void {
  const plane = crop.width * crop.height;
  if (crop.data.length !== plane * 3) {
    throw new RangeError(`RGB buffer has ${crop.data.length} bytes, expected ${crop.width}x${crop.height}x3`);
  }
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + 3 * plane > out.length) {
    throw new RangeError(`normalizeCrop: ${3 * plane} values at offset ${offset} do not fit in ${out.length}`);
  }
  const t = siglipNormalisationTable();
  const d = crop.data;
  const r = offset;
  const g = offset + plane;
  const b = offset + 2 * plane;
  for (let i = 0, p = 0; i < plane; i++, p += 3) {
    out[r + i] = t[d[p]];
    out[g + i] = t[d[p + 1]];
    out[b + i] = t[d[p + 2]];
  }
}
