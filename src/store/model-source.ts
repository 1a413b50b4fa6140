/**
 * One place that turns a `--model` / `pull` argument into a ready converted model directory:
 * - an existing directory: a local checkpoint, converted on first use;
 * - "org/name[@revision]": a Hugging Face Hub model, downloaded into the Hugging Face cache when needed, then
 *   converted. Once pulled, `ask` uses the recorded commit without any request (refresh: false); `pull`
 *   (refresh: true) asks the Hub for the newest commit of the revision. Offline (HF_HUB_OFFLINE=1 or
 *   --offline) nothing goes to the network.
 * A lock per model makes a second `dvl pull` / `ask` of the same model wait and then reuse the first's work
 * (per Hub model around download and conversion; per source in ensureConverted around any conversion).
 */
import fs from 'node:fs';
import path from 'node:path';
import { type EnsureResult, ensureConverted, localSource } from './ensure.js';
import { checkManifest, type ModelSourceRef } from './manifest.js';
import type { DtypeChoice, WeightDtype } from '../convert/weight-dtype.js';
import { resolveDtype } from '../convert/default-dtype.js';
import { openCheckpoint } from '../checkpoint/checkpoint.js';
import { dvlHome, listVariants, prepareStoreDir, variantDir } from './layout.js';
import { hubCacheDir, type HubRef, looksLikeHubRef, parseHubRef } from '../hub/cache.js';
import { withLock } from '../util/lock.js';
import { readPullRecords, writePullRecord } from './pull-record.js';
import { cachedSnapshot, freeBytes, gb, missingFiles, type PulledSnapshot, pullSnapshot } from '../hub/pull.js';
import { modelError } from '../util/errors.js';
import { convertInWorker } from './convert-in-worker.js';
import { downloadReporter, retryReporter } from './download-progress.js';
import type { Progress } from './progress.js';

export interface ModelSourceOptions {
  /** A dtype, or 'auto': the model's default (convert/default-dtype.ts), known once its config.json is. */
  dtype: DtypeChoice;
  signal: AbortSignal;
  progress: Progress;
  quiet?: boolean;
  env?: NodeJS.ProcessEnv;
  /** --token (else HF_TOKEN). */
  token?: string;
  /** --offline (else HF_HUB_OFFLINE). */
  offline?: boolean;
  /** Ask the Hub for the newest commit even when the model was pulled before (`dvl pull`). */
  refresh?: boolean;
  /** Convert again even when a current conversion exists. */
  force?: boolean;
}

export interface ReadyModel extends EnsureResult {
  source: ModelSourceRef;
  /** Why this dtype: 'asked for', or the default's rule. */
  dtypeWhy: string;
  /** Set for Hub models that were (or already had been) downloaded by this call. */
  pulled?: PulledSnapshot;
}

const TRUE = new Set(['1', 'true', 'yes', 'on']);

export function isOffline(env: NodeJS.ProcessEnv, flag?: boolean): boolean {
  return Boolean(flag) || TRUE.has((env.HF_HUB_OFFLINE ?? '').toLowerCase());
}

export async function prepareModel(model: string, options: ModelSourceOptions): Promise<ReadyModel> {
  const env = options.env ?? process.env;
  if (fs.existsSync(model) || !looksLikeHubRef(model)) return convert(await localModel(model, env), model, options);
  const ref = parseHubRef(model);
  const home = dvlHome(env);
  const offline = isOffline(env, options.offline);

  // Pulled before: the recorded commit, with no request, unless `pull` asks for the newest one.
  const recorded = readPullRecords(home, ref.id)[ref.revision ?? 'main'];
  if (recorded && (!options.refresh || offline)) {
    const source: ModelSourceRef = { kind: 'hub', id: ref.id, revision: recorded.commit, dir: recorded.dir };
    const dtype = dtypeOf(source, options.dtype);
    if (!options.force && dtype && 'manifest' in checkManifest(variantDir(home, source, dtype))) return convert(source, model, options);
    if (missingFiles(recorded.dir).length === 0) return convert(source, model, options);
  }
  if (offline) {
    // Downloaded by Python or by an earlier dvl: the cache's refs say which commit.
    const snap = cachedSnapshot(ref, hubCacheDir(env));
    return { ...(await convert(hubSource(snap), model, options)), pulled: snap };
  }
  // The lock, the pull record and the conversion go there: a store that cannot hold them fails before any download.
  prepareStoreDir(home);
  return withLock(path.join(home, 'locks', `hub--${ref.id.replace('/', '--')}.lock`), () => pullAndConvert(ref, model, options, home, env), {
    signal: options.signal,
    onWait: (pid) => options.progress.step(`waiting for another dvl (pid ${pid}) working on ${ref.id}`),
  });
}

