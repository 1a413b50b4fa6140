/**
 * Opens a checkpoint directory (a Hugging Face snapshot of a DiffusionVL or Qwen2.5-VL repo):
 * config.json, tokenizer files and safetensors weights, single-file or sharded with an index.
 *
 * Opening reads only config.json, the index and the safetensors headers. Tensors are read one at a time
 * on demand. `*.py` remote-code files are never looked at.
 */
import fs from 'node:fs';
import path from 'node:path';
import { modelError } from '../util/errors.js';
import { familyForConfig, familyOf } from '../models/index.js';
import { readConfigJson, readJsonObject } from './config.js';
import { textTensors } from './expected-tensors.js';
import { elementCount, readSafetensorsHeader, readTensorF32, readTensorRangeF32, type SafetensorsEntry, type SafetensorsHeader } from './safetensors.js';
import type { SafetensorsDtype, TensorInfo, WeightSource } from './types.js';
import type { AnyModelConfig } from '../models/index.js';
import { mapWeightNames } from './weight-names.js';

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';
const READABLE_DTYPES: readonly string[] = ['BF16', 'F16', 'F32'] satisfies SafetensorsDtype[];

/** Non-weight files whose content affects what we produce (config, tokenizer, prompt/generation defaults). */
const SOURCE_FILES = [
  'config.json',
  'generation_config.json',
  'preprocessor_config.json',
  'chat_template.json',
  'chat_template.jinja',
  'tokenizer.json',
  'tokenizer_config.json',
  'vocab.json',
  'merges.txt',
  'special_tokens_map.json',
  'added_tokens.json',
];

export interface CheckpointFile {
  /** Absolute path (symlinks of a Hugging Face cache snapshot are not resolved). */
  path: string;
  size: number;
}

export class Checkpoint implements WeightSource {
  constructor(
    readonly dir: string,
    readonly config: AnyModelConfig,
    /** Every file that matters: source files above that exist, the index, the shards. Sorted by path. */
    readonly files: CheckpointFile[],
    private readonly tensors: Map<string, TensorInfo>,
    /** Stored tensor names that map to nothing we use (for debugging output). */
    readonly ignoredNames: string[],
  ) {}

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw modelError(`${this.dir}: the checkpoint has no tensor ${name}`);
    return t;
  }

  readF32(name: string): Float32Array {
    const t = this.info(name);
    return readTensorF32(t.file, { ...t, name: t.storedName });
  }

  /** Like readF32 but fills a caller-owned buffer (length >= element count) and returns the filled prefix. */
  readF32Into(name: string, into: Float32Array): Float32Array {
    const t = this.info(name);
    return readTensorF32(t.file, { ...t, name: t.storedName }, into);
  }

  /**
   * Rows [start, start+count) of a tensor seen as [shape[0], rest] (e.g. a few embedding rows, or a big
   * embedding converted in slices without holding it all as float32).
   */
  readRowsF32(name: string, start: number, count: number): Float32Array {
    const t = this.info(name);
    const rowLength = elementCount(t.shape.slice(1));
    if (start < 0 || count < 0 || start + count > (t.shape[0] ?? 1)) {
      throw modelError(`${this.dir}: rows [${start}, ${start + count}) are outside ${name} (${t.shape[0]} rows)`);
    }
    return readTensorRangeF32(t.file, { ...t, name: t.storedName }, start * rowLength, count * rowLength);
  }

  /**
   * Checks that every tensor the config implies exists with the right shape.
   * The error names the first problem and how many others there are.
   */
  validate(): void {
    const problems: string[] = [];
    const family = familyOf(this.config);
    for (const { name, shape } of [...textTensors(this.config.text), ...family.visionTensors(this.config)]) {
      const t = this.tensors.get(name);
      if (!t) {
        problems.push(`missing tensor ${name}`);
      } else if (!sameShape(t.shape, shape)) {
        if (name === 'model.embed_tokens.weight' && t.shape.length === 2 && t.shape[1] === shape[1]) {
          problems.push(`${t.storedName} has ${t.shape[0]} rows but config.json vocab_size is ${shape[0]}`);
        } else {
          problems.push(`tensor ${t.storedName} has shape [${t.shape.join(', ')}], config.json implies [${shape.join(', ')}]`);
        }
      }
    }
    if (problems.length > 0) {
      const others = problems.length - 1;
      const tail = others > 0 ? ` (and ${others} other tensor problem${others === 1 ? '' : 's'})` : '';
      throw modelError(`${this.dir}: ${problems[0]}${tail}`);
    }
  }
}

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

