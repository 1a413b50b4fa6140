/**
 * A deliberately naive re-implementation of DiffusionVL's `generate_with_bd3lm` for tests (spec §6), written
 * line by line from the Python, with no KV cache at all: every model call recomputes every row it needs from
 * the embeddings through a caller-supplied `fullForward(rows, attend)`.
 *
 * How "no cache" stays equivalent to the reference's DynamicCache: a cached row's keys/values at every layer
 * depend only on the rows it attended to when it was computed (its own call). So each cached row remembers
 * the set of rows it attended to in its commit call, and a recomputation that lets it attend to exactly that
 * set reproduces its cached K/V. New (query) rows attend to the keys the reference's attention sees: the
 * cached rows in cache order followed by the block's rows, masked by the full-sequence block mask row of the
 * query position SLICED BY KEY INDEX to the number of keys (`mask[..., :key_len]` in transformers' sdpa/eager
 * attention). When a block was never committed, the cache is shorter than the block's start and key index
 * no longer equals position: the slice then simply ends early. This file indexes the mask by key index, as the
 * reference does, rather than assuming anything about visibility.
 *
 * Sampling follows the torch code literally on the whole vocabulary (sorts, no shortcuts), with the same
 * documented conventions as src/generate (float32-rounded probabilities, lowest index first among ties, one
 * uniform per masked row in position order, inverse-CDF draw in vocabulary order).
 */

export interface ForwardRow {
  /** Absolute position (rotary angle). */
  position: number;
  embed: Float32Array;
}

/** Logits (float64) of every row, where row i attends to row j iff attend(i, j). */
export type FullForward = (rows: ForwardRow[], attend: (i: number, j: number) => boolean) => Float64Array[];

export interface ReferenceOptions {
  fullForward: FullForward;
  /** Embedding row of a token id. */
  embedRow: (id: number) => Float32Array;
  vocabSize: number;
  /** Prompt embedding rows. */
  prompt: Float32Array[];
  genLength: number;
  steps: number;
  blockSize: number;
  temperature: number;
  topK: number;
  topP: number;
  remasking: 'low_confidence_static' | 'low_confidence_dynamic';
  threshold: number;
  /** Uniforms in [0, 1), needed when temperature > 0. */
  nextFloat?: () => number;
  maskTokenId: number;
  eosTokenId: number;
  /**
   * The SigLIP family's generate (llava_diffusionvl_qwen.py): in the full-diffusion ablation the schedule splits
   * the generation length, and a sampled token's confidence is its plain softmax probability.
   */
  siglipFamily?: boolean;
}

export interface ReferenceResult {
  tokens: number[];
  nfe: number;
  /** Block indices that reached the cache, in order. */
  committedBlocks: number[];
  /** Calls made only to store a finished block's K/V (the prefill call not included). */
  commitCalls: number;
}

interface CachedRow extends ForwardRow {
  /** Indices (into the cache) of the rows this row attended to in its commit call, itself included. */
  keys: Set<number>;
}

/** torch.all(|a - b| < 1e-5) */
function isMaskEmbedding(row: Float32Array, mask: Float32Array): boolean {
  return row.every((v, h) => Math.abs(v - mask[h]) < 1e-5);
}

/** get_bd3lm_num_transfer_tokens */
function numTransferTokens(blockLength: number, steps: number): number[] {
  const base = Math.floor(blockLength / steps);
  const remainder = blockLength % steps;
  const out = new Array<number>(steps + 1).fill(base);
  for (let j = 0; j < remainder; j++) out[j] += 1;
  return out;
}

/** Indices of `values` sorted descending, lower index first among equals. */
function argsortDescending(values: ArrayLike<number>): number[] {
  const idx = Array.from({ length: values.length }, (_, i) => i);
  return idx.sort((a, b) => {
    if (values[a] === values[b]) return a - b;
    return values[a] > values[b] ? -1 : 1;
  });
}

/** torch.topk(values, k).indices with lowest index first among ties. */
function topkIndices(values: ArrayLike<number>, k: number): number[] {
  return argsortDescending(values).slice(0, k);
}

/** softmax in float64, sums in the given order of indices. */
function softmax(logits: ArrayLike<number>): number[] {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  const e = Array.from(logits, (x) => Math.exp(x - max));
  let sum = 0;
  for (const v of e) sum += v;
  return e.map((v) => v / sum);
}

