/**
 * Flag value parsers: each one either returns a valid value or throws a one-line usage error. The generation
 * settings are described once (GENERATION_SETTINGS), so that a flag, chat's `/set` and a `dvl batch` request
 * line accept exactly the same values.
 */
import os from 'node:os';
import { InvalidArgumentError } from 'commander';
import { REMASKING_STRATEGIES, type RemaskingStrategy } from '../generate/schedule.js';

export function intInRange(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (raw: string): number => {
    const value = Number(raw);
    if (!/^[+-]?\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`;
      throw new InvalidArgumentError(`${name} must be ${range}, got '${raw}'`);
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
      throw new InvalidArgumentError(`${name} must be a number ${low} and <= ${max}, got '${raw}'`);
    }
    return value;
  };
}

export function oneOf<T extends string>(name: string, choices: readonly T[]) {
  return (raw: string): T => {
    if (!(choices as readonly string[]).includes(raw)) {
      throw new InvalidArgumentError(`${name} must be one of ${choices.join(', ')}, got '${raw}'`);
    }
    return raw as T;
  };
}

/** The generation settings a user can choose, by their GenerationSettings field. */
export interface SettingValues {
  genLength: number;
  steps: number;
  blockSize: number;
  temperature: number;
  topK: number;
  topP: number;
  remasking: RemaskingStrategy;
  threshold: number;
  seed: number;
}

export type SettingName = keyof SettingValues;

interface SettingSpec<K extends SettingName> {
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

/**
 * --threads above the machine's cores: capped, with a warning. onnxruntime's threads then take turns on the
 * cores and spin while they wait (reported: 64 threads on 2 cores ran 6.5x slower than 2).
 */
export function capThreads(threads: number | undefined, cores = os.availableParallelism(), warn = (line: string) => process.stderr.write(`dvl: warning: ${line}\n`)): number | undefined {
  if (threads === undefined || threads <= cores) return threads;
  warn(`--threads ${threads} is more than the ${cores} cores here: using ${cores}`);
  return cores;
}

/** The commander parser of a setting's flag (errors name the flag, e.g. "--steps must be ..."). */
export function flagParser<K extends SettingName>(name: K): (raw: string) => SettingValues[K] {
  const spec = GENERATION_SETTINGS[name] as SettingSpec<K>;
  return spec.parser(`--${spec.flag}`);
}
