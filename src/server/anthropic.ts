/**
 * The Anthropic Messages API (what Anthropic's SDKs and the apps built on them speak): POST /v1/messages, one
 * JSON message or, with `stream: true`, server-sent events the way Anthropic frames them (message_start,
 * content_block_start, ping, content_block_delta with text_delta, content_block_stop, message_delta with the
 * stop reason and usage, message_stop); POST /v1/messages/count_tokens. The answer is `dvl ask`'s for the same
 * prompt and settings, through the server's line, model pool and caches, as on the OpenAI routes.
 *
 * Request: `model` (as on /v1/chat/completions: a model the server has), `max_tokens` (required: dvl's gen
 * length), `messages` (user and assistant turns; content a string or blocks: `text`, and `image` with a
 * `base64` source (image/png, image/jpeg, image/gif, image/webp) or a `url` source (only where the server
 * allows remote images)), `system` (a string or text blocks), `temperature`, `top_p`, `top_k`,
 * `stop_sequences`, `stream`; structured output with `output_config.format` {type: "json_schema", schema}
 * (also the earlier beta's `output_format`); the diffusion settings as extra fields, as on the OpenAI route
 * (steps, block_size, remasking, threshold, min_pixels, max_pixels, tiles, image_mode) and `seed`. A missing
 * `temperature` is 0 (greedy, `dvl ask`'s default), not Anthropic's 1. Tools and extended thinking are a 400;
 * `metadata` and other unknown fields are ignored. The last message must be the user's: dvl does not continue
 * an assistant message.
 *
 * Errors are Anthropic's shape, `{"type": "error", "error": {"type", "message"}}` (errors.ts), with the
 * server's statuses (a full queue is a 503 overloaded_error with Retry-After); after a stream began, an
 * `error` event.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { AskResult, JsonSchemaInput } from '../ask.js';
import { answer, promptTokens } from './answer.js';
import type { RouteContext } from './context.js';
import { checkQuestion, toConversation, type ChatInput, type InputMessage, type InputPart, type RequestSettings } from './chat-input.js';
import { anthropicErrorBody, ServerError } from './errors.js';
import { checkRequestFormat, DIFFUSION_FIELDS, dropUndefined, thresholdOf } from './request-fields.js';
import { clientGone, endFailedStream, startStream } from './streaming.js';

/** The image types Anthropic's API takes in a base64 source. */
const MEDIA_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];

const contentBlock = {
  type: 'object',
  // How an error message names an array of these (errors.ts).
  description: 'content blocks',
  required: ['type'],
  properties: {
    type: { type: 'string' },
    text: { type: 'string' },
    source: { type: 'object', required: ['type'], properties: { type: { type: 'string' }, media_type: { type: 'string' }, data: { type: 'string' }, url: { type: 'string' } } },
  },
};

const messagesSchema = {
  type: 'array',
  minItems: 1,
  items: {
    type: 'object',
    required: ['role', 'content'],
    properties: {
      role: { type: 'string', enum: ['user', 'assistant'] },
      content: { anyOf: [{ type: 'string' }, { type: 'array', items: contentBlock }] },
    },
  },
};

const systemSchema = { anyOf: [{ type: 'string' }, { type: 'array', items: contentBlock }] };

const formatSchema = { anyOf: [{ type: 'object', required: ['type'], properties: { type: { type: 'string', enum: ['json_schema'] }, schema: {} } }, { type: 'null' }] };

const messagesBody = {
  type: 'object',
  required: ['model', 'max_tokens', 'messages'],
  properties: {
    model: { type: 'string', minLength: 1 },
    max_tokens: { type: 'integer', minimum: 1, maximum: 65536 },
    messages: messagesSchema,
    system: systemSchema,
    temperature: { type: 'number', minimum: 0, maximum: 100 },
    top_p: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
    top_k: { type: 'integer', minimum: 0 },
    stop_sequences: { type: 'array', items: { type: 'string' }, maxItems: 16 },
    stream: { type: 'boolean' },
    tools: { type: 'array' },
    thinking: { type: 'object', properties: { type: { type: 'string' } } },
    output_config: { type: 'object', properties: { format: formatSchema } },
    output_format: formatSchema,
    seed: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
    ...DIFFUSION_FIELDS,
  },
} as const;

const countBody = {
  type: 'object',
  required: ['model', 'messages'],
  properties: {
    model: { type: 'string', minLength: 1 },
    messages: messagesSchema,
    system: systemSchema,
    tools: { type: 'array' },
    thinking: { type: 'object', properties: { type: { type: 'string' } } },
    // The image budget decides how many tokens an image is.
    min_pixels: DIFFUSION_FIELDS.min_pixels,
    max_pixels: DIFFUSION_FIELDS.max_pixels,
    tiles: DIFFUSION_FIELDS.tiles,
    image_mode: DIFFUSION_FIELDS.image_mode,
  },
} as const;

interface ContentBlock {
  type: string;
  text?: string;
  source?: { type: string; media_type?: string; data?: string; url?: string };
}

