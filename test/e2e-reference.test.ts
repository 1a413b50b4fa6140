/**
 * The whole product against an independent reference: `dvl pull` + `dvl ask --json` (the real binary, fp32)
 * must produce the same tokens as a float64 re-implementation of the reference pipeline written in test code:
 * vision tower (test/reference/vision-tower.ts), text decoder without a KV cache (test/reference/text-decoder.ts)
 * and a naive generate_with_bd3lm (test/reference/bd3lm-reference.ts). Only preprocessing and the prompt
 * builder are shared with the product (each has its own tests against Pillow and hand-assembled ids).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ModelConfig } from '../src/models/qwen25vl/types.js';
import { type E2eSettings, GREEDY, pullAndAsk, referenceQwenVlTokens, untilEos } from './helpers/e2e.js';
import type { MemoryWeights } from './helpers/random-weights.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-e2e-'));
const home = path.join(work, 'home');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const IMAGE = path.resolve('fixtures/images/chelsea.png');

interface Case {
  name: string;
  config: ModelConfig;
  seed: number;
  images: string[];
  prompt: string;
  args: string[];
  settings: E2eSettings;
  minPixels: number;
  maxPixels: number;
}

/** The reference pipeline for one case, in float64 except where the reference itself holds float32 tensors. */
const referenceTokens = (c: Case, dir: string, weights: MemoryWeights) =>
  referenceQwenVlTokens({ config: c.config, dir, weights, images: c.images, prompt: c.prompt, settings: c.settings, minPixels: c.minPixels, maxPixels: c.maxPixels });


const greedy = GREEDY;
const cases: Case[] = [
  {
    name: 'image prompt, GQA 4/2, B=8, S=8 (prompt tail not a whole block)',
    config: tinyConfig({ text: { tieWordEmbeddings: false } }),
    seed: 11,
    images: [IMAGE],
    prompt: 'Describe this image.',
    args: [],
    settings: { genLength: 20, steps: 8, ...greedy },
    minPixels: 28 * 28,
    maxPixels: 224 * 168,
  },
  {
    name: 'text only, MHA 2/2, B=4, S=3, dynamic remasking, window of 2 merged units',
    config: tinyConfig({ text: { tieWordEmbeddings: false, numHeads: 2, numKvHeads: 2, hiddenSize: 48, numLayers: 3 }, vision: { windowSize: 56 }, blockSize: 4 }),
    seed: 12,
    images: [],
    prompt: 'What is block diffusion?',
    args: [],
    settings: { genLength: 14, steps: 3, ...greedy, remasking: 'low_confidence_dynamic', threshold: 0.3 },
    minPixels: 28 * 28,
    maxPixels: 224 * 224,
  },
  {
    name: 'image prompt, 8 query heads on 1 KV head, sampling with top-k/top-p and a seed, S > B',
    config: tinyConfig({ text: { tieWordEmbeddings: false, numHeads: 8, numKvHeads: 1, hiddenSize: 64 }, vision: { depth: 3, fullattBlockIndexes: [2] } }),
    seed: 13,
    images: [IMAGE],
    prompt: 'Is there a cat?',
    args: [],
    settings: { genLength: 10, steps: 10, temperature: 0.8, topK: 50, topP: 0.9, remasking: 'low_confidence_static', threshold: 0.85, seed: 7 },
    minPixels: 28 * 28,
    maxPixels: 140 * 196,
  },
  {
    name: 'odd shapes: head dims 12, 3 layers, intermediate 72, vision depth 2 with one full-attention block',
    config: tinyConfig({
      text: { tieWordEmbeddings: false, hiddenSize: 96, numHeads: 8, numKvHeads: 2, intermediateSize: 72, numLayers: 3 },
      vision: { hiddenSize: 48, numHeads: 4, intermediateSize: 40, depth: 2, fullattBlockIndexes: [0] },
      blockSize: 8,
    }),
    seed: 14,
    images: [IMAGE],
    prompt: 'Count the objects.',
    args: [],
    settings: { genLength: 12, steps: 4, ...greedy },
    minPixels: 28 * 28,
    maxPixels: 252 * 140,
  },
];

describe('dvl ask (fp32) reproduces the reference generation token for token', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const dir = path.join(work, c.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 40));
      const { weights } = writeTinyCheckpoint(dir, { config: c.config, seed: c.seed, shards: 2 });
      const env = { DVL_HOME: home };
      const pixels = ['--min-pixels', String(c.minPixels), '--max-pixels', String(c.maxPixels)];
      const out = pullAndAsk<{ tokens: number[]; stats: { nfe: number } }>(dir, c.settings, [...pixels, ...c.args, ...c.images, c.prompt], env);

      const reference = await referenceTokens(c, dir, weights);
      expect(out.tokens).toEqual(untilEos(reference.tokens, c.config.eosTokenId));
      // dvl makes every reference call except its commit calls: each is fused into the next block's first
      // denoising call, or skipped when no block follows (the last block, or the block holding EOS).
      expect(reference.commitCalls).toBeGreaterThan(0);
      expect(out.stats.nfe).toBe(reference.nfe - reference.commitCalls);
      // The case must exercise generation, not a degenerate model that only predicts masks.
      expect(out.tokens).not.toContain(c.config.maskTokenId);
      expect(new Set(out.tokens).size, `tokens ${out.tokens.join(',')}`).toBeGreaterThan(1);
    });
  }
});
