/**
 * The model store through the real binary: `$DVL_HOME/models/local/<name>-<hash>/<dtype>/`, published atomically,
 * reused while current, redone when damaged, stale or forced, and cleaned of what killed conversions left.
 *
 * The tests share one checkpoint and one store and run in order: each starts from the state the previous one
 * left (a current fp32 conversion). Conversion is deterministic, so a redone conversion must reproduce the
 * bytes of the first one (compared by sha256).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliResult, runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';
import { CONVERSION_FORMAT } from '../src/store/manifest.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-store-'));
const ckpt = path.join(work, 'tiny');
const home = path.join(work, 'dvl-home');
/** HOME of the child processes: the default store (~/.cache/dvl) must stay untouched when DVL_HOME is set. */
const userHome = path.join(work, 'user');
const env = { DVL_HOME: home, HOME: userHome };
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

interface ManifestLike {
  createdAt: string;
  files: { name: string; size: number }[];
  sourceFiles: { name: string; size: number; mtimeMs: number; sha256: string }[];
}

const pull = (...extra: string[]) => runDvl(['pull', ckpt, '--dtype', 'fp32', ...extra], { env });
const modelDir = () => {
  const local = path.join(home, 'models', 'local');
  const keys = fs.readdirSync(local);
  expect(keys).toHaveLength(1);
  return path.join(local, keys[0]);
};
const variant = () => path.join(modelDir(), 'fp32');
const manifest = () => JSON.parse(fs.readFileSync(path.join(variant(), 'manifest.json'), 'utf8')) as ManifestLike;
const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/** The run converted (saying why); `pull` also reports the result. */
function expectConverted(run: CliResult, reason: RegExp, command: 'pull' | 'ask' = 'pull'): void {
  expect(run.status, run.stderr).toBe(0);
  expect(run.stderr).toMatch(/^dvl: converting .* to fp32 \((.*)\)$/m);
  expect(run.stderr.match(/^dvl: converting .* to fp32 \((.*)\)$/m)![1]).toMatch(reason);
  if (command === 'pull') expect(run.stderr).toMatch(/^dvl: .* \(fp32\) converted in [\d.]+ s: /m);
}

/** Every file the manifest lists is there with its size, and nothing else but the manifest. */
function expectComplete(): void {
  const m = manifest();
  for (const { name, size } of m.files) expect(fs.statSync(path.join(variant(), name)).size, name).toBe(size);
  expect(fs.readdirSync(variant()).sort()).toEqual([...m.files.map((f) => f.name), 'manifest.json'].sort());
}

let original: { createdAt: string; decoderSha: string };

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 41, shards: 2 });
});

describe('the model store', () => {
  it('publishes a conversion under DVL_HOME, atomically: only the variant directory is left', () => {
    const run = pull();
    expectConverted(run, /^not converted yet$/);
    expect(path.basename(modelDir())).toMatch(/^tiny-[0-9a-f]{12}$/);
    expect(fs.readdirSync(modelDir())).toEqual(['fp32']); // no .staging-* or .old-* left
    expect(run.stderr).toContain(`in ${variant()}`);
    expectComplete();
    expect(fs.existsSync(path.join(userHome, '.cache'))).toBe(false);
    // The manifest records the source files as they are on disk.
    for (const f of manifest().sourceFiles) {
      const file = path.join(ckpt, f.name);
      expect(f.size).toBe(fs.statSync(file).size);
      expect(f.sha256).toBe(sha256(file));
    }
    original = { createdAt: manifest().createdAt, decoderSha: sha256(path.join(variant(), 'decoder.onnx.data')) };
  });

  it('a second pull finds the conversion current and converts nothing', () => {
    const run = pull();
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).not.toMatch(/converting/);
    expect(run.stderr).toMatch(/\(fp32\) already converted/);
    expect(manifest().createdAt).toBe(original.createdAt);
  });

  it('removes staging directories of dead processes at the next use, and keeps those of live ones', () => {
    const deadPid = 999999;
    expect(() => process.kill(deadPid, 0)).toThrow(); // no such process
    const dead = [path.join(modelDir(), `.staging-fp32-${deadPid}-AbC123`), path.join(modelDir(), `fp32.old-${deadPid}-1700000000000`)];
    // This test process is alive: its (pretend) conversion in progress must not be touched.
    const live = path.join(modelDir(), `.staging-fp32-${process.pid}-XyZ789`);
    for (const dir of [...dead, live]) {
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'decoder.onnx.data'), Buffer.alloc(1000));
    }
    const run = pull();
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/already converted/);
    expect(fs.readdirSync(modelDir()).sort()).toEqual([path.basename(live), 'fp32'].sort());
    fs.rmSync(live, { recursive: true });
  });

  it('ask detects a missing weights file and converts again, reproducing the same bytes', () => {
    fs.rmSync(path.join(variant(), 'decoder.onnx.data'));
    const run = runDvl(['ask', '--model', ckpt, '--dtype', 'fp32', '--gen-length', '8', '--threads', '1', 'Hello'], { env });
    expectConverted(run, /^converted file decoder\.onnx\.data is missing or damaged$/, 'ask');
    expect(run.stdout.length).toBeGreaterThan(1);
    expectComplete();
    expect(sha256(path.join(variant(), 'decoder.onnx.data'))).toBe(original.decoderSha);
    expect(manifest().createdAt).not.toBe(original.createdAt);
  });

  it('pull detects a truncated weights file and converts again', () => {
    const file = path.join(variant(), 'decoder.onnx.data');
    fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
    expectConverted(pull(), /^converted file decoder\.onnx\.data is missing or damaged$/);
    expectComplete();
    expect(sha256(file)).toBe(original.decoderSha);
  });

  it('pull detects a corrupt or incomplete manifest and converts again', () => {
    const file = path.join(variant(), 'manifest.json');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').slice(0, 200));
    expectConverted(pull(), /^unreadable manifest /);
    expectComplete();
    // Valid JSON with the right format number but without the fields: not trusted either.
    fs.writeFileSync(file, `{"format": ${CONVERSION_FORMAT}}\n`);
    expectConverted(pull(), /^damaged manifest /);
    expectComplete();
  });

  it('a changed source file makes the conversion stale; the new one records the new state', () => {
    // Other bytes at the same size (a touch alone is re-hashed, not converted: see store-fixes.test.ts).
    const shard = path.join(ckpt, 'model-00002-of-00002.safetensors');
    const bytes = fs.readFileSync(shard);
    bytes[bytes.length - 1] ^= 0x01;
    fs.writeFileSync(shard, bytes);
    expectConverted(pull(), /^source file model-00002-of-00002\.safetensors changed since conversion$/);
    expect(manifest().sourceFiles.find((f) => f.name === 'model-00002-of-00002.safetensors')!.mtimeMs).toBe(fs.statSync(shard).mtimeMs);
    expect(manifest().sourceFiles.find((f) => f.name === 'model-00002-of-00002.safetensors')!.sha256).toBe(sha256(shard));
    const again = pull();
    expect(again.status).toBe(0);
    expect(again.stderr).toMatch(/already converted/);
  });

  it('--force converts again', () => {
    const before = manifest().createdAt;
    expectConverted(pull('--force'), /^conversion forced$/);
    expect(manifest().createdAt).not.toBe(before);
    expect(fs.readdirSync(modelDir())).toEqual(['fp32']);
    expectComplete();
  });
});
