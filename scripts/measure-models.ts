/**
 * Conversion and `ask` cost on a synthetic checkpoint with the real shapes (random bf16 weights written to disk
 * once and reused). Prints a markdown table. Not a test; slow and disk-hungry (3B: 7.5 GB of checkpoint plus the
 * converted variants: int4 ~3.5 GB, fp32 ~17 GB).
 *
 *   npx tsx scripts/measure-models.ts [--preset 3b|7b] [--dtypes int4,fp32] [--dir .tmp/bench] [--gen-length 32]
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { writeSyntheticCheckpoint } from '../test/helpers/tiny-checkpoint.js';

const { values } = parseArgs({
  options: {
    preset: { type: 'string', default: '3b' },
    dtypes: { type: 'string', default: 'int4,fp32' },
    dir: { type: 'string', default: '.tmp/bench' },
    'gen-length': { type: 'string', default: '32' },
    image: { type: 'string', default: 'fixtures/images/chelsea.png' },
  },
});
const preset = values.preset as '3b' | '7b';
const root = path.resolve(values.dir!);
const checkpoint = path.join(root, `synthetic-${preset}`);
const home = path.join(root, 'home');
const bin = path.resolve('bin/dvl.js');

if (!fs.existsSync(path.join(checkpoint, 'config.json'))) {
  const t0 = Date.now();
  process.stderr.write(`writing synthetic ${preset} checkpoint to ${checkpoint}\n`);
  writeSyntheticCheckpoint(checkpoint, preset, 1);
  process.stderr.write(`  ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
}

/** Runs the real binary under /usr/bin/time for wall time and peak RSS. */
function timed(args: string[]): { seconds: number; peakRssMb: number; stdout: string } {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', process.execPath, bin, ...args], {
    env: { ...process.env, DVL_HOME: home },
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  const lines = r.stderr.trim().split('\n');
  const [seconds, kb] = lines[lines.length - 1].split(' ').map(Number);
  if (r.status !== 0) throw new Error(`dvl ${args.join(' ')} failed:\n${r.stderr}`);
  return { seconds, peakRssMb: kb / 1024, stdout: r.stdout };
}

const rows: string[] = [];
for (const dtype of values.dtypes!.split(',')) {
  const pull = timed(['pull', checkpoint, '--dtype', dtype, '--force', '--quiet']);
  const ask = timed(['ask', '--model', checkpoint, '--dtype', dtype, '--json', '--quiet', '--gen-length', values['gen-length']!, values.image!, 'Describe this image.']);
  const out = JSON.parse(ask.stdout) as { stats: { nfe: number; prompt_tokens: number; image_tokens: number; ms: Record<string, number> } };
  const ms = out.stats.ms;
  const variant = fs.readdirSync(path.join(home, 'models', 'local')).map((d) => path.join(home, 'models', 'local', d, dtype)).find((d) => fs.existsSync(d))!;
  const size = fs.readdirSync(variant).reduce((s, f) => s + fs.statSync(path.join(variant, f)).size, 0);
  rows.push(
    `| ${preset} | ${dtype} | ${pull.seconds.toFixed(0)} s | ${(pull.peakRssMb / 1024).toFixed(2)} GB | ${(size / 1e9).toFixed(2)} GB | ` +
      `${(ms.load / 1000).toFixed(1)} s | ${(ms.preprocess ?? 0).toFixed(0)} ms | ${(ms.vision / 1000).toFixed(1)} s (${out.stats.image_tokens} tok) | ` +
      `${(ms.prefill / 1000).toFixed(1)} s (${out.stats.prompt_tokens} tok) | ${(ms.decode / 1000).toFixed(1)} s / ${out.stats.nfe} NFE = ${(ms.decode / out.stats.nfe).toFixed(0)} ms | ` +
      `${ask.seconds.toFixed(0)} s | ${(ask.peakRssMb / 1024).toFixed(2)} GB |`,
  );
  process.stderr.write(`${rows[rows.length - 1]}\n`);
}
console.log('| model | dtype | convert | convert peak RSS | on disk | load | preprocess | vision | prefill | decode | ask total | ask peak RSS |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const row of rows) console.log(row);
