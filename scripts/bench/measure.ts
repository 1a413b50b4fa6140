/**
 * The measurements of one converted model (one preset and dtype), run in a process of their own so that peak
 * RSS belongs to this model alone. Everything is timed in-process around the library's own calls.
 */
import fs from 'node:fs';
import path from 'node:path';
import { generate, type GenerationSettings } from '../../src/generate/bd3lm.js';
import type { BlockDecoder, DecoderRequest, DecoderResult } from '../../src/generate/types.js';
import { preprocessImage } from '../../src/models/qwen25vl/preprocess.js';
import { DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS } from '../../src/preprocess/pixel-budget.js';
import { defaultThreads, loadModel, type LoadedModel, type StartupTimes } from '../../src/runtime/model.js';
import { textTensors } from '../../src/checkpoint/expected-tensors.js';
import { checkManifest, type Manifest } from '../../src/store/manifest.js';
import { treeBytes } from '../../src/store/layout.js';
import { type LinearPlan, linearPlan, RECIPES } from '../../src/convert/recipes.js';
import { machineFacts, median, peakRssGb, timeMedian, type MachineFacts } from './machine.js';
import { prng } from '../../test/helpers/random-weights.js';
import { RecomputeDecoder } from './recompute.js';

export interface MeasureOptions {
  dir: string;
  manifest: Manifest;
  repeats: number;
  genRepeats: number;
  genLength: number;
  cacheLengths: number[];
  blockRows: number[];
  /** Prompt rows of the generation runs (about one 512x512 image plus a question). */
  promptRows: number;
  images: { name: string; file: string }[];
  /** Generation schedules to compare; 'reference' = a commit call after every finished block. */
  schedules: ('ours' | 'reference')[];
  /** Blocks of the full-recompute baseline actually run (its forwards all have the same length); 0: skip it. */
  recomputeBlocks: number;
}

export interface ForwardTiming {
  rows: number;
  cacheLength: number;
  ms: number;
  /** ms divided by the memory bound (weight bytes / bandwidth). */
  boundRatio: number;
}

export interface GenerationTiming {
  remasking: GenerationSettings['remasking'];
  schedule: 'ours' | 'reference';
  genLength: number;
  nfe: number;
  blocks: number;
  tokensPerNfe: number;
  /** Decode only (after the prefill call). */
  decodeMs: number;
  tokensPerSecond: number;
  msPerCall: number;
  /** Shares of decode time: inside onnxruntime's run(), host work in the decoder wrapper (feeds, K/V copies, cache), and the loop (sampling, softmax, embedding rows). */
  share: { ort: number; decoderHost: number; loop: number };
  prefillRows: number;
  prefillMs: number;
}

export interface FusedCommitTiming {
  cacheLength: number;
  /** A commit call of 8 rows + the next block's first call of 8 rows. */
  separateMs: number;
  /** Both in one 16-row call. */
  fusedMs: number;
}

/** LLaDA-V-style decoding without a KV cache (static remasking), against ours with the cache. */
export interface RecomputeTiming {
  genLength: number;
  /** Rows of every forward: the prompt plus all gen_length rows. */
  rowsPerForward: number;
  /** Blocks and forwards actually run; the rest is extrapolated (every forward has the same shape). */
  blocksRun: number;
  forwardsRun: number;
  msPerForward: number;
  /** Decode time of the run, and scaled to the whole genLength. */
  decodeMsRun: number;
  decodeMsFull: number;
  nfeFull: number;
  tokensPerSecond: number;
}

/** One way of starting the model: loadModel's own breakdown plus its wall time. */
export interface StartupTiming {
  mode: 'plain weights (packed in memory at each start)' | 'first start: packs the weights and saves them' | 'packed weights (every later start)';
  /** Bytes of the variant on disk after this start. */
  variantBytes: number;
  totalMs: number;
  startup: StartupTimes;
}

