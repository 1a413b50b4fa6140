/**
 * The model store through the real binary, for what a new user trips over:
 * - a touched source file (new mtime, same size) is re-hashed, not re-converted; changed bytes are;
 * - two `dvl pull` of one directory at once convert it once;
 * - the published variant follows the umask (a shared DVL_HOME stays readable);
 * - a checkpoint directory deleted after its conversion is listed as such and can be shown and removed;
 * - `dvl show` prints the parameter count in M below a billion; a corrupt header length prints exactly;
 * - a DVL_HOME that cannot be created (/proc/nope) is a one-line error, not a spin.
 * Each part has a DVL_HOME of its own; the tiny checkpoint is converted at fp32 (int4 where a longer
 * conversion is wanted).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliResult, DVL_BIN, REPO_ROOT, runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-store-fixes-'));
const ckpt = path.join(work, 'tiny');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 71 });
});

/** A fresh store (DVL_HOME) and HOME for one part of the tests. */
function freshStore(name: string): NodeJS.ProcessEnv {
  const root = path.join(work, name);
  fs.mkdirSync(path.join(root, 'home'), { recursive: true });
  return { DVL_HOME: path.join(root, 'dvl'), HOME: path.join(root, 'home') };
}

const pull = (dir: string, env: NodeJS.ProcessEnv, dtype = 'fp32') => runDvl(['pull', dir, '--dtype', dtype], { env });

/** The single variant directory of the single local model in a store. */
function variantOf(env: NodeJS.ProcessEnv, dtype = 'fp32'): string {
  const local = path.join(env.DVL_HOME!, 'models', 'local');
  const keys = fs.readdirSync(local);
  expect(keys).toHaveLength(1);
  return path.join(local, keys[0], dtype);
}

interface SourceFileLike {
  name: string;
  mtimeMs: number;
}
const sourceFiles = (variant: string) => (JSON.parse(fs.readFileSync(path.join(variant, 'manifest.json'), 'utf8')) as { sourceFiles: SourceFileLike[] }).sourceFiles;

const converting = /^dvl: converting .* to fp32 \((.*)\)$/m;

function copyCheckpoint(to: string): string {
  fs.cpSync(ckpt, to, { recursive: true });
  return to;
}

describe('a source file whose mtime changed', () => {
  const env = freshStore('touch');
  let dir: string;

  beforeAll(() => {
    dir = copyCheckpoint(path.join(work, 'touch-ckpt'));
    const first = pull(dir, env);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stderr).toMatch(converting);
  });

  it('touch: hashed, not converted; the new mtime is recorded, so the next run hashes nothing', () => {
    const config = path.join(dir, 'config.json');
    const later = new Date(Date.now() + 60_000);
    fs.utimesSync(config, later, later);
    const run = pull(dir, env);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).not.toMatch(/converting/);
    expect(run.stderr).toMatch(/^dvl: checking config\.json \(modified since .* was converted\)$/m);
    expect(run.stderr).toMatch(/already converted/);
    expect(sourceFiles(variantOf(env)).find((f) => f.name === 'config.json')!.mtimeMs).toBe(fs.statSync(config).mtimeMs);

    const again = pull(dir, env);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).not.toMatch(/checking|hashing|converting/);
  });

  it('the same size with other bytes: converted again', () => {
    const weights = path.join(dir, 'model.safetensors');
    const fd = fs.openSync(weights, 'r+');
    const size = fs.fstatSync(fd).size;
    const last = Buffer.alloc(1);
    fs.readSync(fd, last, 0, 1, size - 1);
    last[0] ^= 0x01; // the low bit of the last bf16 weight: still a valid checkpoint
    fs.writeSync(fd, last, 0, 1, size - 1);
    fs.closeSync(fd);
    expect(fs.statSync(weights).size).toBe(size);
    const run = pull(dir, env);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr.match(converting)?.[1]).toBe('source file model.safetensors changed since conversion');
  });

  it('another size: converted again without hashing first', () => {
    fs.appendFileSync(path.join(dir, 'generation_config.json'), '\n');
    const run = pull(dir, env);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).not.toMatch(/checking/);
    expect(run.stderr.match(converting)?.[1]).toBe('source file generation_config.json changed since conversion');
  });
});

