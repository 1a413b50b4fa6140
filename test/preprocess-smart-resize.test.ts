import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS } from '../src/preprocess/pixel-budget.js';
import { roundHalfToEven, smartResize } from '../src/models/qwen25vl/smart-resize.js';
import { DvlError } from '../src/util/errors.js';

const budget = { minPixels: DEFAULT_MIN_PIXELS, maxPixels: DEFAULT_MAX_PIXELS }; // 147456 .. 262144

describe('roundHalfToEven', () => {
  it('rounds like Python 3 round()', () => {
    expect([0.5, 1.5, 2.5, 3.5, -0.5, -1.5].map(roundHalfToEven)).toEqual([0, 2, 2, 4, 0, -2]);
    expect([0.49999999999999994, 0.5000000000000001, 2.4, 2.6].map(roundHalfToEven)).toEqual([0, 1, 2, 3]);
  });
});

describe('smartResize: hand-derived cases', () => {
  it('rounds each side to the nearest multiple of 28 when the area is inside the budget', () => {
    // 400/28 = 14.29 -> 14 -> 392; 600/28 = 21.43 -> 21 -> 588; 392*588 = 230496 is inside the budget.
    expect(smartResize(400, 600, budget)).toEqual({ height: 392, width: 588 });
  });

  it('rounds exact halves to the even multiple (Python round)', () => {
    // 406/28 = 14.5 -> 14 (even) -> 392; 434/28 = 15.5 -> 16 (even) -> 448. 392*448 = 175616, in budget.
    expect(smartResize(406, 434, budget)).toEqual({ height: 392, width: 448 });
    // Half-up rounding would give 15*28 = 420 for the height: make sure we do not.
    expect(smartResize(406, 434, budget).height).not.toBe(420);
  });

  it('shrinks with floor when the rounded area is above maxPixels', () => {
    // 3024x4032: rounded area 3024*4032 > 262144. beta = sqrt(3024*4032/262144) = sqrt(46.51) = 6.820;
    // h = floor(3024/6.820/28) = floor(15.83) = 15 -> 420; w = floor(4032/6.820/28) = floor(21.11) = 21 -> 588.
    expect(smartResize(3024, 4032, budget)).toEqual({ height: 420, width: 588 });
  });

  it('grows with ceil when the rounded area is below minPixels', () => {
    // 300x451: rounded 308x448 = 137984 < 147456. beta = sqrt(147456/135300) = 1.04396;
    // h = ceil(313.19/28) = ceil(11.19) = 12 -> 336; w = ceil(470.83/28) = ceil(16.82) = 17 -> 476.
    expect(smartResize(300, 451, budget)).toEqual({ height: 336, width: 476 });
  });

  it('scales tiny images up instead of failing (no lower size limit in the reference version)', () => {
    // 1x1: rounded 0x0 = 0 < min; beta = sqrt(147456/1) = 384; ceil(384/28) = ceil(13.71) = 14 -> 392.
    expect(smartResize(1, 1, budget)).toEqual({ height: 392, width: 392 });
    // 5x7: beta = sqrt(147456/35) = 64.909; 5*64.909 = 324.5 -> ceil(11.59) = 12 -> 336;
    // 7*64.909 = 454.4 -> ceil(16.23) = 17 -> 476.
    expect(smartResize(5, 7, budget)).toEqual({ height: 336, width: 476 });
  });

  it('keeps at least one multiple per side in the max branch, even above maxPixels', () => {
    // 20x2000 with max 28*28*10 = 7840: rounded 28x1988 = 55664 > max. beta = sqrt(40000/7840) = 2.2588;
    // h = floor(20/2.2588/28) = floor(0.316) = 0 -> clamped to 28; w = floor(2000/2.2588/28) = floor(31.62) = 31
    // -> 868. 28*868 = 24304 > 7840: the reference allows it.
    expect(smartResize(20, 2000, { minPixels: 784, maxPixels: 7840 })).toEqual({ height: 28, width: 868 });
  });

  it('accepts an aspect ratio of exactly 200 and rejects anything above', () => {
    // 1x200: rounded 0x196 -> min branch; beta = sqrt(147456/200) = 27.153; h = ceil(27.15/28) = 1 -> 28;
    // w = ceil(5430.6/28) = ceil(193.95) = 194 -> 5432. (The min branch has no upper clamp: 152096 <= max here.)
    expect(smartResize(1, 200, budget)).toEqual({ height: 28, width: 5432 });
    expect(() => smartResize(1, 201, budget)).toThrow(/aspect ratio of 201\.0/);
    expect(() => smartResize(1001, 5, budget)).toThrow(DvlError);
    try {
      smartResize(5, 1001, budget);
    } catch (e) {
      expect((e as DvlError).kind).toBe('input');
    }
  });

  it('rejects bad sizes and budgets', () => {
    expect(() => smartResize(0, 10, budget)).toThrow(/not a positive size/);
    expect(() => smartResize(10, 10, { minPixels: 0, maxPixels: 10 })).toThrow(/min pixels/);
    expect(() => smartResize(10, 10, { minPixels: 100, maxPixels: 10 })).toThrow(/must not exceed/);
    expect(() => smartResize(10, 10, { minPixels: 1.5, maxPixels: 10 })).toThrow(DvlError);
  });
});

describe('smartResize: table computed by the Python reference (fixtures/preprocess/expected.json)', () => {
  const expected = JSON.parse(fs.readFileSync('fixtures/preprocess/expected.json', 'utf8'));
  const table = expected.smartResize as [number, number, number, number, number | 'error', number?][];

  it('has a table with plenty of cases, including errors', () => {
    expect(table.length).toBeGreaterThan(300);
    expect(table.filter((r) => r[4] === 'error').length).toBeGreaterThanOrEqual(4);
  });

  it('matches every case', () => {
    const mismatches: string[] = [];
    for (const [height, width, minPixels, maxPixels, h, w] of table) {
      let got: string;
      try {
        const r = smartResize(height, width, { minPixels, maxPixels });
        got = `${r.height}x${r.width}`;
      } catch (e) {
        if (!(e instanceof DvlError)) throw e;
        got = 'error';
      }
      const want = h === 'error' ? 'error' : `${h}x${w}`;
      if (got !== want) mismatches.push(`${height}x${width} [${minPixels}, ${maxPixels}]: got ${got}, want ${want}`);
    }
    expect(mismatches).toEqual([]);
  });
});
