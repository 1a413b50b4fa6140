/**
 * What the page sends to and reads from `dvl serve`, as the page sees it. These are copies of the server's
 * types, limited to what the page uses, so that the front end type-checks against the DOM only, without
 * Node's types (src/ask.ts: AskEvent, AskResult; src/server/dvl-api.ts: DvlAskBody, DvlAskLine;
 * src/prompt/conversation.ts: Turn). `tsc -p tsconfig.json` checks in test/web-ui.test.ts that the server's
 * types still fit these: a change on one side that the other does not follow fails the type check.
 */

/** One event of an answer as it is computed (POST /dvl/v1/ask streams them as `{"event": ...}` lines). */
export type AskEvent =
  | { type: 'stage'; stage: 'preprocess' | 'vision' | 'prefill' | 'generate' }
  | { type: 'image-progress'; image: number; images: number; done: number; crops: number }
  /** A block starts being denoised: `size` output slots from output index `firstIndex` on. */
  | { type: 'block-start'; block: number; firstIndex: number; size: number }
  /** One denoising step filled the slots `indices` (output indices) with these tokens. */
  | { type: 'unmask'; block: number; step: number; indices: number[]; ids: number[]; pieces: string[] }
  /** The block is done; `text` is the answer text it completed (the block-end texts add up to the answer). */
  | { type: 'block-end'; block: number; firstIndex: number; ids: number[]; text: string; committed: boolean }
  | { type: 'finished'; text: string; nfe: number; blocks: number; stoppedAtEos: boolean };

export interface AskStats {
  /** Decoder calls. */
  nfe: number;
  promptTokens: number;
  imageTokens: number;
  /** Prompt tokens whose rows came from the previous request (reuse_prefix), not computed again. */
  cachedTokens: number;
  blocks: number;
  ms: { preprocess: number; vision: number; prefill: number; decode: number };
}

export interface AskResult {
  text: string;
  /** The generated token ids (their count is the answer's length in tokens). */
  tokens: number[];
  stoppedAtEos: boolean;
  finishReason: 'eos' | 'stop' | 'length';
  stats: AskStats;
}

/** The NDJSON lines of an answer (empty lines are keep-alive pings). */
export type AskLine =
  | { event: AskEvent }
  | { result: AskResult; load_ms: number; queue_ms: number }
  | { error: { message: string; code: string } };

/** An earlier turn of the conversation; a user turn's images come before its text. */
export type Turn = { role: 'user'; text: string; images?: number } | { role: 'assistant'; text: string };

export type Remasking = 'low_confidence_static' | 'low_confidence_dynamic';

/** Generation settings; a missing one takes `dvl ask`'s default. */
export interface AskSettings {
  genLength?: number;
  steps?: number;
  remasking?: Remasking;
  threshold?: number;
  temperature?: number;
  seed?: number | null;
}

/** The body of POST /dvl/v1/ask as the page sends it. */
export interface AskBody {
  model: string;
  prompt: string;
  /** The new question's images, base64, placed before its text. */
  images: string[];
  history: Turn[];
  /** The images of the history's user turns, in order, base64. */
  history_images: string[];
  settings: AskSettings;
  /** Reuse the previous request's prompt rows: follow-up questions are not computed again from the start. */
  reuse_prefix: boolean;
  /** Structured output: "json" (any JSON object) or a JSON Schema; absent: text. */
  format?: 'json' | boolean | Record<string, unknown>;
}

/** GET /v1/models */
export interface ModelList {
  data: { id: string }[];
}

/** A refusal: OpenAI's shape `{"error": {"message"}}` (Ollama's `{"error": "..."}` is read too). */
export interface ErrorBody {
  error?: string | { message?: string };
}
