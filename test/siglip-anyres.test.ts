import crypto from 'node:crypto';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  anyresGrid,
  anyresMaxFromAspect,
  cropsForImage,
  isAnyresAspect,
  normalizeCrop,
  padCrop,
  padLayout,
  parseGridPinpoints,
  resizeAndPadLayout,
  selectBestResolution,
  siglipNormalisationTable,
  type Resolution,
} from '../src/models/siglip-qwen/anyres.js';
import { decodeImage } from '../src/preprocess/decode.js';
import { resizeBicubic, type RgbImage } from '../src/preprocess/pillow-bicubic.js';
import { expectModelError } from './helpers/errors.js';

/**
 * Expected values from scripts/gen-siglip-fixtures.py (the reference pipeline of DiffusionVL-Qwen in Python on
 * Pillow 9.4 / numpy): sha256 of each crop's RGB bytes and of its normalised float32 CHW values, plus samples.
 */
const expected: any = JSON.parse(fs.readFileSync('fixtures/preprocess/siglip-expected.json', 'utf8'));
const S = 384;

const sha256 = (data: Uint8Array) => crypto.createHash('sha256').update(data).digest('hex');
const floatBytes = (f: Float32Array) => new Uint8Array(f.buffer, f.byteOffset, f.byteLength);

/** The default pinpoints written out by hand: [384·i, 384·j], i (width) outer, j (height) inner, 1..6. */
const DEFAULT: Resolution[] = [];
for (let i = 1; i <= 6; i++) for (let j = 1; j <= 6; j++) DEFAULT.push([384 * i, 384 * j]);

// ---------------------------------------------------------------------------------------------- sources

function cropBox(img: RgbImage, [l, t, r, b]: number[]): RgbImage {
  const width = r - l;
  const height = b - t;
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const from = ((t + y) * img.width + l) * 3;
    data.set(img.data.subarray(from, from + width * 3), y * width * 3);
  }
  return { data, width, height };
}

/** numpy.tile(a, (ny, nx, 1)). */
function tile(img: RgbImage, [nx, ny]: number[]): RgbImage {
  const width = img.width * nx;
  const height = img.height * ny;
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const row = img.data.subarray((y % img.height) * img.width * 3, ((y % img.height) + 1) * img.width * 3);
    for (let k = 0; k < nx; k++) data.set(row, (y * width + k * img.width) * 3);
  }
  return { data, width, height };
}

const sources = new Map<string, RgbImage>();
async function source(name: string): Promise<RgbImage> {
  if (!sources.has(name)) {
    const spec = expected.sources[name];
    let img = await decodeImage(`fixtures/images/${spec.file}`);
    if (spec.crop) img = cropBox(img, spec.crop);
    if (spec.tile) img = tile(img, spec.tile);
    sources.set(name, img);
  }
  return sources.get(name)!;
}

/** A deterministic pattern with structure on both axes (not a Pillow comparison: layout checks only). */
function pattern(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) data[(y * width + x) * 3 + c] = 1 + ((x * 13 + y * 7 + c * 40) % 250);
    }
  }
  return { data, width, height };
}

const pixel = (img: RgbImage, x: number, y: number) => {
  const p = (y * img.width + x) * 3;
  return Array.from(img.data.subarray(p, p + 3));
};

function expectCropLikePillow(crop: RgbImage, want: any, scratch: Float32Array) {
  expect([crop.width, crop.height]).toEqual([S, S]);
  expect(want.samples.map(([x, y]: number[]) => [x, y, ...pixel(crop, x, y)])).toEqual(want.samples);
  expect(sha256(crop.data)).toBe(want.sha256);
  normalizeCrop(crop, scratch, 0);
  const plane = S * S;
  expect(want.normalized.samples.map(([c, y, x]: number[]) => [c, y, x, scratch[c * plane + y * S + x]])).toEqual(
    want.normalized.samples,
  );
  expect(sha256(floatBytes(scratch))).toBe(want.normalized.sha256);
}

// ---------------------------------------------------------------------------------------------- pinpoints

