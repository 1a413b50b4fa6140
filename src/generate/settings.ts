/**
 * The generation settings a user can choose, described once: a flag, chat's `/set`, a `dvl batch` request line and
 * the APIs accept exactly the same values. Each value parser either returns a valid value or throws a one-line
 * usage error naming the value as the caller calls it ("--steps", "\"steps\"").
 */
import { usageError } from '../util/errors.js';
import type { GenerationSettings } from './bd3lm.js';
import { REMASKING_STRATEGIES } from './schedule.js';

export function intInRange(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (raw: string): number => {
    const value = Number(raw);
    if (!/^[+-]?\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`;
      throw usageError(`${name} must be ${range}, got '${raw}'`);
    }
    return value;
  };
}

export function floatInRange(name: string, min: number, max: number, options: { minExclusive?: boolean } = {}) {
  return (raw: string): number => {
    const value = Number(raw);
    const tooLow = options.minExclusive ? value <= min : value < min;
    if (raw.trim() === '' || !Number.isFinite(value) || tooLow || value > max) {
      const low = options.minExclusive ? `> ${min}` : `>= ${min}`;
      throw usageError(`${name} must be a number ${low} and <= ${max}, got '${raw}'`);
    }
    return value;
  };
}

export function oneOf<T extends string>(name: string, choices: readonly T[]) {
  return (raw: string): T => {
    if (!(choices as readonly string[]).includes(raw)) {
      throw usageError(`${name} must be one of ${choices.join(', ')}, got '${raw}'`);
    }
    return raw as T;
  };
}

/** The generation settings a user can choose, by their GenerationSettings field (the seed given). */
export type SettingValues = Required<GenerationSettings>;

export type SettingName = keyof SettingValues;

export interface SettingSpec<K extends SettingName> {
  /** The flag without its dashes, also the name `/set` takes in chat. */
  flag: string;
  /** The key of a `dvl batch` request line. */
  key: string;
  /** Other names a request line may use for it (upstream's). */
  aliases?: readonly string[];
  /** What a batch request gives: a JSON number, or a string. */
  json: 'number' | 'string';
  /** A parser whose error messages call the value `name`. */
  parser(name: string): (raw: string) => SettingValues[K];
}

export const GENERATION_SETTINGS: { [K in SettingName]: SettingSpec<K> } = {
  genLength: { flag: 'gen-length', key: 'gen_length', json: 'number', parser: (name) => intInRange(name, 1, 1 << 16) },
  steps: { flag: 'steps', key: 'steps', json: 'number', parser: (name) => intInRange(name, 1, 1024) },
  blockSize: { flag: 'block-size', key: 'block_size', json: 'number', parser: (name) => intInRange(name, 1, 4096) },
  temperature: { flag: 'temperature', key: 'temperature', json: 'number', parser: (name) => floatInRange(name, 0, 100) },
  topK: { flag: 'top-k', key: 'top_k', json: 'number', parser: (name) => intInRange(name, 0) },
  topP: { flag: 'top-p', key: 'top_p', json: 'number', parser: (name) => floatInRange(name, 0, 1, { minExclusive: true }) },
  remasking: { flag: 'remasking', key: 'remasking', json: 'string', parser: (name) => oneOf(name, REMASKING_STRATEGIES) },
  // confidence_threshold: the name DiffusionVL's own generate() and evaluation scripts use.
  threshold: { flag: 'threshold', key: 'threshold', aliases: ['confidence_threshold'], json: 'number', parser: (name) => floatInRange(name, 0, 1) },
  seed: { flag: 'seed', key: 'seed', json: 'number', parser: (name) => intInRange(name, 0) },
};

export const SETTING_NAMES = Object.keys(GENERATION_SETTINGS) as SettingName[];
