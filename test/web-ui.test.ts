/**
 * The chat page (web/, served by `dvl serve` at /) against the real server on 127.0.0.1 with a tiny fp32
 * model, built by the project's own build script into a temporary folder:
 * - over plain HTTP: the page's headers (a strict Content-Security-Policy, nosniff, caching), `--no-ui`, the
 *   API key's exemptions, and dvl's route with `reuse_prefix`;
 * - in a real browser, headless Chromium from the distribution (/usr/bin/chromium; `.ci/run` installs it,
 *   and these tests are skipped where it is missing) driven by playwright-core, which downloads nothing: an
 *   image question whose answer is `dvl ask --json`'s text, seen while it denoises (masked slots); a
 *   follow-up with cached prompt tokens; stop, then a follow-up; settings that change the answer; a JSON schema
 *   whose answer parses and validates; a bad image;
 *   the API key; a phone-sized window; the keyboard. Every request the page makes goes to the server's own
 *   origin and the console stays free of errors, in every test.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildWeb } from '../scripts/build-web.js';
import type { AskEvent } from '../src/ask.js';
import type { DvlAskBody, DvlAskLine } from '../src/ask-wire.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { CONTENT_SECURITY_POLICY, NO_UI_TEXT } from '../src/server/web-ui.js';
import type * as Wire from '../web/src/wire.js';
import { runDvl } from './helpers/cli.js';
import { ajvValidator } from './helpers/json-schemas.js';
import { tinyConfig } from './helpers/random-weights.js';
import { testServeOptions, waitHealthy } from './helpers/test-server.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

// The page's copies of the server's types (web/src/wire.ts) must still fit the server's: checked by tsc.
type Fits<A, B> = [A] extends [B] ? true : false;
const wireFits: [Fits<AskEvent, Wire.AskEvent>, Fits<DvlAskLine, Wire.AskLine>, Fits<Wire.AskBody, DvlAskBody>] = [true, true, true];
void wireFits;

// Callbacks given to page.evaluate() run in the browser. This project's tsconfig has no DOM types (the server
// code must not see them), so the browser globals they use are declared here, for this file only, loosely.
declare const document: any, window: any, navigator: any, sessionStorage: any, getComputedStyle: any, MutationObserver: any, DataTransfer: any, File: any, ClipboardEvent: any;

const CHROMIUM = '/usr/bin/chromium';
const hasChromium = fs.existsSync(CHROMIUM);
const IMAGE = path.resolve('fixtures/images/chelsea.png');
const PROMPT = 'What is in this picture?';
const FOLLOW_UP = 'And what colour is it?';
const KEY = 'sesame';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-web-ui-'));
const ckpt = path.join(work, 'tiny');
const webDir = path.join(work, 'web');
const env = { DVL_HOME: path.join(work, 'home'), HF_HUB_CACHE: path.join(work, 'hub') };
const poolEnv = { ...process.env, ...env };

interface Reference {
  text: string;
  stats: { nfe: number; prompt_tokens: number };
}

/** What the local commands answer, with the page's default settings but a shorter gen length (greedy). */
let reference: { image: Reference; followUp: Reference; image8: Reference; image16: Reference };
let server: RunningServer;
const extraServers: RunningServer[] = [];

beforeAll(async () => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig(), seed: 5 });
  await buildWeb(webDir);
  // `dvl ask --json` (which also converts the model into the store), then the other answers in one `dvl batch`.
  const ask = runDvl(['ask', '-m', ckpt, '--dtype', 'fp32', '-n', '24', '-q', '--json', IMAGE, PROMPT], { env });
  if (ask.status !== 0) throw new Error(`dvl ask failed (${ask.status}): ${ask.stderr}`);
  const requests = [
    { image: IMAGE, prompt: FOLLOW_UP, gen_length: 24 },
    { image: IMAGE, prompt: PROMPT, gen_length: 8 },
    { image: IMAGE, prompt: PROMPT, gen_length: 16 },
  ];
  const batch = runDvl(['batch', '-m', ckpt, '--dtype', 'fp32', '-q'], { env, input: requests.map((r) => JSON.stringify(r)).join('\n') });
  if (batch.status !== 0) throw new Error(`dvl batch failed (${batch.status}): ${batch.stderr}`);
  const [followUp, image8, image16] = batch.stdout.trim().split('\n').map((line) => JSON.parse(line) as Reference);
  reference = { image: JSON.parse(ask.stdout) as Reference, followUp, image8, image16 };
  server = await startServer(testServeOptions({ uiDir: webDir, pool: { model: ckpt, threads: undefined, env: poolEnv } }));
  await waitHealthy(server.url);
}, 240_000);

