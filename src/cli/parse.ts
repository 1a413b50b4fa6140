/**
 * Flag value parsers for commander: the library's (generate/settings.ts), whose usage errors become commander's
 * InvalidArgumentError so that commander reports them as its own ("--steps must be ...", see 'dvl ask --help').
 */
import os from 'node:os';
import { InvalidArgumentError } from 'commander';
import * as settings from '../generate/settings.js';
import { GENERATION_SETTINGS, type SettingName, type SettingSpec, type SettingValues } from '../generate/settings.js';
import { DvlError } from '../util/errors.js';

/** A library parser as a commander one. */
function forCommander<T>(parse: (raw: string) => T): (raw: string) => T {
  return (raw) => {
    try {
      return parse(raw);
    } catch (error) {
      if (error instanceof DvlError) throw new InvalidArgumentError(error.message);
      throw error;
    }
  };
}

export const intInRange = (name: string, min: number, max?: number) => forCommander(settings.intInRange(name, min, max));
export const floatInRange = (name: string, min: number, max: number, options?: { minExclusive?: boolean }) => forCommander(settings.floatInRange(name, min, max, options));
export const oneOf = <T extends string>(name: string, choices: readonly T[]) => forCommander(settings.oneOf(name, choices));

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
  return forCommander(spec.parser(`--${spec.flag}`));
}
