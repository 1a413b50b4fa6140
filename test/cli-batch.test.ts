/**
 * Batch answering through the real binary: `dvl ask --each` and `dvl batch` (JSONL on stdin) with a corrupt
 * image in the middle: one result line per request in input order, the bad one carrying its error, the
 * others the same answers as single `ask --json` runs, and exit code 2 at the end.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliResult, DVL_BIN, REPO_ROOT, runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-cli-batch-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home') };
const OPTS = ['--model', ckpt, '--dtype', 'fp32', '--gen-length', '16', '--steps', '4', '--threads', '1', '--min-pixels', '784', '--max-pixels', '3136', '-q'];
const GOOD_A = path.resolve('fixtures/images/chelsea.png');
const BAD = path.join(work, 'corrupt.jpg');
let single: { text: string; tokens: number[] };
/** The two batch runs, started together once the model is converted (one each per core). */
let eachRun: Promise<CliResult>;
let batchRun: Promise<CliResult>;

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 });
  fs.writeFileSync(BAD, Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4, 5]));
  const run = runDvl(['ask', ...OPTS, '--json', GOOD_A, 'Describe this.'], { env });
  expect(run.status, run.stderr).toBe(0);
  single = JSON.parse(run.stdout);
  eachRun = runDvlAsync(['ask', ...OPTS, '--each', 'Describe this.', GOOD_A, BAD, GOOD_A]);
  const input = [GOOD_A, BAD, GOOD_A].map((image) => JSON.stringify({ image, prompt: 'Describe this.' })).join('\n');
  batchRun = runDvlAsync(['batch', ...OPTS], `${input}\n`);
}, 120_000);

/** Like runDvl, without blocking the test process, so that two runs can overlap. */
function runDvlAsync(args: string[], input = ''): Promise<CliResult> {
  const child = spawn(process.execPath, [DVL_BIN, ...args], { cwd: REPO_ROOT, env: { ...process.env, NO_COLOR: '1', ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  child.stdin.end(input);
  return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })));
}
afterAll(async () => {
  await Promise.all([eachRun, batchRun]); // a background run may still be using the model (a filtered test run)
  fs.rmSync(work, { recursive: true, force: true });
});

function check(stdout: string, status: number | null, prompt: string) {
  expect(status).toBe(2);
  const lines = stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(lines.map((l) => l.index)).toEqual([0, 1, 2]);
  expect(lines[1].error).toMatchObject({ kind: 'input' });
  expect(String((lines[1].error as { message: string }).message)).toMatch(/corrupt\.jpg/);
  for (const i of [0, 2]) {
    expect(lines[i].prompt).toBe(prompt);
    expect(lines[i].text).toBe(single.text);
    expect(lines[i].tokens).toEqual(single.tokens);
  }
}

describe('batch', () => {
  it('ask --each: one line per image in order, going past a corrupt image, exit 2', async () => {
    const run = await eachRun;
    check(run.stdout, run.status, 'Describe this.');
    expect(run.stderr).toMatch(/^dvl: 1 of 3 requests failed/m);
  });

  it('dvl batch reads JSONL requests from stdin', async () => {
    const run = await batchRun;
    check(run.stdout, run.status, 'Describe this.');
    expect(run.stderr).toMatch(/^dvl: 1 of 3 requests failed/m);
  });
});
