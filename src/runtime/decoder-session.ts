/**
 * The text decoder on onnxruntime: implements the generation loop's BlockDecoder over the graph written by
 * convert/decoder-graph.ts (inputs_embeds, position_ids, attention_bias, logits_index, past_key/value.{i}
 * -> logits, new_key/value.{i}).
 */
import type { TextConfig } from '../checkpoint/types.js';
import type { BlockDecoder, DecoderRequest, DecoderResult } from '../generate/types.js';
import { KvCache } from './kv-cache.js';
import { type Ort, ort } from './onnxruntime.js';

export class OrtBlockDecoder implements BlockDecoder {
  readonly vocabSize: number;
  private readonly cache: KvCache;
  private readonly outputNames: string[];
  /** Milliseconds spent inside onnxruntime's run() since construction (the rest of a step is host work). */
  runMs = 0;
  /**
   * What each cached row holds (a token id, or an image row's label), as the code that filled the cache
   * recorded it, so that a later prompt sharing those rows can keep them (ask.ts, reuseCache); null: unknown.
   */
  rowKeys: readonly (number | string)[] | null = null;

  constructor(
    private readonly session: Ort.InferenceSession,
    private readonly text: TextConfig,
  ) {
    this.vocabSize = text.vocabSize;
    this.cache = new KvCache(text.numLayers, text.numKvHeads, text.headDim);
    this.outputNames = ['logits'];
    for (let i = 0; i < text.numLayers; i++) this.outputNames.push(`new_key.${i}`, `new_value.${i}`);
  }

  get cacheLength(): number {
    return this.cache.length;
  }

  /** Pre-allocates the cache for a whole generation. */
  reserve(rows: number): void {
    this.cache.reserve(rows);
  }

  reset(): void {
    this.cache.clear();
    this.rowKeys = null;
  }

  truncate(rows: number): void {
    this.cache.truncate(rows);
    this.rowKeys = this.rowKeys?.slice(0, rows) ?? null;
  }

  /**
   * Appends K/V rows computed elsewhere ([rows, kvHeads, headDim] per layer). Benchmarks use it to give the
   * decoder a cache of a given length without paying for a prefill; generation never does.
   */
  appendCached(keys: Float32Array[], values: Float32Array[], rows: number): void {
    this.cache.append(keys, values, rows);
  }

  async forward(request: DecoderRequest): Promise<DecoderResult> {
    const { count, start, blockSize } = request;
    const hidden = this.text.hiddenSize;
    if (request.embeds.length < count * hidden) throw new Error(`decoder: ${request.embeds.length} values for ${count} rows`);
    const commitRows = request.commit ? (request.commitRows ?? count) : 0;
    if (!Number.isInteger(commitRows) || commitRows < 0 || commitRows > count) {
      throw new Error(`decoder: cannot commit ${request.commitRows} of ${count} rows`);
    }
    const past = this.cache.length;
    const feeds: Record<string, Ort.Tensor> = {
      inputs_embeds: new ort.Tensor('float32', request.embeds.subarray(0, count * hidden), [1, count, hidden]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: count }, (_, i) => BigInt(start + i)), [1, count]),
      attention_bias: new ort.Tensor('float32', attentionBias(past, start, count, blockSize), [1, 1, count, past + count]),
      logits_index: new ort.Tensor('int64', BigInt64Array.from(request.logitRows.map((r) => BigInt(r))), [request.logitRows.length]),
    };
    const kvDims = [1, past, this.text.numKvHeads, this.text.headDim];
    for (let layer = 0; layer < this.text.numLayers; layer++) {
      const { key, value } = this.cache.past(layer);
      feeds[`past_key.${layer}`] = new ort.Tensor('float32', key, kvDims);
      feeds[`past_value.${layer}`] = new ort.Tensor('float32', value, kvDims);
    }
    const runStart = performance.now();
    const out = await this.session.run(feeds, this.outputNames);
    this.runMs += performance.now() - runStart;
    if (commitRows > 0) {
      const keys: Float32Array[] = [];
      const values: Float32Array[] = [];
      for (let layer = 0; layer < this.text.numLayers; layer++) {
        keys.push(out[`new_key.${layer}`].data as Float32Array);
        values.push(out[`new_value.${layer}`].data as Float32Array);
      }
      // new_key/new_value hold the call's rows in order: the first commitRows are the ones to keep.
      this.cache.append(keys, values, commitRows);
    }
    return { logits: out.logits.data as Float32Array };
  }
}

/**
 * The additive mask of one call: every new row sees all cached rows, and the new rows of blocks up to its own
 * (block index = absolute position / blockSize), which is the reference's block-causal mask sliced to the keys
 * that exist.
 */
export function attentionBias(past: number, start: number, count: number, blockSize: number): Float32Array {
  const width = past + count;
  const bias = new Float32Array(count * width);
  for (let r = 0; r < count; r++) {
    const rowBlock = Math.floor((start + r) / blockSize);
    for (let q = 0; q < count; q++) {
      if (Math.floor((start + q) / blockSize) > rowBlock) bias[r * width + past + q] = -Infinity;
    }
  }
  return bias;
}
