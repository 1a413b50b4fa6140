/**
 * The wire form of one question as dvl's own route takes and answers it (POST /dvl/v1/ask: the server in
 * src/server/dvl-api.ts, the clients `dvl ask --host` / `dvl chat --host` in src/cli/remote.ts and the chat page):
 * the question and its settings in the body, then one NDJSON line per AskEvent and a last line with the result
 * (or an error). The route's header comment describes the fields.
 */
import type { AskEvent, AskResult, JsonSchemaInput } from './ask.js';
import type { GenerationSettings } from './generate/bd3lm.js';
import type { RequestPixelBudget } from './models/index.js';
import type { Turn } from './prompt/conversation.js';
import type { ErrorKind } from './util/errors.js';

/** The body of POST /dvl/v1/ask. */
export interface DvlAskBody {
  model: string;
  prompt: string;
  images?: string[];
  system?: string | null;
  history?: Turn[];
  history_images?: string[];
  settings?: Partial<Omit<GenerationSettings, 'seed'>> & { seed?: number | null };
  min_pixels?: number;
  max_pixels?: number;
  tiles?: number;
  image_mode?: 'anyres' | 'pad';
  stop?: string[];
  /** Reuse the previous request's prompt rows (default false: the stats of a local run). */
  reuse_prefix?: boolean;
  /** Structured output: "json" (any JSON object) or a JSON Schema (an object, or true/false). */
  format?: WireFormat;
}

/** A request's `format` on the wire: "json" for any JSON object, as on Ollama's API and `dvl batch` lines. */
export type WireFormat = 'json' | boolean | Record<string, unknown>;

/** The library's format -> the wire's. */
export function wireFormat(format: JsonSchemaInput): WireFormat {
  return format === 'json_object' ? 'json' : format;
}

/** The wire's format -> the library's (the server checks the schema itself). */
export function formatFromWire(format: WireFormat): JsonSchemaInput {
  return format === 'json' ? 'json_object' : format;
}

/** The NDJSON lines of its answer. */
export type DvlAskLine =
  | { event: AskEvent }
  | { result: AskResult; settings: GenerationSettings; dtype: string; load_ms: number; queue_ms: number; pixel_budget?: RequestPixelBudget }
  | { error: { message: string; code: string; kind?: ErrorKind } };
