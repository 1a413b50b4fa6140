/**
 * dvl's own route, what `dvl ask --host` and `dvl chat --host` speak: POST /dvl/v1/ask answers one question
 * exactly as `dvl ask` would (its settings, its conversation, its events), through the server's line, model
 * pool and caches.
 *
 * Request (JSON; wrong types are a 400):
 *   { "model": "<id as the server lists it>", "prompt": "...", "images": ["<base64>", ...],
 *     "system": "..." | null (absent: the model's default system prompt),
 *     "history": [Turn...], "history_images": ["<base64>", ...] (the images of the history's user turns),
 *     "settings": { genLength, steps, blockSize, temperature, topK, topP, remasking, threshold, seed }
 *                 (each optional: `dvl ask`'s defaults, the model's block size),
 *     "min_pixels": n, "max_pixels": n, "stop": ["..."],
 *     "reuse_prefix": true | false (default false),
 *     "format": "json" | { JSON Schema } (structured output, as `dvl ask --format json` / `--json-schema`) }
 * The new turn is the images, then the prompt (as `dvl ask IMAGE... PROMPT` places them). Images are checked
 * (size, header) before anything reaches the model.
 * Encoded images are cached as on the other routes, but by default the previous request's prompt rows are not
 * reused: that would save the prefill call, and the answer's NFE would no longer be a local run's (what
 * `dvl ask --host` promises). `"reuse_prefix": true` reuses them as the OpenAI and Ollama routes do (the web
 * page's follow-up questions): the answer is the same, the shared prompt tokens are not computed again and
 * `stats.cachedTokens` counts them.
 *
 * Answer: NDJSON, one line per AskEvent as it happens, `{"event": AskEvent}`, then one
 * `{"result": AskResult, "settings": GenerationSettings, "dtype": "...", "load_ms": n, "queue_ms": n,
 *   "pixel_budget": {minPixels, maxPixels, from}}` (the budget: the request's bounds over the model's default).
 * Empty lines are keep-alive pings. A failure after the stream started is a last line
 * `{"error": {"message", "code", "kind"}}`, kind the DvlError kind ('usage', 'input', 'model'; an unknown
 * model is 'model') so that a client can exit as `dvl ask` would. A failure before it is an HTTP status with
 * `{"error": {"message", "type", "param", "code", "kind"}}` (kind only where one applies).
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { formatFromWire, type DvlAskBody, type DvlAskLine } from '../ask-wire.js';
import { REMASKING_STRATEGIES } from '../generate/schedule.js';
import { SETTING_NAMES } from '../generate/settings.js';
import { turnImages } from '../prompt/conversation.js';
import { DvlError, type ErrorKind } from '../util/errors.js';
import { answer } from './answer.js';
import type { RouteContext } from './context.js';
import { checkPixelBounds, type ChatInput, type RequestSettings } from './chat-input.js';
import { openAiErrorBody, ServerError, toHttpError } from './errors.js';
import { checkImageLimits, loadImageReference } from './media.js';
import { checkRequestFormat, dropUndefined, MAX_RESIZE_PIXELS } from './request-fields.js';
import { endFailedStream, startStream } from './streaming.js';

const MIN_PIXELS = 28 * 28;

const base64List = { type: 'array', items: { type: 'string' }, maxItems: 256 } as const;

const partSchema = {
  type: 'object',
  required: ['kind'],
  properties: { kind: { type: 'string', enum: ['text', 'image'] }, text: { type: 'string' } },
} as const;

const turnSchema = {
  type: 'object',
  required: ['role', 'text'],
  properties: {
    role: { type: 'string', enum: ['user', 'assistant'] },
    text: { type: 'string' },
    images: { type: 'integer', minimum: 0, maximum: 256 },
    parts: { type: 'array', items: partSchema },
  },
} as const;

/** The flags' ranges (generate/settings.ts GENERATION_SETTINGS). */
const settingsSchema = {
  type: 'object',
  properties: {
    genLength: { type: 'integer', minimum: 1, maximum: 65536 },
    steps: { type: 'integer', minimum: 1, maximum: 1024 },
    blockSize: { type: 'integer', minimum: 1, maximum: 4096 },
    temperature: { type: 'number', minimum: 0, maximum: 100 },
    topK: { type: 'integer', minimum: 0 },
    topP: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
    remasking: { type: 'string', enum: [...REMASKING_STRATEGIES] },
    threshold: { type: 'number', minimum: 0, maximum: 1 },
    seed: { anyOf: [{ type: 'integer', minimum: 0 }, { type: 'null' }] },
  },
} as const;

const askBody = {
  type: 'object',
  required: ['model', 'prompt'],
  properties: {
    model: { type: 'string', minLength: 1 },
    prompt: { type: 'string' },
    images: base64List,
    system: { anyOf: [{ type: 'string' }, { type: 'null' }] },
    history: { type: 'array', items: turnSchema },
    history_images: base64List,
    settings: settingsSchema,
    // Bounded as on the other APIs: a small image may not be upscaled to gigapixels for the tower.
    min_pixels: { type: 'integer', minimum: MIN_PIXELS, maximum: MAX_RESIZE_PIXELS },
    max_pixels: { type: 'integer', minimum: MIN_PIXELS, maximum: MAX_RESIZE_PIXELS },
    tiles: { type: 'integer', minimum: 1, maximum: 36 },
    image_mode: { type: 'string', enum: ['anyres', 'pad'] },
    stop: { type: 'array', items: { type: 'string' }, maxItems: 16 },
    reuse_prefix: { type: 'boolean' },
    // "json" or a JSON Schema (an object or a boolean): checked by checkRequestFormat.
    format: { anyOf: [{ type: 'string', enum: ['json'] }, { type: 'object' }, { type: 'boolean' }] },
  },
} as const;

