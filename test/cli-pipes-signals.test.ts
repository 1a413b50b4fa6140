/**
 * How the real binary ends when its reader goes away (`| head`), when it is interrupted early or mid-stream,
 * on a TERM=dumb terminal, and what --version and --jsonl report: the user-facing edges of a run.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DVL_BIN, REPO_ROOT, runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-pipes-'));
const ckpt = path.join(work, 'tiny');
const env = { ...process.env, NO_COLOR: '1', DVL_HOME: path.join(work, 'home') };
const MODEL = ['--model', ckpt, '--dtype', 'fp32', '--threads', '1'];
const dvl = `${JSON.stringify(process.execPath)} ${JSON.stringify(DVL_BIN)}`;

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 });
  const pull = runDvl(['pull', ckpt, '--dtype', 'fp32', '-q'], { env });
  expect(pull.status, pull.stderr).toBe(0);
}, 120_000);
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** Runs a bash pipeline; prints dvl's exit status (the first command's) on the last line of stdout. */
function pipeline(script: string): { stdout: string; stderr: string; dvlStatus: number } {
  const r = spawnSync('bash', ['-c', `${script}; echo "\nstatus=\${PIPESTATUS[0]}"`], { cwd: REPO_ROOT, env, encoding: 'utf8', timeout: 120_000 });
  const lines = r.stdout.trimEnd().split('\n');
  const status = /^status=(\d+)$/.exec(lines.pop() ?? '');
  expect(status, r.stdout + r.stderr).not.toBeNull();
  return { stdout: lines.join('\n').trimEnd(), stderr: r.stderr, dvlStatus: Number(status![1]) };
}

describe('a reader that goes away (broken pipe)', () => {
  it('dvl --help | true: no stack trace, exit 141', () => {
    const r = pipeline(`${dvl} --help | true`);
    expect(r.stderr).toBe('');
    expect(r.dvlStatus).toBe(141);
  });

  it('dvl ask | head -c 5 and dvl ask --jsonl | head -1: quiet, exit 141', () => {
    const plain = pipeline(`${dvl} ask ${MODEL.join(' ')} -n 64 "Tell me a story." | head -c 5`);
    expect(plain.stderr).toBe('');
    expect(plain.dvlStatus).toBe(141);
    const jsonl = pipeline(`${dvl} ask ${MODEL.join(' ')} -n 64 --jsonl "Tell me a story." | head -1`);
    expect(jsonl.stderr).toBe('');
    expect(jsonl.dvlStatus).toBe(141);
    expect(JSON.parse(jsonl.stdout).type).toBe('stage');
  });

  it('dvl batch | head -1: one whole answer line, no native abort (was exit 134)', () => {
    const requests = ['{"prompt":"One."}', '{"prompt":"Two."}', '{"prompt":"Three."}'].join('\\n');
    const r = pipeline(`printf '${requests}\\n' | ${dvl} batch ${MODEL.join(' ')} -n 16 | head -1`);
    // PIPESTATUS[0] is printf's here; dvl's is the second.
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout).index).toBe(0);
    const status = spawnSync('bash', ['-c', `printf '${requests}\\n' | ${dvl} batch ${MODEL.join(' ')} -n 16 | head -1 >/dev/null; echo \${PIPESTATUS[1]}`], { cwd: REPO_ROOT, env, encoding: 'utf8' });
    expect(status.stderr).toBe('');
    expect(status.stdout.trim()).toBe('141');
  });
});

