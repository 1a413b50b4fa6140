/**
 * How many, and which, masked positions of a block are filled at each denoising step (spec §6, reference
 * `get_bd3lm_num_transfer_tokens` and the remasking branch of `generate_with_bd3lm`).
 */
import { usageError } from '../util/errors.js';

export type RemaskingStrategy = 'low_confidence_static' | 'low_confidence_dynamic';

export const REMASKING_STRATEGIES: readonly RemaskingStrategy[] = ['low_confidence_static', 'low_confidence_dynamic'];

/**
 * Tokens to unmask at step j = 0..steps: `floor(B/S)`, plus one for the first `B mod S` steps.
 * The list has steps + 1 entries because the reference loops `steps + 1` times (the extra iteration normally
 * finds the block complete and commits it). With steps > blockSize the tail entries are 0.
 */
export function transferSchedule(blockSize: number, steps: number): number[] {
  if (!Number.isInteger(blockSize) || blockSize < 1) throw usageError(`block size must be an integer >= 1, got ${blockSize}`);
  if (!Number.isInteger(steps) || steps < 1) throw usageError(`steps must be an integer >= 1, got ${steps}`);
  const base = Math.floor(blockSize / steps);
  const remainder = blockSize % steps;
  return Array.from({ length: steps + 1 }, (_, j) => base + (j < remainder ? 1 : 0));
}

/**
 * The masked positions to fill in one step.
 *
 * `confidences[i]` is the probability of the token sampled for the i-th still-masked position (only masked
 * positions are passed: the reference gives every other position confidence -inf, so they are never chosen).
 * `count` is the schedule entry for this step.
 *
 * - static: the `min(count, masked)` highest confidences;
 * - dynamic: every confidence above `threshold` when there are at least `count` of them, else as static.
 *
 * Ties: torch.topk does not specify which of equal values it returns; we take the lowest index first, so a
 * run is deterministic. Threshold comparison is done in float32 like torch's `float32_tensor > python_float`
 * (the scalar is rounded to float32 first).
 *
 * Returns indices into `confidences`, ascending.
 */
export function choosePositions(
  confidences: ArrayLike<number>,
  count: number,
  strategy: RemaskingStrategy,
  threshold: number,
): number[] {
  const n = confidences.length;
  if (strategy === 'low_confidence_dynamic') {
    const limit = Math.fround(threshold);
    const confident: number[] = [];
    for (let i = 0; i < n; i++) if (confidences[i] > limit) confident.push(i);
    if (confident.length >= count) return confident;
  }
  const k = Math.min(count, n);
  if (k <= 0) return [];
  const order = Array.from({ length: n }, (_, i) => i);
  // Highest confidence first; equal confidences keep index order (Array.prototype.sort is stable).
  order.sort((a, b) => (confidences[b] > confidences[a] ? 1 : confidences[b] < confidences[a] ? -1 : 0));
  return order.slice(0, k).sort((a, b) => a - b);
}
