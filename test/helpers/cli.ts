/** Runs the real `dvl` binary (bin/dvl.js) in a child process, as a user would. */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DVL_BIN = path.join(REPO_ROOT, 'bin/dvl.js');

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function runDvl(args: string[], options: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {}): CliResult {
  const result = spawnSync(process.execPath, [DVL_BIN, ...args], {
    cwd: options.cwd ?? REPO_ROOT,
    env: { ...process.env, NO_COLOR: '1', ...options.env },
    input: options.input ?? '',
    encoding: 'utf8',
    timeout: 240_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}
