/**
 * The Qwen2.5-VL vision tower and the DiffusionVL projector (spec §3) as one ONNX graph.
 *
 * Graph contract (models/qwen25vl/vision-layout.ts prepares the inputs and undoes the window order):
 *   inputs   pixel_patches [N, 1176]  patch rows already in window order (N symbolic)
 *            rotary_cos    [N, headDim], rotary_sin [N, headDim]  (rows in window order; the two halves of a
 *                                        row are equal, as in the reference's cat((freqs, freqs)))
 *            window_rows   int64 [W, R]   the sequence row in each slot of W windows of R rows (padding: 0)
 *            window_slots  int64 [N]      the slot (w * R + i) of each sequence row
 *            window_bias   [W, 1, R, R]   0 for a window's real keys, -Infinity for its padding keys
 *                          The windowed blocks gather q/k/v into the [W, R] batch, attend per window and
 *                          scatter back (see models/qwen25vl/vision-layout.ts WindowBatch); the blocks in
 *                          fullatt_block_indexes attend to every row.
 *   output   image_embeds  [N/4, out_hidden]  one row per merged unit, still in window order
 *
 * Weights are read one tensor at a time from the WeightSource and written straight to the external data file.
 * See convert/recipes.ts (visionPlan) for how the conversion dtype maps to the tower's weights.
 */
import type { WeightSource } from '../../checkpoint/types.js';
import type { ModelConfig, VisionConfig } from './types.js';
import { modelError } from '../../util/errors.js';
import { buildGraph, GraphBuilder, float } from '../../convert/onnx/graph-builder.js';
import { WeightReader } from '../../convert/onnx/weight-reader.js';
import { type QuantSettings, type WeightFormat, linear, reshape, rmsNorm, rotary, siluGate, skipRmsNorm } from '../../convert/onnx/ops.js';
import { type LinearPlan, visionPlan } from '../../convert/recipes.js';
import type { WeightDtype } from '../../convert/weight-dtype.js';

export interface VisionGraphOptions {
  /** Absolute path of the .onnx file; weights go to `<modelPath>.data`. */
  modelPath: string;
  dtype: WeightDtype;
  /** Overrides the format of visionPlan(dtype) for the large linears. */
  weightFormat?: WeightFormat;
  /** Overrides visionPlan(dtype) (measurements). */
  plan?: LinearPlan;
  /** Called after each checkpoint tensor is read (done, total). */
  onProgress?: (done: number, total: number) => void;
}

/** RMSNorm epsilon of the vision blocks and the merger's ln_q (hard-coded in the reference modules). */
const VISION_RMS_EPS = 1e-6;
/** Opset 23: RMSNormalization and RotaryEmbedding (ops.ts), Gelu. */
const OPSET = 23;

export function buildVisionGraph(
  weights: WeightSource,
  config: ModelConfig,
  options: VisionGraphOptions,
): { modelBytes: number; dataBytes: number } {
  const vision = config.vision;
  const headDim = vision.hiddenSize / vision.numHeads;
  if (!Number.isInteger(headDim) || headDim % 4 !== 0) {
    throw modelError(`vision hidden_size ${vision.hiddenSize} / num_heads ${vision.numHeads} is not a multiple of 4`);
  }
  for (const index of vision.fullattBlockIndexes) {
    if (!Number.isInteger(index) || index < 0 || index >= vision.depth) {
      throw modelError(`vision fullatt_block_indexes entry ${index} is outside 0..${vision.depth - 1}`);
    }
  }

  const plan = options.plan ?? visionPlan(options.dtype);
  const format = options.weightFormat ?? plan.format;
  const quant = plan.quant;
  return buildGraph({ graphName: 'dvl_vision', modelPath: options.modelPath, opset: OPSET }, (g) => new VisionTowerWriter(g, weights, vision, headDim, format, quant, options.onProgress).write());
}

