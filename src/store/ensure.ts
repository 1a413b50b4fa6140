/** Finds a current conversion of a model source, or converts it (on first use, or when stale). */
import fs from 'node:fs';
import path from 'node:path';
import { openCheckpoint, tokenizerFiles } from '../checkpoint/checkpoint.js';
import { withLock } from '../util/lock.js';
import { modelError } from '../util/errors.js';
import type { ConvertOptions, ConvertProgress } from '../convert/convert.js';
import { checkManifest, confirmTouched, type Manifest, type ModelSourceRef } from './manifest.js';
import { type WeightDtype } from '../convert/weight-dtype.js';
import { conversionLockFile, dvlHome, prepareStoreDir, removeAbandonedStaging, variantDir } from './layout.js';

export interface EnsureResult {
  dir: string;
  manifest: Manifest;
  /** Why a conversion ran ('' when an existing one was used). */
  convertedBecause: string;
}

export interface EnsureOptions {
  /** The store root (default: dvlHome()). */
  home?: string;
  /** Convert even when a current conversion exists. */
  force?: boolean;
  onProgress?: ConvertProgress;
  /** What a reader should know about how config.json was read (config notes), told before a conversion starts. */
  onWarning?: (message: string) => void;
  /** Called once the checkpoint looked usable and a conversion is about to start, with the reason. */
  onConvertStart?: (reason: string) => void;
  /** Source files are hashed to see whether a conversion is still current (their mtime changed, not their size). */
  onVerify?: (files: string[]) => void;
  /** Another process converts this model: this one waits for it (told once, with its pid). */
  onWait?: (pid: number) => void;
  /** Stops waiting for another process (Ctrl-C). */
  signal?: AbortSignal;
  /** Runs the conversion; default convertCheckpoint in this thread (the CLI runs it in a worker instead). */
  convert?: (options: ConvertOptions) => Promise<Manifest>;
}

export async function ensureConverted(source: ModelSourceRef, dtype: WeightDtype, options: EnsureOptions = {}): Promise<EnsureResult> {
  const home = options.home ?? dvlHome();
  const dir = variantDir(home, source, dtype);
  // Leftovers of killed conversions go on every use, not only at the next conversion (they can be GBs).
  removeAbandonedStaging(dir);
  let reason = 'conversion forced';
  if (!options.force) {
    const current = await currentConversion(dir, options);
    if ('manifest' in current) return { dir, manifest: current.manifest, convertedBecause: '' };
    reason = current.reason;
  }
  // Cheap checks first (config, safetensors headers, tensor names and shapes, tokenizer files): a directory
  // that is not a usable checkpoint is reported as such, before a conversion is announced or started.
  const checkpoint = openCheckpoint(source.dir);
  checkpoint.validate();
  tokenizerFiles(source.dir);
  // A model whose tokenizer cannot load is never stored: the user's files are named now, before any work.
  const { checkTokenizer } = await import('../prompt/tokenizer.js');
  checkTokenizer(source.dir);
  for (const note of checkpoint.config.notes ?? []) options.onWarning?.(note);
  prepareStoreDir(path.dirname(dir));
  // One conversion of a model at a time: a second `dvl pull` / `ask` waits, then uses the first one's work.
  return withLock(
    conversionLockFile(home, source),
    async () => {
      if (!options.force) {
        const current = await currentConversion(dir, options);
        if ('manifest' in current) return { dir, manifest: current.manifest, convertedBecause: '' };
      }
      options.onConvertStart?.(reason);
      // The converter (graph builders, protobuf) loads only when a conversion runs: using a model stays fast to start.
      const convert = options.convert ?? (await import('../convert/convert.js')).convertCheckpoint;
      const manifest = await convert({ source, dtype, outDir: dir, onProgress: options.onProgress });
      return { dir, manifest, convertedBecause: reason };
    },
    { signal: options.signal, onWait: options.onWait },
  );
}

/**
 * The variant's manifest if the conversion is current. Source files whose mtime changed (size unchanged) are
 * hashed: an unchanged sha256 keeps the conversion (no 3-minute conversion for a `touch config.json`).
 */
async function currentConversion(dir: string, options: EnsureOptions): Promise<{ manifest: Manifest } | { reason: string }> {
  const check = checkManifest(dir);
  if (!('manifest' in check) || check.touched.length === 0) return check;
  options.onVerify?.(check.touched.map((f) => f.name));
  const total = check.touched.reduce((sum, f) => sum + f.size, 0);
  let done = 0;
  return confirmTouched(dir, check.manifest, check.touched, (bytes) => {
    done += bytes;
    options.onProgress?.('hash', done, total);
  });
}

/** A `--model` value that names a local checkpoint directory. */
export function localSource(dirArg: string): ModelSourceRef {
  const dir = path.resolve(dirArg);
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw modelError(`model '${dirArg}' is neither a checkpoint directory nor a downloaded model`);
  }
  if (!st.isDirectory()) throw modelError(`model '${dirArg}' is a file, not a checkpoint directory`);
  return { kind: 'local', id: dir, revision: 'local', dir };
}
