/**
 * `npm run bench`: speed and memory of dvl on this machine, on synthetic checkpoints with the real shapes
 * (random bf16 weights written to disk once and reused; the tokens they produce mean nothing). Not a test.
 *
 *   npm run bench -- [--full] [--dtypes int8,int4,int4-all,fp32] (default int8, the 3B model's default) [--repeats 3] [--gen-repeats 1] [--quick] [--dir .tmp/bench]
 *
 * --schedules ours,reference: generation with our schedule and with the reference's (a commit call per block).
 * --full adds the 7B shapes (--presets 7b: only those); --quick: one repeat, cache length 256 only, 32 generated tokens.
 * --recompute-blocks N: blocks of the full-recompute baseline to run (default 2, 0 skips it, 'all' runs every
 *   block: its forwards all have the same shape, so the rest is scaled from the blocks run).
 * --skip-kernels: leave out the kernel table (each weight-matmul kernel on a stack of real-width layers; the
 *   stacks are written once under <dir>/kernels, about 4 minutes, then reused).
 * --skip-vision: leave out the vision tower's kernel table (scripts/bench/vision-kernels.ts, about 8 minutes).
 * --skip-agreement: leave out the answer-agreement table on the trained proxy checkpoint (scripts/bench/agreement.ts:
 *   every format of the frontier on its 60 dev questions, and dynamic remasking per threshold; about 25 minutes);
 *   --proxy DIR (default ../shared/models/proxy-vqa); a missing proxy skips it with a line saying so.
 * --presets none: only the tables that need no synthetic checkpoint (kernels, vision, agreement).
 * Each model is converted (once) and measured in a child process of its own, so peak RSS is that model's.
 * Prints markdown tables and writes .tmp/bench/results-<date>.json.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import type { WeightDtype } from '../src/convert/weight-dtype.js';
import { ensureConverted, localSource } from '../src/store/ensure.js';
import { writeSyntheticCheckpoint } from '../test/helpers/tiny-checkpoint.js';
import { peakRssGb } from './bench/machine.js';
import { measureModel, type ModelMeasurement } from './bench/measure.js';
import { renderMarkdown, type BenchEntry, type KernelProbe } from './bench/report.js';
import { KERNELS, kernelErrors, sessionFor, timeKernels, writeLayerStack } from './bench/kernels.js';
import { measureBandwidth } from './bench/machine.js';
import { syntheticConfig } from '../test/helpers/tiny-checkpoint.js';
import { defaultThreads } from '../src/runtime/model.js';
import { probeVision, renderVision, type VisionProbe } from './bench/vision-kernels.js';
import { agreementMarkdown, measureAgreement, type AgreementReport } from './bench/agreement.js';

const { values } = parseArgs({
  options: {
    full: { type: 'boolean', default: false },
    presets: { type: 'string' },
    dtypes: { type: 'string', default: 'int8' },
    repeats: { type: 'string', default: '3' },
    'gen-repeats': { type: 'string', default: '1' },
    quick: { type: 'boolean', default: false },
    schedules: { type: 'string', default: 'ours,reference' },
    'recompute-blocks': { type: 'string', default: '2' },
    'skip-kernels': { type: 'boolean', default: false },
    'skip-vision': { type: 'boolean', default: false },
    'skip-agreement': { type: 'boolean', default: false },
    proxy: { type: 'string', default: '../shared/models/proxy-vqa' },
    dir: { type: 'string', default: '.tmp/bench' },
    // internal: the child processes
    child: { type: 'string' },
    out: { type: 'string' },
  },
});
const root = path.resolve(values.dir!);
const home = path.join(root, 'home');
const quick = values.quick!;
const log = (line: string) => process.stderr.write(`${line}\n`);

type Preset = '3b' | '7b';
const checkpointDir = (preset: Preset) => path.join(root, `synthetic-${preset}`);

/** A 12-megapixel photo and a 512x512 image, made once from a fixture with sharp. */
async function benchImages(): Promise<{ name: string; file: string }[]> {
  const dir = path.join(root, 'images');
  fs.mkdirSync(dir, { recursive: true });
  const source = path.resolve('fixtures/images/chelsea.png');
  const photo = path.join(dir, 'photo-4000x3000.jpg');
  const square = path.join(dir, 'square-512.png');
  if (!fs.existsSync(photo)) await sharp(source).resize(4000, 3000, { fit: 'fill' }).jpeg({ quality: 90 }).toFile(photo);
  if (!fs.existsSync(square)) await sharp(source).resize(512, 512, { fit: 'fill' }).png().toFile(square);
  return [
    { name: '12 MP jpeg', file: photo },
    { name: '512x512 png', file: square },
  ];
}

