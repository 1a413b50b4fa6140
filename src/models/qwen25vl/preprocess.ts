/**
 * The QwenVL family's image preprocessing (spec §2): decode like PIL (plus EXIF orientation; preprocess/decode.ts),
 * pick the size with `smart_resize`, resize with Pillow's bicubic (preprocess/pillow-bicubic.ts), normalise and cut
 * into patch rows.
 */
import { decodeImage } from '../../preprocess/decode.js';
import { patchify } from './patches.js';
import { resizeBicubic, type RgbImage } from '../../preprocess/pillow-bicubic.js';
import { smartResize, type Size } from './smart-resize.js';

export interface PreprocessOptions {
  minPixels: number;
  maxPixels: number;
  /** Name for error messages when the input is a Buffer. */
  name?: string;
}

export interface PreprocessedImage {
  /** `[gridThw[1] * gridThw[2], 1176]` float32, row-major, rows in merge-block order. */
  patches: Float32Array;
  /** `[1, gh, gw]`: patches per column and per row (each 14x14 pixels). */
  gridThw: [number, number, number];
  /** Size the image was resized to (multiples of 28). */
  resized: Size;
  /** Size after decoding and EXIF orientation, before resizing. */
  original: Size;
}

/** Resize + normalise + patchify already-decoded RGB pixels. */
export function preprocessPixels(image: RgbImage, options: PreprocessOptions): PreprocessedImage {
  const resized = smartResize(image.height, image.width, {
    minPixels: options.minPixels,
    maxPixels: options.maxPixels,
  });
  const pixels = resizeBicubic(image, resized.width, resized.height);
  const { patches, gridThw } = patchify(pixels);
  return { patches, gridThw, resized, original: { height: image.height, width: image.width } };
}

/** Decodes an image file (or its bytes) and turns it into vision-tower input. */
export async function preprocessImage(input: string | Buffer, options: PreprocessOptions): Promise<PreprocessedImage> {
  const image = await decodeImage(input, { name: options.name });
  return preprocessPixels(image, options);
}