export interface ModelMeasurement {
  machine: MachineFacts;
  startup: StartupTiming[];
  /** Decoder weight bytes in the kernels' packed layout (what a forward streams), and the floor they give. */
  packedDecoderBytes: number;
  packedBoundMs: number;
  weightBytes: { decoder: number; vision: number; embeddings: number; onDisk: number };
  memoryBoundMs: number;
  loadMs: number;
  forward: ForwardTiming[];
  preprocessMs: Record<string, number>;
  vision: { ms: number; tokens: number; pixels: string };
  prefillMsPer100: number;
  fusedCommit: FusedCommitTiming[];
  generation: GenerationTiming[];
  recompute: RecomputeTiming | null;
  peakRssGb: number;
}

const fileSize = (dir: string, name: string) => (fs.existsSync(path.join(dir, name)) ? fs.statSync(path.join(dir, name)).size : 0);

/** Embedding rows of random token ids (real rows of the table, so the values have the model's scale). */
function randomTokenRows(model: LoadedModel, rows: number, seed: number): Float32Array {
  const hidden = model.embeddings.hiddenSize;
  const rand = prng(seed);
  const out = new Float32Array(rows * hidden);
  for (let r = 0; r < rows; r++) model.embeddings.rowInto(Math.floor(rand() * 150000), out, r * hidden);
  return out;
}

/** Gives the decoder a cache of `rows` random K/V rows (timing does not depend on the values). */
function fillCache(model: LoadedModel, rows: number): void {
  const text = model.manifest.config.text;
  const width = text.numKvHeads * text.headDim;
  const rand = prng(rows);
  const layer = () => Float32Array.from({ length: rows * width }, () => rand() - 0.5);
  model.decoder.reset();
  model.decoder.reserve(rows + 64);
  const keys = Array.from({ length: text.numLayers }, layer);
  const values = Array.from({ length: text.numLayers }, layer);
  model.decoder.appendCached(keys, values, rows);
}

/** Forwards to the model's decoder, attributing wall time and onnxruntime time to each call. */
class TimedDecoder implements BlockDecoder {
  calls: { rows: number; ms: number; ortMs: number; commit: boolean; logitRows: number }[] = [];
  constructor(private readonly model: LoadedModel) {}
  get vocabSize() {
    return this.model.decoder.vocabSize;
  }
  get cacheLength() {
    return this.model.decoder.cacheLength;
  }
  reset() {
    this.model.decoder.reset();
  }
  async forward(request: DecoderRequest): Promise<DecoderResult> {
    const ort0 = this.model.decoder.runMs;
    const t0 = performance.now();
    const result = await this.model.decoder.forward(request);
    this.calls.push({
      rows: request.count,
      ms: performance.now() - t0,
      ortMs: this.model.decoder.runMs - ort0,
      commit: request.commit,
      logitRows: request.logitRows.length,
    });
    return result;
  }
}

/**
 * The benchmark's generation settings (greedy, 8 steps, seed 1) through `decoder`; decodeMs runs from the end
 * of the prefill call to the last token.
 */
async function timedGeneration(
  model: LoadedModel,
  decoder: BlockDecoder,
  promptEmbeds: Float32Array,
  promptLength: number,
  genLength: number,
  remasking: GenerationSettings['remasking'],
  referenceSchedule: boolean,
) {
  const config = model.manifest.config;
  let decodeStart = performance.now();
  const result = await generate({
    decoder,
    embeddings: model.embeddings,
    promptEmbeds,
    promptLength,
    genLength,
    steps: 8,
    blockSize: config.blockSize,
    temperature: 0,
    topK: 0,
    topP: 1,
    remasking,
    threshold: 0.85,
    seed: 1,
    maskTokenId: config.maskTokenId,
    eosTokenId: config.eosTokenId,
    onEvent: (e) => {
      if (e.type === 'prefill') decodeStart = performance.now();
    },
    referenceSchedule,
  });
  return { result, decodeMs: performance.now() - decodeStart };
}

