/** `dvl --help`, the commands' `--help` (ask, pull, batch, chat) and `dvl --version` through the real binary. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS } from '../src/preprocess/pixel-budget.js';
import { REPO_ROOT, runDvl } from './helpers/cli.js';

describe('help and version', () => {
  it('dvl --help lists the commands, examples and DVL_HOME', () => {
    const run = runDvl(['--help']);
    expect(run.status).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.stdout).toMatch(/^Usage: dvl /);
    expect(run.stdout).toMatch(/^\s+pull\b/m);
    expect(run.stdout).toMatch(/^\s+ask\b/m);
    expect(run.stdout).toMatch(/^Examples:\n\s+dvl pull /m);
    expect(run.stdout).toContain('DVL_HOME');
  });

  it('dvl ask --help documents the flags, examples, exit codes and the pixel budget defaults', () => {
    const run = runDvl(['ask', '--help']);
    expect(run.status).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.stdout).toMatch(/^Usage: dvl ask /);
    for (const flag of ['--model', '--dtype', '--gen-length', '--steps', '--temperature', '--top-k', '--top-p', '--remasking', '--threshold', '--seed', '--min-pixels', '--max-pixels', '--json']) {
      expect(run.stdout).toContain(flag);
    }
    expect(run.stdout).toMatch(/^Examples:\n\s+dvl ask /m);
    expect(run.stdout).toMatch(/Exit codes: 0 ok, 1 usage, 2 bad input/);
    // The defaults are written out in the help text: they must be the preprocessing module's.
    const side = (pixels: number) => `${Math.sqrt(pixels)}*${Math.sqrt(pixels)}`;
    expect(run.stdout).toContain(`else ${side(DEFAULT_MIN_PIXELS)}..${side(DEFAULT_MAX_PIXELS)}, DiffusionVL's training budget`);
  });

  it('dvl pull --help shows usage and examples', () => {
    const run = runDvl(['pull', '--help']);
    expect(run.status).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.stdout).toMatch(/^Usage: dvl pull /);
    expect(run.stdout).toContain('--force');
    expect(run.stdout).toMatch(/^Examples:\n\s+dvl pull /m);
  });

  it('dvl batch --help describes the request and result lines, with examples', () => {
    const run = runDvl(['batch', '--help']);
    expect(run.status).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.stdout).toMatch(/^Usage: dvl batch /);
    expect(run.stdout).toContain('--model');
    expect(run.stdout).toContain('{"image": "a.jpg", "prompt": "Describe this."}');
    expect(run.stdout).toMatch(/"error": \{"kind", "message"\}/);
    expect(run.stdout).toMatch(/^Examples:\n[^\n]*\n?\s+\| dvl batch /m);
    expect(run.stdout).toMatch(/^\s+dvl ask -m \S+ --each /m);
  });

  it('dvl chat --help lists the in-chat commands, with examples', () => {
    const run = runDvl(['chat', '--help']);
    expect(run.status).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.stdout).toMatch(/^Usage: dvl chat /);
    for (const flag of ['--model', '--no-live', '--gen-length']) expect(run.stdout).toContain(flag);
    for (const command of ['/image PATH', '/clear', '/exit']) expect(run.stdout).toMatch(new RegExp(`^\\s+${command}\\b`, 'm'));
    expect(run.stdout).toMatch(/^Examples:\n\s+dvl chat /m);
  });

  it('dvl --version starts with the package.json version', () => {
    const { version } = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    const run = runDvl(['--version']);
    expect(run.status).toBe(0);
    expect(run.stdout.split("\n")[0]).toBe(`dvl ${version}`);
    expect(run.stderr).toBe('');
  });
});
