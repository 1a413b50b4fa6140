/**
 * manifest.json: what a converted model was made from and what it holds. Written last, so a variant directory
 * without a valid manifest is a partial conversion; compared with the source on use, so a stale one is redone.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { AnyModelConfig } from '../models/index.js';
import type { EmbeddingDtype } from '../runtime/embeddings.js';
import { sha256File } from '../util/hash.js';
import { WEIGHT_DTYPES, type WeightDtype } from '../convert/weight-dtype.js';

/**
 * Bump when the graphs, the file set or what the manifest's config holds change: older conversions are then
 * redone (2: packed QKV, fused residual norms; 3: the config records where the block size came from, a
 * missing bd3lm_block_size means 8, config.json's pixel budget, the upstream converter's files among the sources).
 */
export const CONVERSION_FORMAT = 3;

/**
 * The format a dtype's conversion has now: CONVERSION_FORMAT for fp32 and fp16; the quantised dtypes are 2 more
 * (int8's decoder moved from MatMulNBits to DynamicQuantizeMatMul with outlier channels split off; then the packed
 * decoder became the variant's own files, int4 got 8-bit head and edge layers, and the int8/int4 tower moved to
 * DynamicQuantizeMatMul), so that only their conversions are redone for those changes.
 */
export function conversionFormat(dtype: unknown): number {
  return dtype === 'fp32' || dtype === 'fp16' ? CONVERSION_FORMAT : CONVERSION_FORMAT + 2;
}

export interface SourceFile {
  /** Path relative to the checkpoint directory. */
  name: string;
  size: number;
  mtimeMs: number;
  sha256: string;
}

export interface ModelSourceRef {
  /** 'local' for a directory, 'hub' for a Hub repo. */
  kind: 'local' | 'hub';
  /** The directory, or the repo id. */
  id: string;
  /** 'local' or the resolved commit. */
  revision: string;
  /** The checkpoint directory the conversion read. */
  dir: string;
}

export interface Manifest {
  format: number;
  dvlVersion: string;
  createdAt: string;
  dtype: WeightDtype;
  source: ModelSourceRef;
  sourceFiles: SourceFile[];
  config: AnyModelConfig;
  embeddings: { file: string; dtype: EmbeddingDtype; rows: number; hidden: number };
  graphs: { vision: string; decoder: string };
  /** Every file of the variant with its size (the manifest itself excluded). */
  files: { name: string; size: number }[];
  conversion: { seconds: number; peakRssBytes: number };
  /** The decoder graph holds weights packed on this machine (store/prepacked.ts). */
  prepacked?: PackedFor;
  /** Packing was tried on this machine and did not reproduce the plain decoder's logits: not tried again here. */
  unpackable?: PackedFor;
}

/** Where a variant's decoder was packed: the packed blobs match only the same onnxruntime on the same kind of CPU. */
export interface PackedFor {
  onnxruntime: string;
  cpu: string;
  /** Instruction-set flags of the CPU (sorted), which select MLAS's kernels and their packed layout. */
  cpuFlags: string;
}

export const MANIFEST_FILE = 'manifest.json';

/** Writes manifest.json atomically (a temporary file of this process, renamed over the old one). */
export function writeManifest(dir: string, manifest: Manifest): void {
  const file = path.join(dir, MANIFEST_FILE);
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    fs.writeFileSync(tmp, `${JSON.stringify(manifest, null, 2)}\n`);
    fs.renameSync(tmp, file);
  } catch (error) {
    fs.rmSync(tmp, { force: true });
    throw error;
  }
}

/**
 * A usable manifest, with the source files whose mtime changed although their size did not (a `touch`, a copy,
 * a checkout): whether those still are the converted ones, their sha256 decides (confirmTouched).
 */
export interface CurrentManifest {
  manifest: Manifest;
  touched: SourceFile[];
}

/**
 * Reads a variant's manifest and checks it is complete and current. Returns the manifest, or the reason it
 * cannot be used (missing, unreadable, older format, a file missing or of the wrong size, a source file gone or
 * of another size). Source files with a new mtime only are listed in `touched`, for confirmTouched.
 */
