/**
 * The Anthropic Messages API of `dvl serve` on 127.0.0.1 with a tiny fp32 model, through the official
 * `@anthropic-ai/sdk` client and raw HTTP: plain and streamed answers are `dvl ask --json`'s text (greedy, the
 * same settings), with an image block and a system prompt too; the stream's events come in Anthropic's order;
 * stop_sequences and max_tokens give their stop reasons; count_tokens is the prompt length dvl reports;
 * output_config.format gives JSON valid against the schema; x-api-key works as well as Bearer when the server
 * has a key; malformed requests are 400 invalid_request_error in Anthropic's error shape.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkJsonFormat } from '../src/generate/json-schema/index.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { runDvl } from './helpers/cli.js';
import { ajvValidator } from './helpers/json-schemas.js';
import { tinyConfig } from './helpers/random-weights.js';
import { testServeOptions } from './helpers/test-server.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const IMAGE = path.resolve('fixtures/images/chelsea.png');
const PROMPT = 'What is in the box?';
const SYSTEM = 'Answer in one word.';
const KEY = 'sesame';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-serve-anthropic-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home'), HF_HUB_CACHE: path.join(work, 'hub') };
const poolEnv = { ...process.env, ...env };
const FLAGS = ['--dtype', 'fp32', '-s', '4', '--min-pixels', '784', '--max-pixels', '3136', '-q'];
/** The same settings as extra body fields. */
const EXTRA = { steps: 4, min_pixels: 784, max_pixels: 3136 };
const RECEIPT = {
  type: 'object',
  properties: { store: { type: 'string', maxLength: 12 }, total: { type: 'integer', minimum: 0, maximum: 9999 }, paid: { enum: ['cash', 'card'] } },
  required: ['store', 'total', 'paid'],
  additionalProperties: false,
};
const GEN_JSON = checkJsonFormat(RECEIPT) + 32;

interface AskJson {
  text: string;
  finish_reason: 'stop' | 'length';
  stopped_at_eos: boolean;
  stats: { prompt_tokens: number; generated_tokens: number };
}

let server: RunningServer;
let keyed: RunningServer;
let client: Anthropic;
let local: { text: AskJson; image: AskJson; system: AskJson; short: AskJson; receipt: AskJson };

const imageData = fs.readFileSync(IMAGE).toString('base64');
const imageContent = (text: string) => [
  { type: 'image' as const, source: { type: 'base64' as const, media_type: 'image/png' as const, data: imageData } },
  { type: 'text' as const, text },
];

beforeAll(async () => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 });
  // `dvl ask --json` (which also converts the model into the store), then the other answers in one `dvl batch`.
  const ask = runDvl(['ask', '-m', ckpt, ...FLAGS, '-n', '20', '--json', PROMPT], { env });
  if (ask.status !== 0) throw new Error(`dvl ask failed (${ask.status}): ${ask.stderr}`);
  const lines = [
    { image: IMAGE, prompt: PROMPT, gen_length: 20 },
    { prompt: PROMPT, system: SYSTEM, gen_length: 20 },
    { prompt: PROMPT, gen_length: 3 },
    { image: IMAGE, prompt: PROMPT, json_schema: RECEIPT, gen_length: GEN_JSON },
  ];
  const batch = runDvl(['batch', '-m', ckpt, ...FLAGS], { env, input: lines.map((l) => JSON.stringify(l)).join('\n') });
  if (batch.status !== 0) throw new Error(`dvl batch failed (${batch.status}): ${batch.stderr}`);
  const [image, system, short, receipt] = batch.stdout.trim().split('\n').map((l) => JSON.parse(l) as AskJson);
  local = { text: JSON.parse(ask.stdout) as AskJson, image, system, short, receipt };
  server = await startServer(testServeOptions({ pool: { model: ckpt, threads: undefined, env: poolEnv } }));
  // Another server on the same store, with an API key (the model loads with its first request).
  keyed = await startServer(testServeOptions({ apiKey: KEY, pool: { env: poolEnv } }));
  client = new Anthropic({ baseURL: server.url, apiKey: 'unused', maxRetries: 0 });
}, 240_000);

afterAll(async () => {
  await Promise.all([server, keyed].map((s) => s?.close(1000)));
  fs.rmSync(work, { recursive: true, force: true });
});

const create = (params: object) => client.messages.create({ model: ckpt, max_tokens: 20, ...EXTRA, ...params } as unknown as Anthropic.MessageCreateParamsNonStreaming);

/** The stop reason Anthropic's API gives for a local answer. */
const stopReason = (a: AskJson) => (a.finish_reason === 'length' ? 'max_tokens' : 'end_turn');

