/**
 * The inference worker (runtime/worker*.ts) against the library run in-process on the same tiny converted
 * model: same tokens and text, progress events whose text adds up to the answer, a main thread that keeps
 * running while the worker computes, cancel and abort (model kept), model errors as DvlErrors.
 * Also measures the worker's overhead (printed; see the README's note).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ask, type AskEvent, type AskRequest } from '../src/ask.js';
import { convertCheckpoint } from '../src/convert/convert.js';
import type { Manifest } from '../src/store/manifest.js';
import { loadModel, type LoadedModel } from '../src/runtime/model.js';
import { InferenceWorker } from '../src/runtime/worker-client.js';
import { DvlError } from '../src/util/errors.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const CONFIG = tinyConfig({ text: { tieWordEmbeddings: false } });
const IMAGE = path.resolve('fixtures/images/chelsea.png');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-worker-'));
const ckpt = path.join(work, 'tiny');
const outDir = path.join(work, 'fp32');
let manifest: Manifest;
let local: LoadedModel;
let worker: InferenceWorker;

const SETTINGS = { genLength: 24, steps: 4, blockSize: CONFIG.blockSize, temperature: 0, topK: 0, topP: 1, remasking: 'low_confidence_static' as const, threshold: 0.85, seed: 1 };
const request = (extra: Partial<AskRequest> = {}) => ({ images: [] as string[], prompt: 'What is in the box?', settings: SETTINGS, minPixels: 784, maxPixels: 3136, ...extra });

beforeAll(async () => {
  writeTinyCheckpoint(ckpt, { config: CONFIG, seed: 21 });
  manifest = await convertCheckpoint({ source: { kind: 'local', id: ckpt, revision: 'local', dir: ckpt }, dtype: 'fp32', outDir });
  local = await loadModel(outDir, manifest, { threads: 1 });
  worker = await InferenceWorker.start({ dir: outDir, manifest, threads: 1 });
}, 60_000);

afterAll(async () => {
  await local?.close();
  await worker?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('inference worker', () => {
  it('gives the in-process answer (tokens, text, stats) for text and image prompts', async () => {
    for (const extra of [{}, { images: [IMAGE] }]) {
      const expected = await ask(local, request(extra));
      const got = await worker.ask(request(extra));
      expect(got.tokens).toEqual(expected.tokens);
      expect(got.rawTokens).toEqual(expected.rawTokens);
      expect(got.text).toBe(expected.text);
      expect(got.images).toEqual(expected.images);
      expect(got.stats.nfe).toBe(expected.stats.nfe);
      expect(got.stats.promptTokens).toBe(expected.stats.promptTokens);
    }
  });

  it('under a JSON Schema: the worker (constraint built there) gives the in-process answer, complete and valid', async () => {
    const schema = { type: 'object', properties: { kind: { enum: ['cat', 'box'] }, n: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['kind', 'n'], additionalProperties: false };
    for (const extra of [{ jsonSchema: schema }, { jsonSchema: 'json_object' as const, images: [IMAGE] }]) {
      const settings = { ...SETTINGS, genLength: 40 };
      const expected = await ask(local, request({ ...extra, settings }));
      const got = await worker.ask(request({ ...extra, settings }));
      expect(got.tokens).toEqual(expected.tokens);
      expect(got.text).toBe(expected.text);
      expect(got.constraintComplete).toBe(true);
      expect(got.finishReason).toBe('eos');
      const value = JSON.parse(got.text) as Record<string, unknown>;
      expect(typeof value).toBe('object');
      if (extra.jsonSchema === schema) expect(['cat', 'box']).toContain(value.kind);
    }
    // Refused in the caller's thread, before the worker runs: a schema it cannot follow, a gen length too short.
    await expect(worker.ask(request({ jsonSchema: { type: 'string', pattern: 'x' } }))).rejects.toThrow('json schema: "pattern" at / is not supported');
    await expect(worker.ask(request({ jsonSchema: schema, settings: { ...SETTINGS, genLength: 4 } }))).rejects.toThrow(/the schema needs at least \d+ tokens/);
  });

  it('encodeFirst: images encoded before the decoder loads give the same answer, with their time in the stats', async () => {
    const expected = await ask(local, request({ images: [IMAGE] }));
    const first = await InferenceWorker.start({ dir: outDir, manifest, threads: 1, encodeFirst: { images: [IMAGE], minPixels: 784, maxPixels: 3136 } });
    try {
      expect(first.encodeMs).toBeGreaterThan(0);
      expect(first.encodeMs).toBeLessThan(first.loadMs);
      const events: AskEvent[] = [];
      const got = await first.ask({ ...request({ images: [IMAGE] }), cacheImages: true }, { onProgress: (e) => events.push(e) });
      expect(got.tokens).toEqual(expected.tokens);
      expect(got.images).toEqual(expected.images);
      // The encoding happened at load; the answer reports it as its preprocessing and vision time.
      expect(got.stats.ms.vision + got.stats.ms.preprocess).toBeGreaterThanOrEqual(first.encodeMs - 1e-6);
      // A second image-less request does not get the encoding time again.
      const again = await first.ask({ ...request(), cacheImages: true });
      expect(again.stats.ms.vision).toBeLessThan(first.encodeMs);
    } finally {
      await first.close();
    }
  });

  it('loadModel beforeDecoder: the vision tower works before the decoder exists and loads again afterwards', async () => {
    let encodedBefore = 0;
    const model = await loadModel(outDir, manifest, {
      threads: 1,
      beforeDecoder: async (vision) => {
        const { preprocessImage } = await import('../src/models/qwen25vl/preprocess.js');
        encodedBefore = (await (await vision()).encode(await preprocessImage(IMAGE, { minPixels: 784, maxPixels: 3136 }))).tokens;
      },
    });
    try {
      expect(encodedBefore).toBeGreaterThan(0);
      const result = await ask(model, request({ images: [IMAGE] }));
      expect(result.tokens).toEqual((await ask(local, request({ images: [IMAGE] }))).tokens);
    } finally {
      await model.close();
    }
  });

  it('streams events in order whose committed text adds up to the answer', async () => {
    const events: AskEvent[] = [];
    const result = await worker.ask(request({ images: [IMAGE] }), { onProgress: (e) => events.push(e) });
    const stages = events.filter((e) => e.type === 'stage').map((e) => (e as { stage: string }).stage);
    expect(stages).toEqual(['preprocess', 'vision', 'prefill', 'generate']);
    const text = events.map((e) => (e.type === 'block-end' || e.type === 'finished' ? e.text : '')).join('');
    expect(text).toBe(result.text);
    // Every unmasked output slot is reported once per fill, inside its block, with the token's own text.
    let block: { firstIndex: number; size: number } | null = null;
    const filled = new Map<number, number>();
    for (const e of events) {
      if (e.type === 'block-start') block = e;
      if (e.type === 'unmask') {
        expect(e.pieces).toHaveLength(e.ids.length);
        for (const [k, index] of e.indices.entries()) {
          expect(index >= block!.firstIndex && index < block!.firstIndex + block!.size).toBe(true);
          filled.set(index, e.ids[k]);
          expect(e.pieces[k]).toBe(local.tokenizer.decode([e.ids[k]]).replace(/^$/, e.pieces[k]));
        }
      }
      if (e.type === 'block-end') for (const [k, id] of e.ids.entries()) expect(filled.get(e.firstIndex + k)).toBe(id);
    }
    const last = events[events.length - 1];
    expect(last.type).toBe('finished');
    if (last.type === 'finished') expect(last.nfe).toBe(result.stats.nfe);
  });

  it('keeps the main thread free while the model runs', async () => {
    // In-process, session.run blocks the event loop; in the worker, timers on this thread keep firing.
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const t0 = performance.now();
    await worker.ask(request({ settings: { ...SETTINGS, genLength: 64, steps: 8 } }));
    const ms = performance.now() - t0;
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(Math.min(20, ms / 4));
  });

  it('cancel() stops a request with an interrupted error and keeps the model loaded', async () => {
    let unmasks = 0;
    const long = worker.ask(request({ settings: { ...SETTINGS, genLength: 256, steps: 8 } }), {
      onProgress: (e) => {
        if (e.type === 'unmask' && ++unmasks === 2) worker.cancel();
      },
    });
    const error = await long.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DvlError);
    expect((error as DvlError).kind).toBe('interrupted');
    // Far fewer steps than the full answer (32 blocks x 8 steps) were made.
    expect(unmasks).toBeLessThan(10);
    const again = await worker.ask(request());
    expect(again.tokens).toEqual((await ask(local, request())).tokens);
  });

  it('aborting the signal stops the request at the next decoder call', async () => {
    const controller = new AbortController();
    let unmasks = 0;
    const running = worker.ask(request({ settings: { ...SETTINGS, genLength: 512 } }), {
      signal: controller.signal,
      onProgress: (e) => e.type === 'unmask' && ++unmasks === 1 && controller.abort(),
    });
    const error = await running.catch((e: unknown) => e);
    expect((error as DvlError).kind).toBe('interrupted');
    expect(unmasks).toBeLessThan(5);
  });

  it('a model that cannot be loaded is a model error (exit code 3)', async () => {
    const broken = path.join(work, 'broken');
    fs.cpSync(outDir, broken, { recursive: true });
    fs.writeFileSync(path.join(broken, manifest.graphs.decoder), 'not an onnx file');
    const error = await InferenceWorker.start({ dir: broken, manifest }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DvlError);
    expect((error as DvlError).exitCode).toBe(3);
    expect((error as DvlError).message).toMatch(/cannot load .*decoder/);
  });

  it('measures the overhead of running in the worker', async () => {
    // Same request in-process and in the worker, best of 3: the difference is what the worker
    // costs (message passing of events and the result); divided by the decoder calls it is per call.
    const r = request({ settings: { ...SETTINGS, genLength: 64, steps: 8 } });
    const best = async (run: () => Promise<unknown>) => {
      let min = Infinity;
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        await run();
        min = Math.min(min, performance.now() - t0);
      }
      return min;
    };
    const events = { onProgress: () => {} };
    const inProcess = await best(() => ask(local, { ...r, onProgress: () => {} }));
    const inWorker = await best(() => worker.ask(r, events));
    const nfe = (await ask(local, r)).stats.nfe;
    const perCall = ((inWorker - inProcess) / nfe) * 1000;
    console.log(`worker overhead: in-process ${inProcess.toFixed(1)} ms, worker ${inWorker.toFixed(1)} ms per ask of ${nfe} decoder calls: ${(inWorker - inProcess).toFixed(1)} ms per ask, ${perCall.toFixed(0)} µs per decoder call`);
    // A generous bound: the worker must not double the time of even a tiny model's ask.
    expect(inWorker).toBeLessThan(inProcess * 2 + 20);
  });
});
