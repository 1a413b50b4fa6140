/**
 * Where converted models live: `$DVL_HOME/models/<source key>/<dtype>/` (DVL_HOME defaults to ~/.cache/dvl).
 * A variant is written into a temporary sibling directory and renamed into place when complete, so readers
 * never see half a conversion.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ModelSourceRef, WeightDtype } from './manifest.js';

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

/** A fresh temporary directory next to `finalDir` (same filesystem, so the final rename is atomic). */
export function makeStagingDir(finalDir: string): string {
  const parent = path.dirname(finalDir);
  fs.mkdirSync(parent, { recursive: true });
  removeAbandonedStaging(parent);
  return fs.mkdtempSync(path.join(parent, `.staging-${path.basename(finalDir)}-${process.pid}-`));
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

/** Staging directories of processes that no longer run (a crash or a kill -9) are deleted. */
function removeAbandonedStaging(parent: string): void {
  for (const entry of fs.readdirSync(parent)) {
    const m = /^\.staging-.+?-(\d+)-[^-]+$/.exec(entry) ?? /\.old-(\d+)-\d+$/.exec(entry);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid !== process.pid && !processAlive(pid)) fs.rmSync(path.join(parent, entry), { recursive: true, force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
