/**
 * `pull` of a Hub model into the Hugging Face cache: resolve the revision, list the files, pick those dvl
 * needs, check the disk, download what is missing (config.json first, checked before the weights), link the
 * snapshot. Offline, the same answer comes from the cache alone, with no request at all.
 */
import fs from 'node:fs';
import path from 'node:path';
import { getRepoFolderName } from '@huggingface/hub';
import { familyForConfig } from '../models/index.js';
import { formatBytes as gb, freeBytes } from '../util/disk.js';
import { errorCode, makeDirs, makeWritableDir } from '../util/dirs.js';
import { DvlError, modelError } from '../util/errors.js';
import { blobPath, cachedCommit, type HubRef, linkSnapshotFile, repoDir, snapshotDir, snapshotFiles, writeRef } from './cache.js';
import { createHubClient, type HubClientOptions, listRepoFiles, resolveRevision } from './client.js';
import { bytesOnDisk, downloadBlob } from './download.js';
import { withLock } from '../util/lock.js';
import { etagOf, type RepoFile, selectFiles } from './select-files.js';

export interface DownloadProgress {
  file: string;
  fileDone: number;
  fileSize: number;
  /** Bytes of all the needed files on disk, this file included (partials from earlier runs count). */
  done: number;
  total: number;
}

export interface PullOptions extends HubClientOptions {
  /** The Hugging Face cache root (hubCacheDir()). */
  cacheDir: string;
  /** HF_HUB_OFFLINE / --offline: no request; use the cache. */
  offline?: boolean;
  onProgress?: (p: DownloadProgress) => void;
  /** Another process is pulling the same model: we wait for it. */
  onWait?: (pid: number) => void;
  /** Free bytes on the cache's filesystem (tests replace it). */
  freeBytes?: (dir: string) => number;
}

export interface PulledSnapshot {
  id: string;
  /** What was asked for ('main' when nothing was). */
  revision: string;
  commit: string;
  /** snapshots/<commit>: the checkpoint directory. */
  dir: string;
  files: { name: string; size: number }[];
  /** Bytes transferred by this call (0 when everything was cached). */
  downloadedBytes: number;
}

export async function pullSnapshot(ref: HubRef, options: PullOptions): Promise<PulledSnapshot> {
  const revision = ref.revision ?? 'main';
  const repo = repoDir(options.cacheDir, ref.id);
  if (options.offline) return cachedSnapshot(ref, options.cacheDir);
  // Before any request: a cache that cannot be written would only fail after the download started.
  try {
    makeWritableDir(options.cacheDir);
  } catch (error) {
    throw modelError(`cannot write downloads to ${options.cacheDir} (${errorCode(error)}); set HF_HUB_CACHE to a writable directory`, error);
  }

  const client = createHubClient(options);
  const commit = await resolveRevision(client, ref.id, ref.revision);
  const files = selectFiles(ref.id, await listRepoFiles(client, ref.id, commit));
  const lock = path.join(options.cacheDir, '.locks', getRepoFolderName({ name: ref.id, type: 'model' }), 'dvl-pull.lock');
  let downloadedBytes = 0;
  await withLock(
    lock,
    async () => {
      makeDirs(path.join(repo, 'blobs'));
      const total = files.reduce((s, f) => s + f.size, 0);
      let done = files.reduce((s, f) => s + Math.min(f.size, bytesOnDisk(blobPath(repo, etagOf(f)))), 0);
      checkDiskSpace(options, repo, total - done);
      for (const file of files) {
        const blob = blobPath(repo, etagOf(file));
        if (!fs.existsSync(blob)) {
          let fileDone = bytesOnDisk(blob);
          options.onProgress?.({ file: file.path, fileDone, fileSize: file.size, done, total });
          await downloadBlob(client, { id: ref.id, commit, file, blob }, (delta) => {
            fileDone += delta;
            done += delta;
            if (delta > 0) downloadedBytes += delta;
            options.onProgress?.({ file: file.path, fileDone, fileSize: file.size, done, total });
          });
        }
        linkSnapshotFile(repo, commit, file.path, etagOf(file));
        if (file.path === 'config.json') checkConfig(ref.id, path.join(snapshotDir(repo, commit), 'config.json'));
      }
      writeRef(repo, revision, commit);
    },
    { signal: options.signal, onWait: options.onWait },
  );
  const dir = snapshotDir(repo, commit);
  const wanted = new Set(files.map((f) => f.path));
  return { id: ref.id, revision, commit, dir, files: snapshotFiles(dir).filter((f) => wanted.has(f.name)), downloadedBytes };
}

/** The cached snapshot a revision names, complete enough to convert; one-line errors otherwise. No network. */
export function cachedSnapshot(ref: HubRef, cacheDir: string): PulledSnapshot {
  const revision = ref.revision ?? 'main';
  const repo = repoDir(cacheDir, ref.id);
  const name = ref.revision ? `${ref.id}@${ref.revision}` : ref.id;
  const commit = cachedCommit(repo, revision);
  if (!commit) throw modelError(`${name} is not in the Hugging Face cache (${cacheDir}); run 'dvl pull ${name}' while online`);
  const dir = snapshotDir(repo, commit);
  const missing = missingFiles(dir);
  if (missing.length > 0) throw modelError(`${name} is only partly downloaded (missing ${missing.join(', ')}); run 'dvl pull ${name}' while online`);
  return { id: ref.id, revision, commit, dir, files: snapshotFiles(dir), downloadedBytes: 0 };
}

/** What a snapshot lacks to be converted: config, tokenizer, and every weight file (per the index if sharded). */
export function missingFiles(dir: string): string[] {
  const has = (f: string) => fs.existsSync(path.join(dir, f)); // follows the link: a removed blob counts as missing
  const needed = ['config.json', 'tokenizer.json'];
  if (has('model.safetensors.index.json')) {
    try {
      const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8')) as { weight_map?: Record<string, string> };
      needed.push(...new Set(Object.values(index.weight_map ?? {})));
    } catch {
      needed.push('model.safetensors.index.json (readable)');
    }
  } else {
    needed.push('model.safetensors');
  }
  // The upstream converter's layout: its loader reads both side files when vision_config.json is there.
  if (has('vision_config.json')) needed.push('vision_tower.safetensors', 'projector.safetensors');
  return needed.filter((f) => !has(f));
}

function checkConfig(id: string, file: string): void {
  try {
    const json = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw modelError('config.json: expected a JSON object');
    const config = json as Record<string, unknown>;
    familyForConfig(config, 'config.json').family.precheck(config, 'config.json');
  } catch (error) {
    const why = error instanceof DvlError ? error.message : `config.json is not valid JSON`;
    throw modelError(`${id} is not a DiffusionVL / Qwen2.5-VL checkpoint: ${why}`, error);
  }
}

function checkDiskSpace(options: PullOptions, repo: string, needed: number): void {
  if (needed <= 0) return;
  const free = (options.freeBytes ?? freeBytes)(repo);
  // A margin of 1%: the filesystem's own bookkeeping, and other writers.
  if (free < needed * 1.01) {
    throw modelError(`not enough disk space in ${repo}: the download needs ${gb(needed)}, ${gb(free)} is free; free some space or set HF_HUB_CACHE to another disk`);
  }
}

export { freeBytes, gb };

export type { RepoFile };
