/**
 * The SigLIP family (DiffusionVL-Qwen2.5) end to end: `dvl pull` + `dvl ask --json` (the real binary, fp32) on
 * tiny checkpoints in the training layout must produce the tokens of a float64 reference of the reference
 * pipeline written in test code: the SigLIP tower and projector (test/reference/siglip-tower.ts), the text
 * decoder without a KV cache (test/reference/text-decoder.ts) and a naive generate_with_bd3lm with the
 * family's two differences (test/reference/bd3lm-reference.ts, siglipFamily). Shared with the product: the
 * image crops (anyres.ts, checked bit for bit against Pillow), the image-token assembly (image-tokens.ts,
 * checked against its own float64 reference) and the prompt builder.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SiglipQwenConfig } from '../src/models/siglip-qwen/types.js';
import { cropsForImage, normalizeCrop, padCrop } from '../src/models/siglip-qwen/anyres.js';
import { assembleImageTokens, padImageTokens } from '../src/models/siglip-qwen/image-tokens.js';
import { decodeImage } from '../src/preprocess/decode.js';
import { type E2eSettings, GREEDY, pullAndAsk, referencePrompt, referenceRun, untilEos } from './helpers/e2e.js';
import type { MemoryWeights } from './helpers/random-weights.js';
import { writeTinySiglipCheckpoint, type TinySiglipOptions } from './helpers/tiny-siglip.js';
import { referenceSiglipTower } from './reference/siglip-tower.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-e2e-siglip-'));
const home = path.join(work, 'home');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const WIDE = path.resolve('fixtures/images/chelsea.png'); // 451x300: a 2x1 grid, unpadded rows
const TALL = path.join(work, 'tall.png'); // 200x610: a 1x2 grid, unpadded columns
const SQUARE = path.resolve('fixtures/images/astronaut-256.png');

beforeAll(async () => {
  await sharp(path.resolve('fixtures/images/coffee.jpg')).resize(200, 610, { fit: 'fill' }).png().toFile(TALL);
});

interface Case {
  name: string;
  checkpoint: TinySiglipOptions;
  images: string[];
  prompt: string;
  args: string[];
  settings: E2eSettings;
  /** --tiles / --image-mode as the product gets them. */
  tiles?: number;
  imageMode?: 'pad';
  blockSize?: number;
  /** What the case must exercise (checked on the product's --json). */
  expectImages?: { crops: number; tokens?: number }[];
}

const greedy = GREEDY;

const cases: Case[] = [
  {
    name: 'one wide image, vision_config (last layer stored, not run), anyres_max_4, B=8, S=8',
    checkpoint: { seed: 31, visionConfig: true },
    images: [WIDE],
    prompt: 'Describe this image.',
    args: [],
    settings: { genLength: 16, steps: 8, ...greedy },
    // 64 base tokens + an unpadded 8x12 map with a newline per row.
    expectImages: [{ crops: 3, tokens: 64 + 8 * 13 }],
  },
  {
    name: 'one tall image, tower inferred from the weights (16 heads), --tiles 1: the map is downsampled',
    checkpoint: { seed: 38, vision: { hiddenSize: 64, intermediateSize: 80 }, text: { numHeads: 8, numKvHeads: 2 } },
    images: [TALL],
    prompt: 'What is in the cup?',
    args: ['--tiles', '1'],
    tiles: 1,
    settings: { genLength: 12, steps: 4, ...greedy },
    // 1x2 grid: a 16x8 map, unpadded to 16x6 columns, t = sqrt(96 / 64) ≈ 1.22 -> 13x4, + a newline per row.
    expectImages: [{ crops: 3, tokens: 64 + 13 * 5 }],
  },
  {
    name: 'two images (pad mode, one crop each), sampling with top-k and a seed: the plain-softmax confidence',
    checkpoint: { seed: 33, visionConfig: true, text: { numLayers: 3 } },
    images: [WIDE, SQUARE],
    prompt: 'Compare the two pictures.',
    args: [],
    settings: { genLength: 12, steps: 6, temperature: 0.9, topK: 40, topP: 1, remasking: 'low_confidence_static', threshold: 0.85, seed: 5 },
    expectImages: [{ crops: 1, tokens: 65 }, { crops: 1, tokens: 65 }],
  },
  {
    name: 'text only, full-diffusion ablation (block 64 >= L+G): the schedule splits the generation length',
    checkpoint: { seed: 34, visionConfig: true },
    images: [],
    prompt: 'Hi',
    args: ['--block-size', '64'],
    blockSize: 64,
    settings: { genLength: 10, steps: 3, ...greedy, remasking: 'low_confidence_dynamic', threshold: 0.2 },
  },
  {
    name: 'one image in pad mode (--image-mode pad, the cheapest setting)',
    checkpoint: { seed: 35, visionConfig: true },
    images: [SQUARE],
    prompt: 'Describe this image.',
    args: ['--image-mode', 'pad'],
    imageMode: 'pad',
    settings: { genLength: 10, steps: 4, ...greedy },
    expectImages: [{ crops: 1, tokens: 65 }],
  },
];

