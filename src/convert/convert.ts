/**
 * Checkpoint -> converted model: the vision graph, the decoder graph, the host embedding table, the tokenizer
 * files and a manifest, written to a staging directory and published atomically.
 */
import fs from 'node:fs';
import path from 'node:path';
import { type Checkpoint, openCheckpoint, tokenizerFiles } from '../checkpoint/checkpoint.js';
import { formatBytes, freeBytes, isNoSpace } from '../util/disk.js';
import { modelError } from '../util/errors.js';
import { float32ToFloat16Bits } from '../util/half.js';
import { DVL_VERSION } from '../version.js';
import { buildDecoderGraph } from './decoder-graph.js';
import { sha256File } from '../util/hash.js';
import { conversionFormat, type Manifest, type ModelSourceRef, type SourceFile, writeManifest } from '../store/manifest.js';
import { type ConversionRecipe, RECIPES } from './recipes.js';
import { type WeightDtype } from './weight-dtype.js';
import { makeStagingDir, publishStagingDir } from '../store/layout.js';
import { familyOf } from '../models/index.js';
import type { EmbeddingDtype } from '../runtime/embeddings.js';

export type ConvertStage = 'hash' | 'vision' | 'decoder' | 'embeddings';
export type ConvertProgress = (stage: ConvertStage, done: number, total: number) => void;

export interface ConvertOptions {
  source: ModelSourceRef;
  dtype: WeightDtype;
  /** The variant directory to publish (see store.variantDir). */
  outDir: string;
  /** How each weight is stored, when not the dtype's (RECIPES): measurements of other formats. */
  recipe?: ConversionRecipe;
  onProgress?: ConvertProgress;
}

/** Rough size of the converted files per source byte (bf16 source), for the free-space check. */
const OUTPUT_BYTES_PER_SOURCE_BYTE: Record<WeightDtype, number> = { fp32: 2.1, fp16: 1.1, int8: 0.7, int4: 0.55, 'int4-all': 0.5 };

export async function convertCheckpoint(options: ConvertOptions): Promise<Manifest> {
  const started = Date.now();
  const checkpoint = openCheckpoint(options.source.dir);
  checkpoint.validate();
  const sourceBytes = checkpoint.files.reduce((sum, f) => sum + f.size, 0);
  checkFreeSpace(path.dirname(options.outDir), sourceBytes * OUTPUT_BYTES_PER_SOURCE_BYTE[options.dtype]);

  const staging = makeStagingDir(options.outDir);
  try {
    const sourceFiles = await hashSourceFiles(checkpoint.dir, checkpoint.files.map((f) => f.path), options.onProgress);
    const progress = (stage: ConvertStage) => (done: number, total: number) => options.onProgress?.(stage, done, total);
    const recipe = options.recipe ?? RECIPES[options.dtype];
    familyOf(checkpoint.config).writeVision(checkpoint, checkpoint.config, { dir: staging, file: 'vision.onnx', dtype: options.dtype, plan: recipe.vision, onProgress: progress('vision') });
    buildDecoderGraph(checkpoint, checkpoint.config, { modelPath: path.join(staging, 'decoder.onnx'), dtype: recipe.decoder.body.format, plan: recipe.decoder, onProgress: progress('decoder') });
    options.onProgress?.('embeddings', 0, 1);
    const embeddingDtype = writeEmbeddingTable(checkpoint, path.join(staging, 'embed_tokens.bin'));
    options.onProgress?.('embeddings', 1, 1);
    const { tokenizerJson, tokenizerConfig } = tokenizerFiles(checkpoint.dir);
    fs.copyFileSync(tokenizerJson, path.join(staging, 'tokenizer.json'));
    fs.copyFileSync(tokenizerConfig, path.join(staging, 'tokenizer_config.json'));
    fs.copyFileSync(path.join(checkpoint.dir, 'config.json'), path.join(staging, 'config.json'));

    const manifest: Manifest = {
      format: conversionFormat(options.dtype),
      dvlVersion: DVL_VERSION,
      createdAt: new Date().toISOString(),
      dtype: options.dtype,
      source: options.source,
      sourceFiles,
      config: checkpoint.config,
      embeddings: { file: 'embed_tokens.bin', dtype: embeddingDtype, rows: checkpoint.config.text.vocabSize, hidden: checkpoint.config.text.hiddenSize },
      graphs: { vision: 'vision.onnx', decoder: 'decoder.onnx' },
      files: fs.readdirSync(staging).sort().map((name) => ({ name, size: fs.statSync(path.join(staging, name)).size })),
      conversion: { seconds: (Date.now() - started) / 1000, peakRssBytes: process.resourceUsage().maxRSS * 1024 },
    };
    writeManifest(staging, manifest);
    publishStagingDir(staging, options.outDir);
    return manifest;
  } catch (error) {
    fs.rmSync(staging, { recursive: true, force: true });
    if (isNoSpace(error)) throw modelError(`not enough disk space to convert into ${path.dirname(options.outDir)}`, error);
    throw error;
  }
}

