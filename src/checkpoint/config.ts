/**
 * config.json, what every family reads the same way: the file itself, typed key lookup over nested and top-level
 * objects (KeyReader), the Qwen2 text keys (every family's language model is Qwen2), and the ids the reference
 * hard-codes. A family's own keys are read in its folder (models/<family>/config.ts).
 *
 * Defaults are used only where the reference config classes define one and a default cannot silently produce
 * wrong shapes (norm eps, rope theta, tying); shape-defining keys are required. One default is the evaluation's
 * rather than the config class's: a missing `bd3lm_block_size` means 8 (the class says 4, but every released
 * model was trained with blocks of 8 and the upstream evaluation scripts force 8).
 */
import fs from 'node:fs';
import path from 'node:path';
import { modelError } from '../util/errors.js';
import type { TextConfig } from './types.js';

/** The reference hard-codes these ids in generate_with_bd3lm (they are not read from config.json). */
export const MASK_TOKEN_ID = 151671;
export const EOS_TOKEN_ID = 151645;

/** A missing bd3lm_block_size: the block size every released model was trained and evaluated with. */
export const DEFAULT_BLOCK_SIZE = 8;

export type JsonObject = Record<string, unknown>;

export const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `<dir>/config.json` as a JSON object (a family reads its keys); a model error naming the file otherwise. */
export function readConfigJson(dir: string): JsonObject {
  return readJsonObject(path.join(dir, 'config.json'));
}

/** A JSON object file of a checkpoint (config.json, vision_config.json); a model error naming it otherwise. */
export function readJsonObject(file: string): JsonObject {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw modelError(`cannot read ${file}: ${(e as Error).message}`, e);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw modelError(`${file} is not valid JSON: ${(e as Error).message}`, e);
  }
  if (!isObject(json)) throw modelError(`${file}: expected a JSON object`);
  return json;
}

/**
 * Looks keys up in an ordered list of JSON objects and checks their types.
 * `where` names the objects in messages ("text_config.hidden_size", "hidden_size").
 */
export class KeyReader {
  constructor(
    private readonly source: string,
    private readonly scopes: { obj: JsonObject; prefix: string }[],
  ) {}

  /** First scope that has the key (a JSON null counts as absent, as in the Python classes' `is None` checks). */
  private find(key: string): { value: unknown; where: string } | undefined {
    for (const { obj, prefix } of this.scopes) {
      if (key in obj && obj[key] !== null) return { value: obj[key], where: prefix + key };
    }
    return undefined;
  }

  private missing(key: string): Error {
    const places = this.scopes.map((s) => (s.prefix ? `in ${s.prefix.slice(0, -1)}` : 'at the top level'));
    return modelError(`${this.source}: missing "${key}" (looked ${places.join(' and ')})`);
  }

  private bad(where: string, value: unknown, what: string): Error {
    return modelError(`${this.source}: "${where}" must be ${what}, got ${JSON.stringify(value)}`);
  }

  has(key: string): boolean {
    return this.find(key) !== undefined;
  }

  /** The key is written as JSON null somewhere and has no value anywhere. */
  isNull(key: string): boolean {
    return !this.has(key) && this.scopes.some(({ obj }) => obj[key] === null);
  }

  positiveInt(key: string, fallback?: number): number {
    const found = this.find(key);
    if (!found) {
      if (fallback === undefined) throw this.missing(key);
      return fallback;
    }
    const v = found.value;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw this.bad(found.where, v, 'a positive integer');
    return v;
  }

  positiveNumber(key: string, fallback?: number): number {
    const found = this.find(key);
    if (!found) {
      if (fallback === undefined) throw this.missing(key);
      return fallback;
    }
    const v = found.value;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw this.bad(found.where, v, 'a positive number');
    return v;
  }

  boolean(key: string, fallback: boolean): boolean {
    const found = this.find(key);
    if (!found) return fallback;
    if (typeof found.value !== 'boolean') throw this.bad(found.where, found.value, 'true or false');
    return found.value;
  }

  intList(key: string, fallback: number[]): number[] {
    const found = this.find(key);
    if (!found) return [...fallback];
    const v = found.value;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) {
      throw this.bad(found.where, v, 'a list of non-negative integers');
    }
    return [...(v as number[])];
  }

  /** The raw value (for nested objects such as rope_parameters). */
  raw(key: string): unknown {
    return this.find(key)?.value;
  }
}

/** Defaults a family's config class gives the text keys. */
export interface TextDefaults {
  rmsNormEps: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
}

/** The Qwen2 text keys (`text_config` first, then the top level); defaults are the family's config class's. */
export function parseTextConfig(json: JsonObject, source: string, defaults: TextDefaults): TextConfig {
  const scopes: { obj: JsonObject; prefix: string }[] = [];
  if (json.text_config !== undefined && json.text_config !== null) {
    if (!isObject(json.text_config)) throw modelError(`${source}: "text_config" must be an object`);
    scopes.push({ obj: json.text_config, prefix: 'text_config.' });
  }
  scopes.push({ obj: json, prefix: '' });
  const r = new KeyReader(source, scopes);

  const hiddenSize = r.positiveInt('hidden_size');
  const numHeads = r.positiveInt('num_attention_heads');
  // An explicit null means "same as num_attention_heads" (backward-compatibility rule of the config class).
  const numKvHeads = r.isNull('num_key_value_heads') ? numHeads : r.positiveInt('num_key_value_heads');
  return {
    hiddenSize,
    numLayers: r.positiveInt('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim: hiddenSize / numHeads, // checked to be an integer in checkConsistency
    intermediateSize: r.positiveInt('intermediate_size'),
    vocabSize: r.positiveInt('vocab_size'),
    rmsNormEps: r.positiveNumber('rms_norm_eps', defaults.rmsNormEps),
    ropeTheta: readRopeTheta(r, source, defaults.ropeTheta),
    tieWordEmbeddings: r.boolean('tie_word_embeddings', defaults.tieWordEmbeddings),
    ...(r.has('max_position_embeddings') ? { maxPositionEmbeddings: r.positiveInt('max_position_embeddings') } : {}),
  };
}

/** `rope_theta` (transformers < 5) or `rope_parameters.rope_theta` (newer configs). */
function readRopeTheta(r: KeyReader, source: string, fallback: number): number {
  if (r.has('rope_theta')) return r.positiveNumber('rope_theta');
  const params = r.raw('rope_parameters');
  if (isObject(params) && params.rope_theta !== undefined) {
    const theta = params.rope_theta;
    if (typeof theta !== 'number' || !Number.isFinite(theta) || theta <= 0) {
      throw modelError(`${source}: "rope_parameters.rope_theta" must be a positive number, got ${JSON.stringify(theta)}`);
    }
    return theta;
  }
  return fallback;
}

/** Relations between text keys that every later stage relies on. */
export function checkTextConfig(t: TextConfig, source: string): void {
  const fail = (msg: string) => {
    throw modelError(`${source}: ${msg}`);
  };
  if (t.hiddenSize % t.numHeads !== 0) fail(`hidden_size ${t.hiddenSize} is not divisible by num_attention_heads ${t.numHeads}`);
  if (t.numHeads % t.numKvHeads !== 0) fail(`num_attention_heads ${t.numHeads} is not divisible by num_key_value_heads ${t.numKvHeads}`);
  if (t.headDim % 2 !== 0) fail(`text head size ${t.headDim} must be even for rotary embeddings`);
  if (t.vocabSize <= MASK_TOKEN_ID) fail(`vocab_size ${t.vocabSize} has no row for the mask token ${MASK_TOKEN_ID}`);
}

