/**
 * `dvl serve` going away, against the real server on 127.0.0.1 with a tiny fp32 model: a drain (what
 * SIGINT/SIGTERM start) ends a streamed answer it cuts properly (OpenAI: a last chunk with finish_reason, the
 * usage chunk, [DONE]; Ollama: a last object with done and done_reason "shutdown"), and answers requests that
 * were running or waiting, but not yet streaming, with 503 "the server is shutting down". And the real binary
 * with a model that cannot load exits 3 with the load error, rather than serving without a model.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ollama } from 'ollama';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextTokenizer } from '../src/prompt/tokenizer.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { DVL_BIN, REPO_ROOT, runDvlAsync } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';
import { testServeOptions, waitHealthy } from './helpers/test-server.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-serve-shutdown-'));
const ckpt = path.join(work, 'tiny');
const home = path.join(work, 'home');
const env = { DVL_HOME: home, HF_HUB_CACHE: path.join(work, 'hub'), HF_HUB_OFFLINE: '1' };
const PROMPT = 'What is in the box?';
/** Long enough (256 decoder calls) that a drain of 300 ms after the first text always cuts it. */
const LONG = { max_tokens: 256, steps: 8 };
const servers: RunningServer[] = [];

/** A server on the shared store; pings far apart, so that a waiting stream has not started when it drains. */
async function serve(): Promise<RunningServer> {
  const server = await startServer(testServeOptions({ pingMs: 60_000, pool: { model: ckpt, env: { ...process.env, ...env } } }));
  servers.push(server);
  await waitHealthy(server.url);
  return server;
}

let full: { text: string; tokens: number[]; promptTokens: number };
let tokenizer: TextTokenizer;

beforeAll(async () => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 });
  tokenizer = TextTokenizer.load(ckpt);
  // The whole answer, for what a cut one must be the beginning of.
  const server = await serve();
  const response = await post(server.url, '/v1/chat/completions', chat());
  const body = (await response.json()) as { choices: { message: { content: string } }[]; usage: { prompt_tokens: number; completion_tokens: number } };
  const ask = await runDvlAsync(['ask', '-m', ckpt, '--dtype', 'fp32', '-n', '256', '-s', '8', '-q', '--json', PROMPT], env);
  if (ask.status !== 0) throw new Error(ask.stderr);
  const local = JSON.parse(ask.stdout) as { text: string; tokens: number[] };
  expect(body.choices[0].message.content).toBe(local.text);
  full = { text: local.text, tokens: local.tokens, promptTokens: body.usage.prompt_tokens };
  expect(full.tokens.length).toBeGreaterThan(64);
}, 180_000);

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close(0)));
  fs.rmSync(work, { recursive: true, force: true });
});

const chat = (extra: object = {}) => ({ model: ckpt, messages: [{ role: 'user', content: PROMPT }], ...LONG, ...extra });
const ollamaChat = (extra: object = {}) => ({ model: ckpt, messages: [{ role: 'user', content: PROMPT }], options: { num_predict: 256, steps: 8 }, ...extra });
const post = (url: string, route: string, body: object) => fetch(`${url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

/** Reads a response body until `until(text so far)` holds; then the rest, on demand. */
function reading(response: Response) {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  return {
    get text() {
      return text;
    },
    async until(condition: (text: string) => boolean) {
      while (!condition(text)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the answer ended early: ${text}`);
        text += decoder.decode(value, { stream: true });
      }
    },
    async rest() {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return text;
        text += decoder.decode(value, { stream: true });
      }
    },
  };
}

