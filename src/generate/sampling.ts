/**
 * Picking a token and its probability from one row of logits (reference `_sample_with_temperature_topk_topp`,
 * `_top_k_logits`, `_top_p_logits`).
 *
 * - temperature 0: argmax (first index of the maximum, like torch.argmax) and its softmax probability;
 * - temperature > 0: logits / temperature, then top-k, then top-p, then a draw from the softmax of what is left,
 *   and the drawn token's probability under that filtered softmax.
 *
 * Numerics. The reference computes in float32 on the logits it got as float32. Here:
 * - logits / temperature is rounded to float32 (exactly torch's float32 division), so top-k ties and the top-k
 *   boundary are decided on the same values as torch;
 * - softmax sums are accumulated in float64 in vocabulary order and the returned probability is rounded to
 *   float32. The float64 sum is the exact value that torch's float32 reduction approximates (to a few ulps),
 *   and rounding to float32 makes positions whose torch probabilities are equal compare equal here too, so
 *   the confidence ranking is the one torch would see up to torch's own last-ulp reduction noise;
 * - top-p's cumulative sum is float64 and compared with float32(top_p), like `float32_tensor > python_float`.
 * Sort ties (top-p's descending sort) are broken by lower token id first (torch's sort is not stable by
 * default, so any choice is as faithful as another; this one is deterministic).
 * The draw walks the kept tokens in id order and takes the first whose cumulative weight exceeds u * total,
 * with u from the seeded generator (rng.ts): one uniform per drawn token.
 */
import { modelError, REPAIR_HINT } from '../util/errors.js';
import type { Rng } from './rng.js';

export interface SamplingParams {
  /** 0 = greedy. */
  temperature: number;
  /** Keep the k highest logits (ties with the k-th included); 0 = off. */
  topK: number;
  /** Keep the smallest prefix of the sorted distribution whose mass exceeds p (at least one token); 1 = off. */
  topP: number;
  /**
   * Which probability of the drawn token is its confidence: under the filtered softmax it was drawn from
   * (default; the QwenVL family), or under the plain softmax of the unmodified logits (the SigLIP family's
   * generate, spec diffusionvl-qwen.md §7). Greedy choices are the same either way.
   */
  confidence?: 'filtered' | 'plain';
}

export interface TokenChoice {
  id: number;
  /** Probability of `id`, float32-rounded: the confidence used to rank positions. */
  prob: number;
}

/** Tokens that survive temperature/top-k/top-p with their unnormalised weights exp(logit - max). */
export interface FilteredDistribution {
  /** Ascending token ids, `count` of them are valid. */
  ids: Int32Array;
  weights: Float64Array;
  count: number;
  /** Sum of the weights in id order. */
  total: number;
}

function nanError(): never {
  throw modelError(`the decoder returned NaN logits: the converted model is damaged; ${REPAIR_HINT}`);
}

/** Greedy choice: argmax and softmax(logits)[argmax] = 1 / sum(exp(logit - max)). */
export function greedyToken(logits: Float32Array, offset: number, vocabSize: number): TokenChoice {
  let best = -Infinity;
  let id = -1;
  for (let i = 0; i < vocabSize; i++) {
    const x = logits[offset + i];
    if (x > best) {
      best = x;
      id = i;
    } else if (x !== x) nanError();
  }
  if (id < 0) throw modelError('the decoder returned a row of -inf logits');
  let total = 0;
  for (let i = 0; i < vocabSize; i++) total += Math.exp(logits[offset + i] - best);
  return { id, prob: Math.fround(1 / total) };
}

/** softmax(logits)[id] of the unmodified row, float32-rounded (the same numerics as greedyToken). */
export function plainProbability(logits: Float32Array, offset: number, vocabSize: number, id: number): number {
  let max = -Infinity;
  for (let i = 0; i < vocabSize; i++) if (logits[offset + i] > max) max = logits[offset + i];
  let total = 0;
  for (let i = 0; i < vocabSize; i++) total += Math.exp(logits[offset + i] - max);
  return Math.fround(Math.exp(logits[offset + id] - max) / total);
}

