/**
 * `dvl ask --host URL` and `dvl chat --host URL`: the question goes to a running `dvl serve` (its route
 * POST /dvl/v1/ask, src/server/dvl-api.ts) instead of a model loaded here. The answer comes back as NDJSON,
 * one AskEvent per line as it happens, then the AskResult, so the commands render it with the renderers they
 * use locally and print the same text, --json and --jsonl.
 *
 * Failures read as local ones do: the server's DvlError kind gives the exit code (usage 1, input 2, model 3);
 * without one, an unknown model is a model problem (as `dvl ask -m` of one is), a 401 a usage error that says
 * how to give the key, another 4xx a usage error and anything else a model problem; a server that cannot be
 * reached is a model problem (exit 3). Aborting `signal` (Ctrl-C) closes the connection, which cancels the
 * answer on the server, and fails with an 'interrupted' DvlError (exit 130).
 *
 * Without -m the question goes to the model the server has loaded (remoteModel).
 */
import fs from 'node:fs/promises';
import type { AskEvent, AskResult, FamilyImageOptions, GenerationSettings, JsonSchemaInput } from '../ask.js';
import type { WeightDtype } from '../convert/weight-dtype.js';
import type { Turn } from '../prompt/conversation.js';
import { wireFormat, type DvlAskBody, type DvlAskLine } from '../ask-wire.js';
import { DvlError, type ErrorKind, inputError, modelError, usageError } from '../util/errors.js';
import { DEFAULT_PORT } from './serve-command.js';
import type { RequestPixelBudget } from '../models/index.js';

export interface RemoteTarget {
  /** The server's base URL, without a trailing slash (http://127.0.0.1:11435). */
  url: string;
  apiKey?: string;
}

/**
 * `--host` (else $DVL_HOST) as a URL, or null when neither is set: "http://h:p", "https://h", "h:p" and "h"
 * (http, dvl serve's port). `--api-key` (else $DVL_API_KEY) goes with it.
 */
