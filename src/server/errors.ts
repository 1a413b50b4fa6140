/**
 * Errors as HTTP answers. A ServerError carries its status and a machine-readable code; a DvlError from the
 * library maps by its kind (usage and input: 400, the client sent something wrong; model: 500). Each API
 * writes them in its own shape: OpenAI's `{"error": {"message", "type", "param", "code"}}`, Ollama's
 * `{"error": "..."}`, Anthropic's `{"type": "error", "error": {"type", "message"}}`.
 */
import { isNoSpace } from '../util/disk.js';
import { DvlError } from '../util/errors.js';

export class ServerError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly options: { param?: string; retryAfterSeconds?: number; listsModels?: boolean } = {},
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
  /** The message ends with the route of the API that lists the models (an unknown model). */
  listsModels?: boolean;
}

/**
 * Any error -> status, code and a one-line message (internal errors do not leak their stack). `bodySchema`:
 * the route's body schema, which a validation error is explained from.
 */
export function toHttpError(error: unknown, bodySchema?: unknown): HttpError {
  if (error instanceof ServerError) return { status: error.status, code: error.code, message: error.message, ...error.options };
  if (error instanceof DvlError) {
    if (error.kind === 'usage' || error.kind === 'input') return { status: 400, code: 'invalid_request', message: error.message };
    if (error.kind === 'interrupted') return { status: 499, code: 'cancelled', message: 'the request was cancelled' };
    return { status: 500, code: 'model_error', message: error.message };
  }
  // Fastify's own errors (bad JSON, body too large, schema validation) carry statusCode and code.
  const e = error as { statusCode?: number; code?: string; message?: string; name?: string; validation?: SchemaError[]; validationContext?: string };
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    if (Array.isArray(e.validation) && e.validation.length > 0 && (e.validationContext ?? 'body') === 'body') return schemaError(e.validation, bodySchema);
    return fastifyError(e as { statusCode: number; code?: string; message?: string; name?: string });
  }
  if (isNoSpace(error)) return { status: 507, code: 'insufficient_storage', message: 'not enough disk space on the server' };
  return { status: 500, code: 'internal_error', message: `internal error: ${String(e?.message ?? error).split('\n')[0]}` };
}

