/**
 * Image file -> 8-bit RGB pixels, the way the reference pipeline sees them: PIL's
 * `Image.open(path).convert("RGB")`, which is what DiffusionVL was trained and evaluated on.
 *
 * sharp (libvips) decodes; where its defaults differ from PIL we do what PIL does (measured against
 * Pillow 9.4, see test/preprocess-decode.test.ts):
 * - embedded ICC profiles are ignored (`ignoreIcc`), PIL never applies them;
 * - alpha is dropped, not composited onto a background; palette and greyscale images are expanded;
 * - 16-bit RGB(A) and grey+alpha keep the high byte (libvips' 16 -> 8 bit conversion does the same);
 * - 16-bit greyscale without alpha is *clipped* to 0..255, because PIL opens it as a 32-bit integer image
 *   ("I") and its conversion to RGB clips; most such images become nearly white, as they do in PIL;
 * - CMYK is converted with PIL's naive formula (no colour profile): `x = (255 - k) - (c * (255 - k)) / 255`;
 * - the transparent pixels of a GIF get the palette colour of the transparent index, as in PIL;
 * - multi-frame images (animated GIF/WebP, multi-page TIFF): the first frame;
 * - files that only make the decoder warn (junk bytes between JPEG segments) are accepted, truncated or
 *   broken ones are refused: sharp's default refuses both.
 * One deliberate difference from the reference: the EXIF orientation is applied, so photos come out upright
 * (the reference feeds the raw sensor orientation to the model).
 *
 * Known remaining differences: CMYK JPEGs without an Adobe marker (PIL always assumes inverted Adobe CMYK,
 * libvips only with the marker), GIFs whose first frame does not cover the whole canvas, and float or
 * 32-bit integer TIFFs. All are rare.
 */
import { promises as fs } from 'node:fs';
import sharp from 'sharp';
import { inputError } from '../util/errors.js';
import { gifFirstFrameTransparentColour } from './gif-transparency.js';
import type { RgbImage } from './pillow-bicubic.js';

export interface DecodeOptions {
  /** Name used in error messages for a Buffer input (a path input names itself). */
  name?: string;
}

/** The first line of an error message, without sharp's internal detail. */
function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0].trim();
}

async function readInput(input: string | Uint8Array, options: DecodeOptions): Promise<{ bytes: Buffer; name: string }> {
  if (typeof input !== 'string') {
    return { bytes: Buffer.from(input.buffer, input.byteOffset, input.byteLength), name: options.name ?? 'image data' };
  }
  let stat;
  try {
    stat = await fs.stat(input);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw inputError(`image not found: ${input}`);
    throw inputError(`cannot read image ${input}: ${firstLine(error)}`, error);
  }
  if (stat.isDirectory()) throw inputError(`${input} is a directory, not an image`);
  try {
    return { bytes: await fs.readFile(input), name: input };
  } catch (error) {
    throw inputError(`cannot read image ${input}: ${firstLine(error)}`, error);
  }
}

/** PIL's CMYK -> RGB: per channel `nk - round-ish(x * nk / 255)` with `nk = 255 - k`, in integer arithmetic. */
export function cmykToRgb(cmyk: Uint8Array, pixels: number, channels: number): Uint8Array {
  const rgb = new Uint8Array(pixels * 3);
  for (let i = 0; i < pixels; i++) {
    const p = i * channels;
    const nk = 255 - cmyk[p + 3];
    for (let c = 0; c < 3; c++) {
      // Pillow's MULDIV255: (t + (t >> 8)) >> 8 with t = a * b + 128, an exact-enough a * b / 255.
      const t = cmyk[p + c] * nk + 128;
      const v = nk - ((t + (t >> 8)) >> 8);
      rgb[i * 3 + c] = v < 0 ? 0 : v;
    }
  }
  return rgb;
}

