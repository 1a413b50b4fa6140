/**
 * The Python Hugging Face cache layout, shared with `huggingface_hub` so that a model fetched by either is not
 * fetched again:
 *   <cache>/models--<org>--<name>/blobs/<etag>            file contents, named by LFS sha256 or git blob sha1
 *   <cache>/models--<org>--<name>/snapshots/<commit>/<path> relative symlinks to ../../blobs/<etag>
 *   <cache>/models--<org>--<name>/refs/<branch or tag>     the commit the name pointed to
 * @huggingface/hub names the repo folder (getRepoFolderName); the cache root is computed here because the
 * library's getHFHubCachePath reads process.env only (the CLI and the tests pass their own environment).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { getRepoFolderName } from '@huggingface/hub';
import { makeDirs } from '../util/dirs.js';
import { usageError } from '../util/errors.js';

/** HF_HUB_CACHE -> HUGGINGFACE_HUB_CACHE -> $HF_HOME/hub -> $XDG_CACHE_HOME/huggingface/hub -> ~/.cache/huggingface/hub. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const set = (v: string | undefined) => (v && v.length > 0 ? v : undefined);
  const explicit = set(env.HF_HUB_CACHE) ?? set(env.HUGGINGFACE_HUB_CACHE);
  if (explicit) return path.resolve(explicit);
  const home = set(env.HF_HOME) ?? path.join(set(env.XDG_CACHE_HOME) ?? path.join(os.homedir(), '.cache'), 'huggingface');
  return path.resolve(home, 'hub');
}

export const COMMIT_SHA = /^[0-9a-f]{40}$/;

export interface HubRef {
  /** "org/name" */
  id: string;
  /** Branch, tag or commit; undefined = the default branch. */
  revision?: string;
}

const REPO_PART = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** True for "org/name" or "org/name@rev" (a shape no local path is required to have; callers check the disk first). */
export function looksLikeHubRef(arg: string): boolean {
  const [repo, ...rest] = arg.split('@');
  const parts = repo.split('/');
  return parts.length === 2 && parts.every((p) => REPO_PART.test(p) && !p.includes('..')) && rest.length <= 1 && (rest.length === 0 || rest[0].length > 0);
}

/** "org/name[@revision]" -> HubRef; a one-line usage error for anything else. */
export function parseHubRef(arg: string): HubRef {
  if (!looksLikeHubRef(arg)) throw usageError(`'${arg}' is not a Hugging Face model id (expected org/name or org/name@revision)`);
  const at = arg.indexOf('@');
  return at < 0 ? { id: arg } : { id: arg.slice(0, at), revision: arg.slice(at + 1) };
}

export function repoDir(cacheDir: string, id: string): string {
  return path.join(cacheDir, getRepoFolderName({ name: id, type: 'model' }));
}

export const blobPath = (repo: string, etag: string) => path.join(repo, 'blobs', etag);
export const snapshotDir = (repo: string, commit: string) => path.join(repo, 'snapshots', commit);

/** The commit a branch or tag pointed to when last fetched, or the revision itself if it is a cached commit. */
export function cachedCommit(repo: string, revision: string): string | undefined {
  if (COMMIT_SHA.test(revision)) return fs.existsSync(snapshotDir(repo, revision)) ? revision : undefined;
  try {
    const sha = fs.readFileSync(path.join(repo, 'refs', revision), 'utf8').trim();
    return COMMIT_SHA.test(sha) ? sha : undefined;
  } catch {
    return undefined;
  }
}

export function writeRef(repo: string, revision: string, commit: string): void {
  if (revision === commit) return; // Python writes refs for names only
  const file = path.join(repo, 'refs', revision);
  makeDirs(path.dirname(file));
  fs.writeFileSync(`${file}.tmp-${process.pid}`, commit);
  fs.renameSync(`${file}.tmp-${process.pid}`, file);
}

/** snapshots/<commit>/<file> -> ../../blobs/<etag> (relative, as Python writes it, so the cache can be moved). */
export function linkSnapshotFile(repo: string, commit: string, file: string, etag: string): void {
  const link = path.join(snapshotDir(repo, commit), file);
  makeDirs(path.dirname(link));
  const target = path.relative(path.dirname(link), blobPath(repo, etag));
  try {
    if (fs.readlinkSync(link) === target) return;
  } catch {
    // absent, or not a link
  }
  fs.rmSync(link, { force: true });
  fs.symlinkSync(target, link);
}

/** Files of a snapshot (relative paths) whose link resolves to an existing blob. */
export function snapshotFiles(dir: string): { name: string; size: number }[] {
  const out: { name: string; size: number }[] = [];
  const walk = (sub: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(path.join(dir, sub), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const rel = sub ? `${sub}/${e.name}` : e.name;
      if (e.isDirectory()) walk(rel);
      else {
        try {
          out.push({ name: rel, size: fs.statSync(path.join(dir, rel)).size });
        } catch {
          // dangling link: the blob was removed
        }
      }
    }
  };
  walk('');
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
