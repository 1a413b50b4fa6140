/**
 * Block-wise quantisation (MatMulNBits layout) and float32 -> half conversion, against hand-derived values
 * and exhaustive / statistical properties. That onnxruntime reads the layout the same way is checked in
 * decoder-graph.test.ts (graph vs a reference built from dequantizeBlockwise).
 */
import { describe, expect, it } from 'vitest';
import { dequantizeBlockwise, quantizeBlockwise } from '../src/convert/quantize.js';
import { float16BitsToNumber, float32ToFloat16Bits, toFloat16 } from '../src/util/half.js';
import { prng } from './helpers/random-weights.js';

/** A row of K values: `head` first, zeros after. */
function row(K: number, head: number[]): number[] {
  return [...head, ...new Array(K - head.length).fill(0)];
}

describe('quantizeBlockwise, hand-derived blocks', () => {
  it('4-bit asymmetric: scale, zero point, nibble order and dequantized values', () => {
    // Block 0: min -1, max 0.875 -> scale 1.875/15 = 0.125, zero point round(1/0.125) = 8.
    //   values -1, .875, 0, .25, -.5, .3, .0625 (a tie: away from zero), -.0625
    //   levels  0,  15,  8,  10,   4,  10,   9,                                7
    // Block 1: all positive (0.5..1.5): the range is widened to [0, 1.5] -> zero point 0, scale 0.1.
    const block0 = row(32, [-1, 0.875, 0, 0.25, -0.5, 0.3, 0.0625, -0.0625]);
    const block1 = Array.from({ length: 32 }, (_, i) => (i === 0 ? 1.5 : i === 1 ? 0.5 : 1));
    const weight = Float32Array.from([...block0, ...block1]);
    const q = quantizeBlockwise(weight, 1, 64, 4);

    expect(Array.from(q.scales)).toEqual([0.125, Math.fround(0.1)]);
    expect(Array.from(q.zeroPoints)).toEqual([0x08]); // block 0 in the low nibble, block 1 (0) in the high one
    expect(q.packed.length).toBe(2 * 16);
    // Element 2j in the low nibble, 2j+1 in the high one.
    expect(Array.from(q.packed.subarray(0, 6))).toEqual([0xf0, 0xa8, 0xa4, 0x79, 0x88, 0x88]);
    // Block 1: 1.5 -> 15, 0.5 -> round(4.99..) = 5, 1 -> 10.
    expect(Array.from(q.packed.subarray(16, 18))).toEqual([0x5f, 0xaa]);

    const back = dequantizeBlockwise(q, 1, 64, 4);
    expect(Array.from(back.subarray(0, 8))).toEqual([-1, 0.875, 0, 0.25, -0.5, 0.25, 0.125, -0.125]);
    expect(back[32]).toBeCloseTo(1.5, 6);
    expect(back[33]).toBeCloseTo(0.5, 6);
  });

  it('8-bit asymmetric: one byte per value and per zero point', () => {
    // min -2, max 1.984375 -> scale 3.984375/255 = 1/64, zero point 128.
    const weight = Float32Array.from(row(32, [-2, 1.984375, 0.5, -0.25, 0.0078125 /* half a level: rounds up */]));
    const q = quantizeBlockwise(weight, 1, 32, 8);
    expect(Array.from(q.scales)).toEqual([1 / 64]);
    expect(Array.from(q.zeroPoints)).toEqual([128]);
    expect(Array.from(q.packed.subarray(0, 6))).toEqual([0, 255, 160, 112, 129, 128]);
    expect(Array.from(dequantizeBlockwise(q, 1, 32, 8).subarray(0, 5))).toEqual([-2, 1.984375, 0.5, -0.25, 0.015625]);
  });

  it('4-bit symmetric: scale max|w|/7 around the implicit zero point 8', () => {
    const weight = Float32Array.from(row(32, [-1.75, 1.75, 0.3, -0.5]));
    const q = quantizeBlockwise(weight, 1, 32, 4, 32, { symmetric: true });
    expect(Array.from(q.scales)).toEqual([0.25]);
    expect(Array.from(q.zeroPoints)).toEqual([0x08]); // not used by the graph (MatMulNBits defaults to 8)
    // levels 1, 15, 9, 6
    expect(Array.from(q.packed.subarray(0, 2))).toEqual([0xf1, 0x69]);
    expect(Array.from(dequantizeBlockwise(q, 1, 32, 4, 32).subarray(0, 4))).toEqual([-1.75, 1.75, 0.25, -0.5]);
  });

  it('zero points of several rows: ceil(kBlocks / 2) bytes per row at 4 bits', () => {
    // 2 rows x 3 blocks; block b of row n is constant -(n * 3 + b + 1) except one 0.75 -> distinct zero points.
    const N = 2;
    const K = 96;
    const weight = new Float32Array(N * K);
    const expectedZp: number[] = [];
    for (let n = 0; n < N; n++) {
      for (let b = 0; b < 3; b++) {
        const low = -(n * 3 + b + 1) * 0.25; // -0.25 .. -1.5
        for (let i = 0; i < 32; i++) weight[n * K + b * 32 + i] = i === 0 ? 0.75 : low;
        // range [low, 0.75]: scale (0.75 - low) / 15, zero point round(-low / scale)
        const scale = Math.fround((0.75 - low) / 15);
        expectedZp.push(Math.round(-low / scale));
      }
    }
    const q = quantizeBlockwise(weight, N, K, 4);
    expect(q.zeroPoints.length).toBe(4);
    expect(Array.from(q.zeroPoints)).toEqual([
      expectedZp[0] | (expectedZp[1] << 4), expectedZp[2],
      expectedZp[3] | (expectedZp[4] << 4), expectedZp[5],
    ]);
    const back = dequantizeBlockwise(q, N, K, 4);
    for (let i = 0; i < weight.length; i++) expect(Math.abs(back[i] - weight[i])).toBeLessThanOrEqual(q.scales[Math.floor(i / 32)] / 2 + 1e-7);
  });

  it('K not a multiple of the block size: the last block is padded with the zero point (decodes to 0)', () => {
    const K = 40;
    const weight = Float32Array.from({ length: 2 * K }, (_, i) => ((i * 7) % 11) / 10 - 0.5);
    const q = quantizeBlockwise(weight, 2, K, 4);
    expect(q.packed.length).toBe(2 * 2 * 16);
    expect(q.scales.length).toBe(4);
    // Row 0, block 1 holds 8 values; entries 8..31 of the block are padding = its zero point.
    const zp = q.zeroPoints[0] >> 4;
    const blob = q.packed.subarray(16, 32);
    for (let i = 8; i < 32; i++) expect((blob[i >> 1] >> ((i & 1) * 4)) & 0xf).toBe(zp);
    const back = dequantizeBlockwise(q, 2, K, 4);
    expect(back.length).toBe(2 * K);
    for (let i = 0; i < back.length; i++) expect(Math.abs(back[i] - weight[i])).toBeLessThanOrEqual(0.1 / 2 + 1e-6);
  });

  it('an all-zero block gets scale 0 and decodes to zeros', () => {
    const q = quantizeBlockwise(new Float32Array(32), 1, 32, 4);
    expect(q.scales[0]).toBe(0);
    expect(Array.from(dequantizeBlockwise(q, 1, 32, 4))).toEqual(new Array(32).fill(0));
  });

  it('refuses a weight whose length is not N*K', () => {
    expect(() => quantizeBlockwise(new Float32Array(10), 2, 6, 4)).toThrow(/10 values for a 2x6/);
  });
});

