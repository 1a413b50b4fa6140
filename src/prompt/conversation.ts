/**
 * The prompt as DiffusionVL was trained and evaluated with it (spec §4): LLaVA's `qwen_2_5` conversation
 * (ChatML), e.g.
 *
 *   <|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n
 *   <|im_start|>user\n<image>\nDescribe this image.<|im_end|>\n
 *   <|im_start|>assistant\n
 *
 * How the reference builds and tokenizes it (train/llava/conversation.py `get_prompt`, mm_utils.py
 * `tokenizer_image_token`, the lmms-eval model file):
 * - a user turn with images is `"<image> <image>" + "\n" + text`: one placeholder per image, joined by a
 *   single space, then a newline, then the question; a turn without images is just the text;
 * - each turn is `<|im_start|>` + role + "\n" + content + `<|im_end|>` + "\n"; the prompt ends with
 *   `<|im_start|>assistant\n`; the system turn is left out when the system text is empty (`system: null`);
 * - the string is split at the placeholders and each chunk is tokenized on its own, the tokenizer splitting
 *   at the special tokens: so the text between two special tokens/placeholders is tokenized as ONE piece
 *   ("user\n" + the question, say, which matters when the question starts with a newline).
 * Here template tokens are ids and everything else is plain text (see tokenizer.ts): adjacent text pieces are
 * joined and encoded together, exactly the reference's pieces. The one deliberate difference: special-token
 * text or "<image>" typed by the user stays text (the reference would turn it into structure).
 */
import { usageError } from '../util/errors.js';

export const DEFAULT_SYSTEM_PROMPT = 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.';

const IM_START = '<|im_start|>';
const IM_END = '<|im_end|>';

/** What the prompt builder needs from a tokenizer (TextTokenizer implements it). */
export interface PromptTokenizer {
  encodeText(text: string): number[];
  tokenId(content: string): number;
}

export interface UserTurn {
  role: 'user';
  text: string;
  /** Number of images attached to this turn, placed before the text. */
  images?: number;
  /**
   * The turn as ordered parts instead (an API's content parts): each image's placeholder where it stands.
   * Adjacent images are joined by a space, anything else by a newline, so [image, image, text] is exactly the
   * `text` + `images: 2` turn. `text` and `images` are then ignored.
   */
  parts?: UserPart[];
}

export type UserPart = { kind: 'text'; text: string } | { kind: 'image' };

/** How many images a user turn holds. */
export function turnImages(turn: Turn): number {
  if (turn.role !== 'user') return 0;
  return turn.parts ? turn.parts.filter((p) => p.kind === 'image').length : (turn.images ?? 0);
}

export interface AssistantTurn {
  role: 'assistant';
  text: string;
}

export type Turn = UserTurn | AssistantTurn;

export interface ConversationInput {
  /** System text; undefined = DEFAULT_SYSTEM_PROMPT, null = no system turn. */
  system?: string | null;
  /** Earlier turns and the new user turn (last). */
  turns: Turn[];
}

/** Token ids, or the place of one image's embeddings (images numbered in order over the conversation). */
export type PromptSegment = { kind: 'tokens'; ids: number[] } | { kind: 'image'; index: number };

type Piece = { kind: 'special'; content: string } | { kind: 'text'; text: string } | { kind: 'image' };

function templatePieces(input: ConversationInput): Piece[] {
  const pieces: Piece[] = [];
  const special = (content: string) => pieces.push({ kind: 'special', content });
  const text = (value: string) => pieces.push({ kind: 'text', text: value });
  const system = input.system === undefined ? DEFAULT_SYSTEM_PROMPT : input.system;
  if (system !== null) {
    special(IM_START);
    text(`system\n${system}`);
    special(IM_END);
    text('\n');
  }
  for (const turn of input.turns) {
    special(IM_START);
    text(`${turn.role}\n`);
    if (turn.role === 'user' && turn.parts) {
      turn.parts.forEach((part, i) => {
        if (i > 0) text(part.kind === 'image' && turn.parts![i - 1].kind === 'image' ? ' ' : '\n');
        if (part.kind === 'image') pieces.push({ kind: 'image' });
        else text(part.text);
      });
    } else {
      const images = turnImages(turn);
      for (let i = 0; i < images; i++) {
        if (i > 0) text(' ');
        pieces.push({ kind: 'image' });
      }
      if (images > 0) text('\n');
      text(turn.text);
    }
    special(IM_END);
    text('\n');
  }
  special(IM_START);
  text('assistant\n');
  return pieces;
}

function validate(input: ConversationInput): void {
  if (input.turns.length === 0) throw usageError('the conversation has no user message');
  if (input.turns[input.turns.length - 1].role !== 'user') throw usageError('the conversation must end with a user message');
  for (const turn of input.turns) {
    if (turn.role === 'user' && turn.images !== undefined && (!Number.isInteger(turn.images) || turn.images < 0)) {
      throw usageError(`image count must be a non-negative integer, got ${turn.images}`);
    }
  }
}

/** The prompt's segments: token ids with image places in between (adjacent ids merged into one segment). */
export function buildPrompt(tokenizer: PromptTokenizer, input: ConversationInput): PromptSegment[] {
  validate(input);
  const segments: PromptSegment[] = [];
  const pushIds = (ids: number[]) => {
    if (ids.length === 0) return;
    const last = segments[segments.length - 1];
    // A loop, not push(...ids): a long prompt's hundreds of thousands of ids would overflow the call stack.
    if (last?.kind === 'tokens') for (const id of ids) last.ids.push(id);
    else segments.push({ kind: 'tokens', ids: ids.slice() });
  };
  let pendingText = '';
  const flushText = () => {
    pushIds(tokenizer.encodeText(pendingText));
    pendingText = '';
  };
  let imageIndex = 0;
  for (const piece of templatePieces(input)) {
    if (piece.kind === 'text') {
      pendingText += piece.text;
      continue;
    }
    flushText();
    if (piece.kind === 'special') pushIds([tokenizer.tokenId(piece.content)]);
    else segments.push({ kind: 'image', index: imageIndex++ });
  }
  flushText();
  return segments;
}

/** Number of prompt rows once image `i` contributes `imageTokens[i]` embeddings. */
export function promptLength(segments: readonly PromptSegment[], imageTokens: readonly number[]): number {
  let length = 0;
  for (const segment of segments) {
    if (segment.kind === 'tokens') length += segment.ids.length;
    else {
      const count = imageTokens[segment.index];
      if (count === undefined) throw new Error(`promptLength: no token count for image ${segment.index}`);
      length += count;
    }
  }
  return length;
}