export function checkManifest(dir: string, options: { checkSource?: boolean } = {}): CurrentManifest | { reason: string } {
  const file = path.join(dir, MANIFEST_FILE);
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    return { reason: (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not converted yet' : `unreadable manifest ${file}` };
  }
  const format = isObject(parsed) ? parsed.format : undefined;
  const dtype = isObject(parsed) ? parsed.dtype : undefined;
  // The format a manifest should have depends on its dtype: without one it is damaged, whatever its format says.
  const current = conversionFormat(dtype);
  if (typeof format === 'number' && typeof dtype === 'string' && format !== current) return { reason: `converted by ${format < current ? 'an older' : 'a newer'} dvl (format ${format})` };
  if (!hasManifestShape(parsed)) return { reason: `damaged manifest ${file}` };
  const manifest = parsed;
  const touched: SourceFile[] = [];
  for (const { name, size } of manifest.files) {
    const st = statOrNull(path.join(dir, name));
    if (!st || st.size !== size) return { reason: `converted file ${name} is missing or damaged` };
  }
  if (options.checkSource !== false) {
    for (const f of manifest.sourceFiles) {
      const st = statOrNull(path.join(manifest.source.dir, f.name));
      // A Hub snapshot may be gone after `rm`; a local checkpoint that changed must be converted again.
      if (!st) {
        if (manifest.source.kind === 'local') return { reason: `source file ${f.name} is gone` };
        continue;
      }
      // A new size is a new file, no need to hash it.
      if (st.size !== f.size) return { reason: `source file ${f.name} changed since conversion` };
      if (Math.abs(st.mtimeMs - f.mtimeMs) > 1) touched.push(f);
    }
  }
  return { manifest, touched };
}

/**
 * Hashes the touched source files (see checkManifest). All with their recorded sha256: the conversion is
 * current, and its manifest takes their new mtimes so the next run does not hash them again (rewritten
 * atomically; best effort: a read-only store keeps the old manifest and hashes again next time). Any other
 * hash: the conversion is stale.
 */
export async function confirmTouched(dir: string, manifest: Manifest, touched: SourceFile[], onBytes?: (bytes: number) => void): Promise<{ manifest: Manifest } | { reason: string }> {
  if (touched.length === 0) return { manifest };
  const mtimes = new Map<string, number>();
  for (const f of touched) {
    const file = path.join(manifest.source.dir, f.name);
    // The mtime from before hashing: a change made while hashing shows as another mtime next time.
    const mtimeMs = statOrNull(file)?.mtimeMs;
    if (mtimeMs === undefined) return { reason: `source file ${f.name} is gone` };
    if ((await sha256File(file, onBytes)) !== f.sha256) return { reason: `source file ${f.name} changed since conversion` };
    mtimes.set(f.name, mtimeMs);
  }
  const updated: Manifest = { ...manifest, sourceFiles: manifest.sourceFiles.map((f) => ({ ...f, mtimeMs: mtimes.get(f.name) ?? f.mtimeMs })) };
  try {
    writeManifest(dir, updated);
  } catch {
    // A store shared read-only: still current, only the mtimes are not recorded.
  }
  return { manifest: updated };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The fields the store and the loader read, with their types: a manifest that was edited or half-overwritten
 * is treated as no conversion at all (and redone), never trusted field by field.
 */
function hasManifestShape(m: unknown): m is Manifest {
  if (!isObject(m) || m.format !== conversionFormat(m.dtype)) return false;
  if (!(WEIGHT_DTYPES as readonly unknown[]).includes(m.dtype)) return false;
  const { source, embeddings, graphs, config } = m;
  if (!isObject(source) || typeof source.dir !== 'string' || (source.kind !== 'local' && source.kind !== 'hub')) return false;
  if (!isObject(embeddings) || typeof embeddings.file !== 'string' || typeof embeddings.rows !== 'number' || typeof embeddings.hidden !== 'number') return false;
  if (!isObject(graphs) || typeof graphs.vision !== 'string' || typeof graphs.decoder !== 'string') return false;
  if (!isObject(config) || !isObject(config.text) || !isObject(config.vision)) return false;
  const fileList = (v: unknown, extra: (f: Record<string, unknown>) => boolean) =>
    Array.isArray(v) && v.every((f) => isObject(f) && typeof f.name === 'string' && typeof f.size === 'number' && extra(f));
  if (!fileList(m.files, () => true) || !fileList(m.sourceFiles, (f) => typeof f.mtimeMs === 'number')) return false;
  // The files the loader opens must be among those whose sizes are checked.
  const listed = new Set((m.files as { name: string }[]).map((f) => f.name));
  return [graphs.vision, graphs.decoder, embeddings.file].every((name) => listed.has(name));
}

function statOrNull(file: string): fs.Stats | null {
  try {
    return fs.statSync(file);
  } catch {
    return null;
  }
}
