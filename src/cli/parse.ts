/** Flag value parsers: each one either returns a valid value or throws a one-line usage error. */
import { InvalidArgumentError } from 'commander';

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
