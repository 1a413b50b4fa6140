import { describe, expect, it } from 'vitest';
import {
  assembleImageTokens,
  bilinearResize,
  imageTokenCount,
  padImageTokens,
  pythonFloorDiv,
  unpadShape,
  type BilinearOptions,
  type TileGrid,
} from '../src/models/siglip-qwen/image-tokens.js';
import { maxAbsDiff } from './helpers/compare.js';
import { prng } from './helpers/random-weights.js';

/*
 * References in this file are written from the math (spec diffusionvl-qwen.md §5, upstream llava_arch.py,
 * PyTorch's bilinear with align_corners=False), in float64, and use none of the module's helpers.
 */

function randomMap(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const next = prng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * next();
  return out;
}

/** A positive finite double as m · 2^e with integer m. */
function decompose(x: number): { m: bigint; e: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const exponent = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  if (exponent === 0) return { m: fraction, e: -1074 };
  return { m: fraction | (1n << 52n), e: exponent - 1075 };
}

/**
 * floor of the exact quotient of two positive doubles, in rational arithmetic. For quotients far below
 * 2^52 this is what Python's float `//` returns: fmod is exact, so `a - fmod(a, t)` is an exact multiple
 * of t and CPython only snaps the nearly-integral `(a - mod) / t` to that multiple.
 */
function exactFloorDiv(a: number, t: number): number {
  const A = decompose(a);
  const T = decompose(t);
  let num = A.m;
  let den = T.m;
  const shift = A.e - T.e;
  if (shift >= 0) num <<= BigInt(shift);
  else den <<= BigInt(-shift);
  return Number(num / den);
}

