/**
 * A float64 reference of the Qwen2 text decoder as DiffusionVL runs it (spec §5), written straight from the
 * math for tests: no ONNX, no quantisation, no cleverness. Every product and sum is a JS number (float64);
 * the only float32 steps are the ones transformers itself takes in float32 (the rotary angles).
 *
 * Per layer:  h = x + o_proj(attn(rope(q), rope(k), v))  with q,k,v = linear+bias of rmsnorm(x)
 *             x' = h + down(silu(gate(rmsnorm(h))) * up(rmsnorm(h)))
 * then rmsnorm(model.norm) and lm_head (embed_tokens when tied).
 *
 * Attention is over [past rows ; new rows] with an explicit predicate instead of a causal rule, GQA with
 * query head h reading kv head floor(h / (numHeads / numKvHeads)), scale 1/sqrt(headDim).
 */
import type { TextConfig } from '../../src/checkpoint/types.js';

/** What the decoder reads of a config (any family's). */
type DecoderConfig = { text: TextConfig };
import type { MemoryWeights } from '../helpers/random-weights.js';

/** K or V rows of one layer, row-major [rows, numKvHeads, headDim] (the BSNH layout without the batch). */
export interface KvRows {
  k: Float64Array;
  v: Float64Array;
  rows: number;
}

export interface ReferenceForwardInput {
  /** New rows' input embeddings, row-major [rows, hiddenSize]. */
  embeds: Float32Array | Float64Array;
  /** Absolute position of each new row (its rotary angle). */
  positions: number[];
  /** Cached rows per layer (same row count in every layer); omitted = empty cache. */
  past?: KvRows[];
  /** May new row `row` attend to column `col`? Columns 0..P-1 are past rows, P..P+S-1 the new rows. */
  attend: (row: number, col: number) => boolean;
  /** New-row indices whose logits are wanted, in this order. */
  logitRows: number[];
}

export interface ReferenceForwardOutput {
  /** One vocab-length vector per entry of logitRows. */
  logits: Float64Array[];
  /** K (after rotary) and V of the new rows only, per layer. */
  newKv: KvRows[];
}

/**
 * transformers' inverse frequencies, in float32 as it computes them:
 * 1 / (theta ^ (arange(0, D, 2) / D)), each step rounded to float32.
 */
export function ropeInverseFrequencies(theta: number, headDim: number): Float32Array {
  const half = headDim / 2;
  const out = new Float32Array(half);
  for (let j = 0; j < half; j++) {
    const exponent = Math.fround((2 * j) / headDim);
    out[j] = Math.fround(1 / Math.fround(Math.pow(theta, exponent)));
  }
  return out;
}