/**
 * The host copy of embed_tokens, in the checkpoint's own precision when it is 16-bit (bf16 rows stay
 * bit-exact at half the size of float32). Streamed in chunks of rows: the 7B table is 2.2 GB as float32.
 */
function writeEmbeddingTable(checkpoint: Checkpoint, file: string): EmbeddingDtype {
  const name = 'model.embed_tokens.weight';
  const info = checkpoint.info(name);
  const [rows, hidden] = info.shape;
  const dtype: EmbeddingDtype = info.dtype === 'BF16' ? 'bfloat16' : info.dtype === 'F16' ? 'float16' : 'float32';
  const rowsPerChunk = Math.max(1, Math.floor((16 << 20) / (hidden * 4)));
  const fd = fs.openSync(file, 'w');
  try {
    for (let start = 0; start < rows; start += rowsPerChunk) {
      const count = Math.min(rowsPerChunk, rows - start);
      const values = checkpoint.readRowsF32(name, start, count);
      let bytes: Uint8Array;
      if (dtype === 'bfloat16') {
        // The values came from bf16, so the low 16 bits of each float32 are zero.
        const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
        const out = new Uint16Array(values.length);
        for (let i = 0; i < out.length; i++) out[i] = bits[i] >>> 16;
        bytes = new Uint8Array(out.buffer);
      } else if (dtype === 'float16') {
        const out = new Uint16Array(values.length);
        for (let i = 0; i < out.length; i++) out[i] = float32ToFloat16Bits(values[i]);
        bytes = new Uint8Array(out.buffer);
      } else {
        bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      }
      let written = 0;
      while (written < bytes.byteLength) written += fs.writeSync(fd, bytes, written, bytes.byteLength - written);
    }
  } finally {
    fs.closeSync(fd);
  }
  return dtype;
}

/** sha256 of every source file, streamed (a 16 GB checkpoint is never held in memory). */
async function hashSourceFiles(dir: string, files: string[], onProgress?: ConvertProgress): Promise<SourceFile[]> {
  const sizes = files.map((f) => fs.statSync(f).size);
  const total = sizes.reduce((a, b) => a + b, 0);
  let done = 0;
  const out: SourceFile[] = [];
  for (const file of files) {
    const sha256 = await sha256File(file, (bytes) => {
      done += bytes;
      onProgress?.('hash', done, total);
    });
    const st = fs.statSync(file);
    out.push({ name: path.relative(dir, file), size: st.size, mtimeMs: st.mtimeMs, sha256 });
  }
  return out;
}

function checkFreeSpace(dir: string, neededBytes: number): void {
  fs.mkdirSync(dir, { recursive: true });
  const free = freeBytes(dir);
  if (free < neededBytes) {
    throw modelError(`not enough disk space in ${dir}: the conversion needs about ${formatBytes(neededBytes)}, ${formatBytes(free)} free`);
  }
}
