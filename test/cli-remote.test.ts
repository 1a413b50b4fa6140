/**
 * `dvl ask --host` and `dvl chat --host` through the real binary against the real server (in this process,
 * on 127.0.0.1, a tiny fp32 model): what they print is what the local commands print with the same settings
 * and the same store — the plain text, --json (but for its timings), --jsonl's events (but for their
 * timings), an image question, a scripted chat. A bad image fails before the server is asked (exit 2); a
 * server that is not there is exit 3 with one line; the API key and the server's HTTP errors (an unknown
 * model is exit 3, as locally); without -m the server's loaded model; --verbose says the memory is not known.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningServer, type ServeOptions, startServer } from '../src/server/serve.js';
import { type CliResult, DVL_BIN, REPO_ROOT } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';
import { testServeOptions, waitHealthy } from './helpers/test-server.js';

const IMAGE = path.resolve('fixtures/images/chelsea.png');
const PROMPT = 'What is in the box?';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-cli-remote-'));
const ckpt = path.join(work, 'tiny');
const home = path.join(work, 'home');
const env = { DVL_HOME: home, DVL_HOST: '', DVL_API_KEY: '' };
const OPTS = ['-m', ckpt, '--dtype', 'fp32', '-n', '16', '-s', '4', '--min-pixels', '784', '--max-pixels', '3136', '--threads', '1', '--seed', '5', '-q'];
/** The same settings without -m: the server's model. */
const NO_MODEL = OPTS.slice(2);

/** The binary, without blocking this process (its server must keep answering); `input` on stdin. */
function dvl(args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [DVL_BIN, ...args], { cwd: REPO_ROOT, env: { ...process.env, NO_COLOR: '1', CI: '1', ...env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(options.input ?? '');
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** `model` null: a server without a --model (an undefined argument would take the default). */
const serveOptions = (overrides: Partial<Omit<ServeOptions, 'pool'>> = {}, model: string | null = ckpt): ServeOptions =>
  testServeOptions({ log: (line) => accessLog.push(line), ...overrides, pool: { model: model ?? undefined, env: { ...process.env, DVL_HOME: home } } });

const accessLog: string[] = [];
let server: RunningServer;
const ok = (run: CliResult) => {
  expect(run.status, run.stderr).toBe(0);
  return run.stdout;
};

/** --json without its timings. */
function untimed(stdout: string): Record<string, unknown> {
  const json = JSON.parse(stdout) as { stats: { ms?: unknown } };
  expect(json.stats.ms).toBeTypeOf('object');
  delete json.stats.ms;
  return json;
}

/** --jsonl's lines without their timings (each event's "ms", the result's stats.ms). */
function untimedLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .trimEnd()
    .split('\n')
    .map((line) => {
      const object = JSON.parse(line) as Record<string, unknown> & { ms?: number; stats?: { ms?: unknown } };
      if (object.type === 'result') {
        expect(object.stats!.ms).toBeTypeOf('object');
        delete object.stats!.ms;
      } else {
        expect(object.ms).toBeTypeOf('number');
        delete object.ms;
      }
      return object;
    });
}

const CHAT_INPUT = 'What is this?\nAnd the colour?\n/show\n';

/** The local runs, made before the server starts (the first one converts the model into the shared store). */
let local: { text: CliResult; json: CliResult; jsonl: CliResult; image: CliResult; chat: CliResult };

beforeAll(async () => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 });
  const text = await dvl(['ask', ...OPTS, PROMPT]);
  const [json, jsonl, image, chat] = await Promise.all([
    dvl(['ask', ...OPTS, '--json', PROMPT]),
    dvl(['ask', ...OPTS, '--jsonl', IMAGE, PROMPT]),
    dvl(['ask', ...OPTS, '--json', IMAGE, 'Describe this image.']),
    dvl(['chat', ...OPTS, IMAGE], { input: CHAT_INPUT }),
  ]);
  local = { text, json, jsonl, image, chat };
  server = await startServer(serveOptions());
  // The served model loads at start-up; its first answer should not wait for that.
  await waitHealthy(server.url);
}, 120_000);

afterAll(async () => {
  await server?.close(1000);
  fs.rmSync(work, { recursive: true, force: true });
});

