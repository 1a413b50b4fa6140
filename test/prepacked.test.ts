/**
 * The decoder's pre-packed weights (src/store/prepacked.ts) through the real binary on a tiny int4 model.
 * onnxruntime 1.30's saved pre-packed weights reproduce the 3B decoder's logits bit for bit but not a tiny
 * decoder's (measured), so here the safety net is what runs: the first ask builds an entry, finds that it does
 * not reproduce the logits of the session that saved it, throws it away and remembers that for this key; the
 * answer is the same as without pre-packing, and later starts do not try again. The path that uses an entry is
 * checked on the 3B shapes by `npm run bench` (start-up table).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepackedBytes, sameValues } from '../src/store/prepacked.js';
import { runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-prepacked-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home') };
const ASK = ['ask', '--model', ckpt, '--dtype', 'int4', '--threads', '1', '-n', '16', '--verbose', '--json', 'Describe a cat.'];

function variantDir(): string {
  const local = path.join(env.DVL_HOME, 'models', 'local');
  return path.join(local, fs.readdirSync(local)[0], 'int4');
}
const prepackedNames = () => (fs.existsSync(path.join(variantDir(), 'prepacked')) ? fs.readdirSync(path.join(variantDir(), 'prepacked')) : []);
const tokensOf = (stdout: string) => (JSON.parse(stdout) as { tokens: number[] }).tokens;

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 9 });
}, 60_000);
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('pre-packed decoder weights', () => {
  let plainTokens: number[];

  it('off (DVL_PREPACK=0): nothing is written', () => {
    const r = runDvl(ASK, { env: { ...env, DVL_PREPACK: '0' } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('no pre-packing');
    plainTokens = tokensOf(r.stdout);
    expect(prepackedNames()).toEqual([]);
  });

  it('weights that do not reproduce the logits are not used, and not built again', () => {
    // A leftover entry of another key (another onnxruntime or CPU) goes when this key is settled.
    const stale = path.join(variantDir(), 'prepacked', '0123456789abcdef');
    fs.mkdirSync(stale, { recursive: true });
    fs.writeFileSync(path.join(stale, 'decoder.onnx.data'), 'old');
    const first = runDvl(ASK, { env });
    expect(first.status, first.stderr).toBe(0);
    expect(first.stderr).toContain("preparing the decoder's weights for this CPU");
    expect(first.stderr).toContain('do not reproduce');
    // onnxruntime's own warning about saving a hardware-specific graph stays off stderr.
    for (const line of first.stderr.trimEnd().split('\n')) expect(line).toMatch(/^dvl: /);
    expect(tokensOf(first.stdout)).toEqual(plainTokens);
    const names = prepackedNames();
    expect(names).toHaveLength(1);
    expect(names[0]).toMatch(/^[0-9a-f]{16}\.unusable$/);

    const second = runDvl(ASK, { env });
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr).not.toContain('preparing');
    expect(second.stderr).toContain('do not reproduce');
    expect(tokensOf(second.stdout)).toEqual(plainTokens);
  });

  it('entry sizes count toward what dvl list shows; dvl rm removes them with the variant', () => {
    const entry = path.join(variantDir(), 'prepacked', 'fedcba9876543210');
    fs.mkdirSync(entry);
    fs.writeFileSync(path.join(entry, 'decoder.onnx.data'), Buffer.alloc(2_000_000));
    // Entries are folders; the .unusable marker beside them is not counted.
    expect(prepackedBytes(variantDir())).toBe(2_000_000);
    const list = runDvl(['list'], { env });
    expect(list.status, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/\+ 2\.0 MB pre-packed/);
    const rm = runDvl(['rm', ckpt], { env });
    expect(rm.status, rm.stderr).toBe(0);
    expect(fs.readdirSync(path.join(env.DVL_HOME, 'models', 'local'))).toEqual([]);
  });

  it('compares outputs bit for bit', () => {
    expect(sameValues(Float32Array.of(1, 2, NaN), Float32Array.of(1, 2, NaN))).toBe(true);
    expect(sameValues(Float32Array.of(0), Float32Array.of(-0))).toBe(false);
    expect(sameValues(Float32Array.of(1, 2), Float32Array.of(1, 2.0000002))).toBe(false);
    expect(sameValues(Float32Array.of(1), Float32Array.of(1, 2))).toBe(false);
  });
});
