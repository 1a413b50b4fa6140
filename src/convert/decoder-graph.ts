/**
 * The text decoder as one ONNX graph (spec §5): a call runs S new rows against P cached rows and returns
 * logits for selected rows plus the new rows' K/V, which the runtime appends to its own cache.
 *
 * Contract with the runtime (names and shapes are fixed; B = 1, S = 'seq', P = 'past', M = 'logit_rows'):
 *   inputs   inputs_embeds  float32 [1, S, H]
 *            position_ids   int64   [1, S]              absolute positions (plain 1-D RoPE)
 *            attention_bias float32 [1, 1, S, P+S]      additive: 0 = attend, -Infinity = masked; every row
 *                                                       must attend to at least one column
 *            logits_index   int64   [M]                 rows of S that get logits (M = 0 works)
 *            past_key.{i}, past_value.{i}  float32 [1, P, kvH, D]  (BSNH; P = 0 works)
 *   outputs  logits         float32 [1, M, V]
 *            new_key.{i}, new_value.{i}    float32 [1, S, kvH, D]  (K after rotary)
 *
 * Weights are read one tensor at a time from the WeightSource and written to `<modelPath>.data` at once,
 * so converting a 16 GB checkpoint holds one float32 tensor (plus its encoded copy) in memory; the largest is
 * the embedding matrix when it doubles as the (tied) lm_head.
 *
 * Choices (measured on the tiny test model, see test/decoder-graph.test.ts and the report):
 * - Attention: ONNX Attention (opset 23) with 3-D BSNH inputs, q_num_heads/kv_num_heads for GQA and the
 *   float bias as attn_mask. It matched a float64 reference (~1e-7) for P = 0 and P > 0 and needs no
 *   transposes of the BSNH cache. com.microsoft GroupQueryAttention (causal=0, attention_bias; wants a BNSH
 *   past) and MultiHeadAttention (no GQA: K/V heads must be repeated) matched too; timings of the three
 *   and of a plain MatMul/Softmax version were within 2x of each other (16 heads / 2 kv heads, D 128,
 *   S 8, P 256..4096: 0.4..3.7 ms per layer), small next to the weight matmuls.
 * - RMSNorm: ONNX RMSNormalization, rotary: ONNX RotaryEmbedding with per-row cos/sin (no position table,
 *   so no maximum position), both opset 23.
 * - Fewer, larger nodes (the weight matmuls are ~90% of a forward): q/k/v as one packed matmul, biases inside
 *   MatMulNBits, each residual add fused with the following norm (SkipSimplifiedLayerNormalization). On the
 *   3B shapes at int4 this made a 1-row forward ~4% and an 8-row forward ~1-7% faster (interleaved A/B).
 */
import { textTensors } from '../checkpoint/expected-tensors.js';
import type { WeightSource } from '../checkpoint/types.js';
import type { AnyModelConfig } from '../models/index.js';
import { modelError, usageError } from '../util/errors.js';
import { buildGraph, GraphBuilder, float } from './onnx/graph-builder.js';
import { type DecoderPlan, linearPlan } from './recipes.js';
import { FLOAT32, type QuantSettings, type WeightFormat, linear, reshape, rmsNorm, rotary, siluGate, skipRmsNorm } from './onnx/ops.js';

export type DecoderDtype = WeightFormat;
const DTYPES: readonly DecoderDtype[] = ['fp32', 'fp16', 'int8', 'int4'];

export interface DecoderGraphOptions {
  /** Absolute path of the .onnx file; the weights go to `<modelPath>.data`. */
  modelPath: string;
  dtype: DecoderDtype;
  /** Called after each checkpoint tensor is written: `done` of `total` tensors. */
  onProgress?: (done: number, total: number) => void;
  /** Overrides of DECODER_QUANT for int8/int4 (measurements and tests; the defaults are the measured choice). */
  quant?: Partial<QuantSettings>;
  /** Each linear's storage (recipes.ts); replaces `dtype` and `quant` when given. */
  plan?: DecoderPlan;
}

/** Default-domain opset: Attention, RMSNormalization and RotaryEmbedding need 23. */
export const DECODER_OPSET = 23;