/** One generation of `o.genLength` tokens after a prefill of `o.promptRows` random token rows. */
async function generateOnce(
  model: LoadedModel,
  o: MeasureOptions,
  promptEmbeds: Float32Array,
  remasking: GenerationSettings['remasking'],
  schedule: 'ours' | 'reference',
): Promise<GenerationTiming> {
  const decoder = new TimedDecoder(model);
  model.decoder.reset();
  model.decoder.reserve(o.promptRows + o.genLength + 16);
  const { result, decodeMs } = await timedGeneration(model, decoder, promptEmbeds, o.promptRows, o.genLength, remasking, schedule === 'reference');
  const [prefill, ...decodeCalls] = decoder.calls;
  const forwardMs = decodeCalls.reduce((s, c) => s + c.ms, 0);
  const ortMs = decodeCalls.reduce((s, c) => s + c.ortMs, 0);
  const tokens = result.tokens.length;
  return {
    remasking,
    schedule,
    genLength: o.genLength,
    nfe: result.nfe,
    blocks: result.blocks,
    tokensPerNfe: tokens / (result.nfe - 1),
    decodeMs,
    tokensPerSecond: tokens / (decodeMs / 1000),
    msPerCall: decodeMs / decodeCalls.length,
    share: { ort: ortMs / decodeMs, decoderHost: (forwardMs - ortMs) / decodeMs, loop: (decodeMs - forwardMs) / decodeMs },
    prefillRows: prefill.rows,
    prefillMs: prefill.ms,
  };
}

/**
 * Generations with every (remasking, schedule) pair; the repeats are interleaved (ours, reference, ours, ...)
 * so that load from other jobs hits both schedules alike. Per pair, the run with the median decode time.
 */
async function measureGenerations(model: LoadedModel, o: MeasureOptions, log: (line: string) => void): Promise<GenerationTiming[]> {
  const promptEmbeds = randomTokenRows(model, o.promptRows, 7);
  const out: GenerationTiming[] = [];
  for (const remasking of ['low_confidence_static', 'low_confidence_dynamic'] as const) {
    const runs = new Map<string, GenerationTiming[]>(o.schedules.map((s) => [s, []]));
    for (let i = 0; i < o.genRepeats; i++) {
      for (const schedule of o.schedules) {
        log(`  generate ${o.genLength} tokens, ${remasking}, ${schedule} schedule (${i + 1}/${o.genRepeats})`);
        runs.get(schedule)!.push(await generateOnce(model, o, promptEmbeds, remasking, schedule));
      }
    }
    for (const schedule of o.schedules) {
      const all = runs.get(schedule)!;
      const mid = median(all.map((r) => r.decodeMs));
      out.push(all.reduce((best, r) => (Math.abs(r.decodeMs - mid) < Math.abs(best.decodeMs - mid) ? r : best)));
    }
  }
  return out;
}

/**
 * One finished block's commit plus the next block's first step, as the reference makes them (an 8-row commit
 * call without logits, then an 8-row call with 8 rows' logits) and fused (one 16-row call, 8 rows' logits).
 * The cache is not grown (commit: false): onnxruntime computes the new K/V either way.
 */
async function measureFusedCommit(model: LoadedModel, o: MeasureOptions, cacheLength: number): Promise<FusedCommitTiming> {
  const B = model.manifest.config.blockSize;
  fillCache(model, cacheLength);
  const two = randomTokenRows(model, 2 * B, 99);
  const eight = Array.from({ length: B }, (_, r) => r);
  const forward = (embeds: Float32Array, count: number, start: number, logitRows: number[]) =>
    model.decoder.forward({ embeds, count, start, blockSize: B, logitRows, commit: false });
  const samplesSeparate: number[] = [];
  const samplesFused: number[] = [];
  await forward(two, 2 * B, cacheLength, eight.map((r) => r + B)); // warm-up
  for (let i = 0; i < Math.max(o.repeats, 3); i++) {
    let t0 = performance.now();
    await forward(two, B, cacheLength, []);
    await forward(two.subarray(B * model.embeddings.hiddenSize), B, cacheLength + B, eight);
    samplesSeparate.push(performance.now() - t0);
    t0 = performance.now();
    await forward(two, 2 * B, cacheLength, eight.map((r) => r + B));
    samplesFused.push(performance.now() - t0);
  }
  return { cacheLength, separateMs: median(samplesSeparate), fusedMs: median(samplesFused) };
}

