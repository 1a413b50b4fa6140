/**
 * One chat request through the server's line: wait for its turn, hold the model (loading it if needed),
 * answer in the model's worker with the caches a server keeps (encoded images by content, the KV rows of the
 * prompt prefix shared with the previous request), report events as they come, release the model.
 * A client that leaves cancels its request: dropped while waiting, stopped before the next decoder call
 * while running.
 */
import type { AskEvent, AskResult } from '../ask.js';
import { fullSettings, type ChatInput } from './chat-input.js';
import type { RequestPixelBudget } from '../models/index.js';
import type { GenerationSettings } from '../generate/bd3lm.js';
import { ServerError } from './errors.js';
import type { ServerMetrics } from './metrics.js';
import type { LoadedEntry, ModelPool } from './model-pool.js';
import type { RequestQueue } from './queue.js';

export interface AnswerContext {
  pool: ModelPool;
  queue: RequestQueue;
  metrics: ServerMetrics;
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
}

export interface AnswerHooks {
  signal: AbortSignal;
  /** The request's turn came and its model is loaded (streams send their first bytes then, or before). */
  onStart?: (model: LoadedEntry) => void;
  onEvent?: (event: AskEvent) => void;
}

export async function answer(context: AnswerContext, input: ChatInput, hooks: AnswerHooks): Promise<Answer> {
  const t0 = performance.now();
  await context.pool.check(input.model);
  return context.queue.run(async () => {
    const tTurn = performance.now();
    const wasLoaded = context.pool.loaded().some((m) => m.id === input.model);
    const model = await context.pool.acquire(input.model, input.keepAliveMs);
    const tLoaded = performance.now();
    try {
      if (hooks.signal.aborted) throw cancelled();
      hooks.onStart?.(model);
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
          reuseCache: input.reuseCache ?? true,
          cacheImages: true,
        },
        { signal: hooks.signal, onProgress: hooks.onEvent },
      );
      context.metrics.observeAnswer(result);
      return {
        result,
        settings,
        pixels,
        model,
        timings: { queueMs: tTurn - t0, loadMs: wasLoaded ? 0 : tLoaded - tTurn, totalMs: performance.now() - t0 },
      };
    } catch (error) {
      if (hooks.signal.aborted) throw cancelled();
      throw error;
    } finally {
      context.pool.release(input.model);
    }
  }, hooks.signal).catch((error: unknown) => {
    // Counted here, not in the task: a request refused by a full queue, or whose client left while it waited,
    // never runs it.
    if (hooks.signal.aborted) context.metrics.cancelled.inc();
    else if (error instanceof ServerError && error.code === 'server_busy') context.metrics.rejected.inc();
    throw error;
  });
}

const cancelled = () => new ServerError(499, 'cancelled', 'the client went away');
