/**
 * Long prompts (issue "What real users send", item 1): the prefill runs in chunks of whole blocks, which gives the
 * float64 reference's tokens across a chunk boundary; a prompt that, with the answer, does not fit the model's
 * context is refused before any image is encoded (exit 2, `prompt is N tokens; the limit is M`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import { afterAll, describe, expect, it } from 'vitest';
import { readConfigJson } from '../src/checkpoint/config.js';
import { PREFILL_CHUNK_ROWS } from '../src/generate/bd3lm.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { runDvl } from './helpers/cli.js';
import { testServeOptions, waitHealthy } from './helpers/test-server.js';
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

describe('the context limit on the APIs', () => {
  const dir = path.join(work, 'short-context');
  let server: RunningServer;
  const dataUrl = `data:image/png;base64,${fs.readFileSync(IMAGE).toString('base64')}`;
  const extra = { min_pixels: PIXELS.min, max_pixels: PIXELS.max };
  afterAll(async () => {
    await server?.close(1000);
  });

  it('answers 400 (never a 500, never a stream) with the CLI message; num_ctx and --ctx-size lower the limit; /api/show and dvl show say it', async () => {
    // The 400-token checkpoint of the test above, converted there.
    const L = (JSON.parse(runDvl(['ask', '-m', dir, '--dtype', 'fp32', '--quiet', '--json', '-n', '8', '--min-pixels', String(PIXELS.min), '--max-pixels', String(PIXELS.max), IMAGE, 'What is this?'], { env }).stdout) as AskJson).stats.prompt_tokens;
    server = await startServer(testServeOptions({ ctxSize: 390, pool: { model: dir, env: { ...process.env, ...env } } }));
    await waitHealthy(server.url);
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const messages = [{ role: 'user' as const, content: [{ type: 'image_url' as const, image_url: { url: dataUrl } }, { type: 'text' as const, text: 'What is this?' }] }];
    const ask = (maxTokens: number, stream: boolean) => client.chat.completions.create({ model: dir, messages, max_tokens: maxTokens, stream, ...extra } as OpenAI.ChatCompletionCreateParams);
    // --ctx-size 390: exactly at the limit answers; one more token is a 400, streamed or not.
    await expect(ask(390 - L, false)).resolves.toBeTruthy();
    for (const stream of [false, true]) {
      const error = (await ask(390 - L + 1, stream).then(() => null, (e: unknown) => e)) as InstanceType<typeof OpenAI.APIError>;
      expect(error?.status).toBe(400);
      expect(error.message).toContain(`prompt is ${L} tokens; the limit is ${L - 1} (a context of 390 tokens, less the ${390 - L + 1} to generate)`);
    }
    // Ollama's num_ctx lowers it further for one request.
    const ollama = new Ollama({ host: server.url });
    const image = fs.readFileSync(IMAGE).toString('base64');
    const refused = await ollama.chat({ model: dir, messages: [{ role: 'user', content: 'What is this?', images: [image] }], options: { num_predict: 8, num_ctx: L + 7, ...extra } as never, stream: false }).then(() => null, (e: unknown) => e as { status_code?: number; error?: string });
    expect(refused?.status_code).toBe(400);
    expect(refused?.error).toMatch(`prompt is ${L} tokens; the limit is ${L - 1} (a context of ${L + 7} tokens, less the 8 to generate)`);
    const fine = await ollama.chat({ model: dir, messages: [{ role: 'user', content: 'What is this?', images: [image] }], options: { num_predict: 8, num_ctx: L + 8, ...extra } as never, stream: false });
    expect(fine.done).toBe(true);
    const show = await ollama.show({ model: dir });
    expect(show.parameters).toContain('num_ctx 390');
    expect((show.model_info as unknown as Record<string, number>)['diffusionvl_qwenvl.context_length']).toBe(390);
  });
});
