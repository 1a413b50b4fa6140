/**
 * `dvl batch` through the real binary: requests are answered as they arrive (the first answer is written
 * while stdin is still open), an empty input fails without loading anything, and a request line can set
 * its own generation settings, checked like the flags, with unknown keys and bad values reported in that
 * line's result (which still names the request's images and prompt).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DVL_BIN, REPO_ROOT, runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-cli-batch-stream-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home') };
const OPTS = ['--model', ckpt, '--dtype', 'fp32', '--gen-length', '8', '--steps', '4', '--threads', '1', '--min-pixels', '784', '--max-pixels', '3136', '-q'];
const IMAGE = path.resolve('fixtures/images/chelsea.png');

type Json = Record<string, unknown>;
const lines = (stdout: string) => stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Json);
const askJson = (args: string[]) => {
  const run = runDvl(['ask', ...OPTS, '--json', ...args], { env });
  expect(run.status, run.stderr).toBe(0);
  return JSON.parse(run.stdout) as Json;
};

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 });
  askJson(['Hi']); // converts the model once
}, 120_000);
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('dvl batch reads requests as they arrive', () => {
  it('writes the first answer while stdin is still open', async () => {
    const child = spawn(process.execPath, [DVL_BIN, 'batch', ...OPTS], { cwd: REPO_ROOT, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      child.stdin.write(`${JSON.stringify({ prompt: 'first' })}\n`);
      // The first result line must come while the input is open (bounded wait: the model is converted).
      const t0 = performance.now();
      while (!stdout.includes('\n') && child.exitCode === null && performance.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 20));
      expect(stdout, stderr).toMatch(/\n$/);
      expect(lines(stdout).map((l) => [l.index, l.prompt])).toEqual([[0, 'first']]);
      expect(child.exitCode).toBe(null);
      child.stdin.end(`${JSON.stringify({ prompt: 'second' })}\n`);
      expect(await closed, stderr).toBe(0);
      expect(lines(stdout).map((l) => [l.index, l.prompt])).toEqual([[0, 'first'], [1, 'second']]);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 90_000);

  it('an empty input (blank lines too): "no requests on stdin", exit 2, no model converted', () => {
    const home = path.join(work, 'empty-home');
    for (const input of ['', '\n  \n']) {
      const run = runDvl(['batch', ...OPTS], { env: { DVL_HOME: home }, input });
      expect(run.status).toBe(2);
      expect(run.stderr).toBe('dvl: no requests on stdin\n');
      expect(run.stdout).toBe('');
    }
    expect(fs.existsSync(path.join(home, 'models'))).toBe(false);
  });
});

describe('request lines', () => {
  const SETTINGS = { gen_length: 4, steps: 2, block_size: 4, temperature: 1, top_k: 5, top_p: 0.9, remasking: 'low_confidence_dynamic', threshold: 0.5, seed: 7 };
  const FLAGS = ['-n', '4', '-s', '2', '--block-size', '4', '-t', '1', '--top-k', '5', '--top-p', '0.9', '--remasking', 'low_confidence_dynamic', '--threshold', '0.5', '--seed', '7'];

  it('set their own settings (like the flags); unknown keys and bad values are error results with image and prompt; the batch goes on', () => {
    const requests: Json[] = [
      { image: IMAGE, prompt: 'Describe this.' },
      { prompt: 'Hi', system: 'Be brief.', ...SETTINGS },
      { image: IMAGE, prompt: 'Describe this.', sedd: 3 },
      { prompt: 'Hi', steps: 0 },
      { prompt: 'Hi', temperature: '1' },
      { image: IMAGE, prompt: 5 },
      { images: [IMAGE, IMAGE], prompt: 'Compare.' },
      { prompt: 'Hi' },
    ];
    const run = runDvl(['batch', ...OPTS], { env, input: `${requests.map((r) => JSON.stringify(r)).join('\n')}\nnot json\n` });
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/^dvl: 5 of 9 requests failed/m);
    const out = lines(run.stdout);
    expect(out.map((l) => l.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);

    // One image: "image" is its path, and each "images" entry names its file.
    const single = askJson([IMAGE, 'Describe this.']);
    expect(out[0]).toMatchObject({ image: IMAGE, prompt: 'Describe this.', text: single.text, tokens: single.tokens });
    expect(out[0].images).toEqual([{ file: IMAGE, ...(single.images as Json[])[0] }]);

    // The line's settings, as the same flags give them; not carried over to the next request.
    const withFlags = askJson([...FLAGS, '--system', 'Be brief.', 'Hi']);
    expect(out[1]).toMatchObject({ image: null, images: [], prompt: 'Hi', text: withFlags.text, tokens: withFlags.tokens, settings: withFlags.settings });
    expect(out[7].settings).toMatchObject({ genLength: 8, steps: 4, temperature: 0 });

    const error = (l: Json) => (l.error as { kind: string; message: string });
    expect(out[2]).toMatchObject({ image: IMAGE, images: [{ file: IMAGE }], prompt: 'Describe this.' });
    expect(error(out[2])).toEqual({ kind: 'input', message: expect.stringMatching(/^unknown key "sedd" \(a request takes image, images, prompt, system, gen_length, /) });
    expect(out[2]).not.toHaveProperty('text');
    expect(error(out[3]).message).toBe(`"steps" must be an integer from 1 to 1024, got '0'`);
    expect(error(out[4]).message).toBe('"temperature" must be a JSON number, got "1"');
    expect(out[5]).toMatchObject({ image: IMAGE, images: [{ file: IMAGE }], prompt: null, error: { kind: 'input', message: 'a request needs a non-empty "prompt" string' } });

    // Several images: "image" is null, "images" names each file.
    expect(out[6]).toMatchObject({ image: null, prompt: 'Compare.' });
    expect((out[6].images as Json[]).map((i) => i.file)).toEqual([IMAGE, IMAGE]);
    expect(out[6].error).toBeUndefined();

    expect(out[8]).toMatchObject({ image: null, images: [], prompt: null, error: { kind: 'input' } });
  }, 120_000);
});