describe('pythonFloorDiv', () => {
  // Produced by Python 3.11's `//` on these float pairs (a, t, a // t); the comment is math.floor(a / t).
  const PYTHON: [number, number, number][] = [
    [1.0, 0.1, 9.0], // floor(a/t) = 10
    [0.5, 0.1, 4.0], // floor(a/t) = 5
    [5.0, 0.1, 49.0], // floor(a/t) = 50
    [150.0, 1.1111111111111112, 134.0], // floor(a/t) = 135
    [30.0, 1.1111111111111112, 26.0], // floor(a/t) = 27
    [100.0, 1.1111111111111112, 89.0], // floor(a/t) = 90
    [7.0, 0.7, 10.0], // floor(a/t) = 10
    [75.0, 1.8633899812498247, 40.0], // floor(a/t) = 40
    [135.0, 1.8633899812498247, 72.0], // floor(a/t) = 72
    [162.0, 3.0, 54.0], // floor(a/t) = 54
    [10.0, 3.0, 3.0], // floor(a/t) = 3
    [9.0, 3.0, 3.0], // floor(a/t) = 3
    [-7.0, 2.0, -4.0], // floor(a/t) = -4
    [7.0, -2.0, -4.0], // floor(a/t) = -4
    [-7.0, -2.0, 3.0], // floor(a/t) = 3
    [-1.0, 0.1, -10.0], // floor(a/t) = -10
    [1.0, -0.1, -10.0], // floor(a/t) = -10
    [-0, 5.0, -0], // floor(a/t) = 0
    [0.0, -5.0, -0], // floor(a/t) = 0
    [3.5, 0.5, 7.0], // floor(a/t) = 7
    [-3.5, 0.5, -7.0], // floor(a/t) = -7
    [1e300, 1e-300, Infinity], // a / t overflows: inf
    [1e-300, 1e300, 0.0], // floor(a/t) = 0
    [-1e-300, 1e300, -1.0], // floor(a/t) = 0
    [2.5, 1.0, 2.0], // floor(a/t) = 2
    [-2.5, 1.0, -3.0], // floor(a/t) = -3
    [1.0000000000000002e16, 3.0, 3333333333333334.0], // floor(a/t) = 3333333333333334
    [0.7, 0.1, 6.0], // floor(a/t) = 6
    [0.3, 0.1, 2.0], // floor(a/t) = 2
    [-0.3, 0.1, -3.0], // floor(a/t) = -3
    [4.35, 0.15, 28.0], // floor(a/t) = 29
    [1.0, Infinity, 0.0], // floor(a/t) = 0
    [-1.0, Infinity, -1.0], // floor(a/t) = 0
  ];

  it("matches Python 3's float // on a table of cases, signs and signed zeros included", () => {
    for (const [a, t, want] of PYTHON) {
      expect([a, t, pythonFloorDiv(a, t)]).toEqual([a, t, want]);
      expect(Object.is(pythonFloorDiv(a, t), want)).toBe(true);
    }
  });

  it('is the floor of the exact quotient, not floor(a / t), on real unpadded map sizes', () => {
    let differ = 0;
    let example: [number, number] | undefined;
    for (const N of [1, 2, 4, 9]) {
      for (let h = 1; h <= 162; h++) {
        for (let w = 1; w <= 162; w++) {
          const t = Math.sqrt((h * w) / (N * 729));
          if (!(t > 1.1)) continue;
          for (const a of [h, w]) {
            const got = pythonFloorDiv(a, t);
            if (got !== exactFloorDiv(a, t)) throw new Error(`${a} // ${t}: ${got} vs exact ${exactFloorDiv(a, t)}`);
            if (got !== Math.floor(a / t)) {
              differ++;
              example ??= [a, t];
            }
          }
        }
      }
    }
    // The two definitions really do disagree here (they differ by one where a / t rounds up to an integer).
    expect(differ).toBeGreaterThan(0);
    const [a, t] = example!;
    expect(Math.floor(a / t) - pythonFloorDiv(a, t)).toBe(1);
    expect(Number.isInteger(a / t)).toBe(true);
  });

  it('agrees with exact rational floor on assorted positive pairs', () => {
    const next = prng(7);
    for (let i = 0; i < 20000; i++) {
      const a = Math.floor(next() * 5000) / (next() < 0.5 ? 1 : 10);
      const t = 0.05 + next() * 20;
      expect(pythonFloorDiv(a, t)).toBe(exactFloorDiv(a, t));
    }
  });

  it('handles zero, infinities and NaN like CPython', () => {
    expect(() => pythonFloorDiv(1, 0)).toThrow(RangeError);
    expect(() => pythonFloorDiv(1, -0)).toThrow(RangeError);
    expect(Number.isNaN(pythonFloorDiv(Infinity, 2))).toBe(true);
    expect(Number.isNaN(pythonFloorDiv(NaN, 2))).toBe(true);
  });
});

/** Kept indices along the padded axis, by index arithmetic. */
function refUnpad(w: number, h: number, mapW: number, mapH: number): { heightPadded: boolean; kept: number[] } {
  const heightPadded = w / h > mapW / mapH;
  const n = heightPadded ? mapH : mapW;
  const scaled = heightPadded ? Math.trunc(h * (mapW / w)) : Math.trunc(w * (mapH / h));
  const pad = Math.floor((n - scaled) / 2);
  const kept: number[] = [];
  for (let i = 0; i < n; i++) if (i >= pad && i <= n - pad - 1) kept.push(i);
  return { heightPadded, kept };
}