/** Graph input/output names of the decoder contract. */
export const DECODER_IO = {
  inputsEmbeds: 'inputs_embeds',
  positionIds: 'position_ids',
  attentionBias: 'attention_bias',
  logitsIndex: 'logits_index',
  logits: 'logits',
  pastKey: (layer: number) => `past_key.${layer}`,
  pastValue: (layer: number) => `past_value.${layer}`,
  newKey: (layer: number) => `new_key.${layer}`,
  newValue: (layer: number) => `new_value.${layer}`,
} as const;

/**
 * Quantisation settings for int8/int4 (MatMulNBits), measured with onnxruntime 1.30 on the CPU EP:
 * - Asymmetric (block min/max with a zero point): relative RMS weight error 4.8e-3 (int8) / 8.1e-2 (int4)
 *   on Gaussian weights vs 5.4e-3 / 9.7e-2 symmetric; lower for uniform and heavy-tailed weights too.
 * - accuracy_level 4 (activations quantised to int8 per block): at accuracy_level 0 the 8-bit kernel is a
 *   slow path (a 11008x2048 matrix times 8 rows: 281 ms vs 1.25 ms at level 4; 4-bit: 3.1 vs 0.9 ms).
 *   The cost is extra error: on the tiny test model the int8 logit RMS error vs float64 went from
 *   3.5e-2 to 6.4e-2 (logits spread ~5); for int4 the weight error dominates (6.0e-1 either way).
 */
export const DECODER_QUANT: Readonly<QuantSettings> = Object.freeze({ blockSize: 32, symmetric: false, accuracyLevel: 4 });

/** Writes the decoder graph for `config` with weights from `weights`. */
export function buildDecoderGraph(
  weights: WeightSource,
  config: AnyModelConfig,
  options: DecoderGraphOptions,
): { modelBytes: number; dataBytes: number } {
  if (!options.plan && !DTYPES.includes(options.dtype)) throw usageError(`unknown decoder dtype '${options.dtype}' (expected ${DTYPES.join(', ')})`);
  checkConfig(config);
  checkTensors(weights, config);
  return buildGraph({ graphName: 'dvl_text_decoder', modelPath: options.modelPath, opset: DECODER_OPSET }, (g) => writeGraph(g, weights, config, options));
}

