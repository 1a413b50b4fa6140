/**
 * The SigLIP tower and the mlp2x_gelu projector of DiffusionVL-Qwen2.5 (spec diffusionvl-qwen.md §3, §4) as one
 * ONNX graph.
 *
 * Graph contract:
 *   input   pixel_values   float32 [num_crops, 3, S, S]  normalised crops ((x - 0.5) / 0.5), S = imageSize
 *   output  image_features float32 [num_crops, T, textHidden]  T = floor(S / patch)^2 tokens per crop, raster order
 * Crops are a batch: each attends only to its own tokens.
 *
 * Per crop: a patch x patch stride-patch Conv with bias (no padding, so trailing pixel rows and columns that do
 * not fill a patch are never read), flattened to [T, C] in raster order, plus position_embedding; numLayers
 * pre-norm encoder layers (LayerNorm with bias; q, k, v, out_proj with bias; softmax attention over the crop's
 * T tokens; fc1 -> GELU (tanh form for gelu_pytorch_tanh) -> fc2); no post_layernorm and no pooling head
 * (upstream returns the last remaining layer's output); then Linear -> GELU(erf) -> Linear.
 *
 * Activations run as a [num_crops * T, C] matrix through the linears and norms; only attention sees
 * [num_crops, T, C]. Weights are read one tensor at a time and written straight to the external data file.
 * The quantisation policy is every tower's (convert/recipes.ts (visionPlan)): the large
 * linears (q/k/v, out_proj, MLP, projector) in the conversion format, 8-bit MatMulNBits under int8 and int4;
 * the patch embedding, position embedding and norms always float32.
 */
import type { WeightSource } from '../../checkpoint/types.js';
import { buildGraph, GraphBuilder, float } from '../../convert/onnx/graph-builder.js';
import { WeightReader } from '../../convert/onnx/weight-reader.js';
import { type QuantSettings, type WeightFormat, linear, reshape } from '../../convert/onnx/ops.js';
import { type LinearPlan, visionPlan } from '../../convert/recipes.js';
import type { WeightDtype } from '../../convert/weight-dtype.js';
import { modelError } from '../../util/errors.js';
import { PROJECTOR_PREFIX, type SiglipVisionConfig, siglipGridSize, siglipLayerTensor, siglipTensor } from './vision-config.js';

export interface SiglipVisionGraphOptions {
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

/** Opset 23, as the Qwen2.5-VL tower: LayerNormalization (17), Gelu with approximate='tanh' (20). */
const OPSET = 23;
/** Tensors read: 3 in the embeddings, 16 per encoder layer, 4 in the projector. */
const TENSORS_PER_LAYER = 16;

export function buildSiglipVisionGraph(
  weights: WeightSource,
  vision: SiglipVisionConfig,
  textHidden: number,
  options: SiglipVisionGraphOptions,
): { modelBytes: number; dataBytes: number } {
  const headDim = vision.hiddenSize / vision.numHeads;
  if (!Number.isInteger(headDim)) {
    throw modelError(`SigLIP hidden size ${vision.hiddenSize} is not a multiple of ${vision.numHeads} heads`);
  }
  if (!Number.isInteger(vision.numLayers) || vision.numLayers < 1) throw modelError(`SigLIP tower must run at least one layer, got ${vision.numLayers}`);
  if (siglipGridSize(vision) < 1) throw modelError(`SigLIP image size ${vision.imageSize} is smaller than the patch size ${vision.patchSize}`);
  if (vision.hiddenAct !== 'gelu_pytorch_tanh' && vision.hiddenAct !== 'gelu') throw modelError(`unsupported SigLIP activation ${String(vision.hiddenAct)}`);

  const plan = options.plan ?? visionPlan(options.dtype);
  const format = options.weightFormat ?? plan.format;
  const quant = plan.quant;
  return buildGraph({ graphName: 'dvl_siglip_vision', modelPath: options.modelPath, opset: OPSET }, (g) => new SiglipTowerWriter(g, weights, vision, textHidden, format, quant, options.onProgress).write());
}

class SiglipTowerWriter {
  private readonly reader: WeightReader;
  private readonly tokens: number;

