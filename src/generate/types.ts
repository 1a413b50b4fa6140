/**
 * The boundary between the generation loop and the model runtime.
 * The loop (bd3lm.ts) only sees these interfaces; runtime/ implements them with onnxruntime, tests implement
 * them with float64 references.
 */

/** Token embeddings on the host (rows are read on demand, the table is never held as fp32 in memory). */
export interface EmbeddingTable {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  /** Writes row `id` into `out` at `offset` (float32). */
  rowInto(id: number, out: Float32Array, offset: number): void;
}

export interface DecoderRequest {
  /** `count` rows of hidden size, row-major. */
  embeds: Float32Array;
  count: number;
  /** Absolute position of the first row; rows get positions start..start+count-1. */
  start: number;
  /**
   * Attention among the new rows: each row attends to every cached row, and to the new rows whose absolute
   * block index (position / blockSize) is <= its own. With one block of rows this is full attention.
   */
  blockSize: number;
  /** Row indices (0..count-1) whose logits are returned, in this order. Empty: no logits. */
  logitRows: number[];
  /** Append the new rows' K/V to the cache after the call. */
  commit: boolean;
  /**
   * With `commit`: append only the first `commitRows` rows (default: all `count`). A fused call passes a
   * finished block followed by the next block's rows; only the finished block may enter the cache.
   */
  commitRows?: number;
}

export interface DecoderResult {
  /** logitRows.length x vocabSize, row-major, float32. */
  logits: Float32Array;
}

/** A text decoder with a KV cache of committed rows. */
export interface BlockDecoder {
  readonly vocabSize: number;
  /** Number of committed rows in the cache. */
  readonly cacheLength: number;
  forward(request: DecoderRequest): Promise<DecoderResult>;
  /** Drops the cache (a new conversation). */
  reset(): void;
  /** Keeps the first `rows` committed rows and drops the rest (a new prompt that shares them). */
  truncate?(rows: number): void;
}
