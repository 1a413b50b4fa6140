/** Assertions on the errors users see. */
import { expect } from 'vitest';
import { DvlError } from '../../src/util/errors.js';

/** `fn` throws a model error (exit code 3), whose message matches `pattern` when given. */
export function expectModelError(fn: () => unknown, pattern?: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(DvlError);
  expect((caught as DvlError).kind).toBe('model');
  if (pattern) expect((caught as Error).message).toMatch(pattern);
}