function writeGraph(g: GraphBuilder, weights: WeightSource, config: AnyModelConfig, options: DecoderGraphOptions): void {
  const t = config.text;
  const quant: QuantSettings = { ...DECODER_QUANT, ...options.quant };
  // int8: per-channel int8 weights through DynamicQuantizeMatMul with outlier channels split off (ops.ts); at
  // 8, 16 and prefill-sized row counts it beat MatMulNBits int8 and int4 (README, Which --dtype).
  const plan: DecoderPlan = options.plan ?? { body: { format: options.dtype === 'int8' ? 'int8-dq' : options.dtype, quant } };
  let layerPlan = linearPlan(plan, { layer: 0, layers: t.numLayers });
  const H = t.hiddenSize;
  const D = t.headDim;
  const qWidth = t.numHeads * D;
  const kvWidth = t.numKvHeads * D;
  const total = t.numLayers * 12 + 2;
  let done = 0;
  const read = (name: string): Float32Array => {
    const data = weights.readF32(name);
    options.onProgress?.(++done, total);
    return data;
  };
  const lin = (x: string, name: string, N: number, K: number) => linear(g, x, read(`${name}.weight`), N, K, { ...layerPlan, name });
  const normWeight = (name: string) => read(`${name}.weight`);
  /**
   * q, k and v as one linear (rows of the three weights stacked, biases concatenated) and a Split: one
   * matmul streams the layer's attention inputs once, and the small k/v products stop paying a node each.
   * Quantisation is per output row, so stacking does not change any weight's quantised value.
   */
  const packedQkv = (x: string, p: string, split: string): string[] => {
    const parts = ['q_proj', 'k_proj', 'v_proj'].map((n) => `${p}.self_attn.${n}`);
    const weight = new Float32Array((qWidth + 2 * kvWidth) * H);
    const biasValues = new Float32Array(qWidth + 2 * kvWidth);
    let row = 0;
    for (const name of parts) {
      const w = read(`${name}.weight`);
      const b = read(`${name}.bias`);
      weight.set(w, row * H);
      biasValues.set(b, row);
      row += b.length;
    }
    const qkv = linear(g, x, weight, qWidth + 2 * kvWidth, H, { ...layerPlan, name: `${p}.self_attn.qkv_proj`, bias: biasValues });
    return g.node('Split', [qkv, split], { axis: 1 }, { outputs: [`${p}.q`, `${p}.k`, `${p}.v`] });
  };

  // ---- inputs
  const embeds = g.input(DECODER_IO.inputsEmbeds, 'float32', [1, 'seq', H]);
  const positions = g.input(DECODER_IO.positionIds, 'int64', [1, 'seq']);
  const bias = g.input(DECODER_IO.attentionBias, 'float32', [1, 1, 'seq', 'total']);
  const logitsIndex = g.input(DECODER_IO.logitsIndex, 'int64', ['logit_rows']);
  const past = Array.from({ length: t.numLayers }, (_, i) => ({
    k: g.input(DECODER_IO.pastKey(i), 'float32', [1, 'past', t.numKvHeads, D]),
    v: g.input(DECODER_IO.pastValue(i), 'float32', [1, 'past', t.numKvHeads, D]),
  }));

  // ---- rotary angles, shared by all layers: angle[s, j] = position[s] * invFreq[j] in float32
  const invFreq = g.initializer('rope.inv_freq', 'float32', [D / 2], ropeInverseFrequencies(t.ropeTheta, D));
  const positionsF = g.op('Cast', [positions], { to: FLOAT32 }, 'rope.positions'); // exact below 2^24
  const angles = g.op('Mul', [g.op('Unsqueeze', [positionsF, g.int64s('rope.axis', [2])], {}, 'rope.positions3'), invFreq], {}, 'rope.angles');
  const cos = g.op('Cos', [angles], {}, 'rope.cos');
  const sin = g.op('Sin', [angles], {}, 'rope.sin');

  // Rows as a 2-D [S, H] matrix (B = 1): the linears are plain Gemm/MatMulNBits over rows.
  // The residual stream `x` and the normed rows of the next sublayer come out of one node per residual add
  // (skipRmsNorm); only the first layer's input norm has no add in front of it.
  let x = reshape(g, embeds, [-1, H], 'hidden.in');
  let normed = rmsNorm(g, x, normWeight('model.layers.0.input_layernorm'), t.rmsNormEps, 'model.layers.0.input_layernorm');
  const qkvSplit = g.int64s('qkv.split', [qWidth, kvWidth, kvWidth]);
  for (let i = 0; i < t.numLayers; i++) {
    const p = `model.layers.${i}`;
    layerPlan = linearPlan(plan, { layer: i, layers: t.numLayers });
    const [q, k, v] = packedQkv(normed, p, qkvSplit);
    const qRot = rotary(g, reshape(g, q, [1, -1, qWidth], `${p}.q3`), cos, sin, t.numHeads, `${p}.q_rot`);
    const kRot = rotary(g, reshape(g, k, [1, -1, kvWidth], `${p}.k3`), cos, sin, t.numKvHeads, `${p}.k_rot`);
    const newK = reshape(g, kRot, [1, -1, t.numKvHeads, D], `${p}.new_key`);
    const newV = reshape(g, v, [1, -1, t.numKvHeads, D], `${p}.new_value`);
    g.output(newK, DECODER_IO.newKey(i), 'float32', [1, 'seq', t.numKvHeads, D]);
    g.output(newV, DECODER_IO.newValue(i), 'float32', [1, 'seq', t.numKvHeads, D]);

    // Keys/values over [past ; new] as [1, P+S, kvH*D] (BSNH flattened); Attention reads GQA from the
    // head counts: query head h uses kv head floor(h / (numHeads / numKvHeads)).
    const allK = reshape(g, g.op('Concat', [past[i].k, newK], { axis: 1 }, `${p}.all_k4`), [0, 0, -1], `${p}.all_k`);
    const allV = reshape(g, g.op('Concat', [past[i].v, newV], { axis: 1 }, `${p}.all_v4`), [0, 0, -1], `${p}.all_v`);
    const attended = g.op(
      'Attention',
      [qRot, allK, allV, bias],
      { q_num_heads: t.numHeads, kv_num_heads: t.numKvHeads, scale: float(1 / Math.sqrt(D)) },
      `${p}.attention`,
    );
    const o = lin(reshape(g, attended, [-1, qWidth], `${p}.attention2`), `${p}.self_attn.o_proj`, H, qWidth);
    const post = skipRmsNorm(g, x, o, normWeight(`${p}.post_attention_layernorm`), t.rmsNormEps, `${p}.post_attention_layernorm`);
    x = post.sum;

    const gate = lin(post.normed, `${p}.mlp.gate_proj`, t.intermediateSize, H);
    const up = lin(post.normed, `${p}.mlp.up_proj`, t.intermediateSize, H);
    const down = lin(siluGate(g, gate, up, `${p}.mlp.act`), `${p}.mlp.down_proj`, H, t.intermediateSize);
    if (i + 1 < t.numLayers) {
      const next = `model.layers.${i + 1}.input_layernorm`;
      const pre = skipRmsNorm(g, x, down, normWeight(next), t.rmsNormEps, next);
      x = pre.sum;
      normed = pre.normed;
    } else {
      x = g.op('Add', [x, down], {}, `${p}.residual_mlp`);
    }
  }

  // Only the requested rows go through the final norm and the (large) lm_head.
  const selected = g.op('Gather', [x, logitsIndex], { axis: 0 }, 'selected_rows');
  const finalNormed = rmsNorm(g, selected, normWeight('model.norm'), t.rmsNormEps, 'model.norm');
  const headName = t.tieWordEmbeddings ? 'model.embed_tokens' : 'lm_head';
  const head = linear(g, finalNormed, read(`${headName}.weight`), t.vocabSize, H, { ...linearPlan(plan, 'head'), name: 'lm_head' });
  g.output(reshape(g, head, [1, -1, t.vocabSize], 'logits3'), DECODER_IO.logits, 'float32', [1, 'logit_rows', t.vocabSize]);
}

