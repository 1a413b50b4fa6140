/**
 * The decoder's weights pre-packed for this machine, kept next to the converted model so that a session starts
 * in seconds.
 *
 * Creating a decoder session is mostly MatMulNBits re-packing its int4/int8 weights into the layout of the
 * CPU's kernel, single-threaded, on every start (12.5 s for the 3B int4 decoder, 37 s for 7B). onnxruntime
 * can write the packed weights out with an optimized copy of the graph (`optimizedModelFilePath` with
 * `session.save_external_prepacked_constant_initializers`) and, when that copy is loaded later, use them as
 * they are. The packed layout depends on the onnxruntime build and on the CPU's instruction set, so a cache
 * entry is keyed by both and by the conversion it was made from; an entry for another key is stale and
 * removed when a new one is built.
 *
 * Layout: `<variant>/prepacked/<key>/` holding the optimized graph, its data file, and `cache.json` (the key's
 * parts and every file's size), written into a staging directory and renamed into place when complete, so a
 * crash never leaves a half-written entry that looks usable. Anything wrong with an entry (sizes, a load that
 * fails) makes dvl fall back to the converted graph and rebuild; a store it cannot write to (a shared,
 * read-only DVL_HOME) only costs the slow start.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Manifest } from './manifest.js';
import { processAlive, readdirOrEmpty } from './layout.js';

export const PREPACKED_DIR = 'prepacked';
const CACHE_FILE = 'cache.json';
/** Bump when what is stored changes. */
const CACHE_FORMAT = 1;

/** What a cache entry depends on. */
export interface PrepackKeyParts {
  format: number;
  onnxruntime: string;
  cpu: string;
  /** Instruction-set flags of the CPU (sorted), which select MLAS's kernels and their packed layout. */
  cpuFlags: string;
  /** The conversion: its graph file, size and creation time. */
  conversion: string;
}

export interface CacheEntry {
  key: string;
  parts: PrepackKeyParts;
  createdAt: string;
  files: { name: string; size: number }[];
}

export function prepackKeyParts(manifest: Manifest, variantDir: string, onnxruntimeVersion: string): PrepackKeyParts {
  const graph = manifest.graphs.decoder;
  const graphBytes = manifest.files.filter((f) => f.name === graph || f.name === `${graph}.data`).reduce((s, f) => s + f.size, 0);
  return {
    format: CACHE_FORMAT,
    onnxruntime: onnxruntimeVersion,
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cpuFlags: cpuFlags(),
    conversion: `${path.basename(variantDir)}/${graph} ${graphBytes} bytes, converted ${manifest.createdAt}`,
  };
}

export function prepackKey(parts: PrepackKeyParts): string {
  return crypto.createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16);
}

/** The CPU's feature flags from /proc/cpuinfo (Linux); elsewhere the model name stands for them. */
function cpuFlags(): string {
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const line = /^flags\s*:\s*(.*)$/m.exec(info)?.[1] ?? '';
    return line.split(/\s+/).filter(Boolean).sort().join(' ');
  } catch {
    return '';
  }
}

export const entryDir = (variantDir: string, key: string) => path.join(variantDir, PREPACKED_DIR, key);

/** The entry for `key` if it is complete: its cache.json matches and every file has its recorded size. */
export function readEntry(variantDir: string, key: string): CacheEntry | null {
  const dir = entryDir(variantDir, key);
  let entry: CacheEntry;
  try {
    entry = JSON.parse(fs.readFileSync(path.join(dir, CACHE_FILE), 'utf8')) as CacheEntry;
  } catch {
    return null;
  }
  if (entry.key !== key || !Array.isArray(entry.files) || entry.files.length === 0) return null;
  for (const f of entry.files) {
    const st = fs.statSync(path.join(dir, f.name), { throwIfNoEntry: false });
    if (!st || st.size !== f.size) return null;
  }
  return entry;
}