/** Child: convert one model if it has no current conversion; reports time and peak RSS. */
async function childConvert(preset: Preset, dtype: WeightDtype): Promise<object> {
  const source = localSource(checkpointDir(preset));
  const t0 = performance.now();
  const result = await ensureConverted(source, dtype, { home });
  const converted = result.convertedBecause !== '';
  return { dir: result.dir, converted, seconds: converted ? (performance.now() - t0) / 1000 : null, peakRssGb: converted ? peakRssGb() : null };
}

async function childMeasure(preset: Preset, dtype: WeightDtype): Promise<ModelMeasurement> {
  const source = localSource(checkpointDir(preset));
  const { dir, manifest } = await ensureConverted(source, dtype, { home });
  const repeats = quick ? 1 : Number(values.repeats);
  const genLength = quick ? 32 : 128;
  const blocks = values['recompute-blocks']!;
  const recomputeBlocks = blocks === 'all' ? Math.ceil(genLength / manifest.config.blockSize) : Number(blocks);
  if (!Number.isInteger(recomputeBlocks) || recomputeBlocks < 0) throw new Error(`--recompute-blocks: '${blocks}' is not a block count or 'all'`);
  return measureModel(
    {
      dir,
      manifest,
      repeats,
      genRepeats: Number(values['gen-repeats']),
      genLength,
      cacheLengths: quick ? [256] : [256, 1024],
      blockRows: [1, 4, 8, 16],
      promptRows: 352,
      images: await benchImages(),
      schedules: values.schedules!.split(',') as ('ours' | 'reference')[],
      recomputeBlocks,
    },
    log,
  );
}

/** Child: every weight-matmul kernel on a stack of layers with the preset's widths, timed interleaved. */
async function childKernels(preset: Preset): Promise<KernelProbe> {
  const dir = path.join(root, 'kernels');
  fs.mkdirSync(dir, { recursive: true });
  const t = syntheticConfig(preset).text;
  const widths = { hidden: t.hiddenSize, intermediate: t.intermediateSize, qkv: t.hiddenSize + 2 * t.numKvHeads * t.headDim };
  const layers = 4;
  const threads = defaultThreads();
  const sessions = new Map();
  for (const kernel of KERNELS) {
    const file = path.join(dir, `${preset}-${kernel}-${layers}.onnx`);
    if (!fs.existsSync(`${file}.done`)) {
      log(`  kernels: writing the ${kernel} stack (once)`);
      writeLayerStack(file, widths, layers, kernel, 3);
      fs.writeFileSync(`${file}.done`, '');
    }
    sessions.set(kernel, await sessionFor(file, threads));
  }
  log('  kernels: timing 1, 8, 16, 256 rows');
  const timings = await timeKernels(sessions, widths.hidden, [1, 8, 16, 256], quick ? 3 : 7);
  for (const s of sessions.values()) await s.release();
  log('  kernels: error against float64');
  const errors = await kernelErrors(dir, KERNELS, t.intermediateSize, t.hiddenSize, 8, threads);
  const weights = layers * widths.hidden * (widths.qkv + widths.hidden + 3 * widths.intermediate);
  return { preset, layers, weights, bandwidthGbps: await measureBandwidth(threads), timings, errors };
}

/** Runs this script as a child with `--child <kind>:<preset>:<dtype>`; returns its JSON. */
type ChildKind = 'convert' | 'measure' | 'kernels' | 'vision' | 'agreement';

/** Child: the vision tower's kernels and storage formats at the 3B tower widths (scripts/bench/vision-kernels.ts). */
async function childVision(): Promise<VisionProbe> {
  return probeVision(path.join(root, 'vision-kernels'), defaultThreads(), quick ? 2 : 5, log);
}

