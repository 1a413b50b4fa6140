/**
 * Talking to the Hub through @huggingface/hub, with what the library leaves out added around it:
 * - the token: the library only accepts tokens starting with "hf_" and reads neither HF_TOKEN nor --token, so
 *   the token is never given to it; the custom fetch below adds the Authorization header itself;
 * - retries with exponential backoff on network errors, 429 and 5xx (the library has none);
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
        let response: Response | undefined;
        try {
          response = await client.fetchOnce(input, init);
          if (!isRetryableStatus(response.status) || attempt >= client.retries) return response;
          await response.body?.cancel();
        } catch (error) {
          if (options.signal?.aborted || attempt >= client.retries) throw error;
        }
        await backoff(client, attempt);
      }
    },
  };
  return client;
}

export const isRetryableStatus = (status: number) => status === 429 || status >= 500;

/** Waits retryBaseMs * 2^attempt (capped at 30 s); stops early on Ctrl-C. */
export function backoff(client: HubClient, attempt: number): Promise<void> {
  const ms = Math.min(30_000, client.retryBaseMs * 2 ** attempt);
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
  const cause = (error as Error)?.cause as { code?: string; message?: string } | undefined;
  const why = cause?.code ?? cause?.message ?? (error as Error)?.message ?? String(error);
  return modelError(`cannot reach ${client.endpoint} (${why}); check the connection, or use --offline for models already downloaded`, error);
}
