/** The vision tower on onnxruntime: preprocessed patches in, image embeddings (raster order) out. */
import type { VisionConfig } from './types.js';
import type { PreprocessedImage } from './preprocess.js';
import { type PlainTensor, visionFeeds } from './vision-layout.js';
import { type Ort, ort } from '../../runtime/onnxruntime.js';

/** A host tensor as an onnxruntime tensor (float32 or int64 by its array type). */
export function plainToOrt(t: PlainTensor<Float32Array | BigInt64Array>): Ort.Tensor {
  return t.data instanceof BigInt64Array ? new ort.Tensor('int64', t.data, t.dims) : new ort.Tensor('float32', t.data, t.dims);
}

export class VisionEncoder {
  constructor(
    private readonly session: Ort.InferenceSession,
    private readonly vision: VisionConfig,
  ) {}

  /** Returns [tokens x outHiddenSize] embeddings, one per 2x2 merged patch, in raster order. */
  async encode(image: PreprocessedImage): Promise<{ embeds: Float32Array; tokens: number }> {
    const { feeds, reverse } = visionFeeds(image.patches, image.gridThw, this.vision);
    const ortFeeds: Record<string, Ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = plainToOrt(t);
    const out = await this.session.run(ortFeeds);
    const width = this.vision.outHiddenSize;
    const embeds = reverse(out.image_embeds.data as Float32Array, width);
    return { embeds, tokens: embeds.length / width };
  }
}
