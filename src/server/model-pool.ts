/**
 * The models a server answers with: which ids exist, which are loaded, and when they go.
 *
 * A model is loaded (in its own inference worker) by the first request that names it, and stays loaded until
 * its keep-alive runs out after the last request (default 5 minutes; a request may set its own, Ollama's
 * `keep_alive`: 0 unloads after the request, a negative value keeps it). At most `maxLoaded` models are held;
 * loading one more unloads the least recently used idle one first.
 *
 * A local checkpoint has one id, its absolute path (as the store names it): a request may spell it as the
 * server's --model was given (./ckpt) or any other way that resolves to it; it is listed and loaded once.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { DtypeChoice, WeightDtype } from '../convert/weight-dtype.js';
import { resolveDtype } from '../convert/default-dtype.js';
import { dvlHome, listVariants } from '../store/layout.js';
import type { Progress } from '../store/progress.js';
import { prepareModel } from '../store/model-source.js';
import { looksLikeHubRef } from '../hub/cache.js';
import { contextLength, parameterCount } from '../models/index.js';
import { InferenceWorker } from '../runtime/worker-client.js';
import { DvlError } from '../util/errors.js';
import { ServerError } from './errors.js';

export interface PoolOptions {
  /** The model served from the start (`--model`), as given. */
  model?: string;
  /** A dtype, or 'auto': each model's default (convert/default-dtype.ts). */
  dtype: DtypeChoice;
  /** Milliseconds a model stays loaded after its last request; < 0: forever. */
  keepAliveMs: number;
  maxLoaded: number;
  /** Hub models may be downloaded on first use (`--allow-pull`); otherwise only pulled ones are served. */
  allowPull: boolean;
  threads?: number;
  token?: string;
  imageCacheBytes: number;
  env: NodeJS.ProcessEnv;
  /** A line for the server's log (loading, unloading). */
  log(line: string): void;
}

export interface LoadedEntry {
  id: string;
  worker: InferenceWorker;
  dir: string;
  dtype: WeightDtype;
  bytes: number;
  loadedAt: Date;
  /** When it will be unloaded (null: never, or while a request holds it). */
  expiresAt: Date | null;
  /** Milliseconds the load took. */
  loadMs: number;
}

interface Slot {
  id: string;
  loading: Promise<LoadedEntry>;
  entry: LoadedEntry | null;
  users: number;
  lastUsed: number;
  keepAliveMs: number;
  timer: NodeJS.Timeout | null;
}

/** What /v1/models and /api/tags list. */
export interface ListedModel {
  id: string;
  /** 'auto' only for the served model before its first load (its config not read yet). */
  dtype: DtypeChoice;
  bytes: number;
  modifiedAt: Date;
  family: string;
  /** Parameters of the decoder and the tower, from the config's shapes (null: not known before the first load). */
  parameters: number | null;
  /** Prompt plus answer tokens the model takes (null: not known before the first load). */
  contextLength: number | null;
  /** A stored conversion at the server's dtype exists (false: the served --model before its first load). */
  converted: boolean;
}

export class ModelPool {
  private readonly slots = new Map<string, Slot>();
  private closed = false;

  constructor(private readonly options: PoolOptions) {}

  /** The served model and every model in the store at the server's dtype (Hub ids and local directories). */
  async list(): Promise<ListedModel[]> {
    const variants = await listVariants(dvlHome(this.options.env));
    const out = new Map<string, ListedModel>();
    for (const v of variants) {
      if (v.manifest.dtype !== resolveDtype(this.options.dtype, v.manifest.config).dtype) continue;
      const id = v.manifest.source.kind === 'hub' ? v.manifest.source.id : v.manifest.source.dir;
      const modifiedAt = new Date(v.manifest.createdAt);
      const known = out.get(id);
      if (!known || known.modifiedAt < modifiedAt) {
        const { config } = v.manifest;
        out.set(id, { id, dtype: v.manifest.dtype, bytes: v.bytes, modifiedAt, family: config.modelType, parameters: parameterCount(config), contextLength: contextLength(config), converted: true });
      }
    }
    const served = this.options.model === undefined ? undefined : this.canonicalId(this.options.model);
    if (served !== undefined && !out.has(served)) {
      const loaded = this.slots.get(served)?.entry;
      const config = loaded?.worker.manifest.config;
      out.set(served, {
        id: served,
        dtype: loaded?.dtype ?? this.options.dtype,
        bytes: loaded?.bytes ?? 0,
        modifiedAt: loaded?.loadedAt ?? new Date(0),
        family: config?.modelType ?? 'diffusionvl',
        parameters: config ? parameterCount(config) : null,
        contextLength: config ? contextLength(config) : null,
        converted: loaded !== undefined,
      });
    }
    return [...out.values()];
  }

  /**
   * The id a model is listed and held under: a local checkpoint (what prepareModel takes for one: an existing
   * path, or anything that is not a Hub id) by its absolute path, a Hub id as it is.
   */
  canonicalId(id: string): string {
    return fs.existsSync(id) || !looksLikeHubRef(id) ? path.resolve(id) : id;
  }

  /** The model's canonical id; 404 unless it is one that list() gives. */
  async check(id: string): Promise<string> {
    const canonical = this.canonicalId(id);
    if (this.slots.has(canonical) || (this.options.model !== undefined && canonical === this.canonicalId(this.options.model))) return canonical;
    if ((await this.list()).some((m) => m.id === canonical)) return canonical;
    throw new ServerError(404, 'model_not_found', `model '${id}' not found`, { listsModels: true });
  }

  /** The loaded models (for /api/ps). */
  loaded(): LoadedEntry[] {
    return [...this.slots.values()].flatMap((s) => (s.entry ? [s.entry] : []));
  }