describe('signals', () => {
  it('Ctrl-C while the CLI is still starting: a dvl: line and exit 130, not a silent kill', async () => {
    // A prompt read from stdin, which stays open: the command cannot finish before the signal comes. A preload
    // says when JavaScript runs (a signal before that is Node's own to handle); the signal follows shortly
    // after, while the CLI is still loading.
    const preload = `data:text/javascript,${encodeURIComponent('process.stderr.write("js-started\\n")')}`;
    const child = spawn(process.execPath, ['--import', preload, DVL_BIN, 'ask', ...MODEL, '-'], { cwd: REPO_ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    await new Promise<void>((resolve, reject) => {
      const late = setTimeout(() => reject(new Error(`no JavaScript ran within 20 s: ${stderr}`)), 20_000);
      child.stderr.on('data', (d) => {
        stderr += d;
        if (stderr.includes('js-started\n')) {
          clearTimeout(late);
          resolve();
        }
      });
    });
    await new Promise((r) => setTimeout(r, 100));
    child.kill('SIGINT');
    // Stopping must not wait for stdin: should it, the end of stdin (an empty prompt, exit 2) comes first and
    // the test fails instead of hanging; a process that ignores both is killed.
    const endStdin = setTimeout(() => child.stdin.end(), 8000);
    const kill = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])));
    clearTimeout(endStdin);
    clearTimeout(kill);
    expect({ code, signal }).toEqual({ code: 130, signal: null });
    expect(stderr).toMatch(/^dvl: interrupted/m);
  });

  it('--jsonl interrupted mid-answer ends with {"type":"interrupted"}', async () => {
    const child = spawn(process.execPath, [DVL_BIN, 'ask', ...MODEL, '-q', '-n', '512', '--jsonl', 'Tell me a story.'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let sent = false;
    child.stdout.on('data', (d) => {
      stdout += d;
      if (!sent && stdout.includes('"unmask"')) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    expect(code).toBe(130);
    const lines = stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { type: string; ms?: number });
    expect(lines.at(-1)?.type).toBe('interrupted');
    expect(typeof lines.at(-1)?.ms).toBe('number');
    expect(lines.some((l) => l.type === 'result')).toBe(false);
  });
});

describe('what a run reports', () => {
  it('--jsonl has no unmask events without filled output slots', () => {
    // The prompt ends inside a block, so the first block's early steps may fill only prompt-side slots.
    const r = runDvl(['ask', ...MODEL, '-q', '-n', '16', '--jsonl', 'Hello there'], { env });
    expect(r.status, r.stderr).toBe(0);
    const events = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { type: string; indices?: number[]; ids?: number[] });
    const unmasks = events.filter((e) => e.type === 'unmask');
    expect(unmasks.length).toBeGreaterThan(0);
    for (const e of unmasks) expect(e.indices!.length).toBeGreaterThan(0);
    // Every one of the 16 output slots is still reported exactly once.
    expect(unmasks.flatMap((e) => e.indices).sort((a, b) => a! - b!)).toEqual([...Array(16).keys()]);
  });

  it('--version names dvl, onnxruntime and the execution providers', () => {
    const r = runDvl(['--version']);
    expect(r.status).toBe(0);
    const ortVersion = (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version;
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(`dvl ${pkg.version}`);
    expect(lines[1]).toContain(`onnxruntime-node ${ortVersion}`);
    expect(lines[2]).toMatch(/^execution providers: cpu\b/);
  });
});

const hasTmux = spawnSync('tmux', ['-V']).status === 0;
describe.skipIf(!hasTmux && !process.env.CI)('TERM=dumb on a terminal (tmux)', () => {
  it('gets plain text: no cursor movement, no colors, no spinner', async () => {
    const socket = path.join(work, 'tmux.sock');
    const tmux = (...args: string[]) => spawnSync('tmux', ['-S', socket, ...args], { encoding: 'utf8' });
    const raw = path.join(work, 'raw.out');
    const go = path.join(work, 'go');
    const done = path.join(work, 'done');
    const envs = `TERM=dumb DVL_HOME=${JSON.stringify(env.DVL_HOME)}`;
    // Waits for `go` so the raw output is recorded from the first byte.
    const cmd = `while [ ! -f ${go} ]; do sleep 0.05; done; env -u NO_COLOR -u CI ${envs} ${dvl} ask ${MODEL.join(' ')} -n 24 "Hello there"; echo "exit=$?" > ${done}; sleep 30`;
    expect(tmux('new-session', '-d', '-x', '60', '-y', '20', 'sh', '-c', cmd).status).toBe(0);
    try {
      expect(tmux('pipe-pane', '-o', `cat >> ${raw}`).status).toBe(0);
      fs.writeFileSync(go, '');
      const t0 = performance.now();
      while (!fs.existsSync(done) && performance.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 50));
      expect(fs.readFileSync(done, 'utf8').trim()).toBe('exit=0');
    } finally {
      tmux('kill-server');
    }
    const answer = runDvl(['ask', ...MODEL, '-q', '-n', '24', '--json', 'Hello there'], { env });
    const text = (JSON.parse(answer.stdout) as { text: string }).text;
    const bytes = fs.readFileSync(raw, 'utf8');
    expect(bytes).not.toContain('\x1b');
    expect(bytes.replace(/\r\n/g, '\n')).toContain(text.trim().slice(0, 20));
  });
});
