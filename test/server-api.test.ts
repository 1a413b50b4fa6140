/**
 * `dvl serve` through the official clients (the `openai` and `ollama` npm packages) against the real server
 * on 127.0.0.1 with a tiny fp32 model: the answers, token counts and finish reasons are those of
 * `dvl ask --json` (the real binary) with the same settings; a second question about the same image reuses
 * the cached prompt rows and still gives a fresh run's answer; the listing routes name the model.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { runDvl } from './helpers/cli.js';
import { testServeOptions } from './helpers/test-server.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const IMAGE = path.resolve('fixtures/images/chelsea.png');
const PROMPT = 'What is in the box?';
const FOLLOW_UP = 'And what colour is it?';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-serve-api-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home'), HF_HUB_CACHE: path.join(work, 'hub') };
const SETTINGS = ['--dtype', 'fp32', '-n', '20', '-s', '4', '--min-pixels', '784', '--max-pixels', '3136', '-q'];
/** The same settings as request fields (OpenAI extras / Ollama options). */
const EXTRA = { steps: 4, min_pixels: 784, max_pixels: 3136 };

interface AskJson {
  text: string;
  tokens: number[];
  stopped_at_eos: boolean;
  stats: { prompt_tokens: number; generated_tokens: number; nfe: number };
}

let server: RunningServer;
let client: OpenAI;
let local: { image: AskJson; followUp: AskJson; text: AskJson };
const dataUrl = `data:image/png;base64,${fs.readFileSync(IMAGE).toString('base64')}`;

function askJson(...args: string[]): AskJson {
  const run = runDvl(['ask', '-m', ckpt, ...SETTINGS, '--json', ...args], { env });
  if (run.status !== 0) throw new Error(`dvl ask failed (${run.status}): ${run.stderr}`);
  return JSON.parse(run.stdout) as AskJson;
}

beforeAll(async () => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 });
  // The reference answers first, from the binary (which also converts the model into the shared store).
  local = { image: askJson(IMAGE, PROMPT), followUp: askJson(IMAGE, FOLLOW_UP), text: askJson(PROMPT) };
  server = await startServer(testServeOptions({ pool: { model: ckpt, threads: undefined, env: { ...process.env, ...env } } }));
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
}, 180_000);

afterAll(async () => {
  await server?.close(1000);
  fs.rmSync(work, { recursive: true, force: true });
});

const imageMessage = (text: string) => [{ role: 'user' as const, content: [{ type: 'image_url' as const, image_url: { url: dataUrl } }, { type: 'text' as const, text }] }];

