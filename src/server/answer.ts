/**
 * One chat request through the server's line: wait for its turn, hold the model (loading it if needed),
 * answer in the model's worker with the caches a server keeps (encoded images by content, the KV rows of the
 * prompt prefix shared with the previous request), report events as they come, release the model.
 * A client that leaves cancels its request: dropped while waiting, stopped before the next decoder call
 * while running. A drain that stops an answer which has begun tells how far it got (AnswerCut), so that a
 * stream can end properly.
 */
import { checkRequestContext, requestPromptLength, type AskEvent, type AskResult } from '../ask.js';
import { uprightSize } from '../preprocess/decode.js';
import type { TextTokenizer } from '../prompt/tokenizer.js';
import { checkJsonFormat } from '../generate/json-schema/index.js';
import { DEFAULT_GEN_LENGTH, fullSettings, type ChatInput } from './chat-input.js';
import { contextLength, type RequestPixelBudget } from '../models/index.js';
import type { GenerationSettings } from '../generate/bd3lm.js';
import { cancellation, ServerError } from './errors.js';
import type { ServerMetrics } from './metrics.js';
import type { LoadedEntry, ModelPool } from './model-pool.js';
import type { RequestQueue } from './queue.js';

export interface AnswerContext {
  pool: ModelPool;
  queue: RequestQueue;
  metrics: ServerMetrics;
  /** `--ctx-size`: a context shorter than the models' own, for every request. */
  ctxSize?: number;
}

export interface AnswerTimings {
  /** Waiting for the requests ahead. */
  queueMs: number;
  /** Loading the model (0 when it was loaded). */
  loadMs: number;
  totalMs: number;
}

export interface Answer {
  result: AskResult;
  /** The settings and pixel budget the answer was made with (the request's over the defaults). */
  settings: GenerationSettings;
  pixels: RequestPixelBudget;
  timings: AnswerTimings;
  model: LoadedEntry;
  /** The answer's tokens as the APIs count them (usage.completion_tokens, eval_count): see returnedTokens. */
  completionTokens: number;
}

/** How far an answer got before a drain stopped it. */
export interface PartialAnswer {
  /** The text the events carried (what a stream sent). */
  text: string;
  promptTokens: number;
  /** The tokens of `text` (returnedTokens). */
  completionTokens: number;
  totalMs: number;
}

/** The server drains and stopped an answer that had begun: a 503 that says how far it got. */
export class AnswerCut extends ServerError {
  constructor(
    reason: ServerError,
    readonly partial: PartialAnswer,
  ) {
    super(reason.status, reason.code, reason.message, reason.options);
  }
}

export interface AnswerHooks {
  signal: AbortSignal;
  /** The request's turn came and its model is loaded (streams send their first bytes then, or before). */
  onStart?: (model: LoadedEntry) => void;
  onEvent?: (event: AskEvent) => void;
  /** The prompt's length in tokens, once its images are encoded (before generation starts). */
  onPromptTokens?: (count: number) => void;
}

/**
 * How many of the generated ids `text` returns: the ids whose text is at least partly in it, i.e. the
 * fewest first ids whose text reaches `text`'s length. With a stop string the answer is cut before it, and
 * the ids after the cut (the rest of their block) are not counted: usage.completion_tokens / eval_count are
 * those of the text returned. A stop string that begins inside a token counts that token (part of its text
 * is returned). Ids decoded from the start each time, so a character split over two tokens is counted once
 * it is complete; the count grows with the prefix, so it is found by bisection.
 */
export function returnedTokens(tokenizer: TextTokenizer, ids: readonly number[], text: string): number {
  if (text.length === 0) return 0;
  let low = 1;
  let high = ids.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (tokenizer.decode(ids.slice(0, middle)).length >= text.length) high = middle;
    else low = middle + 1;
  }
  return high;
}

/** The context a request may use: the model's, lowered by `--ctx-size` and by the request's own (num_ctx). */
function requestContext(model: LoadedEntry, input: ChatInput, context: AnswerContext): number {
  return Math.min(contextLength(model.worker.manifest.config), context.ctxSize ?? Infinity, input.contextLength ?? Infinity);
}

/** The images' upright sizes, from their headers (prompt order: earlier turns first). */
async function imageSizes(input: ChatInput) {
  const images = [...input.historyImages, ...input.images];
  const sizes = [];
  for (const [i, bytes] of images.entries()) sizes.push(await uprightSize(bytes, `image ${i + 1}`));
  return sizes;
}

/** The prompt's length in tokens as the answer would count it (usage.input_tokens), without running the model. */
export async function promptTokens(model: LoadedEntry, input: ChatInput): Promise<number> {
  const { config } = model.worker.manifest;
  const { pixels, imageOptions } = fullSettings(input.settings, config);
  return requestPromptLength(model.worker.tokenizer, config, { ...input, prompt: '', minPixels: pixels.minPixels, maxPixels: pixels.maxPixels, imageOptions }, await imageSizes(input));
}

