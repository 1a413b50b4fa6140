/**
 * `dvl pull org/name`, `ask --model org/name`, `list`, `show`, `rm` through the real binary, against a local
 * server speaking the Hub endpoints. The server runs in this process, so the binary runs asynchronously.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDvlAsync } from './helpers/cli.js';
import { type HubServer, startHubServer } from './helpers/hub-server.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const ID = 'test-org/Tiny-DiffusionVL';
const TOKEN = 'tok-secret-123';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-hubcli-'));
const ckpt = path.join(work, 'ckpt');
const home = path.join(work, 'dvl-home');
const cache = path.join(work, 'hf-cache');
let server: HubServer;
let commit: string;

beforeAll(async () => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }) });
  server = await startHubServer({ token: TOKEN });
  commit = server.publish(ID, ckpt);
});
afterAll(async () => {
  await server?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function dvl(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return runDvlAsync(args, { DVL_HOME: home, HF_HUB_CACHE: cache, HF_ENDPOINT: server.endpoint, HF_TOKEN: TOKEN, HOME: work, DVL_HUB_RETRY_MS: '5', ...env });
}

const variants = () => path.join(home, 'models', 'hub', 'test-org--Tiny-DiffusionVL', commit);

/** Parameter count read from the safetensors header, independently of dvl's config-derived count. */
function parameterCount(file: string): number {
  const bytes = fs.readFileSync(file);
  const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8')) as Record<string, { shape?: number[] }>;
  return Object.entries(header).reduce((s, [k, v]) => (k === '__metadata__' ? s : s + (v.shape ?? []).reduce((a, b) => a * b, 1)), 0);
}

describe('dvl with a Hub model', () => {
  it('401 without a token and 404 for an unknown model: one line, exit 3, no token printed', async () => {
    const r = await dvl(['pull', ID], { HF_TOKEN: '' });
    expect(r.status).toBe(3);
    expect(r.stderr).toBe(`dvl: ${ID} needs authentication (401): it is private or gated, or does not exist; set HF_TOKEN or pass --token with a token from https://huggingface.co/settings/tokens\n`);
    const wrong = await dvl(['pull', ID, '--token', 'hf_wrong_value']);
    expect(wrong.status).toBe(3);
    expect(wrong.stderr).not.toContain('hf_wrong_value');
    const missing = await dvl(['pull', 'test-org/missing']);
    expect(missing.stderr).toBe(`dvl: model test-org/missing not found on ${server.endpoint}\n`);
  });

  it('corrupted weights: verification error, nothing converted', async () => {
    server.faults.corrupt.add('model.safetensors');
    try {
      const r = await dvl(['pull', ID, '--dtype', 'fp32']);
      expect(r.status).toBe(3);
      expect(r.stderr).toMatch(/model\.safetensors failed verification \(sha256 /);
      expect(fs.existsSync(variants())).toBe(false);
    } finally {
      server.faults.corrupt.delete('model.safetensors');
    }
  });

  it('pull downloads and converts; ask then makes no request, also offline; list, show, rm', async () => {
    const pull = await dvl(['pull', ID, '--dtype', 'fp32']);
    expect(pull.status, pull.stderr).toBe(0);
    expect(pull.stdout).toBe('');
    expect(pull.stderr).toMatch(/dvl: downloading model\.safetensors/);
    expect(pull.stderr).toMatch(/dvl: downloaded 100%/);
    expect(pull.stderr).not.toContain(TOKEN);
    expect(fs.existsSync(path.join(variants(), 'fp32', 'manifest.json'))).toBe(true);
    expect(fs.readFileSync(path.join(cache, 'models--test-org--Tiny-DiffusionVL', 'refs', 'main'), 'utf8')).toBe(commit);

    const before = server.requests.length;
    const ask = await dvl(['ask', '--model', ID, '--dtype', 'fp32', '-n', '4', '-s', '2', 'Hello']);
    expect(ask.status, ask.stderr).toBe(0);
    expect(ask.stdout.length).toBeGreaterThan(0);
    const offline = await dvl(['ask', '--model', ID, '--dtype', 'fp32', '-n', '4', '-s', '2', 'Hello'], { HF_HUB_OFFLINE: '1', HF_ENDPOINT: 'http://127.0.0.1:9' });
    expect(offline.status, offline.stderr).toBe(0);
    expect(offline.stdout).toBe(ask.stdout);
    expect(server.requests.length).toBe(before);

    // pull again asks the Hub for the newest commit (a revision request), and downloads nothing.
    const again = await dvl(['pull', ID, '--dtype', 'fp32']);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/already converted/);
    expect(server.requests.slice(before).some((r) => r.url.includes('/revision/'))).toBe(true);
    expect(server.requests.slice(before).some((r) => r.url.includes('/resolve/'))).toBe(false);

    const list = await dvl(['list']);
    expect(list.status).toBe(0);
    const lines = list.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^MODEL\s+REVISION\s+VARIANTS\s+SIZE$/);
    expect(lines[1]).toMatch(new RegExp(`^${ID}\\s+${commit.slice(0, 12)}\\s+fp32\\s+[\\d.]+ MB$`));

    const show = await dvl(['show', ID]);
    expect(show.status, show.stderr).toBe(0);
    const params = parameterCount(path.join(ckpt, 'model.safetensors'));
    expect(show.stdout).toContain(`(${params.toLocaleString('en-US')})`);
    const t = tinyConfig({ text: { tieWordEmbeddings: false } }).text;
    expect(show.stdout).toContain(`${t.numLayers} layers, hidden ${t.hiddenSize}, ${t.numHeads} heads (${t.numKvHeads} KV)`);
    expect(show.stdout).toMatch(/variant\s+fp32/);
    expect(show.stdout).toMatch(/model\.safetensors \(/);

    const rm = await dvl(['rm', ID, '--all']);
    expect(rm.status, rm.stderr).toBe(0);
    expect(rm.stdout).toMatch(new RegExp(`^removed ${ID}: 1 converted variant\\(s\\) and its Hugging Face cache files, [\\d.]+ MB freed\\n$`));
    expect(fs.existsSync(variants())).toBe(false);
    expect(fs.existsSync(path.join(cache, 'models--test-org--Tiny-DiffusionVL'))).toBe(false);
    expect((await dvl(['list'])).stdout).toMatch(/^no models in /);
    const offlineGone = await dvl(['ask', '--model', ID, 'Hello'], { HF_HUB_OFFLINE: '1' });
    expect(offlineGone.status).toBe(3);
    expect(offlineGone.stderr).toMatch(/is not in the Hugging Face cache/);
  });
});
