/** The vision tower on onnxruntime: preprocessed patches in, image embeddings (raster order) out. */
import * as ort from 'onnxruntime-node';
import type { VisionConfig } from '../checkpoint/types.js';
import type { PreprocessedImage } from '../preprocess/index.js';
import { visionFeeds } from './vision-layout.js';

export class VisionEncoder {
  constructor(
    private readonly session: ort.InferenceSession,
    private readonly vision: VisionConfig,
  ) {}

  /** Returns [tokens x outHiddenSize] embeddings, one per 2x2 merged patch, in raster order. */
  async encode(image: PreprocessedImage): Promise<{ embeds: Float32Array; tokens: number }> {
    const { feeds, reverse } = visionFeeds(image.patches, image.gridThw, this.vision);
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor('float32', t.data, t.dims);
    const out = await this.session.run(ortFeeds);
    const width = this.vision.outHiddenSize;
    const embeds = reverse(out.image_embeds.data as Float32Array, width);
    return { embeds, tokens: embeds.length / width };
  }
}
