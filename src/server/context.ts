/** What the server's routes share: the server's options and the answering service's parts. */
import type { AnswerContext } from './answer.js';
import type { MediaPolicy } from './media.js';
import type { PoolOptions } from './model-pool.js';

export interface AppOptions {
  pool: PoolOptions;
  /** The host the server listens on (its name is always an allowed Host header). */
  host: string;
  /** Further Host header names to accept (a reverse proxy's name). */
  allowedHosts: string[];
  /** `--ctx-size`: the most prompt plus answer tokens a request may use, below the models' own context. */
  ctxSize?: number;
  apiKey?: string;
  corsOrigins: string[];
  bodyLimitBytes: number;
  maxQueue: number;
  media: MediaPolicy;
  /** Milliseconds between SSE/NDJSON keep-alive pings while a stream waits (queue, load, prefill). */
  pingMs: number;
  /** Serve the chat page at `/` (default true; `--no-ui`: false, and `/` answers a plain "dvl is running"). */
  ui?: boolean;
  /** Where the built page is (default: the package's dist/web/). */
  uiDir?: string;
  /** A log line (stderr). */
  log(line: string): void;
}

/** What the routes share. */
export interface RouteContext extends AnswerContext {
  options: AppOptions;
  /** Closes when the server drains: streams end, nothing new starts. */
  draining: AbortSignal;
}
