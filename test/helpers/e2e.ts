/**
 * What the end-to-end reference tests (e2e-reference, e2e-siglip) share: `dvl pull` + `dvl ask --json` through the
 * real binary, and the reference side's prompt rows and naive generation (float64 decoder, lazily evaluated).
 */
import { expect } from 'vitest';
import type { TextConfig } from '../../src/checkpoint/types.js';
import type { ModelConfig } from '../../src/models/qwen25vl/types.js';
import { createRng } from '../../src/generate/rng.js';
import { preprocessImage } from '../../src/models/qwen25vl/preprocess.js';
import { buildPrompt } from '../../src/prompt/conversation.js';
import { TextTokenizer } from '../../src/prompt/tokenizer.js';
import { type ForwardRow, referenceGenerate, type ReferenceResult } from '../reference/bd3lm-reference.js';
import { lazyLogits } from '../reference/text-decoder.js';
import { referenceVisionTower } from '../reference/vision-tower.js';
import { runDvl } from './cli.js';
import type { MemoryWeights } from './random-weights.js';

export interface E2eSettings {
  genLength: number;
  steps: number;
  temperature: number;
  topK: number;
  topP: number;
  remasking: 'low_confidence_static' | 'low_confidence_dynamic';
  threshold: number;
  seed?: number;
}

export const GREEDY = { temperature: 0, topK: 0, topP: 1, remasking: 'low_confidence_static' as const, threshold: 0.85 };

/** Converts `dir` (fp32) and asks; any stderr output or a failing exit fails the test. Returns the --json object. */
export function pullAndAsk<T>(dir: string, s: E2eSettings, extra: string[], env: NodeJS.ProcessEnv): T {
  const pull = runDvl(['pull', dir, '--dtype', 'fp32', '--quiet'], { env });
  expect(pull.stderr).toBe('');
  expect(pull.status).toBe(0);
  const run = runDvl(
    [
      'ask', '--model', dir, '--dtype', 'fp32', '--json', '--quiet',
      '--gen-length', String(s.genLength), '--steps', String(s.steps), '--temperature', String(s.temperature),
      '--top-k', String(s.topK), '--top-p', String(s.topP), '--remasking', s.remasking, '--threshold', String(s.threshold),
      ...(s.seed === undefined ? [] : ['--seed', String(s.seed)]),
      ...extra,
    ],
    { env },
  );
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  return JSON.parse(run.stdout) as T;
}

/** The prompt's rows as the reference splices them: token embeddings, each image's rows at its placeholder. */
export function referencePrompt(dir: string, weights: MemoryWeights, hidden: number, text: string, imageRows: Float32Array[][]): Float32Array[] {
  const tokenizer = TextTokenizer.load(dir);
  const segments = buildPrompt(tokenizer, { turns: [{ role: 'user', text, images: imageRows.length }] });
  const prompt: Float32Array[] = [];
  for (const s of segments) {
    if (s.kind === 'tokens') for (const id of s.ids) prompt.push(embedRow(weights, hidden, id));
    else prompt.push(...imageRows[s.index]);
  }
  return prompt;
}

/** The naive reference generate over the float64 decoder. */
export function referenceRun(
  weights: MemoryWeights,
  config: { text: TextConfig; maskTokenId: number; eosTokenId: number },
  prompt: Float32Array[],
  s: E2eSettings,
  blockSize: number,
  siglipFamily = false,
): ReferenceResult {
  const H = config.text.hiddenSize;
  const rng = s.seed === undefined ? undefined : createRng(s.seed);
  return referenceGenerate({
    fullForward: (rows: ForwardRow[], attend) => lazyLogits(weights, config, rows, attend),
    embedRow: (id) => embedRow(weights, H, id),
    vocabSize: config.text.vocabSize,
    prompt,
    genLength: s.genLength,
    steps: s.steps,
    blockSize,
    temperature: s.temperature,
    topK: s.topK,
    topP: s.topP,
    remasking: s.remasking,
    threshold: s.threshold,
    nextFloat: rng ? () => rng.nextFloat() : undefined,
    maskTokenId: config.maskTokenId,
    eosTokenId: config.eosTokenId,
    siglipFamily,
  });
}

/** The generated ids up to, not including, the first EOS (what `dvl ask --json` reports as tokens). */
export function untilEos(tokens: number[], eos: number): number[] {
  const at = tokens.indexOf(eos);
  return at < 0 ? tokens : tokens.slice(0, at);
}

const embedRow = (weights: MemoryWeights, hidden: number, id: number) => weights.get('model.embed_tokens.weight').data.subarray(id * hidden, (id + 1) * hidden);

/**
 * The whole QwenVL-family reference pipeline for one question: images preprocessed with the given budget, the
 * float64 vision tower, the prompt spliced as the reference does, the naive generate with the config's block size.
 */
export async function referenceQwenVlTokens(c: {
  config: ModelConfig;
  dir: string;
  weights: MemoryWeights;
  images: string[];
  prompt: string;
  settings: E2eSettings;
  minPixels: number;
  maxPixels: number;
}): Promise<{ tokens: number[]; nfe: number; commitCalls: number }> {
  const H = c.config.text.hiddenSize;
  const imageRows: Float32Array[][] = [];
  for (const image of c.images) {
    const pre = await preprocessImage(image, { minPixels: c.minPixels, maxPixels: c.maxPixels });
    const merged = referenceVisionTower(c.weights, c.config.vision, pre.patches, pre.gridThw);
    const rows: Float32Array[] = [];
    for (let r = 0; r < merged.length / H; r++) rows.push(Float32Array.from(merged.subarray(r * H, (r + 1) * H)));
    imageRows.push(rows);
  }
  const prompt = referencePrompt(c.dir, c.weights, H, c.prompt, imageRows);
  const result = referenceRun(c.weights, c.config, prompt, c.settings, c.config.blockSize);
  return { tokens: result.tokens, nfe: result.nfe, commitCalls: result.commitCalls };
}
