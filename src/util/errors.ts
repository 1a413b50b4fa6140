/**
 * Errors that reach the user as one line and an exit code.
 * The CLI prints `dvl: <message>` and exits with `exitCode`; anything else is a bug and gets a stack trace
 * only with --verbose.
 */
export type ErrorKind = 'usage' | 'input' | 'model' | 'interrupted';

const EXIT_CODES: Record<ErrorKind, number> = {
  usage: 1,
  input: 2,
  model: 3,
  interrupted: 130,
};

export class DvlError extends Error {
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DvlError';
    this.kind = kind;
  }
  get exitCode(): number {
    return EXIT_CODES[this.kind];
  }
}

/** Bad command-line usage: a flag value out of range, a missing argument. Exit code 1. */
export const usageError = (message: string) => new DvlError('usage', message);
/** Bad input data: a missing or corrupt image, unreadable prompt file. Exit code 2. */
export const inputError = (message: string, cause?: unknown) => new DvlError('input', message, { cause });
/** What to do about a converted model whose files are damaged (their sizes right, their contents not). */
export const REPAIR_HINT = "convert it again with 'dvl pull --force MODEL --dtype DTYPE' (the same model and dtype)";

/** A checkpoint or converted model that cannot be used. Exit code 3. */
export const modelError = (message: string, cause?: unknown) => new DvlError('model', message, { cause });
