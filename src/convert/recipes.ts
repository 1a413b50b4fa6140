/**
 * How a conversion stores each weight matrix: a recipe per `--dtype` (and any other for measurements): the
 * decoder's linears (the body, optionally other settings for the output head and the first and last layers, the
 * tensors a quantised answer is most sensitive to) and the vision tower's large linears.
 */
import type { QuantSettings, WeightFormat } from './onnx/ops.js';
import type { WeightDtype } from './weight-dtype.js';

/** How one linear's weight is stored and multiplied. */
export interface LinearPlan {
  format: WeightFormat;
  /** Block quantisation settings (MatMulNBits formats; the others ignore them). */
  quant: QuantSettings;
}

export interface DecoderPlan {
  /** Every linear of every layer, unless an override below says otherwise. */
  body: LinearPlan;
  /** The output head (lm_head, or the tied embedding matrix). */
  head?: LinearPlan;
  /** The first and the last `count` layers' linears. */
  edgeLayers?: { count: number; plan: LinearPlan };
}

export interface ConversionRecipe {
  decoder: DecoderPlan;
  /** The vision tower's large linears (attention, MLP, projector); patch embedding and norms stay float32. */
  vision: LinearPlan;
}

/** MatMulNBits with int8 activations per block (accuracy_level 4), block 32, asymmetric, min/max scales. */
export const NBITS_ACT8: QuantSettings = Object.freeze({ blockSize: 32, symmetric: false, accuracyLevel: 4, rounding: 'minmax' });

const plan = (format: WeightFormat, quant: Partial<QuantSettings> = {}): LinearPlan => ({ format, quant: { ...NBITS_ACT8, ...quant } });

/**
 * The vision tower of dvl 0.x at int8/int4 (kept for `int4-all`): 8-bit MatMulNBits blocks with int8
 * activations per block. Measured at the real 3B tower shapes (random weights, 504x504 image, 2 cores): float32
 * Gemm 6.5 s; level 4 5.5-5.7 s, 2.1% relative L2 error of the output vs float32. Weights: 0.78 GB.
 */
const VISION_NBITS8 = plan('int8');

/**
 * The vision tower at int8/int4 now: int8 weights per output channel through DynamicQuantizeMatMul, without the
 * decoder's outlier split. The tower runs every patch through every layer (1296 rows for a 504x504 image), where
 * MLAS's int8 GEMM is the fastest kernel by far: on a 4-layer stack at the 3B tower widths, 1296 rows, 671 ms
 * against 1496 for 8-bit MatMulNBits, 900 with the split and 2191 for fp32 (scripts/bench/vision-kernels.ts).
 * The split buys nothing here: the tower normalises every block's input (LayerNorm/RMSNorm) and has no residual
 * channel outliers to isolate; the proxy's answers agree as often with and without it (see README, dtype table).
 */
const VISION_DQ = plan('int8-dq', { outlierChannels: 0 });

/** int8 per output channel with the call's outlier channels split off (DynamicQuantizeMatMul): `int8`'s linears. */
const INT8_DQ = plan('int8-dq');

/** The recipe of each `--dtype`. */
export const RECIPES: Readonly<Record<WeightDtype, ConversionRecipe>> = {
  fp32: { decoder: { body: plan('fp32') }, vision: plan('fp32') },
  fp16: { decoder: { body: plan('fp16') }, vision: plan('fp16') },
  int8: { decoder: { body: INT8_DQ }, vision: VISION_DQ },
  /**
   * 4-bit blocks for the body; 8 bits where a quantised answer is most sensitive: the output head (whose
   * error moves every logit) and the first and last layers. On the trained proxy this keeps 58 of 60 dev answers
   * against 45 with every linear at 4 bits (scripts/agreement.ts).
   */
  int4: { decoder: { body: plan('int4'), head: INT8_DQ, edgeLayers: { count: 1, plan: INT8_DQ } }, vision: VISION_DQ },
  'int4-all': { decoder: { body: plan('int4') }, vision: VISION_NBITS8 },
};

/** How a dtype stores a vision tower's large linears (the patch embedding and the norms stay float32). */
export const visionPlan = (dtype: WeightDtype): LinearPlan => RECIPES[dtype].vision;

/** Which plan a decoder linear gets: the head's, an edge layer's, or the body's. */
export function linearPlan(decoder: DecoderPlan, where: { layer: number; layers: number } | 'head'): LinearPlan {
  if (where === 'head') return decoder.head ?? decoder.body;
  const edge = decoder.edgeLayers;
  if (edge && (where.layer < edge.count || where.layer >= where.layers - edge.count)) return edge.plan;
  return decoder.body;
}

/** "int4 b32 act8 mse" etc.: a plan in a few words (bench tables). */
export function describePlan(p: LinearPlan): string {
  if (p.format === 'int4' || p.format === 'int8') {
    const act = p.quant.accuracyLevel === 4 ? 'act8' : 'act32';
    return `${p.format} b${p.quant.blockSize} ${act}${p.quant.symmetric ? ' sym' : ''}${p.quant.rounding === 'mse' ? ' mse' : ''}`;
  }
  return p.format === 'int8-dq' ? 'int8 per-channel (DQMM, outliers split)' : p.format;
}
