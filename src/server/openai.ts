/**
 * The OpenAI API: POST /v1/chat/completions (streamed as server-sent events the way OpenAI frames them, or one
 * JSON answer) and GET /v1/models. Besides OpenAI's fields, the diffusion settings are accepted as extra
 * fields: steps, block_size, remasking, threshold, min_pixels, max_pixels (and top_k). Unknown fields are
 * ignored, as OpenAI-compatible servers do; known fields with a wrong type or value are a 400.
 * Structured output: `response_format` {type: "json_schema", json_schema: {name, schema, strict}} (the schema is
 * always followed, strict or not) or {type: "json_object"}; {type: "text"} is plain text. A schema dvl cannot
 * follow is a 400 naming the keyword.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { AskResult, JsonSchemaInput } from '../ask.js';
import { REMASKING_STRATEGIES } from '../generate/schedule.js';
import { answer, type Answer } from './answer.js';
import type { RouteContext } from './context.js';
import { checkQuestion, toConversation, type InputMessage, type InputPart, type RequestSettings } from './chat-input.js';
import { openAiErrorBody, ServerError } from './errors.js';
import { checkRequestFormat, DIFFUSION_FIELDS, dropUndefined, thresholdOf } from './request-fields.js';
import { clientGone, endFailedStream, startStream } from './streaming.js';



const stopSchema = { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' }, maxItems: 16 }, { type: 'null' }] };

const contentPart = {
  type: 'object',
  // How an error message names an array of these (errors.ts).
  description: 'content parts',
  required: ['type'],
  properties: {
    type: { type: 'string' },
    text: { type: 'string' },
    image_url: { anyOf: [{ type: 'string' }, { type: 'object', required: ['url'], properties: { url: { type: 'string' }, detail: { type: 'string' } } }] },
  },
};

const chatBody = {
  type: 'object',
  required: ['model', 'messages'],
  properties: {
    model: { type: 'string', minLength: 1 },
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { type: 'string' },
          content: { anyOf: [{ type: 'string' }, { type: 'array', items: contentPart }, { type: 'null' }] },
        },
      },
    },
    max_tokens: { anyOf: [{ type: 'integer', minimum: 1, maximum: 65536 }, { type: 'null' }] },
    max_completion_tokens: { anyOf: [{ type: 'integer', minimum: 1, maximum: 65536 }, { type: 'null' }] },
    temperature: { anyOf: [{ type: 'number', minimum: 0, maximum: 100 }, { type: 'null' }] },
    top_p: { anyOf: [{ type: 'number', exclusiveMinimum: 0, maximum: 1 }, { type: 'null' }] },
    top_k: { type: 'integer', minimum: 0 },
    seed: { anyOf: [{ type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER }, { type: 'null' }] },
    stop: stopSchema,
    stream: { anyOf: [{ type: 'boolean' }, { type: 'null' }] },
    stream_options: { anyOf: [{ type: 'object', properties: { include_usage: { type: 'boolean' } } }, { type: 'null' }] },
    n: { anyOf: [{ type: 'integer', minimum: 1 }, { type: 'null' }] },
    tools: { anyOf: [{ type: 'array' }, { type: 'null' }] },
    response_format: {
      anyOf: [
        {
          type: 'object',
          required: ['type'],
          properties: {
            type: { type: 'string', enum: ['text', 'json_object', 'json_schema'] },
            json_schema: { type: 'object', properties: { name: { type: 'string' }, description: { type: 'string' }, schema: {}, strict: { anyOf: [{ type: 'boolean' }, { type: 'null' }] } } },
          },
        },
        { type: 'null' },
      ],
    },
    ...DIFFUSION_FIELDS,
  },
} as const;

interface ChatBody {
  model: string;
  messages: { role: string; content?: string | ContentPart[] | null }[];
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number;
  seed?: number | null;
  stop?: string | string[] | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  n?: number | null;
  tools?: unknown[] | null;
  response_format?: { type: 'text' | 'json_object' | 'json_schema'; json_schema?: { name?: string; schema?: unknown; strict?: boolean | null } } | null;
  steps?: number;
  block_size?: number;
  remasking?: (typeof REMASKING_STRATEGIES)[number];
  threshold?: number;
  confidence_threshold?: number;
  min_pixels?: number;
  max_pixels?: number;
  tiles?: number;
  image_mode?: 'anyres' | 'pad';
}

interface ContentPart {
  type: string;
  text?: string;
  image_url?: string | { url: string };
}

export function registerOpenAi(app: FastifyInstance, context: RouteContext): void {
  app.get('/v1/models', async () => {
    const models = await context.pool.list();
    return { object: 'list', data: models.map(modelObject) };
  });

  // The openai client's models.retrieve. Ids hold slashes (org/name, an absolute path): the rest of the path is
  // the id, percent-decoded (the client encodes it), and a local checkpoint is found under any spelling.
  app.get<{ Params: { '*': string } }>('/v1/models/*', async (request) => {
    const id = await context.pool.check(request.params['*']);
    const listed = (await context.pool.list()).find((m) => m.id === id);
    return modelObject(listed ?? { id, modifiedAt: new Date(0) });
  });

  app.post<{ Body: ChatBody }>('/v1/chat/completions', { schema: { body: chatBody } }, async (request, reply) => {
    const body = request.body;
    const unsupported = unsupportedFields(body);
    if (unsupported) throw unsupported;
    const messages = toMessages(body.messages);
    const last = messages.length - 1;
    if (messages[last].role === 'user') checkQuestion(messages[last].parts, `messages[${last}].content`);
    const jsonSchema = responseFormat(body);
    const input = {
      model: body.model,
      settings: openAiSettings(body),
      stop: body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop,
      ...(jsonSchema !== undefined ? { jsonSchema, budgetName: body.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens' } : {}),
    };
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);

    if (!body.stream) {
      const signal = clientGone(reply, context.draining);
      const conversation = await toConversation(messages, context.options.media, signal);
      const done = await answer(context, { ...input, ...conversation }, { signal });
      return {
        id,
        object: 'chat.completion',
        created,
        model: body.model,
        choices: [{ index: 0, message: { role: 'assistant', content: done.result.text, refusal: null }, logprobs: null, finish_reason: finishReason(done.result) }],
        usage: usage(done),
        timings: timings(done),
      };
    }

    // Everything that can be refused is checked before the stream starts: those errors keep their status.
    await context.pool.check(body.model);
    const conversation = await toConversation(messages, context.options.media);
    const includeUsage = body.stream_options?.include_usage === true;
    const stream = startStream(reply, { contentType: 'text/event-stream; charset=utf-8', ping: ': ping\n\n', pingMs: context.options.pingMs, draining: context.draining });
    const chunk = (delta: object, finish: string | null) =>
      `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: body.model, system_fingerprint: null, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], ...(includeUsage ? { usage: null } : {}) })}\n\n`;
    let first = true;
    const sendText = (text: string) => {
      if (first) {
        stream.write(chunk({ role: 'assistant', content: '' }, null));
        first = false;
      }
      if (text) stream.write(chunk({ content: text }, null));
    };
    try {
      const done = await answer(context, { ...input, ...conversation }, {
        signal: stream.signal,
        onStart: () => sendText(''),
        onEvent: (event) => {
          if ((event.type === 'block-end' || event.type === 'finished') && event.text) sendText(event.text);
        },
      });
      sendText('');
      stream.write(chunk({}, finishReason(done.result)));
      if (includeUsage) {
        stream.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: body.model, system_fingerprint: null, choices: [], usage: usage(done), timings: timings(done) })}\n\n`);
      }
      stream.end('data: [DONE]\n\n');
    } catch (error) {
      endFailedStream(stream, error, {
        refusal: openAiErrorBody,
        // Headers are out: the error travels as an SSE event in OpenAI's error shape.
        errorFrame: (failure) => `data: ${JSON.stringify(openAiErrorBody(failure))}\n\n`,
        cut: ({ partial }) => {
          // finish_reason must be one of OpenAI's (stop, length, content_filter, tool_calls): clients read it as
          // an enum, and a value of our own (vLLM sends "abort") breaks those that parse strictly. "stop" would
          // say the model finished its answer; "length" says what happened: generation ended at a limit (here
          // the server's drain time, rather than max_tokens) before the model was done. The comment line says
          // why, for whoever reads the raw stream.
          stream.write(': dvl serve is shutting down: the answer is cut short\n\n');
          stream.write(chunk({}, 'length'));
          if (includeUsage) {
            const cutUsage = { prompt_tokens: partial.promptTokens, completion_tokens: partial.completionTokens, total_tokens: partial.promptTokens + partial.completionTokens };
            stream.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: body.model, system_fingerprint: null, choices: [], usage: cutUsage })}\n\n`);
          }
          stream.end('data: [DONE]\n\n');
          return true;
        },
      });
    }
    return reply;
  });
}

function unsupportedFields(body: ChatBody): ServerError | null {
  if (body.n != null && body.n > 1) return new ServerError(400, 'unsupported', 'n > 1 is not supported: ask once per answer', { param: 'n' });
  if (body.tools != null && body.tools.length > 0) return new ServerError(400, 'unsupported', 'tools are not supported by DiffusionVL models', { param: 'tools' });
  return null;
}

/** response_format -> the schema the answer follows (undefined: plain text). */
function responseFormat(body: ChatBody): JsonSchemaInput | undefined {
  const format = body.response_format;
  if (!format || format.type === 'text') return undefined;
  if (format.type === 'json_object') return 'json_object';
  if (!format.json_schema) throw new ServerError(400, 'invalid_request', 'response_format.json_schema is required with type json_schema', { param: 'response_format.json_schema' });
  if (format.json_schema.schema === undefined) {
    throw new ServerError(400, 'invalid_request', 'response_format.json_schema.schema is required: the JSON Schema the answer follows', { param: 'response_format.json_schema.schema' });
  }
  return checkRequestFormat(format.json_schema.schema, 'response_format.json_schema.schema');
}


