/**
 * An independent float64 reference of the vision tower + projector (spec §3), written from the math, for tests.
 *
 * It works in the processor's patch order throughout: instead of re-ordering tokens into windows it gives every
 * patch its (frame, row, col) from the processor layout and restricts attention with a predicate
 * "same frame and (full-attention block or same window)", where a patch's window is derived from its pixel
 * position (row * patch_size / window_size). Rotary is applied as 2-D rotations of the pairs (i, i + headDim/2).
 * The merger groups the 4 processor rows of each merged unit, so the result is already in raster order of the
 * merged grid. Slow (O(N^2 * hidden) per block) and meant for tiny configs.
 */
import type { WeightSource } from '../../src/checkpoint/types.js';
import type { VisionConfig } from '../../src/models/qwen25vl/types.js';

export interface ReferenceVisionOptions {
  /** Treat every block as a full-attention block (to show the window restriction matters). */
  allFullAttention?: boolean;
}

/**
 * `patches`: [t*h*w, C*T*P*P] in processor order; returns [t*h*w/s^2, outHiddenSize] in raster order of the
 * merged grid (row-major, frame by frame).
 */
export function referenceVisionTower(
  weights: WeightSource,
  vision: VisionConfig,
  patches: Float32Array,
  grid: [number, number, number],
  options: ReferenceVisionOptions = {},
): Float64Array {
  const [t, h, w] = grid;
  const s = vision.spatialMergeSize;
  const hidden = vision.hiddenSize;
  const heads = vision.numHeads;
  const hd = hidden / heads;
  const n = t * h * w;
  const patchWidth = vision.inChannels * vision.temporalPatchSize * vision.patchSize * vision.patchSize;
  const read = (name: string) => Float64Array.from(weights.readF32(name));

  // Position of each processor row. The processor writes, per frame, merge blocks in raster order of the merged
  // grid, and inside a block the s x s patches row-major.
  const frameOf = new Int32Array(n);
  const rowOf = new Int32Array(n);
  const colOf = new Int32Array(n);
  const blocksPerRow = w / s;
  for (let r = 0; r < n; r++) {
    const inFrame = r % (h * w);
    const block = Math.floor(inFrame / (s * s));
    const inBlock = inFrame % (s * s);
    frameOf[r] = Math.floor(r / (h * w));
    rowOf[r] = Math.floor(block / blocksPerRow) * s + Math.floor(inBlock / s);
    colOf[r] = (block % blocksPerRow) * s + (inBlock % s);
  }
  // Windows are window_size x window_size pixels, anchored at the top-left corner.
  const windowKey = (r: number) =>
    `${frameOf[r]}:${Math.floor((rowOf[r] * vision.patchSize) / vision.windowSize)}:${Math.floor((colOf[r] * vision.patchSize) / vision.windowSize)}`;
  const windowOf = Array.from({ length: n }, (_, r) => windowKey(r));
  const attend = (full: boolean, i: number, j: number) => frameOf[i] === frameOf[j] && (full || windowOf[i] === windowOf[j]);

  // Rotary angle of head-dim pair i (0 <= i < hd/2): the first quarter rotates with the row, the second with
  // the column, at frequencies 10000^(-k/quarter).
  const quarter = hd / 4;
  const angle = (r: number, i: number) => {
    const position = i < quarter ? rowOf[r] : colOf[r];
    return position * Math.pow(10000, -(i % quarter) / quarter);
  };

  let x = matmulT(Float64Array.from(patches), n, patchWidth, read('visual.patch_embed.proj.weight'), hidden);
  const full = new Set(vision.fullattBlockIndexes);
  for (let b = 0; b < vision.depth; b++) {
    const p = `visual.blocks.${b}`;
    const isFull = options.allFullAttention === true || full.has(b);

    const qkv = linear(rmsNorm(x, n, hidden, read(`${p}.norm1.weight`)), n, hidden, read(`${p}.attn.qkv.weight`), read(`${p}.attn.qkv.bias`), 3 * hidden);
    // Column c of qkv: part floor(c / hidden) (q, k, v), head floor((c % hidden) / hd), lane c % hd.
    const lane = (r: number, part: number, head: number, i: number) => qkv[r * 3 * hidden + part * hidden + head * hd + i];
    const rotated = (r: number, part: number, head: number): Float64Array => {
      const out = new Float64Array(hd);
      for (let i = 0; i < hd / 2; i++) {
        const a = angle(r, i);
        const x1 = lane(r, part, head, i);
        const x2 = lane(r, part, head, i + hd / 2);
        out[i] = x1 * Math.cos(a) - x2 * Math.sin(a);
        out[i + hd / 2] = x2 * Math.cos(a) + x1 * Math.sin(a);
      }
      return out;
    };

    const attn = new Float64Array(n * hidden);
    for (let head = 0; head < heads; head++) {
      const qs = Array.from({ length: n }, (_, r) => rotated(r, 0, head));
      const ks = Array.from({ length: n }, (_, r) => rotated(r, 1, head));
      for (let i = 0; i < n; i++) {
        const allowed: number[] = [];
        const scores: number[] = [];
        for (let j = 0; j < n; j++) {
          if (!attend(isFull, i, j)) continue;
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += qs[i][d] * ks[j][d];
          allowed.push(j);
          scores.push(dot / Math.sqrt(hd));
        }
        const max = Math.max(...scores);
        const exps = scores.map((v) => Math.exp(v - max));
        const total = exps.reduce((a, v) => a + v, 0);
        for (let a = 0; a < allowed.length; a++) {
          const weight = exps[a] / total;
          for (let d = 0; d < hd; d++) attn[i * hidden + head * hd + d] += weight * lane(allowed[a], 2, head, d);
        }
      }
    }
    const projected = linear(attn, n, hidden, read(`${p}.attn.proj.weight`), read(`${p}.attn.proj.bias`), hidden);
    x = x.map((v, k) => v + projected[k]);

    const y = rmsNorm(x, n, hidden, read(`${p}.norm2.weight`));
    const inter = vision.intermediateSize;
    const gate = linear(y, n, hidden, read(`${p}.mlp.gate_proj.weight`), read(`${p}.mlp.gate_proj.bias`), inter);
    const up = linear(y, n, hidden, read(`${p}.mlp.up_proj.weight`), read(`${p}.mlp.up_proj.bias`), inter);
    const act = gate.map((g, k) => (g / (1 + Math.exp(-g))) * up[k]);
    const down = linear(act, n, inter, read(`${p}.mlp.down_proj.weight`), read(`${p}.mlp.down_proj.bias`), hidden);
    x = x.map((v, k) => v + down[k]);
  }

  // Merger: the s*s processor rows of a merged unit are consecutive, so [n, hidden] read as [n/s^2, s^2*hidden]
  // concatenates them in processor order.
  const units = n / (s * s);
  const mergedWidth = hidden * s * s;
  const normed = rmsNorm(x, n, hidden, read('visual.merger.ln_q.weight'));
  const fc1 = linear(normed, units, mergedWidth, read('visual.merger.mlp.0.weight'), read('visual.merger.mlp.0.bias'), mergedWidth);
  const gelu = fc1.map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
  return linear(gelu, units, mergedWidth, read('visual.merger.mlp.2.weight'), read('visual.merger.mlp.2.bias'), vision.outHiddenSize);
}

