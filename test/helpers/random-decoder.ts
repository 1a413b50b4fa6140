/**
 * A deterministic random "model" for generation tests and measurements: a BlockDecoder whose logits over
 * the full 151936-row vocabulary of the 3B model are a seeded random row, rotated by a hash of the row's
 * position and of the rows of its own block in the request (what it attends to besides the cache), plus an
 * optional bias per token. A fused call (finished block + next block) gives each row the same logits as
 * separate calls would, so the fused and reference call schedules give the same tokens.
 */
import type { BlockDecoder, DecoderRequest, DecoderResult, EmbeddingTable } from '../../src/generate/types.js';
import { prng } from './random-weights.js';

export const H = 4;
/** The diffusion mask id of the DiffusionVL Qwen checkpoints. */
export const MASK = 151671;
export const MODEL_VOCAB = 151936;

function mix(h: number, x: number): number {
  h = Math.imul(h ^ x, 0x9e3779b1);
  return (h ^ (h >>> 15)) >>> 0;
}

/** Token embeddings: a hash of the id (the mask row differs from every other row). */
export const EMBEDDINGS: EmbeddingTable = {
  vocabSize: MODEL_VOCAB,
  hiddenSize: H,
  rowInto(id, out, offset) {
    for (let k = 0; k < H; k++) out[offset + k] = (mix(mix(17, id), k) / 4294967296) * 2 - 1;
  },
};

/** The random base row: uniform in [-scale, scale]. */
export function randomBaseRow(seed: number, scale = 6): Float32Array {
  const rand = prng(seed);
  return Float32Array.from({ length: MODEL_VOCAB }, () => (rand() * 2 - 1) * scale);
}

export class RandomDecoder implements BlockDecoder {
  readonly vocabSize = MODEL_VOCAB;
  cacheLength = 0;
  readonly requests: Omit<DecoderRequest, 'embeds'>[] = [];

  constructor(
    private readonly seed: number,
    private readonly base: Float32Array,
    private readonly bias: ReadonlyMap<number, number>,
  ) {}

  reset(): void {
    this.cacheLength = 0;
  }

  async forward(request: DecoderRequest): Promise<DecoderResult> {
    const { embeds, count, start, blockSize, logitRows } = request;
    this.requests.push({ count, start, blockSize, logitRows: [...logitRows], commit: request.commit, commitRows: request.commitRows });
    const bits = new Uint32Array(embeds.buffer, embeds.byteOffset, count * H);
    const V = this.vocabSize;
    const logits = new Float32Array(logitRows.length * V);
    logitRows.forEach((r, i) => {
      const block = Math.floor((start + r) / blockSize);
      let h = mix(this.seed, start + r);
      for (let j = 0; j < count; j++) {
        if (Math.floor((start + j) / blockSize) !== block) continue;
        for (let k = 0; k < H; k++) h = mix(h, bits[j * H + k]);
      }
      const o = h % V;
      logits.set(this.base.subarray(o), i * V);
      logits.set(this.base.subarray(0, o), i * V + V - o);
      for (const [id, b] of this.bias) logits[i * V + id] += b;
    });
    if (request.commit) this.cacheLength += request.commitRows ?? count;
    return { logits };
  }
}
