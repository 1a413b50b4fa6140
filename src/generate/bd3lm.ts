/**
 * Block-diffusion generation (spec §6; reference `generate_with_bd3lm` in DiffusionVL's
 * llava_diffusionvl_qwenvl.py). By default every token choice is the reference's.
 *
 * Layout: positions 0..T-1 with T = ceil((L+G)/B)*B, the prompt (L rows) followed by mask tokens. The first
 * floor(L/B) blocks (whole prompt blocks) are prefilled with the block-causal mask and cached, in calls of at most
 * `prefillChunkRows` rows (whole blocks): each chunk attends to the cache and, block-causally, to itself, which is
 * the one-shot prefill's attention, so memory grows with the cache rather than with the square of the prompt.
 * Every later block is denoised: up to S+1 iterations of
 *   - no masked row left: the block's K/V is stored in the cache (commit; fused into the next call), done;
 *   - else a call without commit (the block's rows attend to every cached row and to the whole block), sample
 *     a token and its probability for each masked row, fill the rows the remasking strategy picks.
 * After each block, an EOS at a generated position (>= L) of the block ends generation.
 * When B >= L+G the whole sequence is one block of L+G rows with no prefill ("full diffusion" ablation).
 *
 * Reference details reproduced on purpose (they decide tokens):
 * - "masked" means "the row's embedding equals the mask embedding" (every |difference| < 1e-5), so a sampled
 *   token whose embedding row equals the mask row (the mask id itself included) is written into the ids but
 *   the position stays masked and is predicted again;
 * - a block still holding masked rows after S+1 iterations is never committed: later blocks attend to a cache
 *   without it (their own positions are unchanged), and its ids stay as they are;
 * - prompt rows in the first denoised block are re-encoded with it at every step (they reach the cache with
 *   the commit); a prompt row whose embedding equals the mask row counts as masked, like in the reference;
 * - the transfer schedule is computed for a full block of B masks even when the block holds prompt rows
 *   (and, in the ablation, for B rather than L+G);
 * Deliberate differences that cannot change greedy tokens:
 * - fused commit (DecoderCalls): a finished block's commit is made in the same decoder call as the next
 *   block's first denoising step (block-causal mask, only the finished block's rows are cached), and there
 *   is no commit after the last block (the reference makes one that nothing reads); with static remasking a
 *   block costs `steps` calls instead of steps + 1 (`referenceSchedule` restores the reference's calls). The
 *   same attention, so the same tokens in exact arithmetic; in float32 a 16-row call may round differently
 *   from two 8-row calls, like any change of batch shape;
 * - logits are requested only for rows still masked (the reference computes all B rows, but the other rows'
 *   samples are discarded: static picks top-k among masked rows whose confidence is a probability, every
 *   other row having -inf; dynamic thresholds the same -inf-filled confidences);
 * - with temperature > 0 one uniform is drawn per masked row, in position order, from our own generator
 *   (rng.ts); torch draws for all rows from its own generator, which cannot be reproduced anyway.
 *
 * NFE counts the decoder calls actually made: the prefill (one, however many chunks it is cut into for memory:
 * it is one evaluation of the prompt, as the reference's single prefill call is) and every denoising call (a fused commit is
 * part of one), plus every separate commit call with `referenceSchedule`.
 *
 * Constrained decoding (`constraint`, structured output). The generated slots of a block are filled left to
 * right, so the text so far is always a prefix the constraint accepts:
 * - each step fills at least max(1, schedule[step]) slots, the leftmost first, each from its own row of the
 *   step's logits restricted to the tokens allowed after the previous slot's token (greedy: argmax among
 *   them; temperature > 0: the sampler on the allowed tokens only; the confidence is a probability among
 *   them). With dynamic remasking, after those it keeps going while the next slot's choice has confidence
 *   above the threshold. Since the schedule sums to B, a block is always complete after its S steps;
 * - a slot whose token is forced (the only allowed one, or the start of text every continuation begins
 *   with: TokenConstraint.forced) is filled without logits (`fillForcedTokens`), before the step's decoder
 *   call and between sampled slots, and does not count toward the step's number; a block completed this
 *   way needs no call of its own (its commit joins the next call, like any finished block);
 * - remaining = L + G - position slots are left in the budget at each slot; after the document is complete
 *   EOS is the only allowed token, and the EOS check after the block ends generation as usual;
 * - prompt rows of the first block that count as masked (see above) are filled unconstrained at the first
 *   step; a filled slot is never re-predicted, even if its token's embedding equals the mask row.
 * Without a constraint none of this runs and every token choice is the one above.
 */