/** Drops channels past the first three (alpha), keeping the bytes as they are. */
function dropAlpha(data: Uint8Array, pixels: number, channels: number): Uint8Array {
  if (channels === 3) return data;
  const rgb = new Uint8Array(pixels * 3);
  for (let i = 0; i < pixels; i++) {
    rgb[i * 3] = data[i * channels];
    rgb[i * 3 + 1] = data[i * channels + 1];
    rgb[i * 3 + 2] = data[i * channels + 2];
  }
  return rgb;
}

/**
 * An image's size once upright (EXIF orientations 5-8 swap width and height), from its header alone: what its
 * prompt tokens depend on, known without decoding the pixels. Throws an input error when it is not an image.
 */
export async function uprightSize(bytes: Uint8Array, name = 'image'): Promise<{ width: number; height: number }> {
  let meta: Awaited<ReturnType<ReturnType<typeof sharp>["metadata"]>>;
  try {
    meta = await sharp(bytes, { pages: 1, page: 0 }).metadata();
  } catch (error) {
    throw inputError(`cannot decode image ${name}: ${(error as Error).message}`, error);
  }
  if (!meta.width || !meta.height) throw inputError(`cannot decode image ${name}: no size in its header`);
  return (meta.orientation ?? 1) >= 5 ? { width: meta.height, height: meta.width } : { width: meta.width, height: meta.height };
}

/**
 * Decodes an image file (path) or its bytes into 8-bit RGB, upright according to its EXIF orientation.
 * Throws an input error naming the file when it is missing, a directory, or not a decodable image.
 */
export async function decodeImage(input: string | Uint8Array, options: DecodeOptions = {}): Promise<RgbImage> {
  const { bytes, name } = await readInput(input, options);
  if (bytes.length === 0) throw inputError(`cannot decode image ${name}: the file is empty`);
  // A fresh sharp instance per pipeline: reading metadata and pixels from one instance is not supported.
  // failOn 'error': like PIL, accept files that only make the decoder warn (e.g. junk bytes between JPEG
  // segments) but refuse truncated or broken ones.
  const open = () => sharp(bytes, { ignoreIcc: true, autoOrient: true, pages: 1, page: 0, failOn: 'error' });
  try {
    const meta = await open().metadata();

    if (meta.space === 'cmyk') {
      // Keep libvips from converting through a CMYK profile: get the raw (Adobe-uninverted) channels.
      const { data, info } = await open()
        .pipelineColourspace('cmyk')
        .toColourspace('cmyk')
        .raw()
        .toBuffer({ resolveWithObject: true });
      return { data: cmykToRgb(data, info.width * info.height, info.channels), width: info.width, height: info.height };
    }

    if (meta.depth === 'ushort' && meta.channels === 1) {
      // 16-bit grey: PIL clips each value to 255 (see the module comment).
      const { data, info } = await open()
        .toColourspace('grey16')
        .raw({ depth: 'ushort' })
        .toBuffer({ resolveWithObject: true });
      // A Uint16Array view needs an even byte offset; copy in the unlikely case sharp's buffer has none.
      const aligned = data.byteOffset % 2 === 0 ? data : Buffer.from(data);
      const grey = new Uint16Array(aligned.buffer, aligned.byteOffset, info.width * info.height);
      const rgb = new Uint8Array(grey.length * 3);
      for (let i = 0; i < grey.length; i++) {
        const v = grey[i] > 255 ? 255 : grey[i];
        rgb[i * 3] = v;
        rgb[i * 3 + 1] = v;
        rgb[i * 3 + 2] = v;
      }
      return { data: rgb, width: info.width, height: info.height };
    }

    const { data, info } = await open().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    const pixels = info.width * info.height;
    if (meta.format === 'gif' && info.channels === 4) {
      const colour = gifFirstFrameTransparentColour(bytes);
      if (colour) {
        for (let i = 0; i < pixels; i++) {
          if (data[i * 4 + 3] === 0) data.set(colour, i * 4);
        }
      }
    }
    return { data: dropAlpha(data, pixels, info.channels), width: info.width, height: info.height };
  } catch (error) {
    throw inputError(`cannot decode image ${name}: ${firstLine(error)}`, error);
  }
}