export function remoteTarget(flags: { host?: string; apiKey?: string }, env: NodeJS.ProcessEnv = process.env): RemoteTarget | null {
  const given = flags.host ?? (env.DVL_HOST?.trim() || undefined);
  if (given === undefined) return null;
  const text = given.trim();
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text);
  let url: URL;
  try {
    url = new URL(hasScheme ? text : `http://${text}`);
  } catch {
    throw usageError(`--host must be a URL like http://localhost:${DEFAULT_PORT}, got '${given}'`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw usageError(`--host must be an http(s) URL, got '${given}'`);
  if (!hasScheme && url.port === '') url.port = String(DEFAULT_PORT);
  const apiKey = flags.apiKey ?? (env.DVL_API_KEY || undefined);
  return { url: `${url.origin}${url.pathname.replace(/\/+$/, '')}`, apiKey };
}

/** One question as the server takes it; images as file paths (read and sent) or bytes. */
export interface RemoteQuestion {
  model: string;
  prompt: string;
  images: (string | Buffer)[];
  /** undefined: the model's default system prompt; null: none. */
  system?: string | null;
  history?: Turn[];
  historyImages?: (string | Buffer)[];
  /** blockSize undefined: the model's. */
  settings: Omit<GenerationSettings, 'blockSize'> & { blockSize?: number };
  /** Bounds the user gave; the server fills in the rest from its model's default. */
  minPixels?: number;
  maxPixels?: number;
  imageOptions?: FamilyImageOptions;
  /** Structured output (AskRequest.jsonSchema). */
  jsonSchema?: JsonSchemaInput;
}

/** The answer with what only the server knows: the settings it used (the model's block size), its dtype. */
export interface RemoteAnswer {
  result: AskResult;
  settings: GenerationSettings;
  dtype: WeightDtype;
  /** Loading the model on the server for this request (0 when it was loaded). */
  loadMs: number;
  /** The pixel budget the server used (a server older than this field does not say). */
  pixels?: RequestPixelBudget;
}

export async function askRemote(
  target: RemoteTarget,
  question: RemoteQuestion,
  options: { signal?: AbortSignal; onProgress?: (event: AskEvent) => void } = {},
): Promise<RemoteAnswer> {
  const { signal } = options;
  const body: DvlAskBody = {
    model: question.model,
    prompt: question.prompt,
    images: await base64Images(question.images),
    ...(question.system !== undefined ? { system: question.system } : {}),
    history: question.history ?? [],
    history_images: await base64Images(question.historyImages ?? []),
    settings: question.settings,
    ...(question.minPixels !== undefined ? { min_pixels: question.minPixels } : {}),
    ...(question.maxPixels !== undefined ? { max_pixels: question.maxPixels } : {}),
    ...(question.imageOptions?.tiles !== undefined ? { tiles: question.imageOptions.tiles } : {}),
    ...(question.imageOptions?.imageMode ? { image_mode: question.imageOptions.imageMode } : {}),
    ...(question.jsonSchema !== undefined ? { format: wireFormat(question.jsonSchema) } : {}),
  };
  if (signal?.aborted) throw interrupted();
  const endpoint = `${target.url}/dvl/v1/ask`;
  let response: Response;
  try {
    response = await fetch(endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/x-ndjson', ...authorization(target) },
      body: JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (signal?.aborted) throw interrupted();
    throw modelError(`cannot reach dvl serve at ${target.url}: ${reason(error)}`, error);
  }
  if (!response.ok) throw await httpError(response, target);
  if (!response.body) throw modelError(`dvl serve at ${target.url} sent an empty answer`);

  let final: Extract<DvlAskLine, { result: unknown }> | null = null;
  const decoder = new TextDecoder();
  let buffered = '';
  const onLine = (text: string) => {
    if (text.trim() === '') return; // keep-alive
    let line: DvlAskLine;
    try {
      line = JSON.parse(text) as DvlAskLine;
    } catch {
      throw modelError(`dvl serve at ${target.url} sent a line that is not JSON: ${text.slice(0, 80)}`);
    }
    // A stage's time is the server's clock: here the event's arrival stands for it.
    if ('event' in line) options.onProgress?.(line.event.type === 'stage' ? { type: 'stage', stage: line.event.stage } : line.event);
    else if ('result' in line) final = line;
    else if ('error' in line) throw remoteError(line.error.message, line.error.kind, undefined);
  };
  try {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffered += decoder.decode(chunk, { stream: true });
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const text = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        onLine(text);
      }
    }
    buffered += decoder.decode();
    onLine(buffered);
  } catch (error) {
    if (signal?.aborted) throw interrupted();
    if (error instanceof DvlError) throw error;
    throw modelError(`lost the connection to dvl serve at ${target.url}: ${reason(error)}`, error);
  }
  if (signal?.aborted) throw interrupted();
  const done = final as Extract<DvlAskLine, { result: unknown }> | null;
  if (!done) throw modelError(`dvl serve at ${target.url} ended the answer without a result`);
  return { result: done.result, settings: done.settings, dtype: done.dtype as WeightDtype, loadMs: done.load_ms, ...(done.pixel_budget ? { pixels: done.pixel_budget } : {}) };
}

/**
 * The model the server has loaded (GET /api/ps), for `dvl ask --host` without -m: the one a user of that
 * server means. None loaded, or several: a usage error that lists what the server has (GET /v1/models).
 */
export async function remoteModel(target: RemoteTarget, signal?: AbortSignal): Promise<string> {
  const ps = (await getJson(target, '/api/ps', signal)) as { models?: { name?: unknown }[] };
  const loaded = (ps.models ?? []).map((m) => m.name).filter((name): name is string => typeof name === 'string');
  if (loaded.length === 1) return loaded[0];
  if (loaded.length > 1) throw usageError(`dvl serve at ${target.url} has ${loaded.length} models loaded: name one with -m (${loaded.join(', ')})`);
  const list = (await getJson(target, '/v1/models', signal)) as { data?: { id?: unknown }[] };
  const ids = (list.data ?? []).map((m) => m.id).filter((id): id is string => typeof id === 'string');
  throw usageError(`dvl serve at ${target.url} has no model loaded: name one with -m (${ids.length > 0 ? `it has ${ids.join(', ')}` : 'it has none'})`);
}