describe('parseGridPinpoints', () => {
  it('expands "(1x1),...,(6x6)" to the 36 pairs [384i, 384j], i outer', () => {
    const got = parseGridPinpoints('(1x1),...,(6x6)');
    expect(got).toEqual(DEFAULT);
    expect(got.slice(0, 7)).toEqual([
      [384, 384], [384, 768], [384, 1152], [384, 1536], [384, 1920], [384, 2304], [768, 384],
    ]);
    expect(got[35]).toEqual([2304, 2304]);
  });

  it('uses only the first and the last group for the ranges', () => {
    expect(parseGridPinpoints('(2x1),(9x9),(3x3)')).toEqual([
      [768, 384], [768, 768], [768, 1152], [1152, 384], [1152, 768], [1152, 1152],
    ]);
    expect(parseGridPinpoints('(1x2)')).toEqual([[384, 768]]);
    // The middle groups of the full form do not matter either.
    expect(parseGridPinpoints('(1x1),(2x2),(3x3),(4x4),(5x5),(6x6)')).toEqual(DEFAULT);
  });

  it('multiplies by the crop size it is given', () => {
    expect(parseGridPinpoints('(1x1),(2x2)', 336)).toEqual([[336, 336], [336, 672], [672, 336], [672, 672]]);
  });

  it('matches the Python expansion', () => {
    for (const [text, pairs] of expected.pinpointStrings) expect(parseGridPinpoints(text)).toEqual(pairs);
  });

  it('takes lists of pairs and Python list literals', () => {
    const list = [[384, 768], [768, 384]];
    expect(parseGridPinpoints(list)).toEqual(list);
    expect(parseGridPinpoints('[(384, 768), (768, 384)]')).toEqual(list);
    expect(parseGridPinpoints('[[384, 768], [768, 384],]')).toEqual(list);
    expect(parseGridPinpoints(expected.pinpointSets.default)).toEqual(DEFAULT);
  });

  it('rejects everything else with a model error', () => {
    for (const bad of [null, undefined, 5, {}, [], [[384]], [[384, 384, 384]], [[0, 384]], [[-384, 384]],
      [[384.5, 384]], [['384', 384]], [384, 768]]) {
      expectModelError(() => parseGridPinpoints(bad));
    }
    expectModelError(() => parseGridPinpoints([[400, 384]]), /multiple of the crop size 384/);
    expectModelError(() => parseGridPinpoints([[384, 384], [336, 672]]), /\[1\]/);
    expectModelError(() => parseGridPinpoints('(2x2),(1x1)'), /no resolution/);
    expectModelError(() => parseGridPinpoints('(0x1),(2x2)'), /positive/);
    expectModelError(() => parseGridPinpoints('1x1'), /group/);
    expectModelError(() => parseGridPinpoints('garbage'));
    expectModelError(() => parseGridPinpoints('[]'));
    expectModelError(() => parseGridPinpoints('(384, 768)'));
  });
});

// ---------------------------------------------------------------------------------------------- best resolution