/** POST /v1/messages with stream: true, read raw: every SSE event with its name and data. */
async function rawStream(body: object, url = server.url): Promise<{ events: { event: string; data: Record<string, unknown> }[]; contentType: string | null }> {
  const response = await fetch(`${url}/v1/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: ckpt, max_tokens: 20, ...EXTRA, ...body, stream: true }) });
  expect(response.status).toBe(200);
  const text = await response.text();
  const events = text
    .split('\n\n')
    .filter((block) => block.trim() !== '' && !block.startsWith(':'))
    .map((block) => ({ event: /^event: (.*)$/m.exec(block)![1], data: JSON.parse(/^data: (.*)$/m.exec(block)![1]) as Record<string, unknown> }));
  return { events, contentType: response.headers.get('content-type') };
}

async function post(route: string, body: unknown, headers: Record<string, string> = {}, url = server.url) {
  const response = await fetch(`${url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: response.status, json: (await response.json()) as { type: string; error: { type: string; message: string } } & Record<string, unknown> };
}

describe('POST /v1/messages with the Anthropic SDK', () => {
  it('a text question: the answer, usage and stop reason of dvl ask --json', async () => {
    const message = await create({ messages: [{ role: 'user', content: PROMPT }] });
    expect(message.id).toMatch(/^msg_[0-9a-f]{24}$/);
    expect(message.type).toBe('message');
    expect(message.role).toBe('assistant');
    expect(message.model).toBe(ckpt);
    expect(message.content).toEqual([{ type: 'text', text: local.text.text }]);
    expect(message.stop_reason).toBe(stopReason(local.text));
    expect(message.stop_sequence).toBeNull();
    expect(message.usage.input_tokens).toBe(local.text.stats.prompt_tokens);
    expect(message.usage.output_tokens).toBe(local.text.stats.generated_tokens);
  });

  it('streamed through the SDK: the same text and final message', async () => {
    const stream = client.messages.stream({ model: ckpt, max_tokens: 20, messages: [{ role: 'user', content: PROMPT }], ...EXTRA } as Anthropic.MessageStreamParams);
    let text = '';
    stream.on('text', (delta) => (text += delta));
    const final = await stream.finalMessage();
    expect(text).toBe(local.text.text);
    expect(final.content).toEqual([{ type: 'text', text: local.text.text }]);
    expect(final.stop_reason).toBe(stopReason(local.text));
    expect(final.usage).toMatchObject({ input_tokens: local.text.stats.prompt_tokens, output_tokens: local.text.stats.generated_tokens });
  });

  it('the raw stream: Anthropic\'s events in order, each named as its type', async () => {
    const { events, contentType } = await rawStream({ messages: [{ role: 'user', content: PROMPT }] });
    expect(contentType).toMatch(/^text\/event-stream/);
    for (const e of events) expect(e.data.type).toBe(e.event);
    const names = events.map((e) => e.event);
    expect(names.slice(0, 3)).toEqual(['message_start', 'content_block_start', 'ping']);
    expect(names.slice(-3)).toEqual(['content_block_stop', 'message_delta', 'message_stop']);
    // Between them: the text deltas (keep-alive pings may come between them on a slow machine).
    const middle = names.slice(3, -3);
    expect(middle).toContain('content_block_delta');
    expect(middle.filter((name) => name !== 'content_block_delta' && name !== 'ping')).toEqual([]);
    const start = events[0].data.message as { content: unknown[]; usage: { input_tokens: number; output_tokens: number }; stop_reason: null };
    expect(start).toMatchObject({ role: 'assistant', type: 'message', model: ckpt, content: [], stop_reason: null, stop_sequence: null });
    expect(start.usage.input_tokens).toBe(local.text.stats.prompt_tokens);
    expect(events[1].data).toEqual({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
    const deltas = events.filter((e) => e.event === 'content_block_delta').map((e) => e.data as { index: number; delta: { type: string; text: string } });
    expect(deltas.every((d) => d.index === 0 && d.delta.type === 'text_delta')).toBe(true);
    expect(deltas.map((d) => d.delta.text).join('')).toBe(local.text.text);
    const delta = events.at(-2)!.data as { delta: { stop_reason: string; stop_sequence: null }; usage: { output_tokens: number } };
    expect(delta.delta).toEqual({ stop_reason: stopReason(local.text), stop_sequence: null });
    expect(delta.usage.output_tokens).toBe(local.text.stats.generated_tokens);
  });

  it('an image block (base64 PNG): the answer of dvl ask with the same image', async () => {
    const message = await create({ messages: [{ role: 'user', content: imageContent(PROMPT) }] });
    expect(message.content).toEqual([{ type: 'text', text: local.image.text }]);
    expect(message.usage.input_tokens).toBe(local.image.stats.prompt_tokens);
    const streamed = await client.messages.stream({ model: ckpt, max_tokens: 20, messages: [{ role: 'user', content: imageContent(PROMPT) }], ...EXTRA } as Anthropic.MessageStreamParams).finalText();
    expect(streamed).toBe(local.image.text);
  });

  it('system as a string and as text blocks: the answer of dvl ask --system', async () => {
    const asString = await create({ system: SYSTEM, messages: [{ role: 'user', content: PROMPT }] });
    expect(asString.content).toEqual([{ type: 'text', text: local.system.text }]);
    const asBlocks = await create({ system: [{ type: 'text', text: SYSTEM }], messages: [{ role: 'user', content: [{ type: 'text', text: PROMPT }] }] });
    expect(asBlocks.content).toEqual([{ type: 'text', text: local.system.text }]);
    expect(asBlocks.usage.input_tokens).toBe(local.system.stats.prompt_tokens);
  });

  it('stop_sequences: the text ends before the first one; stop_reason stop_sequence names it, streamed too', async () => {
    const chars = [...local.text.text];
    expect(chars.length).toBeGreaterThan(6);
    const stop = chars.slice(4, 6).join('');
    const expected = local.text.text.slice(0, local.text.text.indexOf(stop));
    const message = await create({ messages: [{ role: 'user', content: PROMPT }], stop_sequences: ['never there', stop] });
    expect(message.content).toEqual([{ type: 'text', text: expected }]);
    expect(message.stop_reason).toBe('stop_sequence');
    expect(message.stop_sequence).toBe(stop);
    const { events } = await rawStream({ messages: [{ role: 'user', content: PROMPT }], stop_sequences: [stop] });
    expect(events.at(-2)!.data.delta).toEqual({ stop_reason: 'stop_sequence', stop_sequence: stop });
  });

  it('max_tokens: an answer cut by it stops with max_tokens', async () => {
    expect(local.short.finish_reason).toBe('length');
    const message = await create({ max_tokens: 3, messages: [{ role: 'user', content: PROMPT }] });
    expect(message.stop_reason).toBe('max_tokens');
    expect(message.content).toEqual([{ type: 'text', text: local.short.text }]);
    expect(message.usage.output_tokens).toBe(3);
  });

  it('output_config.format json_schema: the answer of dvl ask --json-schema, valid against the schema', async () => {
    const message = await create({ max_tokens: GEN_JSON, messages: [{ role: 'user', content: imageContent(PROMPT) }], output_config: { format: { type: 'json_schema', schema: RECEIPT } } });
    const text = (message.content[0] as { text: string }).text;
    expect(text).toBe(local.receipt.text);
    expect(ajvValidator(RECEIPT)(JSON.parse(text))).toBe(true);
    expect(message.stop_reason).toBe('end_turn');
    const refused = await post('/v1/messages', { model: ckpt, max_tokens: 64, messages: [{ role: 'user', content: 'x' }], output_config: { format: { type: 'json_schema', schema: { type: 'string', pattern: 'a' } } } });
    expect(refused).toEqual({ status: 400, json: { type: 'error', error: { type: 'invalid_request_error', message: 'output_config.format.schema: "pattern" at / is not supported' } } });
  });
});

describe('POST /v1/messages/count_tokens', () => {
  it("the prompt's tokens as dvl reports them: text, system, image", async () => {
    const count = (params: object) => client.messages.countTokens({ model: ckpt, ...EXTRA, ...params } as unknown as Anthropic.MessageCountTokensParams);
    expect(await count({ messages: [{ role: 'user', content: PROMPT }] })).toEqual({ input_tokens: local.text.stats.prompt_tokens });
    expect(await count({ system: SYSTEM, messages: [{ role: 'user', content: PROMPT }] })).toEqual({ input_tokens: local.system.stats.prompt_tokens });
    expect(await count({ messages: [{ role: 'user', content: imageContent(PROMPT) }] })).toEqual({ input_tokens: local.image.stats.prompt_tokens });
  });
});

describe('errors in Anthropic\'s shape', () => {
  it('malformed requests: 400 invalid_request_error saying what is wrong; the server goes on', async () => {
    const user = [{ role: 'user', content: PROMPT }];
    const cases: [unknown, RegExp][] = [
      [{ model: ckpt, messages: user }, /^max_tokens is required$/],
      [{ model: ckpt, max_tokens: 0, messages: user }, /^max_tokens must be an integer between 1 and 65536$/],
      [{ model: ckpt, max_tokens: 8, messages: [] }, /^messages must be a non-empty array/],
      [{ model: ckpt, max_tokens: 8, messages: [{ role: 'system', content: 'x' }] }, /^messages\[0\]\.role must be one of user, assistant$/],
      [{ model: ckpt, max_tokens: 8, messages: [{ role: 'user', content: [{ type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'A note.' } }] }] }, /^messages\[0\]\.content\[0\]\.type 'document' is not supported \(text, image\)$/],
      [{ model: ckpt, max_tokens: 8, messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/bmp', data: imageData } }] }] }, /media_type must be one of image\/png, image\/jpeg, image\/gif, image\/webp/],
      [{ model: ckpt, max_tokens: 8, messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'not base64!' } }] }] }, /image 1/],
      [{ model: ckpt, max_tokens: 8, messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hel' }] }, /the last message must be a user message/],
      [{ model: ckpt, max_tokens: 8, messages: [{ role: 'user', content: '  ' }] }, /messages\[0\]\.content is empty/],
      [{ model: ckpt, max_tokens: 8, messages: user, tools: [{ name: 't', input_schema: { type: 'object' } }] }, /tools are not supported/],
      [{ model: ckpt, max_tokens: 8, messages: user, thinking: { type: 'enabled', budget_tokens: 1024 } }, /extended thinking is not supported/],
      [{ model: ckpt, max_tokens: 8, messages: user, output_config: { format: { type: 'json_schema', schema: RECEIPT } } }, /the schema needs at least \d+ tokens; max_tokens is 8/],
      ['{"model": ', /^the request body is not valid JSON/],
    ];
    for (const [body, message] of cases) {
      const { status, json } = await post('/v1/messages', body);
      expect({ body, status }).toEqual({ body, status: 400 });
      expect(json.type).toBe('error');
      expect(json.error.type).toBe('invalid_request_error');
      expect(json.error.message).toMatch(message);
    }
    // The SDK reads the shape: an APIError with the status and Anthropic's error type.
    const error = await create({ messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/tiff', data: imageData } }] }] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Anthropic.BadRequestError);
    expect((error as InstanceType<typeof Anthropic.APIError>).type).toBe('invalid_request_error');
    // Unknown model and route: not_found_error.
    const unknown = await post('/v1/messages', { model: 'no/such-model', max_tokens: 8, messages: user });
    expect(unknown.status).toBe(404);
    expect(unknown.json.error.type).toBe('not_found_error');
    const route = await post('/v1/messages/batches', {});
    expect(route.status).toBe(404);
    expect(route.json).toMatchObject({ type: 'error', error: { type: 'not_found_error' } });
    // Still answering.
    expect((await create({ messages: user })).content).toEqual([{ type: 'text', text: local.text.text }]);
  });

  it('with --api-key: x-api-key or Bearer; without it a 401 authentication_error', async () => {
    const body = { model: ckpt, messages: [{ role: 'user', content: PROMPT }], ...EXTRA };
    const missing = await post('/v1/messages/count_tokens', body, {}, keyed.url);
    expect(missing.status).toBe(401);
    expect(missing.json).toEqual({ type: 'error', error: { type: 'authentication_error', message: 'missing API key: send it as "Authorization: Bearer <key>" (or "x-api-key: <key>")' } });
    const wrong = await post('/v1/messages', { ...body, max_tokens: 8 }, { 'x-api-key': 'open' }, keyed.url);
    expect(wrong).toEqual({ status: 401, json: { type: 'error', error: { type: 'authentication_error', message: 'invalid API key' } } });
    // The model is not loaded on this server yet: count_tokens loads it in its turn.
    const counted = await post('/v1/messages/count_tokens', body, { 'x-api-key': KEY }, keyed.url);
    expect(counted).toEqual({ status: 200, json: { input_tokens: local.text.stats.prompt_tokens } });
    // The SDK with the key as x-api-key (apiKey null: no Authorization header), and as its own Bearer.
    const viaHeader = new Anthropic({ baseURL: keyed.url, apiKey: null, defaultHeaders: { 'x-api-key': KEY }, maxRetries: 0 });
    const message = await viaHeader.messages.create({ model: ckpt, max_tokens: 20, messages: [{ role: 'user', content: PROMPT }], ...EXTRA } as Anthropic.MessageCreateParamsNonStreaming);
    expect(message.content).toEqual([{ type: 'text', text: local.text.text }]);
    const viaBearer = new Anthropic({ baseURL: keyed.url, apiKey: KEY, maxRetries: 0 });
    expect(await viaBearer.messages.countTokens({ model: ckpt, messages: [{ role: 'user', content: PROMPT }], ...EXTRA } as Anthropic.MessageCountTokensParams)).toEqual({ input_tokens: local.text.stats.prompt_tokens });
    const refused = await new Anthropic({ baseURL: keyed.url, apiKey: 'open', maxRetries: 0 }).messages.countTokens({ model: ckpt, messages: [{ role: 'user', content: PROMPT }] }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(Anthropic.AuthenticationError);
  });
});