async function getJson(target: RemoteTarget, route: string, signal?: AbortSignal): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(`${target.url}${route}`, { headers: authorization(target), signal });
  } catch (error) {
    if (signal?.aborted) throw interrupted();
    throw modelError(`cannot reach dvl serve at ${target.url}: ${reason(error)}`, error);
  }
  if (!response.ok) throw await httpError(response, target);
  try {
    return await response.json();
  } catch (error) {
    if (signal?.aborted) throw interrupted();
    throw modelError(`dvl serve at ${target.url} sent ${route} an answer that is not JSON`, error);
  }
}

const authorization = (target: RemoteTarget): Record<string, string> => (target.apiKey ? { authorization: `Bearer ${target.apiKey}` } : {});

/** Images as the server takes them: base64 of the files' bytes (a file that went away is a bad input). */
async function base64Images(images: (string | Buffer)[]): Promise<string[]> {
  const out: string[] = [];
  for (const image of images) {
    if (typeof image !== 'string') {
      out.push(image.toString('base64'));
      continue;
    }
    try {
      out.push((await fs.readFile(image)).toString('base64'));
    } catch (error) {
      throw inputError(`image not found: ${image}`, error);
    }
  }
  return out;
}

/** A status other than 2xx: the server's message (OpenAI's or Ollama's error shape), else the status line. */
async function httpError(response: Response, target: RemoteTarget): Promise<DvlError> {
  let text = '';
  try {
    text = await response.text();
  } catch {
    // The status says enough.
  }
  // The key is ours to give: say how (the server's message speaks of HTTP headers).
  if (response.status === 401) {
    return usageError(target.apiKey ? `dvl serve at ${target.url} refused the API key: check --api-key or DVL_API_KEY` : `dvl serve at ${target.url} wants an API key: pass --api-key or set DVL_API_KEY`);
  }
  let message: string | undefined;
  let kind: string | undefined;
  let code: string | undefined;
  try {
    const body = JSON.parse(text) as { error?: string | { message?: string; kind?: string; code?: string } };
    if (typeof body.error === 'string') message = body.error;
    else if (body.error && typeof body.error.message === 'string') {
      message = body.error.message;
      kind = body.error.kind;
      code = body.error.code;
    }
  } catch {
    // Not JSON: not a dvl serve, or a proxy in front of it.
  }
  // A model the server does not have is a model problem, as `dvl ask -m` of one is without --host.
  if (code === 'model_not_found') kind ??= 'model';
  return remoteError(message ?? `dvl serve at ${target.url} answered ${response.status} ${response.statusText}`.trimEnd(), kind, response.status);
}

/** The server's kind when it gave one; else a 4xx is a usage error, anything else a model problem. */
function remoteError(message: string, kind: string | undefined, status: number | undefined): DvlError {
  const known: ErrorKind[] = ['usage', 'input', 'model'];
  if (kind && (known as string[]).includes(kind)) return new DvlError(kind as ErrorKind, message);
  if (status !== undefined && status >= 400 && status < 500) return usageError(message);
  return modelError(message);
}

const interrupted = () => new DvlError('interrupted', 'interrupted');

/** undici says "fetch failed" and keeps the reason (ECONNREFUSED, a DNS failure) in `cause`. */
function reason(error: unknown): string {
  const e = error as { message?: string; cause?: { message?: string; code?: string; errors?: { message?: string }[] } };
  const cause = e?.cause;
  const inner = cause?.errors?.[0]?.message ?? cause?.message ?? cause?.code;
  return String(inner ?? e?.message ?? error).split('\n')[0];
}
