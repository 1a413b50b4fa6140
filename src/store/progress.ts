/**
 * How the store tells what it is doing while a model is made ready (download, conversion, waiting for another
 * process): the CLI shows it as a spinner or plain lines (cli/progress.ts), the server as log lines.
 */
import type { ConvertStage } from '../convert/convert.js';

export interface Progress {
  convert(stage: ConvertStage, done: number, total: number): void;
  step(text: string): void;
  /** Fast-changing status (per block): shown on a terminal only, never logged line by line. */
  live(text: string): void;
  succeed(text: string): void;
  /** Something the user should know (not progress): one `dvl: warning:` line, shown even with --quiet. */
  warn(text: string): void;
  stop(): void;
}
