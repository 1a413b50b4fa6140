/**
 * `npx tsx scripts/screenshot-ui.ts [OUT.png]` (or `npm run screenshot-ui`): the picture of the chat page in
 * README.md, taken mid-answer. It writes the tiny random model of `npm run make-tiny` (seed 5: the README's
 * sample outputs come from it, so the answers are gibberish), starts `dvl serve` in this process on
 * 127.0.0.1 with the page built afresh, and drives headless Chromium (/usr/bin/chromium, through
 * playwright-core) as a user would: an image question, then a follow-up, photographed while its blocks denoise.
 *
 * The tiny model answers in a fraction of a second, faster than a photo can be taken at a chosen moment, so
 * the browser's connection is throttled (Chrome's network emulation) while the follow-up streams in: what
 * the picture shows is what the page draws for a slower model, step by step. Nothing is downloaded; the
 * model, its store and the built page live in a temporary folder that is removed at the end.
 * Default output: docs/ui-screenshot.png.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer } from '../src/server/serve.js';
import { tinyConfig } from '../test/helpers/random-weights.js';
import { testServeOptions, waitHealthy } from '../test/helpers/test-server.js';
import { writeTinyCheckpoint } from '../test/helpers/tiny-checkpoint.js';
import { buildWeb } from './build-web.js';

// page.waitForFunction() callbacks run in the browser; this project's tsconfig has no DOM types.
declare const document: any;

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = '/usr/bin/chromium';
const out = path.resolve(process.argv[2] ?? path.join(ROOT, 'docs/ui-screenshot.png'));

if (!fs.existsSync(CHROMIUM)) {
  process.stderr.write(`screenshot-ui: needs Chromium at ${CHROMIUM} (Debian: apt-get install chromium)\n`);
  process.exit(1);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-'));
// The model's id on the page is this path.
const ckpt = path.join(work, 'tiny-random-model');
writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 5 });
await buildWeb(path.join(work, 'web'));
const server = await startServer(
  testServeOptions({ uiDir: path.join(work, 'web'), pool: { model: ckpt, threads: undefined, env: { ...process.env, DVL_HOME: path.join(work, 'home') } } }),
);
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  await waitHealthy(server.url, 120_000);
  const context = await browser.newContext({ viewport: { width: 900, height: 640 }, colorScheme: 'light' });
  const page = await context.newPage();
  await page.goto(`${server.url}/`);
  await page.waitForFunction(() => document.querySelector('[data-testid=model]').options.length > 0);

  // A first question about the photo, answered in full (its stats show).
  await page.locator('summary').click();
  await page.locator('[name=gen_length]').fill('32');
  await page.locator('summary').click();
  await page.getByTestId('image-input').setInputFiles(path.join(ROOT, 'fixtures/images/chelsea.png'));
  await page.getByTestId('prompt').fill('What is in this picture?');
  await page.getByTestId('send').click();
  await page.getByTestId('stats').waitFor();

  // The follow-up, slowed down on its way to the browser, photographed with a block half denoised.
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: 1500, uploadThroughput: -1 });
  await page.locator('summary').click();
  await page.locator('[name=gen_length]').fill('128');
  await page.locator('summary').click();
  await page.getByTestId('prompt').fill('What breed could it be?');
  await page.getByTestId('send').click();
  await page.waitForFunction(() => {
    const answers = document.querySelectorAll('[data-testid=answer]');
    const live = answers[answers.length - 1];
    const masked = live.querySelectorAll('[data-testid=masked]').length;
    const text = String(live.textContent);
    // A few blocks in, and before the random model's answer reaches characters (CJK) that the fonts of a
    // bare Chromium draw as empty boxes.
    return answers.length === 2 && text.length > 30 && masked >= 3 && masked <= 5 && [...text].every((c) => c.codePointAt(0)! <= 0x24f);
  }, undefined, { timeout: 120_000, polling: 10 });
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await page.screenshot({ path: out });
  process.stdout.write(`wrote ${path.relative(process.cwd(), out)} (${(fs.statSync(out).size / 1024).toFixed(0)} kB)\n`);
  await page.getByTestId('stop').click();
} finally {
  await browser.close();
  await server.close(1000);
  fs.rmSync(work, { recursive: true, force: true });
}