/**
 * The full-recompute baseline: the same loop and settings as ours (static remasking, 8 steps), every step a
 * forward over prompt + gen_length rows. Only the first `o.recomputeBlocks` blocks are run: a forward costs
 * several seconds and all of them have the same shape, so the rest is scaled from the measured blocks.
 */
async function measureRecompute(model: LoadedModel, o: MeasureOptions, promptEmbeds: Float32Array): Promise<RecomputeTiming> {
  const config = model.manifest.config;
  const B = config.blockSize;
  const hidden = config.text.hiddenSize;
  const genRun = Math.min(o.genLength, o.recomputeBlocks * B);
  const totalRows = Math.ceil((o.promptRows + o.genLength) / B) * B;
  const maskRow = new Float32Array(hidden);
  model.embeddings.rowInto(config.maskTokenId, maskRow, 0);
  const decoder = new RecomputeDecoder(model.decoder, hidden, totalRows, maskRow);
  const { result, decodeMs: decodeMsRun } = await timedGeneration(model, decoder, promptEmbeds, o.promptRows, genRun, 'low_confidence_static', false);
  const scale = o.genLength / result.tokens.length;
  const decodeMsFull = decodeMsRun * scale;
  return {
    genLength: o.genLength,
    rowsPerForward: totalRows,
    blocksRun: result.blocks,
    forwardsRun: decoder.forwardMs.length,
    msPerForward: median(decoder.forwardMs),
    decodeMsRun,
    decodeMsFull,
    nfeFull: Math.round(decoder.forwardMs.length * scale),
    tokensPerSecond: o.genLength / (decodeMsFull / 1000),
  };
}

/**
 * Start-up three ways, one after the other, each model released before the next: from the plain conversion
 * (onnxruntime packs the weights in memory), the start that packs them and makes the packed graph the variant's
 * decoder (store/prepacked.ts; `dvl pull` does this), and a start from the packed graph. A variant packed by an
 * earlier run is measured packed only (its plain files are gone: convert it again for the other two).
 */
async function measureStartup(o: MeasureOptions, threads: number, log: (line: string) => void): Promise<StartupTiming[]> {
  const out: StartupTiming[] = [];
  let manifest = o.manifest;
  const once = async (mode: StartupTiming['mode'], prepack: boolean) => {
    log(`  start-up: ${mode}`);
    const t0 = performance.now();
    const model = await loadModel(o.dir, manifest, { threads, prepack });
    const totalMs = performance.now() - t0;
    manifest = model.manifest;
    await model.close();
    out.push({ mode, totalMs, startup: { ...model.startup }, variantBytes: treeBytes(o.dir) });
  };
  if (!manifest.prepacked) {
    await once('plain weights (packed in memory at each start)', false);
    await once('first start: packs the weights and saves them', true);
  }
  await once('packed weights (every later start)', true);
  return out;
}

/**
 * Bytes of the decoder's matmul weights in the layout the kernels stream, by the dtype's recipe: MatMulNBits int4
 * at block 32 keeps 4-bit values plus an fp32 scale and an fp32 block sum per 32 (0.75 bytes per weight), 8-bit
 * MatMulNBits 1.25, int8 per channel (DynamicQuantizeMatMul) one byte, fp32/fp16 four (fp16 is widened on load).
 */
export function packedBytes(manifest: Manifest): number {
  const perWeight = (p: LinearPlan) => ({ int4: 0.5 + 8 / 32, int8: 1 + 8 / 32, 'int8-dq': 1, fp16: 4, fp32: 4 })[p.format];
  const decoder = RECIPES[manifest.dtype].decoder;
  const text = manifest.config.text;
  let bytes = 0;
  for (const t of textTensors(text)) {
    if (t.shape.length !== 2 || t.name === 'model.embed_tokens.weight') continue;
    const layer = /^model\.layers\.(\d+)\./.exec(t.name)?.[1];
    const where = layer === undefined ? 'head' : { layer: Number(layer), layers: text.numLayers };
    bytes += t.shape[0] * t.shape[1] * perWeight(linearPlan(decoder, where));
  }
  // The tied lm_head is the embedding matrix.
  if (text.tieWordEmbeddings) bytes += text.vocabSize * text.hiddenSize * perWeight(linearPlan(decoder, 'head'));
  return bytes;
}