  constructor(
    private readonly g: GraphBuilder,
    weights: WeightSource,
    private readonly vision: SiglipVisionConfig,
    private readonly textHidden: number,
    private readonly format: WeightFormat,
    private readonly quant: QuantSettings,
    onProgress?: (done: number, total: number) => void,
  ) {
    this.reader = new WeightReader(weights, 3 + TENSORS_PER_LAYER * vision.numLayers + 4, onProgress);
    this.tokens = siglipGridSize(vision) ** 2;
  }

  write(): void {
    const g = this.g;
    const v = this.vision;
    const C = v.hiddenSize;
    const p = v.patchSize;
    const T = this.tokens;
    const pixels = g.input('pixel_values', 'float32', ['num_crops', 3, v.imageSize, v.imageSize]);

    // Patch embedding: Conv kernel = stride = patch, no padding -> [n, C, grid, grid]; raster order of the grid
    // is the flattening of its last two axes. Kept float32 (first in line, and small).
    const patchWeight = this.read(siglipTensor('embeddings.patch_embedding.weight'), [C, 3, p, p]);
    const patchBias = this.read(siglipTensor('embeddings.patch_embedding.bias'), [C]);
    const conv = g.op(
      'Conv',
      [pixels, g.initializer('patch_embed.weight', 'float32', [C, 3, p, p], patchWeight), g.initializer('patch_embed.bias', 'float32', [C], patchBias)],
      { kernel_shape: [p, p], strides: [p, p], pads: [0, 0, 0, 0] },
      'patch_embed',
    );
    const channelsFirst = reshape(g, conv, [0, C, T], 'patch_embed.flat');
    const tokensFirst = g.op('Transpose', [channelsFirst], { perm: [0, 2, 1] }, 'patch_embed.tokens');
    const position = this.read(siglipTensor('embeddings.position_embedding.weight'), [T, C]);
    const embedded = g.op('Add', [tokensFirst, g.initializer('position_embedding', 'float32', [T, C], position)], {}, 'embeddings');
    // [n * T, C] from here on: Gemm and MatMulNBits take 2-D activations.
    let x = reshape(g, embedded, [-1, C], 'embeddings.rows');

    let normed = this.layerNorm(x, siglipLayerTensor(0, 'layer_norm1'), 'layers.0.ln1');
    for (let i = 0; i < v.numLayers; i++) {
      const last = i === v.numLayers - 1;
      ({ x, normed } = this.layer(x, normed, i, last));
    }
    this.projector(x);
  }

