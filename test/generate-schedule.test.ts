import { describe, expect, it } from 'vitest';
import { choosePositions, transferSchedule } from '../src/generate/schedule.js';
import { DvlError } from '../src/util/errors.js';

describe('transferSchedule', () => {
  // Hand-derived from base = floor(8/S), remainder = 8 mod S, the first `remainder` steps get one more.
  it.each([
    [1, [8, 8]],
    [2, [4, 4, 4]],
    [3, [3, 3, 2, 2]],
    [4, [2, 2, 2, 2, 2]],
    [5, [2, 2, 2, 1, 1, 1]],
    [6, [2, 2, 1, 1, 1, 1, 1]],
    [7, [2, 1, 1, 1, 1, 1, 1, 1]],
    [8, [1, 1, 1, 1, 1, 1, 1, 1, 1]],
    [9, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]],
    [10, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]],
  ])('B=8, S=%i', (steps, expected) => {
    expect(transferSchedule(8, steps)).toEqual(expected);
  });

  it('other block sizes', () => {
    expect(transferSchedule(4, 6)).toEqual([1, 1, 1, 1, 0, 0, 0]);
    expect(transferSchedule(16, 4)).toEqual([4, 4, 4, 4, 4]);
    expect(transferSchedule(1, 1)).toEqual([1, 1]);
  });

  it('rejects steps < 1 and bad block sizes', () => {
    expect(() => transferSchedule(8, 0)).toThrow(DvlError);
    expect(() => transferSchedule(8, 0)).toThrow(/steps must be an integer >= 1, got 0/);
    expect(() => transferSchedule(8, 2.5)).toThrow(/steps/);
    expect(() => transferSchedule(0, 4)).toThrow(/block size/);
  });
});

describe('choosePositions', () => {
  const conf = [0.1, 0.9, 0.5, 0.9, 0.2];

  it('static: the k highest confidences, k = min(count, masked)', () => {
    expect(choosePositions(conf, 2, 'low_confidence_static', 0.85)).toEqual([1, 3]);
    expect(choosePositions(conf, 3, 'low_confidence_static', 0.85)).toEqual([1, 2, 3]);
    expect(choosePositions(conf, 10, 'low_confidence_static', 0.85)).toEqual([0, 1, 2, 3, 4]);
    expect(choosePositions(conf, 0, 'low_confidence_static', 0.85)).toEqual([]);
    expect(choosePositions([], 3, 'low_confidence_static', 0.85)).toEqual([]);
  });

  it('static ties: lowest index first', () => {
    expect(choosePositions([0.5, 0.5, 0.5], 2, 'low_confidence_static', 0)).toEqual([0, 1]);
    expect(choosePositions([0.2, 0.7, 0.3, 0.7, 0.7], 2, 'low_confidence_static', 0)).toEqual([1, 3]);
    expect(choosePositions([0.2, 0.3, 0.3, 0.1], 2, 'low_confidence_static', 0)).toEqual([1, 2]);
    expect(choosePositions([0.4, 0.3, 0.3, 0.3], 2, 'low_confidence_static', 0)).toEqual([0, 1]);
  });

  it('dynamic: all above the threshold when there are at least count of them, else static', () => {
    expect(choosePositions(conf, 2, 'low_confidence_dynamic', 0.4)).toEqual([1, 2, 3]);
    expect(choosePositions(conf, 3, 'low_confidence_dynamic', 0.4)).toEqual([1, 2, 3]);
    expect(choosePositions(conf, 4, 'low_confidence_dynamic', 0.4)).toEqual([1, 2, 3, 4]);
    expect(choosePositions(conf, 1, 'low_confidence_dynamic', 0.95)).toEqual([1]);
    // schedule entry 0 (steps > block size): only what passes the threshold, possibly nothing
    expect(choosePositions(conf, 0, 'low_confidence_dynamic', 0.4)).toEqual([1, 2, 3]);
    expect(choosePositions(conf, 0, 'low_confidence_dynamic', 0.95)).toEqual([]);
    // strictly greater than the threshold
    expect(choosePositions([0.5, 0.25], 0, 'low_confidence_dynamic', 0.5)).toEqual([]);
  });

  it('dynamic compares in float32 like torch (threshold rounded to float32)', () => {
    // float32(0.85) = 0.8500000238...: a probability equal to it is not above float32(0.85),
    // although it is above the double 0.85.
    const p = Math.fround(0.85);
    expect(p > 0.85).toBe(true);
    expect(choosePositions([p], 0, 'low_confidence_dynamic', 0.85)).toEqual([]);
    expect(choosePositions([Math.fround(0.8500001)], 0, 'low_confidence_dynamic', 0.85)).toEqual([0]);
  });
});
