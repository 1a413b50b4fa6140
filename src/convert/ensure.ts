/** Finds a current conversion of a model source, or converts it (on first use, or when stale). */
import fs from 'node:fs';
import path from 'node:path';
import { modelError } from '../util/errors.js';
import { type ConvertProgress, convertCheckpoint } from './convert.js';
import { checkManifest, type Manifest, type ModelSourceRef, type WeightDtype } from './manifest.js';
import { dvlHome, variantDir } from './store.js';

export interface EnsureResult {
  dir: string;
  manifest: Manifest;
  /** Why a conversion ran ('' when an existing one was used). */
  convertedBecause: string;
}

export async function ensureConverted(
  source: ModelSourceRef,
  dtype: WeightDtype,
  options: { home?: string; force?: boolean; onProgress?: ConvertProgress; onConvertStart?: (reason: string) => void } = {},
): Promise<EnsureResult> {
  const dir = variantDir(options.home ?? dvlHome(), source, dtype);
  const check = checkManifest(dir);
  if (!options.force && 'manifest' in check) return { dir, manifest: check.manifest, convertedBecause: '' };
  const reason = options.force ? 'conversion forced' : (check as { reason: string }).reason;
  options.onConvertStart?.(reason);
  const manifest = await convertCheckpoint({ source, dtype, outDir: dir, onProgress: options.onProgress });
  return { dir, manifest, convertedBecause: reason };
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