describe('quantizeBlockwise, statistics on uniform random weights', () => {
  // For values spread over a block's range R, uniform rounding error has RMS (R / levels) / sqrt(12).
  // With 32 uniform samples in [-1, 1] the expected block range is 2 * 31/33, and the weights' RMS is
  // 1/sqrt(3), so the relative RMS error is (31/33) / levels: 1/15 -> 0.0626 (4-bit), 1/255 -> 0.00368.
  const rand = prng(99);
  const N = 256;
  const K = 256;
  const weight = Float32Array.from({ length: N * K }, () => rand() * 2 - 1);

  for (const [bits, levels] of [[4, 15], [8, 255]] as const) {
    it(`${bits}-bit: every error within half a level, relative RMS error as theory predicts`, () => {
      const q = quantizeBlockwise(weight, N, K, bits);
      const back = dequantizeBlockwise(q, N, K, bits);
      let errorSquares = 0;
      let weightSquares = 0;
      let worstExcess = -Infinity; // max over elements of |error| - half a level
      for (let i = 0; i < weight.length; i++) {
        const error = back[i] - weight[i];
        worstExcess = Math.max(worstExcess, Math.abs(error) - q.scales[Math.floor(i / 32)] / 2);
        errorSquares += error * error;
        weightSquares += weight[i] * weight[i];
      }
      expect(worstExcess).toBeLessThan(1e-7);
      const relative = Math.sqrt(errorSquares / weightSquares);
      const theory = 31 / 33 / levels;
      expect(relative).toBeGreaterThan(theory * 0.95);
      expect(relative).toBeLessThan(theory * 1.05);
    });
  }

  it('asymmetric has lower error than symmetric (the reason the graphs use it)', () => {
    const errorOf = (symmetric: boolean) => {
      const back = dequantizeBlockwise(quantizeBlockwise(weight, N, K, 4, 32, { symmetric }), N, K, 4);
      return back.reduce((acc, x, i) => acc + (x - weight[i]) ** 2, 0);
    };
    expect(errorOf(false)).toBeLessThan(errorOf(true));
  });
});

