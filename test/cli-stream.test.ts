/**
 * `dvl ask` streaming through the real binary on a tiny converted model: pipes (stdout holds only the
 * answer, --jsonl lines parse and arrive while the process still runs, NO_COLOR), Ctrl-C (exit 130, no
 * partial model files), and the live view through a pseudo-terminal (tmux).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliResult, DVL_BIN, REPO_ROOT, runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const CONFIG = tinyConfig({ text: { tieWordEmbeddings: false } });
const IMAGE = path.resolve('fixtures/images/chelsea.png');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-cli-stream-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home') };
// 3 blocks of 8 steps: enough denoising steps for the live view to be caught on screen, few enough to be quick.
const BASE = ['ask', '--model', ckpt, '--dtype', 'fp32', '--gen-length', '24', '--steps', '8', '--threads', '1', '--min-pixels', '784', '--max-pixels', '3136'];
let reference: { text: string; tokens: number[] };
/** The --verbose run, started once the model is converted and left running beside the next tests (2 cores). */
let verboseRun: Promise<CliResult>;

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: CONFIG, seed: 21 });
  const run = runDvl([...BASE, '-q', '--json', IMAGE, 'What is this?'], { env });
  expect(run.status, run.stderr).toBe(0);
  reference = JSON.parse(run.stdout);
  verboseRun = runDvlAsync([...BASE, '--verbose', IMAGE, 'What is this?'], { ...env, NO_COLOR: '1', FORCE_COLOR: '1' });
}, 120_000);

/** Like runDvl, without blocking the test process. */
function runDvlAsync(args: string[], extraEnv: Record<string, string>): Promise<CliResult> {
  const child = spawn(process.execPath, [DVL_BIN, ...args], { cwd: REPO_ROOT, env: { ...process.env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })));
}
afterAll(async () => {
  await Promise.all([verboseRun]); // a background run may still be using the model (a filtered test run)
  fs.rmSync(work, { recursive: true, force: true });
});

