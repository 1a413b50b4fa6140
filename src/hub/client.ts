/**
 * Talking to the Hub through @huggingface/hub, with what the library leaves out added around it:
 * - the token: the library only accepts tokens starting with "hf_" and reads neither HF_TOKEN nor --token, so
 *   the token is never given to it; the custom fetch below adds the Authorization header itself;
 * - retries with exponential backoff on dropped connections, 429 and 5xx (the library has none), each one
 *   announced through onRetry; a host that cannot be reached at all (no DNS answer, connection refused) fails at
 *   once instead, since retrying would only make an offline user wait;
 * - request counting and cancellation (Ctrl-C) through one AbortSignal;
 * - errors a user can act on (the library's HubApiError carries the status, not the X-Error-Code header).
 */
import { HubApiError, listFiles, modelInfo } from '@huggingface/hub';
import { DvlError, modelError } from '../util/errors.js';
import type { RepoFile } from './select-files.js';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

export interface HubClientOptions {
  /** HF_ENDPOINT (default https://huggingface.co). */
  endpoint?: string;
  /** HF_TOKEN / --token. Never printed. */
  token?: string;
  /** Retries after the first try of each request (default 5). */
  retries?: number;
  /** First backoff delay; doubled on each retry (default 1000 ms). */
  retryBaseMs?: number;
  signal?: AbortSignal;
  /** The fetch that goes to the network (tests pass a counting one); default globalThis.fetch. */
  fetch?: typeof fetch;
  /** Told before each wait for a retry (the CLI prints one line per retry). */
  onRetry?: (notice: RetryNotice) => void;
}

/** A retry about to happen: why, after how long, and which try it will be. */
export interface RetryNotice {
  /** What failed, e.g. "https://huggingface.co answered 503" or "the connection to https://huggingface.co was lost (ECONNRESET)". */
  reason: string;
  delayMs: number;
  /** The coming try, counting the first one: 2 for the first retry. */
  attempt: number;
  /** Tries in all (retries + 1). */
  attempts: number;
}

export interface HubClient {
  endpoint: string;
  /** Authenticated fetch with no retry (downloads retry themselves, resuming from where they stopped). */
  fetchOnce: typeof fetch;
  /** Authenticated fetch that retries network errors, 429 and 5xx with backoff. */
  fetchRetrying: typeof fetch;
  retries: number;
  retryBaseMs: number;
  signal?: AbortSignal;
  onRetry?: (notice: RetryNotice) => void;
  hasToken: boolean;
  /** X-Error-Code of the last refused request ("RepoNotFound", "RevisionNotFound", "GatedRepo"...). */
  lastErrorCode?: string;
}

export function createHubClient(options: HubClientOptions = {}): HubClient {
  const endpoint = (options.endpoint && options.endpoint.length > 0 ? options.endpoint : DEFAULT_ENDPOINT).replace(/\/+$/, '');
  const base = options.fetch ?? globalThis.fetch;
  const origin = new URL(endpoint).origin;
  const client: HubClient = {
    endpoint,
    retries: options.retries ?? 5,
    retryBaseMs: options.retryBaseMs ?? 1000,
    signal: options.signal,
    onRetry: options.onRetry,
    hasToken: Boolean(options.token),
    fetchOnce: async (input, init) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      const headers = new Headers(init?.headers);
      // The token goes to the Hub only; redirects to a CDN drop it (fetch strips Authorization across origins).
      if (options.token && url.origin === origin) headers.set('Authorization', `Bearer ${options.token}`);
      // Ask for plain bytes: the Xet reconstruction protocol would bypass our resume and hashing.
      if (headers.get('Accept')?.includes('xet')) headers.set('Accept', '*/*');
      const response = await base(url, { ...init, headers, signal: options.signal });
      if (!response.ok) client.lastErrorCode = response.headers.get('X-Error-Code') ?? undefined;
      return response;
    },
    fetchRetrying: async (input, init) => {
      for (let attempt = 0; ; attempt++) {
        let reason: string;
        try {
          const response = await client.fetchOnce(input, init);
          if (!isRetryableStatus(response.status) || attempt >= client.retries) return response;
          await response.body?.cancel();
          reason = `${client.endpoint} answered ${response.status}`;
        } catch (error) {
          if (options.signal?.aborted || attempt >= client.retries || unreachableCode(error) !== undefined) throw error;
          reason = `the request to ${client.endpoint} failed (${networkErrorCode(error) ?? (error as Error).message})`;
        }
        await backoff(client, attempt, reason);
      }
    },
  };
  return client;
}

export const isRetryableStatus = (status: number) => status === 429 || status >= 500;

/**
 * The system error code of a failed fetch. undici's fetch throws TypeError("fetch failed") with the socket or
 * DNS error as `cause`, sometimes one level deeper, or an AggregateError of one error per address tried.
 */