/** Inputs shared by every block. */
interface BlockContext {
  /** [1, N, hd/2] each: the rotary angles' cos and sin for RotaryEmbedding. */
  cos: string;
  sin: string;
  /** The window batch inputs for windowed blocks, undefined for full-attention blocks. */
  windows: { rows: string; slots: string; bias: string } | undefined;
}

class VisionTowerWriter {
  private readonly reader: WeightReader;

  constructor(
    private readonly g: GraphBuilder,
    weights: WeightSource,
    private readonly vision: VisionConfig,
    private readonly headDim: number,
    private readonly format: WeightFormat,
    private readonly quant: QuantSettings,
    onProgress?: (done: number, total: number) => void,
  ) {
    // patch embedding + 12 per block + 5 in the merger
    this.reader = new WeightReader(weights, 1 + 12 * vision.depth + 5, onProgress);
  }

  write(): void {
    const v = this.vision;
    const g = this.g;
    const hd = this.headDim;
    const patchWidth = v.inChannels * v.temporalPatchSize * v.patchSize * v.patchSize;
    const patches = g.input('pixel_patches', 'float32', ['num_patches', patchWidth]);
    const cosIn = g.input('rotary_cos', 'float32', ['num_patches', hd]);
    const sinIn = g.input('rotary_sin', 'float32', ['num_patches', hd]);
    const windows = {
      rows: g.input('window_rows', 'int64', ['windows', 'window_rows']),
      slots: g.input('window_slots', 'int64', ['num_patches']),
      bias: g.input('window_bias', 'float32', ['windows', 1, 'window_rows', 'window_rows']),
    };

    // RotaryEmbedding takes one angle per pair (j, j + hd/2): the first half of each table row, as [1, N, hd/2].
    const firstHalf = (table: string, hint: string) => {
      const sliced = g.op('Slice', [table, g.int64s(`${hint}_start`, [0]), g.int64s(`${hint}_end`, [hd / 2]), g.int64s(`${hint}_axes`, [1])], {}, hint);
      return g.op('Unsqueeze', [sliced, g.int64s(`${hint}_axis`, [0])], {}, `${hint}_3d`);
    };
    const ctx = { cos: firstHalf(cosIn, 'rotary_cos_half'), sin: firstHalf(sinIn, 'rotary_sin_half') };

    // Patch embedding: the Conv3d has kernel = stride = patch, so it is a linear map of each flattened patch
    // (channel, time, row, col order, the same as the processor's patch vector). No bias.
    const patchWeight = this.read('visual.patch_embed.proj.weight', [v.hiddenSize, v.inChannels, v.temporalPatchSize, v.patchSize, v.patchSize]);
    let x = linear(g, patches, patchWeight, v.hiddenSize, patchWidth, { format: 'fp32', name: 'patch_embed', quant: this.quant });

    const fullAttention = new Set(v.fullattBlockIndexes);
    for (let i = 0; i < v.depth; i++) x = this.block(x, i, { ...ctx, windows: fullAttention.has(i) ? undefined : windows });
    this.merger(x);
  }

