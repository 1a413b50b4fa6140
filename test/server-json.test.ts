/**
 * Structured output through `dvl serve` on 127.0.0.1 with a tiny fp32 model, spoken by the official `openai`
 * and `ollama` clients and by `dvl ask --host` (dvl's own route): OpenAI's response_format (json_schema,
 * json_object, streamed or not), Ollama's format ("json" or a schema, on /api/chat and /api/generate) give
 * answers that parse and validate (ajv), the same text as `dvl ask --json-schema` with the same settings; a
 * schema dvl cannot follow, a malformed response_format / format and a gen length too short for the schema
 * are 400s in each API's shape naming what is wrong, and the server goes on answering.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkJsonFormat } from '../src/generate/json-schema/index.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { runDvl, runDvlAsync } from './helpers/cli.js';
import { ajvValidator } from './helpers/json-schemas.js';
import { tinyConfig } from './helpers/random-weights.js';
import { testServeOptions } from './helpers/test-server.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const IMAGE = path.resolve('fixtures/images/chelsea.png');
const PROMPT = 'Read this receipt.';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-serve-json-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home'), HF_HUB_CACHE: path.join(work, 'hub') };
const EXTRA = { steps: 4, min_pixels: 784, max_pixels: 3136 };

const RECEIPT = {
  type: 'object',
  properties: {
    store: { type: 'string', maxLength: 16 },
    total_cents: { type: 'integer', minimum: 0, maximum: 100000 },
    paid: { enum: ['cash', 'card'] },
    items: { type: 'array', items: { type: 'string', maxLength: 8 }, maxItems: 3 },
  },
  required: ['store', 'total_cents', 'paid', 'items'],
  additionalProperties: false,
};
const SHAPES = {
  anyOf: [
    { type: 'object', properties: { kind: { const: 'circle' }, r: { type: 'integer', minimum: 1, maximum: 9 } }, required: ['kind', 'r'], additionalProperties: false },
    { type: 'array', items: { type: ['boolean', 'null'] }, minItems: 1, maxItems: 2 },
  ],
};
const GEN = checkJsonFormat(RECEIPT) + 40;
const receiptFile = path.join(work, 'receipt.schema.json');

let server: RunningServer;
let openai: OpenAI;
let ollama: Ollama;
/** `dvl ask --json-schema receipt.schema.json --json` with the image, the same settings. */
let local: { text: string; tokens: number[] };

const isObject = (value: unknown) => typeof value === 'object' && value !== null && !Array.isArray(value);
const imageBase64 = fs.readFileSync(IMAGE).toString('base64');

beforeAll(async () => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 });
  fs.writeFileSync(receiptFile, JSON.stringify(RECEIPT));
  const run = runDvl(['ask', '-m', ckpt, '--dtype', 'fp32', '-n', String(GEN), '-s', '4', '--min-pixels', '784', '--max-pixels', '3136', '-q', '--json-schema', receiptFile, '--json', IMAGE, PROMPT], { env });
  if (run.status !== 0) throw new Error(`dvl ask failed (${run.status}): ${run.stderr}`);
  local = JSON.parse(run.stdout) as typeof local;
  server = await startServer(testServeOptions({ pool: { model: ckpt, threads: undefined, env: { ...process.env, ...env } } }));
  openai = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  ollama = new Ollama({ host: server.url });
}, 180_000);

afterAll(async () => {
  await server?.close(1000);
  fs.rmSync(work, { recursive: true, force: true });
});

const imageMessage = (text: string) => [{ role: 'user' as const, content: [{ type: 'image_url' as const, image_url: { url: `data:image/png;base64,${imageBase64}` } }, { type: 'text' as const, text }] }];

