/**
 * The inference worker: loads a converted model once and runs the model side of answers (ask.ts runPrompt)
 * one at a time, posting their events as they happen. onnxruntime's `session.run` blocks the thread it runs
 * on for the whole call; here that is this worker's thread, so the caller's thread keeps animating spinners,
 * drawing the live view, serving HTTP and reacting to Ctrl-C. The tokenizer stays in the caller's thread.
 * Started by worker-client.ts; the protocol is in worker-protocol.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { ImageCache, imageKey, runPrompt, type RunEvent } from '../ask.js';
import { JsonConstraintCache } from '../generate/json-schema/index.js';
import { familyOf } from '../models/index.js';
import { DvlError } from '../util/errors.js';
import { loadModel, type ModelRuntime, type VisionLoader } from './model.js';
import type { EncodeFirst, FromWorker, ToWorker, WorkerError, WorkerInit, WorkerJob } from './worker-protocol.js';

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

const imageCache = new ImageCache(init.imageCacheBytes);
const config = init.manifest.config;
/**
 * Structured output: the generation loop runs here, so the constraints live here. The vocabulary is read from
 * the model's tokenizer.json on the first request with a schema (the caller's thread keeps the tokenizer itself).
 */
const constraints = new JsonConstraintCache(() => JSON.parse(fs.readFileSync(path.join(init.dir, 'tokenizer.json'), 'utf8')), config.eosTokenId);
const family = familyOf(config);
/**
 * Time spent on the encodeFirst images, and when that work began (epoch ms): the stats and the stage events of
 * the first answer that uses them report this work, done while the model loaded, as its own.
 */
const encodeFirstMs = { preprocess: 0, vision: 0, unreported: false, preprocessAt: 0, visionAt: 0 };

/** Preprocesses and encodes the encodeFirst images into the image cache while no decoder is loaded. */
async function encodeFirst(first: EncodeFirst, vision: VisionLoader): Promise<void> {
  const { readFile } = await import('node:fs/promises');
  for (const image of first.images) {
    const t0 = performance.now();
    const bytes = await readFile(image).catch(() => null);
    // An unreadable file is reported by the request that uses it.
    if (!bytes) continue;
    // The options and key runPrompt will use for the same images (all of the one-shot prompt's).
    const options = { minPixels: first.minPixels, maxPixels: first.maxPixels, imagesInPrompt: first.images.length, ...first.imageOptions, name: image };
    const key = imageKey(bytes, family.imageKey(config, options));
    if (imageCache.get(key)) continue;
    encodeFirstMs.preprocessAt ||= performance.timeOrigin + t0;
    const preprocessed = await family.prepareImage(bytes, config, options);
    const t1 = performance.now();
    encodeFirstMs.visionAt ||= performance.timeOrigin + t1;
    const { embeds } = await (await vision()).encode(preprocessed);
    encodeFirstMs.preprocess += t1 - t0;
    encodeFirstMs.vision += performance.now() - t1;
    imageCache.set(key, { embeds, image: preprocessed });
  }
  encodeFirstMs.unreported = true;
}

let model: ModelRuntime;
try {
  const t0 = performance.now();
  const first = init.encodeFirst;
  model = await loadModel(init.dir, init.manifest, {
    threads: init.threads,
    tokenizer: false,
    beforeDecoder: first ? (vision) => encodeFirst(first, vision) : undefined,
    onDecoderStart: (building) => send({ type: 'decoder-start', building }),
  });
  send({ type: 'loaded', ms: performance.now() - t0, encodeMs: encodeFirstMs.preprocess + encodeFirstMs.vision, startup: model.startup });
} catch (error) {
  send({ type: 'load-error', error: toWorkerError(error) });
  port.close();
  process.exit(0);
}

// Jobs run strictly one after the other (one model, one KV cache).
let queue: Promise<void> = Promise.resolve();
/** The running job's wait for the caller's 'continue' answer, by `${id}:${block}`. */
const waiting = new Map<string, (stop: boolean) => void>();

port.on('message', (message: ToWorker) => {
  if (message.type === 'continue') {
    const key = `${message.id}:${message.block}`;
    waiting.get(key)?.(message.stop);
    waiting.delete(key);
  } else if (message.type === 'clear-cache') {
    queue = queue.then(() => void imageCache.clear());
  } else if (message.type === 'close') {
    queue = queue.then(async () => {
      await model.close();
      send({ type: 'closed' });
      port.close();
    });
  } else {
    queue = queue.then(() => run(message.id, message.job));
  }
});

async function run(id: number, job: WorkerJob): Promise<void> {
  // A cancel request (the flag) is seen after every reported event, i.e. between decoder calls: generation
  // then stops before its next call with an 'interrupted' error.
  Atomics.store(cancelFlag, 0, 0);
  const controller = new AbortController();
  const checkCancel = () => {
    if (Atomics.load(cancelFlag, 0) !== 0) controller.abort();
  };
  const { cacheImages, askToContinue, jsonSchema, ...rest } = job;
  try {
    const constraint = jsonSchema !== undefined ? constraints.get(jsonSchema) : undefined;
    const result = await runPrompt(model, {
      ...rest,
      constraint,
      images: rest.images.map(asBufferOrPath),
      imageCache: cacheImages ? imageCache : undefined,
      signal: controller.signal,
      onRun: (event: RunEvent) => {
        send({ type: 'event', id, event: encodeFirstMs.unreported && cacheImages ? withEncodeFirstTime(event) : event });
        checkCancel();
      },
      // The caller holds the tokenizer, so only it can tell whether a stop string has appeared.
      stopAfterBlock: askToContinue
        ? (block) =>
            new Promise<boolean>((resolve) => {
              waiting.set(`${id}:${block}`, resolve);
            }).then((stop) => {
              checkCancel();
              return stop;
            })
        : undefined,
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
  } finally {
    for (const key of waiting.keys()) if (key.startsWith(`${id}:`)) waiting.delete(key);
  }
}

/** A stage done before the decoder loaded (encodeFirst) began then: its event says so. */
function withEncodeFirstTime(event: RunEvent): RunEvent {
  if (event.type !== 'stage') return event;
  const at = event.stage === 'preprocess' ? encodeFirstMs.preprocessAt : event.stage === 'vision' ? encodeFirstMs.visionAt : 0;
  return at ? { ...event, at } : event;
}

/** Buffers arrive as Uint8Arrays (structured clone); preprocessImage wants a Buffer. */
function asBufferOrPath(image: string | Uint8Array): string | Buffer {
  return typeof image === 'string' || Buffer.isBuffer(image) ? image : Buffer.from(image.buffer, image.byteOffset, image.byteLength);
}
