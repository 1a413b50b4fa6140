/** A converted model loaded for inference: onnxruntime sessions, the host embedding table, the tokenizer. */
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';
import { TextTokenizer } from '../prompt/tokenizer.js';
import { modelError, REPAIR_HINT } from '../util/errors.js';
import { OrtBlockDecoder } from './decoder-session.js';
import { FileEmbeddingTable } from './embeddings.js';
import { type Ort, ort } from './onnxruntime.js';
import { formatBytes, freeBytes, isNoSpace, isWriteRefused } from '../util/disk.js';
import { checkManifest, type Manifest, writeManifest } from '../store/manifest.js';
import { discard, packable, packBytesNeeded, PACKED_GRAPH, type PackedFor, packingStaging, realignExternalData, sameMachine, sameValues, thisMachine } from '../store/prepacked.js';
import { tryLock } from '../util/lock.js';
import { familyOf } from '../models/index.js';
import type { FamilyVisionEncoder } from '../models/family.js';

/** Loads the vision session on first use and returns its encoder. */
export type VisionLoader = () => Promise<FamilyVisionEncoder>;

export interface LoadOptions {
  /** onnxruntime intra-op threads; default: all available cores. */
  threads?: number;
  /**
   * Work for the vision tower before the decoder session exists (a one-shot `ask` encodes its images here).
   * The vision session it uses is released before the decoder session is created, so the two never hold
   * memory at the same time: peak memory is the decoder's alone (measured at 7B int4: the decoder session
   * peaks at 6.3 GiB, the vision session adds 1.1 GiB when both are loaded). Later vision() calls load the
   * vision session again.
   */
  beforeDecoder?: (vision: VisionLoader) => Promise<void>;
  /**
   * Use (and build when missing) the decoder's weights pre-packed for this machine (prepacked.ts). Default
   * true; DVL_PREPACK=0 in the environment turns it off.
   */
  prepack?: boolean;
  /** Told when the decoder session starts being created, and whether pre-packed weights are built meanwhile. */
  onDecoderStart?: (building: boolean) => void;
  /** Load the tokenizer too (default true); the inference worker leaves it to the caller's thread. */
  tokenizer?: boolean;
}

/** Where the start-up time went (`--verbose`, the bench). */
export interface StartupTimes {
  /** Creating the decoder session (from packed weights when `prepacked` is 'used'). */
  decoderSessionMs: number;
  tokenizerMs: number;
  embeddingsMs: number;
  /**
   * used: the variant's packed weights fit this machine; elsewhere: they were packed on another machine (or
   * onnxruntime), so this session packs its own in memory; built: packed now (this session runs from them);
   * off: not asked for;
   * unavailable: the store is not writable; unusable: saved weights did not reproduce the model's logits here;
   * no-space: not enough disk space to save them (tried again at a later start, when there may be room).
   */
  prepacked: 'used' | 'elsewhere' | 'built' | 'off' | 'unavailable' | 'unusable' | 'no-space';
  /** A line for the user about the pre-packed weights (no-space), to show as a warning. */
  prepackWarning?: string;
}

/** The model without its tokenizer: what the model side of an answer needs (ask.ts runPrompt). */
export interface ModelRuntime {
  dir: string;
  manifest: Manifest;
  embeddings: FileEmbeddingTable;
  decoder: OrtBlockDecoder;
  /** Loads the vision session on first use. */
  vision: VisionLoader;
  startup: StartupTimes;
  close(): Promise<void>;
}

export interface LoadedModel extends ModelRuntime {
  tokenizer: TextTokenizer;
}

/** Free space below which a failed pre-packed entry is blamed on a full disk. */
const NEARLY_FULL_BYTES = 1 << 20;

/** Writes a manifest if the store lets it (a read-only store keeps the old one: the packing is tried again). */
function tryWriteManifest(dir: string, manifest: Manifest): void {
  try {
    writeManifest(dir, manifest);
  } catch {
    // best effort
  }
}

export function defaultThreads(): number {
  return os.availableParallelism();
}