/** One decoder call: the new rows attend to the cache and to each other as `attend` allows. */
export function referenceDecoderForward(
  weights: MemoryWeights,
  config: DecoderConfig,
  input: ReferenceForwardInput,
): ReferenceForwardOutput {
  const t = config.text;
  const H = t.hiddenSize;
  const D = t.headDim;
  const rows = input.positions.length;
  if (input.embeds.length !== rows * H) throw new Error(`reference: ${input.embeds.length} embed values for ${rows} rows`);
  const w = (name: string) => weights.get(name).data;

  let x: Float64Array = Float64Array.from(input.embeds);
  const newKv: KvRows[] = [];
  for (let layer = 0; layer < t.numLayers; layer++) {
    const p = `model.layers.${layer}`;
    const past = input.past?.[layer] ?? { k: new Float64Array(0), v: new Float64Array(0), rows: 0 };

    const normed = rmsNorm(x, rows, H, w(`${p}.input_layernorm.weight`), t.rmsNormEps);
    const q = linear(normed, rows, H, w(`${p}.self_attn.q_proj.weight`), t.numHeads * D, w(`${p}.self_attn.q_proj.bias`));
    const k = linear(normed, rows, H, w(`${p}.self_attn.k_proj.weight`), t.numKvHeads * D, w(`${p}.self_attn.k_proj.bias`));
    const v = linear(normed, rows, H, w(`${p}.self_attn.v_proj.weight`), t.numKvHeads * D, w(`${p}.self_attn.v_proj.bias`));
    applyRope(q, rows, t.numHeads, D, input.positions, t.ropeTheta);
    applyRope(k, rows, t.numKvHeads, D, input.positions, t.ropeTheta);
    newKv.push({ k, v, rows });

    const attn = attention(q, concatRows(past.k, k), concatRows(past.v, v), rows, past.rows, config, input.attend);
    const projected = linear(attn, rows, t.numHeads * D, w(`${p}.self_attn.o_proj.weight`), H);
    for (let i = 0; i < x.length; i++) x[i] += projected[i];

    const normed2 = rmsNorm(x, rows, H, w(`${p}.post_attention_layernorm.weight`), t.rmsNormEps);
    const I = t.intermediateSize;
    const gate = linear(normed2, rows, H, w(`${p}.mlp.gate_proj.weight`), I);
    const up = linear(normed2, rows, H, w(`${p}.mlp.up_proj.weight`), I);
    for (let i = 0; i < gate.length; i++) gate[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
    const down = linear(gate, rows, I, w(`${p}.mlp.down_proj.weight`), H);
    for (let i = 0; i < x.length; i++) x[i] += down[i];
  }
  x = rmsNorm(x, rows, H, w('model.norm.weight'), t.rmsNormEps);

  const head = w(t.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
  const logits = input.logitRows.map((row) => {
    if (row < 0 || row >= rows) throw new Error(`reference: logit row ${row} of ${rows}`);
    return linear(x.subarray(row * H, (row + 1) * H), 1, H, head, t.vocabSize);
  });
  return { logits, newKv };
}

/**
 * Logits of a whole sequence run in one call without a cache (what a model without KV caching computes):
 * row i attends to row j when attend(i, j). Positions default to 0..rows-1.
 */
export function referenceSequenceLogits(
  weights: MemoryWeights,
  config: DecoderConfig,
  sequence: { embeds: Float32Array | Float64Array; attend: (i: number, j: number) => boolean; logitRows: number[]; positions?: number[] },
): Float64Array[] {
  const rows = sequence.embeds.length / config.text.hiddenSize;
  const positions = sequence.positions ?? Array.from({ length: rows }, (_, i) => i);
  return referenceDecoderForward(weights, config, { embeds: sequence.embeds, positions, attend: sequence.attend, logitRows: sequence.logitRows }).logits;
}

/**
 * The logits of a full forward for the naive generate (bd3lm-reference.ts FullForward): it asks for every row
 * but reads only a suffix (the block), and 152k-wide rows for all would dominate a test. Rows are computed on
 * first access, from that row to the end.
 */
export function lazyLogits(
  weights: MemoryWeights,
  config: DecoderConfig,
  rows: { position: number; embed: Float32Array }[],
  attend: (i: number, j: number) => boolean,
): Float64Array[] {
  const H = config.text.hiddenSize;
  const embeds = new Float64Array(rows.length * H);
  rows.forEach((r, i) => embeds.set(r.embed, i * H));
  const positions = rows.map((r) => r.position);
  const computed = new Map<number, Float64Array>();
  const out: Float64Array[] = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    Object.defineProperty(out, i, {
      enumerable: true,
      get() {
        if (!computed.has(i)) {
          const logitRows = Array.from({ length: rows.length - i }, (_, k) => i + k);
          const { logits } = referenceDecoderForward(weights, config, { embeds, positions, attend, logitRows });
          logitRows.forEach((row, k) => computed.set(row, logits[k]));
        }
        return computed.get(i)!;
      },
    });
  }
  return out;
}

/** DiffusionVL's block-causal rule over absolute positions: attend iff key block <= query block. */
export function blockCausal(blockSize: number): (queryPosition: number, keyPosition: number) => boolean {
  return (qp, kp) => Math.floor(kp / blockSize) <= Math.floor(qp / blockSize);
}

function rmsNorm(x: Float64Array, rows: number, width: number, weight: Float32Array, eps: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let sumSquares = 0;
    for (let c = 0; c < width; c++) sumSquares += x[r * width + c] ** 2;
    const inv = 1 / Math.sqrt(sumSquares / width + eps);
    for (let c = 0; c < width; c++) out[r * width + c] = x[r * width + c] * inv * weight[c];
  }
  return out;
}

