/**
 * What real users send (issue "What real users send", items 5-9 and the small ones), each through the real binary:
 * a tokenizer that cannot load is refused by pull, naming the file; damaged weights say how to repair them; a lone
 * missing image path is an error; --threads above the cores is capped with a warning; --jsonl stages carry the
 * time they began; -v, ls, kB sizes in show, the exit codes in ask --help, multi-line chat questions, and the
 * leftovers of a killed conversion in list and rm.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAST_THRESHOLD } from '../src/generate/presets.js';
import { runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-fixes-'));
const env = { DVL_HOME: path.join(work, 'home') };
const ckpt = path.join(work, 'tiny');
const IMAGE = path.resolve('fixtures/images/chelsea.png');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));
beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig(), seed: 12 });
  const pull = runDvl(['pull', ckpt, '--dtype', 'fp32', '--quiet'], { env });
  expect(pull.status, pull.stderr).toBe(0);
}, 120_000);

const ask = (args: string[], extraEnv: NodeJS.ProcessEnv = {}) => runDvl(['ask', '-m', ckpt, '--dtype', 'fp32', ...args], { env: { ...env, ...extraEnv } });

describe('the tokenizer is checked by pull', () => {
  it('a tokenizer.json that cannot build a tokenizer, or lacks the chat tokens, is refused naming the file; nothing is stored', () => {
    const bad = path.join(work, 'bad-tokenizer');
    writeTinyCheckpoint(bad, { config: tinyConfig(), seed: 12 });
    fs.writeFileSync(path.join(bad, 'tokenizer.json'), JSON.stringify({ version: '1.0', model: { type: 'Nonsense' } }));
    const run = runDvl(['pull', bad, '--dtype', 'fp32'], { env });
    expect(run.status).toBe(3);
    expect(run.stderr).toMatch(new RegExp(`^dvl: ${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/tokenizer\\.json \\(with tokenizer_config\\.json\\): .+\\n$`));
    expect(fs.readdirSync(path.join(env.DVL_HOME, 'models', 'local')).some((d) => d.startsWith('bad-tokenizer'))).toBe(false);

    const noChat = path.join(work, 'no-chat-tokens');
    writeTinyCheckpoint(noChat, { config: tinyConfig(), seed: 12 });
    const json = JSON.parse(fs.readFileSync(path.join(noChat, 'tokenizer.json'), 'utf8')) as { added_tokens: { content: string }[] };
    json.added_tokens = json.added_tokens.filter((t) => t.content !== '<|im_start|>');
    fs.writeFileSync(path.join(noChat, 'tokenizer.json'), JSON.stringify(json));
    const none = runDvl(['pull', noChat, '--dtype', 'fp32'], { env });
    expect(none.status).toBe(3);
    expect(none.stderr).toMatch(/no-chat-tokens\/tokenizer\.json has no <\|im_start\|> token/);
  });
});

describe('damaged converted weights', () => {
  it('NaN logits say how to repair the model, and pull --force repairs it', () => {
    const dir = path.join(work, 'damaged');
    writeTinyCheckpoint(dir, { config: tinyConfig(), seed: 13 });
    const pulled = runDvl(['pull', dir, '--dtype', 'fp32', '--quiet'], { env });
    expect(pulled.status, pulled.stderr).toBe(0);
    const variant = fs.readdirSync(path.join(env.DVL_HOME, 'models', 'local')).find((d) => d.startsWith('damaged-'))!;
    const data = path.join(env.DVL_HOME, 'models', 'local', variant, 'fp32', 'decoder.onnx.data');
    // Same size, NaN contents: the store's size check cannot see it, the logits can.
    const fd = fs.openSync(data, 'r+');
    fs.writeSync(fd, Buffer.alloc(fs.statSync(data).size, 0xff), 0, fs.statSync(data).size, 0);
    fs.closeSync(fd);
    const run = runDvl(['ask', '-m', dir, '--dtype', 'fp32', '-n', '8', 'Hi'], { env });
    expect(run.status).toBe(3);
    expect(run.stderr).toBe("dvl: the decoder returned NaN logits: the converted model is damaged; convert it again with 'dvl pull --force MODEL --dtype DTYPE' (the same model and dtype)\n");
    expect(runDvl(['pull', dir, '--dtype', 'fp32', '--force', '--quiet'], { env }).status).toBe(0);
    expect(runDvl(['ask', '-m', dir, '--dtype', 'fp32', '-n', '8', 'Hi'], { env }).status).toBe(0);
  });
});

describe('arguments and flags', () => {
  it('a lone argument that is an image path that does not exist is an error, not a question (exit 2)', () => {
    const run = ask(['missing.png']);
    expect(run.status).toBe(2);
    expect(run.stderr).toBe('dvl: no such image: missing.png (the prompt goes last: dvl ask [image...] <prompt>)\n');
    // A question that merely ends in a file name is still a question.
    expect(ask(['-n', '8', '-q', 'what is in missing.png?']).status).toBe(0);
  });

  it('--threads above the cores is capped, with one warning', () => {
    const cores = os.availableParallelism();
    const run = ask(['-n', '8', '-q', '--threads', String(cores * 32), 'Hi']);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toBe(`dvl: warning: --threads ${cores * 32} is more than the ${cores} cores here: using ${cores}\n`);
  });

  it('--jsonl stages carry the time each began: the gaps match the stages the result reports', () => {
    const run = ask(['-n', '8', '--jsonl', IMAGE, 'What is this?']);
    expect(run.status, run.stderr).toBe(0);
    const lines = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; stage?: string; ms: number; stats?: { ms: Record<string, number> } });
    const at = Object.fromEntries(lines.filter((l) => l.type === 'stage').map((l) => [l.stage!, l.ms]));
    const stats = lines.at(-1)!.stats!.ms;
    // preprocess ran right before vision, while the model loaded: the gap is that work, which the result's
    // preprocess figure holds with the answer's own look-up of the encoded image (a few ms).
    expect(at.vision - at.preprocess).toBeLessThanOrEqual(stats.preprocess + 1);
    expect(at.vision - at.preprocess).toBeGreaterThan(stats.preprocess / 2);
    // The decoder loaded between vision and prefill: the gap is at least the vision stage.
    expect(at.prefill - at.vision).toBeGreaterThanOrEqual(stats.vision - 5);
    expect(at.generate).toBeGreaterThanOrEqual(at.prefill);
  });
});

describe('small ones', () => {
  it('dvl -v prints the versions, dvl ls lists, show prints small files in kB, ask --help lists 141 and 143', () => {
    expect(runDvl(['-v']).stdout).toMatch(/^dvl \d+\.\d+\.\d+\nonnxruntime-node /);
    const ls = runDvl(['ls'], { env });
    expect(ls.status).toBe(0);
    expect(ls.stdout).toContain(ckpt);
    expect(runDvl(['show', ckpt], { env }).stdout).toMatch(/config\.json \(\d+\.\d kB\)/);
    const help = runDvl(['ask', '--help']).stdout;
    expect(help).toMatch(/141 the reader of stdout went away/);
    expect(help).toMatch(/143 terminated \(SIGTERM\)/);
  });

  it('chat: a question of several lines between """ lines is one question', () => {
    const block = runDvl(['chat', '-m', ckpt, '--dtype', 'fp32', '-n', '8', '-q'], { env, input: '"""\nWhat is\nin this box?\n"""\n' });
    expect(block.status, block.stderr).toBe(0);
    const single = ask(['-n', '8', '-q', 'What is\nin this box?']);
    expect(block.stdout).toBe(single.stdout);
    expect(block.stdout.trim().split('\n')).toHaveLength(1);
  });

  it('a staging directory left by a killed conversion shows in dvl list as reclaimable, and dvl rm removes it', () => {
    const modelDir = path.join(env.DVL_HOME, 'models', 'local', fs.readdirSync(path.join(env.DVL_HOME, 'models', 'local')).find((d) => d.startsWith('tiny-'))!);
    // A pid that cannot be running: what kill -9 during a conversion leaves.
    const leftover = path.join(modelDir, '.staging-int4-999999999-abcdef');
    fs.mkdirSync(leftover);
    fs.writeFileSync(path.join(leftover, 'decoder.onnx.data'), Buffer.alloc(300_000));
    const list = runDvl(['list'], { env });
    expect(list.stdout).toMatch(/^reclaimable: 0\.3 MB left by interrupted work \(removed by the model's next use, or 'dvl rm MODEL'\):\n {2}.*\.staging-int4-999999999-abcdef \(0\.3 MB\)$/m);
    const rm = runDvl(['rm', ckpt], { env });
    expect(rm.status, rm.stderr).toBe(0);
    expect(fs.existsSync(leftover)).toBe(false);
    expect(runDvl(['list'], { env }).stdout).not.toMatch(/reclaimable/);
  });
});

describe('--fast', () => {
  it('is dynamic remasking at the preset threshold; an explicit --threshold wins; a static --remasking with it is a usage error', () => {
    const settingsOf = (stdout: string) => (JSON.parse(stdout) as { settings: { remasking: string; threshold: number }; stats: { nfe: number } });
    const plain = ask(['--json', '-n', '16', 'Hi']);
    expect(plain.status, plain.stderr).toBe(0);
    expect(settingsOf(plain.stdout).settings).toMatchObject({ remasking: 'low_confidence_static', threshold: 0.85 });
    const fast = ask(['--fast', '--json', '-n', '16', 'Hi']);
    expect(fast.status, fast.stderr).toBe(0);
    expect(settingsOf(fast.stdout).settings).toMatchObject({ remasking: 'low_confidence_dynamic', threshold: FAST_THRESHOLD });
    const given = ask(['--fast', '--threshold', '0.5', '--json', '-n', '16', 'Hi']);
    expect(settingsOf(given.stdout).settings).toMatchObject({ remasking: 'low_confidence_dynamic', threshold: 0.5 });
    const clash = ask(['--fast', '--remasking', 'low_confidence_static', 'Hi']);
    expect(clash.status).toBe(1);
    expect(clash.stderr).toBe('dvl: --fast is --remasking low_confidence_dynamic; it cannot go with --remasking low_confidence_static\n');
  });
});
