/**
 * The Ollama API (what Open WebUI and the `ollama` npm package speak): POST /api/chat and /api/generate
 * (images as base64 arrays, placed before the message text as `dvl ask` places them), streamed as NDJSON by
 * default, with the final object's counts and durations in nanoseconds; `options` with Ollama's names plus
 * the diffusion extras; `keep_alive`; `format` ("json": any JSON object, or a JSON Schema object: structured
 * output); GET /api/tags, /api/ps, /api/version; POST /api/show.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { AskResult, JsonSchemaInput } from '../ask.js';
import { DVL_VERSION } from '../version.js';
import { answer, type Answer } from './answer.js';
import type { RouteContext } from './context.js';
import { checkQuestion, toConversation, type ChatInput, type InputMessage, type RequestSettings } from './chat-input.js';
import { ollamaErrorBody, ServerError } from './errors.js';
import { checkRequestFormat, DIFFUSION_FIELDS, dropUndefined, thresholdOf } from './request-fields.js';
import { parameterCount } from '../models/index.js';
import { clientGone, endFailedStream, startStream } from './streaming.js';

const optionsSchema = {
  anyOf: [
    {
      type: 'object',
      properties: {
        num_predict: { type: 'integer', minimum: 1, maximum: 65536 },
        num_ctx: { type: 'integer', minimum: 1 },
        temperature: { type: 'number', minimum: 0, maximum: 100 },
        seed: { type: 'integer', minimum: 0 },
        top_k: { type: 'integer', minimum: 0 },
        top_p: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
        stop: { type: 'array', items: { type: 'string' }, maxItems: 16 },
        ...DIFFUSION_FIELDS,
      },
    },
    { type: 'null' },
  ],
};

const keepAliveSchema = { anyOf: [{ type: 'string' }, { type: 'number' }, { type: 'null' }] };
const imagesSchema = { anyOf: [{ type: 'array', items: { type: 'string' } }, { type: 'null' }] };

const chatBody = {
  type: 'object',
  required: ['model'],
  properties: {
    model: { type: 'string', minLength: 1 },
    messages: {
      anyOf: [
        {
          type: 'array',
          items: { type: 'object', required: ['role'], properties: { role: { type: 'string' }, content: { anyOf: [{ type: 'string' }, { type: 'null' }] }, images: imagesSchema } },
        },
        { type: 'null' },
      ],
    },
    stream: { type: 'boolean' },
    options: optionsSchema,
    keep_alive: keepAliveSchema,
    format: {},
    tools: {},
  },
} as const;

const generateBody = {
  type: 'object',
  required: ['model'],
  properties: {
    model: { type: 'string', minLength: 1 },
    prompt: { type: 'string' },
    system: { type: 'string' },
    images: imagesSchema,
    stream: { type: 'boolean' },
    raw: { type: 'boolean' },
    options: optionsSchema,
    keep_alive: keepAliveSchema,
    format: {},
  },
} as const;

interface OllamaOptions {
  num_predict?: number;
  num_ctx?: number;
  temperature?: number;
  seed?: number;
  top_k?: number;
  top_p?: number;
  stop?: string[];
  steps?: number;
  block_size?: number;
  remasking?: RequestSettings['remasking'];
  threshold?: number;
  confidence_threshold?: number;
  min_pixels?: number;
  max_pixels?: number;
  tiles?: number;
  image_mode?: 'anyres' | 'pad';
}

interface OllamaMessage {
  role: string;
  content?: string | null;
  images?: string[] | null;
}

interface ChatBody {
  model: string;
  messages?: OllamaMessage[] | null;
  stream?: boolean;
  options?: OllamaOptions | null;
  keep_alive?: string | number | null;
  format?: unknown;
  tools?: unknown;
}

interface GenerateBody {
  model: string;
  prompt?: string;
  system?: string;
  images?: string[] | null;
  stream?: boolean;
  raw?: boolean;
  options?: OllamaOptions | null;
  keep_alive?: string | number | null;
  format?: unknown;
}

export function registerOllama(app: FastifyInstance, context: RouteContext): void {
  app.get('/api/version', async () => ({ version: DVL_VERSION }));

  app.get('/api/tags', async () => ({
    models: (await context.pool.list()).map((m) => ({
      name: m.id,
      model: m.id,
      modified_at: m.modifiedAt.toISOString(),
      size: m.bytes,
      digest: '',
      details: details(m.dtype, m.family, m.parameters),
    })),
  }));

  app.get('/api/ps', async () => ({
    models: context.pool.loaded().map((m) => ({
      name: m.id,
      model: m.id,
      size: m.bytes,
      size_vram: 0,
      digest: '',
      expires_at: (m.expiresAt ?? new Date(8.64e15)).toISOString(),
      details: details(m.dtype, m.worker.manifest.config.modelType, parameterCount(m.worker.manifest.config)),
    })),
  }));

  app.post<{ Body: { model?: string; name?: string } }>(
    '/api/show',
    { schema: { body: { type: 'object', properties: { model: { type: 'string' }, name: { type: 'string' } } } } },
    async (request) => {
      const given = request.body.model ?? request.body.name;
      if (!given) throw new ServerError(400, 'invalid_request', 'model is required');
      const id = await context.pool.check(given);
      const listed = (await context.pool.list()).find((m) => m.id === id);
      const dtype = listed?.dtype ?? context.options.pool.dtype;
      // The context a request gets by default: the model's, lowered by --ctx-size (num_ctx lowers it further).
      const ctx = listed?.contextLength != null ? Math.min(listed.contextLength, context.ctxSize ?? Infinity) : null;
      const architecture = listed?.family ?? 'diffusionvl';
      return {
        license: '',
        modelfile: '',
        parameters: `num_predict 128\nsteps 8\nremasking low_confidence_static\ntemperature 0${ctx !== null ? `\nnum_ctx ${ctx}` : ''}`,
        template: '<|im_start|>system\n{{ .System }}<|im_end|>\n<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n',
        details: details(dtype, listed?.family ?? 'diffusionvl', listed?.parameters ?? null),
        model_info: { 'general.architecture': architecture, ...(ctx !== null ? { [`${architecture}.context_length`]: ctx } : {}) },
        capabilities: ['completion', 'vision'],
        modified_at: (listed?.modifiedAt ?? new Date(0)).toISOString(),
      };
    },
  );

  app.post<{ Body: ChatBody }>('/api/chat', { schema: { body: chatBody } }, async (request, reply) => {
    const body = request.body;
    unsupported(body.tools);
    const keepAliveMs = parseKeepAlive(body.keep_alive);
    if (!body.messages || body.messages.length === 0) {
      // Ollama's way to load or unload a model without a question.
      return loadOnly(context, body.model, keepAliveMs, { model: body.model, created_at: new Date().toISOString(), message: { role: 'assistant', content: '' }, done_reason: keepAliveMs === 0 ? 'unload' : 'load', done: true });
    }
    const messages: InputMessage[] = body.messages.map((m, i) => {
      if (m.role !== 'system' && m.role !== 'user' && m.role !== 'assistant') {
        throw new ServerError(400, 'unsupported', `messages[${i}].role '${m.role}' is not supported (system, user, assistant)`);
      }
      return { role: m.role, parts: [...(m.images ?? []).map((ref) => ({ kind: 'image' as const, ref, bareBase64: true })), { kind: 'text' as const, text: m.content ?? '' }] };
    });
    const last = messages.length - 1;
    if (messages[last].role === 'user') checkQuestion(messages[last].parts, `messages[${last}].content`);
    const frame = (text: string) => ({ model: body.model, created_at: new Date().toISOString(), message: { role: 'assistant', content: text }, done: false });
    return respond(context, reply, body, keepAliveMs, messages, frame, (done) => ({
      model: body.model,
      created_at: new Date().toISOString(),
      message: { role: 'assistant', content: body.stream === false ? done.result.text : '' },
      ...finalFields(done),
    }));
  });

  app.post<{ Body: GenerateBody }>('/api/generate', { schema: { body: generateBody } }, async (request, reply) => {
    const body = request.body;
    if (body.raw) throw new ServerError(400, 'unsupported', 'raw prompts are not supported: the prompt is always templated');
    const keepAliveMs = parseKeepAlive(body.keep_alive);
    const images = body.images?.length ?? 0;
    // No prompt at all: Ollama's way to load (or, with keep_alive 0, unload) a model. An empty prompt asks
    // nothing: a 400, as `dvl ask ""` fails; but with keep_alive 0 it is an unload (clients whose generate
    // call always sends a prompt unload that way).
    if ((body.prompt === undefined || keepAliveMs === 0) && images === 0 && !body.prompt?.trim()) {
      return loadOnly(context, body.model, keepAliveMs, { model: body.model, created_at: new Date().toISOString(), response: '', done_reason: keepAliveMs === 0 ? 'unload' : 'load', done: true });
    }
    if (images === 0) checkQuestion([{ kind: 'text', text: body.prompt ?? '' }], 'prompt');
    const messages: InputMessage[] = [];
    if (body.system !== undefined) messages.push({ role: 'system', parts: [{ kind: 'text', text: body.system }] });
    messages.push({ role: 'user', parts: [...(body.images ?? []).map((ref) => ({ kind: 'image' as const, ref, bareBase64: true })), { kind: 'text' as const, text: body.prompt ?? '' }] });
    const frame = (text: string) => ({ model: body.model, created_at: new Date().toISOString(), response: text, done: false });
    return respond(context, reply, body, keepAliveMs, messages, frame, (done) => ({
      model: body.model,
      created_at: new Date().toISOString(),
      response: body.stream === false ? done.result.text : '',
      ...finalFields(done),
    }));
  });
}

async function respond(
  context: RouteContext,
  reply: FastifyReply,
  body: { model: string; stream?: boolean; options?: OllamaOptions | null; format?: unknown },
  keepAliveMs: number | undefined,
  messages: InputMessage[],
  frame: (text: string) => object,
  final: (done: Answer) => object,
) {
  const o = body.options ?? {};
  const jsonSchema = ollamaFormat(body.format);
  const base: Omit<ChatInput, 'system' | 'history' | 'historyImages' | 'parts' | 'images'> = {
    model: body.model,
    keepAliveMs,
    ...(jsonSchema !== undefined ? { jsonSchema, budgetName: 'options.num_predict' } : {}),
    ...(o.num_ctx !== undefined ? { contextLength: o.num_ctx } : {}),
    stop: o.stop ?? [],
    settings: dropUndefined({
      genLength: o.num_predict,
      temperature: o.temperature,
      seed: o.seed,
      topK: o.top_k,
      topP: o.top_p,
      steps: o.steps,
      blockSize: o.block_size,
      remasking: o.remasking,
      threshold: thresholdOf(o),
      minPixels: o.min_pixels,
      maxPixels: o.max_pixels,
      tiles: o.tiles,
      imageMode: o.image_mode,
    }),
  };
  if (body.stream === false) {
    const signal = clientGone(reply, context.draining);
    const conversation = await toConversation(messages, context.options.media, signal);
    return final(await answer(context, { ...base, ...conversation }, { signal }));
  }
  await context.pool.check(body.model);
  const conversation = await toConversation(messages, context.options.media);
  // NDJSON has no comment lines: the keep-alive is an empty line, which Ollama clients skip.
  const stream = startStream(reply, { contentType: 'application/x-ndjson', ping: '\n', pingMs: context.options.pingMs, draining: context.draining });
  try {
    const done = await answer(context, { ...base, ...conversation }, {
      signal: stream.signal,
      onEvent: (event) => {
        if ((event.type === 'block-end' || event.type === 'finished') && event.text) stream.write(`${JSON.stringify(frame(event.text))}\n`);
      },
    });
    stream.end(`${JSON.stringify(final(done))}\n`);
  } catch (error) {
    endFailedStream(stream, error, {
      refusal: ollamaErrorBody,
      errorFrame: (failure) => `${JSON.stringify(ollamaErrorBody(failure))}\n`,
      cut: ({ partial }) => {
        // A last object as every answer has, done, with a done_reason of its own ("shutdown"; Ollama's are stop,
        // length, load, unload, and clients take any string), and the counts of what was answered.
        const ns = (ms: number) => Math.round(ms * 1e6);
        stream.end(`${JSON.stringify({ ...frame(''), done: true, done_reason: 'shutdown', total_duration: ns(partial.totalMs), prompt_eval_count: partial.promptTokens, eval_count: partial.completionTokens })}\n`);
        return true;
      },
    });
  }
  return reply;
}

/** No question: load the model (or, with keep_alive 0, unload it) and say so. */
async function loadOnly(context: RouteContext, model: string, keepAliveMs: number | undefined, reply: object) {
  await context.pool.check(model);
  if (keepAliveMs === 0) {
    await context.pool.setKeepAlive(model, 0);
    return reply;
  }
  await context.queue.run(async () => {
    await context.pool.acquire(model, keepAliveMs);
    context.pool.release(model);
  });
  return reply;
}

