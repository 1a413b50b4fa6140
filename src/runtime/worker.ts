/**
 * The inference worker: loads a converted model once and answers AskRequests one at a time, posting progress
 * events as they happen. onnxruntime's `session.run` blocks the thread it runs on for the whole call; here
 * that is this worker's thread, so the CLI's main thread keeps animating spinners, drawing the live view and
 * reacting to Ctrl-C. Started by worker-client.ts; the protocol is in worker-protocol.ts.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ask, ImageCache, type AskEvent } from '../ask.js';
import { DvlError } from '../util/errors.js';
import { loadModel, type LoadedModel } from './model.js';
import type { FromWorker, ToWorker, WorkerError, WorkerInit } from './worker-protocol.js';

const port = parentPort;
if (!port) throw new Error('runtime/worker.ts must run in a worker thread');
const send = (message: FromWorker) => port.postMessage(message);
const init = workerData as WorkerInit;
const cancelFlag = new Int32Array(init.cancelFlag);

function toWorkerError(error: unknown): WorkerError {
  const cause = error instanceof DvlError ? error.cause : error;
  return {
    kind: error instanceof DvlError ? error.kind : undefined,
    message: error instanceof Error ? error.message : String(error),
    stack: cause instanceof Error ? cause.stack : undefined,
  };
}

let model: LoadedModel;
try {
  const t0 = performance.now();
  model = await loadModel(init.dir, init.manifest, { threads: init.threads });
  send({ type: 'loaded', ms: performance.now() - t0 });
} catch (error) {
  send({ type: 'load-error', error: toWorkerError(error) });
  port.close();
  process.exit(0);
}

const imageCache = new ImageCache();
// Requests are answered strictly one after the other (one model, one KV cache).
let queue: Promise<void> = Promise.resolve();

port.on('message', (message: ToWorker) => {
  if (message.type === 'clear-cache') {
    queue = queue.then(() => void imageCache.clear());
  } else if (message.type === 'close') {
    queue = queue.then(async () => {
      await model.close();
      send({ type: 'closed' });
      port.close();
    });
  } else {
    queue = queue.then(() => answer(message.id, message.request));
  }
});

async function answer(id: number, request: Extract<ToWorker, { type: 'ask' }>['request']): Promise<void> {
  // A cancel request (the flag) is seen after every reported event, i.e. between decoder calls: generation
  // then stops before its next call with an 'interrupted' error.
  Atomics.store(cancelFlag, 0, 0);
  const controller = new AbortController();
  const checkCancel = () => {
    if (Atomics.load(cancelFlag, 0) !== 0) controller.abort();
  };
  const { cacheImages, ...rest } = request;
  try {
    const images = rest.images.map(asBufferOrPath);
    const historyImages = rest.historyImages?.map(asBufferOrPath);
    const result = await ask(model, {
      ...rest,
      images,
      historyImages,
      imageCache: cacheImages ? imageCache : undefined,
      signal: controller.signal,
      onEvent: checkCancel,
      onProgress: (event: AskEvent) => {
        send({ type: 'progress', id, event });
        checkCancel();
      },
    });
    send({ type: 'result', id, result });
  } catch (error) {
    send({ type: 'error', id, error: toWorkerError(error) });
  }
}

/** Buffers arrive as Uint8Arrays (structured clone); preprocessImage wants a Buffer. */
function asBufferOrPath(image: string | Uint8Array): string | Buffer {
  return typeof image === 'string' || Buffer.isBuffer(image) ? image : Buffer.from(image.buffer, image.byteOffset, image.byteLength);
}
