/**
 * The seeded random numbers behind sampling (temperature > 0).
 *
 * Generator: xoshiro128** 1.1 (Blackman & Vigna, https://prng.di.unimi.it/xoshiro128starstar.c): 128 bits of
 * state, 32-bit outputs, fast in plain JS integer arithmetic.
 * Seeding: the seed (a non-negative safe integer) is expanded with SplitMix64, the generator the xoshiro
 * authors recommend for seeding; its first two 64-bit outputs give the four state words, low half first:
 * `[lo(a), hi(a), lo(b), hi(b)]`.
 * Floats: `nextFloat()` takes two outputs and builds a double in [0, 1) from their top 27 and 26 bits
 * (53 random bits, the usual `(a >>> 5) * 2^26 + (b >>> 6)` construction).
 *
 * The same seed gives the same sequence on every machine. PyTorch's generator cannot be reproduced, so a
 * seeded `dvl` run matches a seeded reference run in distribution only, never token for token.
 */
import { randomBytes } from 'node:crypto';
import { usageError } from '../util/errors.js';

export interface Rng {
  /** A uniform 32-bit unsigned integer. */
  nextUint32(): number;
  /** A uniform double in [0, 1) with 53 random bits. */
  nextFloat(): number;
}

const MASK64 = (1n << 64n) - 1n;

/** SplitMix64 outputs, as BigInts (only used for seeding, so speed does not matter). */
export function splitMix64(seed: bigint, count: number): bigint[] {
  let state = seed & MASK64;
  const out: bigint[] = [];
  for (let i = 0; i < count; i++) {
    state = (state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    out.push(z ^ (z >> 31n));
  }
  return out;
}

const rotl = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;

export class Xoshiro128StarStar implements Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** Starts from an explicit state (four 32-bit words, not all zero). */
  constructor(state: readonly [number, number, number, number]) {
    [this.s0, this.s1, this.s2, this.s3] = state.map((w) => w >>> 0);
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) throw new Error('xoshiro128**: the all-zero state is not allowed');
  }

  /** The state a seed expands to (see the module comment). */
  static stateFromSeed(seed: number): [number, number, number, number] {
    if (!Number.isSafeInteger(seed) || seed < 0) throw usageError(`seed must be a non-negative integer, got ${seed}`);
    const [a, b] = splitMix64(BigInt(seed), 2);
    const words: [number, number, number, number] = [
      Number(a & 0xffffffffn),
      Number(a >> 32n),
      Number(b & 0xffffffffn),
      Number(b >> 32n),
    ];
    // SplitMix64 never yields two zero outputs in a row, but keep the generator valid regardless.
    if ((words[0] | words[1] | words[2] | words[3]) === 0) words[0] = 1;
    return words;
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

/** The generator for a `--seed` value. */
export function createRng(seed: number): Rng {
  return new Xoshiro128StarStar(Xoshiro128StarStar.stateFromSeed(seed));
}

/** A fresh seed when the user gave none (reported back so that the run can be repeated). */
export function randomSeed(): number {
  const bytes = randomBytes(8);
  // 53 bits: any safe integer is a valid seed.
  return (bytes.readUInt32LE(0) & 0x1fffff) * 4294967296 + bytes.readUInt32LE(4);
}