describe('unpadShape', () => {
  it('gives the spec examples', () => {
    expect(unpadShape(10, 10, 27, 27)).toEqual({ top: 0, bottom: 0, left: 0, right: 0, rows: 27, cols: 27 });
    expect(unpadShape(385, 384, 54, 27)).toEqual({ top: 0, bottom: 0, left: 13, right: 13, rows: 27, cols: 28 });
    expect(unpadShape(5000, 30, 162, 27)).toEqual({ top: 13, bottom: 13, left: 0, right: 0, rows: 1, cols: 162 });
    expect(unpadShape(1920, 1080, 135, 81)).toEqual({ top: 3, bottom: 3, left: 0, right: 0, rows: 75, cols: 135 });
    expect(unpadShape(3000, 3000, 162, 162)).toEqual({ top: 0, bottom: 0, left: 0, right: 0, rows: 162, cols: 162 });
  });

  it('matches the index arithmetic over many sizes and grids', () => {
    const next = prng(11);
    for (let i = 0; i < 4000; i++) {
      const w = 1 + Math.floor(next() * (next() < 0.2 ? 8000 : 2000));
      const h = 1 + Math.floor(next() * (next() < 0.2 ? 8000 : 2000));
      const mapW = 27 * (1 + Math.floor(next() * 6));
      const mapH = 27 * (1 + Math.floor(next() * 6));
      const got = unpadShape(w, h, mapW, mapH);
      const ref = refUnpad(w, h, mapW, mapH);
      const count = ref.kept.length;
      if (count === 0) {
        // Possible on grids the best-resolution rule would not pick (a 2-row grid for a 1-pixel-high image).
        expect(ref.heightPadded ? [got.rows, got.top + got.bottom] : [got.cols, got.left + got.right]).toEqual([
          0,
          ref.heightPadded ? mapH : mapW,
        ]);
        continue;
      }
      const first = ref.kept[0];
      if (ref.heightPadded) {
        expect(got).toEqual({ top: first, bottom: mapH - first - count, left: 0, right: 0, rows: count, cols: mapW });
      } else {
        expect(got).toEqual({ top: 0, bottom: 0, left: first, right: mapW - first - count, rows: mapH, cols: count });
      }
      expect(got.top).toBe(got.bottom);
      expect(got.left).toBe(got.right);
    }
  });
});

/**
 * Bilinear resize as torch defines it for align_corners=False, in float64: source x = (d + 0.5)·ratio − 0.5
 * clamped at 0, taps floor(x) and the next one (clamped to the edge), weight x − floor(x); an unchanged
 * axis is copied. `ratio` is float32(in/out) because that is what torch computes (in float32); everything
 * else is float64, so the only differences from float32 arithmetic are roundings of λ and of the sums.
 */
function refBilinear(map: ArrayLike<number>, h: number, w: number, C: number, oh: number, ow: number): Float64Array {
  const tap = (n: number, o: number, d: number): [number, number, number] => {
    if (n === o) return [d, d, 0];
    const x = Math.max((d + 0.5) * Math.fround(n / o) - 0.5, 0);
    const i0 = Math.min(Math.floor(x), n - 1);
    return [i0, Math.min(i0 + 1, n - 1), x - i0];
  };
  const out = new Float64Array(oh * ow * C);
  for (let r = 0; r < oh; r++) {
    const [y0, y1, ly] = tap(h, oh, r);
    for (let c = 0; c < ow; c++) {
      const [x0, x1, lx] = tap(w, ow, c);
      for (let k = 0; k < C; k++) {
        const at = (y: number, x: number) => map[(y * w + x) * C + k];
        const top = (1 - lx) * at(y0, x0) + lx * at(y0, x1);
        const bottom = (1 - lx) * at(y1, x0) + lx * at(y1, x1);
        out[(r * ow + c) * C + k] = (1 - ly) * top + ly * bottom;
      }
    }
  }
  return out;
}

const VARIANTS: BilinearOptions[] = [
  {},
  { sourceIndex: 'float32' },
  { sourceIndex: 'fma' },
  { order: 'channels-last' },
  { sourceIndex: 'fma', order: 'channels-last' },
  { sourceIndex: 'float32', order: 'auto' },
];