export function networkErrorCode(error: unknown): string | undefined {
  const seen = new Set<unknown>();
  const queue: unknown[] = [error];
  while (queue.length > 0) {
    const e = queue.shift();
    if (typeof e !== 'object' || e === null || seen.has(e)) continue;
    seen.add(e);
    const { code, cause, errors } = e as { code?: unknown; cause?: unknown; errors?: unknown };
    if (typeof code === 'string' && /^[A-Z][A-Z0-9_]+$/.test(code)) return code;
    queue.push(cause, ...(Array.isArray(errors) ? errors : []));
  }
  return undefined;
}

/**
 * Codes that say the host cannot be reached at all: no DNS answer (ENOTFOUND, or EAI_AGAIN with no network),
 * nothing listening (ECONNREFUSED), no route (ENETUNREACH). Retrying these only makes an offline user wait.
 */
const UNREACHABLE = new Set(['ENOTFOUND', 'EAI_AGAIN', 'ECONNREFUSED', 'ENETUNREACH']);

/** The error's code when it means the host cannot be reached (see UNREACHABLE), else undefined. */
export function unreachableCode(error: unknown): string | undefined {
  const code = networkErrorCode(error);
  return code !== undefined && UNREACHABLE.has(code) ? code : undefined;
}

/**
 * Announces the retry (onRetry), then waits retryBaseMs * 2^attempt (capped at 30 s); stops early on Ctrl-C.
 * `attempt` is the 0-based try that just failed.
 */
export function backoff(client: HubClient, attempt: number, reason: string): Promise<void> {
  const ms = Math.min(30_000, client.retryBaseMs * 2 ** attempt);
  client.onRetry?.({ reason, delayMs: ms, attempt: attempt + 2, attempts: client.retries + 1 });
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(interrupted());
    };
    const timer = setTimeout(() => {
      client.signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    client.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export const interrupted = () => new DvlError('interrupted', 'interrupted; run the same command again to resume the download');

/** The commit a branch, tag or commit names (GET /api/models/{id}/revision/{rev}). */
export async function resolveRevision(client: HubClient, id: string, revision: string | undefined): Promise<string> {
  try {
    const info = await modelInfo({ name: id, revision, hubUrl: client.endpoint, fetch: client.fetchRetrying, additionalFields: ['sha'] });
    const sha = (info as { sha?: unknown }).sha;
    if (typeof sha !== 'string' || !/^[0-9a-f]{40}$/.test(sha)) throw modelError(`${client.endpoint} gave no commit for ${id}${revision ? `@${revision}` : ''}`);
    return sha;
  } catch (error) {
    throw hubError(client, id, revision, error);
  }
}

/** Every file of the commit with sizes and hashes (GET /api/models/{id}/tree/{sha}?recursive=true, paginated). */
export async function listRepoFiles(client: HubClient, id: string, commit: string): Promise<RepoFile[]> {
  const files: RepoFile[] = [];
  try {
    for await (const e of listFiles({ repo: id, revision: commit, recursive: true, hubUrl: client.endpoint, fetch: client.fetchRetrying })) {
      if (e.type !== 'file' || !e.oid) continue;
      files.push({ path: e.path, size: e.lfs?.size ?? e.size, oid: e.oid, lfs: e.lfs ? { oid: e.lfs.oid, size: e.lfs.size } : undefined });
    }
  } catch (error) {
    throw hubError(client, id, commit, error);
  }
  return files;
}

/** A one-line error that says what happened and what to do. */
export function hubError(client: HubClient, id: string, revision: string | undefined, error: unknown): Error {
  if (error instanceof DvlError) return error;
  if (client.signal?.aborted) return interrupted();
  const status = error instanceof HubApiError ? error.statusCode : undefined;
  const auth = 'set HF_TOKEN or pass --token with a token from https://huggingface.co/settings/tokens';
  if (status === 401) {
    return modelError(
      client.hasToken
        ? `the Hub did not accept the token for ${id} (401): check that HF_TOKEN / --token is a valid token`
        : `${id} needs authentication (401): it is private or gated, or does not exist; ${auth}`,
      error,
    );
  }
  if (status === 403) {
    return modelError(`${id} is gated or private and ${client.hasToken ? 'this token has' : 'you have'} no access (403): accept its terms at ${client.endpoint}/${id}, then ${auth}`, error);
  }
  if (status === 404) {
    if (client.lastErrorCode === 'RevisionNotFound') return modelError(`revision '${revision}' not found in ${id}`, error);
    return modelError(`model ${id} not found on ${client.endpoint}`, error);
  }
  if (status !== undefined) return modelError(`${client.endpoint} answered ${status} for ${id}; try again later`, error);
  const cause = (error as Error)?.cause as { message?: string } | undefined;
  const why = networkErrorCode(error) ?? cause?.message ?? (error as Error)?.message ?? String(error);
  return modelError(`cannot reach ${client.endpoint} (${why}); check the connection, or use --offline (or HF_HUB_OFFLINE=1) for models already downloaded`, error);
}