afterAll(async () => {
  await Promise.all([server, ...extraServers].map((s) => s?.close(1000)));
  fs.rmSync(work, { recursive: true, force: true });
});

/** Another server on the same store (the model loads with its first request). */
async function startExtra(overrides: { ui?: boolean; apiKey?: string }): Promise<RunningServer> {
  const extra = await startServer(testServeOptions({ uiDir: webDir, ...overrides, pool: { env: poolEnv } }));
  extraServers.push(extra);
  return extra;
}

/** A GET with the path exactly as given (fetch would resolve "/ui/../x" to "/x" before sending it). */
function rawGet(url: string, requestPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(url);
    const request = http.get({ hostname, port, path: requestPath }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    request.on('error', reject);
  });
}

/** The asset names index.html refers to. */
function assetPaths(html: string): string[] {
  return [...html.matchAll(/(?:src|href)="(\/ui\/[^"]+)"/g)].map((m) => m[1]);
}

describe('the page over HTTP', () => {
  it('GET / is the page under a strict Content-Security-Policy; its assets are cached by their hashed names', async () => {
    const page = await fetch(`${server.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toBe(CONTENT_SECURITY_POLICY);
    for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"]) {
      expect(CONTENT_SECURITY_POLICY).toContain(directive);
    }
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    expect(page.headers.get('cache-control')).toBe('no-cache');
    const html = await page.text();
    // No inline script or style, nothing from elsewhere.
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son\w+=|https?:\/\//i);
    const assets = assetPaths(html);
    expect(new Set(assets.map((a) => path.extname(a)))).toEqual(new Set(['.js', '.css', '.svg']));
    for (const asset of assets) {
      const response = await fetch(`${server.url}${asset}`);
      expect(response.status, asset).toBe(200);
      expect(response.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(response.headers.get('content-type')).toMatch(/^(text\/javascript|text\/css|image\/svg\+xml)/);
    }
    expect((await fetch(`${server.url}/ui/nope.js`)).status).toBe(404);
    expect((await fetch(`${server.url}/ui/index.html`)).status).toBe(404);
    expect((await fetch(`${server.url}/ui/..%2Fpackage.json`)).status).toBe(404);
    // The page is a GET route: another method is a 405 naming it, as for the API routes.
    const posted = await fetch(`${server.url}/`, { method: 'POST', body: '{}' });
    expect(posted.status).toBe(405);
    expect(posted.headers.get('allow')).toMatch(/GET/);
  });

  it('--no-ui: GET / is 200 "dvl is running" (clients probe it), and there is no page', async () => {
    const plain = await startExtra({ ui: false });
    const root = await fetch(`${plain.url}/`);
    expect(root.status).toBe(200);
    expect(root.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await root.text()).toBe(NO_UI_TEXT);
    const html = await (await fetch(`${server.url}/`)).text();
    expect((await fetch(`${plain.url}${assetPaths(html)[0]}`)).status).toBe(404);
  });

  it('with --api-key: the page and its assets need no key, every API route does', async () => {
    const keyed = await startExtra({ apiKey: KEY });
    const html = await fetch(`${keyed.url}/`);
    expect(html.status).toBe(200);
    for (const asset of assetPaths(await html.text())) expect((await fetch(`${keyed.url}${asset}`)).status).toBe(200);
    // Public, but nothing there: the same 404 as without a key.
    expect((await fetch(`${keyed.url}/ui/nope.js`)).status).toBe(404);
    expect((await fetch(`${keyed.url}/v1/models`)).status).toBe(401);
    expect((await fetch(`${keyed.url}/dvl/v1/ask`, { method: 'POST', body: '{}' })).status).toBe(401);
    expect((await fetch(`${keyed.url}/v1/models`, { headers: { authorization: `Bearer ${KEY}` } })).status).toBe(200);
    // The page's public prefix does not open the API by way of dot segments or encoded slashes.
    for (const sneaky of ['/ui/../v1/models', '/ui/%2E%2E/v1/models', '/ui/..%2Fv1%2Fmodels', '/ui//v1/models']) {
      expect(await rawGet(keyed.url, sneaky), sneaky).toBe(404);
    }
    // With --no-ui too, / stays open (Ollama clients probe it without a key).
    const plain = await startExtra({ ui: false, apiKey: KEY });
    expect((await fetch(`${plain.url}/`)).status).toBe(200);
  });

  it('POST /dvl/v1/ask with reuse_prefix: the follow-up reuses the prompt rows and answers as without', async () => {
    const image = fs.readFileSync(IMAGE).toString('base64');
    const ask = async (body: Partial<DvlAskBody>) => {
      const response = await fetch(`${server.url}/dvl/v1/ask`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: ckpt, settings: { genLength: 24 }, ...body }) });
      expect(response.status).toBe(200);
      const lines = (await response.text()).split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as DvlAskLine);
      const last = lines.at(-1)!;
      if (!('result' in last)) throw new Error(`no result: ${JSON.stringify(last)}`);
      return last.result;
    };
    const first = await ask({ prompt: PROMPT, images: [image], reuse_prefix: true });
    expect(first.text).toBe(reference.image.text);
    const history = [
      { role: 'user' as const, text: PROMPT, images: 1 },
      { role: 'assistant' as const, text: first.text },
    ];
    const reused = await ask({ prompt: FOLLOW_UP, history, history_images: [image], reuse_prefix: true });
    // The default: nothing reused (a local run's stats), whatever the previous request was.
    const fresh = await ask({ prompt: FOLLOW_UP, history, history_images: [image] });
    expect(reused.stats.cachedTokens).toBeGreaterThan(first.stats.promptTokens / 2);
    expect(fresh.stats.cachedTokens).toBe(0);
    expect(reused.text).toBe(fresh.text);
    expect(reused.tokens).toEqual(fresh.tokens);
  });
});

// ---------------------------------------------------------------------------------------------------------

/** A page of the chat in a fresh browser context, with what it requested and every console error. */
interface Opened {
  page: Page;
  context: BrowserContext;
  requests: string[];
  problems: string[];
}

describe.skipIf(!hasChromium)('the page in Chromium', () => {
  let browser: Browser;
  const opened: Opened[] = [];

  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      // Without the background-networking flags Chromium tries to reach Google's services (refused offline).
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });

  afterAll(async () => {
    await browser?.close();
  });

  // After every test: nothing left the server's origin, and nothing went wrong in the page.
  afterEach(async () => {
    for (const { context, requests, problems, page } of opened.splice(0)) {
      const origin = new URL(page.url()).origin;
      await context.close();
      expect(requests.filter((url) => new URL(url).origin !== origin)).toEqual([]);
      expect(requests.length).toBeGreaterThan(0);
      expect(problems).toEqual([]);
    }
  });

  async function open(url: string = server.url, viewport = { width: 1000, height: 800 }): Promise<Opened> {
    // Clipboard permissions: the Copy button is tested by reading the clipboard back.
    const context = await browser.newContext({ viewport, permissions: ['clipboard-read', 'clipboard-write'] });
    const page = await context.newPage();
    const entry: Opened = { page, context, requests: [], problems: [] };
    opened.push(entry);
    page.on('request', (request) => entry.requests.push(request.url()));
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') entry.problems.push(`console ${message.type()}: ${message.text()}`);
    });
    page.on('pageerror', (error) => entry.problems.push(`page error: ${error.message}`));
    await page.goto(`${url}/`);
    return entry;
  }

  /** Waits for the model picker to be filled. */
  async function modelsLoaded(page: Page): Promise<void> {
    await page.waitForFunction(() => document.querySelector('[data-testid=model]').options.length > 0);
  }

  async function setSettings(page: Page, values: Record<string, string>): Promise<void> {
    const settings = page.getByTestId('settings');
    if (!(await settings.evaluate((d) => (d as unknown as { open: boolean }).open))) await settings.locator('summary').click();
    for (const [name, value] of Object.entries(values)) await settings.locator(`[name=${name}]`).fill(value);
  }

  /** Asks (clicking Send) and waits for the answer's stats: the text of the new answer. */
  async function ask(page: Page, prompt: string): Promise<string> {
    const done = await page.getByTestId('stats').count();
    await page.getByTestId('prompt').fill(prompt);
    await page.getByTestId('send').click();
    await page.getByTestId('stats').nth(done).waitFor();
    return page.getByTestId('answer').last().evaluate((e) => e.textContent ?? '');
  }

  it('an image question: masked slots fill in while it denoises; the final text is dvl ask --json\'s', async () => {
    const { page } = await open();
    await modelsLoaded(page);
    expect(await page.getByTestId('model').inputValue()).toBe(ckpt);
    await setSettings(page, { gen_length: '24' });
    await page.getByTestId('image-input').setInputFiles(IMAGE);
    // The thumbnail before sending.
    await expect.poll(() => page.locator('#attachments img').count()).toBe(1);
    // Record every state of the answer the page went through: a mutation observer sees each one.
    await page.evaluate(() => {
      const frames: { masked: number; filled: number; text: string }[] = [];
      window.frames_ = frames;
      new MutationObserver(() => {
        const answer = document.querySelector('[data-testid=answer]');
        if (!answer) return;
        frames.push({ masked: answer.querySelectorAll('[data-testid=masked]').length, filled: answer.querySelectorAll('.slot.filled').length, text: answer.textContent ?? '' });
      }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
    });
    await page.getByTestId('prompt').fill(PROMPT);
    await page.getByTestId('prompt').press('Enter');
    await page.getByTestId('stats').waitFor();
    const text = await page.getByTestId('answer').evaluate((e) => e.textContent);
    expect(text).toBe(reference.image.text);
    const frames = (await page.evaluate(() => window.frames_)) as { masked: number; filled: number; text: string }[];
    // A block that starts fully masked, blocks half filled, and committed text followed by a masked block.
    expect(frames.some((f) => f.masked === 8 && f.filled === 0)).toBe(true);
    expect(frames.some((f) => f.masked > 0 && f.filled > 0)).toBe(true);
    expect(frames.some((f) => f.masked > 0 && reference.image.text.startsWith(f.text.slice(0, 8)) && f.text.length > 0)).toBe(true);
    expect(await page.getByTestId('masked').count()).toBe(0);
    await expect.poll(() => page.getByTestId('answer').getAttribute('aria-busy')).toBe('false');
    // The question with its image, the stats of a local run.
    expect(await page.locator('.question img').count()).toBe(1);
    expect(await page.locator('#attachments img').count()).toBe(0);
    const stats = await page.getByTestId('stats').textContent();
    expect(stats).toContain(`NFE ${reference.image.stats.nfe}`);
    expect(stats).toContain(`prompt ${reference.image.stats.prompt_tokens}`);
    expect(stats).toMatch(/tokens\/NFE \d\.\d\d/);
    expect(stats).toMatch(/prefill \d+ ms/);
    await page.locator('.turn.reply .copy').click();
    await expect.poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe(reference.image.text);
  });

  it('images by drag and drop and by paste, shown as thumbnails; × removes one (also from the keyboard)', async () => {
    const { page } = await open();
    await modelsLoaded(page);
    const png = [...fs.readFileSync(IMAGE)];
    // What a file dragged from the desktop, and an image pasted from the clipboard, hand the page.
    await page.evaluate((bytes) => {
      const transfer = (name: string) => {
        const data = new DataTransfer();
        data.items.add(new File([new Uint8Array(bytes)], name, { type: 'image/png' }));
        return data;
      };
      const dropped = transfer('dropped.png');
      document.dispatchEvent(new window.DragEvent('dragenter', { dataTransfer: dropped, bubbles: true }));
      document.body.dispatchEvent(new window.DragEvent('drop', { dataTransfer: dropped, bubbles: true, cancelable: true }));
      document.querySelector('[data-testid=prompt]').dispatchEvent(new ClipboardEvent('paste', { clipboardData: transfer('pasted.png'), bubbles: true, cancelable: true }));
    }, png);
    const thumbnails = page.locator('#attachments img');
    await expect.poll(() => thumbnails.evaluateAll((images) => images.map((i) => i.getAttribute('alt')))).toEqual(['dropped.png', 'pasted.png']);
    expect(await page.evaluate(() => document.body.classList.contains('dragging'))).toBe(false);
    await page.getByRole('button', { name: 'Remove dropped.png' }).focus();
    await page.keyboard.press('Enter');
    await expect.poll(() => thumbnails.evaluateAll((images) => images.map((i) => i.getAttribute('alt')))).toEqual(['pasted.png']);
    // Text pasted into the prompt is plain text, not an attachment.
    await page.getByTestId('prompt').focus();
    await page.evaluate(() => {
      const data = new DataTransfer();
      data.setData('text/plain', 'a pasted question');
      document.querySelector('[data-testid=prompt]').dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }));
    });
    expect(await thumbnails.count()).toBe(1);
  });

  it('a follow-up: the prompt rows come from the cache (shown), the answer is that of the conversation asked afresh', async () => {
    const { page } = await open();
    await modelsLoaded(page);
    await setSettings(page, { gen_length: '24' });
    await page.getByTestId('image-input').setInputFiles(IMAGE);
    expect(await ask(page, PROMPT)).toBe(reference.image.text);
    const second = await ask(page, FOLLOW_UP);
    const stats = await page.getByTestId('stats').nth(1).textContent();
    const cached = Number(/cached (\d+)/.exec(stats ?? '')?.[1]);
    expect(cached).toBeGreaterThan(reference.image.stats.prompt_tokens / 2);
    // The same conversation through dvl's route without the cache.
    const response = await fetch(`${server.url}/dvl/v1/ask`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: ckpt,
        prompt: FOLLOW_UP,
        history: [
          { role: 'user', text: PROMPT, images: 1 },
          { role: 'assistant', text: reference.image.text },
        ],
        history_images: [fs.readFileSync(IMAGE).toString('base64')],
        settings: { genLength: 24 },
      } satisfies DvlAskBody),
    });
    const last = JSON.parse((await response.text()).trim().split('\n').at(-1)!) as { result: { text: string } };
    expect(second).toBe(last.result.text);
  });

  it('stop mid-answer: the committed text stays, the question comes back; a follow-up then answers', async () => {
    const { page } = await open();
    await modelsLoaded(page);
    // Long enough (128 blocks) to be stopped after its first blocks.
    await setSettings(page, { gen_length: '1024' });
    await page.getByTestId('image-input').setInputFiles(IMAGE);
    await page.getByTestId('prompt').fill(PROMPT);
    await page.getByTestId('send').click();
    await page.waitForFunction(() => document.querySelector('[data-testid=answer]')?.firstChild?.textContent !== '');
    const stoppedAt = Date.now();
    await page.getByTestId('stop').click();
    await expect.poll(() => page.getByTestId('send').isEnabled()).toBe(true);
    const kept = await page.getByTestId('answer').evaluate((e) => e.textContent ?? '');
    // Whole blocks only (no masked slot, no half-denoised block); gen length does not change the first blocks.
    expect(kept.length).toBeGreaterThan(0);
    expect(kept.startsWith(reference.image.text) || reference.image.text.startsWith(kept)).toBe(true);
    expect(await page.getByTestId('masked').count()).toBe(0);
    expect(await page.getByTestId('stats').count()).toBe(0);
    expect(await page.locator('.turn.reply.stopped .status').textContent()).toContain('Stopped');
    // As `dvl chat` keeps them: the question's text and image are back in the composer.
    expect(await page.getByTestId('prompt').inputValue()).toBe(PROMPT);
    expect(await page.locator('#attachments img').count()).toBe(1);
    // The server stopped too: it answers the next question at once (one answer at a time), and counts a cancel.
    await setSettings(page, { gen_length: '24' });
    expect(await ask(page, FOLLOW_UP)).toBe(reference.followUp.text);
    expect(Date.now() - stoppedAt).toBeLessThan(15_000);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(Number(/^dvl_requests_cancelled_total (\d+)/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
  });

  it('settings change the answer (gen length); New chat starts over', async () => {
    const { page } = await open();
    await modelsLoaded(page);
    await setSettings(page, { gen_length: '8' });
    await page.getByTestId('image-input').setInputFiles(IMAGE);
    expect(await ask(page, PROMPT)).toBe(reference.image8.text);
    await page.getByTestId('new-chat').click();
    expect(await page.getByTestId('answer').count()).toBe(0);
    await setSettings(page, { gen_length: '16' });
    await page.getByTestId('image-input').setInputFiles(IMAGE);
    expect(await ask(page, PROMPT)).toBe(reference.image16.text);
    expect(reference.image16.text).not.toBe(reference.image8.text);
    // A value out of range is reported before anything is sent.
    await setSettings(page, { steps: '0' });
    await page.getByTestId('prompt').fill(PROMPT);
    await page.getByTestId('send').click();
    await expect.poll(() => page.getByTestId('error').textContent()).toMatch(/^Steps: /);
    expect(await page.getByTestId('answer').count()).toBe(1);
  });

  it('a JSON schema in the settings: the answer parses and validates; a schema dvl cannot follow is the server\'s 400', async () => {
    const { page, problems } = await open();
    await modelsLoaded(page);
    const schema = { type: 'object', properties: { animal: { enum: ['cat', 'dog'] }, count: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['animal', 'count'], additionalProperties: false };
    await setSettings(page, { gen_length: '48', json_schema: JSON.stringify(schema) });
    await page.getByTestId('image-input').setInputFiles(IMAGE);
    const text = await ask(page, PROMPT);
    expect(ajvValidator(schema)(JSON.parse(text)), text).toBe(true);
    await setSettings(page, { json_schema: '{"type": "string", "pattern": "^a"}' });
    await page.getByTestId('prompt').fill(PROMPT);
    await page.getByTestId('send').click();
    await expect.poll(() => page.getByTestId('error').textContent()).toBe('format: "pattern" at / is not supported');
    // Text that is not JSON is reported in the page, before anything is sent.
    await setSettings(page, { json_schema: '{type: object}' });
    await page.getByTestId('send').click();
    await expect.poll(() => page.getByTestId('error').textContent()).toMatch(/^JSON schema: not valid JSON/);
    expect(await page.getByTestId('answer').count()).toBe(1);
    // The browser reports the refused request (400) on its console; that one is expected.
    problems.splice(0, problems.length, ...problems.filter((p) => !/status of 400/.test(p)));
  });

  it('a bad image: the server\'s message is shown and the question goes back to the composer', async () => {
    const { page, problems } = await open();
    await modelsLoaded(page);
    await page.getByTestId('image-input').setInputFiles({ name: 'broken.png', mimeType: 'image/png', buffer: Buffer.from('not an image at all') });
    await page.getByTestId('prompt').fill(PROMPT);
    await page.getByTestId('send').click();
    const error = page.getByTestId('error');
    await error.waitFor();
    // The server's message, naming the file as the user knows it (the server says "images[0]").
    expect(await error.textContent()).toMatch(/^broken\.png: not a supported image/);
    expect(await page.getByTestId('answer').count()).toBe(0);
    expect(await page.getByTestId('prompt').inputValue()).toBe(PROMPT);
    expect(await page.locator('#attachments img').count()).toBe(1);
    // A file that is not an image at all is refused in the page.
    await page.getByTestId('image-input').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello') });
    await expect.poll(() => error.textContent()).toBe('notes.txt is not an image');
    // The browser reports the refused request (400) on its console; that one is expected.
    const expected = problems.filter((p) => /status of 400/.test(p));
    problems.splice(0, problems.length, ...problems.filter((p) => !expected.includes(p)));
  });

  it('with --api-key: the page asks for the key, keeps it for the tab, and sends it', async () => {
    const keyed = await startExtra({ apiKey: KEY });
    const { page, context, problems } = await open(keyed.url);
    const key = page.getByTestId('api-key');
    await key.waitFor();
    await key.fill('wrong');
    await key.press('Enter');
    await expect.poll(() => page.locator('#key-message').textContent()).toContain('refused');
    await key.fill(KEY);
    await key.press('Enter');
    await modelsLoaded(page);
    expect(await key.isVisible()).toBe(false);
    await setSettings(page, { gen_length: '8' });
    await page.getByTestId('image-input').setInputFiles(IMAGE);
    expect(await ask(page, PROMPT)).toBe(reference.image8.text);
    expect(await page.evaluate(() => sessionStorage.getItem('dvl-api-key'))).toBe(KEY);
    // A reload keeps it (the same tab); another tab asks again.
    await page.reload();
    await modelsLoaded(page);
    expect(await key.isVisible()).toBe(false);
    const other = await context.newPage();
    await other.goto(`${keyed.url}/`);
    await other.getByTestId('api-key').waitFor();
    await other.close();
    // The refused requests (401) are on the console; those are expected.
    problems.splice(0, problems.length, ...problems.filter((p) => !/status of 401/.test(p)));
  });

  it('at phone width (390 px) nothing scrolls sideways; Shift+Enter is a new line', async () => {
    const { page } = await open(server.url, { width: 390, height: 844 });
    await modelsLoaded(page);
    await setSettings(page, { gen_length: '24' });
    await page.getByTestId('image-input').setInputFiles(IMAGE);
    // The tiny model's answer has long unbroken runs ("lglglg…"): they must wrap too.
    await ask(page, PROMPT);
    const prompt = page.getByTestId('prompt');
    await prompt.fill('one');
    await prompt.press('Shift+Enter');
    await prompt.pressSequentially('two');
    expect(await prompt.inputValue()).toBe('one\ntwo');
    expect(await page.getByTestId('answer').count()).toBe(1);
    const overflow = await page.evaluate(() => {
      const wide = [...document.querySelectorAll('body *')].filter((e: any) => e.getBoundingClientRect().right > window.innerWidth + 0.5 && !e.closest('.visually-hidden'));
      return { scrollWidth: document.documentElement.scrollWidth as number, wide: wide.map((e: any) => String(e.outerHTML).slice(0, 80)) };
    });
    expect(overflow).toEqual({ scrollWidth: 390, wide: [] });
    for (const id of ['prompt', 'send', 'stop', 'new-chat', 'model', 'settings']) expect(await page.getByTestId(id).isVisible(), id).toBe(true);
  });

  it('keyboard: every control is reached with Tab, in reading order; the theme switches to dark', async () => {
    const { page } = await open();
    await modelsLoaded(page);
    await page.getByTestId('prompt').fill(PROMPT);
    await page.getByTestId('model').focus();
    const order: string[] = [];
    for (let i = 0; i < 6; i++) {
      await page.keyboard.press('Tab');
      order.push(await page.evaluate(() => {
        const e = document.activeElement;
        return String(e.dataset.testid || e.id || e.tagName.toLowerCase());
      }));
    }
    expect(order).toEqual(['new-chat', 'theme', 'summary', 'prompt', 'image-input', 'send']);
    const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const light = await background();
    await page.locator('#theme').click();
    expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe('dark');
    expect(await page.locator('#theme').getAttribute('aria-pressed')).toBe('true');
    expect(await background()).not.toBe(light);
  });
});
