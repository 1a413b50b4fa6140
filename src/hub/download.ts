/**
 * Downloads one file into the cache's blobs/ directory: resumed, verified, retried.
 *
 * Written here rather than with @huggingface/hub's downloadFileToCacheDir because that function restarts a
 * partial `.incomplete` file from zero, moves it into the cache without checking a hash, and cannot be
 * cancelled. This is only the byte transfer of `GET /{repo}/resolve/{commit}/{path}`; the cache layout and
 * naming are the same (blobs/<etag>.incomplete -> blobs/<etag>), so Python and the library see our files.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { DvlError, modelError } from '../util/errors.js';
import { backoff, type HubClient, hubError, interrupted, isRetryableStatus, networkErrorCode, unreachableCode } from './client.js';
import type { RepoFile } from './select-files.js';

export interface DownloadTarget {
  id: string;
  commit: string;
  file: RepoFile;
  /** blobs/<etag>: written only once the contents are verified. */
  blob: string;
}

/** Called with the number of new bytes each time some arrive (negative when a partial file is discarded). */
export type OnBytes = (delta: number) => void;

export const partialPath = (blob: string) => `${blob}.incomplete`;

/** Bytes already on disk for this target (a verified blob, or a partial from an interrupted download). */
export function bytesOnDisk(blob: string): number {
  for (const p of [blob, partialPath(blob)]) {
    try {
      return fs.statSync(p).size;
    } catch {
      // next
    }
  }
  return 0;
}

export async function downloadBlob(client: HubClient, target: DownloadTarget, onBytes: OnBytes): Promise<void> {
  const { file } = target;
  const partial = partialPath(target.blob);
  const url = `${client.endpoint}/${target.id}/resolve/${target.commit}/${file.path.split('/').map(encodeURIComponent).join('/')}`;
  for (let attempt = 0; ; attempt++) {
    let reason: string;
    try {
      await transfer(client, url, target, partial, onBytes);
      break;
    } catch (error) {
      if (client.signal?.aborted) throw interrupted();
      if (error instanceof DvlError || !(error instanceof RetryableError) || attempt >= client.retries) {
        throw error instanceof RetryableError ? hubError(client, target.id, target.commit, error.cause) : error;
      }
      reason = error.message;
    }
    await backoff(client, attempt, reason);
  }
  verify(target, partial);
  fs.renameSync(partial, target.blob);
}

/**
 * A failure worth another try (connection dropped, 5xx, 429): the next try resumes from the partial file.
 * The message says what happened, for the retry notice ("<endpoint> answered 503").
 */
class RetryableError extends Error {}

/** "(ECONNRESET)" from a network error, when it has a code. */
const codeOf = (error: unknown) => {
  const code = networkErrorCode(error);
  return code ? ` (${code})` : '';
};

async function transfer(client: HubClient, url: string, target: DownloadTarget, partial: string, onBytes: OnBytes): Promise<void> {
  const size = target.file.size;
  let offset = fileSize(partial);
  if (offset > size) {
    discard(partial, onBytes);
    offset = 0;
  }
  if (offset === size && size > 0) return;
  let response: Response;
  try {
    response = await client.fetchOnce(url, { headers: offset > 0 ? { Range: `bytes=${offset}-` } : {} });
  } catch (error) {
    if (client.signal?.aborted) throw interrupted();
    // No DNS answer, connection refused: not worth a retry (see client.ts).
    if (unreachableCode(error) !== undefined) throw hubError(client, target.id, target.commit, error);
    throw new RetryableError(`the request for ${target.file.path} to ${client.endpoint} failed${codeOf(error)}`, { cause: error });
  }
  if (response.status === 416) {
    // The partial file does not fit the remote one: start over.
    await response.body?.cancel();
    discard(partial, onBytes);
    throw new RetryableError(`${client.endpoint} refused to resume ${target.file.path} (416)`);
  }
  if (!response.ok) {
    await response.body?.cancel();
    if (isRetryableStatus(response.status)) throw new RetryableError(`${client.endpoint} answered ${response.status}`, { cause: new Error(`HTTP ${response.status}`) });
    throw hubError(client, target.id, target.commit, await statusError(response));
  }
  if (offset > 0 && !(response.status === 206 && rangeStart(response) === offset)) {
    // The server ignored the Range request: take the whole body from the start.
    discard(partial, onBytes);
    offset = 0;
  }
  const out = fs.openSync(partial, offset > 0 ? 'a' : 'w');
  try {
    if (!response.body) return;
    for await (const chunk of response.body) {
      writeAll(out, chunk);
      onBytes(chunk.length);
    }
  } catch (error) {
    if (client.signal?.aborted) throw interrupted();
    throw new RetryableError(`the connection to ${client.endpoint} was lost during ${target.file.path}${codeOf(error)}`, { cause: error });
  } finally {
    // Every chunk written so far stays: the next try (or the next `dvl pull`) continues from here.
    fs.closeSync(out);
  }
  if (fileSize(partial) < size) {
    throw new RetryableError(`the connection to ${client.endpoint} closed early during ${target.file.path}`, { cause: new Error(`got ${fileSize(partial)} of ${size} bytes`) });
  }
}

/** LFS files: sha256 of the contents = the LFS oid. Others: git's blob hash = the oid. Sizes for both. */
function verify(target: DownloadTarget, partial: string): void {
  const { file } = target;
  const got = fileSize(partial);
  const fail = (what: string) => {
    fs.rmSync(partial, { force: true });
    return modelError(`${target.id}: ${file.path} failed verification (${what}); the damaged download was deleted, run the command again`);
  };
  if (got !== file.size) throw fail(`${got} bytes, expected ${file.size}`);
  const hash = crypto.createHash(file.lfs ? 'sha256' : 'sha1');
  if (!file.lfs) hash.update(`blob ${file.size}\0`);
  hashFile(partial, hash);
  const digest = hash.digest('hex');
  const expected = file.lfs?.oid ?? file.oid;
  if (digest !== expected) throw fail(`${file.lfs ? 'sha256' : 'git sha1'} ${digest}, expected ${expected}`);
}

function hashFile(file: string, hash: crypto.Hash): void {
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(1 << 22);
  try {
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
}

function rangeStart(response: Response): number | undefined {
  const m = /^bytes (\d+)-/.exec(response.headers.get('Content-Range') ?? '');
  return m ? Number(m[1]) : undefined;
}

/** A HubApiError-like error for the mapping in hubError (status only; the body is not needed). */
async function statusError(response: Response): Promise<Error> {
  const { HubApiError } = await import('@huggingface/hub');
  return new HubApiError(response.url, response.status, undefined, `HTTP ${response.status}`);
}

function discard(partial: string, onBytes: OnBytes): void {
  const had = fileSize(partial);
  fs.rmSync(partial, { force: true });
  if (had > 0) onBytes(-had);
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) done += fs.writeSync(fd, bytes, done, bytes.length - done);
}
