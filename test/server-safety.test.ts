/**
 * `dvl serve`'s robustness, against the real server on 127.0.0.1 with a tiny model: API key, CORS, the Host
 * check, the body limit, hostile images, request validation, the queue limit, a client that leaves mid-stream,
 * keep-alive unloading, a few hundred malformed requests, and the real binary's access log and SIGTERM drain.
 * Every request goes to 127.0.0.1 only; each test is bounded in count and time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PoolOptions } from '../src/server/model-pool.js';
import { startServer, type RunningServer, type ServeOptions } from '../src/server/serve.js';
import { DVL_BIN, REPO_ROOT } from './helpers/cli.js';
import { prng, tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';
import { testServeOptions, waitHealthy } from './helpers/test-server.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-safety-'));
const ckpt = path.join(work, 'tiny');
const home = path.join(work, 'home');
const poolEnv = { ...process.env, DVL_HOME: home, HF_HUB_OFFLINE: '1' };
const QUICK = { max_tokens: 8, steps: 2 };

/** Every server started here, closed in afterAll whatever a test did. */
const servers: RunningServer[] = [];
let main: RunningServer;
const mainLog: string[] = [];
/** Process warnings while the tests run: a listener leaked per request shows as MaxListenersExceededWarning. */
const warnings: Error[] = [];
const onWarning = (warning: Error) => warnings.push(warning);

function serveOptions(overrides: Partial<Omit<ServeOptions, 'pool'>> & { pool?: Partial<PoolOptions> } = {}): ServeOptions {
  const { pool, ...rest } = overrides;
  return testServeOptions({ bodyLimitBytes: 1024 * 1024, maxQueue: 4, ...rest, pool: { keepAliveMs: 10 * 60_000, imageCacheBytes: 16 << 20, env: poolEnv, ...pool } });
}

async function serve(overrides: Parameters<typeof serveOptions>[0] = {}): Promise<RunningServer> {
  const server = await startServer(serveOptions(overrides));
  servers.push(server);
  return server;
}


const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json(): any;
}

/**
 * One request on its own connection through node:http, which (unlike fetch) sends any Host header, method,
 * content-type and bytes. Rejects only on a socket error or after `timeoutMs`.
 */
function raw(
  base: string,
  options: { method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer; chunked?: Buffer[]; timeoutMs?: number },
): Promise<RawResponse> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: '127.0.0.1',
        port: Number(url.port),
        method: options.method ?? 'GET',
        path: options.path,
        // A body always with its length: without one, a GET's body would be read as the next request.
        headers: { ...(options.body !== undefined ? { 'content-length': String(Buffer.byteLength(options.body)) } : {}), ...options.headers },
        agent: false,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (c: Buffer) => chunks.push(c));
        response.on('end', () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: response.statusCode ?? 0, headers: response.headers, text, json: () => JSON.parse(text) });
        });
        response.on('error', reject);
      },
    );
    const timer = setTimeout(() => request.destroy(new Error(`${options.method ?? 'GET'} ${options.path}: no answer in ${options.timeoutMs ?? 30_000} ms`)), options.timeoutMs ?? 30_000);
    request.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    if (options.chunked) {
      for (const chunk of options.chunked) request.write(chunk);
      request.end();
    } else {
      request.end(options.body);
    }
  });
}

const postJson = (base: string, route: string, body: unknown, headers: Record<string, string> = {}) =>
  raw(base, { method: 'POST', path: route, headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });

const chatBody = (extra: object = {}) => ({ model: ckpt, messages: [{ role: 'user', content: 'What is in the box?' }], ...QUICK, ...extra });
const ollamaChat = (extra: object = {}) => ({ model: ckpt, messages: [{ role: 'user', content: 'What is in the box?' }], stream: false, options: { num_predict: 8, steps: 2 }, ...extra });

function expectOpenAiError(response: RawResponse, status: number): { message: string; type: string; param: string | null; code: string } {
  expect(response.status, response.text).toBe(status);
  const body = response.json();
  expect(Object.keys(body)).toEqual(['error']);
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(typeof body.error.message).toBe('string');
  expect(typeof body.error.type).toBe('string');
  expect(typeof body.error.code).toBe('string');
  expect(body.error.param === null || typeof body.error.param === 'string').toBe(true);
  return body.error;
}

function expectOllamaError(response: RawResponse, status: number): string {
  expect(response.status, response.text).toBe(status);
  const body = response.json();
  expect(Object.keys(body)).toEqual(['error']);
  expect(typeof body.error).toBe('string');
  return body.error;
}