function finalFields(done: Answer) {
  const { stats } = done.result;
  const ns = (ms: number) => Math.round(ms * 1e6);
  return {
    done: true,
    done_reason: doneReason(done.result),
    total_duration: ns(done.timings.totalMs),
    load_duration: ns(done.timings.loadMs),
    prompt_eval_count: stats.promptTokens,
    prompt_eval_duration: ns(stats.ms.preprocess + stats.ms.vision + stats.ms.prefill),
    eval_count: done.completionTokens,
    eval_duration: ns(stats.ms.decode),
    // dvl's own: how many prompt tokens came from the cache, and the decoder calls made.
    prompt_cached_count: stats.cachedTokens,
    nfe: stats.nfe,
  };
}

function doneReason(result: AskResult): 'stop' | 'length' {
  return result.finishReason === 'length' ? 'length' : 'stop';
}

function details(dtype: string, family: string, parameters: number | null) {
  return { parent_model: '', format: 'onnx', family, families: [family], parameter_size: parameters === null ? '' : parameterSize(parameters), quantization_level: dtype.toUpperCase() };
}

/** A parameter count as Ollama writes one: "3.8B", "494.03M", "7B", "12K". */
export function parameterSize(count: number): string {
  const unit = (value: number, digits: number, suffix: string) => `${Number.isInteger(value) ? value : value.toFixed(digits)}${suffix}`;
  if (count >= 1e12) return unit(count / 1e12, 1, 'T');
  if (count >= 1e9) return unit(count / 1e9, 1, 'B');
  if (count >= 1e6) return unit(count / 1e6, 2, 'M');
  if (count >= 1e3) return `${Math.round(count / 1e3)}K`;
  return String(count);
}