/** Child: the answer-agreement frontier on the trained proxy's dev set. */
async function childAgreement(): Promise<AgreementReport> {
  return measureAgreement({ proxy: path.resolve(values.proxy!), dir: path.join(root, 'proxy'), thresholds: [0.5, 0.7, 0.85, 0.9, 0.95] }, log);
}

function runChild(kind: ChildKind, preset: Preset, dtype: WeightDtype): unknown {
  const out = path.join(os.tmpdir(), `dvl-bench-${process.pid}-${kind}-${preset}-${dtype}.json`);
  const args = ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', `${kind}:${preset}:${dtype}`, '--out', out, '--dir', root];
  if (quick) args.push('--quick');
  args.push('--repeats', values.repeats!, '--gen-repeats', values['gen-repeats']!, '--schedules', values.schedules!);
  args.push('--recompute-blocks', values['recompute-blocks']!);
  const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`bench child ${kind} ${preset} ${dtype} failed (exit ${r.status})`);
  const value = JSON.parse(fs.readFileSync(out, 'utf8'));
  fs.rmSync(out, { force: true });
  return value;
}

async function main(): Promise<void> {
  if (values.child) {
    const [kind, preset, dtype] = values.child.split(':') as [ChildKind, Preset, WeightDtype];
    const result =
      kind === 'convert' ? await childConvert(preset, dtype)
      : kind === 'kernels' ? await childKernels(preset)
      : kind === 'vision' ? await childVision()
      : kind === 'agreement' ? await childAgreement()
      : await childMeasure(preset, dtype);
    fs.writeFileSync(values.out!, JSON.stringify(result));
    return;
  }
  const started = Date.now();
  const presets = values.presets === 'none' ? [] : ((values.presets ?? (values.full ? '3b,7b' : '3b')).split(',') as Preset[]);
  for (const p of presets) if (p !== '3b' && p !== '7b') throw new Error(`--presets: unknown preset '${p}' (3b, 7b, none)`);
  const dtypes = values.dtypes!.split(',') as WeightDtype[];
  log(`load average ${os.loadavg().map((v) => v.toFixed(2)).join(' ')} (other jobs on this machine make every number noisy)`);
  const entries: BenchEntry[] = [];
  const probes: KernelProbe[] = [];
  for (const preset of presets) {
    if (!values['skip-kernels']) {
      log(`${preset}: kernel table`);
      probes.push(runChild('kernels', preset, 'int4') as KernelProbe);
    }
    const checkpoint = checkpointDir(preset);
    if (!fs.existsSync(path.join(checkpoint, 'config.json'))) {
      log(`writing the synthetic ${preset} checkpoint to ${checkpoint} (once)`);
      writeSyntheticCheckpoint(checkpoint, preset, 1);
    }
    for (const dtype of dtypes) {
      log(`${preset} ${dtype}: conversion`);
      const conversion = runChild('convert', preset, dtype) as BenchEntry['conversion'];
      log(`${preset} ${dtype}: measuring`);
      const measurement = runChild('measure', preset, dtype) as ModelMeasurement;
      entries.push({ preset, dtype, conversion, measurement });
    }
  }
  let vision: VisionProbe | undefined;
  if (!values['skip-vision']) {
    log('vision tower kernels');
    vision = runChild('vision', '3b', 'int8') as VisionProbe;
  }
  let agreement: AgreementReport | undefined;
  if (!values['skip-agreement']) {
    if (fs.existsSync(path.join(path.resolve(values.proxy!), 'model.safetensors'))) {
      log('answer agreement on the trained proxy');
      agreement = runChild('agreement', '3b', 'fp32') as AgreementReport;
    } else {
      log(`no proxy checkpoint at ${path.resolve(values.proxy!)}: no agreement table (--proxy DIR)`);
    }
  }
  const date = new Date().toISOString();
  const file = path.join(root, `results-${date.slice(0, 19).replace(/:/g, '-')}.json`);
  fs.writeFileSync(file, `${JSON.stringify({ date, seconds: (Date.now() - started) / 1000, entries, probes, vision, agreement }, null, 2)}\n`);
  console.log(renderMarkdown(entries, probes));
  if (vision) console.log(`\n${renderVision(vision)}`);
  if (agreement) console.log(`\n${agreementMarkdown(agreement)}`);
  log(`\nwrote ${file} (${((Date.now() - started) / 60000).toFixed(1)} min)`);
}

await main();