import { DvlError, inputError, modelError, usageError } from '../util/errors.js';
import type { TokenConstraint } from './constraint.js';
import { createRng, randomSeed } from './rng.js';
import { TokenSampler, type TokenChoice } from './sampling.js';
import { choosePositions, REMASKING_STRATEGIES, transferSchedule, type RemaskingStrategy } from './schedule.js';
import type { BlockDecoder, EmbeddingTable } from './types.js';

/**
 * The two places where the SigLIP family's reference generate differs from the QwenVL family's (spec
 * diffusionvl-qwen.md §7): in the full-diffusion ablation (one block of L+G rows) the transfer schedule
 * splits the generation length G instead of B; with temperature > 0 the remasking confidence is the drawn
 * token's plain softmax probability.
 */
export interface GenerationQuirks {
  fullDiffusionSchedule: 'block' | 'genLength';
  confidence: 'filtered' | 'plain';
}

export const QWENVL_GENERATION: GenerationQuirks = { fullDiffusionSchedule: 'block', confidence: 'filtered' };

/** The user-facing knobs of one generation (the CLI flags). */
export interface GenerationSettings {
  /** G: number of output tokens. */
  genLength: number;
  /** S: denoising steps per block. */
  steps: number;
  /** B: block size (config `bd3lm_block_size`). */
  blockSize: number;
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** 1 = off. */
  topP: number;
  remasking: RemaskingStrategy;
  /** Confidence threshold of the dynamic strategy. */
  threshold: number;
  /** Seed of the sampling generator (temperature > 0); a random one is drawn (and returned) when absent. */
  seed?: number;
}

export interface GenerateOptions extends GenerationSettings {
  decoder: BlockDecoder;
  embeddings: EmbeddingTable;
  /** promptLength x hiddenSize, row-major: the prompt's token embeddings with image embeddings spliced in. */
  promptEmbeds: Float32Array;
  promptLength: number;
  maskTokenId: number;
  eosTokenId: number;
  onEvent?: (event: GenerationEvent) => void;
  signal?: AbortSignal;
  /** Where a model family's reference generate differs (default: the QwenVL family's). */
  quirks?: GenerationQuirks;
  /**
   * Rows of the decoder's cache that already hold this prompt's first rows (a multiple of the block size, at
   * most the prompt's whole blocks): they are kept and only the rest of the prompt is prefilled. Default 0
   * (the cache is reset). Needs a decoder with `truncate`.
   */
  cachedRows?: number;
  /**
   * Asked after every finished block (after its 'block-end' event): true ends generation there, as an EOS
   * would (stop strings). May be asynchronous.
   */
  stopAfterBlock?: (block: number) => boolean | Promise<boolean>;
  /**
   * Most prompt rows one prefill call takes (rounded down to whole blocks, at least one block). Default
   * PREFILL_CHUNK_ROWS.
   */
  prefillChunkRows?: number;
  /**
   * Make the reference's decoder calls: a commit call of its own after every finished block, the last one
   * included. Same tokens, more calls; for benchmarks and tests. Default: fused commits (see DecoderCalls).
   */
  referenceSchedule?: boolean;
  /**
   * Constrained decoding (structured output): every generated token is one the constraint allows, and the
   * output is a complete document within genLength tokens when the constraint can promise it (see
   * "Constrained decoding" above). Absent: the loop is exactly the unconstrained one.
   */
  constraint?: TokenConstraint;
  /**
   * Under a constraint: a slot whose token is forced (TokenConstraint.forced: the rest of a key, punctuation
   * of compact JSON, EOS after the document) is filled without waiting for a decoder call. Default true;
   * false makes every filled slot a sampled one, for measuring what forcing saves.
   */
  fillForcedTokens?: boolean;
}