export function registerDvlRoutes(app: FastifyInstance, context: RouteContext): void {
  app.post<{ Body: DvlAskBody }>('/dvl/v1/ask', { schema: { body: askBody } }, async (request, reply) => {
    let input: ChatInput;
    try {
      input = await toInput(request.body, context);
      await context.pool.check(input.model);
    } catch (error) {
      return sendDvlError(reply, error);
    }
    const stream = startStream(reply, { contentType: 'application/x-ndjson', ping: '\n', pingMs: context.options.pingMs, draining: context.draining });
    const line = (value: DvlAskLine) => `${JSON.stringify(value)}\n`;
    try {
      const done = await answer(context, input, { signal: stream.signal, onEvent: (event) => stream.write(line({ event })) });
      stream.end(line({ result: done.result, settings: done.settings, dtype: done.model.dtype, load_ms: round(done.timings.loadMs), queue_ms: round(done.timings.queueMs), pixel_budget: done.pixels }));
    } catch (error) {
      const kind = kindOf(error);
      endFailedStream(stream, error, {
        refusal: (failure) => {
          const body = openAiErrorBody(failure);
          return { error: { ...body.error, ...(kind ? { kind } : {}) } };
        },
        // A client still there is told why the answer ends (a drain that cut it included).
        errorFrame: () => line({ error: errorLine(error) }),
      });
    }
    return reply;
  });
}

/** The body -> the answering service's input, images decoded from base64 and checked. */
async function toInput(body: DvlAskBody, context: RouteContext): Promise<ChatInput> {
  const policy = context.options.media;
  const history = body.history ?? [];
  const historyImages = body.history_images ?? [];
  const counted = history.reduce((n, turn) => n + turnImages(turn), 0);
  if (counted !== historyImages.length) {
    throw new ServerError(400, 'invalid_request', `the history counts ${counted} images but history_images holds ${historyImages.length}`, { param: 'history_images' });
  }
  const decode = async (refs: string[], name: string) => {
    const out: Buffer[] = [];
    for (const [i, ref] of refs.entries()) {
      const label = `${name}[${i}]`;
      const bytes = await loadImageReference(ref, policy, { bareBase64: true, label });
      await checkImageLimits(bytes, policy, { label });
      out.push(bytes);
    }
    return out;
  };
  const images = await decode(body.images ?? [], 'images');
  const s = body.settings ?? {};
  // The generation settings by name (the body may hold other keys; they are ignored), then the image ones.
  const settings: RequestSettings = dropUndefined({
    ...Object.fromEntries(SETTING_NAMES.map((name) => [name, s[name] ?? undefined])),
    minPixels: body.min_pixels,
    maxPixels: body.max_pixels,
    tiles: body.tiles,
    imageMode: body.image_mode,
  });
  // Bounds that conflict are a 400 now, before the model is loaded.
  checkPixelBounds(settings);
  const jsonSchema = body.format === undefined ? undefined : body.format === 'json' ? formatFromWire(body.format) : checkRequestFormat(body.format, 'format');
  return {
    ...(jsonSchema !== undefined ? { jsonSchema, budgetName: 'settings.genLength' } : {}),
    model: body.model,
    system: body.system,
    history,
    historyImages: await decode(historyImages, 'history_images'),
    parts: [...images.map(() => ({ kind: 'image' as const })), { kind: 'text' as const, text: body.prompt }],
    images,
    settings,
    stop: body.stop ?? [],
    reuseCache: body.reuse_prefix === true,
  };
}

/** An error before the stream: its status, the OpenAI-shaped body plus the DvlError kind where one applies. */
function sendDvlError(reply: FastifyReply, error: unknown) {
  const http = toHttpError(error);
  if (http.retryAfterSeconds !== undefined) void reply.header('retry-after', String(http.retryAfterSeconds));
  const body = openAiErrorBody(http);
  const kind = kindOf(error);
  return reply.code(http.status === 499 ? 400 : http.status).send({ error: { ...body.error, ...(kind ? { kind } : {}) } });
}

function errorLine(error: unknown): { message: string; code: string; kind?: ErrorKind } {
  const http = toHttpError(error);
  // Anything without a kind of its own failed on the server's side: for the client, a model problem.
  return { message: http.message, code: http.code, kind: kindOf(error) ?? (http.status < 500 ? 'usage' : 'model') };
}

function kindOf(error: unknown): ErrorKind | undefined {
  if (error instanceof DvlError) return error.kind === 'interrupted' ? 'model' : error.kind;
  // A model the server does not have: `dvl ask -m` of an unknown model is a model problem (exit 3) too.
  if (error instanceof ServerError && error.code === 'model_not_found') return 'model';
  return undefined;
}

const round = (ms: number) => Math.round(ms * 10) / 10;
