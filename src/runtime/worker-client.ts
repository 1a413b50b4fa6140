/**
 * The caller's side of the inference worker (worker.ts): start it (the model loads there), send AskRequests,
 * receive progress events and results. The library works without it too (`ask` + `loadModel` in-process);
 * the CLI and the server use it because onnxruntime blocks the thread that runs the model.
 *
 * The tokenizer lives here, not in the worker (ask.ts has the two sides): it is built while the worker creates
 * the decoder session, on another core, so its second or so is off the start-up's critical path; prompts go to
 * the worker as ids and generated ids come back as text through AnswerText.
 *
 * Stopping: `cancel()` (or aborting the request's signal) makes the running request stop before its next
 * decoder call, with an 'interrupted' DvlError; the model stays loaded. The worker is never terminated while a
 * model call runs: measured, `worker.terminate()` during onnxruntime's `session.run` aborts the whole process
 * ("terminate called after throwing an instance of 'Napi::Error'"). A decoder call of the 3B model takes a
 * fraction of a second, so Ctrl-C still stops promptly.
 */
import { Worker } from 'node:worker_threads';
import { AnswerText, promptOf, type AskEvent, type AskResult, type RunResult } from '../ask.js';
import { checkJsonFormat } from '../generate/json-schema/index.js';
import type { Manifest } from '../store/manifest.js';
import { TextTokenizer } from '../prompt/tokenizer.js';
import { DvlError } from '../util/errors.js';
import { disableOrtTelemetry } from './ort-telemetry.js';
import type { StartupTimes } from './model.js';
import type { EncodeFirst, FromWorker, ToWorker, WorkerAskRequest, WorkerError, WorkerInit } from './worker-protocol.js';

export interface StartOptions {
  dir: string;
  manifest: Manifest;
  threads?: number;
  /** Images to encode while the model loads, before the decoder exists (see WorkerInit.encodeFirst). */
  encodeFirst?: EncodeFirst;
  /**
   * Aborting while the model loads: start() rejects with an 'interrupted' DvlError at once; the worker is
   * closed once it has loaded (it cannot be stopped safely inside onnxruntime).
   */
  signal?: AbortSignal;
  /** Told when the decoder session starts being created (`building`: its pre-packed weights are made, once). */
  onDecoderStart?: (building: boolean) => void;
  /** Bytes of image embeddings kept for `cacheImages` requests (default: no limit). */
  imageCacheBytes?: number;
}

export interface AskCallOptions {
  onProgress?: (event: AskEvent) => void;
  /** The prompt's length in tokens, once its images are encoded (what a request cut short has used). */
  onPromptTokens?: (count: number) => void;
  /** Aborting cancels the request (see cancel()). */
  signal?: AbortSignal;
}

interface Pending {
  resolve(result: RunResult): void;
  reject(error: Error): void;
  text: AnswerText;
  /** The worker waits for an answer after each finished block (stop strings). */
  askToContinue: boolean;
  onPromptTokens?: (count: number) => void;
}

export class InferenceWorker {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private dead: Error | null = null;
  private closed: (() => void) | null = null;

  private constructor(
    private readonly worker: Worker,
    private readonly cancelFlag: Int32Array,
    /** Milliseconds the worker took to load the model (encodeMs included). */
    readonly loadMs: number,
    /** Of loadMs, the milliseconds spent preprocessing and encoding the encodeFirst images. */
    readonly encodeMs: number,
    /** Where the load time went (the tokenizer's time is this thread's). */
    readonly startup: StartupTimes,
    /** The model's tokenizer, in this thread. */
    readonly tokenizer: TextTokenizer,
    /** The loaded model's manifest. */
    readonly manifest: Manifest,
  ) {
    worker.on('message', (message: FromWorker) => this.onMessage(message));
    worker.on('error', (error) => this.fail(error));
    worker.on('exit', (code) => {
      this.fail(new Error(`the inference worker stopped unexpectedly (exit code ${code})`));
      this.closed?.();
    });
  }

