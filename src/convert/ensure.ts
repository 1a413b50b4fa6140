/** Finds a current conversion of a model source, or converts it (on first use, or when stale). */
import fs from 'node:fs';
import path from 'node:path';
import { openCheckpoint, tokenizerFiles } from '../checkpoint/checkpoint.js';
import { modelError } from '../util/errors.js';
import type { ConvertOptions, ConvertProgress } from './convert.js';
import { checkManifest, type Manifest, type ModelSourceRef, type WeightDtype } from './manifest.js';
import { dvlHome, removeAbandonedStaging, variantDir } from './store.js';

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
  /** Called once the checkpoint looked usable and a conversion is about to start, with the reason. */
  onConvertStart?: (reason: string) => void;
  /** Runs the conversion; default convertCheckpoint in this thread (the CLI runs it in a worker instead). */
  convert?: (options: ConvertOptions) => Promise<Manifest>;
}

export async function ensureConverted(source: ModelSourceRef, dtype: WeightDtype, options: EnsureOptions = {}): Promise<EnsureResult> {
  const dir = variantDir(options.home ?? dvlHome(), source, dtype);
  // Leftovers of killed conversions go on every use, not only at the next conversion (they can be GBs).
  removeAbandonedStaging(dir);
  const check = checkManifest(dir);
  if (!options.force && 'manifest' in check) return { dir, manifest: check.manifest, convertedBecause: '' };
  const reason = options.force ? 'conversion forced' : (check as { reason: string }).reason;
  // Cheap checks first (config, safetensors headers, tensor names and shapes, tokenizer files): a directory
  // that is not a usable checkpoint is reported as such, before a conversion is announced or started.
  openCheckpoint(source.dir).validate();
  tokenizerFiles(source.dir);
  createStoreDir(path.dirname(dir));
  options.onConvertStart?.(reason);
  // The converter (graph builders, protobuf) loads only when a conversion runs: using a model stays fast to start.
  const convert = options.convert ?? (await import('./convert.js')).convertCheckpoint;
  const manifest = await convert({ source, dtype, outDir: dir, onProgress: options.onProgress });
  return { dir, manifest, convertedBecause: reason };
}

/** The model's directory in the store; a DVL_HOME that cannot hold it is a one-line error, not a crash. */
function createStoreDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    throw modelError(`cannot write converted models to ${dir} (${code}); set DVL_HOME to a writable directory`, error);
  }
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
