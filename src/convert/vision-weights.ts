/**
 * How a conversion dtype stores a vision tower's large linears: the policy every family's tower graph follows,
 * so that `--dtype` means the same for each model.
 */
import type { QuantSettings, WeightFormat } from './onnx/ops.js';

export type VisionDtype = 'fp32' | 'fp16' | 'int8' | 'int4';

/**
 * 8-bit block quantisation for the tower's large linears under the int8 and int4 dtypes: the tower is small
 * next to the decoder, so 4 bits would save little and cost accuracy. accuracy_level 4 quantises the
 * activations to int8 per block as well, which is what makes it fast on the CPU.
 * Measured at the real 3B tower shapes (random weights, 504x504 image, 2 cores, same process): float32 Gemm
 * 6.5 s; 8-bit with float32 activations (level 0) 7.6-8.0 s, 1.7% relative L2 error of the output vs float32;
 * level 4 5.5-5.7 s, 2.1% error. Weights: 0.78 GB instead of 2.6 GB.
 */
export const VISION_QUANT: QuantSettings = { blockSize: 32, symmetric: false, accuracyLevel: 4 };

/**
 * How the tower's large linears (attention, MLP, projector) are stored for a conversion dtype. The patch
 * embedding and the norms always stay float32 (small, and first in line).
 */
export function visionWeightFormat(dtype: VisionDtype): WeightFormat {
  return dtype === 'int4' ? 'int8' : dtype;
}