export interface GenerateResult {
  /** The G output ids (positions L..L+G-1); positions never reached (early EOS) hold the mask id. */
  tokens: number[];
  /** Decoder calls made (the prefill as one however many chunks it took, denoising calls with any fused commit, and separate commit calls). */
  nfe: number;
  /** Blocks denoised (the prefilled prompt blocks are not counted). */
  blocks: number;
  /** Generation ended because a finished block held EOS at a generated position. */
  stoppedAtEos: boolean;
  /** Generation ended because `stopAfterBlock` said so. */
  stopped: boolean;
  /** Prompt rows taken from the cache (`cachedRows`), not prefilled. */
  cachedRows: number;
  /** The sampling seed used (given or drawn). */
  seed: number;
  /**
   * With a constraint: whether the output (the G tokens) holds a complete document (false: the budget or a
   * stop ended it first; the caller reports finish_reason "length"). Absent without a constraint.
   */
  constraintComplete?: boolean;
}

/**
 * Progress for live display. `indices` are output indices (position - L), only those < G are reported (the
 * last block can reach past G; those positions are generated but not output).
 */
export type GenerationEvent =
  /** `rows`: prompt rows in the cache after the prefill; `cached` of them were there before (cachedRows). */
  | { type: 'prefill'; rows: number; cached: number }
  | { type: 'block-start'; block: number; start: number; rows: number }
  /** Tokens written in one denoising step (a token whose embedding is the mask row stays masked). */
  | { type: 'unmask'; block: number; step: number; indices: number[]; ids: number[] }
  /**
   * A block is done; `ids` are the output tokens at indices firstIndex.. of this block. `committed`: the block
   * was completed within its iterations, so it is (or, fused, will be with the next block's first call)
   * committed like in the reference; false for a block left holding masked rows.
   */
  | { type: 'block-end'; block: number; firstIndex: number; ids: number[]; committed: boolean }
  | { type: 'finished'; result: GenerateResult };

/**
 * Rows per prefill call. A few hundred rows keep a call's attention scores ([heads, rows, cache + rows]) and
 * attention bias small however long the prompt is, and are still enough rows for the matrix kernels to run at
 * full speed (the 256-row figures of the kernel bench).
 */
export const PREFILL_CHUNK_ROWS = 256;

/** The reference's "is this row the mask embedding" test. */
const MASK_TOLERANCE = 1e-5;

function rowEquals(a: Float32Array, aOffset: number, b: Float32Array, hidden: number): boolean {
  for (let h = 0; h < hidden; h++) if (!(Math.abs(a[aOffset + h] - b[h]) < MASK_TOLERANCE)) return false;
  return true;
}

