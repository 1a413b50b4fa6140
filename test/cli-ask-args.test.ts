/**
 * `dvl ask` arguments a new user gets wrong, through the real binary: the prompt forgotten or put first,
 * --each with an empty prompt or with --jsonl, a single pixel bound given, and what --verbose reports.
 * Mistakes seen without the model must be reported before any conversion: those runs use an empty DVL_HOME
 * that must stay empty.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliResult, runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-cli-ask-args-'));
const ckpt = path.join(work, 'tiny');
const emptyHome = path.join(work, 'empty-home');
const home = path.join(work, 'home');
const IMAGE = path.resolve('fixtures/images/chelsea.png'); // 451 x 300
const BASE = ['ask', '--model', ckpt, '--dtype', 'fp32', '--gen-length', '8', '--steps', '4', '--threads', '1'];

beforeAll(() => writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 }));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** A run that must fail before the model: one `dvl:` line, nothing on stdout, nothing converted. */
function expectEarlyFailure(run: CliResult, exitCode: number, pattern: RegExp): void {
  expect(run.stderr).toMatch(/^dvl: [^\n]+\n$/);
  expect(run.stderr).toMatch(pattern);
  expect(run.stdout).toBe('');
  expect(run.status).toBe(exitCode);
  expect(fs.existsSync(path.join(emptyHome, 'models'))).toBe(false);
}

const early = (args: string[]) => runDvl([...BASE, ...args], { env: { DVL_HOME: emptyHome } });

describe('the prompt forgotten or in the wrong place', () => {
  it('an image file as the last argument is not taken as the prompt: missing the prompt, exit 1', () => {
    expectEarlyFailure(early([IMAGE]), 1, /missing the prompt: the last argument .*chelsea\.png is an image file; give the prompt after the images/);
    expectEarlyFailure(early([IMAGE, IMAGE]), 1, /missing the prompt: the last argument .*chelsea\.png is an image file/);
  });

  it('the prompt first: "image not found" says where the prompt goes', () => {
    expectEarlyFailure(early(['Hi', IMAGE]), 2, /^dvl: image not found: Hi \(the prompt goes last: dvl ask \[image\.\.\.\] <prompt>\)$/m);
  });

  it('no hint for a missing file that looks like a path', () => {
    expectEarlyFailure(early(['nope.jpg', IMAGE]), 2, /^dvl: image not found: nope\.jpg$/m);
    expectEarlyFailure(early([path.join(work, 'nope'), IMAGE]), 2, /^dvl: image not found: \S+nope$/m);
  });
});

describe('--each', () => {
  it('an empty --each prompt is rejected like an empty prompt (exit 2)', () => {
    expectEarlyFailure(early(['--each', '', IMAGE]), 2, /the --each prompt is empty/);
    expectEarlyFailure(early(['--each', '   ', IMAGE]), 2, /the --each prompt is empty/);
  });

  it('--each with --jsonl is a usage error (exit 1), like --each with --json', () => {
    expectEarlyFailure(early(['--each', 'Describe this.', '--jsonl', IMAGE]), 1, /--each writes one result line per image.*drop --jsonl/);
  });
});

describe('with the model', () => {
  const ask = (args: string[]) => runDvl([...BASE, ...args], { env: { DVL_HOME: home } });
  const json = (run: CliResult) => {
    expect(run.status, run.stderr).toBe(0);
    return JSON.parse(run.stdout) as { images: { resized: { width: number; height: number } }[] };
  };
  const area = (out: ReturnType<typeof json>) => out.images[0].resized.width * out.images[0].resized.height;

  beforeAll(() => {
    const run = ask(['-q', 'Hi']); // converts the model once
    expect(run.status, run.stderr).toBe(0);
  }, 120_000);

  it('--max-pixels alone lowers the default minimum to fit (said with --verbose)', () => {
    const run = ask(['--verbose', '--json', '--max-pixels', '100000', IMAGE, 'What is this?']);
    expect(run.stderr).toMatch(/^dvl: --min-pixels lowered to 100000 to fit --max-pixels$/m);
    expect(run.stderr).toMatch(/^dvl: pixel budget 100000\.\.100000 \(--min-pixels \/ --max-pixels\)$/m);
    const out = json(run);
    expect(area(out)).toBeLessThanOrEqual(100_000);
    // Without --verbose nothing is said.
    const quiet = ask(['--json', '--max-pixels', '100000', IMAGE, 'What is this?']);
    expect(quiet.stderr).toBe('');
    expect(json(quiet).images).toEqual(out.images);
  });

  it('--min-pixels alone raises the default maximum to fit', () => {
    const run = ask(['--verbose', '--json', '--min-pixels', '300000', IMAGE, 'What is this?']);
    expect(run.stderr).toMatch(/^dvl: --max-pixels raised to 300000 to fit --min-pixels$/m);
    expect(area(json(run))).toBeGreaterThanOrEqual(300_000);
  });

  it('both bounds given and in conflict are still an error', () => {
    const run = ask(['--min-pixels', '200704', '--max-pixels', '100352', 'hi']);
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/--min-pixels \(200704\) is larger than --max-pixels \(100352\)/);
  });

  it('--verbose reports the pixel budget only when there are images', () => {
    const textOnly = ask(['--verbose', 'Hi']);
    expect(textOnly.status, textOnly.stderr).toBe(0);
    expect(textOnly.stderr).toMatch(/^dvl: load \d+ ms, preprocess/m);
    expect(textOnly.stderr).not.toMatch(/pixel budget/);
    const withImage = ask(['--verbose', IMAGE, 'Hi']);
    expect(withImage.status, withImage.stderr).toBe(0);
    expect(withImage.stderr).toMatch(/^dvl: pixel budget 147456\.\.262144 \(DiffusionVL's training budget; the model's config\.json sets none\)$/m);
  });

  it('a lone word that looks like an image path but is no file is a missing image, not a prompt (exit 2)', () => {
    const run = ask(['-q', 'what.png']);
    expect(run.status).toBe(2);
    expect(run.stderr).toBe('dvl: no such image: what.png (the prompt goes last: dvl ask [image...] <prompt>)\n');
  });
});
