/** A converted model loaded for inference: onnxruntime sessions, the host embedding table, the tokenizer. */
import os from 'node:os';
import path from 'node:path';
import type { Manifest } from '../store/manifest.js';
import { TextTokenizer } from '../prompt/tokenizer.js';
import { modelError, REPAIR_HINT } from '../util/errors.js';
import { OrtBlockDecoder } from './decoder-session.js';
import { FileEmbeddingTable } from './embeddings.js';
import { type Ort, ort } from './onnxruntime.js';
import { formatBytes, freeBytes, isNoSpace } from '../util/disk.js';
import { discard, entryBytesNeeded, entryDir, isMarkedUnusable, markUnusable, prepackKey, prepackKeyParts, publishEntry, readEntry, sameValues, startEntry } from '../store/prepacked.js';
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
  /** Creating the decoder session (from pre-packed weights when `prepacked` is 'used'). */
  decoderSessionMs: number;
  tokenizerMs: number;
  embeddingsMs: number;
  /**
   * used: loaded from the cache; built: made now (and this session runs from it); off: not asked for;
   * unavailable: the store is not writable; unusable: saved weights did not reproduce the model's logits here;
   * no-space: not enough disk space to save them (tried again at a later start, when there may be room).
   */
  prepacked: 'used' | 'built' | 'off' | 'unavailable' | 'unusable' | 'no-space';
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
  // Only the quantised dtypes: their start is the packing; an fp32/fp16 entry would add a second copy of
  // 12 GB (3B) of float weights to save what reading them costs anyway.
  const prepack = (options.prepack ?? process.env.DVL_PREPACK !== '0') && (manifest.dtype === 'int4' || manifest.dtype === 'int8');
  const openDecoder = async (): Promise<Ort.InferenceSession> => {
    const t0 = performance.now();
    try {
      return await openDecoderSession();
    } finally {
      startup.decoderSessionMs = performance.now() - t0;
    }
  };
  /** From the pre-packed cache when it has a current entry; otherwise from the conversion, building the entry. */
  const openDecoderSession = async (): Promise<Ort.InferenceSession> => {
    if (!prepack) {
      options.onDecoderStart?.(false);
      return open(manifest.graphs.decoder);
    }
    const parts = prepackKeyParts(manifest, dir, ort.env.versions.common);
    const key = prepackKey(parts);
    if (isMarkedUnusable(dir, key)) {
      options.onDecoderStart?.(false);
      startup.prepacked = 'unusable';
      return open(manifest.graphs.decoder);
    }
    if (readEntry(dir, key)) {
      options.onDecoderStart?.(false);
      try {
        const session = await open(path.join(entryDir(dir, key), manifest.graphs.decoder));
        startup.prepacked = 'used';
        return session;
      } catch {
        // A damaged entry: rebuilt below from the conversion.
        discard(entryDir(dir, key));
      }
    }
    // A full disk must not break the model: without room for the entry it runs from the conversion, says so
    // once, and a later start tries again.
    const needed = entryBytesNeeded(manifest);
    const noSpace = () => {
      startup.prepacked = 'no-space';
      startup.prepackWarning = `not enough disk space in ${dir} to save the decoder's pre-packed weights (about ${formatBytes(needed)} needed, ${formatBytes(freeBytes(dir))} free): starting without them, which is slower; a later start tries again`;
      return open(manifest.graphs.decoder);
    };
    const lowOnSpace = () => freeBytes(dir) < needed;
    if (lowOnSpace()) {
      options.onDecoderStart?.(false);
      return noSpace();
    }
    const staging = startEntry(dir);
    options.onDecoderStart?.(staging !== null);
    if (!staging) {
      startup.prepacked = 'unavailable';
      return open(manifest.graphs.decoder);
    }
    let building: Ort.InferenceSession;
    try {
      building = await open(manifest.graphs.decoder, {
        optimizedModelFilePath: path.join(staging, manifest.graphs.decoder),
        // onnxruntime warns that the saved graph is specific to this hardware: the entry's key says so already,
        // and stderr carries only dvl's own lines.
        logSeverityLevel: 3,
        extra: {
          session: {
            save_external_prepacked_constant_initializers: '1',
            optimized_model_external_initializers_file_name: `${manifest.graphs.decoder}.data`,
            optimized_model_external_initializers_min_size_in_bytes: '1024',
          },
        },
      });
    } catch (error) {
      // Writing the entry can fail with the disk full (ENOSPC) although the estimate fitted (another writer).
      const full = isNoSpace(error) || lowOnSpace();
      discard(staging);
      if (full) return noSpace();
      throw error;
    }
    // The saved weights are used only once a session made from them gives bit for bit the logits of the session
    // that saved them (measured: on the 3B int4 decoder it does; on a tiny int4 decoder onnxruntime 1.30's
    // saved entry computes garbage). The first session goes before the second is made: peak memory stays one
    // session's.
    const expected = await probeLogits(building);
    await building.release();
    let fromEntry: Ort.InferenceSession | null = null;
    try {
      fromEntry = await open(path.join(staging, manifest.graphs.decoder));
      if (sameValues(await probeLogits(fromEntry), expected) && publishEntry(dir, staging, parts)) {
        startup.prepacked = 'built';
        return fromEntry;
      }
    } catch {
      // not usable: as if it failed the comparison
    }
    await fromEntry?.release();
    // An entry cut short by a full disk (onnxruntime does not always report the failed write) says nothing about
    // whether a whole one would work: with the disk (nearly) full, it is not marked unusable.
    const full = freeBytes(dir) < NEARLY_FULL_BYTES;
    discard(staging);
    if (full) return noSpace();
    markUnusable(dir, parts);
    startup.prepacked = 'unusable';
    return open(manifest.graphs.decoder);
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
