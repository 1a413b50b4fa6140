/**
 * An independent float64 reference of the DiffusionVL-Qwen SigLIP tower + mlp2x_gelu projector (spec
 * diffusionvl-qwen.md §3, §4), written from the math with plain loops, for tests on tiny configs.
 *
 * Per crop: the patch embedding as an explicit sum over (channel, row, col) of each patch (the convolution's
 * definition, reading pixels straight from the [n, 3, S, S] input), + bias + position row; each layer
 * x += out_proj(attn(LN1(x))), x += fc2(act(fc1(LN2(x)))); no post_layernorm (unless asked, to show it matters);
 * then Linear, exact GELU, Linear. The weight names are spelled out here, not taken from src/.
 * O(T^2 * hidden) per layer per crop: tiny configs only.
 */
import type { WeightSource } from '../../src/checkpoint/types.js';
import type { SiglipVisionConfig } from '../../src/models/siglip-qwen/types.js';

/** The tower's shape, as src/ names it (the numbers only: nothing of src/'s logic is used here). */
export type ReferenceSiglipConfig = SiglipVisionConfig;

export interface ReferenceSiglipOptions {
  /** Apply post_layernorm after the last layer (what upstream does NOT do; to show that it would change things). */
  applyPostLayernorm?: boolean;
}

const TOWER = 'model.vision_tower.vision_tower.vision_model.';
const PROJECTOR = 'model.mm_projector.';

/**
 * `pixels`: [crops, 3, S, S] row-major. Returns [crops, T, textHidden] (T = floor(S/p)^2, raster order).
 * Crops are computed one after the other, independently.
 */
export function referenceSiglipTower(
  weights: WeightSource,
  vision: ReferenceSiglipConfig,
  textHidden: number,
  pixels: Float32Array,
  crops: number,
  options: ReferenceSiglipOptions = {},
): Float64Array {
  const S = vision.imageSize;
  const p = vision.patchSize;
  const C = vision.hiddenSize;
  const grid = Math.floor(S / p);
  const T = grid * grid;
  if (pixels.length !== crops * 3 * S * S) throw new Error(`reference: ${pixels.length} pixel values for ${crops} crops of ${S}x${S}`);
  const read = (name: string) => Float64Array.from(weights.readF32(name));

  const patchW = read(`${TOWER}embeddings.patch_embedding.weight`); // [C, 3, p, p]
  const patchB = read(`${TOWER}embeddings.patch_embedding.bias`);
  const posEmb = read(`${TOWER}embeddings.position_embedding.weight`); // [T, C]
  const layers = Array.from({ length: vision.numLayers }, (_, i) => {
    const l = (s: string) => read(`${TOWER}encoder.layers.${i}.${s}`);
    return {
      ln1w: l('layer_norm1.weight'), ln1b: l('layer_norm1.bias'),
      qw: l('self_attn.q_proj.weight'), qb: l('self_attn.q_proj.bias'),
      kw: l('self_attn.k_proj.weight'), kb: l('self_attn.k_proj.bias'),
      vw: l('self_attn.v_proj.weight'), vb: l('self_attn.v_proj.bias'),
      ow: l('self_attn.out_proj.weight'), ob: l('self_attn.out_proj.bias'),
      ln2w: l('layer_norm2.weight'), ln2b: l('layer_norm2.bias'),
      f1w: l('mlp.fc1.weight'), f1b: l('mlp.fc1.bias'),
      f2w: l('mlp.fc2.weight'), f2b: l('mlp.fc2.bias'),
    };
  });
  const p0w = read(`${PROJECTOR}0.weight`);
  const p0b = read(`${PROJECTOR}0.bias`);
  const p2w = read(`${PROJECTOR}2.weight`);
  const p2b = read(`${PROJECTOR}2.bias`);

  const act = vision.hiddenAct === 'gelu' ? geluErf : geluTanh;
  const out = new Float64Array(crops * T * textHidden);
  for (let crop = 0; crop < crops; crop++) {
    // Patch embedding: token t = (gy, gx) covers pixel rows gy*p .. gy*p+p-1 and columns gx*p .. gx*p+p-1.
    let x: Float64Array = new Float64Array(T * C);
    const base = crop * 3 * S * S;
    for (let gy = 0; gy < grid; gy++) {
      for (let gx = 0; gx < grid; gx++) {
        const t = gy * grid + gx;
        for (let o = 0; o < C; o++) {
          let acc = patchB[o];
          for (let c = 0; c < 3; c++) {
            for (let dy = 0; dy < p; dy++) {
              for (let dx = 0; dx < p; dx++) {
                acc += patchW[((o * 3 + c) * p + dy) * p + dx] * pixels[base + (c * S + gy * p + dy) * S + gx * p + dx];
              }
            }
          }
          x[t * C + o] = acc + posEmb[t * C + o];
        }
      }
    }

    for (const L of layers) {
      const y = layerNorm(x, T, C, L.ln1w, L.ln1b, vision.layerNormEps);
      const q = affine(y, T, C, L.qw, L.qb, C);
      const k = affine(y, T, C, L.kw, L.kb, C);
      const v = affine(y, T, C, L.vw, L.vb, C);
      const attn = attention(q, k, v, T, C, vision.numHeads);
      const o = affine(attn, T, C, L.ow, L.ob, C);
      for (let i = 0; i < x.length; i++) x[i] += o[i];
      const y2 = layerNorm(x, T, C, L.ln2w, L.ln2b, vision.layerNormEps);
      const h = affine(y2, T, C, L.f1w, L.f1b, vision.intermediateSize);
      for (let i = 0; i < h.length; i++) h[i] = act(h[i]);
      const m = affine(h, T, vision.intermediateSize, L.f2w, L.f2b, C);
      for (let i = 0; i < x.length; i++) x[i] += m[i];
    }
    if (options.applyPostLayernorm) {
      x = layerNorm(x, T, C, read(`${TOWER}post_layernorm.weight`), read(`${TOWER}post_layernorm.bias`), vision.layerNormEps);
    }

    const h = affine(x, T, C, p0w, p0b, textHidden);
    for (let i = 0; i < h.length; i++) h[i] = geluErf(h[i]);
    out.set(affine(h, T, textHidden, p2w, p2b, textHidden), crop * T * textHidden);
  }
  return out;
}

