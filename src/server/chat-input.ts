/**
 * What both APIs' requests become before they reach the model: a conversation (system text, earlier turns,
 * the new user turn as ordered text and image parts), the images' bytes, and generation settings with
 * `dvl ask`'s defaults for whatever a request leaves out.
 */
import type { FamilyImageOptions, JsonSchemaInput } from '../ask.js';
import type { GenerationSettings } from '../generate/bd3lm.js';
import type { Turn, UserPart } from '../prompt/conversation.js';
import type { AnyModelConfig } from '../models/index.js';
import { pixelBudgetFor, type RequestPixelBudget } from '../models/index.js';
import { conflictingBounds } from '../preprocess/pixel-budget.js';
import { ServerError } from './errors.js';
import { checkImageLimits, loadImageReference, type MediaPolicy } from './media.js';

/** A message with its image references still unresolved (data: URLs, base64, URLs, paths). */
export interface InputMessage {
  role: 'system' | 'user' | 'assistant';
  parts: InputPart[];
}

export type InputPart = { kind: 'text'; text: string } | { kind: 'image'; ref: string; bareBase64?: boolean };

/** Settings a request may give; the rest take `dvl ask`'s defaults. */
export type RequestSettings = Partial<GenerationSettings> & { minPixels?: number; maxPixels?: number } & FamilyImageOptions;

export interface ChatInput {
  model: string;
  /** undefined: the model's default system prompt (as `dvl ask`); null: none. */
  system: string | null | undefined;
  history: Turn[];
  historyImages: Buffer[];
  parts: UserPart[];
  images: Buffer[];
  settings: RequestSettings;
  stop: string[];
  /** Ollama's keep_alive, in ms (< 0 forever); undefined: the server's. */
  keepAliveMs?: number;
  /** Ollama's num_ctx: a context shorter than the model's (a longer one is capped at the model's). */
  contextLength?: number;
  /**
   * Structured output: the answer is JSON valid against this schema ('json_object': any JSON object). The route
   * has checked that the schema compiles (request-fields.ts checkRequestFormat); the gen length is checked
   * against it before the request waits in line.
   */
  jsonSchema?: JsonSchemaInput;
  /** How the API calls the gen length (max_tokens, num_predict), for the error of a budget too small for the schema. */
  budgetName?: string;
  /**
   * Keep the prompt prefix's decoder rows from the previous request (default true). dvl's own route turns it
   * off unless asked (`reuse_prefix`): `dvl ask --host` prints what a local `dvl ask` prints, and a reused
   * prefix makes one call fewer (NFE).
   */
  reuseCache?: boolean;
}

/** `dvl ask`'s -n default: the gen length of a request that sets none. */
export const DEFAULT_GEN_LENGTH = 128;

/** A request's pixel bounds that cannot both hold: a 400 now, before the model is loaded. */
export function checkPixelBounds(settings: RequestSettings): void {
  const conflict = conflictingBounds(settings);
  if (conflict) throw new ServerError(400, 'invalid_request', conflict, { param: 'min_pixels' });
}

/**
 * `dvl ask`'s defaults (gen length 128, 8 steps, greedy, static remasking) with the model's block size, and the
 * request's pixel bounds over the model's default budget (its config.json's, else 384²..512²).
 */
export function fullSettings(
  settings: RequestSettings,
  config: AnyModelConfig,
): { settings: GenerationSettings; pixels: RequestPixelBudget; imageOptions: FamilyImageOptions } {
  checkPixelBounds(settings);
  return {
    settings: {
      genLength: settings.genLength ?? DEFAULT_GEN_LENGTH,
      steps: settings.steps ?? 8,
      blockSize: settings.blockSize ?? config.blockSize,
      temperature: settings.temperature ?? 0,
      topK: settings.topK ?? 0,
      topP: settings.topP ?? 1,
      remasking: settings.remasking ?? 'low_confidence_static',
      threshold: settings.threshold ?? 0.85,
      seed: settings.seed,
    },
    pixels: pixelBudgetFor(config, { minPixels: settings.minPixels, maxPixels: settings.maxPixels }),
    imageOptions: dropUndefinedKeys({ tiles: settings.tiles, imageMode: settings.imageMode }),
  };
}

function dropUndefinedKeys<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

/**
 * The new question must ask something, text or an image, as `dvl ask ""` must (exit 2 there, 400 here):
 * whitespace alone is no text. `name` is the field as the API names it (messages[2].content, prompt).
 */
export function checkQuestion(parts: InputPart[], name: string): void {
  if (parts.some((p) => p.kind === 'image' || p.text.trim().length > 0)) return;
  throw new ServerError(400, 'invalid_request', `${name} is empty: ask something (text or an image)`, { param: name });
}

/**
 * Messages -> the conversation: system messages (joined by a newline) first, then turns that must end with a
 * user message; every image fetched or decoded from base64 and its size checked from its header, before
 * anything reaches the model.
 */
export async function toConversation(
  messages: InputMessage[],
  policy: MediaPolicy,
  signal?: AbortSignal,
): Promise<Pick<ChatInput, 'system' | 'history' | 'historyImages' | 'parts' | 'images'>> {
  const systemTexts: string[] = [];
  const turns: { role: 'user' | 'assistant'; parts: InputPart[] }[] = [];
  for (const message of messages) {
    if (message.role === 'system') {
      if (turns.length > 0) throw new ServerError(400, 'invalid_request', 'system messages must come before the conversation', { param: 'messages' });
      if (message.parts.some((p) => p.kind === 'image')) throw new ServerError(400, 'invalid_request', 'a system message cannot hold images', { param: 'messages' });
      systemTexts.push(message.parts.map((p) => (p.kind === 'text' ? p.text : '')).join('\n'));
    } else {
      if (message.role === 'assistant' && message.parts.some((p) => p.kind === 'image')) {
        throw new ServerError(400, 'invalid_request', 'an assistant message cannot hold images', { param: 'messages' });
      }
      turns.push({ role: message.role, parts: message.parts });
    }
  }
  const last = turns.at(-1);
  if (!last || last.role !== 'user') throw new ServerError(400, 'invalid_request', 'the last message must be a user message', { param: 'messages' });

  const images: Buffer[] = [];
  let imageNumber = 0;
  const resolve = async (part: InputPart): Promise<UserPart> => {
    if (part.kind === 'text') return part;
    const label = `image ${++imageNumber}`;
    const bytes = await loadImageReference(part.ref, policy, { bareBase64: part.bareBase64, signal, label });
    await checkImageLimits(bytes, policy, { label });
    images.push(bytes);
    return { kind: 'image' };
  };
  const resolved: Turn[] = [];
  for (const turn of turns) {
    const parts: UserPart[] = [];
    for (const part of turn.parts) parts.push(await resolve(part));
    if (turn.role === 'assistant') resolved.push({ role: 'assistant', text: parts.map((p) => (p.kind === 'text' ? p.text : '')).join('\n') });
    else resolved.push({ role: 'user', text: '', parts });
  }
  const newTurn = resolved.pop() as Extract<Turn, { role: 'user' }>;
  const newImages = newTurn.parts!.filter((p) => p.kind === 'image').length;
  return {
    system: systemTexts.length > 0 ? systemTexts.join('\n') : undefined,
    history: resolved,
    historyImages: images.slice(0, images.length - newImages),
    parts: newTurn.parts!,
    images: images.slice(images.length - newImages),
  };
}