/**
 * greedyToken restricted to `allowed` (ascending ids): the first allowed id with the largest logit, and its
 * probability under the softmax over the allowed ids only. Equal to greedyToken on the row with every other
 * logit set to -inf.
 */
export function greedyTokenAmong(logits: Float32Array, offset: number, allowed: Int32Array): TokenChoice {
  let best = -Infinity;
  let id = -1;
  for (let j = 0; j < allowed.length; j++) {
    const x = logits[offset + allowed[j]];
    if (x > best) {
      best = x;
      id = allowed[j];
    } else if (x !== x) nanError();
  }
  if (id < 0) throw modelError('the decoder returned -inf logits for every allowed token');
  let total = 0;
  for (let j = 0; j < allowed.length; j++) total += Math.exp(logits[offset + allowed[j]] - best);
  return { id, prob: Math.fround(1 / total) };
}

/** plainProbability over the allowed ids only (the row with every other logit set to -inf). */
export function plainProbabilityAmong(logits: Float32Array, offset: number, allowed: Int32Array, id: number): number {
  let max = -Infinity;
  for (let j = 0; j < allowed.length; j++) if (logits[offset + allowed[j]] > max) max = logits[offset + allowed[j]];
  let total = 0;
  for (let j = 0; j < allowed.length; j++) total += Math.exp(logits[offset + allowed[j]] - max);
  return Math.fround(Math.exp(logits[offset + id] - max) / total);
}

/**
 * The k-th largest value (k >= 1, counting repeated values), like `torch.topk(x, k).values[-1]`.
 * Quickselect with a three-way partition (logits rounded from bf16 repeat a lot). `scratch` is overwritten.
 */
export function kthLargest(values: ArrayLike<number>, k: number, scratch?: Float32Array): number {
  const n = values.length;
  if (!Number.isInteger(k) || k < 1 || k > n) throw new Error(`kthLargest: k=${k} outside 1..${n}`);
  const a = scratch && scratch.length >= n ? scratch : new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = values[i];
  const target = k - 1; // index in descending order
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const x = a[lo];
    const y = a[(lo + hi) >>> 1];
    const z = a[hi];
    const pivot = x > y ? (y > z ? y : x > z ? z : x) : x > z ? x : y > z ? z : y;
    // Partition a[lo..hi] into  > pivot | == pivot | < pivot.
    let lt = lo;
    let i = lo;
    let gt = hi;
    while (i <= gt) {
      const v = a[i];
      if (v > pivot) {
        a[i] = a[lt];
        a[lt] = v;
        lt++;
        i++;
      } else if (v < pivot) {
        a[i] = a[gt];
        a[gt] = v;
        gt--;
      } else i++;
    }
    if (target < lt) hi = lt - 1;
    else if (target > gt) lo = gt + 1;
    else return pivot;
  }
  return a[lo];
}

/**
 * Chooses tokens for rows of logits with fixed sampling parameters. Holds scratch buffers of vocabulary size,
 * so one instance serves a whole generation without allocating per row.
 */
export class TokenSampler {
  private readonly scaled: Float32Array;
  /** The bits of `scaled` (same buffer), for sorting. */
  private readonly scaledBits: Uint32Array;
  /** Token id -> entry index, for sortDescending. */
  private readonly entryOfId: Int32Array;
  /** Entry indices of top-p candidates. */
  private readonly candidates: Int32Array;
  private readonly scratch: Float32Array;
  private readonly ids: Int32Array;
  private readonly weights: Float64Array;
  /** Allowed tokens' scaled logits, gathered for top-k (chooseAmong); allocated on first use. */
  private gathered: Float32Array | undefined;

  constructor(
    readonly vocabSize: number,
    readonly params: SamplingParams,
  ) {
    if (vocabSize >= 2097152) throw new Error(`TokenSampler: vocabulary of ${vocabSize} is too large`);
    this.scaled = new Float32Array(params.temperature > 0 ? vocabSize : 0);
    this.scaledBits = new Uint32Array(this.scaled.buffer);
    this.entryOfId = new Int32Array(params.temperature > 0 && params.topP < 1 ? vocabSize : 0);
    this.candidates = new Int32Array(params.temperature > 0 && params.topP < 1 ? vocabSize : 0);
    this.scratch = new Float32Array(params.temperature > 0 && params.topK > 0 ? vocabSize : 0);
    this.ids = new Int32Array(params.temperature > 0 ? vocabSize : 0);
    this.weights = new Float64Array(params.temperature > 0 ? vocabSize : 0);
  }