  /** One pre-norm transformer block on x [N, hidden]. */
  private block(x: string, i: number, ctx: BlockContext): string {
    const g = this.g;
    const v = this.vision;
    const hidden = v.hiddenSize;
    const p = `visual.blocks.${i}`;
    const name = `blocks.${i}`;

    const normed1 = rmsNorm(g, x, this.read(`${p}.norm1.weight`, [hidden]), VISION_RMS_EPS, `${name}.norm1`);
    const qkv = this.linear(normed1, `${p}.attn.qkv`, 3 * hidden, hidden, `${name}.qkv`);
    // The qkv output is [q | k | v] along the columns, each head-major: the reference reshapes it to
    // [N, 3, heads, hd].
    const qkv3d = reshape(g, qkv, [1, -1, 3 * hidden], `${name}.qkv_3d`);
    const [q, k, value] = g.node('Split', [qkv3d, g.int64s(`${name}.qkv_split`, [hidden, hidden, hidden])], { axis: 2 }, { outputs: 3, hint: `${name}.qkv_split` });
    const qRot = rotary(g, q, ctx.cos, ctx.sin, v.numHeads, `${name}.q_rot`);
    const kRot = rotary(g, k, ctx.cos, ctx.sin, v.numHeads, `${name}.k_rot`);
    const heads = { num_heads: v.numHeads, scale: float(1 / Math.sqrt(this.headDim)) };
    let attended: string;
    if (ctx.windows) {
      // [1, N, hidden] -> [W, R, hidden] by the window batch, attention within each window, and back to [N, hidden].
      const w = ctx.windows;
      const batch = (t: string, hint: string) => g.op('Gather', [reshape(g, t, [-1, hidden], `${name}.${hint}_rows`), w.rows], { axis: 0 }, `${name}.${hint}_windows`);
      const perWindow = g.op('MultiHeadAttention', [batch(qRot, 'q'), batch(kRot, 'k'), batch(value, 'v'), '', '', w.bias], heads, `${name}.attn`, 'com.microsoft');
      attended = g.op('Gather', [reshape(g, perWindow, [-1, hidden], `${name}.attn_slots`), w.slots], { axis: 0 }, `${name}.attn_2d`);
    } else {
      const attn = g.op('MultiHeadAttention', [qRot, kRot, value], heads, `${name}.attn`, 'com.microsoft');
      attended = reshape(g, attn, [-1, hidden], `${name}.attn_2d`);
    }
    const projected = this.linear(attended, `${p}.attn.proj`, hidden, hidden, `${name}.proj`);
    // The residual add and norm2 in one node.
    const post = skipRmsNorm(g, x, projected, this.read(`${p}.norm2.weight`, [hidden]), VISION_RMS_EPS, `${name}.norm2`);
    const afterAttn = post.sum;
    const normed2 = post.normed;
    const gate = this.linear(normed2, `${p}.mlp.gate_proj`, v.intermediateSize, hidden, `${name}.gate`);
    const up = this.linear(normed2, `${p}.mlp.up_proj`, v.intermediateSize, hidden, `${name}.up`);
    const down = this.linear(siluGate(g, gate, up, `${name}.gated`), `${p}.mlp.down_proj`, hidden, v.intermediateSize, `${name}.down`);
    return g.op('Add', [afterAttn, down], {}, `${name}.residual2`);
  }

  /** ln_q per patch, each merged unit's consecutive rows into one vector, Linear -> GELU(erf) -> Linear. */
  private merger(x: string): void {
    const g = this.g;
    const v = this.vision;
    const merged = v.hiddenSize * v.spatialMergeSize * v.spatialMergeSize;
    const normed = rmsNorm(g, x, this.read('visual.merger.ln_q.weight', [v.hiddenSize]), VISION_RMS_EPS, 'merger.ln_q');
    const grouped = reshape(g, normed, [-1, merged], 'merger.group');
    const fc1 = this.linear(grouped, 'visual.merger.mlp.0', merged, merged, 'merger.fc1');
    const act = g.op('Gelu', [fc1], { approximate: 'none' }, 'merger.gelu');
    const fc2 = this.linear(act, 'visual.merger.mlp.2', v.outHiddenSize, merged, 'merger.fc2');
    g.output(fc2, 'image_embeds', 'float32', ['num_units', v.outHiddenSize]);
  }

  /** y = x W^T + b for the checkpoint's `<prefix>.weight` [N, K] and `<prefix>.bias` [N], in the tower's format. */
  private linear(x: string, prefix: string, N: number, K: number, name: string): string {
    const weight = this.read(`${prefix}.weight`, [N, K]);
    const bias = this.read(`${prefix}.bias`, [N]);
    return linear(this.g, x, weight, N, K, { format: this.format, name, bias, quant: this.quant });
  }

  private read(name: string, shape: number[]): Float32Array {
    return this.reader.read(name, shape);
  }
}