function validate(o: GenerateOptions): void {
  const isInt = (v: number) => Number.isInteger(v);
  if (!isInt(o.genLength) || o.genLength < 1) throw usageError(`gen length must be an integer >= 1, got ${o.genLength}`);
  if (!isInt(o.steps) || o.steps < 1) throw usageError(`steps must be an integer >= 1, got ${o.steps}`);
  if (!isInt(o.blockSize) || o.blockSize < 1) throw usageError(`block size must be an integer >= 1, got ${o.blockSize}`);
  if (!(o.topP > 0 && o.topP <= 1)) throw usageError(`top-p must be in (0, 1], got ${o.topP}`);
  if (!isInt(o.topK) || o.topK < 0) throw usageError(`top-k must be an integer >= 0, got ${o.topK}`);
  if (!(o.temperature >= 0 && Number.isFinite(o.temperature))) throw usageError(`temperature must be >= 0, got ${o.temperature}`);
  if (!(o.threshold >= 0 && o.threshold <= 1)) throw usageError(`threshold must be in [0, 1], got ${o.threshold}`);
  if (!REMASKING_STRATEGIES.includes(o.remasking)) {
    throw usageError(`remasking must be one of ${REMASKING_STRATEGIES.join(', ')}, got ${String(o.remasking)}`);
  }
  if (o.seed !== undefined && (!Number.isSafeInteger(o.seed) || o.seed < 0)) {
    throw usageError(`seed must be a non-negative integer, got ${o.seed}`);
  }
  if (!isInt(o.promptLength) || o.promptLength < 1) throw inputError('the prompt is empty');
  if (o.prefillChunkRows !== undefined && (!isInt(o.prefillChunkRows) || o.prefillChunkRows < 1)) {
    throw new Error(`generate: prefillChunkRows must be a positive integer, got ${o.prefillChunkRows}`);
  }
  const cached = o.cachedRows ?? 0;
  if (cached !== 0) {
    const wholeBlocks = o.blockSize >= o.promptLength + o.genLength ? 0 : Math.floor(o.promptLength / o.blockSize) * o.blockSize;
    if (!isInt(cached) || cached < 0 || cached % o.blockSize !== 0 || cached > wholeBlocks) {
      throw new Error(`generate: cannot reuse ${cached} cached rows (block size ${o.blockSize}, ${wholeBlocks} whole prompt rows)`);
    }
    if (!o.decoder.truncate || o.decoder.cacheLength < cached) throw new Error(`generate: the decoder holds no ${cached} cached rows to reuse`);
  }
  const hidden = o.embeddings.hiddenSize;
  if (o.promptEmbeds.length !== o.promptLength * hidden) {
    throw new Error(`generate: promptEmbeds has ${o.promptEmbeds.length} values, expected ${o.promptLength} x ${hidden}`);
  }
  if (o.decoder.vocabSize > o.embeddings.vocabSize) {
    throw modelError(`the decoder predicts ${o.decoder.vocabSize} tokens but the embedding table has ${o.embeddings.vocabSize} rows`);
  }
  if (o.constraint) {
    if (o.constraint.eosTokenId !== o.eosTokenId) throw new Error(`generate: the constraint's EOS ${o.constraint.eosTokenId} is not the model's ${o.eosTokenId}`);
    if (o.constraint.maxTokenId >= o.decoder.vocabSize) {
      throw modelError(`the constraint's vocabulary (ids up to ${o.constraint.maxTokenId}) is larger than the decoder's ${o.decoder.vocabSize} logits`);
    }
  }
  for (const [name, id] of [['mask', o.maskTokenId], ['eos', o.eosTokenId]] as const) {
    if (!isInt(id) || id < 0 || id >= o.embeddings.vocabSize || id >= o.decoder.vocabSize) {
      throw modelError(`${name} token id ${id} is outside the model's vocabulary (${o.decoder.vocabSize} tokens)`);
    }
  }
}

/** A finished block whose K/V still has to reach the cache. */
interface PendingCommit {
  embeds: Float32Array;
  rows: number;
  start: number;
}

/**
 * The decoder calls of one generation, counted.
 *
 * Fused commit (default): a finished block is not committed by a call of its own. Its rows are held back and
 * sent in front of the next block's first call, as one request of two blocks with the block-causal mask: the
 * finished block's rows attend to the cache and to themselves (exactly its commit call), the next block's rows
 * also see the finished block (exactly the first denoising call after the commit), and only the finished
 * block's rows are committed. A block held back when generation ends is never committed: nothing reads it.
 * With `referenceSchedule` every commit is a call of its own, as in the reference (for comparisons).
 */
class DecoderCalls {
  nfe = 0;
  private pending: PendingCommit | null = null;
  constructor(
    private readonly decoder: BlockDecoder,
    private readonly blockSize: number,
    private readonly hidden: number,
    private readonly referenceSchedule: boolean,
    private readonly signal: AbortSignal | undefined,
  ) {}