/** A staging directory for a new entry, or null when the store cannot be written. */
export function startEntry(variantDir: string): string | null {
  const parent = path.join(variantDir, PREPACKED_DIR);
  try {
    fs.mkdirSync(parent, { recursive: true });
    const staging = path.join(parent, `.staging-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
    fs.mkdirSync(staging);
    return staging;
  } catch {
    return null;
  }
}

/**
 * Completes an entry that onnxruntime has written into `staging`: records the files and renames it into
 * place, then removes entries of other keys and leftovers of dead processes. Returns false (and removes the
 * staging directory) when that fails; a slow start is the only cost.
 */
export function publishEntry(variantDir: string, staging: string, parts: PrepackKeyParts): boolean {
  const key = prepackKey(parts);
  try {
    const files = fs.readdirSync(staging).map((name) => ({ name, size: fs.statSync(path.join(staging, name)).size }));
    const entry: CacheEntry = { key, parts, createdAt: new Date().toISOString(), files };
    fs.writeFileSync(path.join(staging, CACHE_FILE), `${JSON.stringify(entry, null, 2)}\n`);
    const final = entryDir(variantDir, key);
    fs.rmSync(final, { recursive: true, force: true });
    fs.renameSync(staging, final);
  } catch {
    discard(staging);
    return false;
  }
  removeOtherEntries(variantDir, key);
  return true;
}

export function discard(dir: string): void {
  try {
    fs.rmSync(dir, { recursive: true, force: true });
  } catch {
    // best effort: a read-only store keeps it
  }
}

/** Entries of other keys (another onnxruntime, another CPU, an older conversion) and dead staging dirs. */
function removeOtherEntries(variantDir: string, key: string): void {
  const parent = path.join(variantDir, PREPACKED_DIR);
  for (const name of readdirOrEmpty(parent)) {
    if (name === key) continue;
    const staging = /^\.staging-(\d+)-/.exec(name);
    if (staging && processAlive(Number(staging[1]))) continue;
    discard(path.join(parent, name));
  }
}

/**
 * Remembers that saved weights for this key did not reproduce the model's logits, so that later starts do
 * not pay for building them again (a new onnxruntime, CPU or conversion is a new key and is tried afresh).
 */
export function markUnusable(variantDir: string, parts: PrepackKeyParts): void {
  const key = prepackKey(parts);
  try {
    fs.mkdirSync(path.join(variantDir, PREPACKED_DIR), { recursive: true });
    fs.writeFileSync(path.join(variantDir, PREPACKED_DIR, `${key}.unusable`), `${JSON.stringify(parts, null, 2)}\n`);
  } catch {
    // a read-only store tries again next time
  }
  removeOtherEntries(variantDir, `${key}.unusable`);
}

export const isMarkedUnusable = (variantDir: string, key: string) => fs.existsSync(path.join(variantDir, PREPACKED_DIR, `${key}.unusable`));

/** Bit-for-bit equality of two outputs (NaN equal to NaN only if both are). */
export function sameValues(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/**
 * Room an entry needs: onnxruntime writes the decoder's original weights again and the packed copies beside
 * them (measured: 4.3 GB for the 3B int4 decoder's 1.9 GB of weights), so about 2.5x the graph's data, plus
 * a margin for the filesystem.
 */
export function entryBytesNeeded(manifest: Manifest): number {
  const graph = manifest.graphs.decoder;
  const graphBytes = manifest.files.filter((f) => f.name === graph || f.name === `${graph}.data`).reduce((s, f) => s + f.size, 0);
  return Math.ceil(graphBytes * 2.5) + (16 << 20);
}

/** Bytes of every pre-packed entry of a variant (for `dvl list` / `dvl show`). */
export function prepackedBytes(variantDir: string): number {
  let total = 0;
  const parent = path.join(variantDir, PREPACKED_DIR);
  for (const name of readdirOrEmpty(parent)) {
    for (const file of readdirOrEmpty(path.join(parent, name))) total += fs.statSync(path.join(parent, name, file), { throwIfNoEntry: false })?.size ?? 0;
  }
  return total;
}
