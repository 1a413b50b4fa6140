/**
 * A lock file per model, so that two `dvl pull` (or `ask`) of the same model at once neither write the same
 * partial file nor download or convert it twice: the second waits, then finds the work done. Used for Hub
 * downloads (in the Hugging Face cache) and for conversions of any source (in $DVL_HOME/locks).
 * The file holds the owner's pid; a lock whose process is gone (killed, crashed) is taken over.
 */
import fs from 'node:fs';
import path from 'node:path';
import { makeDirs } from './dirs.js';
import { DvlError } from './errors.js';

export interface LockOptions {
  signal?: AbortSignal;
  /** Called once if the lock is held by another process, with its pid. */
  onWait?: (pid: number) => void;
  pollMs?: number;
}

export async function withLock<T>(file: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  makeDirs(path.dirname(file));
  let told = false;
  for (;;) {
    if (options.signal?.aborted) throw new DvlError('interrupted', 'interrupted while waiting for another dvl');
    const state = claim(file);
    if (state === 'taken') break;
    if (!told && state.owner !== undefined) {
      told = true;
      options.onWait?.(state.owner);
    }
    await new Promise((r) => setTimeout(r, options.pollMs ?? 200));
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/**
 * The lock if it is free (or left by a dead process), without waiting: its release function, or null while a
 * live process holds it (optional work, such as packing weights, that another process is doing already).
 */
export function tryLock(file: string): (() => void) | null {
  makeDirs(path.dirname(file));
  return claim(file) === 'taken' ? () => fs.rmSync(file, { force: true }) : null;
}

/**
 * One attempt at the lock: 'taken' (this process's pid written into it), or the live owner that holds it (its pid
 * undefined while it has created the file but not yet written its pid). A lock left by a dead process is removed
 * and tried again.
 */
function claim(file: string): 'taken' | { owner: number | undefined } {
  for (;;) {
    const fd = tryCreate(file);
    if (fd !== undefined) {
      try {
        fs.writeSync(fd, `${process.pid}\n`);
      } finally {
        fs.closeSync(fd);
      }
      return 'taken';
    }
    const owner = ownerOf(file);
    // No pid after a few seconds: the owner died between creating the file and writing its pid.
    const dead = owner !== undefined ? !alive(owner) : ageMs(file) > 5000;
    if (!dead) return { owner };
    fs.rmSync(file, { force: true }); // left by a dead process
  }
}

function tryCreate(file: string): number | undefined {
  try {
    return fs.openSync(file, 'wx');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
    throw error;
  }
}

/** The pid in the lock file; undefined while the owner has created but not yet written it. */
function ownerOf(file: string): number | undefined {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function ageMs(file: string): number {
  try {
    return Date.now() - fs.statSync(file).mtimeMs;
  } catch {
    return 0;
  }
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