function openAiSettings(body: ChatBody): RequestSettings {
  const genLength = body.max_completion_tokens ?? body.max_tokens ?? undefined;
  return dropUndefined({
    genLength,
    temperature: body.temperature ?? undefined,
    topP: body.top_p ?? undefined,
    topK: body.top_k,
    seed: body.seed ?? undefined,
    steps: body.steps,
    blockSize: body.block_size,
    remasking: body.remasking,
    threshold: thresholdOf(body),
    minPixels: body.min_pixels,
    maxPixels: body.max_pixels,
    tiles: body.tiles,
    imageMode: body.image_mode,
  });
}

function modelObject(m: { id: string; modifiedAt: Date }) {
  return { id: m.id, object: 'model', created: Math.floor(m.modifiedAt.getTime() / 1000), owned_by: 'dvl' };
}


function toMessages(messages: ChatBody['messages']): InputMessage[] {
  return messages.map((m, i) => {
    const role = m.role === 'developer' ? 'system' : m.role;
    if (role !== 'system' && role !== 'user' && role !== 'assistant') {
      throw new ServerError(400, 'unsupported', `messages[${i}].role '${m.role}' is not supported (system, developer, user, assistant)`, { param: `messages[${i}].role` });
    }
    const content = m.content ?? '';
    const parts: InputPart[] =
      typeof content === 'string'
        ? [{ kind: 'text', text: content }]
        : content.map((part, j) => {
            if (part.type === 'text') {
              if (typeof part.text !== 'string') throw new ServerError(400, 'invalid_request', `messages[${i}].content[${j}].text must be a string`, { param: `messages[${i}].content[${j}].text` });
              return { kind: 'text', text: part.text };
            }
            if (part.type === 'image_url') {
              const url = typeof part.image_url === 'string' ? part.image_url : part.image_url?.url;
              if (typeof url !== 'string') throw new ServerError(400, 'invalid_request', `messages[${i}].content[${j}].image_url.url must be a string`, { param: `messages[${i}].content[${j}].image_url` });
              return { kind: 'image', ref: url };
            }
            throw new ServerError(400, 'unsupported', `messages[${i}].content[${j}].type '${part.type}' is not supported (text, image_url)`, { param: `messages[${i}].content[${j}].type` });
          });
    return { role, parts };
  });
}

export function finishReason(result: AskResult): 'stop' | 'length' {
  return result.finishReason === 'length' ? 'length' : 'stop';
}

function usage(done: Answer) {
  const { stats } = done.result;
  return {
    prompt_tokens: stats.promptTokens,
    completion_tokens: done.completionTokens,
    total_tokens: stats.promptTokens + done.completionTokens,
    prompt_tokens_details: { cached_tokens: stats.cachedTokens },
  };
}

/** dvl's own per-request numbers, next to usage (as llama.cpp's server adds `timings`). */
function timings(done: Answer) {
  const { stats } = done.result;
  const r = (ms: number) => Math.round(ms * 10) / 10;
  return {
    nfe: stats.nfe,
    blocks: stats.blocks,
    image_tokens: stats.imageTokens,
    queue_ms: r(done.timings.queueMs),
    load_ms: r(done.timings.loadMs),
    preprocess_ms: r(stats.ms.preprocess),
    vision_ms: r(stats.ms.vision),
    prefill_ms: r(stats.ms.prefill),
    decode_ms: r(stats.ms.decode),
    total_ms: r(done.timings.totalMs),
  };
}