  /** The token for the row of `vocabSize` logits at `offset`. `rng` is only used when temperature > 0. */
  choose(logits: Float32Array, offset: number, rng: Rng): TokenChoice {
    if (this.params.temperature === 0) return greedyToken(logits, offset, this.vocabSize);
    const dist = this.distribution(logits, offset);
    const pick = this.draw(dist, rng);
    const id = dist.ids[pick];
    if (this.params.confidence === 'plain') return { id, prob: plainProbability(logits, offset, this.vocabSize, id) };
    return { id, prob: Math.fround(dist.weights[pick] / dist.total) };
  }

  /**
   * `choose` restricted to the `allowed` ids (ascending): the same numerics as `choose` on the row with every
   * other logit set to -inf (temperature, top-k and top-p act on the allowed tokens only, and the
   * confidence is a probability among them). Cost is proportional to the allowed ids, not the vocabulary.
   */
  chooseAmong(logits: Float32Array, offset: number, allowed: Int32Array, rng: Rng): TokenChoice {
    if (allowed.length === 0) throw new Error('chooseAmong: no allowed token');
    if (this.params.temperature === 0) return greedyTokenAmong(logits, offset, allowed);
    const dist = this.distributionAmong(logits, offset, allowed);
    const pick = this.draw(dist, rng);
    const id = dist.ids[pick];
    if (this.params.confidence === 'plain') return { id, prob: plainProbabilityAmong(logits, offset, allowed, id) };
    return { id, prob: Math.fround(dist.weights[pick] / dist.total) };
  }

  /** distribution() restricted to the `allowed` ids (see chooseAmong). Scratch buffers, like distribution(). */
  distributionAmong(logits: Float32Array, offset: number, allowed: Int32Array): FilteredDistribution {
    const { scaled, ids, weights } = this;
    const { temperature, topK, topP } = this.params;
    if (!(temperature > 0)) throw new Error('distributionAmong() needs temperature > 0');
    const t = Math.fround(temperature);
    const n = allowed.length;
    const gathered = (this.gathered ??= new Float32Array(this.vocabSize));
    let max = -Infinity;
    for (let j = 0; j < n; j++) {
      const id = allowed[j];
      const x = logits[offset + id];
      if (x !== x) nanError();
      const v = (temperature === 1 ? x : Math.fround(x / t)) + 0;
      scaled[id] = v;
      gathered[j] = v;
      if (v > max) max = v;
    }
    if (max === -Infinity) throw modelError('the decoder returned -inf logits for every allowed token');
    const floor = topK > 0 && topK < n ? kthLargest(gathered.subarray(0, n), topK, this.scratch) : -Infinity;
    let count = 0;
    for (let j = 0; j < n; j++) {
      const id = allowed[j];
      if (scaled[id] >= floor) {
        ids[count] = id;
        weights[count] = Math.exp(scaled[id] - max);
        count++;
      }
    }
    if (topP < 1) count = this.keepTopP(count, topP);
    let total = 0;
    for (let j = 0; j < count; j++) total += weights[j];
    return { ids, weights, count, total };
  }

  /** The index (into dist) of the token a uniform draw lands on: the first past u * total, in id order. */
  private draw(dist: FilteredDistribution, rng: Rng): number {
    const target = rng.nextFloat() * dist.total;
    let cumulative = 0;
    let pick = -1;
    for (let j = 0; j < dist.count; j++) {
      const w = dist.weights[j];
      if (w === 0) continue;
      cumulative += w;
      pick = j;
      if (cumulative > target) break;
    }
    // pick is the first token past the target, or (when rounding put u * total at the very end) the last one.
    return pick;
  }

