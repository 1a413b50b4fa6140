/**
 * The main-thread side of the inference worker (worker.ts): start it (the model loads there), send AskRequests,
 * receive progress events and results. The library works without it too (`ask` + `loadModel` in-process);
 * the CLI uses it because onnxruntime blocks the thread that runs the model.
 *
 * Stopping: `cancel()` (or aborting the request's signal) makes the running request stop before its next
 * decoder call, with an 'interrupted' DvlError; the model stays loaded. The worker is never terminated while a
 * model call runs: measured, `worker.terminate()` during onnxruntime's `session.run` aborts the whole process
 * ("terminate called after throwing an instance of 'Napi::Error'"). A decoder call of the 3B model takes a
 * fraction of a second, so Ctrl-C still stops promptly.
 */
import { Worker } from 'node:worker_threads';
import type { AskEvent, AskResult } from '../ask.js';
import type { Manifest } from '../convert/manifest.js';
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
}

export interface AskCallOptions {
  onProgress?: (event: AskEvent) => void;
  /** Aborting cancels the request (see cancel()). */
  signal?: AbortSignal;
}

interface Pending {
  resolve(result: AskResult): void;
  reject(error: Error): void;
  onProgress?: (event: AskEvent) => void;
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
    /** Where the load time went. */
    readonly startup: StartupTimes,
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
    const init: WorkerInit = { dir: options.dir, manifest: options.manifest, threads: options.threads, cancelFlag: shared, encodeFirst: options.encodeFirst };
    // Here, in the main thread, where setting process.env reaches the C environment the worker's onnxruntime reads.
    disableOrtTelemetry();
    const worker = spawnWorker(init);
    return new Promise((resolve, reject) => {
      const cleanup = () => {
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
        cleanup();
        if (message.type === 'loaded') resolve(new InferenceWorker(worker, new Int32Array(shared), message.ms, message.encodeMs, message.startup));
        else {
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

  /** Answers one request in the worker; progress events arrive as the worker posts them. */
  ask(request: WorkerAskRequest, options: AskCallOptions = {}): Promise<AskResult> {
    if (this.dead) return Promise.reject(this.dead);
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(interrupted());
    const id = this.nextId++;
    return new Promise<AskResult>((resolve, reject) => {
      const onAbort = () => this.cancel();
      const done = () => signal?.removeEventListener('abort', onAbort);
      this.pending.set(id, {
        resolve: (result) => (done(), resolve(result)),
        reject: (error) => (done(), reject(error)),
        onProgress: options.onProgress,
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      this.post({ type: 'ask', id, request });
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
    if (message.type === 'progress') this.pending.get(message.id)?.onProgress?.(message.event);
    else if (message.type === 'result' || message.type === 'error') {
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
