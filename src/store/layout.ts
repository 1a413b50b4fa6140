/**
 * Where converted models live: `$DVL_HOME/models/<source key>/<dtype>/` (DVL_HOME defaults to ~/.cache/dvl).
 * A variant is written into a temporary sibling directory and renamed into place when complete, so readers
 * never see half a conversion.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { errorCode, makeDirs, makeWritableDir } from '../util/dirs.js';
import { modelError } from '../util/errors.js';
import type { ModelSourceRef } from './manifest.js';
import type { WeightDtype } from '../convert/weight-dtype.js';

export function dvlHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.DVL_HOME && env.DVL_HOME.length > 0 ? path.resolve(env.DVL_HOME) : path.join(os.homedir(), '.cache', 'dvl');
}

/** A short, filesystem-safe key for a model source and revision. */
export function sourceKey(source: ModelSourceRef): string {
  if (source.kind === 'hub') return path.join('hub', source.id.replace('/', '--'), source.revision);
  const real = fs.realpathSync(source.dir);
  const digest = crypto.createHash('sha256').update(real).digest('hex').slice(0, 12);
  const base = path.basename(real).replace(/[^A-Za-z0-9._-]/g, '_') || 'model';
  return path.join('local', `${base}-${digest}`);
}

export function variantDir(home: string, source: ModelSourceRef, dtype: WeightDtype): string {
  return path.join(home, 'models', sourceKey(source), dtype);
}

/**
 * Creates a directory of the store, or checks it can be written: called before any work that writes there, so
 * a DVL_HOME that cannot hold converted models is a one-line error up front (also for paths like /proc/nope,
 * on which a recursive mkdir never returns: see util/dirs.ts).
 */
export function prepareStoreDir(dir: string): void {
  try {
    makeWritableDir(dir);
  } catch (error) {
    throw modelError(`cannot write converted models to ${dir} (${errorCode(error)}); set DVL_HOME to a writable directory`, error);
  }
}

/** The lock file that serialises conversions of one model source (see util/lock.ts). */
export function conversionLockFile(home: string, source: ModelSourceRef): string {
  return path.join(home, 'locks', `${sourceKey(source).split(path.sep).join('--')}.lock`);
}

/**
 * A fresh temporary directory next to `finalDir` (same filesystem, so the final rename is atomic).
 * Made with mkdir, not mkdtemp: mkdtemp makes it 0700, the published variant would keep that mode, and a store
 * shared between users would be unreadable to the others. mkdir follows the umask, as the files inside do.
 */
