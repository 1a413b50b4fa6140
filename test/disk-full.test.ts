/**
 * A full disk (issue "What real users send", items 2 and 6), on a real small filesystem (tmpfs):
 * - the first start of an int4 model whose packed weights do not fit answers anyway with one warning line,
 *   leaves no partial file and marks nothing; once there is room a later start packs them;
 * - a conversion that runs out of space mid-way says so in one line and leaves nothing behind;
 * - anywhere else, a full disk is the one-line "not enough disk space", never "internal error: ENOSPC".
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { canMountTmpfs, mountTmpfs, type SmallDisk } from './helpers/small-disk.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-disk-full-'));
const ckpt = path.join(work, 'tiny');
writeTinyCheckpoint(ckpt, { config: tinyConfig(), seed: 8 });
const disks: SmallDisk[] = [];
afterAll(() => {
  for (const disk of disks) disk.unmount();
  fs.rmSync(work, { recursive: true, force: true });
});

function disk(bytes: number): SmallDisk {
  const d = mountTmpfs(bytes);
  if (!d) throw new Error('cannot mount a tmpfs');
  disks.push(d);
  return d;
}

/** Every file and directory under `dir`, relative. */
const listAll = (dir: string): string[] => (fs.readdirSync(dir, { recursive: true }) as string[]).sort();

describe.skipIf(!canMountTmpfs)('a full disk', () => {
  it("packed weights that do not fit: the model answers, with one warning, and packs them when there is room", () => {
    const d = disk(96 << 20);
    const env = { DVL_HOME: path.join(d.dir, 'home') };
    // Converted without packing (pull packs otherwise): the first ask is the one that would pack.
    const pull = runDvl(['pull', ckpt, '--dtype', 'int4', '--quiet'], { env: { ...env, DVL_PREPACK: '0' } });
    expect(pull.status, pull.stderr).toBe(0);
    const filler = d.fill(200_000);
    const before = listAll(env.DVL_HOME);

    const full = runDvl(['ask', '-m', ckpt, '--dtype', 'int4', '-n', '8', '--verbose', 'Hi'], { env: { ...env, CI: '1' } });
    expect(full.status, full.stderr).toBe(0);
    const warnings = full.stderr.split('\n').filter((line) => line.startsWith('dvl: warning:'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^dvl: warning: not enough disk space in .* to save the decoder's weights packed for this CPU \(about [\d.]+ MB needed, [\d.]+ MB free\): starting without them, which is slower; a later start tries again$/);
    expect(full.stderr).toMatch(/start-up: decoder session \d+ ms \(weights not packed: not enough disk space to save them\)/);
    // Nothing half-written, nothing marked as never to be tried again.
    expect(listAll(env.DVL_HOME)).toEqual(before);

    fs.rmSync(filler);
    const roomy = runDvl(['ask', '-m', ckpt, '--dtype', 'int4', '-n', '8', '--verbose', 'Hi'], { env: { ...env, CI: '1' } });
    expect(roomy.status, roomy.stderr).toBe(0);
    expect(roomy.stderr).not.toMatch(/warning/);
    expect(roomy.stderr).toMatch(/start-up: decoder session \d+ ms \(weights packed now and saved for the next start\)/);
    expect(fs.readdirSync(path.dirname(fs.readdirSync(env.DVL_HOME, { recursive: true }).map(String).map((f) => path.join(env.DVL_HOME, f)).find((f) => f.endsWith('manifest.json'))!))).toContain('decoder.packed.onnx');
  });

  it('a conversion that runs out of space mid-way says so in one line and leaves nothing behind', () => {
    // Room for the free-space estimate, not for the whole conversion.
    const d = disk(25 << 20);
    const env = { DVL_HOME: path.join(d.dir, 'home') };
    const run = runDvl(['pull', ckpt, '--dtype', 'int4', '--quiet'], { env });
    expect(run.status).toBe(3);
    expect(run.stderr).toMatch(/^dvl: not enough disk space to convert into .*\n$/);
    const left = listAll(path.join(env.DVL_HOME, 'models')).filter((name) => name.includes('staging') || name.endsWith('.onnx'));
    expect(left).toEqual([]);
  });

  it('anywhere else (a lock file on a full store), the one-line "not enough disk space", exit 3', () => {
    const d = disk(1 << 20);
    const home = path.join(d.dir, 'home');
    fs.mkdirSync(path.join(home, 'locks'), { recursive: true });
    fs.mkdirSync(path.join(home, 'models'), { recursive: true });
    d.fill(0);
    const run = runDvl(['pull', ckpt, '--dtype', 'fp32'], { env: { DVL_HOME: home } });
    expect(run.status).toBe(3);
    expect(run.stderr).toBe('dvl: not enough disk space: free some space (or set DVL_HOME / HF_HUB_CACHE to another disk)\n');
  });
});