/** One image's prompt rows through the float64 tower, as the reference pipeline computes them. */
async function referenceImageRows(file: string, config: SiglipQwenConfig, weights: MemoryWeights, mode: 'anyres' | 'pad', maxTiles: number): Promise<Float32Array[]> {
  const D = config.text.hiddenSize;
  const rgb = await decodeImage(file);
  const anyres = mode === 'anyres' ? cropsForImage(rgb, config.pinpoints) : null;
  const crops = anyres ? anyres.crops : [padCrop(rgb)];
  const S = 384;
  const pixels = new Float32Array(crops.length * 3 * S * S);
  crops.forEach((crop, k) => normalizeCrop(crop, pixels, k * 3 * S * S));
  const features = Float32Array.from(referenceSiglipTower(weights, config.vision, D, pixels, crops.length));
  const newline = weights.get('model.image_newline').data;
  const perSide = Math.floor(S / config.vision.patchSize);
  const tokens = anyres
    ? assembleImageTokens(features, { origW: rgb.width, origH: rgb.height, grid: anyres.grid, tokensPerSide: perSide, hidden: D, maxTiles, newline })
    : padImageTokens(features, newline);
  return Array.from({ length: tokens.length / D }, (_, r) => tokens.slice(r * D, (r + 1) * D));
}

async function referenceTokens(c: Case, dir: string, config: SiglipQwenConfig, weights: MemoryWeights) {
  const mode = c.imageMode === 'pad' || c.images.length > 1 ? 'pad' : 'anyres';
  const imageRows: Float32Array[][] = [];
  for (const image of c.images) imageRows.push(await referenceImageRows(image, config, weights, mode, c.tiles ?? config.anyresMax!));
  const prompt = referencePrompt(dir, weights, config.text.hiddenSize, c.prompt, imageRows);
  return referenceRun(weights, config, prompt, c.settings, c.blockSize ?? config.blockSize, true);
}


describe('dvl ask (fp32) on the SigLIP family reproduces the reference generation token for token', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const dir = path.join(work, c.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 40));
      const { config, weights } = writeTinySiglipCheckpoint(dir, { ...c.checkpoint, shards: 2 });
      const env = { DVL_HOME: home };
      const out = pullAndAsk<{ tokens: number[]; images: { crops: number; tokens: number }[] }>(dir, c.settings, [...c.args, ...c.images, c.prompt], env);
      for (const [i, want] of (c.expectImages ?? []).entries()) {
        expect(out.images[i].crops).toBe(want.crops);
        if (want.tokens !== undefined) expect(out.images[i].tokens).toBe(want.tokens);
      }

      const reference = await referenceTokens(c, dir, config, weights);
      expect(out.tokens).toEqual(untilEos(reference.tokens, config.eosTokenId));
      expect(out.tokens).not.toContain(config.maskTokenId);
      expect(new Set(out.tokens).size, `tokens ${out.tokens.join(',')}`).toBeGreaterThan(1);
    });
  }
});