describe('bilinearResize', () => {
  it('gives hand-derived values for 2×2 → 3×3 (ratio 2/3) and 4×4 → 2×2 (ratio 2)', () => {
    // 2×2 → 3×3: sources 0, 0.5, 1 along each axis (0 is clamped from −1/6, the last is the edge).
    const small = new Float32Array([0, 4, 8, 16]);
    expect(Array.from(bilinearResize(small, 2, 2, 1, 3, 3))).toEqual([0, 2, 4, 4, 7, 10, 8, 12, 16]);
    for (const options of VARIANTS.filter((o) => o.order !== 'channels-last')) {
      expect(Array.from(bilinearResize(small, 2, 2, 1, 3, 3, options))).toEqual([0, 2, 4, 4, 7, 10, 8, 12, 16]);
    }
    // 4×4 → 2×2: sources 0.5 and 2.5, so every output is the mean of a 2×2 block; two channels, the
    // second the negative of the first, to check the channels-last layout.
    const grid = new Float32Array(32);
    for (let i = 0; i < 16; i++) {
      grid[2 * i] = i;
      grid[2 * i + 1] = -i;
    }
    for (const options of VARIANTS) {
      expect(Array.from(bilinearResize(grid, 4, 4, 2, 2, 2, options))).toEqual([
        2.5, -2.5, 4.5, -4.5, 10.5, -10.5, 12.5, -12.5,
      ]);
    }
  });

  it('copies an unchanged size exactly and resizes single rows/columns', () => {
    const map = randomMap(10 * 7 * 3, 3);
    expect(Array.from(bilinearResize(map, 10, 7, 3, 10, 7))).toEqual(Array.from(map));
    const row = randomMap(1 * 162 * 2, 4);
    const shrunk = bilinearResize(row, 1, 162, 2, 1, 50);
    expect(maxAbsDiff(shrunk, refBilinear(row, 1, 162, 2, 1, 50))).toBeLessThan(1e-6);
  });

  it('matches the float64 reference on real and odd sizes, for every arithmetic variant', () => {
    const shapes: [number, number, number, number][] = [
      [75, 135, 40, 72], // 1920×1080: the spec's example
      [162, 162, 54, 54], // 3000×3000
      [162, 108, 93, 62],
      [81, 162, 60, 120], // outH + outW > 128: the generic kernel under 'auto'
      [7, 5, 3, 2],
      [5, 4, 11, 9], // upsampling
      [3, 1, 1, 1],
      [2, 2, 3, 3],
    ];
    let seed = 100;
    for (const [h, w, oh, ow] of shapes) {
      const C = 3;
      const map = randomMap(h * w * C, seed++);
      const ref = refBilinear(map, h, w, C, oh, ow);
      for (const options of VARIANTS) {
        const got = bilinearResize(map, h, w, C, oh, ow, options);
        // Values in [−1, 1]. With the source coordinate in double, only λ and the three sums are rounded to
        // float32: far below 1e-6. PyTorch's float32 coordinate ('float32', 'fma') is itself off by up to one
        // float32 ulp of s (2^-16 for s < 256) per axis, times a neighbour difference of at most 2.
        const tolerance = (options.sourceIndex ?? 'double') === 'double' ? 1e-6 : 2 * 2 * 2 ** -16 + 1e-6;
        expect(maxAbsDiff(got, ref), `${h}×${w} → ${oh}×${ow} ${JSON.stringify(options)}`).toBeLessThan(tolerance);
      }
    }
  });

  it("'auto' picks the channels-last order exactly when outH + outW <= 128", () => {
    const map = randomMap(75 * 135 * 4, 9);
    const generic = bilinearResize(map, 75, 135, 4, 40, 72, { order: 'generic' });
    const channelsLast = bilinearResize(map, 75, 135, 4, 40, 72, { order: 'channels-last' });
    // The two orders really round differently somewhere, so the comparisons below mean something.
    expect(maxAbsDiff(generic, channelsLast)).toBeGreaterThan(0);
    expect(bilinearResize(map, 75, 135, 4, 40, 72, { order: 'auto' })).toEqual(channelsLast);

    const big = randomMap(81 * 162 * 2, 10);
    const genericBig = bilinearResize(big, 81, 162, 2, 60, 120, { order: 'generic' });
    const channelsLastBig = bilinearResize(big, 81, 162, 2, 60, 120, { order: 'channels-last' });
    expect(maxAbsDiff(genericBig, channelsLastBig)).toBeGreaterThan(0);
    expect(bilinearResize(big, 81, 162, 2, 60, 120, { order: 'auto' })).toEqual(genericBig);
  });

  it('rejects inconsistent shapes and empty outputs', () => {
    expect(() => bilinearResize(new Float32Array(5), 2, 2, 1, 1, 1)).toThrow(RangeError);
    expect(() => bilinearResize(new Float32Array(4), 2, 2, 1, 0, 1)).toThrow(RangeError);
  });
});