async function pullAndConvert(ref: HubRef, model: string, options: ModelSourceOptions, home: string, env: NodeJS.ProcessEnv): Promise<ReadyModel> {
  const token = options.token ?? (env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN || undefined);
  const isTTY = Boolean(process.stderr.isTTY && process.stderr.columns > 0 && !env.CI);
  const snap = await pullSnapshot(ref, {
    cacheDir: hubCacheDir(env),
    endpoint: env.HF_ENDPOINT,
    token,
    signal: options.signal,
    retries: env.DVL_HUB_RETRIES !== undefined ? Number(env.DVL_HUB_RETRIES) : undefined,
    retryBaseMs: env.DVL_HUB_RETRY_MS !== undefined ? Number(env.DVL_HUB_RETRY_MS) : undefined,
    onProgress: downloadReporter(options.progress, { quiet: options.quiet, isTTY }),
    onRetry: retryReporter(options.progress, { quiet: options.quiet, isTTY }),
    onWait: (pid) => options.progress.step(`waiting for another dvl (pid ${pid}) downloading ${ref.id}`),
  });
  options.progress.stop();
  writePullRecord(home, ref.id, snap.revision, { commit: snap.commit, dir: snap.dir, pulledAt: new Date().toISOString() });
  return { ...(await convert(hubSource(snap), model, options)), pulled: snap };
}

/** A local checkpoint directory; one that is gone but still has a conversion in the store says how to remove it. */
async function localModel(model: string, env: NodeJS.ProcessEnv): Promise<ModelSourceRef> {
  if (!fs.existsSync(model)) {
    const dir = path.resolve(model);
    const orphaned = (await listVariants(dvlHome(env))).some((v) => v.manifest.source.kind === 'local' && v.manifest.source.dir === dir);
    if (orphaned) throw modelError(`checkpoint directory ${dir} is gone; its conversion is still in the store: remove it with 'dvl rm ${dir}'`);
  }
  return localSource(model);
}

const hubSource = (snap: PulledSnapshot): ModelSourceRef => ({ kind: 'hub', id: snap.id, revision: snap.commit, dir: snap.dir });

/** The dtype a choice means for a source ('auto': from its config.json; undefined while that cannot be read). */
function dtypeOf(source: ModelSourceRef, choice: DtypeChoice): WeightDtype | undefined {
  if (choice !== 'auto') return choice;
  try {
    return resolveDtype(choice, openCheckpoint(source.dir).config).dtype;
  } catch {
    return undefined;
  }
}

async function convert(source: ModelSourceRef, model: string, options: ModelSourceOptions): Promise<ReadyModel> {
  const { progress, signal } = options;
  // 'auto' needs the config: reading it (and the safetensors headers) is what the conversion check starts with.
  const chosen = options.dtype === 'auto' ? resolveDtype('auto', openCheckpoint(source.dir).config) : { dtype: options.dtype, why: 'asked for' };
  const dtype = chosen.dtype;
  const result = await ensureConverted(source, dtype, {
    force: options.force,
    home: dvlHome(options.env ?? process.env),
    signal,
    onProgress: (stage, done, total) => progress.convert(stage, done, total),
    onVerify: (files) => progress.step(`checking ${files.join(', ')} (modified since ${model} was converted)`),
    onWait: (pid) => progress.step(`waiting for another dvl (pid ${pid}) converting ${model}`),
    // Not progress: shown even with --quiet.
    onWarning: (message) => progress.warn(message),
    onConvertStart: (reason) => {
      checkConversionSpace(source, dtype, options.env ?? process.env);
      progress.step(`converting ${model} to ${dtype} (${reason})`);
    },
    convert: (convertOptions) => convertInWorker(convertOptions, signal),
  });
  return { ...result, source, dtypeWhy: chosen.why };
}

/**
 * Converted size relative to the bf16 safetensors: fp32 doubles it, int4 is about a third (weights at 4 bits,
 * their scales, the embedding table). An estimate with a margin, checked so a conversion does not die halfway.
 */
const CONVERTED_PER_SOURCE_BYTE: Record<WeightDtype, number> = { fp32: 2.1, fp16: 1.1, int8: 0.65, int4: 0.45, 'int4-all': 0.4 };

function checkConversionSpace(source: ModelSourceRef, dtype: WeightDtype, env: NodeJS.ProcessEnv): void {
  let weights = 0;
  for (const name of fs.readdirSync(source.dir)) if (name.endsWith('.safetensors')) weights += fs.statSync(path.join(source.dir, name)).size;
  const needed = weights * CONVERTED_PER_SOURCE_BYTE[dtype];
  // The model's directory in the store exists by now (ensureConverted made it before calling onConvertStart).
  const home = dvlHome(env);
  const free = freeBytes(home);
  if (free < needed) throw modelError(`not enough disk space in ${home} to convert to ${dtype}: about ${gb(needed)} needed, ${gb(free)} free; free some space, pick a smaller --dtype, or set DVL_HOME to another disk`);
}
