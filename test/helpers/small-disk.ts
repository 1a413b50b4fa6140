/**
 * A real small filesystem for disk-full tests: a tmpfs of a given size, mounted on a fresh directory. Needs the
 * right to mount (root, as this project's CI and development machines run); `canMountTmpfs` tells, so that the
 * tests skip elsewhere rather than fail.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface SmallDisk {
  dir: string;
  /** Fills the disk until `leaveBytes` (or fewer) are free, with one file; returns its path. */
  fill(leaveBytes: number): string;
  freeBytes(): number;
  unmount(): void;
}

export function mountTmpfs(bytes: number): SmallDisk | null {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-small-disk-'));
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir], { encoding: 'utf8' });
  if (mounted.status !== 0) {
    fs.rmSync(dir, { recursive: true, force: true });
    return null;
  }
  const freeBytes = () => {
    const st = fs.statfsSync(dir);
    return st.bavail * st.bsize;
  };
  return {
    dir,
    freeBytes,
    fill(leaveBytes) {
      const file = path.join(dir, `filler-${Date.now()}`);
      const size = Math.max(0, freeBytes() - leaveBytes);
      const fd = fs.openSync(file, 'w');
      try {
        const chunk = Buffer.alloc(1 << 20);
        for (let written = 0; written < size; ) written += fs.writeSync(fd, chunk, 0, Math.min(chunk.length, size - written));
      } finally {
        fs.closeSync(fd);
      }
      return file;
    },
    unmount() {
      spawnSync('umount', [dir]);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Whether this process may mount a tmpfs (tried once). */
export const canMountTmpfs = (() => {
  const disk = mountTmpfs(1 << 20);
  disk?.unmount();
  return disk !== null;
})();