/**
 * Inverse rotary frequencies as transformers computes them in float32:
 * 1 / (theta ^ (arange(0, D, 2) / D)), every step rounded to float32.
 */
export function ropeInverseFrequencies(theta: number, headDim: number): Float32Array {
  const out = new Float32Array(headDim / 2);
  for (let j = 0; j < out.length; j++) {
    const exponent = Math.fround((2 * j) / headDim);
    out[j] = Math.fround(1 / Math.fround(theta ** exponent));
  }
  return out;
}

function checkConfig(config: AnyModelConfig): void {
  const t = config.text;
  const positive = ['hiddenSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'intermediateSize', 'vocabSize'] as const;
  for (const key of positive) {
    if (!Number.isInteger(t[key]) || t[key] <= 0) throw modelError(`text config ${key} = ${t[key]} is not a positive integer`);
  }
  if (t.numHeads % t.numKvHeads !== 0) throw modelError(`text config: ${t.numHeads} attention heads are not a multiple of ${t.numKvHeads} kv heads`);
  if (t.headDim % 2 !== 0) throw modelError(`text config: head dim ${t.headDim} is odd (rotary needs pairs)`);
  if (!(t.rmsNormEps > 0)) throw modelError(`text config: rms_norm_eps ${t.rmsNormEps} is not positive`);
  if (!(t.ropeTheta > 0)) throw modelError(`text config: rope_theta ${t.ropeTheta} is not positive`);
}

/** Every decoder tensor present with its expected shape, before anything is written. */
function checkTensors(weights: WeightSource, config: AnyModelConfig): void {
  for (const { name, shape } of textTensors(config.text)) {
    if (name.startsWith('visual.')) continue;
    if (!weights.has(name)) throw modelError(`checkpoint has no tensor ${name}`);
    const actual = weights.info(name).shape;
    if (actual.length !== shape.length || actual.some((d, i) => d !== shape[i])) {
      throw modelError(`tensor ${name} has shape [${actual.join(', ')}], expected [${shape.join(', ')}]`);
    }
  }
}
