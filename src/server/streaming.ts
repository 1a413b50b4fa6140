/**
 * Streamed answers on the raw response: headers once, frames as they come, keep-alive pings while nothing
 * else is sent (waiting in line, loading, encoding images, prefill), and a signal that aborts when the client
 * goes away (which cancels the request).
 */
import type { FastifyReply } from 'fastify';
import { AnswerCut } from './answer.js';
import { type HttpError, toHttpError } from './errors.js';

export interface Stream {
  /** Aborts when the client disconnects before the stream ended, or the server drains (reason: errors.ts shuttingDown). */
  signal: AbortSignal;
  /** Writes the headers now (the status can then no longer change). */
  open(): void;
  write(frame: string): void;
  end(frame?: string): void;
  /**
   * Before the first byte only: answers with the error's status and `body` as JSON instead of a stream (a full
   * queue is a 503 with Retry-After, streamed or not). False when the stream is already open.
   */
  refuse(error: HttpError, body: object): boolean;
  get opened(): boolean;
}

export function startStream(
  reply: FastifyReply,
  /** `ping`: the keep-alive frame, or a function that says what it is now (a stream's framing can change as it goes). */
  options: { contentType: string; ping: string | (() => string); pingMs: number; draining: AbortSignal },
): Stream {
  const controller = new AbortController();
  const raw = reply.raw;
  reply.hijack();
  let opened = false;
  let lastWrite = Date.now();
  const onClose = () => {
    if (!raw.writableFinished) controller.abort();
    clearInterval(timer);
  };
  raw.once('close', onClose);
  // The drain's reason (a 503) tells the route why the answer stops: not a client that left.
  const onDrain = () => controller.abort(options.draining.reason);
  options.draining.addEventListener('abort', onDrain, { once: true });
  const open = () => {
    if (opened) return;
    opened = true;
    raw.writeHead(200, { 'content-type': options.contentType, 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    raw.flushHeaders();
  };
  const timer = setInterval(() => {
    const ping = typeof options.ping === 'function' ? options.ping() : options.ping;
    if (Date.now() - lastWrite < options.pingMs || !ping) return;
    open();
    raw.write(ping);
    lastWrite = Date.now();
  }, Math.max(10, Math.floor(options.pingMs / 2)));
  timer.unref();
  return {
    signal: controller.signal,
    open,
    get opened() {
      return opened;
    },
    write(frame) {
      open();
      if (!raw.writableEnded) raw.write(frame);
      lastWrite = Date.now();
    },
    end(frame) {
      clearInterval(timer);
      options.draining.removeEventListener('abort', onDrain);
      open();
      if (!raw.writableEnded) raw.end(frame);
    },
    refuse(error, body) {
      if (opened || raw.writableEnded) return false;
      opened = true;
      clearInterval(timer);
      options.draining.removeEventListener('abort', onDrain);
      const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8' };
      if (error.retryAfterSeconds !== undefined) headers['retry-after'] = String(error.retryAfterSeconds);
      raw.writeHead(error.status === 499 ? 400 : error.status, headers);
      raw.end(JSON.stringify(body));
      return true;
    },
  };
}

/** How one API ends a stream whose answer failed (endFailedStream). */
export interface StreamFailure {
  /** The JSON body of a refusal before the first byte. */
  refusal(failure: HttpError): object;
  /** The frame that carries the error once the stream is open. */
  errorFrame(failure: HttpError): string;
  /** Ends a stream that the server's drain cut, as the API ends an answer; false where it cannot (then the error frame). */
  cut?(cut: AnswerCut): boolean;
}

/**
 * The end of a stream whose answer failed, the same for every API: a client that went away is told nothing; a
 * failure before the first byte (a full queue, a drain while it waited) is a plain error answer with its status;
 * an answer the drain cut ends as the API's answers end, so that a client keeps what it got; anything else
 * travels as the API's error frame, then the stream ends.
 */
export function endFailedStream(stream: Stream, error: unknown, api: StreamFailure): void {
  const failure = toHttpError(error);
  if (failure.status === 499) {
    stream.end();
    return;
  }
  if (stream.refuse(failure, api.refusal(failure))) return;
  if (error instanceof AnswerCut && api.cut?.(error)) return;
  stream.write(api.errorFrame(failure));
  stream.end();
}

/** An AbortSignal for a non-streamed request: aborts when the client disconnects before the answer, or the server drains. */
export function clientGone(reply: FastifyReply, draining: AbortSignal): AbortSignal {
  const controller = new AbortController();
  const onDrain = () => controller.abort(draining.reason);
  reply.raw.once('close', () => {
    // The server's signal outlives every request: a listener left on it would keep each reply alive.
    draining.removeEventListener('abort', onDrain);
    if (!reply.raw.writableFinished) controller.abort();
  });
  draining.addEventListener('abort', onDrain, { once: true });
  return controller.signal;
}
