/**
 * Without a network, `dvl pull` / `dvl ask` of a Hub model fail at once with the offline hint, instead of
 * retrying in silence; the retries that do happen (5xx, 429, dropped connections) each print one line.
 * Only 127.0.0.1 is contacted: a port nobody listens on stands for an unreachable Hub, and the local Hub
 * server (helpers/hub-server.ts) injects the 503s and dropped connections.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { networkErrorCode, type RetryNotice, unreachableCode } from '../src/hub/client.js';
import { parseHubRef } from '../src/hub/cache.js';
import { pullSnapshot } from '../src/hub/pull.js';
import { DvlError } from '../src/util/errors.js';
import { runDvlAsync } from './helpers/cli.js';
import { type HubServer, startHubServer } from './helpers/hub-server.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const ID = 'test-org/Tiny-DiffusionVL';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-offline-'));
const ckpt = path.join(work, 'ckpt');
let server: HubServer;
/** A 127.0.0.1 port with nothing listening: connections are refused at once. */
let closedPort: number;

beforeAll(async () => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }) });
  server = await startHubServer();
  server.publish(ID, ckpt);
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  closedPort = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
});
afterAll(async () => {
  await server?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** The real binary, asynchronously (the server runs in this process), with a store and cache of its own. */
function dvl(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  const home = fs.mkdtempSync(path.join(work, 'home-'));
  return runDvlAsync(args, { HOME: home, DVL_HOME: path.join(home, 'dvl'), HF_HUB_CACHE: path.join(home, 'hf'), HF_HUB_OFFLINE: '', HF_TOKEN: '', ...env }, 90_000);
}

const OFFLINE_HINT = /^dvl: cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\); check the connection, or use --offline \(or HF_HUB_OFFLINE=1\) for models already downloaded\n$/;

describe('an unreachable Hub', () => {
  // The default backoff (1 s, doubled, 5 retries) stays on: retrying a refused connection would take 31 s.
  it('dvl pull fails within seconds, exit 3, with the offline hint', async () => {
    const run = await dvl(['pull', ID], { HF_ENDPOINT: `http://127.0.0.1:${closedPort}` });
    expect(run.status, run.stderr).toBe(3);
    expect(run.stderr).toMatch(OFFLINE_HINT);
    expect(run.seconds).toBeLessThan(10);
  });

  it('dvl ask of a model never pulled (the default one) fails the same way', async () => {
    const run = await dvl(['ask', 'Hello'], { HF_ENDPOINT: `http://127.0.0.1:${closedPort}` });
    expect(run.status, run.stderr).toBe(3);
    expect(run.stderr).toMatch(OFFLINE_HINT);
    expect(run.seconds).toBeLessThan(10);
  });

  it('the library: no retry, no retry notice, a DvlError naming ECONNREFUSED', async () => {
    const notices: RetryNotice[] = [];
    const started = performance.now();
    const error = await pullSnapshot(parseHubRef(ID), {
      cacheDir: path.join(work, 'lib-cache'),
      endpoint: `http://127.0.0.1:${closedPort}`,
      retries: 5,
      retryBaseMs: 1000,
      onRetry: (n) => notices.push(n),
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DvlError);
    expect((error as DvlError).message).toMatch(/\(ECONNREFUSED\).*--offline/);
    expect(notices).toEqual([]);
    expect(performance.now() - started).toBeLessThan(3000);
  });
});

describe('retries are announced', () => {
  it('a 503 on a download, then 200: one retry line, and the pull succeeds', async () => {
    server.faults.failWith.set('config.json', { status: 503, times: 1 });
    const run = await dvl(['pull', ID, '--dtype', 'fp32'], { HF_ENDPOINT: server.endpoint, DVL_HUB_RETRY_MS: '5' });
    expect(run.status, run.stderr).toBe(0);
    const retries = run.stderr.split('\n').filter((l) => l.includes('retrying'));
    expect(retries).toEqual([`dvl: ${server.endpoint} answered 503; retrying in 5 ms (attempt 2 of 6)`]);
  });

  it('a 503 from the API and a dropped download: a line for each', async () => {
    server.faults.failPaths.set('/api/models/', { status: 503, times: 2 });
    server.faults.dropAfter.set('model.safetensors', 2000);
    const run = await dvl(['pull', ID, '--dtype', 'fp32'], { HF_ENDPOINT: server.endpoint, DVL_HUB_RETRY_MS: '5' });
    expect(run.status, run.stderr).toBe(0);
    const retries = run.stderr.split('\n').filter((l) => l.includes('retrying'));
    expect(retries).toHaveLength(3);
    expect(retries[0]).toBe(`dvl: ${server.endpoint} answered 503; retrying in 5 ms (attempt 2 of 6)`);
    expect(retries[1]).toBe(`dvl: ${server.endpoint} answered 503; retrying in 10 ms (attempt 3 of 6)`);
    expect(retries[2]).toMatch(new RegExp(`^dvl: the connection to ${server.endpoint} was lost during model\\.safetensors( \\([A-Z_]+\\))?; retrying in 5 ms \\(attempt 2 of 6\\)$`));
  });
});

describe('network error codes', () => {
  it("are found in a real fetch failure's cause", async () => {
    const error = await fetch(`http://127.0.0.1:${closedPort}/`).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(TypeError);
    expect(networkErrorCode(error)).toBe('ECONNREFUSED');
    expect(unreachableCode(error)).toBe('ECONNREFUSED');
  });

  it('deeper down too: a cause of a cause, an AggregateError per address; a reset is not "unreachable"', () => {
    const sysError = (code: string) => Object.assign(new Error(`connect ${code}`), { code });
    const dns = new TypeError('fetch failed', { cause: new Error('wrapped', { cause: sysError('ENOTFOUND') }) });
    expect(unreachableCode(dns)).toBe('ENOTFOUND');
    const perAddress = new TypeError('fetch failed', { cause: new AggregateError([sysError('EAI_AGAIN'), sysError('ECONNREFUSED')]) });
    expect(unreachableCode(perAddress)).toBe('EAI_AGAIN');
    const reset = new TypeError('fetch failed', { cause: sysError('ECONNRESET') });
    expect(networkErrorCode(reset)).toBe('ECONNRESET');
    expect(unreachableCode(reset)).toBeUndefined();
    expect(networkErrorCode(new Error('no code'))).toBeUndefined();
  });
});