// ---- image tokens -------------------------------------------------------------------------------------

const TPS = 27;
const PER_CROP = TPS * TPS;

interface Example {
  w: number;
  h: number;
  grid: TileGrid;
  tokens: number;
  rows: number;
  cols: number;
  downsampled: boolean;
}

/** The spec's one-image examples for N = 4, with the best-resolution grids given directly. */
const EXAMPLES: Example[] = [
  { w: 10, h: 10, grid: { cols: 1, rows: 1 }, tokens: 1485, rows: 27, cols: 27, downsampled: false },
  { w: 385, h: 384, grid: { cols: 2, rows: 1 }, tokens: 1512, rows: 27, cols: 28, downsampled: false },
  { w: 5000, h: 30, grid: { cols: 6, rows: 1 }, tokens: 892, rows: 1, cols: 162, downsampled: false },
  { w: 1920, h: 1080, grid: { cols: 5, rows: 3 }, tokens: 3649, rows: 40, cols: 72, downsampled: true },
  { w: 3000, h: 3000, grid: { cols: 6, rows: 6 }, tokens: 3699, rows: 54, cols: 54, downsampled: true },
];

/**
 * The whole §5 pipeline in float64, from the crops: tile into one map, unpad (refUnpad), downsample
 * (refBilinear, sizes by exact floor division) when t > 1.1, newline after every row, base crop first.
 */
function refAssemble(
  crops: Float32Array,
  w: number,
  h: number,
  grid: TileGrid,
  D: number,
  N: number,
  newline: Float32Array,
): { tokens: Float64Array; rows: number; cols: number } {
  const mapH = grid.rows * TPS;
  const mapW = grid.cols * TPS;
  const map = new Float64Array(mapH * mapW * D);
  for (let crop = 1; crop <= grid.cols * grid.rows; crop++) {
    const tileRow = Math.floor((crop - 1) / grid.cols);
    const tileCol = (crop - 1) % grid.cols;
    for (let j = 0; j < PER_CROP; j++) {
      const y = tileRow * TPS + Math.floor(j / TPS);
      const x = tileCol * TPS + (j % TPS);
      for (let k = 0; k < D; k++) map[(y * mapW + x) * D + k] = crops[(crop * PER_CROP + j) * D + k];
    }
  }
  const { heightPadded, kept } = refUnpad(w, h, mapW, mapH);
  const rows = heightPadded ? kept : Array.from({ length: mapH }, (_, i) => i);
  const cols = heightPadded ? Array.from({ length: mapW }, (_, i) => i) : kept;
  const unpadded = new Float64Array(rows.length * cols.length * D);
  rows.forEach((y, r) =>
    cols.forEach((x, c) => {
      for (let k = 0; k < D; k++) unpadded[(r * cols.length + c) * D + k] = map[(y * mapW + x) * D + k];
    }),
  );
  let resized: Float64Array = unpadded;
  let outRows = rows.length;
  let outCols = cols.length;
  const t = Math.sqrt((outRows * outCols) / (N * PER_CROP));
  if (t > 1.1) {
    const oh = exactFloorDiv(outRows, t);
    const ow = exactFloorDiv(outCols, t);
    resized = refBilinear(unpadded, outRows, outCols, D, oh, ow);
    outRows = oh;
    outCols = ow;
  }
  const tokens = new Float64Array((PER_CROP + outRows * (outCols + 1)) * D);
  for (let i = 0; i < PER_CROP * D; i++) tokens[i] = crops[i];
  let at = PER_CROP * D;
  for (let r = 0; r < outRows; r++) {
    for (let c = 0; c < outCols; c++) for (let k = 0; k < D; k++) tokens[at++] = resized[(r * outCols + c) * D + k];
    for (let k = 0; k < D; k++) tokens[at++] = newline[k];
  }
  return { tokens, rows: outRows, cols: outCols };
}

