/**
 * Host-side vision layout (models/qwen25vl/vision-layout.ts) against hand-derived window orders and rotary angles.
 * tinyConfig's vision tower: head_dim 16, so the rotary frequencies are 10000^(-k/4) = 1, 0.1, 0.01, 0.001,
 * windows of 112 px = 8 patches = 4 merged units per side.
 */
import { describe, expect, it } from 'vitest';
import { type GridThw, patchWidth, rotaryInvFreq, visionFeeds, visionLayout } from '../src/models/qwen25vl/vision-layout.js';
import { DvlError } from '../src/util/errors.js';
import { tinyConfig } from './helpers/random-weights.js';

const vision = tinyConfig().vision;
const FREQS = [1, 0.1, 0.01, 0.001];

/** The expected cos/sin row of a patch at (row, col) for head_dim 16: [row angles, col angles] twice. */
function expectedRow(fn: (a: number) => number, row: number, col: number): number[] {
  const half = [...FREQS.map((f) => fn(row * f)), ...FREQS.map((f) => fn(col * f))];
  return [...half, ...half];
}

function rowOf(table: Float32Array, row: number, width: number): number[] {
  return Array.from(table.subarray(row * width, (row + 1) * width));
}

function expectClose(actual: number[], expected: number[], digits = 6) {
  expect(actual.length).toBe(expected.length);
  actual.forEach((v, i) => expect(v).toBeCloseTo(expected[i], digits));
}

function expectDvlError(fn: () => unknown, kind: string, pattern: RegExp) {
  try {
    fn();
    expect.unreachable();
  } catch (error) {
    expect(error).toBeInstanceOf(DvlError);
    expect((error as DvlError).kind).toBe(kind);
    expect((error as Error).message).toMatch(pattern);
  }
}