export async function measureModel(o: MeasureOptions, log: (line: string) => void): Promise<ModelMeasurement> {
  const threads = defaultThreads();
  log(`  machine facts (bandwidth with ${threads} threads)`);
  const machine = await machineFacts(threads);
  // The plain conversion's decoder (a variant packed by an earlier run counts its packed blobs too).
  const decoderBytes = fileSize(o.dir, o.manifest.graphs.decoder) + fileSize(o.dir, `${o.manifest.graphs.decoder}.data`);
  const weightBytes = {
    decoder: decoderBytes,
    vision: fileSize(o.dir, 'vision.onnx') + fileSize(o.dir, 'vision.onnx.data'),
    embeddings: fileSize(o.dir, o.manifest.embeddings.file),
    onDisk: fs.readdirSync(o.dir).reduce((s, f) => s + fileSize(o.dir, f), 0),
  };
  const memoryBoundMs = (decoderBytes / (machine.bandwidthGbps * 1e9)) * 1000;

  const startup = await measureStartup(o, threads, log);
  const packedDecoderBytes = packedBytes(o.manifest);
  const packedBoundMs = (packedDecoderBytes / (machine.bandwidthGbps * 1e9)) * 1000;

  const t0 = performance.now();
  // The start-up measurement packed the variant: its manifest on disk names the packed graph now.
  const current = checkManifest(o.dir, { checkSource: false });
  const model = await loadModel(o.dir, 'manifest' in current ? current.manifest : o.manifest, { threads });
  const loadMs = performance.now() - t0;
  const blockSize = model.manifest.config.blockSize;

  const forward: ForwardTiming[] = [];
  for (const cacheLength of o.cacheLengths) {
    fillCache(model, cacheLength);
    for (const rows of o.blockRows) {
      log(`  forward: ${rows} rows at cache ${cacheLength}`);
      const embeds = randomTokenRows(model, rows, rows);
      const logitRows = Array.from({ length: rows }, (_, r) => r);
      const ms = await timeMedian(o.repeats, () => model.decoder.forward({ embeds, count: rows, start: cacheLength, blockSize, logitRows, commit: false }));
      forward.push({ rows, cacheLength, ms, boundRatio: ms / memoryBoundMs });
    }
  }

  const preprocessMs: Record<string, number> = {};
  const budget = { minPixels: DEFAULT_MIN_PIXELS, maxPixels: DEFAULT_MAX_PIXELS };
  for (const image of o.images) {
    log(`  preprocess ${image.name}`);
    preprocessMs[image.name] = await timeMedian(o.repeats, () => preprocessImage(image.file, budget));
  }

  log('  vision encoder');
  const encoder = await model.vision();
  const pre = await preprocessImage(o.images[o.images.length - 1].file, budget);
  let tokens = 0;
  const visionMs = await timeMedian(o.repeats, async () => (tokens = (await encoder.encode(pre)).tokens));

  const fusedCommit: FusedCommitTiming[] = [];
  for (const cacheLength of o.cacheLengths) {
    log(`  commit + next step, separate and fused, at cache ${cacheLength}`);
    fusedCommit.push(await measureFusedCommit(model, o, cacheLength));
  }

  const generation = await measureGenerations(model, o, log);
  let recompute: RecomputeTiming | null = null;
  if (o.recomputeBlocks > 0) {
    log(`  full recompute baseline: ${o.recomputeBlocks} block(s) of ${o.genLength / blockSize}`);
    recompute = await measureRecompute(model, o, randomTokenRows(model, o.promptRows, 7));
  }
  const prefillMsPer100 = median(generation.map((g) => (g.prefillMs / g.prefillRows) * 100));
  await model.close();
  return {
    machine,
    weightBytes,
    memoryBoundMs,
    loadMs,
    startup,
    packedDecoderBytes,
    packedBoundMs,
    forward,
    preprocessMs,
    vision: { ms: visionMs, tokens, pixels: `${pre.resized.width}x${pre.resized.height}` },
    prefillMsPer100,
    fusedCommit,
    generation,
    recompute,
    peakRssGb: peakRssGb(),
  };
}