describe('quantizeBlockwise with the range search (rounding "mse")', () => {
  /** The squared error of one block stored with a range shrunk by f, computed here in float64 from scratch. */
  function shrunkError(block: number[], bits: 4 | 8, f: number): number {
    const maxQ = 2 ** bits - 1;
    const lo = Math.min(0, ...block) * f;
    const hi = Math.max(0, ...block) * f;
    if (hi === lo) return block.reduce((a, w) => a + w * w, 0);
    const scale = Math.fround((hi - lo) / maxQ);
    const zero = Math.min(maxQ, Math.max(0, Math.round(-lo / scale)));
    return block.reduce((a, w) => {
      const q = Math.min(maxQ, Math.max(0, Math.sign(w / scale) * Math.round(Math.abs(w / scale)) + zero));
      return a + (w - (q - zero) * scale) ** 2;
    }, 0);
  }

  it('each block gets the least squared error among the shrunk ranges, never worse than min/max', () => {
    const rand = prng(17);
    const N = 6;
    const K = 64;
    const w = new Float32Array(N * K).map(() => Math.fround(rand() * 2 - 1) * 0.02);
    // Row 0, block 0 carries one weight 20x the rest: min/max spends its levels on it.
    w[5] = 0.4;
    for (const bits of [4, 8] as const) {
      const plain = dequantizeBlockwise(quantizeBlockwise(w, N, K, bits), N, K, bits);
      const searched = dequantizeBlockwise(quantizeBlockwise(w, N, K, bits, 32, { search: true }), N, K, bits);
      for (let block = 0; block < (N * K) / 32; block++) {
        const slice = Array.from(w.subarray(block * 32, block * 32 + 32));
        const err = (d: Float32Array) => slice.reduce((a, x, i) => a + (x - d[block * 32 + i]) ** 2, 0);
        const best = Math.min(...[1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6].map((f) => shrunkError(slice, bits, f)));
        // (The dequantized values are float32, the candidates' errors here float64: equal to float32 rounding.)
        expect(Math.abs(err(searched) - best)).toBeLessThanOrEqual(1e-5 * best + 1e-12);
        expect(err(searched)).toBeLessThanOrEqual(err(plain) + 1e-15);
      }
    }
  });
});