/** Refuses (400) a request whose prompt and answer do not fit the context, from its ids and images' headers. */
async function checkFits(model: LoadedEntry, input: ChatInput, context: AnswerContext): Promise<void> {
  const { config } = model.worker.manifest;
  const { settings, pixels, imageOptions } = fullSettings(input.settings, config);
  const sizes = await imageSizes(input);
  checkRequestContext(
    model.worker.tokenizer,
    config,
    { ...input, prompt: '', settings, minPixels: pixels.minPixels, maxPixels: pixels.maxPixels, imageOptions, contextLength: requestContext(model, input, context) },
    sizes,
  );
}

export async function answer(context: AnswerContext, input: ChatInput, hooks: AnswerHooks): Promise<Answer> {
  const t0 = performance.now();
  // A gen length too short for the schema's shortest document: a 400 before anything waits or loads.
  if (input.jsonSchema !== undefined) {
    const genLength = input.settings.genLength ?? DEFAULT_GEN_LENGTH;
    try {
      checkJsonFormat(input.jsonSchema, genLength, input.budgetName ?? 'the gen length');
    } catch (error) {
      throw new ServerError(400, 'invalid_request', (error as Error).message, input.budgetName ? { param: input.budgetName } : {});
    }
  }
  // The model's one id, however the request spells it (a local checkpoint by its absolute path).
  const id = await context.pool.check(input.model);
  // A loaded model's tokenizer counts the prompt now: a prompt too long is a 400 before it waits in line.
  const loadedNow = context.pool.loaded().find((m) => m.id === id);
  if (loadedNow) await checkFits(loadedNow, input, context);
  return context.queue.run(async () => {
    const tTurn = performance.now();
    const wasLoaded = context.pool.loaded().some((m) => m.id === id);
    const model = await context.pool.acquire(id, input.keepAliveMs);
    const tLoaded = performance.now();
    // What the answer has told so far, for a drain that cuts it.
    const sent = { started: false, text: '', ids: [] as number[], ended: false, promptTokens: 0 };
    const eos = model.worker.manifest.config.eosTokenId;
    const onEvent = (event: AskEvent) => {
      if (event.type === 'block-end' && !sent.ended) {
        const end = event.ids.indexOf(eos);
        sent.ended = end >= 0;
        sent.ids.push(...(end >= 0 ? event.ids.slice(0, end) : event.ids));
      }
      if (event.type === 'block-end' || event.type === 'finished') sent.text += event.text;
      hooks.onEvent?.(event);
    };
    try {
      if (hooks.signal.aborted) throw cancellation(hooks.signal);
      // Loaded by this request: checked now, before a stream's first byte.
      if (!loadedNow) await checkFits(model, input, context);
      hooks.onStart?.(model);
      sent.started = true;
      const { settings, pixels, imageOptions } = fullSettings(input.settings, model.worker.manifest.config);
      const result = await model.worker.ask(
        {
          images: input.images,
          prompt: '',
          parts: input.parts,
          system: input.system,
          history: input.history,
          historyImages: input.historyImages,
          settings,
          minPixels: pixels.minPixels,
          maxPixels: pixels.maxPixels,
          imageOptions,
          stop: input.stop,
          contextLength: requestContext(model, input, context),
          reuseCache: input.reuseCache ?? true,
          cacheImages: true,
          ...(input.jsonSchema !== undefined ? { jsonSchema: input.jsonSchema } : {}),
        },
        {
          signal: hooks.signal,
          onProgress: onEvent,
          onPromptTokens: (count) => {
            sent.promptTokens = count;
            hooks.onPromptTokens?.(count);
          },
        },
      );
      context.metrics.observeAnswer(result);
      const { tokenizer } = model.worker;
      return {
        result,
        settings,
        pixels,
        model,
        timings: { queueMs: tTurn - t0, loadMs: wasLoaded ? 0 : tLoaded - tTurn, totalMs: performance.now() - t0 },
        completionTokens: result.finishReason === 'stop' ? returnedTokens(tokenizer, result.tokens, result.text) : result.tokens.length,
      };
    } catch (error) {
      if (hooks.signal.aborted) {
        const why = cancellation(hooks.signal);
        if (why.status !== 503 || !sent.started) throw why;
        const { tokenizer } = model.worker;
        throw new AnswerCut(why, { text: sent.text, promptTokens: sent.promptTokens, completionTokens: returnedTokens(tokenizer, sent.ids, sent.text), totalMs: performance.now() - t0 });
      }
      throw error;
    } finally {
      context.pool.release(id);
    }
  }, hooks.signal).catch((error: unknown) => {
    // Counted here, not in the task: a request refused by a full queue, or whose client left while it waited,
    // never runs it.
    if (hooks.signal.aborted) context.metrics.cancelled.inc();
    else if (error instanceof ServerError && error.code === 'server_busy') context.metrics.rejected.inc();
    throw error;
  });
}
