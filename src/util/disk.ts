/** Disk space: how much is free, a full disk recognised in any error, sizes in words. */
import fs from 'node:fs';

/** "4.30 GB", "12.5 MB". */
export const formatBytes = (bytes: number): string => (bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`);

/** Free bytes for this user on the filesystem of `dir` (Infinity when it cannot be told). */
export function freeBytes(dir: string): number {
  try {
    const st = fs.statfsSync(dir);
    return st.bavail * st.bsize;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/**
 * Whether an error is a full disk: Node's ENOSPC (or EDQUOT, a full quota), on the error or anything in its
 * cause chain, or onnxruntime's message for a write that ran out of space.
 */
export function isNoSpace(error: unknown): boolean {
  for (let e = error as { code?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 8; e = e.cause as typeof e, depth++) {
    if (e.code === 'ENOSPC' || e.code === 'EDQUOT') return true;
    if (typeof e.message === 'string' && /ENOSPC|No space left on device|Disk quota exceeded/i.test(e.message)) return true;
  }
  return false;
}

/** The file a Node file-system error names, if any. */
export function errorPath(error: unknown): string | undefined {
  for (let e = error as { path?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 8; e = e.cause as typeof e, depth++) {
    if (typeof e.path === 'string') return e.path;
  }
  return undefined;
}

/**
 * Whether an error is a write the filesystem refused (a read-only store, another user's files): Node's EACCES,
 * EROFS or EPERM anywhere in the cause chain, or onnxruntime's message for such a write.
 */
export function isWriteRefused(error: unknown): boolean {
  for (let e = error as { code?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 8; e = e.cause as typeof e, depth++) {
    if (e.code === 'EACCES' || e.code === 'EROFS' || e.code === 'EPERM') return true;
    if (typeof e.message === 'string' && /EACCES|EROFS|Permission denied|Read-only file system/i.test(e.message)) return true;
  }
  return false;
}