/** x [rows, inWidth] -> x W^T + b with W [outWidth, inWidth]. */
function affine(x: Float64Array, rows: number, inWidth: number, w: Float64Array, b: Float64Array, outWidth: number): Float64Array {
  const out = new Float64Array(rows * outWidth);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outWidth; o++) {
      let acc = b[o];
      for (let k = 0; k < inWidth; k++) acc += x[r * inWidth + k] * w[o * inWidth + k];
      out[r * outWidth + o] = acc;
    }
  }
  return out;
}

/** Per row: (x - mean) / sqrt(biased variance + eps) * w + b. */
function layerNorm(x: Float64Array, rows: number, width: number, w: Float64Array, b: Float64Array, eps: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let k = 0; k < width; k++) mean += x[r * width + k];
    mean /= width;
    let variance = 0;
    for (let k = 0; k < width; k++) variance += (x[r * width + k] - mean) ** 2;
    variance /= width;
    const inv = 1 / Math.sqrt(variance + eps);
    for (let k = 0; k < width; k++) out[r * width + k] = (x[r * width + k] - mean) * inv * w[k] + b[k];
  }
  return out;
}

/** Multi-head softmax attention of one crop: q, k, v [T, C] with head h in columns h*hd .. h*hd+hd-1. */
function attention(q: Float64Array, k: Float64Array, v: Float64Array, T: number, C: number, heads: number): Float64Array {
  const hd = C / heads;
  const out = new Float64Array(T * C);
  const scores = new Float64Array(T);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < T; i++) {
      let max = -Infinity;
      for (let j = 0; j < T; j++) {
        let dot = 0;
        for (let d = 0; d < hd; d++) dot += q[i * C + h * hd + d] * k[j * C + h * hd + d];
        scores[j] = dot / Math.sqrt(hd);
        max = Math.max(max, scores[j]);
      }
      let total = 0;
      for (let j = 0; j < T; j++) {
        scores[j] = Math.exp(scores[j] - max);
        total += scores[j];
      }
      for (let j = 0; j < T; j++) {
        const a = scores[j] / total;
        for (let d = 0; d < hd; d++) out[i * C + h * hd + d] += a * v[j * C + h * hd + d];
      }
    }
  }
  return out;
}

/** transformers' gelu_pytorch_tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}

/** nn.GELU(): x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), with Phi(x) = erfc(-x/sqrt2)/2 for negative x. */
export function geluErf(x: number): number {
  return 0.5 * x * (1 + erf64(x / Math.SQRT2));
}

/**
 * erf in float64. |z| <= 3: the series erf z = 2/sqrt(pi) exp(-z^2) sum_n 2^n z^(2n+1) / (1*3*...*(2n+1)) (all terms
 * positive, so no cancellation; ~1e-16 relative). |z| > 3: 1 - erfc by the continued fraction
 * erfc z = exp(-z^2)/sqrt(pi) * 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + ...)))).
 */
export function erf64(z: number): number {
  const a = Math.abs(z);
  let result: number;
  if (a <= 3) {
    let term = a;
    let sum = a;
    for (let n = 1; n < 200 && term > 1e-17 * sum; n++) {
      term *= (2 * a * a) / (2 * n + 1);
      sum += term;
    }
    result = (2 / Math.sqrt(Math.PI)) * Math.exp(-a * a) * sum;
  } else {
    let f = a;
    for (let n = 60; n >= 1; n--) f = a + n / 2 / f;
    result = 1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  }
  return z < 0 ? -result : result;
}