describe('quantizeBlockwise range search on bell-shaped weights', () => {
  it('4-bit: the total squared error drops (measured 0.934x of min/max); 8-bit: no worse', () => {
    const rand = prng(7);
    const N = 64;
    const K = 256;
    // A sum of six uniforms: the bell shape of trained weights, whose tails min/max over-serves.
    const w = new Float32Array(N * K).map(() => Math.fround((rand() + rand() + rand() + rand() + rand() + rand() - 3) * 0.02));
    const error = (d: Float32Array) => w.reduce((a, x, i) => a + (x - d[i]) ** 2, 0);
    const ratio = (bits: 4 | 8) => error(dequantizeBlockwise(quantizeBlockwise(w, N, K, bits, 32, { search: true }), N, K, bits)) / error(dequantizeBlockwise(quantizeBlockwise(w, N, K, bits), N, K, bits));
    expect(ratio(4)).toBeLessThan(0.97);
    expect(ratio(8)).toBeLessThanOrEqual(1);
  });
});

describe('float32 -> IEEE half', () => {
  it('hand-checked values: normals, ties to even, overflow, subnormals, signs, NaN', () => {
    const cases: [number, number][] = [
      [1, 0x3c00],
      [-2, 0xc000],
      [0.1, 0x2e66],
      [65504, 0x7bff], // largest half
      [65519, 0x7bff], // below the midpoint to 65536
      [65520, 0x7c00], // the midpoint: ties to even, and the even neighbour is infinity
      [1e6, 0x7c00],
      [-Infinity, 0xfc00],
      [1 + 2 ** -11, 0x3c00], // tie between 0x3c00 (even) and 0x3c01
      [1 + 3 * 2 ** -11, 0x3c02], // tie between 0x3c01 and 0x3c02 (even)
      [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -14 - 2 ** -24, 0x03ff], // largest subnormal
      [2 ** -24, 0x0001], // smallest subnormal
      [3 * 2 ** -25, 0x0002], // tie between 1 and 2 units: even is 2
      [2 ** -25, 0x0000], // tie between 0 and 1 unit: even is 0
      [1.5 * 2 ** -25, 0x0001],
      [2 ** -30, 0x0000],
      [-(2 ** -24), 0x8001],
      [-0, 0x8000],
      [0, 0x0000],
    ];
    for (const [value, bits] of cases) expect([value, float32ToFloat16Bits(value)]).toEqual([value, bits]);
    const nan = float32ToFloat16Bits(NaN);
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x03ff).not.toBe(0);
  });

  it('decodes hand-checked bit patterns', () => {
    expect(float16BitsToNumber(0x3c00)).toBe(1);
    expect(float16BitsToNumber(0x7bff)).toBe(65504);
    expect(float16BitsToNumber(0x0001)).toBe(2 ** -24);
    expect(float16BitsToNumber(0x03ff)).toBe(2 ** -14 - 2 ** -24);
    expect(float16BitsToNumber(0xc000)).toBe(-2);
    expect(float16BitsToNumber(0xfc00)).toBe(-Infinity);
    expect(float16BitsToNumber(0x7e00)).toBeNaN();
  });

  it('exhaustively: every half round-trips, and midpoints between neighbours round to the even one', () => {
    // Positive finite halves in increasing order are 0x0000..0x7bff; check each gap [h, h+1].
    for (let h = 0; h < 0x7bff; h++) {
      const low = float16BitsToNumber(h);
      const high = float16BitsToNumber(h + 1);
      expect(float32ToFloat16Bits(low)).toBe(h);
      expect(float32ToFloat16Bits(-low)).toBe(h | 0x8000);
      const mid = (low + high) / 2; // at most 12 significant bits: exact in float32
      expect(Math.fround(mid)).toBe(mid);
      const even = h % 2 === 0 ? h : h + 1;
      if (float32ToFloat16Bits(mid) !== even) throw new Error(`midpoint of 0x${h.toString(16)}: got 0x${float32ToFloat16Bits(mid).toString(16)}`);
      const above = Math.fround(mid + mid * 2 ** -20);
      const below = Math.fround(mid - mid * 2 ** -20);
      if (float32ToFloat16Bits(above) !== h + 1 || float32ToFloat16Bits(below) !== h) throw new Error(`neighbours of the midpoint of 0x${h.toString(16)}`);
    }
  });

  it('toFloat16 converts a whole tensor', () => {
    expect(Array.from(toFloat16(Float32Array.from([1, -2, 65504, 2 ** -24])))).toEqual([0x3c00, 0xc000, 0x7bff, 0x0001]);
  });
});
