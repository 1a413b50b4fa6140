/**
 * The HTTP server: Fastify with JSON-schema validation of request bodies, the OpenAI and Ollama routes over
 * one answering service, and what a local model server must do before any route runs:
 * - Host header check: only loopback names, the bound host and `allowedHosts` (a web page on another site
 *   cannot reach a loopback server through DNS rebinding); any host when bound to all interfaces;
 * - `--api-key`: a Bearer token (or Anthropic's `x-api-key` header) on every route but /health, compared in
 *   constant time;
 * - CORS only for the listed origins;
 * - a body size limit, image limits before decoding (chat-input.ts, media.ts);
 * - one access-log line per request, Prometheus metrics, /health (503 while a model loads);
 * - the chat page at `/` (web-ui.ts; `--no-ui` turns it off), reachable without the key: it asks for it.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { AppOptions, RouteContext } from './context.js';
import { registerDvlRoutes } from './dvl-api.js';
import { registerAnthropic } from './anthropic.js';
import { anthropicErrorBody, ollamaErrorBody, openAiErrorBody, ServerError, toHttpError, type HttpError } from './errors.js';
import { ServerMetrics } from './metrics.js';
import { ModelPool } from './model-pool.js';
import { registerOllama } from './ollama.js';
import { registerOpenAi } from './openai.js';
import { RequestQueue } from './queue.js';
import { isPublicPath, registerWebUi } from './web-ui.js';


const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '::1']);
const ANY_ADDRESS = new Set(['0.0.0.0', '::', '']);

export async function buildApp(options: AppOptions, draining: AbortSignal): Promise<{ app: FastifyInstance; context: RouteContext }> {
  const app = Fastify({
    bodyLimit: options.bodyLimitBytes,
    logger: false,
    // Wrong types are a 400, not silently converted; unknown fields stay (and are ignored).
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false } },
    // Large base64 images: the default JSON parser is fine, the limit is bodyLimit.
    return503OnClosing: true,
  });
  // Bodies are JSON whatever their Content-Type says: Ollama's own examples post with curl -d, which sends
  // application/x-www-form-urlencoded, and Ollama accepts that. One parser for every type (Fastify's own
  // application/json parser drops the parser's message, which says where the JSON is wrong).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, body === '' ? undefined : JSON.parse(body as string, refusePrototypeKeys));
    } catch (error) {
      done(new ServerError(400, 'invalid_json', `the request body is not valid JSON: ${(error as Error).message}`), undefined);
    }
  });
  const metrics = new ServerMetrics();
  const queue = new RequestQueue(options.maxQueue, (depth) => metrics.queueDepth.set(depth));
  const pool = new ModelPool(options.pool);
  const context: RouteContext = { pool, queue, metrics, options, draining, ctxSize: options.ctxSize };

  const allowedHosts = new Set([...LOOPBACK_NAMES, ...options.allowedHosts.map((h) => h.toLowerCase()), options.host.toLowerCase()]);
  const anyHost = ANY_ADDRESS.has(options.host);
  const keyDigest = options.apiKey ? sha256(options.apiKey) : null;
  const ui = options.ui ?? true;

  // CORS first: its headers then go on every answer to an allowed origin, a 401 or 403 included, so that a
  // browser page can read why it was refused.
  if (options.corsOrigins.length > 0) {
    const { default: cors } = await import('@fastify/cors');
    await app.register(cors, { origin: options.corsOrigins, methods: ['GET', 'POST', 'DELETE', 'OPTIONS'], allowedHeaders: ['Content-Type', 'Authorization', 'X-Api-Key', 'Anthropic-Version', 'Anthropic-Beta'] });
  }

  app.addHook('onRequest', async (request, reply) => {
    const started = performance.now();
    // Read now: once the client is gone its socket no longer knows the address.
    const ip = request.ip;
    reply.raw.once('close', () => {
      const route = request.routeOptions.url ?? 'unmatched';
      const status = reply.raw.headersSent ? reply.raw.statusCode : 499;
      metrics.requests.inc({ route, method: request.method, status: String(status) });
      const gone = reply.raw.writableFinished ? '' : ' (client went away)';
      options.log(`${ip} "${request.method} ${request.url}" ${status} ${(performance.now() - started).toFixed(0)} ms${gone}`);
    });
    const host = hostName(request.headers.host);
    if (!anyHost && (host === null || !allowedHosts.has(host))) {
      throw new ServerError(403, 'forbidden_host', `Host '${request.headers.host ?? ''}' is not allowed (start dvl serve with --allowed-host to add it)`);
    }
    // The page has no secret in it: it asks for the key and sends it on every API call it makes.
    if (keyDigest && request.url !== '/health' && request.method !== 'OPTIONS' && !isPublicPath(request.method, request.url, ui)) {
      const match = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '');
      // Anthropic's clients send the key as x-api-key.
      const header = request.headers['x-api-key'];
      const given = match?.[1].trim() ?? (typeof header === 'string' && header.trim() !== '' ? header.trim() : undefined);
      if (given === undefined || !timingSafeEqual(sha256(given), keyDigest)) {
        void reply.header('www-authenticate', 'Bearer');
        throw new ServerError(401, 'invalid_api_key', given !== undefined ? 'invalid API key' : 'missing API key: send it as "Authorization: Bearer <key>" (or "x-api-key: <key>")');
      }
    }
  });


  // A validation error is explained from the route's own body schema.
  app.setErrorHandler((error, request, reply) => sendError(request, reply, toHttpError(error, request.routeOptions.schema?.body)));
  // The routes by path, with their methods: a known path asked with another method is a 405 that says which.
  const methods = new Map<string, Set<string>>();
  app.addHook('onRoute', (route) => {
    // CORS answers OPTIONS on every path: that says nothing about the path.
    if (route.url === '*' || route.url === '/*') return;
    const known = methods.get(route.url) ?? new Set<string>();
    for (const method of [route.method].flat()) known.add(method);
    methods.set(route.url, known);
  });
  app.setNotFoundHandler((request, reply) => {
    const pathname = request.url.split('?')[0];
    const allowed = allowedMethods(methods, pathname);
    if (allowed.length > 0 && !allowed.includes(request.method)) {
      void reply.header('allow', allowed.join(', '));
      return sendError(request, reply, { status: 405, code: 'method_not_allowed', message: `${request.method} ${pathname} is not allowed: this route takes ${allowed.join(', ')}` });
    }
    return sendError(request, reply, { status: 404, code: 'not_found', message: `no route ${request.method} ${pathname}` });
  });

  app.get('/health', async (_request, reply) => {
    if (draining.aborted) return reply.code(503).send({ status: 'shutting down' });
    if (pool.loading) return reply.code(503).send({ status: 'loading' });
    return { status: 'ok', models: pool.loaded().map((m) => m.id) };
  });
  app.get('/metrics', async (_request, reply) => {
    metrics.modelsLoaded.set(pool.loaded().length);
    return reply.header('content-type', metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  registerOpenAi(app, context);
  registerOllama(app, context);
  registerAnthropic(app, context);
  registerDvlRoutes(app, context);
  registerWebUi(app, { enabled: ui, dir: options.uiDir, log: options.log });
  return { app, context };
}

/** The error in the shape of the API the route belongs to. */
export function sendError(request: FastifyRequest, reply: FastifyReply, error: HttpError): FastifyReply | void {
  if (reply.raw.headersSent) {
    // A stream already started: its route writes the error in its own framing; nothing more to send here.
    if (!reply.raw.writableEnded) reply.raw.end();
    return;
  }
  if (error.status >= 500 && error.status !== 503) {
    request.log.error(error.message);
  }
  if (error.retryAfterSeconds !== undefined) void reply.header('retry-after', String(error.retryAfterSeconds));
  const body = request.url.startsWith('/api/') ? ollamaErrorBody(error) : isAnthropicPath(request.url) ? anthropicErrorBody(error) : openAiErrorBody(error);
  return reply.code(error.status === 499 ? 400 : error.status).send(body);
}

