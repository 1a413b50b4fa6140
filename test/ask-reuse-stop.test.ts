/**
 * What the server leans on in ask.ts: the decoder cache of a shared prompt prefix kept between requests
 * (reuseCache) gives the tokens of a fresh run; stop strings end generation after the block they appear in
 * and cut the text before them, in-process and through the worker (whose tokenizer is in this thread);
 * images are cached by content, least recently used dropped beyond a byte bound.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ask, type AskEvent, type AskRequest, ImageCache, imageKey, reusableRows } from '../src/ask.js';
import { convertCheckpoint } from '../src/convert/convert.js';
import type { Manifest } from '../src/store/manifest.js';
import { loadModel, type LoadedModel } from '../src/runtime/model.js';
import { InferenceWorker } from '../src/runtime/worker-client.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const CONFIG = tinyConfig({ text: { tieWordEmbeddings: false } });
const IMAGE = path.resolve('fixtures/images/chelsea.png');
const OTHER_IMAGE = path.resolve('fixtures/images/astronaut-256.png');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-reuse-'));
const ckpt = path.join(work, 'tiny');
let manifest: Manifest;
let reused: LoadedModel;
let fresh: LoadedModel;

const SETTINGS = { genLength: 40, steps: 4, blockSize: CONFIG.blockSize, temperature: 0, topK: 0, topP: 1, remasking: 'low_confidence_static' as const, threshold: 0.85, seed: 1 };
const request = (extra: Partial<AskRequest> = {}): AskRequest => ({ images: [], prompt: 'What is in the box?', settings: SETTINGS, minPixels: 784, maxPixels: 3136, ...extra });

beforeAll(async () => {
  writeTinyCheckpoint(ckpt, { config: CONFIG, seed: 21 });
  const outDir = path.join(work, 'fp32');
  manifest = await convertCheckpoint({ source: { kind: 'local', id: ckpt, revision: 'local', dir: ckpt }, dtype: 'fp32', outDir });
  reused = await loadModel(outDir, manifest, { threads: 1 });
  fresh = await loadModel(outDir, manifest, { threads: 1 });
}, 60_000);

afterAll(async () => {
  await reused?.close();
  await fresh?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('reuseCache', () => {
  it('keeps the whole blocks a new prompt shares with the previous request, with the tokens of a fresh run', async () => {
    const B = SETTINGS.blockSize;
    const first = await ask(reused, request({ images: [IMAGE], reuseCache: true, imageCache: new ImageCache() }));
    expect(first.stats.cachedTokens).toBe(0);
    // Same system prompt and image, another question: the prompt's first blocks are the same rows.
    const second = request({ images: [IMAGE], prompt: 'And what colour is it?' });
    const got = await ask(reused, { ...second, reuseCache: true });
    const expected = await ask(fresh, second);
    expect(got.tokens).toEqual(expected.tokens);
    expect(got.rawTokens).toEqual(expected.rawTokens);
    expect(got.stats.cachedTokens).toBeGreaterThan(0);
    expect(got.stats.cachedTokens % B).toBe(0);
    // Only rows before the first difference: the image ends where the question starts.
    expect(got.stats.cachedTokens).toBeLessThanOrEqual(first.stats.promptTokens - 8);
    expect(got.stats.nfe).toBe(expected.stats.nfe);

    // The next turn of a chat: the previous prompt and its answer come first; the answer's committed blocks
    // are reusable when their tokens are those the history re-tokenizes to (checked by the tokens anyway).
    const turn = request({
      images: [],
      prompt: 'Why?',
      history: [
        { role: 'user', text: 'And what colour is it?', images: 1 },
        { role: 'assistant', text: got.text },
      ],
      historyImages: [IMAGE],
    });
    const gotTurn = await ask(reused, { ...turn, reuseCache: true });
    const expectedTurn = await ask(fresh, turn);
    expect(gotTurn.tokens).toEqual(expectedTurn.tokens);
    expect(gotTurn.stats.cachedTokens).toBeGreaterThanOrEqual(got.stats.cachedTokens);
  });

  it('reuses nothing when the prompt differs from its first row, or when not asked', async () => {
    await ask(reused, request({ reuseCache: true }));
    const other = await ask(reused, request({ system: 'Answer in French.', reuseCache: true }));
    expect(other.stats.cachedTokens).toBe(0);
    const again = await ask(reused, request({ system: 'Answer in French.' }));
    expect(again.stats.cachedTokens).toBe(0);
    expect(again.tokens).toEqual(other.tokens);
  });

  it('a different image at the same place is a different prompt', async () => {
    await ask(reused, request({ images: [IMAGE], reuseCache: true }));
    const got = await ask(reused, request({ images: [OTHER_IMAGE], reuseCache: true }));
    const expected = await ask(fresh, request({ images: [OTHER_IMAGE] }));
    expect(got.tokens).toEqual(expected.tokens);
    // The system prompt's whole blocks (before the image) are shared, nothing after.
    const systemRows = got.stats.promptTokens - got.stats.imageTokens;
    expect(got.stats.cachedTokens).toBeLessThan(systemRows);
  });

  it('reusableRows: the common prefix in whole blocks, never past the prompt whole blocks or the cache', () => {
    expect(reusableRows([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 0], 9, 2, 7, 4)).toBe(6);
    expect(reusableRows([1, 2, 3, 4, 5], [1, 2, 3, 9, 5, 6, 7], 5, 2, 7, 4)).toBe(2);
    // At most floor(promptLength / B) * B rows: the first denoised block holds masks.
    expect(reusableRows([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8], 8, 4, 7, 4)).toBe(4);
    // The cache may be shorter than the keys recorded.
    expect(reusableRows([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8, 9], 2, 2, 9, 4)).toBe(2);
    expect(reusableRows(null, [1, 2], 2, 2, 2, 4)).toBe(0);
    // Full diffusion (one block covers everything): no prefill, nothing to reuse.
    expect(reusableRows([1, 2, 3, 4], [1, 2, 3, 4], 4, 8, 4, 4)).toBe(0);
  });
});

describe('stop strings', () => {
  // A stop string taken from the middle of the answer: the text up to its first occurrence, then nothing.
  const pickStop = (text: string) => {
    const chars = [...text];
    return chars.slice(Math.floor(chars.length / 2), Math.floor(chars.length / 2) + 2).join('');
  };

  it('end generation after the block they appear in and cut the text before them (in-process and in the worker)', async () => {
    const whole = await ask(fresh, request());
    expect([...whole.text].length).toBeGreaterThan(8);
    const stop = pickStop(whole.text);
    const expectedText = whole.text.slice(0, whole.text.indexOf(stop));

    const events: AskEvent[] = [];
    const got = await ask(fresh, request({ stop: ['never there', stop], onProgress: (e) => events.push(e) }));
    expect(got.text).toBe(expectedText);
    expect(got.finishReason).toBe('stop');
    const streamed = events.map((e) => (e.type === 'block-end' || e.type === 'finished' ? e.text : '')).join('');
    expect(streamed).toBe(expectedText);
    expect(got.stats.blocks).toBeLessThanOrEqual(whole.stats.blocks);
    // The tokens are those of the blocks made, a prefix of the whole answer's.
    expect(whole.tokens.slice(0, got.tokens.length)).toEqual(got.tokens);

    const worker = await InferenceWorker.start({ dir: fresh.dir, manifest, threads: 1 });
    try {
      const wEvents: AskEvent[] = [];
      const viaWorker = await worker.ask(request({ stop: [stop] }), { onProgress: (e) => wEvents.push(e) });
      expect(viaWorker.text).toBe(expectedText);
      expect(viaWorker.finishReason).toBe('stop');
      expect(viaWorker.tokens).toEqual(got.tokens);
      expect(viaWorker.stats.nfe).toBe(got.stats.nfe);
      expect(wEvents.map((e) => (e.type === 'block-end' || e.type === 'finished' ? e.text : '')).join('')).toBe(expectedText);
      // Without stop strings the worker's answer is the whole one.
      const plain = await worker.ask(request());
      expect(plain.text).toBe(whole.text);
      expect(plain.finishReason).toBe(whole.finishReason);
      expect(worker.startup.tokenizerMs).toBeGreaterThan(0);
    } finally {
      await worker.close();
    }
  });

  it('a stop string that never appears changes nothing; text held back as a possible stop start is shown at the end', async () => {
    const whole = await ask(fresh, request());
    const lastChar = [...whole.text].at(-1)!;
    const events: AskEvent[] = [];
    // The answer ends with the first character of this stop string, which is held back until the end.
    const got = await ask(fresh, request({ stop: [`${lastChar}\u0000never`], onProgress: (e) => events.push(e) }));
    expect(got.text).toBe(whole.text);
    expect(got.finishReason).toBe(whole.finishReason);
    expect(events.map((e) => (e.type === 'block-end' || e.type === 'finished' ? e.text : '')).join('')).toBe(whole.text);
  });
});

describe('ImageCache', () => {
  it('drops the least recently used entries beyond its byte bound, keyed by content and pixel budget', () => {
    const entry = (n: number) => ({ embeds: new Float32Array(n), image: {} as never });
    const cache = new ImageCache(100 * 4);
    cache.set('a', entry(40));
    cache.set('b', entry(40));
    expect(cache.get('a')).toBeDefined(); // a is now the most recent
    cache.set('c', entry(40));
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('a')).toBeDefined();
    expect(cache.get('c')).toBeDefined();
    expect(cache.heldBytes).toBe(80 * 4);
    // One entry larger than the bound is still kept (the request that made it uses it).
    cache.set('d', entry(200));
    expect(cache.size).toBe(1);
    const bytes = fs.readFileSync(IMAGE);
    expect(imageKey(bytes, '1:2')).toBe(imageKey(Buffer.from(bytes), '1:2'));
    expect(imageKey(bytes, '1:2')).not.toBe(imageKey(bytes, '1:3'));
  });
});