async function metric(base: string, name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

/**
 * A PNG that declares width x height: signature, IHDR, an IDAT holding an empty zlib stream (sharp wants to see
 * one) and IEND, each chunk with its CRC. Its header is all sharp reads for metadata; decoding it would need
 * width * height * 3 bytes.
 */
function pngHeader(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, deflate, adaptive filtering, not interlaced
  const chunk = (type: string, data: Buffer) => {
    const typed = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(typed));
    return Buffer.concat([length, typed, crc]);
  };
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk('IHDR', ihdr), chunk('IDAT', Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])), chunk('IEND', Buffer.alloc(0))]);
}

function crc32(bytes: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** VmRSS and Threads of this process (the inference workers are threads of it). */
function procStatus(): { rssMb: number; threads: number } {
  const text = fs.readFileSync('/proc/self/status', 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
  return { rssMb: Math.round(field('VmRSS') / 1024), threads: field('Threads') };
}

/** Reads an SSE response until `until` says stop (given the text so far) or the stream ends. */
async function readSse(response: Response, until: (text: string) => boolean = () => false): Promise<{ text: string; ended: boolean }> {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return { text, ended: true };
    text += decoder.decode(value, { stream: true });
    if (until(text)) {
      await reader.cancel().catch(() => {});
      return { text, ended: false };
    }
  }
}

const hasContent = (sse: string) => /"delta":\{"content":"[^"]+/.test(sse);

/** Lists every file under `dir` with its size and mtime. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const full = path.join(entry.parentPath, entry.name);
    const st = fs.lstatSync(full);
    out.push(`${path.relative(dir, full)} ${st.isDirectory() ? 'dir' : st.size} ${st.mtimeMs}`);
  }
  return out.sort();
}

beforeAll(async () => {
  process.on('warning', onWarning);
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 });
  main = await serve({ allowedHosts: ['proxy.example'], log: (line) => mainLog.push(line), pool: { model: ckpt } });
  // The first load converts the checkpoint into the temporary store.
  await waitHealthy(main.url, 120_000);
}, 180_000);

afterAll(async () => {
  process.off('warning', onWarning);
  await Promise.all(servers.map((s) => s.close(1000)));
  fs.rmSync(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------------

describe('API key', () => {
  it('refuses a missing or wrong key with 401 in each API shape, accepts the right one; /health needs none', async () => {
    const server = await serve({ apiKey: 'sekrit-key' });
    const routes = [
      { path: '/v1/models', shape: 'openai' },
      { path: '/api/tags', shape: 'ollama' },
    ] as const;
    for (const { path: route, shape } of routes) {
      for (const headers of [{} as Record<string, string>, { authorization: 'Bearer wrong' }, { authorization: 'Bearer sekrit-key-and-more' }, { authorization: 'Basic sekrit-key' }, { authorization: 'sekrit-key' }]) {
        const response = await raw(server.url, { path: route, headers });
        if (shape === 'openai') expect(expectOpenAiError(response, 401).type).toBe('authentication_error');
        else expectOllamaError(response, 401);
        expect(response.headers['www-authenticate']).toBe('Bearer');
      }
      const ok = await raw(server.url, { path: route, headers: { authorization: 'Bearer sekrit-key' } });
      expect(ok.status, ok.text).toBe(200);
    }
    // A POST without the key never reaches validation or the model.
    expectOpenAiError(await postJson(server.url, '/v1/chat/completions', chatBody()), 401);
    expectOllamaError(await postJson(server.url, '/api/chat', ollamaChat()), 401);
    // Unknown routes too: without the key nothing says which routes exist.
    expectOpenAiError(await raw(server.url, { path: '/nope' }), 401);
    const health = await raw(server.url, { path: '/health' });
    expect(health.status).toBe(200);
    expect(health.json().status).toBe('ok');
  });
});

describe('CORS', () => {
  const preflight = (base: string, origin: string) =>
    raw(base, {
      method: 'OPTIONS',
      path: '/v1/chat/completions',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,authorization' },
    });

  it('answers preflights and requests from a listed origin only, and without any key', async () => {
    const server = await serve({ corsOrigins: ['http://ok.example'], apiKey: 'k' });
    const ok = await preflight(server.url, 'http://ok.example');
    expect(ok.status).toBeLessThan(300);
    expect(ok.headers['access-control-allow-origin']).toBe('http://ok.example');
    expect(String(ok.headers['access-control-allow-methods'])).toContain('POST');
    expect(String(ok.headers['access-control-allow-headers']).toLowerCase()).toContain('authorization');

    const evil = await preflight(server.url, 'http://evil.example');
    expect(evil.headers['access-control-allow-origin']).toBeUndefined();
    const get = await raw(server.url, { path: '/v1/models', headers: { origin: 'http://ok.example', authorization: 'Bearer k' } });
    expect(get.status).toBe(200);
    expect(get.headers['access-control-allow-origin']).toBe('http://ok.example');
    const evilGet = await raw(server.url, { path: '/v1/models', headers: { origin: 'http://evil.example', authorization: 'Bearer k' } });
    expect(evilGet.headers['access-control-allow-origin']).toBeUndefined();
    // A refusal is readable by the listed origin's page too (the CORS headers go on the 401).
    const noKey = await raw(server.url, { path: '/v1/models', headers: { origin: 'http://ok.example' } });
    expect(noKey.status).toBe(401);
    expect(noKey.headers['access-control-allow-origin']).toBe('http://ok.example');
  });

  it('sends no CORS headers at all without --cors-origin', async () => {
    for (const response of [
      await preflight(main.url, 'http://ok.example'),
      await raw(main.url, { path: '/v1/models', headers: { origin: 'http://ok.example' } }),
      await raw(main.url, { path: '/api/tags', headers: { origin: 'null' } }),
    ]) {
      expect(Object.keys(response.headers).filter((h) => h.startsWith('access-control-'))).toEqual([]);
    }
  });
});

describe('Host header', () => {
  it('accepts loopback names and --allowed-host names, refuses any other with 403', async () => {
    const port = new URL(main.url).port;
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, 'localhost', 'LOCALHOST.', 'proxy.example', 'Proxy.Example:8443']) {
      const response = await raw(main.url, { path: '/v1/models', headers: { host } });
      expect(response.status, host).toBe(200);
    }
    for (const host of ['evil.example', `evil.example:${port}`, 'localhost.evil.example', '127.0.0.1.nip.io', 'evil.example@localhost', `[::2]:${port}`, 'proxy.example.evil']) {
      const openai = await raw(main.url, { path: '/v1/models', headers: { host } });
      expect(expectOpenAiError(openai, 403).code, host).toBe('forbidden_host');
      expectOllamaError(await raw(main.url, { path: '/api/tags', headers: { host } }), 403);
      // Nothing behind the check runs: not a chat request either.
      expectOpenAiError(await postJson(main.url, '/v1/chat/completions', chatBody(), { host }), 403);
    }
  });
});

describe('body limit', () => {
  it('refuses a body over the limit with 413 in the API shape, and keeps answering', async () => {
    const server = await serve({ bodyLimitBytes: 64 * 1024 });
    const big = JSON.stringify(chatBody({ messages: [{ role: 'user', content: 'x'.repeat(100 * 1024) }] }));
    expect(expectOpenAiError(await postJson(server.url, '/v1/chat/completions', big), 413).message).toMatch(/too large/);
    expectOllamaError(await postJson(server.url, '/api/chat', big), 413);
    // Without a content-length (chunked), refused once the limit is passed.
    const chunks = Array.from({ length: 20 }, () => Buffer.from(' '.repeat(8 * 1024)));
    const chunked = await raw(server.url, { method: 'POST', path: '/api/generate', headers: { 'content-type': 'application/json' }, chunked: chunks });
    expectOllamaError(chunked, 413);
    // Just under the limit is read (and then refused for its model, which this server does not know).
    const under = JSON.stringify({ ...chatBody({ model: 'nope' }), pad: 'y'.repeat(60 * 1024) });
    expectOpenAiError(await postJson(server.url, '/v1/chat/completions', under), 404);
    const after = await raw(server.url, { path: '/v1/models' });
    expect(after.status).toBe(200);
  });
});

describe('hostile images', () => {
  it('refuses bad base64, bad data: URLs, a 20000x20000 header and random bytes with 400, quickly', async () => {
    const huge = pngHeader(20000, 20000);
    const random = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) & 0xff));
    const before = procStatus().rssMb;
    const started = performance.now();

    for (const stream of [false, true]) {
      for (const [image, pattern] of [
        ['not base64 at all!', /invalid base64/],
        ['QUJD=A', /invalid base64/],
        ['A', /invalid base64/],
        [huge.toString('base64'), /20000x20000/],
        [random.toString('base64'), /not a supported image/],
      ] as const) {
        const generate = await postJson(main.url, '/api/generate', { model: ckpt, prompt: 'Describe.', images: [image], stream, options: { num_predict: 8, steps: 2 } });
        expect(expectOllamaError(generate, 400)).toMatch(pattern);
        const chat = await postJson(main.url, '/api/chat', ollamaChat({ stream, messages: [{ role: 'user', content: 'Describe.', images: [image] }] }));
        expect(expectOllamaError(chat, 400)).toMatch(pattern);
      }
      for (const [url, pattern] of [
        ['data:image/png;base64,@@@@', /invalid base64/],
        ['data:image/png,rawbytes', /not base64/],
        ['data:text/html;base64,PGI+', /not an image/],
        ['data:image/png;base64', /malformed/],
        [`data:image/png;base64,${huge.toString('base64')}`, /20000x20000/],
        [`data:image/jpeg;base64,${random.toString('base64')}`, /not a supported image/],
        ['http://127.0.0.1:1/cat.png', /remote image URLs are disabled/],
        ['/etc/passwd', /local image paths are disabled/],
        ['file:///etc/passwd', /local image paths are disabled/],
      ] as const) {
        const response = await postJson(main.url, '/v1/chat/completions', chatBody({ stream, messages: [{ role: 'user', content: [{ type: 'text', text: 'Describe.' }, { type: 'image_url', image_url: { url } }] }] }));
        expect(expectOpenAiError(response, 400).message).toMatch(pattern);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    const after = procStatus().rssMb;
    // 28 requests; decoding a 20000x20000 RGB image alone would take 1.2 GB and seconds.
    expect(seconds).toBeLessThan(10);
    expect(after - before).toBeLessThan(300);
    const ok = await postJson(main.url, '/v1/chat/completions', chatBody());
    expect(ok.status, ok.text).toBe(200);
  });
});

describe('request validation', () => {
  it('refuses invalid JSON and known fields of the wrong type with 400', async () => {
    for (const body of ['{"model": ', '{model: 1}', 'null', '[]', '"text"', '{"model": "a", "messages": [}']) {
      expect(expectOpenAiError(await postJson(main.url, '/v1/chat/completions', body), 400).type).toBe('invalid_request_error');
      expectOllamaError(await postJson(main.url, '/api/chat', body), 400);
      expectOllamaError(await postJson(main.url, '/api/generate', body), 400);
    }
    const wrong: object[] = [
      { max_tokens: '8' },
      { max_tokens: 0 },
      { max_tokens: 1.5 },
      { temperature: 'hot' },
      { temperature: -1 },
      { messages: 'hi' },
      { messages: [] },
      { messages: [{ content: 'no role' }] },
      { messages: [{ role: 'user', content: 5 }] },
      { messages: [{ role: 'user', content: [{ type: 'text', text: 5 }] }] },
      { messages: [{ role: 'user', content: [{ type: 'video', video: 'x' }] }] },
      { messages: [{ role: 'tool', content: 'x' }] },
      { model: 5 },
      { model: '' },
      { stream: 'yes' },
      { stop: 5 },
      { seed: -1 },
      { top_p: 0 },
      { steps: 0 },
      { steps: '2' },
      { remasking: 'bogus' },
      { threshold: 2 },
      { stream_options: { include_usage: 'yes' } },
      // A small image upscaled to 100 megapixels would take gigabytes and minutes in the vision tower.
      { min_pixels: 100_000_000 },
      { max_pixels: 100_000_000, min_pixels: 784 },
    ];
    for (const extra of wrong) {
      const response = await postJson(main.url, '/v1/chat/completions', chatBody(extra));
      expect(expectOpenAiError(response, 400).type, JSON.stringify(extra)).toBe('invalid_request_error');
    }
    const wrongOllama: object[] = [
      { options: { num_predict: '8' } },
      { options: 'fast' },
      { options: { temperature: 'hot' } },
      { options: { steps: 0 } },
      { options: { num_predict: 8, min_pixels: 100_000_000 } },
      { messages: 'hi' },
      { messages: [{ role: 'user', content: 'x', images: 'abc' }] },
      { messages: [{ role: 'user', content: 5 }] },
      { messages: [{ role: 'function', content: 'x' }] },
      { stream: 'no' },
      { keep_alive: 'soon' },
      { keep_alive: true },
    ];
    for (const extra of wrongOllama) expectOllamaError(await postJson(main.url, '/api/chat', ollamaChat(extra)), 400);
  });

  it('ignores unknown fields; refuses n > 1, tools, an unknown model (404) and a conversation not ending with the user', async () => {
    const extra = { foo: { bar: [1, 2] }, user: 'someone', logit_bias: {}, presence_penalty: 0.5, metadata: null };
    const ok = await postJson(main.url, '/v1/chat/completions', chatBody(extra));
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json().choices[0].message.role).toBe('assistant');
    const okOllama = await postJson(main.url, '/api/chat', ollamaChat({ ...extra, options: { num_predict: 8, steps: 2, mirostat: 2 } }));
    expect(okOllama.status, okOllama.text).toBe(200);
    expect(okOllama.json().done).toBe(true);

    expect(expectOpenAiError(await postJson(main.url, '/v1/chat/completions', chatBody({ n: 2 })), 400).param).toBe('n');
    const tools = [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }];
    expect(expectOpenAiError(await postJson(main.url, '/v1/chat/completions', chatBody({ tools })), 400).param).toBe('tools');
    expectOllamaError(await postJson(main.url, '/api/chat', ollamaChat({ tools })), 400);

    for (const stream of [false, true]) {
      expect(expectOpenAiError(await postJson(main.url, '/v1/chat/completions', chatBody({ model: 'no/such-model', stream })), 404).code).toBe('model_not_found');
      expectOllamaError(await postJson(main.url, '/api/chat', ollamaChat({ model: 'no/such-model', stream })), 404);
      expectOllamaError(await postJson(main.url, '/api/generate', { model: 'no/such-model', prompt: 'hi', stream }), 404);
      // A path on this machine is not a model either (it would otherwise be converted).
      expectOllamaError(await postJson(main.url, '/api/generate', { model: work, prompt: 'hi', stream }), 404);

      const endsWithAssistant = [
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: 'hello' },
      ];
      expect(expectOpenAiError(await postJson(main.url, '/v1/chat/completions', chatBody({ messages: endsWithAssistant, stream })), 400).message).toMatch(/last message/);
      expectOllamaError(await postJson(main.url, '/api/chat', ollamaChat({ messages: endsWithAssistant, stream })), 400);
      expectOpenAiError(await postJson(main.url, '/v1/chat/completions', chatBody({ messages: [{ role: 'system', content: 'be brief' }], stream })), 400);
    }
    expectOllamaError(await postJson(main.url, '/api/show', { model: 'no/such-model' }), 404);
  });
});

describe('queue limit', () => {
  it('refuses requests beyond --max-queue with 503 and Retry-After, streamed or not, and answers the rest', async () => {
    const rejectedBefore = await metric(main.url, 'dvl_requests_rejected_total');
    // maxQueue 4: one runs, four wait, three are refused.
    const requests = Array.from({ length: 8 }, (_, i) => {
      const stream = i % 2 === 1;
      return i % 4 < 2
        ? postJson(main.url, '/v1/chat/completions', chatBody({ max_tokens: 64, stream }))
        : postJson(main.url, '/api/chat', ollamaChat({ stream, options: { num_predict: 64, steps: 2 } }));
    });
    const responses = await Promise.all(requests);
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 200).length, String(statuses)).toBe(5);
    expect(statuses.filter((s) => s === 503).length, String(statuses)).toBe(3);
    for (const response of responses) {
      if (response.status === 503) {
        expect(Number(response.headers['retry-after'])).toBeGreaterThan(0);
        expect(response.json().error).toBeDefined();
      } else {
        // Accepted answers are complete, with no error event inside a stream.
        expect(response.text).not.toContain('"error"');
        expect(response.text).toMatch(/\[DONE\]|"done":true|"finish_reason":"(length|stop)"/);
      }
    }
    expect(await metric(main.url, 'dvl_requests_rejected_total')).toBe(rejectedBefore + 3);
    const after = await postJson(main.url, '/v1/chat/completions', chatBody());
    expect(after.status, after.text).toBe(200);
  });
});

describe('client disconnect', () => {
  it('stops the generation of a stream whose client leaves, counts it, and serves the next request at once', async () => {
    // A warm-up at the long request's settings: the time one decoder call takes.
    const probe = await postJson(main.url, '/v1/chat/completions', chatBody({ max_tokens: 32, steps: 8 }));
    const { nfe, decode_ms: decodeMs } = probe.json().timings;
    const msPerCall = decodeMs / nfe;
    // 512 tokens, 8 steps per block of 8: 512 decoder calls.
    const fullRunMs = 512 * msPerCall;
    const cancelledBefore = await metric(main.url, 'dvl_requests_cancelled_total');

    const controller = new AbortController();
    const response = await fetch(`${main.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chatBody({ max_tokens: 512, steps: 8, stream: true })),
      signal: controller.signal,
    });
    expect(response.status).toBe(200);
    const { ended } = await readSse(response, hasContent);
    expect(ended).toBe(false);
    controller.abort();
    const abortedAt = performance.now();

    // The worker thread is in this process: once generation stops, the process goes idle.
    await sleep(300);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await sleep(1000);
    const cpu = process.cpuUsage(cpu0);
    const cores = (cpu.user + cpu.system) / 1000 / (performance.now() - t0);
    expect(cores, `CPU use after the client left: ${cores.toFixed(2)} cores`).toBeLessThan(0.3);

    const next = await postJson(main.url, '/v1/chat/completions', chatBody());
    expect(next.status, next.text).toBe(200);
    expect(next.json().timings.queue_ms).toBeLessThan(200);
    const sinceAbort = performance.now() - abortedAt;
    expect(sinceAbort).toBeLessThan(Math.max(3000, fullRunMs / 3));
    expect(await metric(main.url, 'dvl_requests_cancelled_total')).toBeGreaterThanOrEqual(cancelledBefore + 1);
    const line = mainLog.find((l) => l.includes('"POST /v1/chat/completions"') && l.includes('(client went away)'));
    expect(line, mainLog.slice(-5).join('\n')).toBeDefined();
    console.info(`client disconnect: one decoder call ${msPerCall.toFixed(1)} ms (a full run ~${(fullRunMs / 1000).toFixed(1)} s); CPU after leaving ${cores.toFixed(2)} cores; next answer ${sinceAbort.toFixed(0)} ms after the abort`);
  });
});

describe('keep-alive', () => {
  it('unloads a model once its keep-alive runs out, and at once with keep_alive 0', async () => {
    const poolLog: string[] = [];
    const server = await serve({ pool: { keepAliveMs: 1500, log: (line) => poolLog.push(line) } });
    const ps = async () => (await raw(server.url, { path: '/api/ps' })).json().models as { name: string; expires_at: string }[];
    expect(await ps()).toEqual([]);
    const idle = procStatus();

    const ok = await postJson(server.url, '/v1/chat/completions', chatBody());
    expect(ok.status, ok.text).toBe(200);
    const answeredAt = Date.now();
    const loaded = procStatus();
    const models = await ps();
    expect(models.map((m) => m.name)).toEqual([ckpt]);
    const expiresIn = Date.parse(models[0].expires_at) - answeredAt;
    expect(expiresIn).toBeGreaterThan(1000);
    expect(expiresIn).toBeLessThan(2500);

    while ((await ps()).length > 0) {
      expect(Date.now() - answeredAt, 'still loaded long after its keep-alive').toBeLessThan(8000);
      await sleep(100);
    }
    expect(Date.now() - answeredAt).toBeGreaterThan(1200);
    // The worker has exited when the pool logs the unload.
    for (let i = 0; i < 50 && !poolLog.includes(`unloaded ${ckpt}`); i++) await sleep(100);
    expect(poolLog.filter((l) => l === `unloaded ${ckpt}`)).toHaveLength(1);
    await sleep(200);
    const unloaded = procStatus();
    expect(unloaded.threads).toBeLessThan(loaded.threads);

    // keep_alive 0: unloaded right after the answer.
    const once = await postJson(server.url, '/api/generate', { model: ckpt, prompt: 'hi', stream: false, keep_alive: 0, options: { num_predict: 8, steps: 2 } });
    expect(once.status, once.text).toBe(200);
    expect(await ps()).toEqual([]);
    for (let i = 0; i < 50 && poolLog.filter((l) => l === `unloaded ${ckpt}`).length < 2; i++) await sleep(100);
    expect(poolLog.filter((l) => l === `unloaded ${ckpt}`)).toHaveLength(2);
    // And a later request loads it again.
    const again = await postJson(server.url, '/api/generate', { model: ckpt, prompt: 'hi', stream: false, options: { num_predict: 8, steps: 2 } });
    expect(again.status, again.text).toBe(200);
    expect((await ps()).map((m) => m.name)).toEqual([ckpt]);
    console.info(`keep-alive: RSS idle ${idle.rssMb} MB (${idle.threads} threads), loaded ${loaded.rssMb} MB (${loaded.threads}), after the unload ${unloaded.rssMb} MB (${unloaded.threads})`);
  });
});

describe('fuzz', () => {
  it('survives 300 malformed requests without a 5xx (but 503), keeps answering, and leaves the store alone', async () => {
    const random = prng(20240611);
    const int = (n: number) => Math.floor(random() * n);
    const pick = <T>(items: readonly T[]): T => items[int(items.length)];
    const randomValue = (depth = 0): unknown => {
      switch (int(depth > 2 ? 7 : 9)) {
        case 0:
          return null;
        case 1:
          return random() < 0.5;
        case 2:
          return pick([-3, -1, 0, 1, 2, 3, 1.5, -0.5, 1e308, -1e308, 2 ** 53, 65537, 0.1]);
        case 3:
          return pick(['', 'x', 'user', 'assistant', 'system', 'text', 'image_url', '5m', '-1', 'data:image/png;base64,AAAA', '\u0000\uffff', '../../etc/passwd', 'http://127.0.0.1:1/']);
        case 4:
          return 'z'.repeat(int(4) === 0 ? 200_000 : int(300));
        case 5:
          return Array.from({ length: int(4) }, () => randomValue(depth + 1));
        case 6:
          return Object.fromEntries(Array.from({ length: int(4) }, () => [pick(['role', 'content', 'type', 'text', 'image_url', 'url', 'model', 'x', '__proto__', 'constructor']), randomValue(depth + 1)]));
        case 7:
          return { role: pick(['user', 'assistant', 'system', 'developer', 'tool']), content: randomValue(depth + 1) };
        default:
          return [{ role: 'user', content: randomValue(depth + 1) }];
      }
    };
    // Valid requests to mutate; left valid by chance, they are short.
    const templates: { route: string; body: Record<string, unknown> }[] = [
      { route: '/v1/chat/completions', body: chatBody() },
      { route: '/v1/chat/completions', body: chatBody({ stream: true, stop: ['x'] }) },
      { route: '/api/chat', body: ollamaChat() },
      { route: '/api/generate', body: { model: ckpt, prompt: 'hi', stream: false, options: { num_predict: 8, steps: 2 } } },
      { route: '/api/show', body: { model: ckpt } },
    ];
    const mutate = (body: Record<string, unknown>): Record<string, unknown> => {
      const copy = structuredClone(body);
      const keys = Object.keys(copy);
      const action = int(4);
      if (action === 0) copy[pick(keys)] = randomValue();
      else if (action === 1) delete copy[pick(keys)];
      else if (action === 2) copy[pick(['messages', 'options', 'images', 'stop', 'tools', 'n', 'stream_options', 'format', 'max_tokens'])] = randomValue();
      else {
        // Something wrong inside a message.
        copy.messages = [{ role: pick(['user', 'assistant', 'system', 'x']), ...(randomValue(1) as object), content: randomValue(1) }];
        copy.max_tokens = pick(['8', -1, 0, null, 8.5, {}, []]);
      }
      // Never a long generation (the defaults are 128 tokens, 8 steps), whatever the mutation left.
      if (copy.options == null) copy.options = { num_predict: 8, steps: 2 };
      if (typeof copy.options === 'object' && !Array.isArray(copy.options)) (copy.options as Record<string, unknown>).num_predict = 8;
      if (copy.max_tokens == null || (typeof copy.max_tokens === 'number' && copy.max_tokens > 8)) copy.max_tokens = 8;
      copy.steps ??= 2;
      return copy;
    };
    const routes = ['/v1/chat/completions', '/api/chat', '/api/generate', '/api/show', '/v1/models', '/api/tags', '/api/ps', '/health', '/metrics', '/', '/v1', '/api/pull', '/api/delete', '/v1/completions', '/v1/embeddings', '/%00', '/v1/chat/completions/../../api/tags', '/api/chat?x=%ZZ', `/${'a'.repeat(4000)}`, '/v1/chat%2Fcompletions'];
    const contentTypes = ['application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/octet-stream', 'application/json; charset=latin1', 'image/png', ''];

    type Fuzzed = { method: string; path: string; headers: Record<string, string>; body?: string | Buffer };
    const make = (): Fuzzed => {
      const kind = int(8);
      const template = pick(templates);
      const json = { 'content-type': 'application/json' };
      switch (kind) {
        case 0:
        case 1:
        case 2:
          return { method: 'POST', path: template.route, headers: json, body: JSON.stringify(mutate(template.body)) };
        case 3: {
          const text = JSON.stringify(template.body);
          return { method: 'POST', path: template.route, headers: json, body: text.slice(0, 1 + int(text.length - 1)) };
        }
        case 4:
          return { method: 'POST', path: template.route, headers: json, body: Buffer.from(Array.from({ length: int(2000) }, () => int(256))) };
        case 5:
          return { method: 'POST', path: template.route, headers: { 'content-type': pick(contentTypes) }, body: pick([JSON.stringify(template.body), 'a=1&b=2', '--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--', Buffer.from([0xff, 0xfe, 0x00])]) };
        case 6:
          return { method: pick(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD']), path: pick(routes), headers: pick([{}, json, { 'content-type': 'text/plain' }]), body: pick([undefined, '', '{}', 'garbage']) };
        default:
          return { method: 'POST', path: template.route, headers: json, body: pick([`{"__proto__": {"x": 1}, "model": "${ckpt}"}`, `{"constructor": {"prototype": {"x": 1}}}`, '['.repeat(50_000) + ']'.repeat(50_000), JSON.stringify({ ...template.body, model: 'm'.repeat(300_000) }), '\uFEFF{}', '{"model": 1e999}']) };
      }
    };
    const requests = Array.from({ length: 300 }, make);
    const before = snapshot(home);
    const started = performance.now();
    const counts = new Map<number, number>();
    const bad: string[] = [];
    let next = 0;
    const workerLoop = async () => {
      while (next < requests.length) {
        const request = requests[next++];
        const response = await raw(main.url, { ...request, timeoutMs: 20_000 });
        counts.set(response.status, (counts.get(response.status) ?? 0) + 1);
        if (response.status >= 500 && response.status !== 503) bad.push(`${request.method} ${request.path.slice(0, 60)} ${String(request.body).slice(0, 200)} -> ${response.status} ${response.text.slice(0, 200)}`);
        if (response.status === 200 && response.headers['content-type']?.includes('event-stream')) expect(response.text).toMatch(/\[DONE\]|"error"/);
      }
    };
    await Promise.all(Array.from({ length: 4 }, workerLoop));
    const seconds = (performance.now() - started) / 1000;
    console.info(`fuzz: 300 requests in ${seconds.toFixed(1)} s, statuses ${JSON.stringify(Object.fromEntries([...counts].sort((a, b) => a[0] - b[0])))}`);
    expect(bad).toEqual([]);
    expect(seconds).toBeLessThan(30);
    // Most were refused, not answered.
    expect([...counts].filter(([s]) => s >= 400 && s < 500).reduce((n, [, c]) => n + c, 0)).toBeGreaterThan(200);

    const ok = await postJson(main.url, '/v1/chat/completions', chatBody());
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json().choices[0].message.content.length).toBeGreaterThan(0);
    expect(snapshot(home)).toEqual(before);
    // Over 300 requests on one server: nothing accumulates on its long-lived signals.
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message)).toEqual([]);
  });
});

describe('the dvl serve binary', () => {
  let child: ChildProcess | undefined;
  afterAll(() => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  it('prints where it listens, logs each request, and drains on SIGTERM with exit code 0', async () => {
    const proc = spawn(process.execPath, [DVL_BIN, 'serve', '-m', ckpt, '--dtype', 'fp32', '--host', '127.0.0.1', '--port', '0', '--threads', '1', '--drain-timeout', '1'], {
      cwd: REPO_ROOT,
      env: { ...poolEnv, NO_COLOR: '1', CI: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.stdout!.resume();
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));

    const deadline = Date.now() + 60_000;
    let url: string | undefined;
    while (!url) {
      url = /dvl: serving on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr)?.[1];
      if (proc.exitCode !== null) throw new Error(`dvl serve exited: ${stderr}`);
      if (Date.now() > deadline) throw new Error(`no address printed: ${stderr}`);
      await sleep(50);
    }
    expect(url).not.toMatch(/:0$/);
    await waitHealthy(url, 60_000);

    const ok = await postJson(url, '/v1/chat/completions', chatBody());
    expect(ok.status, ok.text).toBe(200);
    for (let i = 0; i < 20 && !stderr.includes('"POST /v1/chat/completions" 200'); i++) await sleep(50);
    expect(stderr).toMatch(/dvl: 127\.0\.0\.1 "POST \/v1\/chat\/completions" 200 \d+ ms/);

    // A long stream runs; SIGTERM: the stream ends (cancelled after --drain-timeout), the process exits 0.
    const response = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chatBody({ max_tokens: 512, steps: 8, stream: true })),
    });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    let sse = '';
    while (!hasContent(sse)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the stream ended early: ${sse}`);
      sse += new TextDecoder().decode(value);
    }
    const signalledAt = performance.now();
    proc.kill('SIGTERM');
    const rest = (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return performance.now() - signalledAt;
        sse += new TextDecoder().decode(value);
      }
    })();
    const streamEndedMs = await rest;
    const { code, signal } = await exited;
    const exitMs = performance.now() - signalledAt;
    expect({ code, signal }, stderr).toEqual({ code: 0, signal: null });
    expect(streamEndedMs).toBeLessThan(4000);
    expect(exitMs).toBeLessThan(4500);
    expect(stderr).toContain('dvl: shutting down');
    // New connections are refused once it drains.
    await expect(fetch(`${url}/health`)).rejects.toThrow();
    console.info(`binary: stream ended ${streamEndedMs.toFixed(0)} ms and the process exited ${exitMs.toFixed(0)} ms after SIGTERM`);
  });
});