  /**
   * The filtered distribution for a row (temperature > 0). The returned arrays are this sampler's scratch
   * buffers: valid until the next call.
   */
  distribution(logits: Float32Array, offset: number): FilteredDistribution {
    const { vocabSize: n, scaled, ids, weights } = this;
    const { temperature, topK, topP } = this.params;
    if (!(temperature > 0)) throw new Error('distribution() needs temperature > 0');
    // torch: float32 tensor / python float -> float32 division by float32(temperature).
    const t = Math.fround(temperature);
    let max = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = logits[offset + i];
      if (x !== x) nanError();
      // (+ 0 turns -0 into +0: they are equal for torch's sort, and must be for the sort keys)
      const v = (temperature === 1 ? x : Math.fround(x / t)) + 0;
      scaled[i] = v;
      if (v > max) max = v;
    }
    if (max === -Infinity) throw modelError('the decoder returned a row of -inf logits');

    // top-k: drop logits strictly below the k-th largest (ties with it survive).
    const floor = topK > 0 && topK < n ? kthLargest(scaled, topK, this.scratch) : -Infinity;
    let count = 0;
    for (let i = 0; i < n; i++) {
      if (scaled[i] >= floor) {
        ids[count] = i;
        weights[count] = Math.exp(scaled[i] - max);
        count++;
      }
    }
    if (topP < 1) count = this.keepTopP(count, topP);
    let total = 0;
    for (let j = 0; j < count; j++) total += weights[j];
    return { ids, weights, count, total };
  }

  /**
   * top-p on the first `count` entries of ids/weights (ascending ids): keeps the tokens, in descending logit
   * order, up to and including the first one at which the cumulative probability exceeds p. Compacts the kept
   * entries to the front (still ascending) and returns their number.
   *
   * Sorting the whole vocabulary for every row would dominate a step, so only the candidates with probability
   * >= t are sorted: every other token has a smaller logit and comes after all of them in the full order, so
   * if the candidates' cumulative sum crosses p the answer is the same as with a full sort. Otherwise t is
   * lowered and, at the end, every token is a candidate.
   */
  private keepTopP(count: number, topP: number): number {
    const { ids, weights, candidates } = this;
    let total = 0;
    for (let j = 0; j < count; j++) total += weights[j];
    const limit = Math.fround(topP);
    let kept: Int32Array | null = null;
    for (const t of [1e-3, 1e-5, 0]) {
      const minWeight = t * total;
      let n = 0;
      for (let j = 0; j < count; j++) if (weights[j] >= minWeight) candidates[n++] = j;
      const order = this.sortDescending(candidates.subarray(0, n));
      let cumulative = 0;
      for (let r = 0; r < n; r++) {
        cumulative += weights[order[r]] / total;
        if (cumulative > limit) {
          kept = order.subarray(0, r + 1);
          break;
        }
      }
      if (kept !== null) break;
      if (n === count) {
        kept = order; // every token: the whole distribution is kept
        break;
      }
    }
    if (kept === null) throw new Error('top-p: unreachable');
    kept.sort(); // ascending entry = ascending id (numeric sort for typed arrays)
    for (let r = 0; r < kept.length; r++) {
      ids[r] = ids[kept[r]];
      weights[r] = weights[kept[r]];
    }
    return kept.length;
  }

  /**
   * Entries j (of ids/weights) by descending scaled logit, ascending id among equal logits. Sorted as one
   * float64 key per entry, exact integers: the logit's float32 bits mapped to an order-reversing 32-bit
   * integer, times 2^21, plus the id (vocabularies are far below 2^21 ids). A native numeric sort of these
   * keys is much faster than a comparator sort when a flat distribution leaves 10^5 candidates.
   */
  private sortDescending(entries: Int32Array): Int32Array {
    const { ids, scaledBits } = this;
    const keys = new Float64Array(entries.length);
    for (let r = 0; r < entries.length; r++) {
      const id = ids[entries[r]];
      const bits = scaledBits[id];
      // Ascending-order integer of a float32 (negative values: all bits flipped; positive: sign bit set).
      const ascending = bits & 0x80000000 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0;
      keys[r] = (0xffffffff - ascending) * 2097152 + id;
    }
    keys.sort();
    const entryOfId = this.entryOfId;
    for (let r = 0; r < entries.length; r++) entryOfId[ids[entries[r]]] = entries[r];
    const out = new Int32Array(entries.length);
    for (let r = 0; r < keys.length; r++) out[r] = entryOfId[keys[r] % 2097152];
    return out;
  }
}
