/**
 * onnxruntime-node records usage telemetry (a device id and an SQLite event queue under
 * ~/.cache/Microsoft/DeveloperTools/.onnxruntime/) unless ORT_DISABLE_TELEMETRY is set when it initialises; dvl
 * sets it for every onnxruntime it starts. Checked through what lands on disk, with a HOME of the test's own:
 * - a real `dvl ask` (onnxruntime in the inference worker thread) writes nothing under $HOME/.cache/Microsoft;
 * - with a HOME that cannot be written, stderr carries no onnxruntime warning (only `dvl:` lines);
 * - the library loading a model in the main thread (scripts, tests) does not record telemetry either.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-telemetry-'));
const ckpt = path.join(work, 'tiny');
const store = path.join(work, 'store');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** A fresh, empty HOME for one run. */
function freshHome(name: string): string {
  const home = path.join(work, name);
  fs.mkdirSync(home);
  return home;
}

/** The child's environment: its own HOME and store, and no ORT_DISABLE_TELEMETRY of the test runner's. */
function envFor(home: string): NodeJS.ProcessEnv {
  return { HOME: home, DVL_HOME: store, ORT_DISABLE_TELEMETRY: undefined };
}

const askArgs = ['ask', '-m', ckpt, '--dtype', 'fp32', '-n', '8', '--threads', '1', 'Hello'];

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 61 });
  // Converted once here, so the tests below time and check only the run of the model.
  const pull = runDvl(['pull', ckpt, '--dtype', 'fp32', '-q'], { env: envFor(freshHome('pull-home')) });
  expect(pull.status, pull.stderr).toBe(0);
});

describe('onnxruntime telemetry is off', () => {
  it('dvl ask writes nothing under $HOME/.cache/Microsoft', () => {
    const home = freshHome('home');
    const run = runDvl(askArgs, { env: envFor(home) });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.length).toBeGreaterThan(0);
    expect(fs.existsSync(path.join(home, '.cache', 'Microsoft'))).toBe(false);
  });

  it('with a HOME that cannot be written, stderr has no onnxruntime warning', () => {
    // A regular file as HOME: nothing can be created under it, whoever runs the test (root ignores chmod).
    const home = path.join(work, 'home-file');
    fs.writeFileSync(home, '');
    const run = runDvl(askArgs, { env: envFor(home) });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.length).toBeGreaterThan(0);
    expect(run.stderr).not.toMatch(/onnxruntime|telemetry/i);
    for (const line of run.stderr.split('\n').filter((l) => l.length > 0)) expect(line).toMatch(/^dvl: /);
  });

  it('a model loaded in the main thread (the library, without the worker) records nothing either', () => {
    const home = freshHome('home-library');
    const variant = path.join(store, 'models', 'local', fs.readdirSync(path.join(store, 'models', 'local'))[0], 'fp32');
    const script = [
      `import fs from 'node:fs';`,
      `import { loadModel } from ${JSON.stringify(path.join(REPO_ROOT, 'src/runtime/model.ts'))};`,
      `const dir = ${JSON.stringify(variant)};`,
      `const model = await loadModel(dir, JSON.parse(fs.readFileSync(dir + '/manifest.json', 'utf8')), { threads: 1 });`,
      `await model.close();`,
      `console.log('loaded');`,
    ].join('\n');
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '--eval', script], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...envFor(home) },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toBe('loaded\n');
    expect(fs.existsSync(path.join(home, '.cache', 'Microsoft'))).toBe(false);
  });
});