function sentinelNewline(D: number): Float32Array {
  return Float32Array.from({ length: D }, (_, k) => -1 - k);
}

describe('imageTokenCount', () => {
  it('gives the spec examples (N = 4)', () => {
    for (const ex of EXAMPLES) expect(imageTokenCount(ex.w, ex.h, ex.grid, 4)).toBe(ex.tokens);
    expect(imageTokenCount(3000, 3000, { cols: 6, rows: 6 }, 4, 27)).toBe(3699);
  });

  it('equals the number of tokens assembleImageTokens produces, over many sizes', () => {
    const next = prng(21);
    const newline = sentinelNewline(1);
    for (let i = 0; i < 150; i++) {
      const w = 1 + Math.floor(next() * 6000);
      const h = 1 + Math.floor(next() * 6000);
      const grid = { cols: 1 + Math.floor(next() * 6), rows: 1 + Math.floor(next() * 6) };
      const N = [1, 2, 4, 9][Math.floor(next() * 4)];
      const crops = new Float32Array((1 + grid.cols * grid.rows) * PER_CROP);
      const count = imageTokenCount(w, h, grid, N);
      const options = { origW: w, origH: h, grid, tokensPerSide: TPS, hidden: 1, maxTiles: N, newline };
      const tokens = assembleImageTokens(crops, options);
      expect(tokens.length, `${w}×${h} ${grid.cols}×${grid.rows} N=${N}`).toBe(count);
      expect(refAssemble(crops, w, h, grid, 1, N, newline).tokens.length).toBe(count);
    }
  });
});