/** _sample_with_temperature_topk_topp for one row of float32 logits. */
function sampleRow(logits: Float32Array, o: ReferenceOptions): { x0: number; p: number } {
  if (o.temperature === 0) {
    let x0 = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[x0]) x0 = i;
    return { x0, p: Math.fround(softmax(logits)[x0]) };
  }
  let modified = Array.from(logits);
  if (o.temperature !== 1) modified = modified.map((x) => Math.fround(x / Math.fround(o.temperature)));
  if (o.topK > 0) {
    // _top_k_logits: values below the k-th largest -> -inf
    const sorted = [...modified].sort((a, b) => b - a);
    const kth = sorted[Math.min(o.topK, sorted.length) - 1];
    modified = modified.map((x) => (x < kth ? -Infinity : x));
  }
  if (o.topP < 1) {
    // _top_p_logits
    const order = argsortDescending(modified);
    const sortedProbs = softmax(order.map((i) => modified[i]));
    const cumulative: number[] = [];
    let c = 0;
    for (const p of sortedProbs) cumulative.push((c += p));
    const sortedMask = cumulative.map((v) => v > Math.fround(o.topP));
    const shifted = [false, ...sortedMask.slice(0, -1)];
    const remove = new Array<boolean>(modified.length).fill(false);
    order.forEach((i, r) => (remove[i] = shifted[r]));
    modified = modified.map((x, i) => (remove[i] ? -Infinity : x));
  }
  // softmax in vocabulary order, then an inverse-CDF draw in vocabulary order
  let max = -Infinity;
  for (const x of modified) max = Math.max(max, x);
  const weights = modified.map((x) => Math.exp(x - max));
  let total = 0;
  for (const w of weights) total += w;
  if (!o.nextFloat) throw new Error('reference: temperature > 0 needs nextFloat');
  const target = o.nextFloat() * total;
  let cumulative = 0;
  let x0 = -1;
  for (let i = 0; i < weights.length; i++) {
    if (weights[i] === 0) continue;
    cumulative += weights[i];
    x0 = i;
    if (cumulative > target) break;
  }
  if (o.siglipFamily) return { x0, p: Math.fround(softmax(logits)[x0]) };
  return { x0, p: Math.fround(weights[x0] / total) };
}

