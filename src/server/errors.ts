/**
 * Errors as HTTP answers. A ServerError carries its status and a machine-readable code; a DvlError from the
 * library maps by its kind (usage and input: 400, the client sent something wrong; model: 500). Each API
 * writes them in its own shape: OpenAI's `{"error": {"message", "type", "param", "code"}}`, Ollama's
 * `{"error": "..."}`.
 */
import { DvlError } from '../util/errors.js';

export class ServerError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly options: { param?: string; retryAfterSeconds?: number } = {},
  ) {
    super(message);
    this.name = 'ServerError';
  }
}

/** What every request still running or waiting when the server drains is told (SIGINT/SIGTERM). */
export const shuttingDown = () => new ServerError(503, 'shutting_down', 'the server is shutting down');

/**
 * Why a request's signal aborted: the server's drain aborts with its own reason (shuttingDown, a 503);
 * any other abort is the client going away (499: nobody is there to read it).
 */
export function cancellation(signal: AbortSignal): ServerError {
  return signal.reason instanceof ServerError ? signal.reason : new ServerError(499, 'cancelled', 'the client went away');
}

export interface HttpError {
  status: number;
  code: string;
  message: string;
  param?: string;
  retryAfterSeconds?: number;
}

/** Any error -> status, code and a one-line message (internal errors do not leak their stack). */
export function toHttpError(error: unknown): HttpError {
  if (error instanceof ServerError) return { status: error.status, code: error.code, message: error.message, ...error.options };
  if (error instanceof DvlError) {
    if (error.kind === 'usage' || error.kind === 'input') return { status: 400, code: 'invalid_request', message: error.message };
    if (error.kind === 'interrupted') return { status: 499, code: 'cancelled', message: 'the request was cancelled' };
    return { status: 500, code: 'model_error', message: error.message };
  }
  // Fastify's own errors (bad JSON, body too large, schema validation) carry statusCode and code.
  const e = error as { statusCode?: number; code?: string; message?: string; validation?: unknown };
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return { status: e.statusCode, code: e.validation ? 'invalid_request' : (e.code ?? 'invalid_request'), message: tidyFastifyMessage(e) };
  }
  return { status: 500, code: 'internal_error', message: `internal error: ${String(e?.message ?? error).split('\n')[0]}` };
}

function tidyFastifyMessage(e: { code?: string; message?: string }): string {
  const message = String(e.message ?? 'bad request');
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return 'request body is too large';
  if (e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || /JSON/.test(message)) return `the request body is not valid JSON: ${message}`;
  // Schema errors read "body/messages/0/role must be string": say it as the field path.
  return message.replace(/^body\//, '').replace(/^body /, '');
}

const OPENAI_TYPES: Record<number, string> = { 400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error', 404: 'not_found_error', 413: 'invalid_request_error', 429: 'rate_limit_error', 503: 'server_busy' };

export function openAiErrorBody(e: HttpError) {
  return { error: { message: e.message, type: OPENAI_TYPES[e.status] ?? 'server_error', param: e.param ?? null, code: e.code } };
}

export function ollamaErrorBody(e: HttpError) {
  return { error: e.message };
}
