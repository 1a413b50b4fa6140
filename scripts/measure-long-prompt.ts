/**
 * What a long prompt costs: `dvl ask -n 8` with a text prompt of about --tokens tokens, on the tiny test model and
 * on a synthetic checkpoint with the real 3B shapes (random bf16 weights, written once under --dir and reused),
 * under /usr/bin/time. Prints a markdown table: prompt tokens, prefill time, whole run, peak RSS. Not a test.
 *
 *   npx tsx scripts/measure-long-prompt.ts [--presets tiny,3b] [--tokens 30000] [--dtype int8] [--dir .tmp/bench]
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { tinyConfig } from '../test/helpers/random-weights.js';
import { writeSyntheticCheckpoint, writeTinyCheckpoint } from '../test/helpers/tiny-checkpoint.js';

const { values } = parseArgs({
  options: {
    presets: { type: 'string', default: 'tiny,3b' },
    tokens: { type: 'string', default: '30000' },
    dtype: { type: 'string', default: 'int8' },
    dir: { type: 'string', default: '.tmp/bench' },
  },
});
const root = path.resolve(values.dir!);
const home = path.join(root, 'home');
const bin = path.resolve('bin/dvl.js');
// "hello" and " world" are a token each; the chat template adds about 30.
const words = Number(values.tokens) - 30;
const prompt = Array.from({ length: words }, (_, i) => (i % 2 ? 'world' : 'hello')).join(' ');

function checkpointFor(preset: string): string {
  const dir = path.join(root, preset === 'tiny' ? 'tiny-long' : `synthetic-${preset}`);
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    process.stderr.write(`writing the ${preset} checkpoint to ${dir}\n`);
    if (preset === 'tiny') writeTinyCheckpoint(dir, { config: tinyConfig(), seed: 5 });
    else writeSyntheticCheckpoint(dir, preset as '3b' | '7b', 1);
  }
  return dir;
}

function timed(args: string[], input?: string): { seconds: number; peakRssMb: number; stdout: string } {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', process.execPath, bin, ...args], { env: { ...process.env, DVL_HOME: home }, encoding: 'utf8', input, maxBuffer: 64 << 20 });
  const last = r.stderr.trim().split('\n').at(-1)!;
  if (r.status !== 0) throw new Error(`dvl ${args.join(' ')} failed:\n${r.stderr}`);
  const [seconds, kb] = last.split(' ').map(Number);
  return { seconds, peakRssMb: kb / 1024, stdout: r.stdout };
}

const rows: string[] = [];
for (const preset of values.presets!.split(',')) {
  const ckpt = checkpointFor(preset);
  const dtype = preset === 'tiny' ? 'fp32' : values.dtype!;
  timed(['pull', ckpt, '--dtype', dtype, '--quiet']);
  // A first start builds the pre-packed weights: not what a long prompt costs.
  timed(['ask', '-m', ckpt, '--dtype', dtype, '-n', '8', '--quiet', 'Hi']);
  const run = timed(['ask', '-m', ckpt, '--dtype', dtype, '-n', '8', '--json', '--quiet', '-'], prompt);
  const out = JSON.parse(run.stdout) as { stats: { prompt_tokens: number; nfe: number; ms: Record<string, number> } };
  rows.push(`| ${preset} | ${dtype} | ${out.stats.prompt_tokens} | ${(out.stats.ms.prefill / 1000).toFixed(1)} s | ${(out.stats.ms.decode / 1000).toFixed(1)} s | ${run.seconds.toFixed(0)} s | ${(run.peakRssMb / 1024).toFixed(2)} GB |`);
  process.stderr.write(`${rows.at(-1)}\n`);
}
console.log('| model | dtype | prompt tokens | prefill | decode (8 tokens) | whole run | peak RSS |');
console.log('|---|---|---|---|---|---|---|');
for (const row of rows) console.log(row);