  /** Starts the worker and waits until the model is loaded. */
  static start(options: StartOptions): Promise<InferenceWorker> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(interrupted());
    const shared = new SharedArrayBuffer(4);
    const init: WorkerInit = {
      dir: options.dir,
      manifest: options.manifest,
      threads: options.threads,
      cancelFlag: shared,
      encodeFirst: options.encodeFirst,
      imageCacheBytes: options.imageCacheBytes,
    };
    // Here, in the main thread, where setting process.env reaches the C environment the worker's onnxruntime reads.
    disableOrtTelemetry();
    const worker = spawnWorker(init);
    return new Promise((resolve, reject) => {
      // The tokenizer is built here while the worker starts and creates its sessions (one core each). It is
      // synchronous: a spinner pauses for its second, which is better than a second more of waiting.
      let tokenizer: TextTokenizer | null = null;
      let tokenizerError: unknown = null;
      let tokenizerMs = 0;
      let loaded: Extract<FromWorker, { type: 'loaded' }> | null = null;
      const finish = () => {
        if (!loaded || (!tokenizer && !tokenizerError)) return;
        cleanup();
        if (tokenizerError) {
          // The worker is loaded and idle: it can be told to close.
          worker.postMessage({ type: 'close' } satisfies ToWorker);
          worker.unref();
          reject(tokenizerError);
          return;
        }
        const startup = { ...loaded.startup, tokenizerMs };
        resolve(new InferenceWorker(worker, new Int32Array(shared), loaded.ms, loaded.encodeMs, startup, tokenizer!, options.manifest));
      };
      const buildTokenizer = setImmediate(() => {
        const t0 = performance.now();
        try {
          tokenizer = TextTokenizer.load(options.dir);
        } catch (error) {
          tokenizerError = error;
        }
        tokenizerMs = performance.now() - t0;
        finish();
      });
      const cleanup = () => {
        clearImmediate(buildTokenizer);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
        signal?.removeEventListener('abort', onAbort);
      };
      const onMessage = (message: FromWorker) => {
        if (message.type === 'decoder-start') {
          options.onDecoderStart?.(message.building);
          return;
        }
        if (message.type === 'loaded') {
          loaded = message;
          finish();
        } else {
          cleanup();
          void worker.terminate();
          reject(message.type === 'load-error' ? rebuildError(message.error) : new Error(`unexpected first message ${message.type}`));
        }
      };
      const onError = (error: Error) => {
        cleanup();
        reject(error);
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new Error(`the inference worker stopped while loading the model (exit code ${code})`));
      };
      const onAbort = () => {
        // Keep listening: once loaded (or failed), the worker is told to close; until then it must not keep
        // the process alive.
        signal?.removeEventListener('abort', onAbort);
        worker.unref();
        worker.off('message', onMessage);
        const closeWhenLoaded = (message: FromWorker) => {
          if (message.type === 'decoder-start') return;
          worker.off('message', closeWhenLoaded);
          worker.postMessage({ type: 'close' } satisfies ToWorker);
        };
        worker.on('message', closeWhenLoaded);
        reject(interrupted());
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Answers one request: the prompt is tokenized here, the model side runs in the worker, its events become
   * AskEvents (with text) here as they arrive.
   */
  ask(request: WorkerAskRequest, options: AskCallOptions = {}): Promise<AskResult> {
    if (this.dead) return Promise.reject(this.dead);
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(interrupted());
    let prompt;
    try {
      prompt = promptOf(this.tokenizer, request);
      // A schema the constraint cannot follow, or a gen length too short for it: refused here, not in the worker.
      if (request.jsonSchema !== undefined) checkJsonFormat(request.jsonSchema, request.settings.genLength);
    } catch (error) {
      return Promise.reject(error as Error);
    }
    const { cacheImages, stop, reuseCache, settings, minPixels, maxPixels, imageOptions, jsonSchema, contextLength } = request;
    const text = new AnswerText(this.tokenizer, this.manifest.config.eosTokenId, settings.genLength, { onProgress: options.onProgress, stop });
    const askToContinue = (stop?.length ?? 0) > 0;
    const id = this.nextId++;
    return new Promise<AskResult>((resolve, reject) => {
      const onAbort = () => this.cancel();
      const done = () => signal?.removeEventListener('abort', onAbort);
      this.pending.set(id, {
        resolve: (result) => (done(), resolve(text.result(result))),
        reject: (error) => (done(), reject(error)),
        text,
        askToContinue,
        onPromptTokens: options.onPromptTokens,
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      this.post({ type: 'run', id, job: { ...prompt, settings, minPixels, maxPixels, imageOptions, reuseCache, cacheImages, askToContinue, ...(contextLength !== undefined ? { contextLength } : {}), ...(jsonSchema !== undefined ? { jsonSchema } : {}) } });
    });
  }

  /** Stops the running request before its next decoder call; it rejects with an 'interrupted' DvlError. */
  cancel(): void {
    Atomics.store(this.cancelFlag, 0, 1);
  }

  /** Forgets the encoded images kept for `cacheImages` requests (chat's /clear). */
  clearImageCache(): void {
    this.post({ type: 'clear-cache' });
  }

  /** Releases the model and ends the worker (after the running request, if any). */
  async close(): Promise<void> {
    if (this.dead) return;
    const exited = new Promise<void>((resolve) => (this.closed = resolve));
    this.post({ type: 'close' });
    await exited;
  }

  private post(message: ToWorker): void {
    this.worker.postMessage(message);
  }

  private onMessage(message: FromWorker): void {
    if (message.type === 'event') {
      const pending = this.pending.get(message.id);
      if (!pending) return;
      const { event } = message;
      pending.text.onRun(event);
      if (event.type === 'prompt') pending.onPromptTokens?.(event.length);
      if (event.type === 'block-end' && pending.askToContinue) {
        this.post({ type: 'continue', id: message.id, block: event.block, stop: pending.text.stopped });
      }
    } else if (message.type === 'result' || message.type === 'error') {
      const pending = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.type === 'result') pending?.resolve(message.result);
      else pending?.reject(rebuildError(message.error));
    } else if (message.type === 'closed') {
      this.fail(new Error('the inference worker is closed'));
    }
  }

  /** The worker can no longer answer: every pending request rejects with `error`. */
  private fail(error: Error): void {
    if (!this.dead) this.dead = error;
    for (const pending of this.pending.values()) pending.reject(this.dead);
    this.pending.clear();
  }
}

function interrupted(): DvlError {
  return new DvlError('interrupted', 'interrupted');
}

function rebuildError(error: WorkerError): Error {
  const cause = error.stack === undefined ? undefined : Object.assign(new Error(error.stack.split('\n')[0]), { stack: error.stack });
  if (error.kind) return new DvlError(error.kind, error.message, { cause });
  const rebuilt = new Error(error.message);
  if (error.stack) rebuilt.stack = error.stack;
  return rebuilt;
}

function spawnWorker(init: WorkerInit): Worker {
  const here = import.meta.url;
  if (here.endsWith('.ts')) {
    // Running from source through tsx (bin/dvl.js, tests): a worker does not inherit the TypeScript loader,
    // so a small ES-module bootstrap registers it before importing the worker module.
    const bootstrap = [
      `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))};`,
      'register();',
      `await import(${JSON.stringify(new URL('./worker.ts', here).href)});`,
    ].join('\n');
    return new Worker(new URL(`data:text/javascript,${encodeURIComponent(bootstrap)}`), { workerData: init });
  }
  return new Worker(new URL('./worker.js', here), { workerData: init });
}