/** y = x W^T (+ b) with W stored [outWidth, inWidth] as in the checkpoint. */
function linear(x: Float64Array, rows: number, inWidth: number, weight: Float32Array, outWidth: number, bias?: Float32Array): Float64Array {
  if (weight.length !== inWidth * outWidth) throw new Error(`reference: weight of ${weight.length} values is not ${outWidth}x${inWidth}`);
  const out = new Float64Array(rows * outWidth);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outWidth; o++) {
      let acc = bias ? bias[o] : 0;
      const base = o * inWidth;
      for (let i = 0; i < inWidth; i++) acc += x[r * inWidth + i] * weight[base + i];
      out[r * outWidth + o] = acc;
    }
  }
  return out;
}

/**
 * Rotary embedding in place, rotate_half layout: for j < D/2 the pair (j, j + D/2) turns by
 * angle position * invFreq[j]. The angle is the float32 product transformers forms; cos/sin in float64.
 */
function applyRope(x: Float64Array, rows: number, heads: number, D: number, positions: number[], theta: number): void {
  const invFreq = ropeInverseFrequencies(theta, D);
  const half = D / 2;
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(positions[r] * invFreq[j]);
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      for (let h = 0; h < heads; h++) {
        const base = (r * heads + h) * D;
        const a = x[base + j];
        const b = x[base + j + half];
        x[base + j] = a * cos - b * sin;
        x[base + j + half] = b * cos + a * sin;
      }
    }
  }
}

function concatRows(a: Float64Array, b: Float64Array): Float64Array {
  const out = new Float64Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** Softmax attention of `rows` queries over pastRows + rows keys; returns [rows, numHeads * D]. */
function attention(
  q: Float64Array,
  keys: Float64Array,
  values: Float64Array,
  rows: number,
  pastRows: number,
  config: DecoderConfig,
  attend: (row: number, col: number) => boolean,
): Float64Array {
  const { numHeads, numKvHeads, headDim: D } = config.text;
  const group = numHeads / numKvHeads;
  const total = pastRows + rows;
  const scale = 1 / Math.sqrt(D);
  const out = new Float64Array(rows * numHeads * D);
  const scores = new Float64Array(total);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < numHeads; h++) {
      const kvHead = Math.floor(h / group);
      const qBase = (r * numHeads + h) * D;
      let max = -Infinity;
      for (let c = 0; c < total; c++) {
        if (!attend(r, c)) {
          scores[c] = -Infinity;
          continue;
        }
        const kBase = (c * numKvHeads + kvHead) * D;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[qBase + d] * keys[kBase + d];
        scores[c] = dot * scale;
        max = Math.max(max, scores[c]);
      }
      if (max === -Infinity) throw new Error(`reference: row ${r} attends to nothing`);
      let sum = 0;
      for (let c = 0; c < total; c++) {
        scores[c] = scores[c] === -Infinity ? 0 : Math.exp(scores[c] - max);
        sum += scores[c];
      }
      for (let c = 0; c < total; c++) {
        if (scores[c] === 0) continue;
        const weight = scores[c] / sum;
        const vBase = (c * numKvHeads + kvHead) * D;
        for (let d = 0; d < D; d++) out[qBase + d] += weight * values[vBase + d];
      }
    }
  }
  return out;
}