describe('dvl ask through pipes', () => {
  it('--jsonl: every line parses, events arrive before the process ends, the final object has text, tokens, stats', async () => {
    const child = spawn(process.execPath, [DVL_BIN, ...BASE, '-q', '--jsonl', IMAGE, 'What is this?'], { cwd: REPO_ROOT, env: { ...process.env, ...env } });
    const arrivals: { line: string; at: number }[] = [];
    let buffer = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        arrivals.push({ line: buffer.slice(0, nl), at: performance.now() });
        buffer = buffer.slice(nl + 1);
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    const endedAt = performance.now();
    expect(code).toBe(0);
    expect(buffer).toBe('');
    const lines = arrivals.map((a) => JSON.parse(a.line) as Record<string, unknown>);
    const types = lines.map((l) => l.type);
    expect(types.slice(0, 4)).toEqual(['stage', 'stage', 'stage', 'stage']);
    expect(types).toContain('unmask');
    expect(types.at(-2)).toBe('finished');
    expect(types.at(-1)).toBe('result');
    const result = lines.at(-1)!;
    expect(result.text).toBe(reference.text);
    expect(result.tokens).toEqual(reference.tokens);
    expect(result.stats).toMatchObject({ generated_tokens: reference.tokens.length });
    // Committed block texts add up to the answer.
    expect(lines.filter((l) => l.type === 'block-end' || l.type === 'finished').map((l) => l.text).join('')).toBe(reference.text);
    // Streaming: the first block-end reached us well before the process ended (not all at exit).
    const firstBlock = arrivals[types.indexOf('block-end')].at;
    expect(endedAt - firstBlock).toBeGreaterThan(20);
  });

  it('stdout holds only the answer text; --verbose details go to stderr, without colors under NO_COLOR', async () => {
    const run = await verboseRun;
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toBe(`${reference.text}\n`);
    expect(run.stderr).toMatch(/^dvl: load \d+ ms, preprocess \d+ ms, vision \d+ ms, prefill \d+ ms, decode \d+ ms$/m);
    expect(run.stderr).toMatch(/^dvl: \d+ prompt tokens, \d+ generated, \d+ NFE, [\d.]+ tokens\/NFE, [\d.]+ tokens\/s$/m);
    expect(run.stderr).toMatch(/^dvl: peak RSS \d+ MB$/m);
    expect(run.stdout + run.stderr).not.toMatch(/\x1b\[/);
  });

  it('Ctrl-C (SIGINT) while converting exits 130 and leaves no partial model files', async () => {
    const home = path.join(work, 'home-sigint');
    const child = spawn(process.execPath, [DVL_BIN, ...BASE, '-q', 'What is this?'], { cwd: REPO_ROOT, env: { ...process.env, DVL_HOME: home } });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    // Interrupt as soon as the store directory appears (the conversion has started).
    const started = performance.now();
    while (!fs.existsSync(home) && performance.now() - started < 20_000) await new Promise((r) => setTimeout(r, 20));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(130);
    expect(stderr).toMatch(/interrupted/);
    const files = fs.readdirSync(home, { recursive: true }).map(String);
    expect(files.filter((f) => f.endsWith('manifest.json') || f.includes('staging') || f.endsWith('.onnx'))).toEqual([]);
  });

  it('Ctrl-C during generation exits 130 promptly with nothing but whole lines on stdout', async () => {
    const child = spawn(process.execPath, [DVL_BIN, ...BASE.map((a) => (a === '24' ? '4096' : a)), '-q', '--jsonl', 'What is this?'], { cwd: REPO_ROOT, env: { ...process.env, ...env } });
    let stdout = '';
    let killedAt = 0;
    child.stdout.on('data', (d) => {
      stdout += d;
      if (!killedAt && stdout.includes('"unmask"')) {
        killedAt = performance.now();
        child.kill('SIGINT');
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(130);
    expect(performance.now() - killedAt).toBeLessThan(3000);
    expect(stdout.endsWith('\n')).toBe(true);
    for (const line of stdout.trimEnd().split('\n')) expect(() => JSON.parse(line)).not.toThrow();
    expect(stdout).not.toContain('"result"');
  });
});

const hasTmux = spawnSync('tmux', ['-V']).status === 0;

// CI installs tmux (.ci/run), so there a missing tmux fails instead of skipping.
describe.skipIf(!hasTmux && !process.env.CI)('dvl ask on a terminal (tmux)', () => {
  // A tmux server (socket) per window: restarting a server on the same socket can race its shutdown.
  const sockets: string[] = [];
  let socket = '';
  const tmux = (...args: string[]) => spawnSync('tmux', ['-S', socket, ...args], { encoding: 'utf8' });
  afterAll(() => {
    for (const s of sockets) spawnSync('tmux', ['-S', s, 'kill-server']);
  });

  /** Runs dvl in a fresh 60x20 tmux window; returns the screen snapshots taken while it ran and the last one. */
  async function onTerminal(args: string[], extraEnv: Record<string, string> = {}) {
    const done = path.join(work, `done-${Date.now()}`);
    const envs = Object.entries({ ...env, ...extraEnv }).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ');
    const cmd = `cd ${JSON.stringify(REPO_ROOT)} && env ${envs} ${JSON.stringify(process.execPath)} ${JSON.stringify(DVL_BIN)} ${args.map((a) => JSON.stringify(a)).join(' ')}; echo "exit=$?" > ${done}; sleep 30`;
    if (socket) tmux('kill-server');
    socket = path.join(work, `tmux-${sockets.length}.sock`);
    sockets.push(socket);
    expect(tmux('new-session', '-d', '-x', '60', '-y', '20', 'sh', '-c', cmd).status).toBe(0);
    const snapshots: string[] = [];
    const t0 = performance.now();
    while (!fs.existsSync(done) && performance.now() - t0 < 60_000) {
      snapshots.push(tmux('capture-pane', '-p', '-e').stdout);
      await new Promise((r) => setTimeout(r, 15));
    }
    const last = tmux('capture-pane', '-p', '-e').stdout;
    return { snapshots, last, exit: fs.readFileSync(done, 'utf8').trim() };
  }

  it('shows the block being denoised live (dim masked slots) and ends with exactly the answer', async () => {
    const { snapshots, last, exit } = await onTerminal([...BASE, IMAGE, 'What is this?']);
    expect(exit).toBe('exit=0');
    // Some snapshot showed masked slots (dim ░) of a block being filled.
    expect(snapshots.some((s) => /\x1b\[2m░/.test(s))).toBe(true);
    const plain = last.replace(/\x1b\[[0-9;]*m/g, '');
    expect(plain).not.toContain('░');
    // The answer as printed (the same run as the reference's), wrapped at 60 columns by the terminal.
    expect(plain.replace(/\n/g, '').trimEnd()).toContain(reference.text.replace(/\n/g, '').trimEnd().slice(0, 100));
  });

  it('--no-live and NO_COLOR: no masked slots and no colors on the terminal', async () => {
    const { snapshots, exit } = await onTerminal([...BASE, '--no-live', 'What is this?'], { NO_COLOR: '1' });
    expect(exit).toBe('exit=0');
    expect(snapshots.some((s) => s.includes('░'))).toBe(false);
    expect(snapshots.some((s) => /\x1b\[(2|3\d)m/.test(s))).toBe(false);
  });
});