function unsupported(tools: unknown): void {
  if (Array.isArray(tools) && tools.length > 0) throw new ServerError(400, 'unsupported', 'tools are not supported by DiffusionVL models');
}

/** Ollama's `format`: "json" (any JSON object) or a JSON Schema object; absent, null or "": plain text. */
function ollamaFormat(format: unknown): JsonSchemaInput | undefined {
  if (format === undefined || format === null || format === '') return undefined;
  if (format === 'json') return 'json_object';
  if (typeof format === 'string') throw new ServerError(400, 'invalid_request', `format must be "json" or a JSON Schema object, got ${JSON.stringify(format)}`, { param: 'format' });
  return checkRequestFormat(format, 'format');
}

/**
 * Ollama's keep_alive: a duration string ("5m", "1h30m", "10s", "0"), or a number of seconds; 0 unloads after
 * the request, a negative value keeps the model loaded. undefined/null: the server's default.
 */
export function parseKeepAlive(value: string | number | null | undefined): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new ServerError(400, 'invalid_request', `keep_alive must be a finite number of seconds, got ${value}`);
    return value < 0 ? -1 : Math.round(value * 1000);
  }
  const ms = parseDuration(value);
  if (ms === null) throw new ServerError(400, 'invalid_request', `keep_alive must be a duration like 5m, 30s, 1h or a number of seconds, got '${value}'`);
  return ms;
}

/** "5m", "1h30m", "90s", "250ms", "-1", "0", "10" (seconds) -> milliseconds (< 0: forever); null if not a duration. */
export function parseDuration(text: string): number | null {
  const value = text.trim();
  if (/^-?\d+(\.\d+)?$/.test(value)) {
    const seconds = Number(value);
    return seconds < 0 ? -1 : Math.round(seconds * 1000);
  }
  if (value.startsWith('-')) return parseDuration(value.slice(1)) === null ? null : -1;
  const unit: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };
  let total = 0;
  let rest = value;
  if (rest === '') return null;
  while (rest.length > 0) {
    const match = /^(\d+(?:\.\d+)?)(ms|h|m|s)/.exec(rest);
    if (!match) return null;
    total += Number(match[1]) * unit[match[2]];
    rest = rest.slice(match[0].length);
  }
  return Math.round(total);
}
