/**
 * The baseline that block diffusion with a KV cache is measured against: LLaDA-V-style decoding, where every
 * denoising step runs the whole sequence (prompt + all gen_length rows, the ones not generated yet as mask
 * rows) through the model with full attention, and nothing is cached. Wrapped around the real decoder session
 * so that the same generation loop drives both; only the cost is compared (random weights: tokens mean nothing).
 */
import type { BlockDecoder, DecoderRequest, DecoderResult } from '../../src/generate/types.js';
import type { OrtBlockDecoder } from '../../src/runtime/decoder-session.js';

export class RecomputeDecoder implements BlockDecoder {
  /** The whole sequence, row-major; rows the loop has not written yet hold the mask embedding. */
  private readonly sequence: Float32Array;
  /** Forwards actually run, with their wall time. */
  readonly forwardMs: number[] = [];

  constructor(
    private readonly inner: OrtBlockDecoder,
    private readonly hidden: number,
    /** Rows of every forward: prompt + gen_length (the full generation, even when fewer blocks are run). */
    readonly totalRows: number,
    maskRow: Float32Array,
  ) {
    this.sequence = new Float32Array(totalRows * hidden);
    for (let r = 0; r < totalRows; r++) this.sequence.set(maskRow, r * hidden);
  }

  get vocabSize(): number {
    return this.inner.vocabSize;
  }

  /** Nothing is ever cached: every call sees the whole sequence. */
  get cacheLength(): number {
    return 0;
  }

  reset(): void {
    this.inner.reset();
  }

  async forward(request: DecoderRequest): Promise<DecoderResult> {
    const { count, start } = request;
    if (start + count > this.totalRows) throw new Error(`recompute: rows ${start}..${start + count - 1} beyond ${this.totalRows}`);
    this.sequence.set(request.embeds.subarray(0, count * this.hidden), start * this.hidden);
    // A call that wants no logits (the prefill, a separate commit) only fixes rows: without a cache it has
    // nothing to compute.
    if (request.logitRows.length === 0) return { logits: new Float32Array(0) };
    this.inner.reset();
    const t0 = performance.now();
    const result = await this.inner.forward({
      embeds: this.sequence,
      count: this.totalRows,
      start: 0,
      blockSize: this.totalRows, // one block: full bidirectional attention, as in LLaDA-V
      logitRows: request.logitRows.map((r) => start + r),
      commit: false,
    });
    this.forwardMs.push(performance.now() - t0);
    return result;
  }
}
