/**
 * Exit codes and error messages of the real binary: 1 usage, 2 input, 3 model. Every failure must print exactly
 * one line `dvl: <what is wrong>` on stderr (no stack trace) and nothing on stdout. Mistakes that can be seen
 * without the model must be reported before any conversion starts: those runs use an unconverted checkpoint
 * and an empty DVL_HOME, which must still be empty afterwards.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliResult, runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeSafetensors, writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-cli-errors-'));
const ckpt = path.join(work, 'tiny');
/** Stays empty: nothing in this file may convert into it. */
const emptyHome = path.join(work, 'empty-home');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 31, shards: 2 });
});

/** One line `dvl: ...` matching `pattern`, no stack trace, empty stdout, the exit code. */
function expectFailure(run: CliResult, exitCode: number, pattern: RegExp): void {
  expect(run.stderr).toMatch(/^dvl: [^\n]+\n$/);
  expect(run.stderr).toMatch(pattern);
  expect(run.stderr).not.toMatch(/\bat .+:\d+:\d+/);
  expect(run.stdout).toBe('');
  expect(run.status).toBe(exitCode);
}

const ask = (args: string[], options: { input?: string } = {}) =>
  runDvl(['ask', '--model', ckpt, '--dtype', 'fp32', '--gen-length', '8', ...args], { env: { DVL_HOME: emptyHome }, input: options.input });

describe('exit code 1: usage', () => {
  const cases: [string, string[], RegExp][] = [
    ['--steps 0', ['--steps', '0', 'hi'], /--steps must be an integer from 1 to 1024, got '0'/],
    ['--steps abc', ['--steps', 'abc', 'hi'], /--steps must be an integer from 1 to 1024, got 'abc'/],
    ['--gen-length -1', ['--gen-length', '-1', 'hi'], /--gen-length must be an integer from 1 to \d+, got '-1'/],
    ['--top-p 0', ['--top-p', '0', 'hi'], /--top-p must be a number > 0 and <= 1, got '0'/],
    ['--top-p 1.5', ['--top-p', '1.5', 'hi'], /--top-p must be a number > 0 and <= 1, got '1.5'/],
    ['--temperature -1', ['--temperature', '-1', 'hi'], /--temperature must be a number >= 0 .*got '-1'/],
    ['--threshold 2', ['--threshold', '2', 'hi'], /--threshold must be a number >= 0 and <= 1, got '2'/],
    ['--remasking foo', ['--remasking', 'foo', 'hi'], /--remasking must be one of low_confidence_static, low_confidence_dynamic, got 'foo'/],
    ['--dtype int3', ['--dtype', 'int3', 'hi'], /--dtype must be one of auto, fp32, fp16, int8, int4, int4-all, got 'int3'/],
    ['an unknown option', ['--bogus', 'hi'], /unknown option '--bogus'/],
    ['no prompt', [], /missing the prompt/],
    ['--min-pixels > --max-pixels', ['--min-pixels', '200704', '--max-pixels', '100352', 'hi'], /--min-pixels \(200704\) is larger than --max-pixels \(100352\)/],
  ];
  for (const [name, args, pattern] of cases) {
    it(`ask ${name}`, () => expectFailure(ask(args), 1, pattern));
  }

  it('pull without a model', () => {
    expectFailure(runDvl(['pull'], { env: { DVL_HOME: emptyHome } }), 1, /missing required argument 'model'/);
  });
});

describe('exit code 2: input', () => {
  it('a missing image', () => expectFailure(ask([path.join(work, 'nope.jpg'), 'hi']), 2, /image not found: .*nope\.jpg/));
  it('a directory given as an image', () => expectFailure(ask([work, 'hi']), 2, /not an image file: /));
  it('an empty prompt from stdin', () => expectFailure(ask(['-'], { input: '' }), 2, /prompt read from stdin is empty/));

  // Images are decoded before the model is prepared: these run against the unconverted checkpoint and must
  // leave DVL_HOME empty (checked at the end of the file).
  it('random bytes named .jpg', () => {
    const file = path.join(work, 'random.jpg');
    fs.writeFileSync(file, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 251)));
    expectFailure(ask(['-q', file, 'hi']), 2, /cannot decode image .*random\.jpg/);
  });

  it('a truncated PNG', () => {
    const file = path.join(work, 'truncated.png');
    const png = fs.readFileSync(path.resolve('fixtures/images/chelsea.png'));
    fs.writeFileSync(file, png.subarray(0, Math.floor(png.length / 3)));
    expectFailure(ask(['-q', file, 'hi']), 2, /cannot decode image .*truncated\.png/);
  });
});

describe('exit code 3: model', () => {
  it('a directory that is not a checkpoint', () => {
    const dir = path.join(work, 'not-a-checkpoint');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'README.md'), 'hello\n');
    expectFailure(runDvl(['ask', '--model', dir, 'hi'], { env: { DVL_HOME: emptyHome } }), 3, /not-a-checkpoint is not a checkpoint/);
  });

  it('a --model path that does not exist', () => {
    expectFailure(runDvl(['ask', '--model', path.join(work, 'missing'), 'hi'], { env: { DVL_HOME: emptyHome } }), 3, /model '.*missing' is neither a checkpoint directory/);
  });

  it('a checkpoint missing a tensor', () => {
    // A copy of the checkpoint whose second shard (and index) lack one tensor.
    const dir = path.join(work, 'missing-tensor');
    fs.mkdirSync(dir);
    for (const file of fs.readdirSync(ckpt)) fs.copyFileSync(path.join(ckpt, file), path.join(dir, file));
    const shard = 'model-00002-of-00002.safetensors';
    const bytes = fs.readFileSync(path.join(ckpt, shard));
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    const names = Object.keys(header).filter((n) => n !== '__metadata__');
    const dropped = names[names.length - 1];
    writeSafetensors(
      path.join(dir, shard),
      names
        .filter((n) => n !== dropped)
        .map((name) => {
          const { dtype, shape, data_offsets: [start, end] } = header[name];
          return { name, dtype: dtype as 'BF16', shape, fill: (emit: (b: Uint8Array) => void) => emit(bytes.subarray(8 + headerLength + start, 8 + headerLength + end)) };
        }),
    );
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(fs.readFileSync(indexFile, 'utf8')) as { weight_map: Record<string, string> };
    delete index.weight_map[dropped];
    fs.writeFileSync(indexFile, JSON.stringify(index));

    expectFailure(runDvl(['ask', '--model', dir, 'hi'], { env: { DVL_HOME: emptyHome } }), 3, /missing tensor /);
  });

  it('a DVL_HOME that cannot hold converted models', () => {
    const file = path.join(work, 'a-file');
    fs.writeFileSync(file, '');
    expectFailure(runDvl(['pull', ckpt, '--dtype', 'fp32'], { env: { DVL_HOME: path.join(file, 'home') } }), 3, /cannot write converted models to .*a-file\/home.*set DVL_HOME to a writable directory/);
  });

  it('a Hub repo id that is not cached, offline', () => {
    const hubCache = path.join(work, 'empty-hf-cache');
    const env = { DVL_HOME: emptyHome, HF_HUB_OFFLINE: '1', HF_HUB_CACHE: hubCache };
    expectFailure(runDvl(['ask', '--model', 'some-org/some-model', 'hi'], { env }), 3, /some-org\/some-model is not in the Hugging Face cache/);
  });
});

describe('nothing was converted for the failures above', () => {
  it('leaves the empty DVL_HOME without models', () => {
    expect(fs.existsSync(path.join(emptyHome, 'models'))).toBe(false);
  });
});
