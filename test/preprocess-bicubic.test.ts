import { describe, expect, it } from 'vitest';
import { decodeImage } from '../src/preprocess/decode.js';
import { axisWeights, resizeBicubic, type RgbImage } from '../src/preprocess/pillow-bicubic.js';
import { expected, type Expected, sha256 } from './helpers/pillow-expected.js';

/**
 * Expected values come from Pillow 9.4 (Debian python3-pil) via scripts/gen-preprocess-fixtures.py:
 * sha256 of `Image.resize((w, h), Image.BICUBIC).tobytes()` plus a few sample pixels [x, y, r, g, b].
 */

/** Compares samples first (a readable failure), then every byte through the hash. */
function expectLikePillow(image: RgbImage, want: Expected) {
  expect([image.width, image.height]).toEqual([want.width, want.height]);
  const got = want.samples.map(([x, y]) => {
    const p = (y * image.width + x) * 3;
    return [x, y, image.data[p], image.data[p + 1], image.data[p + 2]];
  });
  expect(got).toEqual(want.samples);
  expect(sha256(image.data)).toBe(want.sha256);
}

/** Same formula as `pattern` in scripts/gen-preprocess-fixtures.py: stripes over a ramp, to force clipping. */
function pattern(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        data[(y * width + x) * 3 + c] = ((x >> 2) ^ (y >> 3)) & 1 ? 255 : (x * 7 + y * 3 + c * 50) & 255;
      }
    }
  }
  return { data, width, height };
}

const sources = new Map<string, RgbImage>();
async function source(name: string): Promise<RgbImage> {
  if (!sources.has(name)) {
    const m = /^pattern:(\d+)x(\d+)$/.exec(name);
    sources.set(name, m ? pattern(Number(m[1]), Number(m[2])) : await decodeImage(`fixtures/images/${name}`));
  }
  return sources.get(name)!;
}

const grey = (values: number[]): RgbImage => ({
  data: Uint8Array.from(values.flatMap((v) => [v, v, v])),
  width: values.length,
  height: 1,
});

describe('axisWeights (hand-derived)', () => {
  // Kernel: k(x) = 1.5|x|^3 - 2.5|x|^2 + 1 for |x| < 1, -0.5(|x|^3 - 5|x|^2 + 8|x| - 4) for 1 <= |x| < 2.
  it('2x upscale: support 2, centers at 0.25, 0.75, ...', () => {
    const ax = axisWeights(2, 4);
    expect(ax.taps).toBe(5); // ceil(2) * 2 + 1
    // Output 0: center 0.25, inputs [trunc(-1.25) -> 0, trunc(2.75) = 2): distances 0.25 and 1.25:
    // k = 0.8671875 and -0.0703125, sum 0.796875 -> 1.0882353 and -0.0882353; x 2^22 = 4564389.6 and
    // -370085.6, rounded half away from zero.
    expect([ax.first[0], ax.count[0]]).toEqual([0, 2]);
    expect(Array.from(ax.weights.subarray(0, 2))).toEqual([4564390, -370086]);
    // Output 1: center 0.75, distances 0.25 and 0.75 (k = 0.8671875, 0.2265625; sum 1.09375).
    expect(Array.from(ax.weights.subarray(5, 7))).toEqual([3325484, 868820]);
  });

  it('2x downscale: the kernel is stretched by 2 (support 4)', () => {
    const ax = axisWeights(4, 2);
    expect(ax.taps).toBe(9); // ceil(4) * 2 + 1
    // Output 0: center 1, inputs 0..3 at distances (j + 0.5 - 1) / 2 = -0.25, 0.25, 0.75, 1.25:
    // k = 0.8671875, 0.8671875, 0.2265625, -0.0703125 (sum 1.890625).
    expect([ax.first[0], ax.count[0]]).toEqual([0, 4]);
    expect(Array.from(ax.weights.subarray(0, 4))).toEqual([1923834, 1923834, 502623, -155987]);
    expect(Array.from(ax.weights.subarray(9, 13))).toEqual([-155987, 502623, 1923834, 1923834]);
  });

  it('weights of every output sample sum to about 2^22 (normalised before rounding)', () => {
    for (const [inSize, outSize] of [
      [451, 224],
      [300, 1000],
      [4032, 1148],
      [7, 3],
      [1, 5],
    ]) {
      const ax = axisWeights(inSize, outSize);
      for (let i = 0; i < outSize; i++) {
        let sum = 0;
        for (let j = 0; j < ax.count[i]; j++) sum += ax.weights[i * ax.taps + j];
        expect(Math.abs(sum - 2 ** 22)).toBeLessThanOrEqual(ax.count[i]);
        expect(ax.first[i] + ax.count[i]).toBeLessThanOrEqual(inSize);
      }
    }
  });
});

describe('resizeBicubic (hand-derived)', () => {
  it('4 -> 2 pixels: (2^21 + sum(w * v)) >> 22 with the weights above', () => {
    // Out 0: 255 * (502623 - 155987) = 88392180; (2097152 + 88392180) / 2^22 = 21.57 -> 21.
    // Out 1: 255 * 2 * 1923834 = 981155340; (2097152 + 981155340) / 2^22 = 234.4 -> 234.
    expect(Array.from(resizeBicubic(grey([0, 0, 255, 255]), 2, 1).data)).toEqual([21, 21, 21, 234, 234, 234]);
  });

  it('2 -> 4 pixels: negative lobes clip to 0 and 255', () => {
    // Out 0: 255 * -370086 < 0 -> 0. Out 1: (2097152 + 255 * 868820) / 2^22 = 53.3 -> 53. Symmetric on the right.
    const out = resizeBicubic(grey([0, 255]), 4, 1);
    expect(Array.from(out.data)).toEqual([0, 0, 0, 53, 53, 53, 202, 202, 202, 255, 255, 255]);
  });

  it('keeps a flat image flat, at any size', () => {
    const data = new Uint8Array(13 * 7 * 3).map((_, i) => [10, 128, 250][i % 3]);
    const flat: RgbImage = { data, width: 13, height: 7 };
    for (const [w, h] of [
      [5, 3],
      [40, 21],
      [13, 2],
      [1, 1],
    ]) {
      const out = resizeBicubic(flat, w, h);
      expect(out.data.length).toBe(w * h * 3);
      expect(Array.from(out.data).every((v, i) => v === [10, 128, 250][i % 3])).toBe(true);
    }
  });

  it('returns a copy when the size does not change', () => {
    const img = grey([1, 2, 3]);
    const out = resizeBicubic(img, 3, 1);
    expect(out.data).toEqual(img.data);
    expect(out.data).not.toBe(img.data);
  });

  it('rejects non-positive sizes and short buffers', () => {
    expect(() => resizeBicubic(grey([1, 2]), 0, 1)).toThrow(/width/);
    expect(() => resizeBicubic({ data: new Uint8Array(5), width: 2, height: 1 }, 1, 1)).toThrow(/bytes/);
  });
});

describe('resizeBicubic is bit-exact against Pillow 9.4', () => {
  for (const c of expected.resize as (Expected & { source: string })[]) {
    it(`${c.source} -> ${c.width}x${c.height}`, async () => {
      expectLikePillow(resizeBicubic(await source(c.source), c.width, c.height), c);
    });
  }

  it('12-megapixel chain: coffee upscaled to 4032x3024, then down to 1148x868', async () => {
    const chain = expected.chain as { source: string; steps: Expected[] };
    let image = await source(chain.source);
    for (const step of chain.steps) {
      image = resizeBicubic(image, step.width, step.height);
      expectLikePillow(image, step);
    }
  });
});
