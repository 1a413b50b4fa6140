/** Runs the real `dvl` binary (bin/dvl.js) in a child process, as a user would. */
import { spawn, spawnSync } from 'node:child_process';
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

/**
 * Like runDvl, without blocking this process (a test server in this process must keep answering): NO_COLOR
 * and CI set, then `env`; killed after `timeoutMs`. `seconds` is the child's wall time.
 */
export function runDvlAsync(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<CliResult & { seconds: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [DVL_BIN, ...args], { cwd: REPO_ROOT, env: { ...process.env, NO_COLOR: '1', CI: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, seconds: (performance.now() - started) / 1000 });
    });
  });
}

