/** A converted model loaded for inference: onnxruntime sessions, the host embedding table, the tokenizer. */
import os from 'node:os';
import path from 'node:path';
import type { Manifest } from '../convert/manifest.js';
import { TextTokenizer } from '../prompt/tokenizer.js';
import { modelError } from '../util/errors.js';
import { OrtBlockDecoder } from './decoder-session.js';
import { FileEmbeddingTable } from './embeddings.js';
import { type Ort, ort } from './onnxruntime.js';
import { VisionEncoder } from './vision-encoder.js';

/** Loads the vision session on first use and returns its encoder. */
export type VisionLoader = () => Promise<VisionEncoder>;

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
}

export interface LoadedModel {
  dir: string;
  manifest: Manifest;
  tokenizer: TextTokenizer;
  embeddings: FileEmbeddingTable;
  decoder: OrtBlockDecoder;
  /** Loads the vision session on first use. */
  vision: VisionLoader;
  close(): Promise<void>;
}

export function defaultThreads(): number {
  return os.availableParallelism();
}

export async function loadModel(dir: string, manifest: Manifest, options: LoadOptions = {}): Promise<LoadedModel> {
  const sessionOptions: Ort.InferenceSession.SessionOptions = {
    executionProviders: ['cpu'],
    intraOpNumThreads: options.threads ?? defaultThreads(),
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  };
  const open = async (file: string) => {
    try {
      return await ort.InferenceSession.create(path.join(dir, file), sessionOptions);
    } catch (error) {
      throw modelError(`cannot load ${path.join(dir, file)}: ${(error as Error).message.split('\n')[0]}`, error);
    }
  };
  const config = manifest.config;
  // The vision session loads on first use (one load even when calls overlap) and can be released.
  let visionSession: Ort.InferenceSession | null = null;
  let visionPromise: Promise<VisionEncoder> | null = null;
  const vision: VisionLoader = () =>
    (visionPromise ??= open(manifest.graphs.vision).then(
      (session) => {
        visionSession = session;
        return new VisionEncoder(session, config.vision);
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

  // onnxruntime builds the session on its own threads; building the tokenizer (about a second of JS) meanwhile
  // overlaps the two. With beforeDecoder, the decoder session waits until that work is done.
  let decoderSessionPromise: Promise<Ort.InferenceSession> | null = options.beforeDecoder ? null : open(manifest.graphs.decoder);
  // With beforeDecoder it is the vision session that loads while the tokenizer is built.
  if (options.beforeDecoder) void vision().catch(() => undefined);
  let tokenizer: TextTokenizer;
  let embeddings: FileEmbeddingTable | undefined;
  try {
    tokenizer = TextTokenizer.load(dir);
    const e = manifest.embeddings;
    embeddings = new FileEmbeddingTable(path.join(dir, e.file), e.rows, e.hidden, e.dtype);
    if (options.beforeDecoder) {
      await options.beforeDecoder(vision);
      await releaseVision();
      decoderSessionPromise = open(manifest.graphs.decoder);
    }
  } catch (error) {
    embeddings?.close();
    await releaseVision();
    await decoderSessionPromise?.then((s) => s.release(), () => undefined);
    throw error;
  }
  let decoderSession: Ort.InferenceSession;
  try {
    decoderSession = await decoderSessionPromise!;
  } catch (error) {
    embeddings.close();
    await releaseVision();
    throw error;
  }
  return {
    dir,
    manifest,
    tokenizer,
    embeddings,
    decoder: new OrtBlockDecoder(decoderSession, config.text),
    vision,
    async close() {
      embeddings.close();
      await decoderSession.release();
      await releaseVision();
    },
  };
}