  /** Whether a model is being loaded right now (/health says 503 meanwhile). */
  get loading(): boolean {
    return [...this.slots.values()].some((s) => !s.entry);
  }

  /**
   * The model, loaded, held until `release` is called: keep-alive counts from then. `keepAliveMs`
   * overrides the server's for this model from now on (Ollama's keep_alive).
   */
  async acquire(model: string, keepAliveMs?: number): Promise<LoadedEntry> {
    if (this.closed) throw new ServerError(503, 'shutting_down', 'the server is shutting down');
    const id = this.canonicalId(model);
    let slot = this.slots.get(id);
    if (!slot) {
      await this.check(id);
      await this.makeRoom();
      slot = this.slots.get(id);
    }
    if (!slot) {
      const created: Slot = { id, loading: this.load(id), entry: null, users: 0, lastUsed: Date.now(), keepAliveMs: this.options.keepAliveMs, timer: null };
      this.slots.set(id, created);
      created.loading.then(
        (entry) => (created.entry = entry),
        () => this.slots.delete(id),
      );
      slot = created;
    }
    slot.users++;
    if (slot.timer) clearTimeout(slot.timer);
    slot.timer = null;
    if (keepAliveMs !== undefined) slot.keepAliveMs = keepAliveMs;
    try {
      const entry = await slot.loading;
      entry.expiresAt = null;
      return entry;
    } catch (error) {
      slot.users--;
      throw error;
    }
  }

  /** The request is done with the model: its keep-alive starts. */
  release(model: string): void {
    const slot = this.slots.get(this.canonicalId(model));
    if (!slot) return;
    slot.users = Math.max(0, slot.users - 1);
    slot.lastUsed = Date.now();
    if (slot.users > 0 || !slot.entry) return;
    this.schedule(slot);
  }

  /** Sets a model's keep-alive without a request (Ollama's generate with an empty prompt, keep_alive 0 unloads). */
  async setKeepAlive(model: string, keepAliveMs: number): Promise<void> {
    const slot = this.slots.get(this.canonicalId(model));
    if (!slot) return;
    slot.keepAliveMs = keepAliveMs;
    if (slot.users === 0 && slot.entry) this.schedule(slot);
  }

  /** Unloads every model (shutdown). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.slots.values()].map((s) => this.unload(s)));
  }

  private schedule(slot: Slot): void {
    if (slot.timer) clearTimeout(slot.timer);
    slot.timer = null;
    const entry = slot.entry!;
    if (slot.keepAliveMs < 0) {
      entry.expiresAt = null;
      return;
    }
    entry.expiresAt = new Date(Date.now() + slot.keepAliveMs);
    if (slot.keepAliveMs === 0) {
      void this.unload(slot);
      return;
    }
    slot.timer = setTimeout(() => void this.unload(slot), slot.keepAliveMs);
    // An idle model alone does not keep the process alive past a shutdown.
    slot.timer.unref();
  }

  private async unload(slot: Slot): Promise<void> {
    if (slot.timer) clearTimeout(slot.timer);
    slot.timer = null;
    if (this.slots.get(slot.id) !== slot) return;
    this.slots.delete(slot.id);
    const entry = await slot.loading.catch(() => null);
    if (!entry) return;
    await entry.worker.close();
    this.options.log(`unloaded ${slot.id}`);
  }

  /** Unloads least recently used idle models until one more fits. */
  private async makeRoom(): Promise<void> {
    while (this.slots.size >= this.options.maxLoaded) {
      const idle = [...this.slots.values()].filter((s) => s.users === 0 && s.entry).sort((a, b) => a.lastUsed - b.lastUsed)[0];
      if (!idle) break;
      await this.unload(idle);
    }
  }

  private async load(id: string): Promise<LoadedEntry> {
    const t0 = performance.now();
    const o = this.options;
    this.options.log(`loading ${id} (${o.dtype})`);
    const progress = logProgress(o.log);
    const controller = new AbortController();
    let ready;
    try {
      ready = await prepareModel(id, { dtype: o.dtype, signal: controller.signal, progress, quiet: false, token: o.token, offline: !o.allowPull, env: o.env });
    } catch (error) {
      if (error instanceof DvlError && error.kind === 'model' && !o.allowPull && /offline|not downloaded|cache/i.test(error.message)) {
        throw new ServerError(404, 'model_not_found', `${error.message} (the server downloads models only with --allow-pull)`);
      }
      throw error;
    }
    const worker = await InferenceWorker.start({ dir: ready.dir, manifest: ready.manifest, threads: o.threads, imageCacheBytes: o.imageCacheBytes });
    const loadMs = performance.now() - t0;
    this.options.log(`loaded ${id} in ${(loadMs / 1000).toFixed(1)} s`);
    if (worker.startup.prepackWarning) this.options.log(`warning: ${worker.startup.prepackWarning}`);
    return {
      id,
      worker,
      dir: ready.dir,
      dtype: ready.manifest.dtype,
      bytes: ready.manifest.files.reduce((n, f) => n + f.size, 0),
      loadedAt: new Date(),
      expiresAt: null,
      loadMs,
    };
  }
}

/** Conversion and download progress as log lines (a server has no spinner). */
function logProgress(log: (line: string) => void): Progress {
  let last = '';
  return {
    convert(stage, done, total) {
      const line = `${stage} ${total > 0 ? Math.floor((4 * done) / total) * 25 : 0}%`;
      if (line !== last) log((last = line));
    },
    step: log,
    live() {},
    succeed: log,
    warn: (text) => log(`warning: ${text}`),
    stop() {},
  };
}
