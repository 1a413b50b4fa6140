/**
 * `dvl chat` scripted through pipes: questions one per line, answers only on stdout; the second turn sees
 * the first (the multi-turn prompt is longer than a fresh one), /clear forgets, a bad /image is reported and
 * the chat goes on.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-cli-chat-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home') };
const OPTS = ['--model', ckpt, '--dtype', 'fp32', '--gen-length', '8', '--steps', '4', '--threads', '1', '--min-pixels', '784', '--max-pixels', '3136', '-q'];
const IMAGE = path.resolve('fixtures/images/chelsea.png');

beforeAll(() => writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 }));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('dvl chat', () => {
  it('answers each line; the first answer is ask\'s; /clear starts over; a missing /image is reported', () => {
    const first = runDvl(['ask', ...OPTS, IMAGE, 'What is this?'], { env });
    expect(first.status, first.stderr).toBe(0);
    const run = runDvl(['chat', ...OPTS, IMAGE], { env, input: 'What is this?\n/image /nonexistent.png\n/clear\n/image ' + IMAGE + '\nWhat is this?\n/exit\n' });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/image not found: \/nonexistent\.png/);
    // Same first turn as ask; after /clear and the same image again, the same answer again.
    expect(run.stdout).toBe(first.stdout + first.stdout);
  }, 120_000);
});
