import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { preprocessImage, preprocessPixels } from '../src/models/qwen25vl/preprocess.js';
import { DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS } from '../src/preprocess/pixel-budget.js';
import { IMAGE_MEAN, IMAGE_STD, PATCH_DIM, normalisationTable, patchify } from '../src/models/qwen25vl/patches.js';
import { type RgbImage } from '../src/preprocess/pillow-bicubic.js';
import { DvlError } from '../src/util/errors.js';

const expected = JSON.parse(fs.readFileSync('fixtures/preprocess/expected.json', 'utf8'));
const defaults = { minPixels: DEFAULT_MIN_PIXELS, maxPixels: DEFAULT_MAX_PIXELS };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-preprocess-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Pixel values that say where they are: R = x, G = y, B = (3x + 5y) mod 256. */
function positional(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set([x, y, (3 * x + 5 * y) & 255], (y * width + x) * 3);
  }
  return { data, width, height };
}

/** float64 normalisation, straight from the spec: x / 255, then (x - mean) / std. */
const norm64 = (v: number, c: number) => (v / 255 - IMAGE_MEAN[c]) / IMAGE_STD[c];

/**
 * Independent float64 reference of the processor's layout, done the way the source does it: a generic
 * reshape + transpose over strides. Input: the image as [t=2 copies][c][h][w]; reshape to
 * [1, 2, 3, gh/2, 2, 14, gw/2, 2, 14]; permute (0, 3, 6, 4, 7, 2, 1, 5, 8); flatten.
 */
