/**
 * Runs a conversion (convertCheckpoint) in a worker thread, so that it can be cancelled: the conversion is
 * synchronous for minutes on a real model, and a signal handler on a busy main thread would only run after it.
 * On abort the worker is terminated and the staging directory it was writing is deleted: nothing is published.
 */
import { Worker } from 'node:worker_threads';
import type { ConvertOptions, ConvertStage } from '../convert/convert.js';
import type { Manifest, ModelSourceRef } from './manifest.js';
import type { WeightDtype } from '../convert/weight-dtype.js';
import { removeStagingOf } from './layout.js';
import { DvlError, type ErrorKind } from '../util/errors.js';

/** What the worker gets (workerData): the conversion options without the callback. */
export interface WorkerRequest {
  source: ModelSourceRef;
  dtype: WeightDtype;
  outDir: string;
}

/** What the worker posts back. Errors travel as data: a DvlError keeps its kind (hence its exit code). */
export type WorkerMessage =
  | { type: 'progress'; stage: ConvertStage; done: number; total: number }
  | { type: 'done'; manifest: Manifest }
  | { type: 'error'; kind?: ErrorKind; message: string; stack?: string };

export function convertInWorker(options: ConvertOptions, signal: AbortSignal): Promise<Manifest> {
  if (signal.aborted) return Promise.reject(conversionInterrupted());
  const worker = startWorker({ source: options.source, dtype: options.dtype, outDir: options.outDir });
  return new Promise<Manifest>((resolve, reject) => {
    let settled = false;
    const settle = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      outcome();
    };
    // A failed or cancelled conversion may have stopped mid-write; its staging directory goes.
    const fail = (error: Error) => {
      removeStagingOf(options.outDir);
      reject(error);
    };
    const onAbort = () =>
      settle(() => {
        void worker.terminate().finally(() => fail(conversionInterrupted()));
      });
    signal.addEventListener('abort', onAbort, { once: true });
    worker.on('message', (message: WorkerMessage) => {
      if (message.type === 'progress') options.onProgress?.(message.stage, message.done, message.total);
      else if (message.type === 'done') settle(() => resolve(message.manifest));
      else settle(() => fail(rebuildError(message)));
    });
    worker.on('error', (error) => settle(() => fail(error)));
    // Messages posted before the worker ended are delivered before 'exit'; an exit without one is a crash.
    worker.on('exit', (code) => settle(() => fail(new Error(`the conversion worker stopped unexpectedly (exit code ${code})`))));
  });
}

function conversionInterrupted(): DvlError {
  return new DvlError('interrupted', 'interrupted: the conversion was cancelled and nothing was kept');
}

function rebuildError(message: Extract<WorkerMessage, { type: 'error' }>): Error {
  const cause = message.stack === undefined ? undefined : Object.assign(new Error(message.stack.split('\n')[0]), { stack: message.stack });
  if (message.kind) return new DvlError(message.kind, message.message, { cause });
  const error = new Error(message.message);
  if (message.stack) error.stack = message.stack;
  return error;
}

function startWorker(request: WorkerRequest): Worker {
  const here = import.meta.url;
  if (here.endsWith('.ts')) {
    // Running from source through tsx (bin/dvl.js): a worker does not inherit the TypeScript loader, so a small
    // ES-module bootstrap registers it before importing the worker module.
    const bootstrap = [
      `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))};`,
      'register();',
      `await import(${JSON.stringify(new URL('./convert-worker.ts', here).href)});`,
    ].join('\n');
    return new Worker(new URL(`data:text/javascript,${encodeURIComponent(bootstrap)}`), { workerData: request });
  }
  return new Worker(new URL('./convert-worker.js', here), { workerData: request });
}