/** x [rows, inWidth] times W^T with W [outWidth, inWidth]. */
function matmulT(x: Float64Array, rows: number, inWidth: number, weight: Float64Array, outWidth: number): Float64Array {
  const out = new Float64Array(rows * outWidth);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outWidth; o++) {
      let acc = 0;
      for (let k = 0; k < inWidth; k++) acc += x[r * inWidth + k] * weight[o * inWidth + k];
      out[r * outWidth + o] = acc;
    }
  }
  return out;
}

function linear(x: Float64Array, rows: number, inWidth: number, weight: Float64Array, bias: Float64Array, outWidth: number): Float64Array {
  const out = matmulT(x, rows, inWidth, weight, outWidth);
  for (let r = 0; r < rows; r++) for (let o = 0; o < outWidth; o++) out[r * outWidth + o] += bias[o];
  return out;
}

function rmsNorm(x: Float64Array, rows: number, width: number, weight: Float64Array, eps = 1e-6): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let sumSquares = 0;
    for (let k = 0; k < width; k++) sumSquares += x[r * width + k] ** 2;
    const scale = 1 / Math.sqrt(sumSquares / width + eps);
    for (let k = 0; k < width; k++) out[r * width + k] = weight[k] * x[r * width + k] * scale;
  }
  return out;
}

/**
 * erf in float64: Maclaurin series for |x| < 2.5 (terms stay below ~1e3, so ~1e-13 absolute accuracy), the
 * continued fraction of erfc beyond.
 */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let term = x;
    let sum = x;
    for (let k = 1; k < 80; k++) {
      term *= (-x * x) / k;
      sum += term / (2 * k + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(a) = exp(-a^2)/sqrt(pi) / (a + (1/2)/(a + 1/(a + (3/2)/(a + ...)))), evaluated from the tail.
  let fraction = ax;
  for (let k = 120; k >= 1; k--) fraction = ax + k / 2 / fraction;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / fraction;
  return Math.sign(x) * (1 - erfc);
}