describe('the openai client', () => {
  it('non-streaming chat with a data: image: the answer and token counts of dvl ask --json', async () => {
    const response = await client.chat.completions.create({ model: ckpt, messages: imageMessage(PROMPT), max_tokens: 20, ...EXTRA } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(response.object).toBe('chat.completion');
    expect(response.model).toBe(ckpt);
    expect(response.choices[0].message.role).toBe('assistant');
    expect(response.choices[0].message.content).toBe(local.image.text);
    expect(response.choices[0].finish_reason).toBe(local.image.stopped_at_eos ? 'stop' : 'length');
    expect(response.usage?.prompt_tokens).toBe(local.image.stats.prompt_tokens);
    expect(response.usage?.completion_tokens).toBe(local.image.stats.generated_tokens);
    expect(response.usage?.total_tokens).toBe(local.image.stats.prompt_tokens + local.image.stats.generated_tokens);
    const timings = (response as unknown as { timings: { nfe: number } }).timings;
    expect(timings.nfe).toBe(local.image.stats.nfe);
  });

  it('streaming with include_usage: role first, the text in deltas, finish_reason, a usage chunk without choices', async () => {
    const stream = await client.chat.completions.create({
      model: ckpt,
      messages: imageMessage(PROMPT),
      max_tokens: 20,
      stream: true,
      stream_options: { include_usage: true },
      ...EXTRA,
    } as OpenAI.ChatCompletionCreateParamsStreaming);
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe(local.image.text);
    const finish = chunks.filter((c) => c.choices[0]?.finish_reason);
    expect(finish).toHaveLength(1);
    expect(finish[0].choices[0].finish_reason).toBe(local.image.stopped_at_eos ? 'stop' : 'length');
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage?.completion_tokens).toBe(local.image.stats.generated_tokens);
    expect(last.usage?.prompt_tokens).toBe(local.image.stats.prompt_tokens);
    // Every content delta but the last is a block's committed text: more than one when the answer is long.
    expect(chunks.filter((c) => c.choices[0]?.delta.content).length).toBeGreaterThan(1);
  });

  it('a second question about the same image: cached prompt tokens, and the answer of a fresh dvl ask', async () => {
    await client.chat.completions.create({ model: ckpt, messages: imageMessage(PROMPT), max_tokens: 20, ...EXTRA } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const again = await client.chat.completions.create({ model: ckpt, messages: imageMessage(FOLLOW_UP), max_tokens: 20, ...EXTRA } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(again.choices[0].message.content).toBe(local.followUp.text);
    expect(again.usage?.completion_tokens).toBe(local.followUp.stats.generated_tokens);
    const cached = again.usage?.prompt_tokens_details?.cached_tokens ?? 0;
    expect(cached).toBeGreaterThan(0);
    expect(cached).toBeLessThan(local.followUp.stats.prompt_tokens);
    // The image was not encoded again.
    const timings = (again as unknown as { timings: { vision_ms: number } }).timings;
    expect(timings.vision_ms).toBeLessThan(50);
  });

  it('stop strings: the text ends before the first one and finish_reason is stop', async () => {
    const chars = [...local.text.text];
    expect(chars.length).toBeGreaterThan(6);
    const stop = chars.slice(4, 6).join('');
    const response = await client.chat.completions.create({ model: ckpt, messages: [{ role: 'user', content: PROMPT }], max_tokens: 20, stop, ...EXTRA } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(response.choices[0].message.content).toBe(local.text.text.slice(0, local.text.text.indexOf(stop)));
    expect(response.choices[0].finish_reason).toBe('stop');
  });

  it('lists the model', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toContain(ckpt);
  });
});

describe('the ollama client', () => {
  const ollama = () => new Ollama({ host: server.url });

  it('streaming chat with images: the text of dvl ask, and the final counts', async () => {
    const parts = await ollama().chat({
      model: ckpt,
      messages: [{ role: 'user', content: PROMPT, images: [fs.readFileSync(IMAGE).toString('base64')] }],
      stream: true,
      options: { num_predict: 20, ...EXTRA } as never,
    });
    let text = '';
    let last: { done: boolean; eval_count: number; prompt_eval_count: number; done_reason: string; total_duration: number } | null = null;
    for await (const part of parts) {
      text += part.message.content;
      last = part;
    }
    expect(text).toBe(local.image.text);
    expect(last?.done).toBe(true);
    expect(last?.eval_count).toBe(local.image.stats.generated_tokens);
    expect(last?.prompt_eval_count).toBe(local.image.stats.prompt_tokens);
    expect(last?.done_reason).toBe(local.image.stopped_at_eos ? 'stop' : 'length');
    expect(last?.total_duration).toBeGreaterThan(0);
  });

  it('generate without streaming, text only', async () => {
    const response = await ollama().generate({ model: ckpt, prompt: PROMPT, stream: false, options: { num_predict: 20, ...EXTRA } as never });
    expect(response.response).toBe(local.text.text);
    expect(response.eval_count).toBe(local.text.stats.generated_tokens);
  });

  it('tags, ps, show and version', async () => {
    const client = ollama();
    expect((await client.list()).models.map((m) => m.name)).toContain(ckpt);
    const ps = await client.ps();
    expect(ps.models.map((m) => m.name)).toEqual([ckpt]);
    expect((await client.show({ model: ckpt })).capabilities).toContain('vision');
    expect((await client.version()).version).toMatch(/^\d+\.\d+\.\d+/);
  });
});