function referencePatches(image: RgbImage): Float64Array {
  const { width, height } = image;
  const gh = height / 14;
  const gw = width / 14;
  const frames = new Float64Array(2 * 3 * height * width);
  for (let t = 0; t < 2; t++) {
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          frames[((t * 3 + c) * height + y) * width + x] = norm64(image.data[(y * width + x) * 3 + c], c);
        }
      }
    }
  }
  const shape = [1, 2, 3, gh / 2, 2, 14, gw / 2, 2, 14];
  const strides = new Array<number>(shape.length);
  for (let i = shape.length - 1, s = 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  const perm = [0, 3, 6, 4, 7, 2, 1, 5, 8];
  const outShape = perm.map((p) => shape[p]);
  const out = new Float64Array(frames.length);
  const index = new Array<number>(outShape.length).fill(0);
  for (let n = 0; n < out.length; n++) {
    let src = 0;
    for (let d = 0; d < perm.length; d++) src += index[d] * strides[perm[d]];
    out[n] = frames[src];
    for (let d = outShape.length - 1; d >= 0; d--) {
      if (++index[d] < outShape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

describe('patchify layout', () => {
  const image = positional(56, 28); // grid 2 x 4 patches = 1 x 2 merge blocks

  it('orders rows merge block by merge block (hand-listed for a 2x4 patch grid)', () => {
    const { patches, gridThw } = patchify(image);
    expect(gridThw).toEqual([1, 2, 4]);
    expect(patches.length).toBe(8 * PATCH_DIM);
    // Row -> (patch row, patch column): block (0,0) = patches (0,0) (0,1) (1,0) (1,1), then block (0,1).
    const where = [
      [0, 0],
      [0, 1],
      [1, 0],
      [1, 1],
      [0, 2],
      [0, 3],
      [1, 2],
      [1, 3],
    ];
    const table = normalisationTable();
    for (let row = 0; row < 8; row++) {
      const [pr, pc] = where[row];
      // Inside a row: index = c * 392 + tp * 196 + ph * 14 + pw. The red channel holds x, green holds y.
      for (const [c, tp, ph, pw] of [
        [0, 0, 0, 0],
        [0, 1, 3, 7],
        [1, 0, 13, 2],
        [1, 1, 5, 13],
      ]) {
        const value = patches[row * PATCH_DIM + c * 392 + tp * 196 + ph * 14 + pw];
        const stored = c === 0 ? pc * 14 + pw : pr * 14 + ph;
        expect(value).toBe(table[c * 256 + stored]);
      }
    }
    // Spot values by hand: row 5 is patch (0, 3); its red at (ph 3, pw 7) is x = 3 * 14 + 7 = 49.
    expect(patches[5 * PATCH_DIM + 0 * 392 + 1 * 196 + 3 * 14 + 7]).toBeCloseTo(norm64(49, 0), 6);
    // Row 6 is patch (1, 2); its green at (ph 4, pw 0) is y = 14 + 4 = 18.
    expect(patches[6 * PATCH_DIM + 1 * 392 + 0 * 196 + 4 * 14 + 0]).toBeCloseTo(norm64(18, 1), 6);
  });

  it('equals a generic reshape/transpose reference on larger grids', () => {
    for (const [w, h] of [
      [56, 28],
      [84, 56],
      [112, 140],
    ]) {
      const img = positional(w, h);
      const ref = referencePatches(img);
      const { patches } = patchify(img);
      let maxDiff = 0;
      for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ref[i] - patches[i]));
      expect(maxDiff).toBeLessThan(1e-6);
    }
  });

  it('rejects sizes that are not multiples of 28', () => {
    expect(() => patchify(positional(42, 28))).toThrow(/multiple of 28/);
  });
});

describe('normalisationTable', () => {
  it('is float32 rounding of the float64 formula, with the CLIP mean/std', () => {
    const table = normalisationTable();
    for (let c = 0; c < 3; c++) {
      for (const v of [0, 1, 127, 128, 254, 255]) {
        const want = norm64(v, c);
        expect(Math.abs(table[c * 256 + v] - want)).toBeLessThan(Math.abs(want) * 2 ** -22 + 1e-7);
      }
    }
    // Hand check: 0 in red -> -0.48145466 / 0.26862954 = -1.7922626;
    // 255 in blue -> (1 - 0.40821073) / 0.27577711 = 0.59178927 / 0.27577711 = 2.1458970.
    expect(table[0]).toBeCloseTo(-1.7922626, 6);
    expect(table[2 * 256 + 255]).toBeCloseTo(2.145897, 6);
  });
});

// The Python reference (PIL + numpy float32) was checked equal to transformers' Qwen2VLImageProcessor.
describe('preprocessImage against the Python reference', () => {
  interface Case {
    source: string;
    minPixels: number;
    maxPixels: number;
    resized: [number, number];
    gridThw: [number, number, number];
    sha256: string;
    samples: [number, number, number][];
  }
  for (const c of expected.pipeline as Case[]) {
    it(`${c.source} with pixels ${c.minPixels}..${c.maxPixels}`, async () => {
      const budget = { minPixels: c.minPixels, maxPixels: c.maxPixels };
      const out = await preprocessImage(`fixtures/images/${c.source}`, budget);
      expect([out.resized.height, out.resized.width]).toEqual(c.resized);
      expect(out.gridThw).toEqual(c.gridThw);
      expect(out.patches.length).toBe(c.gridThw[1] * c.gridThw[2] * PATCH_DIM);
      expect(c.samples.map(([r, col]) => [r, col, out.patches[r * PATCH_DIM + col]])).toEqual(c.samples);
      const bytes = new Uint8Array(out.patches.buffer, out.patches.byteOffset, out.patches.byteLength);
      expect(crypto.createHash('sha256').update(bytes).digest('hex')).toBe(c.sha256);
    });
  }

  it('reports the size after EXIF orientation as the original size', async () => {
    // orient6.jpg is stored 60x36 (w x h) and displayed 36x60.
    const out = await preprocessImage('fixtures/images/orient6.jpg', defaults);
    expect(out.original).toEqual({ height: 60, width: 36 });
  });
});

describe('preprocessImage', () => {
  it('uses the DiffusionVL training budget as defaults', () => {
    expect([DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS]).toEqual([147456, 262144]);
  });

  it('fails with an input error for an extreme aspect ratio', async () => {
    const file = path.join(tmp, 'strip.png');
    await sharp({ create: { width: 300, height: 1, channels: 3, background: '#808080' } }).png().toFile(file);
    await expect(preprocessImage(file, defaults)).rejects.toThrow(/aspect ratio of 300\.0/);
  });

  it('fails with an input error naming a missing file', async () => {
    const missing = path.join(tmp, 'missing.png');
    const error = await preprocessImage(missing, { minPixels: 1, maxPixels: 10 }).catch((e) => e);
    expect(error).toBeInstanceOf(DvlError);
    expect((error as DvlError).kind).toBe('input');
    expect((error as DvlError).message).toContain(missing);
  });

  it('preprocessPixels on a flat image gives one value per channel everywhere', () => {
    const data = new Uint8Array(50 * 30 * 3).map((_, i) => [0, 128, 255][i % 3]);
    const flat: RgbImage = { data, width: 50, height: 30 };
    const out = preprocessPixels(flat, { minPixels: 784, maxPixels: 784 * 4 });
    // 30x50: round -> 28x56 = 1568, inside [784, 3136].
    expect(out.resized).toEqual({ height: 28, width: 56 });
    expect(out.gridThw).toEqual([1, 2, 4]);
    const table = normalisationTable();
    for (let row = 0; row < 8; row++) {
      for (let i = 0; i < PATCH_DIM; i++) {
        const c = Math.floor(i / 392);
        expect(out.patches[row * PATCH_DIM + i]).toBe(table[c * 256 + [0, 128, 255][c]]);
      }
    }
  });
});