describe('two pulls of one directory at once', () => {
  it('convert it once: the second waits, then uses the first one\'s conversion', async () => {
    const env = freshStore('concurrent');
    const start = () =>
      new Promise<CliResult>((resolve, reject) => {
        // int4: the slowest conversion, so the two surely overlap.
        const child = spawn(process.execPath, [DVL_BIN, 'pull', ckpt, '--dtype', 'int4'], { cwd: REPO_ROOT, env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), 100_000);
        child.on('error', reject);
        child.on('close', (status) => {
          clearTimeout(timer);
          resolve({ status, stdout, stderr });
        });
      });
    const runs = await Promise.all([start(), start()]);
    for (const r of runs) expect(r.status, r.stderr).toBe(0);
    const converted = runs.filter((r) => /^dvl: converting .* to int4 /m.test(r.stderr));
    expect(converted).toHaveLength(1);
    const waited = runs.find((r) => r !== converted[0])!;
    expect(waited.stderr).toMatch(/^dvl: waiting for another dvl \(pid \d+\) converting /m);
    expect(waited.stderr).toMatch(/\(int4\) already converted/);
    expect(fs.readdirSync(path.dirname(variantOf(env, 'int4')))).toEqual(['int4']);
  });
});

describe('file modes', () => {
  it('under umask 022 the published variant is 0755 and its files 0644', () => {
    const env = freshStore('umask');
    const run = spawnSync('/bin/sh', ['-c', `umask 022 && exec "${process.execPath}" "${DVL_BIN}" pull "${ckpt}" --dtype fp32 -q`], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(run.status, run.stderr).toBe(0);
    const variant = variantOf(env);
    const mode = (p: string) => fs.statSync(p).mode & 0o777;
    expect(mode(variant).toString(8)).toBe('755');
    expect(mode(path.dirname(variant)).toString(8)).toBe('755');
    for (const name of fs.readdirSync(variant)) expect(mode(path.join(variant, name)).toString(8), name).toBe('644');
  });
});

describe('a checkpoint directory deleted after its conversion', () => {
  const env = freshStore('orphan');
  let gone: string;

  beforeAll(() => {
    gone = copyCheckpoint(path.join(work, 'gone-ckpt'));
    for (const dir of [gone, ckpt]) expect(pull(dir, env).status).toBe(0);
    fs.rmSync(gone, { recursive: true });
  });

  it('dvl list marks it (source gone); the other model is listed as before', () => {
    const list = runDvl(['list'], { env });
    expect(list.status, list.stderr).toBe(0);
    const lines = list.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^MODEL\s+REVISION\s+VARIANTS\s+SIZE$/);
    expect(lines.find((l) => l.startsWith(`${gone} `))).toMatch(/^\S+\s+local\s+fp32\s+[\d.]+ MB\s+\(source gone\)$/);
    expect(lines.find((l) => l.startsWith(`${ckpt} `))).toMatch(/^\S+\s+local\s+fp32\s+[\d.]+ MB$/);
  });

  it('dvl show works on it by the name list shows', () => {
    const show = runDvl(['show', gone], { env });
    expect(show.status, show.stderr).toBe(0);
    expect(show.stdout).toContain(`source      ${gone} (gone)`);
    expect(show.stdout).toMatch(/^variant\s+fp32 /m);
  });

  it('dvl ask says the directory is gone and how to remove its conversion', () => {
    const ask = runDvl(['ask', '-m', gone, '--dtype', 'fp32', 'Hello'], { env });
    expect(ask.status).toBe(3);
    expect(ask.stderr).toBe(`dvl: checkpoint directory ${gone} is gone; its conversion is still in the store: remove it with 'dvl rm ${gone}'\n`);
  });

  it('dvl rm removes it by that name, and only it', () => {
    const rm = runDvl(['rm', gone], { env });
    expect(rm.status, rm.stderr).toBe(0);
    expect(rm.stdout).toMatch(/^removed the converted variants of .* \([\d.]+ MB freed; its checkpoint directory was already gone\)\n$/);
    const list = runDvl(['list'], { env });
    expect(list.stdout).not.toContain(gone);
    expect(list.stdout).toContain(ckpt);
    const again = runDvl(['rm', gone], { env });
    expect(again.status).toBe(3);
  });
});

