/**
 * The benchmark's full-recompute baseline (scripts/bench/recompute.ts) computes what it claims: every call
 * with logits runs the whole sequence (prompt, the rows written so far, mask rows for the rest) with full
 * attention and no cache — checked against the float64 reference on a tiny model — and calls without logits
 * cost no forward.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, expect, it } from 'vitest';
import { buildDecoderGraph } from '../src/convert/decoder-graph.js';
import { OrtBlockDecoder } from '../src/runtime/decoder-session.js';
import { RecomputeDecoder } from '../scripts/bench/recompute.js';
import { prng, randomWeights, tinyConfig } from './helpers/random-weights.js';
import { referenceSequenceLogits } from './reference/text-decoder.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-recompute-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

it('runs prompt + every answer row with full attention at each call that wants logits', async () => {
  const config = tinyConfig({ text: { tieWordEmbeddings: false } });
  const weights = randomWeights(config, 5);
  const modelPath = path.join(dir, 'decoder.onnx');
  buildDecoderGraph(weights, config, { modelPath, dtype: 'fp32' });
  const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1 });
  const H = config.text.hiddenSize;
  const rand = prng(3);
  const rows = (n: number) => Float32Array.from({ length: n * H }, () => rand() - 0.5);
  const maskRow = rows(1);
  const prompt = rows(16);
  const total = 16 + 24; // 16 prompt rows, 3 blocks of 8 answer rows
  const decoder = new RecomputeDecoder(new OrtBlockDecoder(session, config.text), H, total, maskRow);

  // The prefill (no logits) only fixes rows.
  await decoder.forward({ embeds: prompt, count: 16, start: 0, blockSize: 8, logitRows: [], commit: true });
  expect(decoder.forwardMs.length).toBe(0);
  expect(decoder.cacheLength).toBe(0);

  const expected = (written: Float32Array, logitRows: number[]) => {
    const sequence = new Float32Array(total * H);
    for (let r = 0; r < total; r++) sequence.set(maskRow, r * H);
    sequence.set(prompt, 0);
    sequence.set(written, 16 * H);
    return referenceSequenceLogits(weights, config, { embeds: sequence, attend: () => true, logitRows });
  };
  const check = (actual: Float32Array, want: Float64Array[]) => {
    const V = config.text.vocabSize;
    expect(actual.length).toBe(want.length * V);
    let maxErr = 0;
    want.forEach((row, i) => row.forEach((v, j) => (maxErr = Math.max(maxErr, Math.abs(actual[i * V + j] - v)))));
    expect(maxErr).toBeLessThan(1e-4);
  };

  // A first block's call: its 8 rows at 16, logits of two of them; the rows after it are still masks.
  const block1 = rows(8);
  check((await decoder.forward({ embeds: block1, count: 8, start: 16, blockSize: 8, logitRows: [1, 5], commit: false })).logits, expected(block1, [17, 21]));

  // A fused call: the finished block again plus the next block's rows; logits of the new block only.
  const block2 = rows(8);
  const fused = new Float32Array(16 * H);
  fused.set(block1, 0);
  fused.set(block2, 8 * H);
  const both = await decoder.forward({ embeds: fused, count: 16, start: 16, blockSize: 8, logitRows: [8, 15], commit: true, commitRows: 8 });
  check(both.logits, expected(fused, [24, 31]));
  expect(decoder.forwardMs.length).toBe(2);
  await session.release();
});
