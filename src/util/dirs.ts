/**
 * Creating directories without `fs.mkdirSync(dir, { recursive: true })`, which can loop forever: under /proc,
 * mkdir of a missing child answers ENOENT although the parent exists, and Node's recursive mkdir then retries
 * without end at 100 % CPU, on the main thread, so SIGTERM is never handled (`DVL_HOME=/proc/nope`). Here every
 * missing level is created by a plain mkdir, so such a path is an ordinary error (ENOENT, ENOTDIR, EACCES...).
 */
import fs from 'node:fs';
import path from 'node:path';

/** `mkdir -p dir`, one level at a time. Directories are created with the default mode (0777 less the umask). */
export function makeDirs(dir: string): void {
  const missing: string[] = [];
  for (let p = path.resolve(dir); ; ) {
    // ENOENT gives undefined; ENOTDIR (a file on the way) and EACCES are thrown as they are.
    const st = fs.statSync(p, { throwIfNoEntry: false });
    if (st) {
      if (!st.isDirectory()) throw Object.assign(new Error(`ENOTDIR: not a directory, '${p}'`), { code: 'ENOTDIR', path: p });
      break;
    }
    missing.push(p);
    const parent = path.dirname(p);
    if (parent === p) break;
    p = parent;
  }
  for (const d of missing.reverse()) {
    try {
      fs.mkdirSync(d);
    } catch (error) {
      // Another process created it meanwhile.
      if ((error as NodeJS.ErrnoException).code === 'EEXIST' && fs.statSync(d).isDirectory()) continue;
      throw error;
    }
  }
}

/** makeDirs, then a check that the directory can be written into; throws the system error (with its code) if not. */
export function makeWritableDir(dir: string): void {
  makeDirs(dir);
  fs.accessSync(dir, fs.constants.W_OK);
}

/** The system error code of a failure (ENOENT, EACCES, EROFS...), else its message. */
export function errorCode(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? (error instanceof Error ? error.message : String(error));
}
