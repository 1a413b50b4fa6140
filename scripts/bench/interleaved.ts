/**
 * The 3B variants side by side in one process, interleaved (a shared machine drifts by 10-20 % over minutes,
 * so variants measured one after the other are not comparable): 8-, 16- and 256-row decoder calls at a cache of
 * 256 rows (a block, the fused commit + next block, a prefill chunk) and the vision encoder on a 512x512 image.
 * Medians over the rounds after the first. Not a test; the variants must have been converted by `npm run bench`.
 *
 *   npx tsx scripts/bench/interleaved.ts [--dir .tmp/bench] [--dtypes int8,int4,int4-all] [--rounds 7]
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { preprocessImage } from '../../src/models/qwen25vl/preprocess.js';
import { DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS } from '../../src/preprocess/pixel-budget.js';
import { loadModel, type ModelRuntime } from '../../src/runtime/model.js';
import { checkManifest } from '../../src/store/manifest.js';
import { prng } from '../../test/helpers/random-weights.js';

const { values } = parseArgs({ options: { dir: { type: 'string', default: '.tmp/bench' }, dtypes: { type: 'string', default: 'int8,int4,int4-all' }, rounds: { type: 'string', default: '7' } } });
const local = path.join(path.resolve(values.dir!), 'home', 'models', 'local');
const variantRoot = fs.existsSync(local) ? fs.readdirSync(local).find((name) => name.startsWith('synthetic-3b-')) : undefined;
if (!variantRoot) {
  process.stderr.write(`no 3B conversions under ${local}: run npm run bench -- --dir ${values.dir} --dtypes ${values.dtypes} first\n`);
  process.exit(1);
}
const dtypes = values.dtypes!.split(',');
const rounds = Math.max(2, Number(values.rounds));
const CACHE = 256;
const ROWS = [8, 16, 256];

const models: { dtype: string; model: ModelRuntime; encode: () => Promise<unknown> }[] = [];
// The bench's 512x512 image (504x504 after resizing: 324 tokens), written by npm run bench.
const square = path.join(path.resolve(values.dir!), 'images', 'square-512.png');
const image = await preprocessImage(fs.existsSync(square) ? square : path.resolve('fixtures/images/chelsea.png'), { minPixels: DEFAULT_MIN_PIXELS, maxPixels: DEFAULT_MAX_PIXELS });
for (const dtype of dtypes) {
  const dir = path.join(local, variantRoot, dtype);
  const current = checkManifest(dir, { checkSource: false });
  if (!('manifest' in current)) throw new Error(`${dir}: ${current.reason}`);
  process.stderr.write(`loading ${dtype}\n`);
  const model = await loadModel(dir, current.manifest, { tokenizer: false });
  const encoder = await model.vision();
  // A cache of random K/V rows: the calls' time does not depend on the values.
  const text = model.manifest.config.text;
  const rand = prng(1);
  const layer = () => Float32Array.from({ length: CACHE * text.numKvHeads * text.headDim }, () => rand() - 0.5);
  model.decoder.reset();
  model.decoder.reserve(CACHE + Math.max(...ROWS));
  model.decoder.appendCached(Array.from({ length: text.numLayers }, layer), Array.from({ length: text.numLayers }, layer), CACHE);
  models.push({ dtype, model, encode: () => encoder.encode(image) });
}

/** Embedding rows of random token ids (real rows of the table, so the values have the model's scale). */
function tokenRows(model: ModelRuntime, rows: number): Float32Array {
  const hidden = model.embeddings.hiddenSize;
  const rand = prng(rows);
  const out = new Float32Array(rows * hidden);
  for (let r = 0; r < rows; r++) model.embeddings.rowInto(Math.floor(rand() * 150000), out, r * hidden);
  return out;
}

const times = new Map<string, number[]>();
const record = (key: string, ms: number) => times.set(key, [...(times.get(key) ?? []), ms]);
for (let round = 0; round < rounds; round++) {
  process.stderr.write(`round ${round + 1}/${rounds}\n`);
  for (const { dtype, model, encode } of models) {
    for (const rows of ROWS) {
      const embeds = tokenRows(model, rows);
      // A block's call asks for every row's logits; a prefill chunk for none but the last.
      const logitRows = rows <= 16 ? Array.from({ length: rows }, (_, r) => r) : [rows - 1];
      const t0 = performance.now();
      await model.decoder.forward({ embeds, count: rows, start: CACHE, blockSize: 8, logitRows, commit: false });
      record(`${dtype}|${rows}`, performance.now() - t0);
    }
    const t0 = performance.now();
    await encode();
    record(`${dtype}|vision`, performance.now() - t0);
  }
}
for (const { model } of models) await model.close();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const cell = (dtype: string, what: string) => median(times.get(`${dtype}|${what}`)!.slice(1));
const f = (ms: number) => ms.toFixed(0);
console.log(`3B variants interleaved in one process (cache ${CACHE}; medians of ${rounds - 1} rounds after a first one):\n`);
console.log('| dtype | 8-row call | 16-row call | 256-row call (prefill per 100 tokens) | vision, 512x512 image |');
console.log('|---|---|---|---|---|');
for (const dtype of dtypes) console.log(`| ${dtype} | ${f(cell(dtype, '8'))} ms | ${f(cell(dtype, '16'))} ms | ${f(cell(dtype, '256'))} ms (${f(cell(dtype, '256') / 2.56)} ms) | ${f(cell(dtype, 'vision'))} ms |`);