/** Opens `dir`: reads config.json, the index and safetensors headers; maps tensor names. */
export function openCheckpoint(dir: string): Checkpoint {
  const absDir = path.resolve(dir);
  const entries = listDirectory(absDir);
  const safetensors = entries.filter((f) => f.endsWith('.safetensors'));
  const hasConfig = entries.includes('config.json');
  if (!hasConfig || (!entries.includes(SINGLE_FILE) && !entries.includes(INDEX_FILE))) {
    throw notACheckpoint(absDir, entries, hasConfig, safetensors);
  }

  const configPath = path.join(absDir, 'config.json');
  const json = readConfigJson(absDir);
  const { family, note } = familyForConfig(json, configPath);
  // transformers prefers the single file when both exist; so do we.
  const index = entries.includes(SINGLE_FILE) ? undefined : readIndex(absDir);
  const shardNames = index ? index.shards : [SINGLE_FILE];
  const headers = shardNames.map((name) => readSafetensorsHeader(path.join(absDir, name)));
  if (index) checkIndexAgainstHeaders(absDir, index.weightMap, headers);

  const byStoredName = new Map<string, { header: SafetensorsHeader; entry: SafetensorsEntry }>();
  for (const header of headers) {
    for (const entry of header.tensors) {
      const other = byStoredName.get(entry.name);
      if (other) throw modelError(`${absDir}: tensor ${entry.name} is stored in both ${path.basename(other.header.file)} and ${path.basename(header.file)}`);
      byStoredName.set(entry.name, { header, entry });
    }
  }
  const mapping = mapWeightNames(byStoredName.keys(), absDir, family.canonicalName);
  const tensors = new Map<string, TensorInfo>();
  const add = (name: string, header: SafetensorsHeader, entry: SafetensorsEntry) => {
    if (!READABLE_DTYPES.includes(entry.dtype)) {
      throw modelError(`${header.file}: tensor ${entry.name} has dtype ${entry.dtype}; only ${READABLE_DTYPES.join(', ')} are supported`);
    }
    tensors.set(name, { name, storedName: entry.name, dtype: entry.dtype as SafetensorsDtype, shape: entry.shape, file: header.file, offset: entry.offset, byteLength: entry.byteLength });
  };
  for (const [name, stored] of mapping.canonical) {
    const { header, entry } = byStoredName.get(stored)!;
    add(name, header, entry);
  }
  // The upstream converter's side files (vision_tower.safetensors, projector.safetensors): their tensors win.
  const ignored = [...mapping.ignored];
  const sideFiles = family.sideWeightFiles.filter((side) => entries.includes(side.file));
  for (const side of sideFiles) {
    const header = readSafetensorsHeader(path.join(absDir, side.file));
    const names = header.tensors.map((t) => t.name);
    const sideMapping = mapWeightNames(names, path.join(absDir, side.file), side.names(names));
    for (const [name, stored] of sideMapping.canonical) add(name, header, header.tensors.find((t) => t.name === stored)!);
    ignored.push(...sideMapping.ignored.map((n) => `${side.file}:${n}`));
  }

  const sideConfigName = family.sideConfigFile && entries.includes(family.sideConfigFile) ? family.sideConfigFile : undefined;
  const sideConfig = sideConfigName ? readJsonObject(path.join(absDir, sideConfigName)) : undefined;
  const parsed = family.parseConfig(json, configPath, (name) => tensors.get(name)?.shape, sideConfig);
  const notes = [...(note ? [note] : []), ...(parsed.notes ?? [])];
  const config = notes.length > 0 ? { ...parsed, notes } : parsed;
  const fileNames = [
    ...SOURCE_FILES.filter((f) => entries.includes(f)),
    ...(sideConfigName ? [sideConfigName] : []),
    ...(index ? [INDEX_FILE] : []),
    ...shardNames,
    ...sideFiles.map((side) => side.file),
  ];
  const files = fileNames
    .map((f) => path.join(absDir, f))
    .sort()
    .map((p) => ({ path: p, size: fs.statSync(p).size }));
  return new Checkpoint(absDir, config, files, tensors, ignored);
}

