/**
 * Every command with the SigLIP family (a tiny DiffusionVL-Qwen2.5 checkpoint, fp32): `list` and `show` describe
 * it, and `batch`, a scripted `chat`, `serve` (through the official openai client, and `ask --host`) and an
 * in-process worker answer exactly what `dvl ask --json` answers, crops and all; a chat's second image switches
 * the conversation to pad mode, as the reference does for several images.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { runDvl, runDvlAsync } from './helpers/cli.js';
import { testServeOptions } from './helpers/test-server.js';
import { writeTinySiglipCheckpoint } from './helpers/tiny-siglip.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-siglip-cmd-'));
const ckpt = path.join(work, 'tiny-siglip');
const env = { DVL_HOME: path.join(work, 'home') };
const OPTS = ['-m', ckpt, '--dtype', 'fp32', '-n', '16', '-s', '4', '--threads', '1', '--seed', '3', '-q'];
const IMAGE = path.resolve('fixtures/images/chelsea.png');
const SECOND = path.resolve('fixtures/images/astronaut-256.png');
const PROMPT = 'Describe this image.';

interface AskJson {
  text: string;
  tokens: number[];
  images: { crops: number; tokens: number }[];
  stats: { prompt_tokens: number; generated_tokens: number };
}
let local: AskJson;

beforeAll(() => {
  writeTinySiglipCheckpoint(ckpt, { seed: 31, visionConfig: true });
  const run = runDvl(['ask', ...OPTS, '--json', IMAGE, PROMPT], { env });
  expect(run.status, run.stderr).toBe(0);
  local = JSON.parse(run.stdout) as AskJson;
  expect(local.images[0].crops).toBe(3);
}, 120_000);

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('the SigLIP family in every command', () => {
  it('list and show describe it', () => {
    const list = runDvl(['list'], { env });
    expect(list.status).toBe(0);
    expect(list.stdout).toContain(ckpt);
    const show = runDvl(['show', ckpt], { env });
    expect(show.status, show.stderr).toBe(0);
    expect(show.stdout).toMatch(/type\s+diffusionvl_qwen/);
    expect(show.stdout).toMatch(/vision\s+SigLIP, 2 layers run, hidden 32, 4 heads, 64 tokens per 384-pixel crop/);
    expect(show.stdout).toMatch(/images\s+anyres_max_4 over 36 grids/);
  });

  it('batch and a scripted chat answer what ask answers; a second image in the chat means pad mode', () => {
    const input = `${JSON.stringify({ image: IMAGE, prompt: PROMPT })}\n`;
    const batchRun = runDvl(['batch', ...OPTS], { env, input });
    expect(batchRun.status, batchRun.stderr).toBe(0);
    expect(JSON.parse(batchRun.stdout).text).toBe(local.text);

    const chat = runDvl(['chat', ...OPTS, '--verbose', IMAGE], { env, input: `${PROMPT}\n/image ${SECOND}\nAnd this one?\n` });
    expect(chat.status, chat.stderr).toBe(0);
    expect(chat.stdout.startsWith(`${local.text}\n`)).toBe(true);
    // The second question has two images in the conversation: each becomes one crop of 64 + 1 tokens.
    expect(chat.stderr).toMatch(/image 1: 256x256 -> 384x384, 1 crop, 65 tokens/);
    const twoImages = runDvl(['ask', ...OPTS, '--json', IMAGE, SECOND, PROMPT], { env });
    expect(JSON.parse(twoImages.stdout).images.map((i: { crops: number }) => i.crops)).toEqual([1, 1]);
  });

  describe('dvl serve', () => {
    let server: RunningServer;
    beforeAll(async () => {
      server = await startServer(testServeOptions({ maxQueue: 4, pool: { model: ckpt, env: { ...process.env, ...env } } }));
    }, 60_000);
    afterAll(() => server?.close(1000));

    it('the openai client and ask --host get the answer of dvl ask', async () => {
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const url = `data:image/png;base64,${fs.readFileSync(IMAGE).toString('base64')}`;
      const response = await client.chat.completions.create({
        model: ckpt,
        messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url } }, { type: 'text', text: PROMPT }] }],
        max_tokens: 16,
        steps: 4,
        seed: 3,
      } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      expect(response.choices[0].message.content).toBe(local.text);
      expect(response.usage?.prompt_tokens).toBe(local.stats.prompt_tokens);
      // --image-mode pad on the API: one crop, fewer prompt tokens.
      const pad = await client.chat.completions.create({
        model: ckpt,
        messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url } }, { type: 'text', text: PROMPT }] }],
        max_tokens: 16,
        steps: 4,
        image_mode: 'pad',
      } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      expect(pad.usage!.prompt_tokens).toBe(local.stats.prompt_tokens - local.images[0].tokens + 65);

      const remote = await runDvlAsync(['ask', ...OPTS, '--host', server.url, '--json', IMAGE, PROMPT], env);
      expect(remote.status, remote.stderr).toBe(0);
      const json = JSON.parse(remote.stdout) as AskJson;
      expect(json.text).toBe(local.text);
      expect(json.images).toEqual(local.images);
    });
  });
});
