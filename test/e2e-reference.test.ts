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
import type { ModelConfig } from '../src/checkpoint/types.js';
import { createRng } from '../src/generate/rng.js';
import { preprocessImage } from '../src/preprocess/index.js';
import { buildPrompt } from '../src/prompt/conversation.js';
import { TextTokenizer } from '../src/prompt/tokenizer.js';
import { runDvl } from './helpers/cli.js';
import type { MemoryWeights } from './helpers/random-weights.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';
import { type ForwardRow, referenceGenerate } from './reference/bd3lm-reference.js';
import { referenceDecoderForward } from './reference/text-decoder.js';
import { referenceVisionTower } from './reference/vision-tower.js';

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
  settings: { genLength: number; steps: number; temperature: number; topK: number; topP: number; remasking: 'low_confidence_static' | 'low_confidence_dynamic'; threshold: number; seed?: number };
  minPixels: number;
  maxPixels: number;
}

/** The reference pipeline for one case, in float64 except where the reference itself holds float32 tensors. */
async function referenceTokens(c: Case, dir: string, weights: MemoryWeights): Promise<{ tokens: number[]; nfe: number; commitCalls: number }> {
  const { config } = c;
  const H = config.text.hiddenSize;
  const tokenizer = TextTokenizer.load(dir);
  const embedRow = (id: number) => weights.get('model.embed_tokens.weight').data.subarray(id * H, (id + 1) * H);
  const imageRows: Float32Array[][] = [];
  for (const image of c.images) {
    const pre = await preprocessImage(image, { minPixels: c.minPixels, maxPixels: c.maxPixels });
    const merged = referenceVisionTower(weights, config.vision, pre.patches, pre.gridThw);
    const rows: Float32Array[] = [];
    for (let r = 0; r < merged.length / H; r++) rows.push(Float32Array.from(merged.subarray(r * H, (r + 1) * H)));
    imageRows.push(rows);
  }
  const segments = buildPrompt(tokenizer, { turns: [{ role: 'user', text: c.prompt, images: c.images.length }] });
  const prompt: Float32Array[] = [];
  for (const s of segments) {
    if (s.kind === 'tokens') for (const id of s.ids) prompt.push(embedRow(id));
    else prompt.push(...imageRows[s.index]);
  }
  const rng = c.settings.seed === undefined ? undefined : createRng(c.settings.seed);
  const result = referenceGenerate({
    fullForward: (rows: ForwardRow[], attend) => lazyLogits(weights, config, rows, attend),
    embedRow,
    vocabSize: config.text.vocabSize,
    prompt,
    genLength: c.settings.genLength,
    steps: c.settings.steps,
    blockSize: config.blockSize,
    temperature: c.settings.temperature,
    topK: c.settings.topK,
    topP: c.settings.topP,
    remasking: c.settings.remasking,
    threshold: c.settings.threshold,
    nextFloat: rng ? () => rng.nextFloat() : undefined,
    maskTokenId: config.maskTokenId,
    eosTokenId: config.eosTokenId,
  });
  return { tokens: result.tokens, nfe: result.nfe, commitCalls: result.commitCalls };
}

/**
 * The naive reference asks for logits of every row but only reads a suffix (the block); computing all
 * 152k-wide rows would dominate the test. Rows are computed on first access, from that row to the end.
 */
function lazyLogits(weights: MemoryWeights, config: ModelConfig, rows: ForwardRow[], attend: (i: number, j: number) => boolean): Float64Array[] {
  const H = config.text.hiddenSize;
  const embeds = new Float64Array(rows.length * H);
  rows.forEach((r, i) => embeds.set(r.embed, i * H));
  const positions = rows.map((r) => r.position);
  const computed = new Map<number, Float64Array>();
  const out: Float64Array[] = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    Object.defineProperty(out, i, {
      enumerable: true,
      get() {
        if (!computed.has(i)) {
          const logitRows = Array.from({ length: rows.length - i }, (_, k) => i + k);
          const { logits } = referenceDecoderForward(weights, config, { embeds, positions, attend, logitRows });
          logitRows.forEach((row, k) => computed.set(row, logits[k]));
        }
        return computed.get(i)!;
      },
    });
  }
  return out;
}

function cliArgs(c: Case, dir: string): string[] {
  const s = c.settings;
  return [
    'ask', '--model', dir, '--dtype', 'fp32', '--json', '--quiet',
    '--gen-length', String(s.genLength), '--steps', String(s.steps), '--temperature', String(s.temperature),
    '--top-k', String(s.topK), '--top-p', String(s.topP), '--remasking', s.remasking, '--threshold', String(s.threshold),
    '--min-pixels', String(c.minPixels), '--max-pixels', String(c.maxPixels),
    ...(s.seed === undefined ? [] : ['--seed', String(s.seed)]),
    ...c.args, ...c.images, c.prompt,
  ];
}

const greedy = { temperature: 0, topK: 0, topP: 1, remasking: 'low_confidence_static' as const, threshold: 0.85 };
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
      const pull = runDvl(['pull', dir, '--dtype', 'fp32', '--quiet'], { env });
      expect(pull.stderr).toBe('');
      expect(pull.status).toBe(0);
      const run = runDvl(cliArgs(c, dir), { env });
      expect(run.stderr).toBe('');
      expect(run.status).toBe(0);
      const out = JSON.parse(run.stdout) as { tokens: number[]; stats: { nfe: number } };

      const reference = await referenceTokens(c, dir, weights);
      const eos = reference.tokens.indexOf(c.config.eosTokenId);
      const expected = eos < 0 ? reference.tokens : reference.tokens.slice(0, eos);
      expect(out.tokens).toEqual(expected);
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