describe('selectBestResolution (hand-derived)', () => {
  it('gives the grids of the spec examples', () => {
    // 10x10: every pinpoint covers it, effective = min(..., 100) = 100 everywhere; 384x384 wastes least.
    expect(anyresGrid(10, 10, DEFAULT)).toEqual({ cols: 1, rows: 1, best: [384, 384] });
    // 385x384: [384, h] scales by 384/385, effective 383·384 (or less) < 385·384; [768, 384] has scale 1 and
    // keeps all 147840 pixels, with the least waste of those that do.
    expect(anyresGrid(385, 384, DEFAULT)).toEqual({ cols: 2, rows: 1, best: [768, 384] });
    // 5000x30: width-limited everywhere; the widest (2304) keeps the most: 2304 x trunc(13.8) = 2304 x 13.
    expect(anyresGrid(5000, 30, DEFAULT)).toEqual({ cols: 6, rows: 1, best: [2304, 384] });
    // 1920x1080: [1920, 1152] is the smallest pinpoint holding it at scale 1.
    expect(anyresGrid(1920, 1080, DEFAULT)).toEqual({ cols: 5, rows: 3, best: [1920, 1152] });
    // 3000x3000: downscaled everywhere, the largest square keeps the most.
    expect(anyresGrid(3000, 3000, DEFAULT)).toEqual({ cols: 6, rows: 6, best: [2304, 2304] });
  });

  it('portrait, tiny and huge images', () => {
    expect(selectBestResolution(384, 385, DEFAULT)).toEqual([384, 768]);
    expect(selectBestResolution(30, 5000, DEFAULT)).toEqual([384, 2304]);
    expect(selectBestResolution(1, 1, DEFAULT)).toEqual([384, 384]);
    expect(selectBestResolution(384, 384, DEFAULT)).toEqual([384, 384]);
    expect(selectBestResolution(768, 384, DEFAULT)).toEqual([768, 384]);
    expect(selectBestResolution(20000, 20000, DEFAULT)).toEqual([2304, 2304]);
  });

  it('computes trunc(w · (W / w)) literally in doubles', () => {
    // The spec's example of the trap: 384 / 47 * 47 is 383.99999999999994.
    expect(Math.trunc(47 * (384 / 47))).toBe(383);
    // 535x536: [384, 768] is width-limited with scale 384/535, and trunc(535 · (384/535)) = 383 (exactly it
    // would be 384): effective 383 · trunc(536 · 0.7177…) = 383 · 384 = 147072. [384, 384] is height-limited with
    // scale 384/536: trunc(383.28…) · trunc(536 · (384/536)) = 383 · 384 = 147072 as well. Equal effective, so
    // the smaller waste wins: [384, 384], though it comes later (exact arithmetic would keep [384, 768]).
    expect(Math.trunc(535 * (384 / 535))).toBe(383);
    expect(selectBestResolution(535, 536, [[384, 768], [384, 384]])).toEqual([384, 384]);
    expect(selectBestResolution(535, 536, [[384, 384], [384, 768]])).toEqual([384, 384]);
  });

  it('breaks ties: larger effective, then smaller waste, then the earlier one', () => {
    // Same effective (100) and the same waste: the first one wins, in either order.
    expect(selectBestResolution(10, 10, [[768, 384], [384, 768]])).toEqual([768, 384]);
    expect(selectBestResolution(10, 10, [[384, 768], [768, 384]])).toEqual([384, 768]);
    // Same effective, less waste later: the later one.
    expect(selectBestResolution(10, 10, [[768, 768], [384, 384]])).toEqual([384, 384]);
    // A larger effective wins whatever it wastes: 800x800 keeps 640000 pixels on 1536², 589824 on 768².
    expect(selectBestResolution(800, 800, [[768, 768], [1536, 1536]])).toEqual([1536, 1536]);
    expect(selectBestResolution(800, 800, [[1536, 1536], [768, 768]])).toEqual([1536, 1536]);
    // 100000x1: trunc(1 · scale) = 0 everywhere, effective 0 ties with the initial 0; the waste decides.
    expect(selectBestResolution(100000, 1, [[768, 384], [384, 384], [384, 768]])).toEqual([384, 384]);
  });

  it('rejects an empty list and bad sizes', () => {
    expectModelError(() => selectBestResolution(10, 10, []));
    expect(() => selectBestResolution(0, 10, DEFAULT)).toThrow(RangeError);
    expect(() => selectBestResolution(10.5, 10, DEFAULT)).toThrow(RangeError);
  });

  it('matches the Python table (best resolution and resize-and-pad layout)', () => {
    const sets: Record<string, Resolution[]> = expected.pinpointSets;
    expect(expected.bestResolution.length).toBeGreaterThan(500);
    const got = expected.bestResolution.map(([w, h, set]: [number, number, string]) => {
      const best = selectBestResolution(w, h, sets[set]);
      const l = resizeAndPadLayout(w, h, best);
      return [w, h, set, ...best, l.width, l.height, l.x, l.y];
    });
    expect(got).toEqual(expected.bestResolution);
  });
});

describe('resizeAndPadLayout (hand-derived)', () => {
  it('fills one side and centres the other', () => {
    // 451x300 -> 768x384: scale_w 1.70 > scale_h 1.28, so the height fills: 384, width ceil(577.28) = 578.
    expect(resizeAndPadLayout(451, 300, [768, 384])).toEqual({ width: 578, height: 384, x: 95, y: 0 });
    // 600x400 -> 768x768: scale_w 1.28 < 1.92: width fills, height ceil(512) = 512, y = 256 // 2.
    expect(resizeAndPadLayout(600, 400, [768, 768])).toEqual({ width: 768, height: 512, x: 0, y: 128 });
    // Equal scales take the height branch: the whole canvas.
    expect(resizeAndPadLayout(768, 384, [768, 384])).toEqual({ width: 768, height: 384, x: 0, y: 0 });
    expect(resizeAndPadLayout(10, 10, [384, 384])).toEqual({ width: 384, height: 384, x: 0, y: 0 });
    // 301x1200 -> 384x1536: width fills, height ceil(1530.9) = 1531, odd remainder 5: y = 2.
    expect(resizeAndPadLayout(301, 1200, [384, 1536])).toEqual({ width: 384, height: 1531, x: 0, y: 2 });
    // 5000x30 -> 2304x384: height ceil(13.824) = 14, y = (384 - 14) // 2 = 185.
    expect(resizeAndPadLayout(5000, 30, [2304, 384])).toEqual({ width: 2304, height: 14, x: 0, y: 185 });
    // 40x400 -> 384x768: height fills, width ceil(76.8) = 77, x = 307 // 2 = 153.
    expect(resizeAndPadLayout(40, 400, [384, 768])).toEqual({ width: 77, height: 768, x: 153, y: 0 });
  });
});

