/**
 * `smart_resize` of the transformers Qwen2-VL image processor (the slow, PIL-based one that DiffusionVL
 * trained and evaluated with: transformers 4.55, `use_fast=False`).
 *
 * It picks the size the image is resized to before patching: both sides multiples of `factor`
 * (patch 14 x merge 2 = 28), the area inside [minPixels, maxPixels], the aspect ratio kept as well as
 * that allows. The arithmetic is IEEE double, like Python's floats, and is done in the same order as the
 * reference so that the same sizes come out, including Python's round-half-to-even.
 *
 * Behaviour of that transformers version, reproduced on purpose:
 * - there is no lower bound on the input size: a side that rounds to 0 multiples of 28 (an image smaller
 *   than 14 pixels) gets a 0-area estimate, which is below any positive minPixels, so the image is scaled
 *   up through the min branch;
 * - the max branch clamps each side to at least `factor`, so a very thin image can end up slightly above
 *   maxPixels; the min branch has no upper clamp, so an extreme aspect ratio can end up above maxPixels;
 * - an aspect ratio above 200 is an error.
 */
import { inputError, usageError } from '../../util/errors.js';

export interface SmartResizeOptions {
  /** Side multiple; 28 = patch size 14 x spatial merge 2. */
  factor?: number;
  minPixels: number;
  maxPixels: number;
}

export interface Size {
  height: number;
  width: number;
}

/** Largest accepted max(h, w) / min(h, w), as in the reference. */
export const MAX_ASPECT_RATIO = 200;

/** Python 3's `round(x)` for a float: nearest integer, ties to the even one. */
export function roundHalfToEven(x: number): number {
  const lower = Math.floor(x);
  const fraction = x - lower; // exact for the magnitudes used here
  if (fraction > 0.5) return lower + 1;
  if (fraction < 0.5) return lower;
  return lower % 2 === 0 ? lower : lower + 1;
}

function checkPositiveInteger(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw usageError(`${name} must be a positive integer, got ${value}`);
  }
}

export function smartResize(height: number, width: number, options: SmartResizeOptions): Size {
  const factor = options.factor ?? 28;
  const { minPixels, maxPixels } = options;
  checkPositiveInteger('factor', factor);
  checkPositiveInteger('min pixels', minPixels);
  checkPositiveInteger('max pixels', maxPixels);
  if (minPixels > maxPixels) {
    throw usageError(`min pixels (${minPixels}) must not exceed max pixels (${maxPixels})`);
  }
  if (!Number.isSafeInteger(height) || !Number.isSafeInteger(width) || height < 1 || width < 1) {
    throw inputError(`image size ${width}x${height} is not a positive size`);
  }
  const ratio = Math.max(height, width) / Math.min(height, width);
  if (ratio > MAX_ASPECT_RATIO) {
    throw inputError(
      `image ${width}x${height} has an aspect ratio of ${ratio.toFixed(1)}, ` +
        `more than the ${MAX_ASPECT_RATIO} the model accepts`,
    );
  }

  let h = roundHalfToEven(height / factor) * factor;
  let w = roundHalfToEven(width / factor) * factor;
  if (h * w > maxPixels) {
    // Shrink by the same beta on both sides, rounding down so the area stays under the budget.
    const beta = Math.sqrt((height * width) / maxPixels);
    h = Math.max(factor, Math.floor(height / beta / factor) * factor);
    w = Math.max(factor, Math.floor(width / beta / factor) * factor);
  } else if (h * w < minPixels) {
    // Grow by the same beta on both sides, rounding up so the area reaches the minimum.
    const beta = Math.sqrt(minPixels / (height * width));
    h = Math.ceil((height * beta) / factor) * factor;
    w = Math.ceil((width * beta) / factor) * factor;
  }
  return { height: h, width: w };
}