/** Until the server's line holds `depth` requests (running + waiting). */
async function queueDepth(url: string, depth: number) {
  for (let i = 0; i < 200; i++) {
    const metrics = await (await fetch(`${url}/metrics`)).text();
    if (new RegExp(`^dvl_queue_depth ${depth}$`, 'm').test(metrics)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`the queue never held ${depth}`);
}

/** The tokens of the whole answer whose text the cut one returned: the cut is at a token boundary. */
function tokensOf(text: string): number {
  const n = [...full.tokens.keys()].find((i) => tokenizer.decode(full.tokens.slice(0, i)) === text);
  expect(n, `'${text}' is not the text of the answer's first tokens`).toBeDefined();
  return n!;
}

async function expectShuttingDown(response: Response, shape: 'openai' | 'ollama') {
  const text = await response.text();
  expect(response.status, text).toBe(503);
  const body = JSON.parse(text) as { error: string | { message: string; code: string } };
  if (shape === 'ollama') expect(body).toEqual({ error: 'the server is shutting down' });
  else expect(body.error).toMatchObject({ message: 'the server is shutting down', code: 'shutting_down' });
}

describe('a drain', () => {
  it('OpenAI: a cut stream ends with finish_reason, the usage chunk and [DONE]; waiting requests get 503', async () => {
    const server = await serve();
    const running = reading(await post(server.url, '/v1/chat/completions', chat({ stream: true, stream_options: { include_usage: true } })));
    await running.until((text) => /"delta":\{"content":"[^"]/.test(text));
    const waiting = post(server.url, '/v1/chat/completions', chat());
    const waitingStream = post(server.url, '/v1/chat/completions', chat({ stream: true }));
    await queueDepth(server.url, 3);

    const closed = server.close(300);
    await expectShuttingDown(await waiting, 'openai');
    await expectShuttingDown(await waitingStream, 'openai');
    const sse = await running.rest();
    await closed;

    const events = sse.split('\n\n').filter((e) => e.startsWith('data: '));
    expect(events.at(-1)).toBe('data: [DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)) as { choices: { delta: { content?: string }; finish_reason: string | null }[]; usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null });
    const finished = chunks.filter((c) => c.choices[0]?.finish_reason);
    expect(finished).toHaveLength(1);
    expect(finished[0].choices[0].finish_reason).toBe('length');
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    expect(text.length).toBeGreaterThan(0);
    expect(text.length).toBeLessThan(full.text.length);
    expect(full.text.startsWith(text)).toBe(true);
    const usage = chunks.at(-1)!;
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toEqual({ prompt_tokens: full.promptTokens, completion_tokens: tokensOf(text), total_tokens: full.promptTokens + tokensOf(text) });
  });

  it('Ollama: a cut stream ends with done and done_reason "shutdown"; a waiting stream gets 503', async () => {
    const server = await serve();
    const parts = await new Ollama({ host: server.url }).chat({ ...ollamaChat(), stream: true } as never);
    const iterator = parts[Symbol.asyncIterator]();
    let text = '';
    while (text === '') {
      const next = await iterator.next();
      if (next.done) throw new Error('the answer ended early');
      text += next.value.message.content;
    }
    const waiting = post(server.url, '/api/chat', ollamaChat({ stream: true }));
    await queueDepth(server.url, 2);
    const closed = server.close(300);
    await expectShuttingDown(await waiting, 'ollama');
    let last: { done: boolean; done_reason?: string; eval_count?: number; prompt_eval_count?: number } | undefined;
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
      text += next.value.message.content;
      last = next.value;
    }
    await closed;
    expect(last).toMatchObject({ done: true, done_reason: 'shutdown', prompt_eval_count: full.promptTokens, eval_count: tokensOf(text) });
    expect(full.text.startsWith(text)).toBe(true);
    expect(text.length).toBeLessThan(full.text.length);
  });

  it('a running answer that is not streamed, and one waiting, get 503 in their API shape', async () => {
    const server = await serve();
    const running = post(server.url, '/v1/chat/completions', chat());
    await queueDepth(server.url, 1);
    const waiting = post(server.url, '/api/generate', { model: ckpt, prompt: PROMPT, stream: false, options: { num_predict: 256, steps: 8 } });
    await queueDepth(server.url, 2);
    const closed = server.close(300);
    await expectShuttingDown(await waiting, 'ollama');
    await expectShuttingDown(await running, 'openai');
    await closed;
  });
});

describe('dvl serve -m with a model that cannot load', () => {
  /** The binary until it exits; a server still running after `timeoutMs` is killed (and fails the test). */
  function serveBinary(model: string, timeoutMs = 60_000): Promise<{ code: number | null; stderr: string; healthy: boolean }> {
    const child = spawn(process.execPath, [DVL_BIN, 'serve', '-m', model, '--dtype', 'fp32', '--host', '127.0.0.1', '--port', '0', '--threads', '1'], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env, NO_COLOR: '1', CI: '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    let healthy = false;
    const poll = setInterval(() => {
      const url = /serving on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr)?.[1];
      if (url) void fetch(`${url}/health`).then((r) => (healthy ||= r.status === 200), () => {});
    }, 20);
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    return new Promise((resolve) =>
      child.on('close', (code) => {
        clearTimeout(timer);
        clearInterval(poll);
        resolve({ code, stderr, healthy });
      }),
    );
  }

  it('a checkpoint whose config.json is not JSON: exit 3, the error as one dvl: line', async () => {
    // The tiny checkpoint, weights and tokenizer included, with a config.json cut short.
    const broken = path.join(work, 'broken');
    fs.cpSync(ckpt, broken, { recursive: true });
    fs.writeFileSync(path.join(broken, 'config.json'), '{"model_type": ');
    const run = await serveBinary(broken);
    expect(run.code, run.stderr).toBe(3);
    expect(run.healthy).toBe(false);
    const lines = run.stderr.trimEnd().split('\n');
    expect(lines.at(-1)).toMatch(new RegExp(`^dvl: cannot load ${broken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*config\\.json is not valid JSON`));
    expect(lines.every((l) => l.startsWith('dvl: '))).toBe(true);
    expect(lines.filter((l) => l.includes('config.json'))).toHaveLength(1);
  });

  it('a converted model whose graph is damaged: exit 3', async () => {
    // The tiny model's conversion (made above); its decoder graph overwritten, size and time kept, so the store
    // takes it for current.
    const variant = fs.readdirSync(home, { recursive: true, withFileTypes: true }).find((e) => e.name === 'manifest.json');
    expect(variant).toBeDefined();
    const dir = variant!.parentPath;
    const graph = fs.readdirSync(dir).find((f) => f.endsWith('.onnx') && f.includes('decoder'));
    expect(graph, fs.readdirSync(dir).join(', ')).toBeDefined();
    const file = path.join(dir, graph!);
    const stat = fs.statSync(file);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.alloc(Math.min(4096, stat.size), 0xff), 0);
    fs.closeSync(fd);
    fs.utimesSync(file, stat.atime, stat.mtime);
    const run = await serveBinary(ckpt);
    expect(run.code, run.stderr).toBe(3);
    expect(run.healthy).toBe(false);
    expect(run.stderr.trimEnd().split('\n').at(-1)).toMatch(/^dvl: cannot load .*tiny: /);
  });
});