describe('dvl ask --host', () => {
  it('prints the local plain text, --json and --jsonl (timings aside)', async () => {
    const host = ['--host', server.url];
    const [text, json, jsonl] = await Promise.all([
      dvl(['ask', ...host, ...OPTS, PROMPT]),
      // DVL_HOST does what --host does.
      dvl(['ask', ...OPTS, '--json', PROMPT], { env: { DVL_HOST: server.url } }),
      dvl(['ask', ...host, ...OPTS, '--jsonl', IMAGE, PROMPT]),
    ]);
    expect(ok(text)).toBe(ok(local.text));
    expect(ok(text).length).toBeGreaterThan(1);
    const remoteJson = untimed(ok(json));
    expect(remoteJson).toEqual(untimed(ok(local.json)));
    expect(remoteJson).toMatchObject({ model: ckpt, dtype: 'fp32' });
    // Byte for byte, once the timings are put back as the local run's.
    const localJson = JSON.parse(local.json.stdout) as { stats: { ms: unknown } };
    const byteCheck = JSON.parse(json.stdout) as { stats: { ms: unknown } };
    byteCheck.stats.ms = localJson.stats.ms;
    expect(`${JSON.stringify(byteCheck)}\n`).toBe(local.json.stdout);

    const events = untimedLines(ok(jsonl));
    expect(events).toEqual(untimedLines(ok(local.jsonl)));
    const types = new Set(events.map((e) => e.type));
    for (const type of ['stage', 'block-start', 'unmask', 'block-end', 'finished', 'result']) expect(types).toContain(type);
    expect(events.at(-1)!.type).toBe('result');
  }, 60_000);

  it('answers an image question as the local run does', async () => {
    const run = await dvl(['ask', '--host', server.url, ...OPTS, '--json', IMAGE, 'Describe this image.']);
    const json = untimed(ok(run));
    expect(json).toEqual(untimed(ok(local.image)));
    expect((json.images as unknown[]).length).toBe(1);
  }, 30_000);

  it('a bad image fails here, before the server is asked (exit 2)', async () => {
    const bad = path.join(work, 'broken.png');
    fs.writeFileSync(bad, 'not a png');
    const before = accessLog.length;
    const [corrupt, missing] = await Promise.all([
      dvl(['ask', '--host', server.url, ...OPTS, bad, PROMPT]),
      dvl(['ask', '--host', server.url, ...OPTS, path.join(work, 'missing.png'), PROMPT]),
    ]);
    expect(corrupt.status, corrupt.stderr).toBe(2);
    expect(corrupt.stderr).toMatch(/^dvl: .*broken\.png/);
    expect(missing.status, missing.stderr).toBe(2);
    expect(missing.stderr).toMatch(/^dvl: image not found: .*missing\.png\n$/);
    expect(corrupt.stdout + missing.stdout).toBe('');
    expect(accessLog.length).toBe(before);
  }, 30_000);

  it('a server that is not there: one line, exit 3', async () => {
    const port = await freePort();
    const run = await dvl(['ask', '--host', `127.0.0.1:${port}`, ...OPTS, PROMPT]);
    expect(run.status, run.stderr).toBe(3);
    expect(run.stderr).toMatch(new RegExp(`^dvl: cannot reach dvl serve at http://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED.*\\n$`));
    expect(run.stdout).toBe('');
  }, 30_000);

  it('sends the API key; a server that wants one says how to give it (exit 1); an unknown model is a model error (exit 3)', async () => {
    // No model to load here: only the key check and the model lookup run.
    const keyed = await startServer(serveOptions({ apiKey: 'sesame' }, null));
    try {
      const [noKey, wrongKey, unknown, noKeyNoModel] = await Promise.all([
        dvl(['ask', '--host', keyed.url, ...OPTS, PROMPT]),
        dvl(['ask', '--host', keyed.url, '--api-key', 'open', ...OPTS, PROMPT]),
        dvl(['ask', '--host', keyed.url, ...OPTS, '-m', 'nobody/nothing', PROMPT], { env: { DVL_API_KEY: 'sesame' } }),
        // Without -m the server is asked which model it has: that needs the key too.
        dvl(['ask', '--host', keyed.url, ...NO_MODEL, PROMPT]),
      ]);
      expect(noKey.status, noKey.stderr).toBe(1);
      expect(noKey.stderr).toBe(`dvl: dvl serve at ${keyed.url} wants an API key: pass --api-key or set DVL_API_KEY\n`);
      expect(wrongKey.status, wrongKey.stderr).toBe(1);
      expect(wrongKey.stderr).toBe(`dvl: dvl serve at ${keyed.url} refused the API key: check --api-key or DVL_API_KEY\n`);
      expect(noKeyNoModel.status, noKeyNoModel.stderr).toBe(1);
      expect(noKeyNoModel.stderr).toBe(noKey.stderr);
      // As `dvl ask -m nobody/nothing` without --host: a model problem.
      expect(unknown.status, unknown.stderr).toBe(3);
      expect(unknown.stderr).toMatch(/^dvl: model 'nobody\/nothing' not found/);
      expect(unknown.stderr.split('\n')).toHaveLength(2);
    } finally {
      await keyed.close(1000);
    }
  }, 30_000);

  it("without -m: the server's loaded model; a server with none loaded is a usage error that lists its models", async () => {
    const [text, json] = await Promise.all([dvl(['ask', '--host', server.url, ...NO_MODEL, PROMPT]), dvl(['ask', '--host', server.url, ...NO_MODEL, '--json', PROMPT])]);
    expect(ok(text)).toBe(ok(local.text));
    expect(untimed(ok(json))).toEqual(untimed(ok(local.json)));
    const chat = await dvl(['chat', '--host', server.url, ...NO_MODEL, IMAGE], { input: CHAT_INPUT });
    expect(ok(chat)).toBe(ok(local.chat));

    const idle = await startServer(serveOptions({}, null));
    try {
      const none = await dvl(['ask', '--host', idle.url, ...NO_MODEL, PROMPT]);
      expect(none.status, none.stderr).toBe(1);
      expect(none.stderr).toBe(`dvl: dvl serve at ${idle.url} has no model loaded: name one with -m (it has ${ckpt})\n`);
    } finally {
      await idle.close(1000);
    }
  }, 60_000);

  it("--verbose does not report this process's memory as the run's", async () => {
    const run = await dvl(['ask', '--host', server.url, ...OPTS, '--verbose', PROMPT]);
    expect(ok(run)).toBe(ok(local.text));
    expect(run.stderr).toMatch(/NFE/);
    expect(run.stderr).not.toMatch(/peak RSS \d+ MB/);
    expect(run.stderr).toContain(`dvl: peak RSS not known here: the model ran in dvl serve at ${server.url}\n`);
  }, 30_000);
});

describe('dvl chat --host', () => {
  it('a scripted chat prints the local answers', async () => {
    const run = await dvl(['chat', '--host', server.url, ...OPTS, IMAGE], { input: CHAT_INPUT });
    const answers = ok(run);
    expect(answers).toBe(ok(local.chat));
    // Two answers, then /show (with the model's block size, told by the server).
    expect(answers).toMatch(/\nblock-size 8\n/);
  }, 30_000);
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}