describe('assembleImageTokens', () => {
  it('matches the float64 reference on the spec examples, exactly when nothing is resized', () => {
    let seed = 300;
    for (const ex of EXAMPLES) {
      const D = ex.grid.cols * ex.grid.rows > 20 ? 2 : 3;
      const crops = randomMap((1 + ex.grid.cols * ex.grid.rows) * PER_CROP * D, seed++, 0, 1);
      const newline = sentinelNewline(D);
      const got = assembleImageTokens(crops, {
        origW: ex.w,
        origH: ex.h,
        grid: ex.grid,
        tokensPerSide: TPS,
        hidden: D,
        maxTiles: 4,
        newline,
      });
      const ref = refAssemble(crops, ex.w, ex.h, ex.grid, D, 4, newline);
      expect([ref.rows, ref.cols]).toEqual([ex.rows, ex.cols]);
      expect(got.length).toBe(ex.tokens * D);
      expect(ex.tokens).toBe(PER_CROP + ex.rows * (ex.cols + 1));
      if (ex.downsampled) expect(maxAbsDiff(got, ref.tokens)).toBeLessThan(1e-6);
      else expect(Array.from(got)).toEqual(Array.from(ref.tokens)); // copied as is
    }
  });

  it('puts the base crop first without a newline and a newline after every row, nowhere else', () => {
    for (const ex of EXAMPLES) {
      const D = 2;
      const crops = randomMap((1 + ex.grid.cols * ex.grid.rows) * PER_CROP * D, 7, 0, 1);
      const newline = sentinelNewline(D);
      const options = { origW: ex.w, origH: ex.h, grid: ex.grid, tokensPerSide: TPS, hidden: D, maxTiles: 4, newline };
      const got = assembleImageTokens(crops, options);
      expect(Array.from(got.subarray(0, PER_CROP * D))).toEqual(Array.from(crops.subarray(0, PER_CROP * D)));
      const newlineAt: number[] = [];
      for (let i = 0; i < got.length / D; i++) {
        if (got[i * D] === newline[0] && got[i * D + 1] === newline[1]) newlineAt.push(i);
      }
      const want = Array.from({ length: ex.rows }, (_, r) => PER_CROP + r * (ex.cols + 1) + ex.cols);
      expect(newlineAt).toEqual(want);
      expect(newlineAt.at(-1)).toBe(ex.tokens - 1);
    }
  });

  it('lays tiles out in raster order (tile (r, c) = crop 1 + r·cols + c)', () => {
    // 800×800 on a 2×2 grid: square, no unpadding, 54×54 map, t = 0.5: the map is copied as is.
    const grid = { cols: 2, rows: 2 };
    const crops = new Float32Array(5 * PER_CROP);
    for (let crop = 0; crop < 5; crop++) {
      for (let j = 0; j < PER_CROP; j++) crops[crop * PER_CROP + j] = crop * 1000 + j;
    }
    const newline = new Float32Array([-1]);
    const options = { origW: 800, origH: 800, grid, tokensPerSide: TPS, hidden: 1, maxTiles: 4, newline };
    const got = assembleImageTokens(crops, options);
    const at = (y: number, x: number) => got[PER_CROP + y * 55 + x];
    expect(at(0, 0)).toBe(1000);
    expect(at(0, 26)).toBe(1026);
    expect(at(0, 27)).toBe(2000);
    expect(at(26, 53)).toBe(2000 + 26 * 27 + 26);
    expect(at(27, 0)).toBe(3000);
    expect(at(53, 53)).toBe(4000 + 728);
    expect(at(53, 54)).toBe(-1);
  });

  it('is deterministic and passes resize options through', () => {
    const ex = EXAMPLES[3];
    const D = 2;
    const crops = randomMap((1 + 15) * PER_CROP * D, 5);
    const newline = sentinelNewline(D);
    const options = { origW: ex.w, origH: ex.h, grid: ex.grid, tokensPerSide: TPS, hidden: D, maxTiles: 4, newline };
    const a = assembleImageTokens(crops, options);
    expect(assembleImageTokens(crops, options)).toEqual(a);
    const torchLike = assembleImageTokens(crops, { ...options, resize: { sourceIndex: 'fma', order: 'auto' } });
    expect(torchLike.length).toBe(a.length);
    expect(maxAbsDiff(torchLike, a)).toBeLessThan(1e-6);
  });

  it('rejects crops and newlines of the wrong size', () => {
    const base = { origW: 10, origH: 10, grid: { cols: 1, rows: 1 }, tokensPerSide: TPS, hidden: 2, maxTiles: 4 };
    const crops = new Float32Array(2 * PER_CROP * 2);
    expect(() => assembleImageTokens(crops.subarray(1), { ...base, newline: new Float32Array(2) })).toThrow(RangeError);
    expect(() => assembleImageTokens(crops, { ...base, newline: new Float32Array(3) })).toThrow(RangeError);
    expect(() => assembleImageTokens(crops, { ...base, newline: new Float32Array(2) })).not.toThrow();
  });
});

describe('padImageTokens', () => {
  it('appends one newline to the 729 features: 730 tokens', () => {
    const D = 4;
    const features = randomMap(PER_CROP * D, 1);
    const newline = sentinelNewline(D);
    const got = padImageTokens(features, newline);
    expect(got.length / D).toBe(730);
    expect(Array.from(got.subarray(0, PER_CROP * D))).toEqual(Array.from(features));
    expect(Array.from(got.subarray(PER_CROP * D))).toEqual(Array.from(newline));
    expect(() => padImageTokens(new Float32Array(7), newline)).toThrow(RangeError);
  });
});