describe('anyresMaxFromAspect / isAnyresAspect', () => {
  it('parses anyres_max_N like re.match', () => {
    expect(anyresMaxFromAspect('anyres_max_4')).toBe(4);
    expect(anyresMaxFromAspect('anyres_max_12')).toBe(12);
    expect(anyresMaxFromAspect('anyres_max_4x')).toBe(4); // re.match only anchors the start
    expect(anyresMaxFromAspect('anyres')).toBeNull();
    expect(anyresMaxFromAspect('anyres_max')).toBeNull();
    expect(anyresMaxFromAspect('xanyres_max_4')).toBeNull();
    expect(anyresMaxFromAspect('pad')).toBeNull();
    expectModelError(() => anyresMaxFromAspect('anyres_max_0'));
  });

  it('says which values select anyres tiling', () => {
    for (const a of ['anyres', 'anyres_max_4', 'anyres_max', 'xanyres_max_4']) expect(isAnyresAspect(a)).toBe(true);
    for (const a of ['pad', 'square', 'anyres_4', 'highres', '']) expect(isAnyresAspect(a)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------- crops

describe('cropsForImage', () => {
  it('cuts the padded canvas into row-major tiles after the base image', () => {
    // A one-pinpoint list to get 2 rows of 3 columns with black bands above and below.
    const img = pattern(700, 300);
    const pins: Resolution[] = [[1152, 768]];
    const { grid, best, layout, crops } = cropsForImage(img, pins);
    expect(grid).toEqual({ cols: 3, rows: 2 });
    expect(best).toEqual([1152, 768]);
    // scale_w 1.6457 < scale_h 2.56: width fills, height ceil(300 · 1.6457…) = 494, y = (768 − 494) // 2 = 137.
    expect(layout).toEqual({ width: 1152, height: 494, x: 0, y: 137 });
    expect(crops.length).toBe(7);
    expect(sha256(crops[0].data)).toBe(sha256(resizeBicubic(img, S, S).data));
    const resized = resizeBicubic(img, 1152, 494);
    for (let r = 0; r < 2; r++) {
      for (let c = 0; c < 3; c++) {
        const t = crops[1 + r * 3 + c];
        for (const [tx, ty] of [[0, 0], [383, 383], [10, 136], [10, 137], [200, 383], [5, 0], [383, 246], [383, 247]]) {
          const X = c * S + tx;
          const Y = r * S + ty;
          const inside = Y >= 137 && Y < 137 + 494;
          expect(pixel(t, tx, ty)).toEqual(inside ? pixel(resized, X, Y - 137) : [0, 0, 0]);
        }
      }
    }
  });

  it('pads left and right for tall images', () => {
    const img = pattern(40, 400);
    const { grid, layout, crops } = cropsForImage(img, DEFAULT);
    expect(grid).toEqual({ cols: 1, rows: 2 });
    expect(layout).toEqual({ width: 77, height: 768, x: 153, y: 0 });
    const resized = resizeBicubic(img, 77, 768);
    for (const [k, y] of [[1, 0], [2, 383]]) {
      const t = crops[k];
      expect(pixel(t, 152, y)).toEqual([0, 0, 0]);
      expect(pixel(t, 153, y)).toEqual(pixel(resized, 0, (k - 1) * S + y));
      expect(pixel(t, 229, y)).toEqual(pixel(resized, 76, (k - 1) * S + y));
      expect(pixel(t, 230, y)).toEqual([0, 0, 0]);
    }
  });

  it('rejects pinpoints that are not multiples of the crop size', () => {
    expectModelError(() => cropsForImage(pattern(10, 10), [[400, 400]]), /multiple/);
  });

  for (const want of expected.anyres) {
    it(`matches Pillow: ${want.source} ${want.width}x${want.height}`, async () => {
      const img = await source(want.source);
      expect([img.width, img.height]).toEqual([want.width, want.height]);
      expect(sha256(img.data)).toBe(want.sha256);
      const { grid, best, layout, crops } = cropsForImage(img, DEFAULT);
      expect(best).toEqual(want.best);
      expect([grid.cols, grid.rows]).toEqual(want.grid);
      expect([layout.width, layout.height, layout.x, layout.y]).toEqual(want.layout);
      expect(crops.length).toBe(want.crops.length);
      const scratch = new Float32Array(3 * S * S); // one crop at a time
      crops.forEach((crop, k) => expectCropLikePillow(crop, want.crops[k], scratch));
    });
  }
});

describe('padCrop', () => {
  it('puts the image on a (127, 127, 127) square at the expand2square offsets', () => {
    expect(padLayout(451, 300)).toEqual({ side: 451, x: 0, y: 75 });
    expect(padLayout(40, 400)).toEqual({ side: 400, x: 180, y: 0 });
    expect(padLayout(7, 3)).toEqual({ side: 7, x: 0, y: 2 });
    expect(padLayout(2, 1)).toEqual({ side: 2, x: 0, y: 0 });
    expect(padLayout(1, 4)).toEqual({ side: 4, x: 1, y: 0 });
    expect(padLayout(256, 256)).toEqual({ side: 256, x: 0, y: 0 });
    // With the crop size equal to the side the final resize is a copy, which shows the canvas itself.
    const wide: RgbImage = { data: Uint8Array.from([1, 2, 3, 4, 5, 6]), width: 2, height: 1 };
    expect(Array.from(padCrop(wide, 2).data)).toEqual([1, 2, 3, 4, 5, 6, 127, 127, 127, 127, 127, 127]);
    const tall: RgbImage = { data: Uint8Array.from([1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]), width: 1, height: 4 };
    const canvas = padCrop(tall, 4);
    for (let y = 0; y < 4; y++) {
      expect([0, 1, 2, 3].map((x) => pixel(canvas, x, y)[0])).toEqual([127, y + 1, 127, 127]);
    }
    const square = pattern(5, 5);
    expect(padCrop(square, 5)).toEqual(square);
    expect(sha256(padCrop(square).data)).toBe(sha256(resizeBicubic(square, S, S).data));
  });

  for (const want of expected.pad) {
    it(`matches Pillow: ${want.source} ${want.width}x${want.height}`, async () => {
      const img = await source(want.source);
      expect([img.width, img.height]).toEqual([want.width, want.height]);
      const l = padLayout(img.width, img.height);
      expect([l.side, l.x, l.y]).toEqual([want.side, ...want.offset]);
      expectCropLikePillow(padCrop(img), want.crop, new Float32Array(3 * S * S));
    });
  }
});

describe('normalizeCrop', () => {
  it('computes (float32(v / 255) − 0.5) / 0.5 step by step in float32', () => {
    const t = siglipNormalisationTable();
    expect(t[0]).toBe(-1);
    expect(t[255]).toBe(1);
    for (let v = 0; v < 256; v++) {
      const x = Math.fround(v * (1 / 255));
      expect(t[v]).toBe(Math.fround(Math.fround(x - 0.5) / 0.5));
    }
    // 128: float32(0.50196…) = 0.501960813999176, minus 0.5 is exact, doubled.
    expect(t[128]).toBe(Math.fround(0.501960813999176 - 0.5) * 2);
  });

  it('writes channels first from the offset, and checks the bounds', () => {
    const crop: RgbImage = { data: Uint8Array.from([0, 255, 128, 255, 0, 51]), width: 2, height: 1 };
    const out = new Float32Array(9).fill(7);
    normalizeCrop(crop, out, 2);
    const t = siglipNormalisationTable();
    expect(Array.from(out)).toEqual([7, 7, -1, 1, 1, -1, t[128], t[51], 7]);
    expect(() => normalizeCrop(crop, out, 4)).toThrow(RangeError);
    expect(() => normalizeCrop(crop, out, -1)).toThrow(RangeError);
    expect(() => normalizeCrop({ data: new Uint8Array(5), width: 2, height: 1 }, out, 0)).toThrow(RangeError);
  });
});