  private async call(embeds: Float32Array, count: number, start: number, logitRows: number[], commitRows: number, counted = true) {
    if (this.signal?.aborted) throw new DvlError('interrupted', 'generation interrupted');
    if (counted) this.nfe++;
    const commit = commitRows > 0;
    const request = { embeds, count, start, blockSize: this.blockSize, logitRows, commit, ...(commit && commitRows < count ? { commitRows } : {}) };
    const result = await this.decoder.forward(request);
    const expected = logitRows.length * this.decoder.vocabSize;
    if (result.logits.length < expected) {
      throw modelError(`the decoder returned ${result.logits.length} logits for ${logitRows.length} rows of ${this.decoder.vocabSize}`);
    }
    return result.logits;
  }

  /** Caches whole prompt blocks from position `start` (block-causal among themselves), `chunk` rows per call. */
  async prefill(embeds: Float32Array, rows: number, start: number, chunk: number): Promise<void> {
    for (let done = 0; done < rows; done += chunk) {
      const count = Math.min(chunk, rows - done);
      await this.call(embeds.subarray(done * this.hidden, (done + count) * this.hidden), count, start + done, [], count, done === 0);
    }
  }

  /**
   * Logits of `logitRows` of the block, against the cache, without caching the block. A finished block held
   * back goes in front, in the same call, and is committed.
   */
  denoise(embeds: Float32Array, rows: number, start: number, logitRows: number[]): Promise<Float32Array> {
    const held = this.takePending(start);
    if (!held) return this.call(embeds, rows, start, logitRows, 0);
    const fused = new Float32Array((held.rows + rows) * this.hidden);
    fused.set(held.embeds.subarray(0, held.rows * this.hidden), 0);
    fused.set(embeds.subarray(0, rows * this.hidden), held.rows * this.hidden);
    return this.call(fused, held.rows + rows, held.start, logitRows.map((r) => r + held.rows), held.rows);
  }

  /** The finished block's K/V must reach the cache before the next block's calls. */
  async commit(embeds: Float32Array, rows: number, start: number): Promise<void> {
    if (this.referenceSchedule) {
      await this.call(embeds, rows, start, [], rows);
      return;
    }
    const held = this.pending;
    if (!held) {
      this.pending = { embeds, rows, start };
      return;
    }
    // Only under a constraint can a block be finished without a call (every slot forced): the held-back
    // blocks are sent together, block-causal among themselves, exactly as their separate commits would be.
    if (held.start + held.rows !== start) throw new Error(`generate: finished blocks at ${held.start} and ${start} are not adjacent`);
    const joined = new Float32Array((held.rows + rows) * this.hidden);
    joined.set(held.embeds.subarray(0, held.rows * this.hidden), 0);
    joined.set(embeds.subarray(0, rows * this.hidden), held.rows * this.hidden);
    this.pending = { embeds: joined, rows: held.rows + rows, start: held.start };
  }

  /** The held-back block, which must end right where the next call's rows start. */
  private takePending(start: number): PendingCommit | null {
    const held = this.pending;
    this.pending = null;
    if (held && held.start + held.rows !== start) {
      throw new Error(`generate: a finished block at ${held.start}..${held.start + held.rows - 1} cannot be fused with rows at ${start}`);
    }
    return held;
  }
}

