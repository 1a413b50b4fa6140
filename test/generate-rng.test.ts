import { describe, expect, it } from 'vitest';
import { createRng, randomSeed, splitMix64, Xoshiro128StarStar } from '../src/generate/rng.js';
import { DvlError } from '../src/util/errors.js';

describe('xoshiro128**', () => {
  it('matches the published outputs of the reference implementation from state {1, 2, 3, 4}', () => {
    // xoshiro128starstar.c 1.1, as used by the test vectors of Rust's rand_xoshiro
    const rng = new Xoshiro128StarStar([1, 2, 3, 4]);
    const outputs = Array.from({ length: 10 }, () => rng.nextUint32());
    expect(outputs).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849, 3729100597, 4258142804]);
  });

  it('nextFloat builds a double from the top 27 + 26 bits of two outputs', () => {
    // outputs 11520 and 0: (11520 >>> 5) * 2^26 / 2^53 = 360 / 2^27
    expect(new Xoshiro128StarStar([1, 2, 3, 4]).nextFloat()).toBe(360 / 2 ** 27);
    // outputs 5927040 and 70819200 (the third and fourth)
    const rng = new Xoshiro128StarStar([1, 2, 3, 4]);
    rng.nextFloat();
    expect(rng.nextFloat()).toBe(((5927040 >>> 5) * 2 ** 26 + (70819200 >>> 6)) / 2 ** 53);
  });

  it('rejects the all-zero state', () => {
    expect(() => new Xoshiro128StarStar([0, 0, 0, 0])).toThrow(/all-zero/);
  });
});

describe('seeding', () => {
  it('SplitMix64 matches its published outputs for seed 1234567', () => {
    expect(splitMix64(1234567n, 5)).toEqual([
      6457827717110365317n,
      3203168211198807973n,
      9817491932198370423n,
      4593380528125082431n,
      16408922859458223821n,
    ]);
  });

  it('a seed expands to [lo, hi] of the first two SplitMix64 outputs', () => {
    // 6457827717110365317 = 0x599ED017_FB08FC85, 3203168211198807973 = 0x2C73F084_58540FA5
    expect(Xoshiro128StarStar.stateFromSeed(1234567)).toEqual([0xfb08fc85, 0x599ed017, 0x58540fa5, 0x2c73f084]);
  });

  it('same seed, same sequence; other seeds, other sequences', () => {
    const draw = (seed: number) => {
      const rng = createRng(seed);
      return Array.from({ length: 16 }, () => rng.nextFloat());
    };
    expect(draw(42)).toEqual(draw(42));
    expect(draw(42)).not.toEqual(draw(43));
    expect(draw(0)).not.toEqual(draw(2 ** 53 - 1));
    for (const v of draw(7)) {
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThan(1);
    }
  });

  it('uniform: mean and spread of many draws', () => {
    const rng = createRng(5);
    const n = 100_000;
    const buckets = new Array<number>(10).fill(0);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const v = rng.nextFloat();
      sum += v;
      buckets[Math.floor(v * 10)]++;
    }
    expect(Math.abs(sum / n - 0.5)).toBeLessThan(0.005);
    for (const b of buckets) expect(Math.abs(b / n - 0.1)).toBeLessThan(0.005);
  });

  it('rejects seeds that are not non-negative safe integers', () => {
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 53]) {
      expect(() => createRng(bad)).toThrow(DvlError);
    }
  });

  it('randomSeed gives usable seeds', () => {
    const seed = randomSeed();
    expect(Number.isSafeInteger(seed) && seed >= 0).toBe(true);
    expect(() => createRng(seed)).not.toThrow();
  });
});