/** Fastify's refusals in our words and codes (never an FST_ code). */
function fastifyError(e: { statusCode: number; code?: string; message?: string; name?: string }): HttpError {
  const message = String(e.message ?? 'bad request').split('\n')[0];
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return { status: e.statusCode, code: 'body_too_large', message: 'request body is too large' };
  if (e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') return { status: 400, code: 'invalid_json', message: 'the request body is empty: send a JSON object' };
  // The JSON parser's own message (it says where): what the sender can fix.
  if (e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e.name === 'SyntaxError') return { status: 400, code: 'invalid_json', message: `the request body is not valid JSON: ${message}` };
  return { status: e.statusCode, code: 'invalid_request', message: message.replace(/^FST_\w+:?\s*/, '') };
}

/** What ajv reports per failed keyword (Fastify puts them on the error as `validation`). */
export interface SchemaError {
  instancePath: string;
  schemaPath: string;
  keyword: string;
  params: Record<string, unknown>;
}

/**
 * A body that does not fit its route's schema -> one message in the API's words: the field as the API names
 * it (`messages[0].content`, `options.temperature`) and what it takes, read from the schema ("must be a number
 * between 0 and 100"), never the validator's wording ("body/temperature must match a schema in anyOf"). Of
 * ajv's errors (a field with alternatives fails each one) the one deepest in the body is the most precise.
 */
export function schemaError(errors: SchemaError[], bodySchema: unknown): HttpError {
  const depth = (e: SchemaError) => pointer(e.instancePath).length + (e.keyword === 'required' ? 1 : 0);
  const error = errors.reduce((best, e) => (depth(e) > depth(best) ? e : best));
  const at = pointer(error.instancePath);
  // The schema of the field: the failed keyword's place, less the keyword, less the alternative that failed.
  const place = pointer(error.schemaPath.replace(/^#/, '')).slice(0, -1);
  if (error.keyword === 'required') {
    const missing = String(error.params.missingProperty);
    const field = fieldName([...at, missing]);
    return { status: 400, code: 'invalid_request', message: `${field} is required`, param: field };
  }
  while (place.length >= 2 && place.at(-2) === 'anyOf' && /^\d+$/.test(place.at(-1)!)) place.splice(-2);
  if (place.at(-1) === 'anyOf') place.pop();
  const schema = place.reduce<unknown>((node, key) => (node as Record<string, unknown> | undefined)?.[key], bodySchema);
  const wants = schema ? describe(schema as JsonSchema) : 'of another type';
  if (at.length === 0) return { status: 400, code: 'invalid_request', message: `the request body must be a JSON object` };
  const field = fieldName(at);
  return { status: 400, code: 'invalid_request', message: `${field} must be ${wants}`, param: field };
}

interface JsonSchema {
  type?: string;
  anyOf?: JsonSchema[];
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  minItems?: number;
  maxItems?: number;
  items?: JsonSchema;
  /** On an array's items: what they are, in the plural ("content parts"). */
  description?: string;
}

/** What a schema accepts, in words: "a number between 0 and 100", "a string or an array of at most 16 strings". */
function describe(schema: JsonSchema): string {
  if (schema.anyOf) return schema.anyOf.filter((s) => s.type !== 'null').map(describe).join(' or ');
  if (schema.enum) return `one of ${schema.enum.join(', ')}`;
  switch (schema.type) {
    case 'integer':
    case 'number':
      return describeRange(schema.type === 'integer' ? 'an integer' : 'a number', schema);
    case 'string':
      return schema.minLength ? 'a non-empty string' : 'a string';
    case 'boolean':
      return 'true or false';
    case 'object':
      return 'an object';
    case 'array': {
      const items = schema.items?.description ?? (schema.items?.type === 'string' ? 'strings' : schema.items?.type === 'integer' ? 'integers' : '');
      const count = schema.maxItems !== undefined ? `at most ${schema.maxItems} ` : '';
      const noun = schema.minItems ? 'a non-empty array' : 'an array';
      return items ? `${noun} of ${count}${items}` : count ? `${noun} of ${count.trim()} items` : noun;
    }
    default:
      return 'of another type';
  }
}

function describeRange(noun: string, s: JsonSchema): string {
  const low = s.minimum !== undefined ? { value: s.minimum, open: false } : s.exclusiveMinimum !== undefined ? { value: s.exclusiveMinimum, open: true } : null;
  const high = s.maximum !== undefined ? { value: s.maximum, open: false } : s.exclusiveMaximum !== undefined ? { value: s.exclusiveMaximum, open: true } : null;
  if (low && high && !low.open && !high.open) return `${noun} between ${low.value} and ${high.value}`;
  const parts = [
    ...(low ? [low.open ? `greater than ${low.value}` : `of at least ${low.value}`] : []),
    ...(high ? [high.open ? `less than ${high.value}` : `at most ${high.value}`] : []),
  ];
  if (parts.length === 2) parts[0] = parts[0].replace(/^of /, '');
  return [noun, parts.join(' and ')].filter(Boolean).join(' ');
}

/** "/messages/0/content" -> ["messages", "0", "content"] (JSON pointer, unescaped). */
function pointer(path: string): string[] {
  return path
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** ["messages", "0", "content"] -> "messages[0].content", as the APIs name fields. */
function fieldName(path: string[]): string {
  return path.map((p, i) => (/^\d+$/.test(p) ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

const OPENAI_TYPES: Record<number, string> = { 400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error', 404: 'not_found_error', 405: 'invalid_request_error', 413: 'invalid_request_error', 429: 'rate_limit_error', 503: 'server_busy' };

export function openAiErrorBody(e: HttpError) {
  const message = e.listsModels ? `${e.message}; GET /v1/models lists the models this server has` : e.message;
  return { error: { message, type: OPENAI_TYPES[e.status] ?? 'server_error', param: e.param ?? null, code: e.code } };
}

/** Anthropic's error types by status (their 529 overloaded_error is dvl's 503: a full queue, a drain). */
const ANTHROPIC_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  503: 'overloaded_error',
  529: 'overloaded_error',
};

export function anthropicErrorType(status: number): string {
  return ANTHROPIC_TYPES[status] ?? (status >= 400 && status < 500 ? 'invalid_request_error' : 'api_error');
}

export function anthropicErrorBody(e: HttpError) {
  const message = e.listsModels ? `${e.message}; GET /v1/models lists the models this server has` : e.message;
  return { type: 'error', error: { type: anthropicErrorType(e.status), message } };
}

export function ollamaErrorBody(e: HttpError) {
  return { error: e.listsModels ? `${e.message}; GET /api/tags lists the models this server has` : e.message };
}
