/**
 * Interrupting `dvl pull` midway (the real binary, killed once its progress shows the conversion under way):
 * - SIGINT / SIGTERM: the CLI cancels the conversion, deletes its staging directory and exits 130 / 143;
 * - SIGKILL: nothing can run, so the staging directory stays behind, but nothing is published, and the next
 *   pull removes it (its pid is dead) and converts normally.
 * In no case does a variant directory appear. The conversion is int4 (the slowest dtype, ~2 s here for the tiny
 * model), and the signal is sent when the vision encoder starts, well before the end.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DVL_BIN, REPO_ROOT, runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-interrupt-'));
const ckpt = path.join(work, 'tiny');
const home = path.join(work, 'home');
const env = { DVL_HOME: home };
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 51, shards: 2 });
});

interface Interrupted {
  status: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  /** Whether the progress line showed up and the signal was sent. */
  sent: boolean;
}

/** Spawns `dvl pull` and sends `signal` as soon as stderr shows `trigger`. */
function pullAndKill(signal: NodeJS.Signals, trigger = /converting vision encoder/): Promise<Interrupted> {
  const child = spawn(process.execPath, [DVL_BIN, 'pull', ckpt, '--dtype', 'int4'], {
    cwd: REPO_ROOT,
    env: { ...process.env, NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let sent = false;
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
    if (!sent && trigger.test(stderr)) {
      sent = true;
      child.kill(signal);
    }
  });
  return new Promise((resolve) => child.on('close', (status, sig) => resolve({ status, signal: sig, stderr, sent })));
}

const modelDir = () => {
  const local = path.join(home, 'models', 'local');
  const keys = fs.readdirSync(local);
  expect(keys).toHaveLength(1);
  return path.join(local, keys[0]);
};

describe('interrupting a conversion', () => {
  for (const [signal, exitCode] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    it(`${signal}: exit ${exitCode}, staging directory removed, nothing published`, async () => {
      const run = await pullAndKill(signal);
      expect(run.sent).toBe(true);
      expect(run.status).toBe(exitCode);
      expect(run.stderr.trimEnd().split('\n').at(-1)).toBe('dvl: interrupted: the conversion was cancelled and nothing was kept');
      expect(run.stderr).not.toMatch(/\bat .+:\d+:\d+/);
      expect(fs.readdirSync(modelDir())).toEqual([]);
    });
  }

  it('SIGKILL: nothing published; the next pull removes the leftover and converts', async () => {
    const run = await pullAndKill('SIGKILL');
    expect(run.sent).toBe(true);
    expect(run.signal).toBe('SIGKILL');
    const left = fs.readdirSync(modelDir());
    expect(left).toHaveLength(1);
    expect(left[0]).toMatch(/^\.staging-int4-\d+-\w+$/);

    const next = runDvl(['pull', ckpt, '--dtype', 'int4', '--quiet'], { env });
    expect(next.status, next.stderr).toBe(0);
    expect(fs.readdirSync(modelDir())).toEqual(['int4']);
    const manifest = JSON.parse(fs.readFileSync(path.join(modelDir(), 'int4', 'manifest.json'), 'utf8')) as { files: { name: string; size: number }[] };
    for (const { name, size } of manifest.files) expect(fs.statSync(path.join(modelDir(), 'int4', name)).size, name).toBe(size);
  });
});
