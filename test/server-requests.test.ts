/**
 * What real clients send to `dvl serve`, against the real server on 127.0.0.1 with a tiny fp32 model served
 * as `-m` with a relative path: the model listed once (as the store names it) and found under both spellings,
 * `models.retrieve` of ids with slashes, parameter_size, 405 for a wrong method, error messages in the API's
 * words (no validator or framework internals), token counts with a stop string, empty questions, and the
 * access log's client address after the client left.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextTokenizer } from '../src/prompt/tokenizer.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';
import { testServeOptions, waitHealthy } from './helpers/test-server.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-serve-requests-'));
const ckpt = path.join(work, 'tiny');
/** The same directory as `dvl serve -m ../../tmp/.../tiny` would be given it. */
const relative = path.relative(process.cwd(), ckpt);
const env = { DVL_HOME: path.join(work, 'home'), HF_HUB_CACHE: path.join(work, 'hub'), HF_HUB_OFFLINE: '1' };
const PROMPT = 'What is in the box?';
const EXTRA = { steps: 4 };

let server: RunningServer;
let client: OpenAI;
const log: string[] = [];
const poolLog: string[] = [];
let local: { text: string; tokens: number[] };

beforeAll(async () => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 });
  const run = runDvl(['ask', '-m', ckpt, '--dtype', 'fp32', '-n', '24', '-s', '4', '-q', '--json', PROMPT], { env });
  if (run.status !== 0) throw new Error(`dvl ask failed (${run.status}): ${run.stderr}`);
  local = JSON.parse(run.stdout) as { text: string; tokens: number[] };
  server = await startServer(testServeOptions({ log: (line) => log.push(line), pool: { model: relative, log: (line) => poolLog.push(line), env: { ...process.env, ...env } } }));
  await waitHealthy(server.url);
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
}, 180_000);

afterAll(async () => {
  await server?.close(1000);
  fs.rmSync(work, { recursive: true, force: true });
});