export async function generate(options: GenerateOptions): Promise<GenerateResult> {
  validate(options);
  const { decoder, embeddings, promptEmbeds, maskTokenId, eosTokenId, onEvent } = options;
  const L = options.promptLength;
  const G = options.genLength;
  const B = options.blockSize;
  const hidden = embeddings.hiddenSize;
  const vocab = decoder.vocabSize;
  const quirks = options.quirks ?? QWENVL_GENERATION;
  const fullDiffusion = B >= L + G;
  const schedule = transferSchedule(fullDiffusion && quirks.fullDiffusionSchedule === 'genLength' ? G : B, options.steps);
  const seed = options.seed ?? randomSeed();
  const rng = createRng(seed);
  const sampler = new TokenSampler(vocab, { temperature: options.temperature, topK: options.topK, topP: options.topP, confidence: quirks.confidence });
  const constraint = options.constraint;
  const fillForced = options.fillForcedTokens ?? true;
  const dynamic = options.remasking === 'low_confidence_dynamic';
  let constraintState = constraint?.start();
  // The constraint's state after the last filled output position (< L + G): is the output complete?
  let outputState = constraintState;

  const maskRow = new Float32Array(hidden);
  embeddings.rowInto(maskTokenId, maskRow, 0);
  // Per token id: does its embedding row pass the reference's mask test? (Read once per id.)
  const maskLike = new Map<number, boolean>();
  const scratchRow = new Float32Array(hidden);
  const isMaskLike = (id: number): boolean => {
    let known = maskLike.get(id);
    if (known === undefined) {
      embeddings.rowInto(id, scratchRow, 0);
      known = rowEquals(scratchRow, 0, maskRow, hidden);
      maskLike.set(id, known);
    }
    return known;
  };

  const totalLength = fullDiffusion ? L + G : Math.ceil((L + G) / B) * B;
  const numBlocks = fullDiffusion ? 1 : totalLength / B;
  const prefillBlocks = fullDiffusion ? 0 : Math.floor(L / B);
  // Ids of every position; prompt positions are never read (the reference stores argmax reconstructions there).
  const ids = new Int32Array(totalLength).fill(maskTokenId);

  const cachedRows = options.cachedRows ?? 0;
  if (cachedRows > 0) decoder.truncate!(cachedRows);
  else decoder.reset();
  const calls = new DecoderCalls(decoder, B, hidden, options.referenceSchedule ?? false, options.signal);
  if (prefillBlocks > 0) {
    const rows = prefillBlocks * B;
    const chunk = Math.max(B, Math.floor((options.prefillChunkRows ?? PREFILL_CHUNK_ROWS) / B) * B);
    if (rows > cachedRows) await calls.prefill(promptEmbeds.subarray(cachedRows * hidden, rows * hidden), rows - cachedRows, cachedRows, chunk);
    onEvent?.({ type: 'prefill', rows, cached: cachedRows });
  }

  let blocks = 0;
  let stoppedAtEos = false;
  let stopped = false;
  for (let block = prefillBlocks; block < numBlocks; block++) {
    const start = block * B;
    const rows = Math.min(B, totalLength - start);
    onEvent?.({ type: 'block-start', block, start, rows });

    // The block's rows: prompt tail (if any), then mask rows.
    const embeds = new Float32Array(rows * hidden);
    const masked: boolean[] = [];
    for (let r = 0; r < rows; r++) {
      const position = start + r;
      if (position < L) {
        embeds.set(promptEmbeds.subarray(position * hidden, (position + 1) * hidden), r * hidden);
        masked.push(rowEquals(embeds, r * hidden, maskRow, hidden));
      } else {
        embeds.set(maskRow, r * hidden);
        masked.push(true);
      }
    }

    // Under a constraint: the first generated row of the block not filled yet (they fill left to right).
    let nextRow = Math.min(rows, Math.max(0, L - start));
    /** Under a constraint: writes `id` at row r (the constraint has accepted it). */
    const fillConstrained = (r: number, id: number, indices: number[], filled: number[]) => {
      const position = start + r;
      const next = constraint!.advance(constraintState, id);
      if (next === null) throw new Error(`generate: the constraint allowed token ${id} but does not accept it`);
      constraintState = next;
      if (position < L + G) outputState = constraintState;
      ids[position] = id;
      embeddings.rowInto(id, embeds, r * hidden);
      masked[r] = false;
      if (position >= L && position < L + G) {
        indices.push(position - L);
        filled.push(id);
      }
    };
    /** Under a constraint: the allowed tokens at row r, for the budget left there. */
    const allowedAt = (r: number) => constraint!.allowed(constraintState, L + G - (start + r));
    /** Under a constraint, with fillForcedTokens: the token row r gets without logits, or null. */
    const forcedAt = (r: number): number | null => {
      if (!fillForced) return null;
      const remaining = L + G - (start + r);
      if (constraint!.forced) return constraint!.forced(constraintState, remaining);
      const allowed = constraint!.allowed(constraintState, remaining);
      return allowed.length === 1 ? allowed[0] : null;
    };

    let committed = false;
    for (let step = 0; step < schedule.length; step++) {
      const indices: number[] = [];
      const filled: number[] = [];
      // Forced slots need no logits: fill them before deciding whether a call is needed at all.
      while (constraint && nextRow < rows) {
        const forced = forcedAt(nextRow);
        if (forced === null) break;
        fillConstrained(nextRow++, forced, indices, filled);
      }
      const maskedRows: number[] = [];
      for (let r = 0; r < rows; r++) if (masked[r]) maskedRows.push(r);
      if (maskedRows.length === 0) {
        if (indices.length > 0) onEvent?.({ type: 'unmask', block, step, indices, ids: filled });
        await calls.commit(embeds, rows, start);
        committed = true;
        break;
      }
      const logits = await calls.denoise(embeds, rows, start, maskedRows);
      if (constraint) {
        maskedRows.forEach((r, i) => {
          // prompt rows that count as masked: not part of the document
          if (start + r >= L) return;
          const id = sampler.choose(logits, i * vocab, rng).id;
          ids[start + r] = id;
          embeddings.rowInto(id, embeds, r * hidden);
          masked[r] = false;
        });
        const quota = Math.max(1, schedule[step]);
        let sampled = 0;
        while (nextRow < rows) {
          const forced = forcedAt(nextRow);
          if (forced !== null) {
            fillConstrained(nextRow++, forced, indices, filled);
            continue;
          }
          if (sampled >= quota && !dynamic) break;
          const allowed = allowedAt(nextRow);
          const i = maskedRows.indexOf(nextRow);
          if (i < 0) throw new Error(`generate: row ${nextRow} is not filled and has no logits`);
          const choice = sampler.chooseAmong(logits, i * vocab, allowed, rng);
          if (sampled >= quota && !(choice.prob > Math.fround(options.threshold))) break;
          fillConstrained(nextRow++, choice.id, indices, filled);
          sampled++;
        }
        onEvent?.({ type: 'unmask', block, step, indices, ids: filled });
        continue;
      }
      const choices: TokenChoice[] = maskedRows.map((_, i) => sampler.choose(logits, i * vocab, rng));
      const picked = choosePositions(
        choices.map((c) => c.prob),
        schedule[step],
        options.remasking,
        options.threshold,
      );
      for (const i of picked) {
        const r = maskedRows[i];
        const id = choices[i].id;
        ids[start + r] = id;
        embeddings.rowInto(id, embeds, r * hidden);
        masked[r] = isMaskLike(id);
        const position = start + r;
        if (position >= L && position < L + G) {
          indices.push(position - L);
          filled.push(id);
        }
      }
      onEvent?.({ type: 'unmask', block, step, indices, ids: filled });
    }
    blocks++;

    const firstOutput = Math.max(start, L);
    const lastOutput = Math.min(start + rows, L + G);
    onEvent?.({
      type: 'block-end',
      block,
      firstIndex: firstOutput - L,
      ids: Array.from(ids.subarray(firstOutput, Math.max(firstOutput, lastOutput))),
      committed,
    });
    // EOS anywhere at a generated position of the block, including past G in the last block.
    let eos = false;
    for (let p = firstOutput; p < start + rows; p++) if (ids[p] === eosTokenId) eos = true;
    if (eos) {
      stoppedAtEos = true;
      break;
    }
    if (block + 1 < numBlocks && options.stopAfterBlock && (await options.stopAfterBlock(block))) {
      stopped = true;
      break;
    }
  }

  const result: GenerateResult = { tokens: Array.from(ids.subarray(L, L + G)), nfe: calls.nfe, blocks, stoppedAtEos, stopped, cachedRows, seed };
  if (constraint) result.constraintComplete = constraint.isComplete(outputState);
  onEvent?.({ type: 'finished', result });
  return result;
}
