/** Numeric comparisons shared by the graph tests (each fails the test on a length mismatch where it matters). */
import { expect } from 'vitest';

export function maxAbs(values: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]));
  return m;
}

/** The largest |a[i] - b[i]|; a and b must be the same length. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** ||actual - expected||₂ / ||expected||₂ over the first expected.length values. */
export function relativeRms(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num += (actual[i] - expected[i]) ** 2;
    den += expected[i] ** 2;
  }
  return Math.sqrt(num / den);
}