export function referenceGenerate(o: ReferenceOptions): ReferenceResult {
  const promptLen = o.prompt.length;
  const blockSize = o.blockSize;
  const maskId = o.maskTokenId;
  const isFullDiffusionAblation = blockSize >= promptLen + o.genLength;
  let totalLength: number;
  let numBlocks: number;
  if (isFullDiffusionAblation) {
    totalLength = promptLen + o.genLength;
    numBlocks = 1;
  } else {
    numBlocks = Math.floor((promptLen + o.genLength + blockSize - 1) / blockSize);
    totalLength = numBlocks * blockSize;
  }

  const maskEmbed = o.embedRow(maskId);
  const xIds: number[] = new Array(totalLength).fill(maskId);
  const xEmbeds: Float32Array[] = Array.from({ length: totalLength }, (_, i) => (i < promptLen ? o.prompt[i] : maskEmbed));
  // (x_ids of prompt positions hold argmax reconstructions in the reference; never read, so left as mask ids)

  // block_diffusion_mask: tril over blocks, repeated B times each way; sliced to total_length in the ablation.
  const maskSize = isFullDiffusionAblation ? totalLength : numBlocks * blockSize;
  const blockMask = (q: number, k: number) => Math.floor(k / blockSize) <= Math.floor(q / blockSize);
  const visible: boolean[][] = Array.from({ length: maskSize }, (_, q) =>
    Array.from({ length: maskSize }, (_, k) => blockMask(q, k)),
  );

  const cache: CachedRow[] = [];
  const committedBlocks: number[] = [];
  let nfe = 0;
  let commitCalls = 0;

  /**
   * One model call on `queryEmbeds` at `positions` with mask rows `maskRows` (the full mask row of each query
   * position, to be sliced by key index). Returns logits of the query rows; appends them to the cache when
   * storeKv.
   */
  const modelCall = (queryEmbeds: Float32Array[], positions: number[], maskColumns: number, storeKv: boolean) => {
    nfe++;
    const cached = cache.length;
    const keyLen = cached + queryEmbeds.length;
    const rows: ForwardRow[] = [
      ...cache.map((c) => ({ position: c.position, embed: c.embed })),
      ...queryEmbeds.map((embed, i) => ({ position: positions[i], embed })),
    ];
    // Query row i (0-based among the new rows) sees key index k iff the mask row of its position has column k
    // set, for k < min(keyLen, maskColumns) (the mask is [:, :, block_start:block_end, :block_end], then
    // attention slices it to key_len).
    const queryKeys: Set<number>[] = positions.map((pos) => {
      const keys = new Set<number>();
      for (let k = 0; k < Math.min(keyLen, maskColumns); k++) if (visible[pos][k]) keys.add(k);
      return keys;
    });
    const attend = (i: number, j: number) => (i < cached ? cache[i].keys.has(j) : queryKeys[i - cached].has(j));
    const logits = o.fullForward(rows, attend).slice(cached);
    if (storeKv) {
      queryEmbeds.forEach((embed, i) => cache.push({ position: positions[i], embed, keys: queryKeys[i] }));
    }
    return logits.map((row) => Float32Array.from(row)); // `.float()` of the lm_head output
  };

  const prefillBlocks = Math.floor(promptLen / blockSize);
  const prefillLength = prefillBlocks * blockSize;
  if (prefillLength > 0) {
    const positions = Array.from({ length: prefillLength }, (_, i) => i);
    modelCall(xEmbeds.slice(0, prefillLength), positions, prefillLength, true);
    for (let b = 0; b < prefillBlocks; b++) committedBlocks.push(b);
  }

  const numTransfer = numTransferTokens(isFullDiffusionAblation && o.siglipFamily ? o.genLength : blockSize, o.steps);

  for (let blockIdx = prefillBlocks; blockIdx < numBlocks; blockIdx++) {
    const blockStart = blockIdx * blockSize;
    const blockEnd = blockStart + blockSize;
    // x_embeds[:, block_start:block_end] (shorter than B in the ablation)
    const curEmbeds = xEmbeds.slice(blockStart, Math.min(blockEnd, totalLength));
    const curIds = xIds.slice(blockStart, Math.min(blockEnd, totalLength));
    const positions = curEmbeds.map((_, i) => blockStart + i);
    const maskColumns = Math.min(blockEnd, maskSize);

    for (let step = 0; step < o.steps + 1; step++) {
      const isMask = curEmbeds.map((e) => isMaskEmbedding(e, maskEmbed));
      if (!isMask.some((m) => m)) {
        modelCall(curEmbeds, positions, maskColumns, true);
        commitCalls++;
        committedBlocks.push(blockIdx);
        break;
      }
      const logits = modelCall(curEmbeds, positions, maskColumns, false);
      // x0 and x0_p for every row; the random draws only for masked rows (see the module comment)
      const samples = logits.map((row, i) =>
        isMask[i] || o.temperature === 0 ? sampleRow(row, o) : { x0: -1, p: Number.NaN },
      );
      const numToTransfer = numTransfer[step];
      const confidence = samples.map((s, i) => (isMask[i] ? s.p : -Infinity));
      const transfer = new Array<boolean>(curEmbeds.length).fill(false);
      const numMasks = isMask.filter((m) => m).length;
      if (o.remasking === 'low_confidence_static') {
        const k = Math.min(numToTransfer, numMasks);
        if (k > 0 && !confidence.every((c) => c === -Infinity)) for (const i of topkIndices(confidence, k)) transfer[i] = true;
      } else {
        const high = confidence.map((c) => c > Math.fround(o.threshold));
        const numHigh = high.filter((h) => h).length;
        if (numHigh >= numToTransfer) high.forEach((h, i) => (transfer[i] = h));
        else {
          const k = Math.min(numToTransfer, numMasks);
          if (k > 0) for (const i of topkIndices(confidence, k)) transfer[i] = true;
        }
      }
      for (let i = 0; i < curEmbeds.length; i++) {
        if (transfer[i]) {
          curIds[i] = samples[i].x0;
          curEmbeds[i] = o.embedRow(samples[i].x0);
        }
      }
    }

    curEmbeds.forEach((e, i) => (xEmbeds[blockStart + i] = e));
    curIds.forEach((id, i) => (xIds[blockStart + i] = id));

    if (blockEnd > promptLen) {
      const genStart = Math.max(promptLen, blockStart);
      if (xIds.slice(genStart, blockEnd).includes(o.eosTokenId)) break;
    }
  }
  return { tokens: xIds.slice(promptLen, promptLen + o.genLength), nfe, committedBlocks, commitCalls };
}
