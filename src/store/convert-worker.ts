/**
 * Worker-thread side of `convertInWorker` (convert-in-worker.ts): runs one conversion and reports progress,
 * the manifest or the error as messages. The conversion is synchronous for long stretches; in a worker the
 * CLI's main thread stays free to react to Ctrl-C.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { convertCheckpoint } from '../convert/convert.js';
import { DvlError } from '../util/errors.js';
import type { WorkerMessage, WorkerRequest } from './convert-in-worker.js';

const port = parentPort;
if (!port) throw new Error('convert-worker.ts must run in a worker thread');
const send = (message: WorkerMessage) => port.postMessage(message);

const request = workerData as WorkerRequest;
try {
  const manifest = await convertCheckpoint({
    ...request,
    onProgress: (stage, done, total) => send({ type: 'progress', stage, done, total }),
  });
  send({ type: 'done', manifest });
} catch (error) {
  const cause = error instanceof DvlError ? error.cause : error;
  send({
    type: 'error',
    kind: error instanceof DvlError ? error.kind : undefined,
    message: error instanceof Error ? error.message : String(error),
    stack: cause instanceof Error ? cause.stack : cause === undefined ? undefined : String(cause),
  });
}