  /**
   * Encoder layer i on x [n*T, C] with normed = LN1_i(x). Returns the layer's output and, unless it is the last
   * layer, LN1 of the next layer on it (the residual add and that norm in one node).
   */
  private layer(x: string, normed1: string, i: number, last: boolean): { x: string; normed: string } {
    const g = this.g;
    const v = this.vision;
    const C = v.hiddenSize;
    const name = `layers.${i}`;
    const t = (suffix: string) => siglipLayerTensor(i, suffix);

    // q, k, v as one linear of width 3C (rows of the three weights stacked): one product instead of three, and the
    // same numbers, since the quantisation blocks run along K within a row.
    const weight = new Float32Array(3 * C * C);
    const bias = new Float32Array(3 * C);
    for (const [j, part] of ['q_proj', 'k_proj', 'v_proj'].entries()) {
      weight.set(this.read(t(`self_attn.${part}.weight`), [C, C]), j * C * C);
      bias.set(this.read(t(`self_attn.${part}.bias`), [C]), j * C);
    }
    const qkv = linear(g, normed1, weight, 3 * C, C, { format: this.format, name: `${name}.qkv`, bias, quant: this.quant });
    const qkv3d = reshape(g, qkv, [-1, this.tokens, 3 * C], `${name}.qkv_3d`);
    const [q, k, value] = g.node('Split', [qkv3d, g.int64s(`${name}.qkv_split`, [C, C, C])], { axis: 2 }, { outputs: 3, hint: `${name}.qkv_split` });
    // [n, T, C] per input: the batch axis is the crop, so crops never attend to each other.
    const attn = g.op('MultiHeadAttention', [q, k, value], { num_heads: v.numHeads, scale: float(1 / Math.sqrt(C / v.numHeads)) }, `${name}.attn`, 'com.microsoft');
    const attended = reshape(g, attn, [-1, C], `${name}.attn_2d`);
    const projected = this.linear(attended, t('self_attn.out_proj'), C, C, `${name}.out_proj`);

    const post = this.skipLayerNorm(x, projected, t('layer_norm2'), `${name}.ln2`);
    const fc1 = this.linear(post.normed, t('mlp.fc1'), v.intermediateSize, C, `${name}.fc1`);
    const act = g.op('Gelu', [fc1], { approximate: v.hiddenAct === 'gelu' ? 'none' : 'tanh' }, `${name}.gelu`);
    const fc2 = this.linear(act, t('mlp.fc2'), C, v.intermediateSize, `${name}.fc2`);
    if (last) return { x: g.op('Add', [post.sum, fc2], {}, `${name}.residual2`), normed: '' };
    const next = this.skipLayerNorm(post.sum, fc2, siglipLayerTensor(i + 1, 'layer_norm1'), `layers.${i + 1}.ln1`);
    return { x: next.sum, normed: next.normed };
  }

  /** Linear(C -> D) + bias, GELU (erf), Linear(D -> D) + bias, per token; the output as [n, T, D]. */
  private projector(x: string): void {
    const g = this.g;
    const D = this.textHidden;
    const fc1 = this.linear(x, `${PROJECTOR_PREFIX}0`, D, this.vision.hiddenSize, 'projector.fc1');
    const act = g.op('Gelu', [fc1], { approximate: 'none' }, 'projector.gelu');
    const fc2 = this.linear(act, `${PROJECTOR_PREFIX}2`, D, D, 'projector.fc2');
    const features = reshape(g, fc2, [-1, this.tokens, D], 'projector.crops');
    g.output(features, 'image_features', 'float32', ['num_crops', this.tokens, D]);
  }

  /** LayerNorm over the last axis with the checkpoint's `<prefix>.weight` and `<prefix>.bias`, float32. */
  private layerNorm(x: string, prefix: string, name: string): string {
    const C = this.vision.hiddenSize;
    const w = this.g.initializer(`${name}.weight`, 'float32', [C], this.read(`${prefix}.weight`, [C]));
    const b = this.g.initializer(`${name}.bias`, 'float32', [C], this.read(`${prefix}.bias`, [C]));
    return this.g.op('LayerNormalization', [x, w, b], { axis: -1, epsilon: float(this.vision.layerNormEps), stash_type: 1 }, name);
  }

  /** LayerNorm(x + skip) and the sum x + skip in one node (com.microsoft SkipLayerNormalization). */
  private skipLayerNorm(x: string, skip: string, prefix: string, name: string): { normed: string; sum: string } {
    const g = this.g;
    const C = this.vision.hiddenSize;
    const w = g.initializer(`${name}.weight`, 'float32', [C], this.read(`${prefix}.weight`, [C]));
    const b = g.initializer(`${name}.bias`, 'float32', [C], this.read(`${prefix}.bias`, [C]));
    const outputs = [name, '', '', `${name}.residual`];
    const [normed, , , sum] = g.node('SkipLayerNormalization', [x, skip, w, b], { epsilon: float(this.vision.layerNormEps) }, { outputs, domain: 'com.microsoft' });
    return { normed, sum };
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