/** Paths of the two tokenizer files the tokenizer needs. */
export function tokenizerFiles(dir: string): { tokenizerJson: string; tokenizerConfig: string } {
  const absDir = path.resolve(dir);
  const tokenizerJson = path.join(absDir, 'tokenizer.json');
  const tokenizerConfig = path.join(absDir, 'tokenizer_config.json');
  const missing = [tokenizerJson, tokenizerConfig].filter((p) => !isFile(p)).map((p) => path.basename(p));
  if (missing.length > 0) throw modelError(`${absDir}: missing tokenizer file${missing.length > 1 ? 's' : ''} ${missing.join(' and ')}`);
  return { tokenizerJson, tokenizerConfig };
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function listDirectory(dir: string): string[] {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch {
    throw modelError(`checkpoint directory ${dir} does not exist`);
  }
  if (!stat.isDirectory()) throw modelError(`${dir} is not a directory (expected a checkpoint directory)`);
  return fs.readdirSync(dir).sort();
}

/** Says what the directory has instead, so the user can tell a wrong path from a partial download. */
function notACheckpoint(dir: string, entries: string[], hasConfig: boolean, safetensors: string[]): Error {
  const shown = entries.length === 0 ? 'it is empty' : `found: ${entries.slice(0, 8).join(', ')}${entries.length > 8 ? `, … (${entries.length} entries)` : ''}`;
  if (!hasConfig && safetensors.length === 0) {
    return modelError(`${dir} is not a checkpoint: no config.json and no .safetensors weights (${shown})`);
  }
  if (!hasConfig) return modelError(`${dir}: no config.json next to the weights (${shown})`);
  if (entries.some((f) => f.endsWith('.bin') || f.endsWith('.pth'))) {
    return modelError(`${dir}: only PyTorch .bin/.pth weights found; dvl reads safetensors (${SINGLE_FILE} or ${INDEX_FILE})`);
  }
  return modelError(`${dir}: no ${SINGLE_FILE} or ${INDEX_FILE} (${shown})`);
}

/** The weight map of model.safetensors.index.json and its shard file names (checked against the headers later). */
function readIndex(dir: string): { weightMap: Record<string, string>; shards: string[] } {
  const file = path.join(dir, INDEX_FILE);
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw modelError(`${file} is not valid JSON: ${(e as Error).message}`, e);
  }
  const weightMap = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw modelError(`${file}: missing "weight_map"`);
  }
  const shards = new Set<string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    // A shard name is a file in the checkpoint directory, never a path elsewhere.
    if (typeof shard !== 'string' || shard !== path.basename(shard) || shard === '..' || !shard.endsWith('.safetensors')) {
      throw modelError(`${file}: tensor ${name} maps to ${JSON.stringify(shard)}, not a .safetensors file name`);
    }
    shards.add(shard);
  }
  if (shards.size === 0) throw modelError(`${file}: "weight_map" is empty`);
  const missing = [...shards].filter((s) => !isFile(path.join(dir, s)));
  if (missing.length > 0) {
    throw modelError(`${dir}: shard ${missing[0]} listed in ${INDEX_FILE} is missing${missing.length > 1 ? ` (and ${missing.length - 1} more)` : ''} (incomplete download?)`);
  }
  return { weightMap: weightMap as Record<string, string>, shards: [...shards].sort() };
}

/** Every index entry must be in the shard it names, and every stored tensor must be in the index. */
function checkIndexAgainstHeaders(dir: string, weightMap: Record<string, string>, headers: SafetensorsHeader[]): void {
  const problems: string[] = [];
  const stored = new Map<string, string>(); // tensor -> shard that holds it
  for (const h of headers) for (const t of h.tensors) stored.set(t.name, path.basename(h.file));
  for (const [name, shard] of Object.entries(weightMap)) {
    const actual = stored.get(name);
    if (actual === undefined) problems.push(`${name} is listed in ${INDEX_FILE} but not stored in ${shard}`);
    else if (actual !== shard) problems.push(`${name} is listed in ${INDEX_FILE} under ${shard} but stored in ${actual}`);
  }
  for (const [name, shard] of stored) {
    if (!(name in weightMap)) problems.push(`${name} is stored in ${shard} but not listed in ${INDEX_FILE}`);
  }
  if (problems.length > 0) {
    throw modelError(`${dir}: ${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} other index mismatches)` : ''}`);
  }
}
