/**
 * The JSON Schema constraint the generation loop uses (a TokenConstraint, see ../constraint.ts): a compiled
 * schema, the byte automaton over it, and the cached token masks of one vocabulary.
 *
 * Budget rule (termination): a token is allowed only when the document can still be finished in the slots
 * left after it: need(after) <= remaining - 1, where need counts bytes and every byte is a token. Following
 * that rule from a start with need <= budget, the shortest completion always fits, so every answer closes
 * within the budget. EOS is allowed exactly when the document is complete; once it cannot go on (anything
 * but a root-level number or an enum value that a longer one extends), EOS is the only token, and after
 * EOS only EOS. If the budget is already too small (the caller should have refused it, `minTokens`), the
 * tokens that keep the text a valid prefix are allowed and the answer ends incomplete.
 *
 * Masks are cached per automaton state (token-masks.ts), in this object: a caller that keeps one constraint
 * per schema (and vocabulary) gets warm masks on later requests. Forced text (`forced`) lets the loop write
 * keys and punctuation without decoder calls.
 */
import type { TokenConstraint } from '../constraint.js';
import { cursorSig, JsonAutomaton, type Cursor, type WhitespacePolicy } from './json-automaton.js';
import type { CompiledSchema } from './schema-graph.js';
import { compileJsonSchema } from './schema-compile.js';
import { TokenMasks, type TokenMaskOptions } from './token-masks.js';
import type { Vocabulary } from './vocabulary.js';

/** A constraint state: the live readings of the text so far, or the end (EOS written). */
export interface JsonState {
  readonly cursors: readonly Cursor[];
  readonly ended: boolean;
}

const ENDED: JsonState = { cursors: [], ended: true };

export interface JsonConstraintOptions extends TokenMaskOptions {
  /** 'bounded' (default): short whitespace runs between tokens; 'none': compact JSON only. */
  whitespace?: WhitespacePolicy;
}

/** Forced text is looked for up to this many bytes ahead (longer than any token). */
const MAX_FORCED_BYTES = 128;

export class JsonConstraint implements TokenConstraint<JsonState> {
  readonly eosTokenId: number;
  readonly maxTokenId: number;
  readonly minTokens: number;
  readonly automaton: JsonAutomaton;
  readonly masks: TokenMasks;
  private readonly eosOnly: Int32Array;
  /** Forced token (or -1) per state signature. */
  private readonly forcedCache = new Map<string, number>();

  constructor(
    readonly schema: CompiledSchema,
    readonly vocabulary: Vocabulary,
    options: JsonConstraintOptions = {},
  ) {
    this.eosTokenId = vocabulary.eosTokenId;
    this.maxTokenId = vocabulary.idLimit - 1;
    this.minTokens = schema.minLength;
    this.automaton = new JsonAutomaton(schema, options.whitespace ?? 'bounded');
    this.masks = new TokenMasks(this.automaton, vocabulary, options);
    this.eosOnly = Int32Array.of(vocabulary.eosTokenId);
  }

  start(): JsonState {
    return { cursors: [this.automaton.initial()], ended: false };
  }

  /** Fewest bytes (so at most that many tokens) that finish the document from this state. */
  need(state: JsonState): number {
    if (state.ended) return 0;
    let m = Infinity;
    for (const c of state.cursors) m = Math.min(m, this.automaton.need(c));
    return m;
  }

  isComplete(state: JsonState): boolean {
    return state.ended || state.cursors.some((c) => this.automaton.isComplete(c));
  }

  allowed(state: JsonState, remaining: number): Int32Array {
    if (state.ended) return this.eosOnly;
    const mask = this.masks.forCursors(state.cursors);
    const limit = remaining - 1;
    if (limit < 0) return this.isComplete(state) ? this.eosOnly : mask.ids;
    if (mask.maxNeed <= limit) return mask.ids;
    // Nothing fits: the budget was too small from the start; keep the text a valid prefix.
    if (mask.minNeed > limit) return mask.ids;
    let n = 0;
    for (let i = 0; i < mask.need.length; i++) if (mask.need[i] <= limit) n++;
    const out = new Int32Array(n);
    n = 0;
    for (let i = 0; i < mask.need.length; i++) if (mask.need[i] <= limit) out[n++] = mask.ids[i];
    return out;
  }

  /**
   * The token to write without logits, or null: the only allowed token (EOS after the document), else the
   * longest vocabulary token that starts the *forced text*, the bytes every valid continuation begins with
   * (the rest of a key once one key is left, '":' after it, '{"key":' in compact JSON, the rest of an enum
   * value). Forced text keeps its bytes whatever the budget: they are on every shortest completion too.
   * The chosen token is a longest match, not necessarily the tokenizer's own split of that text.
   */
  forced(state: JsonState, remaining: number): number | null {
    const allowed = this.allowed(state, remaining);
    if (allowed.length === 1) return allowed[0];
    if (this.isComplete(state)) return null; // EOS or more
    const key = state.cursors.map(cursorSig).join('\n');
    let id = this.forcedCache.get(key);
    if (id === undefined) {
      id = this.longestForcedToken(state.cursors);
      if (this.forcedCache.size > 100_000) this.forcedCache.clear();
      this.forcedCache.set(key, id);
    }
    return id < 0 ? null : id;
  }

  /** -1 when no byte is forced. */
  private longestForcedToken(start: readonly Cursor[]): number {
    const { firstChild, childCount, byte, token } = this.vocabulary.trie;
    let cursors = start;
    let node = 0; // trie node of the forced bytes so far, while they still spell a token prefix
    let best = -1;
    for (let n = 0; n < MAX_FORCED_BYTES; n++) {
      let only = -1;
      let next: Cursor[] = [];
      for (let b = 0; b < 256; b++) {
        const out = this.automaton.stepAll(cursors, b);
        if (out.length === 0) continue;
        if (only >= 0) return best; // two possible bytes: the forced text ends here
        only = b;
        next = out;
      }
      if (only < 0) return best;
      // follow the byte in the trie (children are sorted by byte)
      let child = -1;
      for (let i = firstChild[node], end = i + childCount[node]; i < end; i++) {
        if (byte[i] === only) {
          child = i;
          break;
        }
      }
      if (child < 0) return best;
      node = child;
      if (token[node] >= 0) best = token[node];
      cursors = next;
      if (cursors.some((c) => this.automaton.isComplete(c))) return best; // the document may end here
    }
    return best;
  }

  advance(state: JsonState, id: number): JsonState | null {
    if (id === this.eosTokenId) return this.isComplete(state) ? ENDED : null;
    if (state.ended) return null;
    const bytes = this.vocabulary.tokenBytes(id);
    if (bytes.length === 0) return null;
    let cursors: readonly Cursor[] = state.cursors;
    for (let i = 0; i < bytes.length && cursors.length > 0; i++) cursors = this.automaton.stepAll(cursors, bytes[i]);
    return cursors.length > 0 ? { cursors, ended: false } : null;
  }
}

/**
 * The constraint for a JSON Schema (a parsed JSON object or boolean) or 'json_object' (any JSON object), on
 * a vocabulary. Schema problems are usage errors naming the keyword and its JSON pointer.
 */
export function compileJsonConstraint(schema: unknown, vocabulary: Vocabulary, options?: JsonConstraintOptions): JsonConstraint {
  return new JsonConstraint(compileJsonSchema(schema), vocabulary, options);
}