describe('visionLayout', () => {
  it('orders an 8x12 grid window by window (a full 4x4 window, then a partial 4x2 one)', () => {
    // Merged grid 4x6: window 0 = columns 0-3, window 1 = columns 4-5.
    const layout = visionLayout([1, 8, 12], vision);
    expect(layout.numPatches).toBe(96);
    expect(Array.from(layout.windowIndex)).toEqual([0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, 18, 19, 20, 21, 4, 5, 10, 11, 16, 17, 22, 23]);
    expect(Array.from(layout.reverseIndex)).toEqual([0, 1, 2, 3, 16, 17, 4, 5, 6, 7, 18, 19, 8, 9, 10, 11, 20, 21, 12, 13, 14, 15, 22, 23]);
    expect(Array.from(layout.cuWindowSeqlens)).toEqual([0, 64, 96]);
    expect(Array.from(layout.cuSeqlens)).toEqual([0, 96]);
    // Each merged unit moves as a block of 4 rows.
    expect(Array.from(layout.patchOrder.subarray(60, 72))).toEqual([84, 85, 86, 87, 16, 17, 18, 19, 20, 21, 22, 23]);
    expect(layout.windowOfRow[63]).toBe(0);
    expect(layout.windowOfRow[64]).toBe(1);
    expect(layout.windowOfRow[95]).toBe(1);
  });

  it('gives each window-ordered row the rotary angles of its patch position', () => {
    const layout = visionLayout([1, 8, 12], vision);
    const hd = layout.headDim;
    expect(hd).toBe(16);
    // (window-order row, patch row, patch col): row 0 = unit 0 top-left; row 63 = unit 21 (merged (3,3))
    // bottom-right patch; row 64 = unit 4 (merged (0,4)) top-left; row 69 = unit 5 top-right; row 95 = unit 23
    // bottom-right.
    const cases: [number, number, number][] = [[0, 0, 0], [63, 7, 7], [64, 0, 8], [69, 0, 11], [95, 7, 11], [6, 1, 2]];
    for (const [row, pr, pc] of cases) {
      expectClose(rowOf(layout.rotaryCos, row, hd), expectedRow(Math.cos, pr, pc));
      expectClose(rowOf(layout.rotarySin, row, hd), expectedRow(Math.sin, pr, pc));
    }
  });

  it('pads windows at the bottom and the right edge (10x10 and 10x6 grids)', () => {
    // Merged 5x5: windows (0,0) 4x4 units, (0,1) 4x1, (1,0) 1x4, (1,1) 1x1.
    const square = visionLayout([1, 10, 10], vision);
    expect(Array.from(square.windowIndex)).toEqual([0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 16, 17, 18, 4, 9, 14, 19, 20, 21, 22, 23, 24]);
    expect(Array.from(square.cuWindowSeqlens)).toEqual([0, 64, 80, 96, 100]);
    // Row 80 = unit 20 (merged (4,0)) -> patch (8, 0); row 99 = unit 24 bottom-right -> patch (9, 9).
    expectClose(rowOf(square.rotaryCos, 80, 16), expectedRow(Math.cos, 8, 0));
    expectClose(rowOf(square.rotarySin, 99, 16), expectedRow(Math.sin, 9, 9));

    // Merged 5x3: one 4x3 window and a 1x3 window below; the order stays raster.
    const tall = visionLayout([1, 10, 6], vision);
    expect(Array.from(tall.windowIndex)).toEqual(Array.from({ length: 15 }, (_, i) => i));
    expect(Array.from(tall.cuWindowSeqlens)).toEqual([0, 48, 60]);
    expect(Array.from(tall.patchOrder)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    // Row 49 = unit 12 (merged (4,0)), its top-right patch -> (8, 1); row 50 its bottom-left patch -> (9, 0).
    expectClose(rowOf(tall.rotaryCos, 49, 16), expectedRow(Math.cos, 8, 1));
    expectClose(rowOf(tall.rotaryCos, 50, 16), expectedRow(Math.cos, 9, 0));
  });

  it('batches the windows: gather rows, scatter slots and a mask of the padding keys', () => {
    const layout = visionLayout([1, 10, 10], vision);
    const n = layout.numPatches;
    const batch = layout.windowBatch();
    // Windows of 64, 16, 16 and 4 rows, padded to 64.
    const bounds = [0, 64, 80, 96, 100];
    expect(batch.windows).toBe(4);
    expect(batch.maxRows).toBe(64);
    for (let win = 0; win < 4; win++) {
      const size = bounds[win + 1] - bounds[win];
      for (let i = 0; i < 64; i++) {
        const slot = win * 64 + i;
        expect(Number(batch.rows[slot])).toBe(i < size ? bounds[win] + i : 0);
        for (let q = 0; q < 64; q++) expect(batch.bias[(slot - i + q) * 64 + i]).toBe(i < size ? 0 : -Infinity);
      }
    }
    // slots invert rows: every sequence row appears in exactly one slot.
    for (let r = 0; r < n; r++) expect(Number(batch.rows[Number(batch.slots[r])])).toBe(r);
    expect(new Set(Array.from(batch.slots)).size).toBe(n);
  });

  it('handles several frames: windows per frame, same rotary positions in each frame', () => {
    const layout = visionLayout([2, 4, 4], vision);
    expect(Array.from(layout.windowIndex)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(Array.from(layout.cuWindowSeqlens)).toEqual([0, 16, 32]);
    expect(Array.from(layout.cuSeqlens)).toEqual([0, 16, 32]);
    expect(Array.from(layout.rotaryCos.subarray(16 * 16))).toEqual(Array.from(layout.rotaryCos.subarray(0, 16 * 16)));
  });

  it('computes the real tower rotary table (head_dim 80) in float32 like torch', () => {
    const real = { ...vision, hiddenSize: 1280, numHeads: 16 };
    const invFreq = rotaryInvFreq(80);
    expect(invFreq.length).toBe(20);
    // torch rounds the exponent 2k/40 to float32 first, which shifts inv_freq by up to ~3e-7 relative (k = 12);
    // from the rounded exponent on, the values are within 1 ulp (1.2e-7).
    invFreq.forEach((f, k) => expect(Math.abs(f - 10000 ** -Math.fround(k / 20)) / f).toBeLessThan(1.2e-7));
    expect(Math.abs(invFreq[12] - 10000 ** (-12 / 20)) / invFreq[12]).toBeGreaterThan(2e-7);
    // 36x36 grid (a 504x504 image): the last row is the bottom-right patch (35, 35).
    const layout = visionLayout([1, 36, 36], real);
    expect(layout.rotaryCos.length).toBe(1296 * 80);
    const last = rowOf(layout.rotaryCos, 1295, 80);
    const angles = Array.from({ length: 20 }, (_, k) => 35 * 10000 ** (-k / 20));
    expectClose(last, [...angles, ...angles, ...angles, ...angles].map(Math.cos), 5);
    // 18 merged units per side -> 5x5 windows of 4, 4, 4, 4, 2 units per side.
    expect(layout.cuWindowSeqlens.length).toBe(26);
    expect(layout.cuWindowSeqlens[1]).toBe(64);
    expect(layout.cuWindowSeqlens[5]).toBe(4 * 64 + 32);
    expect(layout.cuWindowSeqlens[25]).toBe(1296);
  });

  it('rejects grids and configs it cannot lay out', () => {
    expectDvlError(() => visionLayout([1, 7, 8], vision), 'input', /not a multiple of the spatial merge size 2/);
    expectDvlError(() => visionLayout([1, 0, 8], vision), 'input', /h=0/);
    expectDvlError(() => visionLayout([1, 8, 8], { ...vision, windowSize: 100 }), 'model', /window_size 100/);
    expectDvlError(() => visionLayout([1, 8, 8], { ...vision, numHeads: 3 }), 'model', /num_heads 3/);
  });
});

describe('visionFeeds', () => {
  const width = patchWidth(vision);

  it('reorders patch rows into window order and restores raster order of the merged output', () => {
    const grid: GridThw = [1, 8, 12];
    // Patch row r holds the value r in every column.
    const patches = new Float32Array(96 * width);
    for (let r = 0; r < 96; r++) patches.fill(r, r * width, (r + 1) * width);
    const { feeds, reverse } = visionFeeds(patches, grid, vision);
    expect(feeds.pixel_patches.dims).toEqual([96, width]);
    expect(feeds.rotary_cos.dims).toEqual([96, 16]);
    expect(feeds.rotary_sin.dims).toEqual([96, 16]);
    // Two windows: 64 rows and a partial one of 32.
    expect(feeds.window_rows.dims).toEqual([2, 64]);
    expect(feeds.window_slots.dims).toEqual([96]);
    expect(feeds.window_bias.dims).toEqual([2, 1, 64, 64]);
    const firstColumn = Array.from({ length: 96 }, (_, r) => feeds.pixel_patches.data[r * width]);
    // Window 0 takes units 0-3, 6-9, 12-15, 18-21, window 1 units 4, 5, 10, 11, 16, 17, 22, 23.
    const units = [0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, 18, 19, 20, 21, 4, 5, 10, 11, 16, 17, 22, 23];
    expect(firstColumn).toEqual(units.flatMap((u) => [4 * u, 4 * u + 1, 4 * u + 2, 4 * u + 3]));
    expect(feeds.pixel_patches.data[5 * width + width - 1]).toBe(5);

    // Output row p (window order) of width 3 holds [unit, p, -p]: reversed, row m must hold unit m.
    const embeds = Float32Array.from(units.flatMap((u, p) => [u, p, -p]));
    const raster = reverse(embeds, 3);
    expect(Array.from({ length: 24 }, (_, m) => raster[m * 3])).toEqual(Array.from({ length: 24 }, (_, m) => m));
    expect(() => reverse(new Float32Array(10), 3)).toThrow(DvlError);
  });

  it('rejects a patch matrix of the wrong size and multi-frame input', () => {
    expectDvlError(() => visionFeeds(new Float32Array(95 * width), [1, 8, 12], vision), 'input', /expected 96x1176/);
    expectDvlError(() => visionFeeds(new Float32Array(32 * width), [2, 4, 4], vision), 'input', /2 frames/);
  });
});