describe('OpenAI response_format', () => {
  it('json_schema: the answer validates, and is the text of dvl ask --json-schema with the same settings', async () => {
    const response = await openai.chat.completions.create({
      model: ckpt,
      messages: imageMessage(PROMPT),
      max_tokens: GEN,
      response_format: { type: 'json_schema', json_schema: { name: 'receipt', schema: RECEIPT, strict: true } },
      ...EXTRA,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const content = response.choices[0].message.content!;
    expect(content).toBe(local.text);
    expect(ajvValidator(RECEIPT)(JSON.parse(content))).toBe(true);
    expect(response.choices[0].finish_reason).toBe('stop');
  });

  it('json_schema streamed, an anyOf schema: the deltas join into valid JSON', async () => {
    const stream = await openai.chat.completions.create({
      model: ckpt,
      messages: [{ role: 'user', content: 'A shape, please.' }],
      max_tokens: checkJsonFormat(SHAPES) + 24,
      stream: true,
      response_format: { type: 'json_schema', json_schema: { name: 'shape', schema: SHAPES } },
      ...EXTRA,
    } as OpenAI.ChatCompletionCreateParamsStreaming);
    let text = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(ajvValidator(SHAPES)(JSON.parse(text)), text).toBe(true);
    expect(finish).toBe('stop');
  });

  it('json_object: a JSON object; text: plain text', async () => {
    const response = await openai.chat.completions.create({ model: ckpt, messages: [{ role: 'user', content: 'JSON please.' }], max_tokens: 24, response_format: { type: 'json_object' }, ...EXTRA } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(isObject(JSON.parse(response.choices[0].message.content!))).toBe(true);
    const plain = await openai.chat.completions.create({ model: ckpt, messages: [{ role: 'user', content: 'JSON please.' }], max_tokens: 8, response_format: { type: 'text' }, ...EXTRA } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(typeof plain.choices[0].message.content).toBe('string');
  });

  it('a schema dvl cannot follow, a malformed response_format, a max_tokens too small: 400s that say what is wrong', async () => {
    const refused = async (responseFormat: unknown, maxTokens = 32, stream = false) => {
      try {
        await openai.chat.completions.create({ model: ckpt, messages: [{ role: 'user', content: 'Hi' }], max_tokens: maxTokens, stream, response_format: responseFormat, ...EXTRA } as never);
      } catch (error) {
        expect(error).toBeInstanceOf(OpenAI.APIError);
        const e = error as InstanceType<typeof OpenAI.APIError>;
        expect(e.status).toBe(400);
        expect((e.error as { type: string }).type).toBe('invalid_request_error');
        return { message: (e.error as { message: string }).message, param: (e.error as { param: string | null }).param };
      }
      throw new Error('accepted');
    };
    const pattern = await refused({ type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { id: { type: 'string', pattern: '^[0-9]+$' } } } } });
    expect(pattern).toEqual({ message: 'response_format.json_schema.schema: "pattern" at /properties/id is not supported', param: 'response_format.json_schema.schema' });
    // Streamed: refused before the stream starts, with the same status.
    expect((await refused({ type: 'json_schema', json_schema: { name: 'x', schema: { type: 'number', minimum: 0 } } }, 32, true)).message).toMatch(/"minimum" at \/ is not supported for type "number"/);
    expect((await refused({ type: 'json_schema', json_schema: { name: 'x' } })).message).toMatch(/response_format\.json_schema\.schema is required/);
    expect((await refused({ type: 'json_schema', json_schema: { name: 'x', schema: 'json' } })).message).toBe('response_format.json_schema.schema must be a JSON Schema object');
    expect((await refused({ type: 'yaml' })).message).toBe('response_format.type must be one of text, json_object, json_schema');
    expect(await refused({ type: 'json_schema', json_schema: { name: 'r', schema: RECEIPT } }, 8)).toEqual({ message: `the schema needs at least ${checkJsonFormat(RECEIPT)} tokens; max_tokens is 8`, param: 'max_tokens' });
    // Still serving.
    const after = await openai.chat.completions.create({ model: ckpt, messages: [{ role: 'user', content: 'JSON please.' }], max_tokens: 24, response_format: { type: 'json_object' }, ...EXTRA } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(isObject(JSON.parse(after.choices[0].message.content!))).toBe(true);
  });
});

describe('Ollama format', () => {
  it('chat: format "json" streamed, and a schema; done_reason stop', async () => {
    const parts = await ollama.chat({ model: ckpt, messages: [{ role: 'user', content: 'JSON please.' }], format: 'json', stream: true, options: { num_predict: 24, ...EXTRA } as never });
    let text = '';
    let doneReason = '';
    for await (const part of parts) {
      text += part.message.content;
      if (part.done) doneReason = part.done_reason;
    }
    expect(isObject(JSON.parse(text))).toBe(true);
    expect(doneReason).toBe('stop');
    const withImage = await ollama.chat({ model: ckpt, messages: [{ role: 'user', content: PROMPT, images: [imageBase64] }], format: RECEIPT, stream: false, options: { num_predict: GEN, ...EXTRA } as never });
    // The same question as dvl ask's (the image before the text), the same answer.
    expect(withImage.message.content).toBe(local.text);
    expect(withImage.done_reason).toBe('stop');
  });

  it('generate: format "json" and a schema, streamed or not', async () => {
    const plain = await ollama.generate({ model: ckpt, prompt: 'JSON please.', format: 'json', stream: false, options: { num_predict: 24, ...EXTRA } as never });
    expect(isObject(JSON.parse(plain.response ?? ''))).toBe(true);
    const parts = await ollama.generate({ model: ckpt, prompt: 'A shape.', format: SHAPES, stream: true, options: { num_predict: checkJsonFormat(SHAPES) + 24, ...EXTRA } as never });
    let text = '';
    for await (const part of parts) text += part.response;
    expect(ajvValidator(SHAPES)(JSON.parse(text)), text).toBe(true);
  });

  it('a bad format or schema, a num_predict too small: 400 in Ollama\'s shape', async () => {
    const refused = async (body: object) => {
      const response = await fetch(`${server.url}/api/generate`, { method: 'POST', body: JSON.stringify({ model: ckpt, prompt: 'Hi', stream: false, ...body }) });
      expect(response.status).toBe(400);
      const json = (await response.json()) as { error: string };
      expect(Object.keys(json)).toEqual(['error']);
      return json.error;
    };
    expect(await refused({ format: 'xml' })).toBe('format must be "json" or a JSON Schema object, got "xml"');
    expect(await refused({ format: { type: 'object', properties: { a: { type: 'string', format: 'date' } } } })).toBe('format: "format" at /properties/a is not supported');
    expect(await refused({ format: RECEIPT, options: { num_predict: 8 } })).toBe(`the schema needs at least ${checkJsonFormat(RECEIPT)} tokens; options.num_predict is 8`);
    // The client surfaces the message.
    await expect(ollama.chat({ model: ckpt, messages: [{ role: 'user', content: 'Hi' }], format: { oneOf: [{ type: 'null' }] }, stream: false })).rejects.toThrow(/"oneOf" at \/ is not supported/);
  });
});

describe("dvl's own route: dvl ask --host", () => {
  it('--json-schema through dvl serve: the local answer; the route refuses a schema dvl cannot follow', async () => {
    const args = ['ask', '--host', server.url, '-m', ckpt, '-n', String(GEN), '-s', '4', '--min-pixels', '784', '--max-pixels', '3136', '-q', '--json-schema', receiptFile, '--json', IMAGE, PROMPT];
    const remote = await runDvlAsync(args, env);
    expect(remote.status, remote.stderr).toBe(0);
    expect((JSON.parse(remote.stdout) as { text: string; finish_reason: string }).text).toBe(local.text);
    // The route refuses what the CLI would (a client that is not dvl's own CLI).
    const response = await fetch(`${server.url}/dvl/v1/ask`, { method: 'POST', body: JSON.stringify({ model: ckpt, prompt: 'Hi', format: { type: 'string', pattern: 'x' } }) });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { message: string } }).error.message).toBe('format: "pattern" at / is not supported');
  });
});