/** The Anthropic Messages API's routes (their errors take Anthropic's shape). */
export function isAnthropicPath(url: string): boolean {
  const pathname = url.split('?')[0];
  return pathname === '/v1/messages' || pathname.startsWith('/v1/messages/');
}

/**
 * JSON.parse's reviver: keys that would reach an object's prototype if the body were ever merged into an
 * object ("__proto__", "constructor" holding "prototype") are refused, as Fastify's own JSON parser does.
 */
function refusePrototypeKeys(key: string, value: unknown): unknown {
  if (key === '__proto__' || (key === 'constructor' && typeof value === 'object' && value !== null && 'prototype' in value)) {
    throw new SyntaxError(`the key "${key}" is not allowed`);
  }
  return value;
}

/** The methods of the routes whose path matches `pathname` (a route ending in `*` takes the rest of a path). */
function allowedMethods(routes: Map<string, Set<string>>, pathname: string): string[] {
  const out = new Set<string>();
  for (const [url, methods] of routes) {
    const matches = url.endsWith('*') ? pathname.startsWith(url.slice(0, -1)) && pathname.length > url.length - 1 : url === pathname;
    if (matches) for (const m of methods) out.add(m);
  }
  return [...out].filter((m) => m !== 'OPTIONS').sort((a, b) => METHOD_ORDER.indexOf(a) - METHOD_ORDER.indexOf(b));
}

const METHOD_ORDER = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'];

/** The name in a Host header, lower case, without its port (IPv6 literals without brackets); null if unusable. */
export function hostName(header: string | undefined): string | null {
  if (!header) return null;
  const value = header.trim().toLowerCase();
  const bracketed = /^\[([0-9a-f:.]+)\](?::\d+)?$/.exec(value);
  if (bracketed) return bracketed[1];
  const plain = /^([a-z0-9.-]+)(?::\d+)?$/.exec(value);
  return plain ? plain[1].replace(/\.$/, '') : null;
}

const sha256 = (text: string) => createHash('sha256').update(text).digest();