describe('dvl show and corrupt headers', () => {
  it('prints the parameter count in M below a billion', () => {
    const env = freshStore('show');
    expect(pull(ckpt, env).status).toBe(0);
    const show = runDvl(['show', ckpt], { env });
    expect(show.status, show.stderr).toBe(0);
    // Counted from the safetensors header, independently of dvl's count from the config.
    const bytes = fs.readFileSync(path.join(ckpt, 'model.safetensors'));
    const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8')) as Record<string, { shape?: number[] }>;
    const params = Object.entries(header).reduce((s, [k, v]) => (k === '__metadata__' ? s : s + (v.shape ?? []).reduce((a, b) => a * b, 1)), 0);
    expect(params).toBeLessThan(1e9);
    expect(show.stdout).toMatch(new RegExp(`^parameters  ${(params / 1e6).toFixed(1).replace('.', '\\.')} M \\(${params.toLocaleString('en-US')}\\)$`, 'm'));
  });

  it('a header length beyond 2^53 is printed exactly', () => {
    const dir = path.join(work, 'corrupt-ckpt');
    fs.mkdirSync(dir);
    for (const name of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(ckpt, name), path.join(dir, name));
    const length = (1n << 60n) + 1n; // 1152921504606846977: as a Number it would print 1152921504606847000
    const file = Buffer.alloc(64);
    file.writeBigUInt64LE(length, 0);
    fs.writeFileSync(path.join(dir, 'model.safetensors'), file);
    const run = pull(dir, freshStore('corrupt'));
    expect(run.status).toBe(3);
    expect(run.stderr).toBe(`dvl: ${path.join(dir, 'model.safetensors')}: corrupt safetensors header length 1152921504606846977\n`);
  });
});

describe('a DVL_HOME that cannot be created', () => {
  /** The binary with a time limit: before the fix, a recursive mkdir under /proc spun forever and ignored SIGTERM. */
  const pullWithHome = (home: string) =>
    spawnSync(process.execPath, [DVL_BIN, 'pull', ckpt, '--dtype', 'fp32'], {
      cwd: REPO_ROOT,
      env: { ...process.env, NO_COLOR: '1', DVL_HOME: home },
      encoding: 'utf8',
      timeout: 30_000,
      killSignal: 'SIGKILL',
    });

  it.skipIf(!fs.existsSync('/proc/self'))('DVL_HOME=/proc/nope: one line, exit 3, within seconds', () => {
    const run = pullWithHome('/proc/nope');
    expect(run.error).toBeUndefined(); // not killed by the time limit
    expect(run.status).toBe(3);
    expect(run.stderr).toMatch(/^dvl: cannot write converted models to \/proc\/nope\S* \(ENOENT\); set DVL_HOME to a writable directory\n$/);
  });

  it('a DVL_HOME below a regular file: one line, exit 3', () => {
    const file = path.join(work, 'a-file');
    fs.writeFileSync(file, '');
    const run = pullWithHome(path.join(file, 'store'));
    expect(run.status).toBe(3);
    expect(run.stderr).toMatch(/^dvl: cannot write converted models to \S+ \(ENOTDIR\); set DVL_HOME to a writable directory\n$/);
  });
});
