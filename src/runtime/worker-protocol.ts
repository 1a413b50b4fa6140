/**
 * Messages between the caller's thread and the inference worker (worker.ts, driven by worker-client.ts).
 * The worker runs the model side of an answer (ask.ts `runPrompt`); the caller's thread keeps the tokenizer
 * (prompt ids in, text out). Everything here is structured-clone data: no functions, no class instances
 * (errors travel as data and are rebuilt as DvlErrors with their kind, hence their exit code).
 */
import type { AskRequest, FamilyImageOptions, JsonSchemaInput, PromptJob, RunEvent, RunResult } from '../ask.js';
import type { Manifest } from '../store/manifest.js';
import type { ErrorKind } from '../util/errors.js';
import type { StartupTimes } from './model.js';

/** workerData: what the worker loads, and the cancel flag it polls between decoder calls. */
export interface WorkerInit {
  dir: string;
  manifest: Manifest;
  threads?: number;
  /** Int32Array over a SharedArrayBuffer: [0] != 0 asks the running request to stop. */
  cancelFlag: SharedArrayBuffer;
  /** Images (paths) to preprocess and encode before the decoder loads (see LoadOptions.beforeDecoder). */
  encodeFirst?: EncodeFirst;
  /** Bytes of image embeddings the worker keeps for `cacheImages` requests (least recently used dropped). */
  imageCacheBytes?: number;
}

/** A one-shot ask's images, encoded while the model loads; the first request with cacheImages uses them. */
export interface EncodeFirst {
  images: string[];
  minPixels: number;
  maxPixels: number;
  imageOptions?: FamilyImageOptions;
}

/** An AskRequest without its callbacks, signal and cache (images as paths or bytes). */
export type WorkerAskRequest = Omit<AskRequest, 'onEvent' | 'onProgress' | 'signal' | 'imageCache'> & {
  /** Keep encoded images (by content) in the worker for later requests: chat sends the same images every turn. */
  cacheImages?: boolean;
};

/**
 * The model side's work as the worker gets it (the prompt already in ids). A JSON constraint travels as its
 * schema: the worker compiles it against the model's vocabulary, which it builds once (JsonConstraintCache).
 */
export type WorkerJob = Omit<PromptJob, 'onRun' | 'stopAfterBlock' | 'signal' | 'imageCache' | 'constraint'> & {
  jsonSchema?: JsonSchemaInput;
  cacheImages?: boolean;
  /** After each finished block the worker waits for a 'continue' message saying whether to stop. */
  askToContinue?: boolean;
};

export type ToWorker =
  | { type: 'run'; id: number; job: WorkerJob }
  /** The answer to a finished block of a job with askToContinue. */
  | { type: 'continue'; id: number; block: number; stop: boolean }
  | { type: 'clear-cache' }
  | { type: 'close' };

export interface WorkerError {
  kind?: ErrorKind;
  message: string;
  stack?: string;
}

export type FromWorker =
  /** encodeMs: the part of ms spent on encodeFirst images. */
  | { type: 'loaded'; ms: number; encodeMs: number; startup: StartupTimes }
  /** The decoder session is being created; `building`: its pre-packed weights are made meanwhile (slow, once). */
  | { type: 'decoder-start'; building: boolean }
  | { type: 'load-error'; error: WorkerError }
  | { type: 'event'; id: number; event: RunEvent }
  | { type: 'result'; id: number; result: RunResult }
  | { type: 'error'; id: number; error: WorkerError }
  | { type: 'closed' };
