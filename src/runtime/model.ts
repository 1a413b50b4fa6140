/** A converted model loaded for inference: onnxruntime sessions, the host embedding table, the tokenizer. */
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import type { Manifest } from '../convert/manifest.js';
import { TextTokenizer } from '../prompt/tokenizer.js';
import { modelError } from '../util/errors.js';
import { OrtBlockDecoder } from './decoder-session.js';
import { FileEmbeddingTable } from './embeddings.js';
import { VisionEncoder } from './vision-encoder.js';

export interface LoadOptions {
  /** onnxruntime intra-op threads; default: all available cores. */
  threads?: number;
  /** Skip the vision session (text-only prompts load faster). */
  withVision?: boolean;
}

export interface LoadedModel {
  dir: string;
  manifest: Manifest;
  tokenizer: TextTokenizer;
  embeddings: FileEmbeddingTable;
  decoder: OrtBlockDecoder;
  /** Loads the vision session on first use. */
  vision(): Promise<VisionEncoder>;
  close(): Promise<void>;
}

export function defaultThreads(): number {
  return os.availableParallelism();
}

export async function loadModel(dir: string, manifest: Manifest, options: LoadOptions = {}): Promise<LoadedModel> {
  const sessionOptions: ort.InferenceSession.SessionOptions = {
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
  // onnxruntime builds the session on its own threads; building the tokenizer (about a second of JS) meanwhile
  // overlaps the two.
  const decoderSessionPromise = open(manifest.graphs.decoder);
  let tokenizer: TextTokenizer;
  let embeddings: FileEmbeddingTable;
  try {
    tokenizer = TextTokenizer.load(dir);
    const e = manifest.embeddings;
    embeddings = new FileEmbeddingTable(path.join(dir, e.file), e.rows, e.hidden, e.dtype);
  } catch (error) {
    await decoderSessionPromise.then((s) => s.release(), () => undefined);
    throw error;
  }
  const decoderSession = await decoderSessionPromise;
  let visionSession: ort.InferenceSession | null = null;
  let visionEncoder: VisionEncoder | null = null;
  return {
    dir,
    manifest,
    tokenizer,
    embeddings,
    decoder: new OrtBlockDecoder(decoderSession, config.text),
    async vision() {
      if (!visionEncoder) {
        visionSession = await open(manifest.graphs.vision);
        visionEncoder = new VisionEncoder(visionSession, config.vision);
      }
      return visionEncoder;
    },
    async close() {
      embeddings.close();
      await decoderSession.release();
      await visionSession?.release();
    },
  };
}
