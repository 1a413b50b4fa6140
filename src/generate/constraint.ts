/**
 * What the generation loop (bd3lm.ts) needs from a decoding constraint, independent of what is constrained
 * (JSON Schema today, see json-schema/) and of the model family.
 *
 * A constraint describes a language of token sequences that always ends with EOS. The loop fills a block's
 * generated slots left to right under it: for the leftmost unfilled slot it asks which tokens may come next
 * (`allowed`), picks one of them from the slot's logits, and moves the state on (`advance`). States are
 * immutable values, so the loop can keep the state at any point (for instance at the end of the output).
 *
 * Budget: `remaining` is the number of token slots left in the output, the current slot included. A
 * constraint that promises termination allows only tokens after which the rest of a valid document still
 * fits in `remaining - 1` slots; `minTokens` is the budget its shortest document needs (a caller should
 * refuse a smaller budget up front, see `checkTokenBudget`).
 */
import { usageError } from '../util/errors.js';

export interface TokenConstraint<State = unknown> {
  /** The end-of-sequence token: allowed exactly when the document is complete, and the only token after it. */
  readonly eosTokenId: number;
  /** The largest token id `allowed` can return (it must be a row of the decoder's logits). */
  readonly maxTokenId: number;
  /**
   * The smallest budget (token slots, EOS not counted) the constraint promises to finish a document in. For
   * JSON: the bytes of the shortest document, since every byte is a token (written with longer tokens, a
   * document may take fewer, but that cannot be promised).
   */
  readonly minTokens: number;
  /** The state before any token. */
  start(): State;
  /**
   * The tokens allowed next, ascending, never empty. The array belongs to the constraint (it may be cached
   * and shared): do not modify it. `remaining` counts the slots left, this one included.
   */
  allowed(state: State, remaining: number): Int32Array;
  /** The state after `id`, or null when `id` cannot follow (ignoring the budget). */
  advance(state: State, id: number): State | null;
  /** Whether the tokens so far form a complete document (EOS may follow). */
  isComplete(state: State): boolean;
  /**
   * A token that may be written without looking at logits, or null: one the constraint knows must come (the
   * only allowed token, or the start of text that every continuation begins with). Optional: without it the
   * loop forces only a single allowed token.
   */
  forced?(state: State, remaining: number): number | null;
}

/** The usage error for a budget the constraint's shortest document does not fit in. */
export function checkTokenBudget(constraint: Pick<TokenConstraint, 'minTokens'>, budget: number, budgetName = 'the token budget'): void {
  if (budget < constraint.minTokens) {
    throw usageError(`the schema needs at least ${constraint.minTokens} tokens; ${budgetName} is ${budget}`);
  }
}
