/**
 * The inference worker: loads a converted model once and answers AskRequests one at a time, posting progress
 * events as they happen. onnxruntime's `session.run` blocks the thread it runs on for the whole call; here
 * that is this worker's thread, so the CLI's main thread keeps animating spinners, drawing the live view and
 * reacting to Ctrl-C. Started by worker-client.ts; the protocol is in worker-protocol.ts.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ask, ImageCache, type AskEvent } from '../ask.js';
import { preprocessImage } from '../preprocess/index.js';
import { DvlError } from '../util/errors.js';
import { loadModel, type LoadedModel, type VisionLoader } from './model.js';
import type { EncodeFirst, FromWorker, ToWorker, WorkerError, WorkerInit } from './worker-protocol.js';

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

const imageCache = new ImageCache();
/** Time spent on the encodeFirst images; added to the stats of the first answer that uses them. */
const encodeFirstMs = { preprocess: 0, vision: 0, unreported: false };

/** Preprocesses and encodes the encodeFirst images into the image cache while no decoder is loaded. */
async function encodeFirst(first: EncodeFirst, vision: VisionLoader): Promise<void> {
  for (const image of first.images) {
    if (imageCache.get(image, first.minPixels, first.maxPixels)) continue;
    const t0 = performance.now();
    const preprocessed = await preprocessImage(image, { minPixels: first.minPixels, maxPixels: first.maxPixels });
    const t1 = performance.now();
    const { embeds } = await (await vision()).encode(preprocessed);
    encodeFirstMs.preprocess += t1 - t0;
    encodeFirstMs.vision += performance.now() - t1;
    imageCache.set(image, first.minPixels, first.maxPixels, { embeds, image: preprocessed });
  }
  encodeFirstMs.unreported = true;
}

let model: LoadedModel;
try {
  const t0 = performance.now();
  const first = init.encodeFirst;
  model = await loadModel(init.dir, init.manifest, {
    threads: init.threads,
    beforeDecoder: first ? (vision) => encodeFirst(first, vision) : undefined,
    onDecoderStart: (building) => send({ type: 'decoder-start', building }),
  });
  send({ type: 'loaded', ms: performance.now() - t0, encodeMs: encodeFirstMs.preprocess + encodeFirstMs.vision, startup: model.startup });
} catch (error) {
  send({ type: 'load-error', error: toWorkerError(error) });
  port.close();
  process.exit(0);
}

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
    // The images encoded before the decoder loaded were this request's preprocessing and vision work.
    if (encodeFirstMs.unreported && cacheImages) {
      result.stats.ms.preprocess += encodeFirstMs.preprocess;
      result.stats.ms.vision += encodeFirstMs.vision;
      encodeFirstMs.unreported = false;
    }
    send({ type: 'result', id, result });
  } catch (error) {
    send({ type: 'error', id, error: toWorkerError(error) });
  }
}

/** Buffers arrive as Uint8Arrays (structured clone); preprocessImage wants a Buffer. */
function asBufferOrPath(image: string | Uint8Array): string | Buffer {
  return typeof image === 'string' || Buffer.isBuffer(image) ? image : Buffer.from(image.buffer, image.byteOffset, image.byteLength);
}