const post = (route: string, body: unknown) =>
  fetch(`${server.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });

async function openAiError(response: Response, status: number) {
  const text = await response.text();
  expect(response.status, text).toBe(status);
  const body = JSON.parse(text) as { error: { message: string; type: string; param: string | null; code: string } };
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  return body.error;
}

async function ollamaError(response: Response, status: number): Promise<string> {
  const text = await response.text();
  expect(response.status, text).toBe(status);
  const body = JSON.parse(text) as { error: string };
  expect(Object.keys(body)).toEqual(['error']);
  return body.error;
}

/** Nothing of ajv, Fastify or JSON-schema wording in a message meant for the user. */
function expectPlain(message: string) {
  expect(message).not.toMatch(/anyOf|must match|schema|body\/|FST_|\bajv\b|instancePath|must NOT/i);
}

describe('models', () => {
  /** The tiny model's parameters by hand (tinyConfig, untied lm_head): the decoder's and the tower's. */
  const V = 151680;
  const H = 64;
  const layer = H + (H * H + H) + 2 * (32 * H + 32) + H * H + H + 3 * 96 * H;
  const text = V * H + 2 * layer + H + V * H;
  const block = 32 + (96 * 32 + 96) + (32 * 32 + 32) + 32 + 2 * (48 * 32 + 48) + (32 * 48 + 32);
  const vision = 32 * 3 * 2 * 14 * 14 + 4 * block + 32 + (128 * 128 + 128) + (64 * 128 + 64);

  it('a local checkpoint given as a relative path is listed once, under its absolute path, with its parameter size', async () => {
    expect(text + vision).toBe(19_575_584);
    const listed = await client.models.list();
    expect(listed.data.map((m) => m.id)).toEqual([ckpt]);
    const tags = (await (await fetch(`${server.url}/api/tags`)).json()) as { models: { name: string; details: { family: string; parameter_size: string } }[] };
    expect(tags.models.map((m) => m.name)).toEqual([ckpt]);
    expect(tags.models[0].details.parameter_size).toBe('19.58M');
    const ollama = new Ollama({ host: server.url });
    const ps = await ollama.ps();
    expect(ps.models.map((m) => m.name)).toEqual([ckpt]);
    expect(tags.models[0].details.family).toBe(ps.models[0].details.family);
    for (const spelling of [ckpt, relative]) {
      const show = await ollama.show({ model: spelling });
      expect(show.details.parameter_size).toBe('19.58M');
      expect(show.details.family).toBe(ps.models[0].details.family);
    }
  });

  it('both spellings answer, from the one loaded model', async () => {
    for (const model of [relative, ckpt]) {
      const response = await client.chat.completions.create({ model, messages: [{ role: 'user', content: PROMPT }], max_tokens: 24, ...EXTRA } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      expect(response.choices[0].message.content).toBe(local.text);
      expect(response.model).toBe(model);
      // Loaded at start-up: neither spelling loads it again.
      expect((response as unknown as { timings: { load_ms: number } }).timings.load_ms).toBe(0);
    }
    expect(poolLog.filter((l) => l.startsWith('loading '))).toHaveLength(1);
    const ps = (await (await fetch(`${server.url}/api/ps`)).json()) as { models: { name: string }[] };
    expect(ps.models.map((m) => m.name)).toEqual([ckpt]);
  });

  it('models.retrieve: ids with slashes (encoded or not), both spellings; 404 in OpenAI shape for an unknown one', async () => {
    const model = await client.models.retrieve(ckpt);
    expect(model).toMatchObject({ id: ckpt, object: 'model', owned_by: 'dvl' });
    expect((await client.models.retrieve(relative)).id).toBe(ckpt);
    // Not encoded (curl): the wildcard takes the rest of the path.
    const plain = await fetch(`${server.url}/v1/models/${ckpt}`);
    expect(plain.status).toBe(200);
    expect(((await plain.json()) as { id: string }).id).toBe(ckpt);
    await expect(client.models.retrieve('hustvl/DiffusionVL-Qwen2.5VL-3B')).rejects.toMatchObject({ status: 404 });
    const unknown = await openAiError(await fetch(`${server.url}/v1/models/${encodeURIComponent('hustvl/DiffusionVL-Qwen2.5VL-3B')}`), 404);
    expect(unknown.code).toBe('model_not_found');
    expect(unknown.message).toMatch(/^model 'hustvl\/DiffusionVL-Qwen2\.5VL-3B' not found; GET \/v1\/models lists/);
  });

  it('a wrong method on a route is 405 with Allow, in the API shape; an unknown route stays 404', async () => {
    const chat = await fetch(`${server.url}/v1/chat/completions`);
    expect(chat.headers.get('allow')).toBe('POST');
    expect((await openAiError(chat, 405)).message).toBe('GET /v1/chat/completions is not allowed: this route takes POST');
    for (const route of ['/api/chat', '/api/generate', '/api/show', '/dvl/v1/ask']) {
      const response = await fetch(`${server.url}${route}`);
      expect(response.headers.get('allow'), route).toBe('POST');
      if (route.startsWith('/api/')) expect(await ollamaError(response, 405)).toMatch(/this route takes POST/);
      else await openAiError(response, 405);
    }
    const models = await post('/v1/models', {});
    expect(models.headers.get('allow')).toBe('GET, HEAD');
    await openAiError(models, 405);
    expect((await openAiError(await fetch(`${server.url}/v1/nope`), 404)).code).toBe('not_found');
  });
});

describe('error messages in the API words', () => {
  const chat = (extra: object) => ({ model: ckpt, messages: [{ role: 'user', content: PROMPT }], max_tokens: 4, steps: 1, ...extra });

  it('OpenAI: a field of the wrong type or range names the field and what it takes', async () => {
    const cases: [object, string, string | null][] = [
      [{ temperature: 'hot' }, 'temperature must be a number between 0 and 100', 'temperature'],
      [{ temperature: -1 }, 'temperature must be a number between 0 and 100', 'temperature'],
      [{ max_tokens: 0 }, 'max_tokens must be an integer between 1 and 65536', 'max_tokens'],
      [{ max_tokens: 1.5 }, 'max_tokens must be an integer between 1 and 65536', 'max_tokens'],
      [{ top_p: 0 }, 'top_p must be a number greater than 0 and at most 1', 'top_p'],
      [{ top_k: -1 }, 'top_k must be an integer of at least 0', 'top_k'],
      [{ stream: 'yes' }, 'stream must be true or false', 'stream'],
      [{ stop: 5 }, 'stop must be a string or an array of at most 16 strings', 'stop'],
      [{ remasking: 'bogus' }, 'remasking must be one of low_confidence_static, low_confidence_dynamic', 'remasking'],
      [{ model: '' }, 'model must be a non-empty string', 'model'],
      [{ model: undefined }, 'model is required', 'model'],
      [{ messages: [] }, 'messages must be a non-empty array', 'messages'],
      [{ messages: 'hi' }, 'messages must be a non-empty array', 'messages'],
      [{ messages: [{ content: 'no role' }] }, 'messages[0].role is required', 'messages[0].role'],
      [{ messages: [{ role: 'user', content: 5 }] }, 'messages[0].content must be a string or an array of content parts', 'messages[0].content'],
      [{ messages: [{ role: 'user', content: [{ type: 'text', text: 5 }] }] }, 'messages[0].content[0].text must be a string', 'messages[0].content[0].text'],
      [{ stream_options: { include_usage: 'yes' } }, 'stream_options.include_usage must be true or false', 'stream_options.include_usage'],
    ];
    for (const [extra, message, param] of cases) {
      const error = await openAiError(await post('/v1/chat/completions', chat(extra)), 400);
      expect(error.message, JSON.stringify(extra)).toBe(message);
      expect(error.param, JSON.stringify(extra)).toBe(param);
      expect(error.type).toBe('invalid_request_error');
    }
    for (const body of ['null', '[]', '"text"']) {
      const error = await openAiError(await post('/v1/chat/completions', body), 400);
      expect(error.message).toBe('the request body must be a JSON object');
    }
  });

  it('bad JSON: the parser message, code invalid_json', async () => {
    for (const body of ['{"model": ', '{model: 1}', '{"a": 1,}']) {
      const error = await openAiError(await post('/v1/chat/completions', body), 400);
      expect(error.message).toMatch(/^the request body is not valid JSON: \S/);
      expectPlain(error.message);
      expect(error.code).toBe('invalid_json');
      expect(await ollamaError(await post('/api/chat', body), 400)).toMatch(/^the request body is not valid JSON: \S/);
    }
    // The parser's own words, whatever the content type; keys that reach a prototype are refused.
    for (const type of ['application/json', 'text/plain', 'application/x-www-form-urlencoded']) {
      const cut = await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': type }, body: '{"model": ' });
      expect((await openAiError(cut, 400)).message).toBe('the request body is not valid JSON: Unexpected end of JSON input');
    }
    const poisoned = await openAiError(await post('/v1/chat/completions', '{"__proto__": {"x": 1}, "model": "m", "messages": []}'), 400);
    expect(poisoned).toMatchObject({ message: 'the request body is not valid JSON: the key "__proto__" is not allowed', code: 'invalid_json' });
  });

  it('Ollama: options and messages by their names; an unknown model points at /api/tags', async () => {
    const cases: [object, string][] = [
      [{ options: { temperature: 'hot' } }, 'options.temperature must be a number between 0 and 100'],
      [{ options: { num_predict: '8' } }, 'options.num_predict must be an integer between 1 and 65536'],
      [{ options: 'fast' }, 'options must be an object'],
      [{ messages: [{ role: 'user', content: 'x', images: 'abc' }] }, 'messages[0].images must be an array of strings'],
      [{ stream: 'no' }, 'stream must be true or false'],
    ];
    for (const [extra, message] of cases) {
      const body = { model: ckpt, messages: [{ role: 'user', content: PROMPT }], stream: false, ...extra };
      const error = await ollamaError(await post('/api/chat', body), 400);
      expect(error, JSON.stringify(extra)).toBe(message);
    }
    for (const route of ['/api/chat', '/api/generate', '/api/show']) {
      const error = await ollamaError(await post(route, { model: 'no/such-model', prompt: 'hi', messages: [{ role: 'user', content: 'hi' }] }), 404);
      expect(error).toBe("model 'no/such-model' not found; GET /api/tags lists the models this server has");
    }
    const error = await openAiError(await post('/v1/chat/completions', chat({ model: 'no/such-model' })), 404);
    expect(error.message).toBe("model 'no/such-model' not found; GET /v1/models lists the models this server has");
  });
});

describe('stop strings: the completion tokens are those returned', () => {
  /** The answer's tokens one by one, as text (each of the tiny model's tokens here is whole characters). */
  let pieces: string[];
  /** The first token whose text is not in the text before it, and is at least 2 characters long. */
  let k: number;

  beforeAll(() => {
    const tokenizer = TextTokenizer.load(ckpt);
    pieces = local.tokens.map((id) => tokenizer.decode([id]));
    expect(pieces.join('')).toBe(local.text);
    k = pieces.findIndex((piece, i) => i >= 2 && piece.length >= 2 && !piece.includes('\uFFFD') && !pieces.slice(0, i).join('').includes(piece.slice(1)));
    expect(k, JSON.stringify(pieces)).toBeGreaterThan(0);
  });

  it('a stop string that is a whole token: the tokens before it; one that starts inside a token: that token too', async () => {
    const before = pieces.slice(0, k).join('');
    // The answer is cut before token k: k tokens returned. Cut one character into token k: k + 1.
    for (const [stop, expectedText, expectedTokens] of [
      [pieces[k], before, k],
      [pieces[k].slice(1), before + pieces[k][0], k + 1],
    ] as const) {
      expect(local.text.indexOf(stop)).toBe(expectedText.length);
      const response = await client.chat.completions.create({ model: ckpt, messages: [{ role: 'user', content: PROMPT }], max_tokens: 24, stop, ...EXTRA } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      expect(response.choices[0].message.content).toBe(expectedText);
      expect(response.choices[0].finish_reason).toBe('stop');
      expect(response.usage?.completion_tokens, stop).toBe(expectedTokens);
      expect(response.usage?.total_tokens).toBe(response.usage!.prompt_tokens + expectedTokens);

      const stream = await client.chat.completions.create({ model: ckpt, messages: [{ role: 'user', content: PROMPT }], max_tokens: 24, stop, stream: true, stream_options: { include_usage: true }, ...EXTRA } as OpenAI.ChatCompletionCreateParamsStreaming);
      let streamed = '';
      let usage: OpenAI.CompletionUsage | undefined | null;
      for await (const chunk of stream) {
        streamed += chunk.choices[0]?.delta.content ?? '';
        usage = chunk.usage ?? usage;
      }
      expect(streamed).toBe(expectedText);
      expect(usage?.completion_tokens).toBe(expectedTokens);

      const ollama = new Ollama({ host: server.url });
      const generated = await ollama.generate({ model: ckpt, prompt: PROMPT, stream: false, options: { num_predict: 24, stop: [stop], ...EXTRA } as never });
      expect(generated.response).toBe(expectedText);
      expect(generated.eval_count).toBe(expectedTokens);
    }
  });
});

describe('empty questions', () => {
  it('OpenAI: a last user message without text or image is a 400; an image alone is a question', async () => {
    for (const content of ['', '   ', [], [{ type: 'text', text: '' }], null]) {
      const error = await openAiError(await post('/v1/chat/completions', { model: ckpt, messages: [{ role: 'user', content }], max_tokens: 4 }), 400);
      expect(error.message, JSON.stringify(content)).toBe('messages[0].content is empty: ask something (text or an image)');
      expect(error.param).toBe('messages[0].content');
    }
    const later = await openAiError(await post('/v1/chat/completions', { model: ckpt, stream: true, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }, { role: 'assistant', content: '' }, { role: 'user', content: '' }] }), 400);
    expect(later.param).toBe('messages[3].content');
    // An earlier empty message is no matter; an image without text asks about the image.
    const ok = await post('/v1/chat/completions', { model: ckpt, messages: [{ role: 'user', content: '' }, { role: 'assistant', content: '' }, { role: 'user', content: 'hi' }], max_tokens: 4, steps: 1 });
    expect(ok.status, await ok.clone().text()).toBe(200);
    const image = `data:image/png;base64,${fs.readFileSync(path.resolve('fixtures/images/chelsea.png')).toString('base64')}`;
    const imageOnly = await post('/v1/chat/completions', { model: ckpt, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: image } }] }], max_tokens: 4, steps: 1, min_pixels: 784, max_pixels: 3136 });
    expect(imageOnly.status, await imageOnly.clone().text()).toBe(200);
  });

  it('Ollama: an empty last message or prompt is a 400; no messages or no prompt still just loads the model', async () => {
    for (const stream of [false, true]) {
      expect(await ollamaError(await post('/api/chat', { model: ckpt, stream, messages: [{ role: 'user', content: '' }] }), 400)).toBe('messages[0].content is empty: ask something (text or an image)');
      expect(await ollamaError(await post('/api/chat', { model: ckpt, stream, messages: [{ role: 'user', content: ' \n' }] }), 400)).toMatch(/is empty/);
      expect(await ollamaError(await post('/api/generate', { model: ckpt, stream, prompt: '' }), 400)).toBe('prompt is empty: ask something (text or an image)');
    }
    const load = await post('/api/generate', { model: ckpt });
    expect(((await load.json()) as { done_reason: string }).done_reason).toBe('load');
    const loadChat = await post('/api/chat', { model: ckpt, messages: [] });
    expect(((await loadChat.json()) as { done_reason: string }).done_reason).toBe('load');
  });
});

describe('access log', () => {
  it("logs the client's address also when the client left (on a connection of its own, streamed or not)", async () => {
    const { port } = new URL(server.url);
    for (const stream of [true, false]) {
      const before = log.length;
      // A connection of its own: its address was never read before the client left.
      await new Promise<void>((resolve, reject) => {
        const request = http.request({ host: '127.0.0.1', port: Number(port), method: 'POST', path: '/v1/chat/completions', headers: { 'content-type': 'application/json' }, agent: false }, (response) => {
          response.once('data', () => request.destroy());
          response.on('error', () => {});
        });
        request.on('error', () => resolve());
        request.on('close', () => resolve());
        request.end(JSON.stringify({ model: ckpt, messages: [{ role: 'user', content: PROMPT }], max_tokens: 512, steps: 8, stream }));
        // Not streamed: nothing comes before the answer; leave while it runs.
        if (!stream) setTimeout(() => request.destroy(), 300);
        setTimeout(() => reject(new Error('no answer')), 20_000);
      });
      const gone = () => log.slice(before).find((l) => l.includes('(client went away)'));
      for (let i = 0; i < 100 && !gone(); i++) await new Promise((r) => setTimeout(r, 50));
      expect(gone(), log.slice(before).join('\n')).toMatch(/^127\.0\.0\.1 "POST \/v1\/chat\/completions" \d+ \d+ ms \(client went away\)$/);
    }
  });
});