export function loadModel(dir: string, manifest: Manifest, options: LoadOptions & { tokenizer: false }): Promise<ModelRuntime>;
export function loadModel(dir: string, manifest: Manifest, options?: LoadOptions): Promise<LoadedModel>;
export async function loadModel(dir: string, manifest: Manifest, options: LoadOptions = {}): Promise<ModelRuntime | LoadedModel> {
  const sessionOptions: Ort.InferenceSession.SessionOptions = {
    executionProviders: ['cpu'],
    intraOpNumThreads: options.threads ?? defaultThreads(),
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  };
  const open = async (file: string, extra: Ort.InferenceSession.SessionOptions = {}) => {
    try {
      return await ort.InferenceSession.create(path.isAbsolute(file) ? file : path.join(dir, file), { ...sessionOptions, ...extra });
    } catch (error) {
      throw modelError(`cannot load ${path.isAbsolute(file) ? file : path.join(dir, file)}: ${(error as Error).message.split('\n')[0]}; if the conversion is damaged, ${REPAIR_HINT}`, error);
    }
  };
  const startup: StartupTimes = { decoderSessionMs: 0, tokenizerMs: 0, embeddingsMs: 0, prepacked: 'off' };
  // Only the quantised dtypes: their start is the packing; fp32/fp16 would add a second copy of 12 GB (3B) of
  // float weights to save what reading them costs anyway.
  const prepack = (options.prepack ?? process.env.DVL_PREPACK !== '0') && packable(manifest);
  const openDecoder = async (): Promise<Ort.InferenceSession> => {
    const t0 = performance.now();
    try {
      return await openDecoderSession();
    } finally {
      startup.decoderSessionMs = performance.now() - t0;
    }
  };
  /**
   * The variant's decoder graph; when it is not packed yet (a conversion made without, or a disk that was full),
   * packed now on this machine, checked, and made the variant's decoder (store/prepacked.ts).
   */
  const openDecoderSession = async (): Promise<Ort.InferenceSession> => {
    const here = thisMachine(ort.env.versions.common);
    if (manifest.prepacked) {
      options.onDecoderStart?.(false);
      startup.prepacked = sameMachine(manifest.prepacked, here) ? 'used' : 'elsewhere';
      return openCurrent();
    }
    if (!prepack) {
      options.onDecoderStart?.(false);
      return openCurrent();
    }
    if (manifest.unpackable && sameMachine(manifest.unpackable, here)) {
      options.onDecoderStart?.(false);
      startup.prepacked = 'unusable';
      return openCurrent();
    }
    // A full disk must not break the model: without room it runs from the plain files, says so once, and a
    // later start tries again.
    const needed = packBytesNeeded(manifest);
    if (freeBytes(dir) < needed) {
      options.onDecoderStart?.(false);
      return noSpace(needed);
    }
    // Another process packing this variant now: this one runs from the plain files meanwhile.
    let release: (() => void) | null = null;
    try {
      release = tryLock(path.join(dir, '.pack.lock'));
    } catch {
      // a store that cannot be written
    }
    if (!release) {
      options.onDecoderStart?.(false);
      startup.prepacked = 'unavailable';
      return openCurrent();
    }
    try {
      // Another process may have packed this variant (or found it unpackable here) between this one reading the
      // manifest and taking the lock: its files are the variant's now, not leftovers to clear.
      const fresh = checkManifest(dir, { checkSource: false });
      if ('manifest' in fresh && (fresh.manifest.prepacked || (fresh.manifest.unpackable && sameMachine(fresh.manifest.unpackable, here)))) {
        manifest = fresh.manifest;
        return await openDecoderSession();
      }
      // What a packing cut short (killed, power lost) left: nobody else is packing while this lock is held.
      for (const name of fs.readdirSync(dir)) if (name.startsWith('.packing-') || name.startsWith(PACKED_GRAPH)) discard(path.join(dir, name));
      options.onDecoderStart?.(true);
      return await packNow(here, needed);
    } finally {
      release();
    }
  };
  /** Packs the plain decoder on this machine and, if the packed graph reproduces its logits, switches to it. */
  const packNow = async (here: PackedFor, needed: number): Promise<Ort.InferenceSession> => {
    const staging = packingStaging(dir);
    const rawData = `${path.basename(staging.raw)}.data`;
    const cleanup = () => [staging.raw, path.join(dir, rawData), staging.graph, path.join(dir, `${PACKED_GRAPH}.data`)].forEach(discard);
    let expected: Float32Array;
    try {
      const building = await open(manifest.graphs.decoder, {
        optimizedModelFilePath: staging.raw,
        // onnxruntime warns that the saved graph is specific to this hardware: the manifest records where it
        // was packed, and stderr carries only dvl's own lines.
        logSeverityLevel: 3,
        extra: {
          session: {
            save_external_prepacked_constant_initializers: '1',
            optimized_model_external_initializers_file_name: rawData,
            optimized_model_external_initializers_min_size_in_bytes: '1024',
          },
        },
      });
      // The first session goes before the second is made: peak memory stays one session's.
      expected = await probeLogits(building);
      await building.release();
      realignExternalData(staging.raw, staging.graph, `${PACKED_GRAPH}.data`);
    } catch (error) {
      // The store cannot be written, or the disk filled up meanwhile (another writer).
      const full = isNoSpace(error) || freeBytes(dir) < NEARLY_FULL_BYTES;
      cleanup();
      if (full) return noSpace(needed);
      if (isWriteRefused(error)) {
        startup.prepacked = 'unavailable';
        return openCurrent();
      }
      throw error;
    } finally {
      discard(staging.raw);
      discard(path.join(dir, rawData));
    }
    let packed: Ort.InferenceSession | null = null;
    try {
      packed = await open(staging.graph);
      if (sameValues(await probeLogits(packed), expected)) {
        fs.renameSync(staging.graph, path.join(dir, PACKED_GRAPH));
        switchToPacked(here);
        startup.prepacked = 'built';
        return packed;
      }
    } catch {
      // not usable: as if it failed the comparison
    }
    await packed?.release();
    // A graph cut short by a full disk (onnxruntime does not always report the failed write) says nothing about
    // whether a whole one would work: with the disk (nearly) full, it is not marked as never to be tried again.
    const full = freeBytes(dir) < NEARLY_FULL_BYTES;
    cleanup();
    if (full) return noSpace(needed);
    manifest = { ...manifest, unpackable: here };
    tryWriteManifest(dir, manifest);
    startup.prepacked = 'unusable';
    return openCurrent();
  };
  /** The packed graph becomes the variant's decoder; the plain files go. */
  const switchToPacked = (here: PackedFor) => {
    const plain = manifest.graphs.decoder;
    const packedFiles = [PACKED_GRAPH, `${PACKED_GRAPH}.data`].map((name) => ({ name, size: fs.statSync(path.join(dir, name)).size }));
    manifest = {
      ...manifest,
      graphs: { ...manifest.graphs, decoder: PACKED_GRAPH },
      files: [...manifest.files.filter((f) => f.name !== plain && f.name !== `${plain}.data`), ...packedFiles].sort((a, b) => (a.name < b.name ? -1 : 1)),
      prepacked: here,
    };
    writeManifest(dir, manifest);
    discard(path.join(dir, plain));
    discard(path.join(dir, `${plain}.data`));
  };
  const noSpace = (needed: number) => {
    startup.prepacked = 'no-space';
    startup.prepackWarning = `not enough disk space in ${dir} to save the decoder's weights packed for this CPU (about ${formatBytes(needed)} needed, ${formatBytes(freeBytes(dir))} free): starting without them, which is slower; a later start tries again`;
    return openCurrent();
  };
  /**
   * The manifest's decoder graph; if another process switched this variant to its packed graph since the
   * manifest was read (its plain files are gone), the manifest on disk says where it is now.
   */
  const openCurrent = async (): Promise<Ort.InferenceSession> => {
    try {
      return await open(manifest.graphs.decoder);
    } catch (error) {
      const now = checkManifest(dir, { checkSource: false });
      if (!('manifest' in now) || now.manifest.graphs.decoder === manifest.graphs.decoder) throw error;
      manifest = now.manifest;
      if (manifest.prepacked) startup.prepacked = sameMachine(manifest.prepacked, thisMachine(ort.env.versions.common)) ? 'used' : 'elsewhere';
      return open(manifest.graphs.decoder);
    }
  };
  /** Logits of two fixed rows (no cache): enough to see a wrongly packed matrix anywhere in the graph. */
  const probeLogits = async (session: Ort.InferenceSession): Promise<Float32Array> => {
    const hidden = config.text.hiddenSize;
    const embeds = Float32Array.from({ length: 2 * hidden }, (_, i) => Math.sin(i * 0.37) * 0.05);
    const decoder = new OrtBlockDecoder(session, config.text);
    return (await decoder.forward({ embeds, count: 2, start: 0, blockSize: config.blockSize, logitRows: [0, 1], commit: false })).logits;
  };
  const config = manifest.config;
  // The vision session loads on first use (one load even when calls overlap) and can be released.
  let visionSession: Ort.InferenceSession | null = null;
  let visionPromise: Promise<FamilyVisionEncoder> | null = null;
  const vision: VisionLoader = () =>
    (visionPromise ??= open(manifest.graphs.vision).then(
      (session) => {
        visionSession = session;
        return familyOf(config).visionEncoder(session, config, dir);
      },
      (error) => {
        visionPromise = null;
        throw error;
      },
    ));
  const releaseVision = async () => {
    const pending = visionPromise;
    visionPromise = null;
    await pending?.catch(() => undefined);
    const session = visionSession;
    visionSession = null;
    await session?.release();
  };

  // One thing after the other: onnxruntime-node creates a session synchronously on this thread (inside a
  // setImmediate), so nothing else of this thread could overlap it anyway. With beforeDecoder, the images are
  // encoded (and the vision session released) before the decoder session exists.
  let tokenizer: TextTokenizer | undefined;
  let embeddings: FileEmbeddingTable | undefined;
  let decoderSession: Ort.InferenceSession;
  try {
    const t0 = performance.now();
    if (options.tokenizer !== false) tokenizer = TextTokenizer.load(dir);
    const t1 = performance.now();
    const e = manifest.embeddings;
    embeddings = new FileEmbeddingTable(path.join(dir, e.file), e.rows, e.hidden, e.dtype);
    startup.tokenizerMs = t1 - t0;
    startup.embeddingsMs = performance.now() - t1;
    if (options.beforeDecoder) {
      await options.beforeDecoder(vision);
      await releaseVision();
    }
    decoderSession = await openDecoder();
  } catch (error) {
    embeddings?.close();
    await releaseVision();
    throw error;
  }
  return {
    dir,
    manifest,
    ...(tokenizer ? { tokenizer } : {}),
    embeddings,
    decoder: new OrtBlockDecoder(decoderSession, config.text),
    vision,
    startup,
    async close() {
      embeddings.close();
      await decoderSession.release();
      await releaseVision();
    },
  };
}