interface MessageParam {
  role: 'user' | 'assistant';
  content: string | ContentBlock[];
}

interface OutputFormat {
  type: 'json_schema';
  schema?: unknown;
}

interface CountBody {
  model: string;
  messages: MessageParam[];
  system?: string | ContentBlock[];
  tools?: unknown[];
  thinking?: { type?: string };
  min_pixels?: number;
  max_pixels?: number;
  tiles?: number;
  image_mode?: 'anyres' | 'pad';
}

interface MessagesBody extends CountBody {
  max_tokens: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  stop_sequences?: string[];
  stream?: boolean;
  output_config?: { format?: OutputFormat | null };
  output_format?: OutputFormat | null;
  seed?: number;
  steps?: number;
  block_size?: number;
  remasking?: RequestSettings['remasking'];
  threshold?: number;
  confidence_threshold?: number;
}

export function registerAnthropic(app: FastifyInstance, context: RouteContext): void {
  app.post<{ Body: MessagesBody }>('/v1/messages', { schema: { body: messagesBody } }, async (request, reply) => {
    const body = request.body;
    unsupported(body);
    const messages = toMessages(body);
    const last = body.messages.length - 1;
    if (body.messages[last].role === 'user') checkQuestion(messages[messages.length - 1].parts, `messages[${last}].content`);
    const jsonSchema = outputFormat(body);
    const input: Omit<ChatInput, 'system' | 'history' | 'historyImages' | 'parts' | 'images'> = {
      model: body.model,
      settings: anthropicSettings(body),
      stop: body.stop_sequences ?? [],
      ...(jsonSchema !== undefined ? { jsonSchema, budgetName: 'max_tokens' } : {}),
    };
    const id = `msg_${randomBytes(12).toString('hex')}`;

    if (!body.stream) {
      const signal = clientGone(reply, context.draining);
      const conversation = await toConversation(messages, context.options.media, signal);
      const done = await answer(context, { ...input, ...conversation }, { signal });
      return {
        id,
        type: 'message',
        role: 'assistant',
        model: body.model,
        content: [{ type: 'text', text: done.result.text }],
        ...stopFields(done.result),
        usage: { input_tokens: done.result.stats.promptTokens, output_tokens: done.completionTokens },
      };
    }

    // Everything that can be refused is checked before the stream starts: those errors keep their status.
    await context.pool.check(body.model);
    const conversation = await toConversation(messages, context.options.media);
    const frame = (event: string, data: object) => `event: ${event}\ndata: ${JSON.stringify({ type: event, ...data })}\n\n`;
    let begun = false;
    // Before message_start the keep-alive is an SSE comment (no event may come before it); after, Anthropic's ping.
    const stream = startStream(reply, {
      contentType: 'text/event-stream; charset=utf-8',
      ping: () => (begun ? frame('ping', {}) : ': keep-alive\n\n'),
      pingMs: context.options.pingMs,
      draining: context.draining,
    });
    /** message_start (with the prompt's tokens, known once its images are encoded), the text block's start, a ping. */
    const begin = (inputTokens: number) => {
      if (begun) return;
      begun = true;
      const message = { id, type: 'message', role: 'assistant', model: body.model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: inputTokens, output_tokens: 0 } };
      stream.write(frame('message_start', { message }));
      stream.write(frame('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }));
      stream.write(frame('ping', {}));
    };
    const finish = (stop: { stop_reason: string; stop_sequence: string | null }, outputTokens: number) => {
      stream.write(frame('content_block_stop', { index: 0 }));
      stream.write(frame('message_delta', { delta: stop, usage: { output_tokens: outputTokens } }));
      stream.end(frame('message_stop', {}));
    };
    try {
      const done = await answer(context, { ...input, ...conversation }, {
        signal: stream.signal,
        onPromptTokens: begin,
        onEvent: (event) => {
          if ((event.type === 'block-end' || event.type === 'finished') && event.text) {
            stream.write(frame('content_block_delta', { index: 0, delta: { type: 'text_delta', text: event.text } }));
          }
        },
      });
      begin(done.result.stats.promptTokens);
      finish(stopFields(done.result), done.completionTokens);
    } catch (error) {
      endFailedStream(stream, error, {
        refusal: anthropicErrorBody,
        errorFrame: (failure) => `event: error\ndata: ${JSON.stringify(anthropicErrorBody(failure))}\n\n`,
        cut: ({ partial }) => {
          // Once the message has begun: the stop reason says a limit ended it (as the OpenAI route's "length"),
          // the comment line says which.
          if (!begun) return false;
          stream.write(': dvl serve is shutting down: the answer is cut short\n\n');
          finish({ stop_reason: 'max_tokens', stop_sequence: null }, partial.completionTokens);
          return true;
        },
      });
    }
    return reply;
  });

  app.post<{ Body: CountBody }>('/v1/messages/count_tokens', { schema: { body: countBody } }, async (request, reply) => {
    const body = request.body;
    unsupported(body);
    const signal = clientGone(reply, context.draining);
    const conversation = await toConversation(toMessages(body), context.options.media, signal);
    const input: ChatInput = { model: body.model, ...conversation, settings: anthropicSettings(body), stop: [] };
    const id = await context.pool.check(body.model);
    // The tokenizer of a loaded model counts at once; otherwise the model is loaded in its turn, as for an answer.
    const loaded = context.pool.loaded().find((m) => m.id === id);
    if (loaded) return { input_tokens: await promptTokens(loaded, input) };
    const count = await context.queue.run(async () => {
      const model = await context.pool.acquire(id);
      try {
        return await promptTokens(model, input);
      } finally {
        context.pool.release(id);
      }
    }, signal);
    return { input_tokens: count };
  });
}

function unsupported(body: CountBody): void {
  if (body.tools != null && body.tools.length > 0) throw new ServerError(400, 'unsupported', 'tools are not supported by DiffusionVL models', { param: 'tools' });
  if (body.thinking?.type !== undefined && body.thinking.type !== 'disabled') {
    throw new ServerError(400, 'unsupported', 'extended thinking is not supported by DiffusionVL models', { param: 'thinking' });
  }
}

/** output_config.format (or the beta's output_format) -> the schema the answer follows; undefined: plain text. */
function outputFormat(body: MessagesBody): JsonSchemaInput | undefined {
  if (body.output_config?.format && body.output_format) {
    throw new ServerError(400, 'invalid_request', 'output_config.format and output_format are the same setting: give one', { param: 'output_format' });
  }
  const [format, param] = body.output_config?.format ? [body.output_config.format, 'output_config.format'] : [body.output_format, 'output_format'];
  if (!format) return undefined;
  if (format.schema === undefined) throw new ServerError(400, 'invalid_request', `${param}.schema is required: the JSON Schema the answer follows`, { param: `${param}.schema` });
  return checkRequestFormat(format.schema, `${param}.schema`);
}

function anthropicSettings(body: Partial<MessagesBody>): RequestSettings {
  return dropUndefined({
    genLength: body.max_tokens,
    temperature: body.temperature,
    topP: body.top_p,
    topK: body.top_k,
    seed: body.seed,
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

/** `system` and `messages` -> the messages the server's conversation takes (images still references). */
function toMessages(body: CountBody): InputMessage[] {
  const out: InputMessage[] = [];
  if (body.system !== undefined) {
    const parts = typeof body.system === 'string' ? [{ kind: 'text' as const, text: body.system }] : body.system.map((block, j) => textOnly(block, `system[${j}]`));
    out.push({ role: 'system', parts });
  }
  body.messages.forEach((m, i) => {
    const parts: InputPart[] = typeof m.content === 'string' ? [{ kind: 'text', text: m.content }] : m.content.map((block, j) => contentPart(block, `messages[${i}].content[${j}]`));
    out.push({ role: m.role, parts });
  });
  return out;
}

function textOnly(block: ContentBlock, name: string): { kind: 'text'; text: string } {
  if (block.type !== 'text') throw new ServerError(400, 'unsupported', `${name}.type '${block.type}' is not supported here (text)`, { param: `${name}.type` });
  if (typeof block.text !== 'string') throw new ServerError(400, 'invalid_request', `${name}.text must be a string`, { param: `${name}.text` });
  return { kind: 'text', text: block.text };
}

function contentPart(block: ContentBlock, name: string): InputPart {
  if (block.type === 'text') return textOnly(block, name);
  if (block.type !== 'image') throw new ServerError(400, 'unsupported', `${name}.type '${block.type}' is not supported (text, image)`, { param: `${name}.type` });
  const source = block.source;
  if (!source) throw new ServerError(400, 'invalid_request', `${name}.source is required`, { param: `${name}.source` });
  if (source.type === 'base64') {
    if (typeof source.media_type !== 'string' || !MEDIA_TYPES.includes(source.media_type)) {
      throw new ServerError(400, 'invalid_request', `${name}.source.media_type must be one of ${MEDIA_TYPES.join(', ')}`, { param: `${name}.source.media_type` });
    }
    if (typeof source.data !== 'string') throw new ServerError(400, 'invalid_request', `${name}.source.data must be a base64 string`, { param: `${name}.source.data` });
    return { kind: 'image', ref: source.data, bareBase64: true };
  }
  if (source.type === 'url') {
    if (typeof source.url !== 'string') throw new ServerError(400, 'invalid_request', `${name}.source.url must be a string`, { param: `${name}.source.url` });
    return { kind: 'image', ref: source.url };
  }
  throw new ServerError(400, 'unsupported', `${name}.source.type '${source.type}' is not supported (base64, url)`, { param: `${name}.source.type` });
}

/** Why the answer ended, in Anthropic's words. */
function stopFields(result: AskResult): { stop_reason: 'end_turn' | 'max_tokens' | 'stop_sequence'; stop_sequence: string | null } {
  if (result.finishReason === 'stop') return { stop_reason: 'stop_sequence', stop_sequence: result.stopSequence ?? null };
  return { stop_reason: result.finishReason === 'length' ? 'max_tokens' : 'end_turn', stop_sequence: null };
}
