/**
 * Long prompts (issue "What real users send", item 1): the prefill runs in chunks of whole blocks, which gives the
 * float64 reference's tokens across a chunk boundary; a prompt that, with the answer, does not fit the model's
 * context is refused before any image is encoded (exit 2, `prompt is N tokens; the limit is M`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readConfigJson } from '../src/checkpoint/config.js';
import { PREFILL_CHUNK_ROWS } from '../src/generate/bd3lm.js';
import { runDvl } from './helpers/cli.js';
import { type E2eSettings, pullAndAsk, referenceQwenVlTokens, untilEos } from './helpers/e2e.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-long-'));
const env = { DVL_HOME: path.join(work, 'home') };
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const IMAGE = path.resolve('fixtures/images/chelsea.png');
const PIXELS = { min: 28 * 28, max: 224 * 168 };
const LONG_TEXT = `${Array.from({ length: 45 }, (_, i) => `item ${i} of the list`).join(', ')}. Which item is the last?`;

interface AskJson {
  tokens: number[];
  stats: { nfe: number; prompt_tokens: number };
}

describe('a prompt longer than one prefill chunk', () => {
  it('gives the float64 reference tokens across the chunk boundary, with an image, the prefill counted as one NFE', async () => {
    const config = tinyConfig({ text: { tieWordEmbeddings: false } });
    const dir = path.join(work, 'ckpt');
    const { weights } = writeTinyCheckpoint(dir, { config, seed: 33 });
    // Sampling: every token depends on the whole distribution, so a cache row computed wrongly shows.
    const settings: E2eSettings = { genLength: 12, steps: 4, temperature: 1, topK: 0, topP: 1, remasking: 'low_confidence_static', threshold: 0.85, seed: 4 };
    const out = pullAndAsk<AskJson>(dir, settings, ['--min-pixels', String(PIXELS.min), '--max-pixels', String(PIXELS.max), IMAGE, LONG_TEXT], env);
    // More than one chunk of whole prompt blocks, the image inside the first.
    expect(out.stats.prompt_tokens).toBeGreaterThan(PREFILL_CHUNK_ROWS + 8);
    const reference = await referenceQwenVlTokens({ config, dir, weights, images: [IMAGE], prompt: LONG_TEXT, settings, minPixels: PIXELS.min, maxPixels: PIXELS.max });
    expect(out.tokens).toEqual(untilEos(reference.tokens, config.eosTokenId));
    expect(out.stats.nfe).toBe(reference.nfe - reference.commitCalls);
    expect(new Set(out.tokens).size).toBeGreaterThan(1);
  });
});

describe('the context limit', () => {
  const dir = path.join(work, 'short-context');
  const ask = (args: string[]) => runDvl(['ask', '-m', dir, '--dtype', 'fp32', '--quiet', ...args], { env });

  it('refuses a prompt plus answer beyond max_position_embeddings before any image is encoded (exit 2); the limit is exact', () => {
    writeTinyCheckpoint(dir, { config: tinyConfig(), seed: 5 });
    const json = readConfigJson(dir);
    Object.assign(json, { max_position_embeddings: 400 });
    Object.assign(json.text_config as object, { max_position_embeddings: 400 });
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(json));
    const pixels = ['--min-pixels', String(PIXELS.min), '--max-pixels', String(PIXELS.max)];

    const fits = ask(['--json', '-n', '8', ...pixels, IMAGE, 'What is this?']);
    expect(fits.status, fits.stderr).toBe(0);
    const L = (JSON.parse(fits.stdout) as AskJson).stats.prompt_tokens;
    // Exactly at the limit: answered; one more token to generate: refused.
    expect(ask(['--json', '-n', String(400 - L), ...pixels, IMAGE, 'What is this?']).status).toBe(0);
    const over = ask(['--jsonl', '-n', String(400 - L + 1), ...pixels, IMAGE, 'What is this?']);
    expect(over.status).toBe(2);
    expect(over.stderr).toBe(`dvl: prompt is ${L} tokens; the limit is ${L - 1} (a context of 400 tokens, less the ${400 - L + 1} to generate)\n`);
    // The images were read, never encoded: no vision stage began.
    const stages = over.stdout.trim().split('\n').map((line) => JSON.parse(line) as { type: string; stage?: string }).filter((e) => e.type === 'stage').map((e) => e.stage);
    expect(stages).toEqual(['preprocess']);

    const long = ask(['-n', '8', LONG_TEXT.repeat(3)]);
    expect(long.status).toBe(2);
    expect(long.stderr).toMatch(/^dvl: prompt is \d+ tokens; the limit is 392 \(a context of 400 tokens, less the 8 to generate\)\n$/);
    expect(runDvl(['show', dir], { env }).stdout).toMatch(/^context {5}400 tokens, prompt and answer \(config\.json max_position_embeddings\)$/m);
  });
});