export function makeStagingDir(finalDir: string): string {
  const parent = path.dirname(finalDir);
  makeDirs(parent);
  removeAbandonedStaging(finalDir);
  for (;;) {
    const dir = path.join(parent, `.staging-${path.basename(finalDir)}-${process.pid}-${crypto.randomBytes(6).toString('hex')}`);
    try {
      fs.mkdirSync(dir);
      return dir;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
}

/** Moves a finished staging directory into place, replacing an older variant. */
export function publishStagingDir(stagingDir: string, finalDir: string): void {
  if (fs.existsSync(finalDir)) {
    const retired = `${finalDir}.old-${process.pid}-${Date.now()}`;
    fs.renameSync(finalDir, retired);
    fs.renameSync(stagingDir, finalDir);
    fs.rmSync(retired, { recursive: true, force: true });
  } else {
    fs.renameSync(stagingDir, finalDir);
  }
}

/**
 * Deletes the staging (and retired) directories that process `pid` left next to `finalDir`: used when a
 * conversion of this process is cancelled, since the conversion itself may have been stopped mid-write.
 */
export function removeStagingOf(finalDir: string, pid: number = process.pid): void {
  const parent = path.dirname(finalDir);
  for (const entry of readdirOrEmpty(parent)) {
    const owner = leftoverOf(entry);
    if (owner?.pid === pid && owner.variant === path.basename(finalDir)) fs.rmSync(path.join(parent, entry), { recursive: true, force: true });
  }
}

/**
 * Deletes the staging and retired directories next to `finalDir` whose process no longer runs (a crash, a
 * kill -9, a second Ctrl-C). Those of live processes are conversions in progress and stay.
 */
export function removeAbandonedStaging(finalDir: string): void {
  const parent = path.dirname(finalDir);
  for (const entry of readdirOrEmpty(parent)) {
    const pid = leftoverOf(entry)?.pid;
    if (pid !== undefined && pid !== process.pid && !processAlive(pid)) removeBestEffort(path.join(parent, entry));
  }
}

/** Cleanup must never fail a command: a store shared read-only keeps its leftovers. */
function removeBestEffort(dir: string): void {
  try {
    fs.rmSync(dir, { recursive: true, force: true });
  } catch {
    // left for a later run with write access
  }
}

/** Variant and pid of a staging (`.staging-<variant>-<pid>-<random>`) or retired (`<variant>.old-<pid>-<ms>`) directory. */
function leftoverOf(entry: string): { variant: string; pid: number } | undefined {
  const m = /^\.staging-(.+)-(\d+)-[^-]+$/.exec(entry) ?? /^(.+)\.old-(\d+)-\d+$/.exec(entry);
  return m ? { variant: m[1], pid: Number(m[2]) } : undefined;
}

/** The entries of `dir`, or none when it cannot be read. */
export function readdirOrEmpty(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Whether process `pid` runs (EPERM: it does, as another user's). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * What interrupted work left in the store: staging and retired directories of processes that no longer run,
 * beside the variants, and a decoder packing's staging files inside a variant (a kill -9, a crash). Each is removed by the next use
 * of its model, or by `dvl rm`; `dvl list` shows them so the space is not a mystery.
 */
export function listLeftovers(home: string): { dir: string; bytes: number }[] {
  const out: { dir: string; bytes: number }[] = [];
  const visit = (parent: string, depth: number) => {
    for (const entry of readdirOrEmpty(parent)) {
      const full = path.join(parent, entry);
      const stagingPid = /^\.staging-(?:.+-)?(\d+)-[^-]+$/.exec(entry)?.[1] ?? /\.old-(\d+)-\d+$/.exec(entry)?.[1] ?? /^\.packing-(\d+)-\d+\./.exec(entry)?.[1];
      if (stagingPid !== undefined) {
        const st = fs.statSync(full, { throwIfNoEntry: false });
        if (st && !processAlive(Number(stagingPid))) out.push({ dir: full, bytes: st.isDirectory() ? treeBytes(full) : st.size });
      } else if (depth > 0 && fs.statSync(full, { throwIfNoEntry: false })?.isDirectory()) {
        visit(full, depth - 1);
      }
    }
  };
  // models/{hub,local}/<model>[/<revision>]/<dtype>
  visit(path.join(home, 'models'), 4);
  return out;
}

/** Bytes of the files under `dir` (links not followed). */
export function treeBytes(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += fs.statSync(path.join(e.parentPath, e.name), { throwIfNoEntry: false })?.size ?? 0;
  }
  return total;
}

/** One converted variant found in the store. */
export interface StoredVariant {
  /** models/<kind>/<model key>[/<revision>]/<dtype> */
  dir: string;
  /** The directory holding the model's variants (all revisions for a Hub model). */
  modelDir: string;
  manifest: import('./manifest.js').Manifest;
  bytes: number;
}

/** Every complete variant under `$DVL_HOME/models` (partial and stale ones are skipped). */
export async function listVariants(home: string): Promise<StoredVariant[]> {
  const { checkManifest } = await import('./manifest.js');
  const out: StoredVariant[] = [];
  const root = path.join(home, 'models');
  const dirs = (p: string) => readdirOrEmpty(p).filter((e) => !e.startsWith('.') && fs.statSync(path.join(p, e), { throwIfNoEntry: false })?.isDirectory());
  const consider = (dir: string, modelDir: string) => {
    const check = checkManifest(dir, { checkSource: false });
    if ('manifest' in check) out.push({ dir, modelDir, manifest: check.manifest, bytes: check.manifest.files.reduce((s, f) => s + f.size, 0) });
  };
  for (const model of dirs(path.join(root, 'hub'))) {
    const modelDir = path.join(root, 'hub', model);
    for (const rev of dirs(modelDir)) for (const dtype of dirs(path.join(modelDir, rev))) consider(path.join(modelDir, rev, dtype), modelDir);
  }
  for (const model of dirs(path.join(root, 'local'))) {
    const modelDir = path.join(root, 'local', model);
    for (const dtype of dirs(modelDir)) consider(path.join(modelDir, dtype), modelDir);
  }
  return out;
}
