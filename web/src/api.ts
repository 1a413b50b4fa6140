/**
 * The page's only connection: `dvl serve`'s API on the page's own origin (the Content-Security-Policy allows
 * nothing else). GET /v1/models for the picker, GET /health for the loaded model, POST /dvl/v1/ask for
 * answers, read as they stream (NDJSON: one event per line, then the result).
 *
 * With `dvl serve --api-key`, every API call needs `Authorization: Bearer KEY`: the page asks for the key
 * once and keeps it in sessionStorage, so it lasts as long as the tab and is never written to disk for good.
 */
import type { AskBody, AskEvent, AskLine, AskResult, ErrorBody, ModelList } from './wire.js';

const KEY_STORAGE = 'dvl-api-key';

/** A refusal or failure the user should read; `needsKey` when the server wants a (different) API key. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
  get needsKey(): boolean {
    return this.status === 401;
  }
}

export interface Answer {
  result: AskResult;
  /** Loading the model for this answer (0 when it was loaded) and waiting behind other requests, in ms. */
  loadMs: number;
  queueMs: number;
}

export class Api {
  private key: string | null = sessionStorage.getItem(KEY_STORAGE);

  get hasKey(): boolean {
    return this.key !== null;
  }

  setKey(key: string): void {
    this.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
  }

  /** The model ids the server has (GET /v1/models). */
  async models(): Promise<string[]> {
    const response = await this.fetch('/v1/models', { method: 'GET' });
    const list = (await response.json()) as ModelList;
    return list.data.map((m) => m.id);
  }

  /** The models loaded right now (GET /health, which needs no key; [] while one loads). */
  async loadedModels(): Promise<string[]> {
    const response = await fetch('/health').catch(() => null);
    if (!response?.ok) return [];
    const health = (await response.json()) as { models?: string[] };
    return health.models ?? [];
  }

  /**
   * Asks, reporting each event as it arrives. Aborting `signal` closes the connection, which stops the answer
   * on the server before its next decoder call; the returned promise then rejects with an AbortError.
   */
  async ask(body: AskBody, signal: AbortSignal, onEvent: (event: AskEvent) => void): Promise<Answer> {
    const response = await this.fetch('/dvl/v1/ask', { method: 'POST', body: JSON.stringify(body), signal });
    if (!response.body) throw new ApiError('the server sent an empty answer', response.status);
    let answer: Answer | null = null;
    for await (const text of lines(response.body)) {
      if (text.trim() === '') continue; // a keep-alive ping
      const line = JSON.parse(text) as AskLine;
      if ('event' in line) onEvent(line.event);
      else if ('result' in line) answer = { result: line.result, loadMs: line.load_ms, queueMs: line.queue_ms };
      else if ('error' in line) throw new ApiError(line.error.message, 500);
    }
    if (!answer) throw new ApiError('the server ended the answer without a result', 500);
    return answer;
  }

  /** A request to the API, with the key when one was given; a status other than 2xx is thrown as an ApiError. */
  private async fetch(path: string, init: RequestInit): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json, application/x-ndjson' };
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    if (this.key) headers.authorization = `Bearer ${this.key}`;
    let response: Response;
    try {
      response = await fetch(path, { ...init, headers });
    } catch (error) {
      if (init.signal?.aborted) throw error;
      throw new ApiError('cannot reach dvl serve (is it still running?)', 0);
    }
    if (!response.ok) throw new ApiError(await errorMessage(response), response.status);
    return response;
  }
}

/** The server's message from an error body (OpenAI's or Ollama's shape), else the status line. */
async function errorMessage(response: Response): Promise<string> {
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text) as ErrorBody;
    if (typeof body.error === 'string') return body.error;
    if (typeof body.error?.message === 'string') return body.error.message;
  } catch {
    // Not JSON: a proxy in front of the server, say.
  }
  return `the server answered ${response.status} ${response.statusText}`.trimEnd();
}

/** The lines of a streamed body, decoded as UTF-8 (a character split over two chunks is joined first). */
async function* lines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline: number;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      yield buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
    }
  }
  buffered += decoder.decode();
  if (buffered !== '') yield buffered;
}
