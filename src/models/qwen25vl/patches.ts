/**
 * Resized RGB pixels -> the vision tower's input rows (spec §2 steps 3–4, Qwen2-VL image processor).
 *
 * Normalisation reproduces the processor's arithmetic exactly: `rescale` computes `uint8 * (1/255)` in
 * float64 and casts to float32; `normalize` then computes `(x - mean) / std` in float32 with mean and std
 * cast to float32. Each input byte therefore has exactly one normalised value per channel, so a
 * 3 x 256 table holds them all.
 *
 * Layout: the image is split into 14x14 patches, grid `gh x gw`; the processor repeats the single image
 * twice along time (temporal patch 2) and reorders with reshape `[t, tp, c, gh/2, 2, 14, gw/2, 2, 14]` ->
 * transpose `(t, gh/2, gw/2, 2, 2, c, tp, 14, 14)`. So rows go merge block by merge block (each 2x2 block
 * of patches is 4 consecutive rows: top-left, top-right, bottom-left, bottom-right), and inside a row the
 * 1176 values are ordered channel, then time copy, then patch row, then patch column.
 */
import { inputError } from '../../util/errors.js';
import type { RgbImage } from '../../preprocess/pillow-bicubic.js';

export const IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const IMAGE_STD = [0.26862954, 0.26130258, 0.27577711] as const;
export const RESCALE_FACTOR = 1 / 255;
export const PATCH_SIZE = 14;
export const TEMPORAL_PATCH_SIZE = 2;
export const MERGE_SIZE = 2;
/** Values per patch row: 3 channels x 2 time copies x 14 x 14. */
export const PATCH_DIM = 3 * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE;

/** `table[c * 256 + v]` = the processor's float32 value for byte `v` of channel `c`. */
export function normalisationTable(): Float32Array {
  const table = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) {
    const mean = Math.fround(IMAGE_MEAN[c]);
    const std = Math.fround(IMAGE_STD[c]);
    for (let v = 0; v < 256; v++) {
      const rescaled = Math.fround(v * RESCALE_FACTOR); // float64 product, then cast to float32
      // float32 subtract and divide: a double operation on float32 inputs rounded once to float32 is exact.
      table[c * 256 + v] = Math.fround(Math.fround(rescaled - mean) / std);
    }
  }
  return table;
}

export interface Patches {
  /** `[gh * gw, PATCH_DIM]`, row-major. */
  patches: Float32Array;
  /** `[t, gh, gw]` with t = 1 for a single image. */
  gridThw: [number, number, number];
}

/** Normalises and lays out an image whose sides are multiples of PATCH_SIZE * MERGE_SIZE (28). */
export function patchify(image: RgbImage): Patches {
  const { width, height, data } = image;
  const unit = PATCH_SIZE * MERGE_SIZE;
  if (width < unit || height < unit || width % unit !== 0 || height % unit !== 0) {
    throw inputError(`resized image ${width}x${height} is not a non-zero multiple of ${unit} on both sides`);
  }
  const gh = height / PATCH_SIZE;
  const gw = width / PATCH_SIZE;
  const table = normalisationTable();
  const patches = new Float32Array(gh * gw * PATCH_DIM);
  const plane = PATCH_SIZE * PATCH_SIZE;

  let row = 0;
  for (let bh = 0; bh < gh / MERGE_SIZE; bh++) {
    for (let bw = 0; bw < gw / MERGE_SIZE; bw++) {
      for (let mh = 0; mh < MERGE_SIZE; mh++) {
        for (let mw = 0; mw < MERGE_SIZE; mw++) {
          const y0 = (bh * MERGE_SIZE + mh) * PATCH_SIZE;
          const x0 = (bw * MERGE_SIZE + mw) * PATCH_SIZE;
          const base = row * PATCH_DIM;
          for (let ph = 0; ph < PATCH_SIZE; ph++) {
            const pixelRow = ((y0 + ph) * width + x0) * 3;
            for (let pw = 0; pw < PATCH_SIZE; pw++) {
              const p = pixelRow + pw * 3;
              const inPlane = ph * PATCH_SIZE + pw;
              for (let c = 0; c < 3; c++) {
                const value = table[c * 256 + data[p + c]];
                for (let tp = 0; tp < TEMPORAL_PATCH_SIZE; tp++) {
                  patches[base + (c * TEMPORAL_PATCH_SIZE + tp) * plane + inPlane] = value;
                }
              }
            }
          }
          row++;
        }
      }
    }
  }
  return { patches, gridThw: [1, gh, gw] };
}
