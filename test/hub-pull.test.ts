/**
 * Pulling from the Hub through the library (src/hub), against a local server speaking the Hub endpoints:
 * the Python cache layout, file selection, resume with Range, verification, retries, errors, offline, locking.
 * Expected hashes come from node:crypto over the source files, independently of the downloader.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { hubCacheDir, parseHubRef, repoDir } from '../src/hub/cache.js';
import { partialPath } from '../src/hub/download.js';
import { type DownloadProgress, pullSnapshot, type PullOptions } from '../src/hub/pull.js';
import { DvlError } from '../src/util/errors.js';
import { type HubServer, startHubServer } from './helpers/hub-server.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const ID = 'test-org/Tiny-DiffusionVL';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-hub-'));
const ckpt = path.join(work, 'ckpt');
const NEEDED = ['config.json', 'generation_config.json', 'model.safetensors', 'preprocessor_config.json', 'tokenizer.json', 'tokenizer_config.json'];
/** Files in the repo that must never be fetched: remote code, and pickles next to safetensors. */
const EXTRA = { 'pytorch_model.bin': Buffer.alloc(4096, 7), 'README.md': Buffer.from('# tiny\n') };

let server: HubServer;
let cacheDir: string;
beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }) });
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));
beforeEach(async () => {
  server = await startHubServer();
  server.publish(ID, ckpt, EXTRA);
  cacheDir = fs.mkdtempSync(path.join(work, 'cache-'));
});
afterEach(async () => {
  await server.close();
});

const options = (extra: Partial<PullOptions> = {}): PullOptions => ({ cacheDir, endpoint: server.endpoint, retryBaseMs: 5, ...extra });
const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const weights = 'model.safetensors';
const weightBytes = () => fs.statSync(path.join(ckpt, weights)).size;

async function failure(p: Promise<unknown>): Promise<DvlError> {
  const error = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DvlError);
  return error as DvlError;
}

describe('pullSnapshot', () => {
  it('downloads only the needed files into the Python cache layout, byte-identical', async () => {
    const events: DownloadProgress[] = [];
    const snap = await pullSnapshot(parseHubRef(ID), options({ onProgress: (p) => events.push(p) }));
    const repo = repoDir(cacheDir, ID);
    expect(repo).toBe(path.join(cacheDir, 'models--test-org--Tiny-DiffusionVL'));
    expect(fs.readFileSync(path.join(repo, 'refs', 'main'), 'utf8')).toBe(snap.commit);
    expect(snap.dir).toBe(path.join(repo, 'snapshots', snap.commit));
    expect(snap.files.map((f) => f.name)).toEqual(NEEDED);
    expect(fs.readdirSync(snap.dir).sort()).toEqual(NEEDED);
    for (const name of NEEDED) {
      const link = path.join(snap.dir, name);
      // Relative symlink to blobs/<sha256> for LFS files, as huggingface_hub writes it.
      expect(fs.readlinkSync(link).startsWith('../../blobs/')).toBe(true);
      expect(sha256(link)).toBe(sha256(path.join(ckpt, name)));
    }
    expect(fs.existsSync(path.join(repo, 'blobs', sha256(path.join(ckpt, weights))))).toBe(true);
    // Never the remote code, the pickle or the README.
    const fetched = server.downloads().map((r) => r.url.split('/').pop());
    expect(fetched.sort()).toEqual([...NEEDED].sort());
    const total = NEEDED.reduce((s, n) => s + fs.statSync(path.join(ckpt, n)).size, 0);
    expect(snap.downloadedBytes).toBe(total);
    expect(events.at(-1)).toMatchObject({ done: total, total });
    // The tree was paginated (page size 4 < file count): @huggingface/hub followed the Link header.
    expect(server.requests.filter((r) => r.url.includes('/tree/')).length).toBeGreaterThan(1);
  });

  it('a second pull downloads nothing', async () => {
    await pullSnapshot(parseHubRef(ID), options());
    const before = server.downloads().length;
    const again = await pullSnapshot(parseHubRef(ID), options());
    expect(server.downloads().length).toBe(before);
    expect(again.downloadedBytes).toBe(0);
  });

  it('resumes a dropped download with a Range request from the partial size, then verifies', async () => {
    const cut = 3000;
    server.faults.dropAfter.set(weights, cut);
    const error = await failure(pullSnapshot(parseHubRef(ID), options({ retries: 0 })));
    expect(error.message).toMatch(/cannot reach/);
    const blob = path.join(repoDir(cacheDir, ID), 'blobs', sha256(path.join(ckpt, weights)));
    expect(fs.statSync(partialPath(blob)).size).toBe(cut);
    expect(fs.existsSync(blob)).toBe(false);

    const snap = await pullSnapshot(parseHubRef(ID), options());
    const tries = server.downloads(weights);
    expect(tries.map((r) => r.range)).toEqual([undefined, `bytes=${cut}-`]);
    expect(snap.downloadedBytes).toBe(weightBytes() - cut);
    expect(sha256(path.join(snap.dir, weights))).toBe(sha256(path.join(ckpt, weights)));
    expect(fs.existsSync(partialPath(blob))).toBe(false);
  });

  it('retries within one pull: a dropped connection and a 503 are retried, resuming', async () => {
    server.faults.dropAfter.set(weights, 1000);
    server.faults.failWith.set('tokenizer.json', { status: 503, times: 2 });
    const snap = await pullSnapshot(parseHubRef(ID), options({ retries: 3 }));
    expect(server.downloads(weights).map((r) => r.range)).toEqual([undefined, 'bytes=1000-']);
    expect(server.downloads('tokenizer.json')).toHaveLength(3);
    expect(sha256(path.join(snap.dir, weights))).toBe(sha256(path.join(ckpt, weights)));
  });

  it('rejects corrupted bytes: verification error, nothing enters the cache', async () => {
    server.faults.corrupt.add(weights);
    const error = await failure(pullSnapshot(parseHubRef(ID), options()));
    expect(error.message).toMatch(/model\.safetensors failed verification \(sha256 [0-9a-f]{64}, expected [0-9a-f]{64}\)/);
    const blobs = fs.readdirSync(path.join(repoDir(cacheDir, ID), 'blobs'));
    expect(blobs).not.toContain(sha256(path.join(ckpt, weights)));
    expect(blobs.some((b) => b.endsWith('.incomplete'))).toBe(false);
  });

  it('checks the disk space before downloading', async () => {
    const error = await failure(pullSnapshot(parseHubRef(ID), options({ freeBytes: () => 1000 })));
    expect(error.message).toMatch(/^not enough disk space in .*: the download needs [\d.]+ MB, 0\.0 MB is free/);
    expect(server.downloads()).toHaveLength(0);
  });

  it('says what was found when the repo is not a DiffusionVL checkpoint, before downloading weights', async () => {
    const other = path.join(work, 'bert');
    fs.mkdirSync(other, { recursive: true });
    fs.writeFileSync(path.join(other, 'config.json'), JSON.stringify({ model_type: 'bert', architectures: ['BertModel'] }));
    fs.writeFileSync(path.join(other, 'model.safetensors'), Buffer.alloc(64));
    server.publish('test-org/bert', other);
    const error = await failure(pullSnapshot(parseHubRef('test-org/bert'), options()));
    expect(error.message).toMatch(/^test-org\/bert is not a DiffusionVL \/ Qwen2\.5-VL checkpoint: config\.json: model_type "bert" and architectures \["BertModel"\] name no DiffusionVL model dvl knows/);
    expect(server.downloads('model.safetensors')).toHaveLength(0);

    const pickles = path.join(work, 'pickles');
    fs.mkdirSync(pickles, { recursive: true });
    fs.copyFileSync(path.join(ckpt, 'config.json'), path.join(pickles, 'config.json'));
    server.publish('test-org/pickles', pickles, { 'pytorch_model.bin': Buffer.alloc(10) });
    const e2 = await failure(pullSnapshot(parseHubRef('test-org/pickles'), options()));
    expect(e2.message).toBe('test-org/pickles has no safetensors weights (only PyTorch .bin files, which dvl does not read) (found config.json, pytorch_model.bin)');
  });

  it('404: unknown repo and unknown revision', async () => {
    expect((await failure(pullSnapshot(parseHubRef('test-org/nope'), options()))).message).toBe(`model test-org/nope not found on ${server.endpoint}`);
    expect((await failure(pullSnapshot(parseHubRef(`${ID}@v9`), options()))).message).toBe(`revision 'v9' not found in ${ID}`);
  });

  it('pulls a pinned commit and a moved branch; records the ref', async () => {
    const first = await pullSnapshot(parseHubRef(ID), options());
    const v2 = path.join(work, 'v2');
    fs.cpSync(ckpt, v2, { recursive: true });
    fs.writeFileSync(path.join(v2, 'generation_config.json'), '{"temperature": 0.5}\n');
    const second = server.publish(ID, v2, EXTRA);
    const before = server.downloads().length;
    const updated = await pullSnapshot(parseHubRef(ID), options());
    expect(updated.commit).toBe(second);
    expect(updated.commit).not.toBe(first.commit);
    // Only the changed file moves: blobs are shared by content.
    expect(server.downloads().slice(before).map((r) => r.url.split('/').pop())).toEqual(['generation_config.json']);
    const pinned = await pullSnapshot(parseHubRef(`${ID}@${first.commit}`), options());
    expect(pinned.dir).toBe(first.dir);
    expect(fs.readFileSync(path.join(repoDir(cacheDir, ID), 'refs', 'main'), 'utf8')).toBe(second);
  });
});

describe('authentication', () => {
  const TOKEN = 'secret-token-without-hf-prefix';
  let authServer: HubServer;
  beforeEach(async () => {
    authServer = await startHubServer({ token: TOKEN, gatedToken: 'hf_other_account' });
    authServer.publish(ID, ckpt);
  });
  afterEach(async () => authServer.close());

  it('401 without a token, 403 for a token without access, success with the right token (any format)', async () => {
    const opts = (token?: string): PullOptions => ({ cacheDir, endpoint: authServer.endpoint, retryBaseMs: 5, token });
    const e401 = await failure(pullSnapshot(parseHubRef(ID), opts()));
    expect(e401.message).toBe(`${ID} needs authentication (401): it is private or gated, or does not exist; set HF_TOKEN or pass --token with a token from https://huggingface.co/settings/tokens`);
    const e403 = await failure(pullSnapshot(parseHubRef(ID), opts('hf_other_account')));
    expect(e403.message).toMatch(new RegExp(`^${ID} is gated or private and this token has no access \\(403\\): accept its terms at ${authServer.endpoint}/${ID}, then`));
    const wrong = await failure(pullSnapshot(parseHubRef(ID), opts('hf_wrong')));
    expect(wrong.message).toMatch(/did not accept the token/);
    for (const e of [e401, e403, wrong]) expect(e.message).not.toMatch(/secret-token|hf_other|hf_wrong/);
    const snap = await pullSnapshot(parseHubRef(ID), opts(TOKEN));
    expect(fs.readdirSync(snap.dir).sort()).toEqual(NEEDED.filter((n) => fs.existsSync(path.join(ckpt, n))));
    expect(authServer.requests.at(-1)?.authorization).toBe(`Bearer ${TOKEN}`);
  });
});

describe('offline and locking', () => {
  it('offline: zero requests; uses the cache; one-line errors for what is missing', async () => {
    const none = await failure(pullSnapshot(parseHubRef(ID), options({ offline: true })));
    expect(none.message).toBe(`${ID} is not in the Hugging Face cache (${cacheDir}); run 'dvl pull ${ID}' while online`);
    const online = await pullSnapshot(parseHubRef(ID), options());
    const count = server.requests.length;
    const offline = await pullSnapshot(parseHubRef(ID), options({ offline: true }));
    expect(offline.dir).toBe(online.dir);
    expect(offline.commit).toBe(online.commit);
    expect(server.requests.length).toBe(count);
    fs.rmSync(path.join(offline.dir, weights));
    expect((await failure(pullSnapshot(parseHubRef(ID), options({ offline: true })))).message).toMatch(/is only partly downloaded \(missing model\.safetensors\)/);
    expect(server.requests.length).toBe(count);
  });

  it('two concurrent pulls of one model: each file downloaded once, both get the snapshot', async () => {
    let waited = 0;
    const [a, b] = await Promise.all([pullSnapshot(parseHubRef(ID), options({ onWait: () => waited++ })), pullSnapshot(parseHubRef(ID), options({ onWait: () => waited++ }))]);
    expect(a.dir).toBe(b.dir);
    expect(waited).toBe(1);
    for (const name of NEEDED) expect(server.downloads(name)).toHaveLength(1);
    expect(a.downloadedBytes + b.downloadedBytes).toBe(NEEDED.reduce((s, n) => s + fs.statSync(path.join(ckpt, n)).size, 0));
  });

  it('takes over a lock left by a dead process', async () => {
    const { spawnSync } = await import('node:child_process');
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    const lock = path.join(cacheDir, '.locks', 'models--test-org--Tiny-DiffusionVL', 'dvl-pull.lock');
    fs.mkdirSync(path.dirname(lock), { recursive: true });
    fs.writeFileSync(lock, `${dead}\n`);
    let waited = 0;
    await pullSnapshot(parseHubRef(ID), options({ onWait: () => waited++ }));
    expect(waited).toBe(0);
    expect(fs.existsSync(lock)).toBe(false);
  });

  it('cache location: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub', () => {
    expect(hubCacheDir({ HF_HUB_CACHE: '/a', HUGGINGFACE_HUB_CACHE: '/b', HF_HOME: '/c' })).toBe('/a');
    expect(hubCacheDir({ HUGGINGFACE_HUB_CACHE: '/b', HF_HOME: '/c' })).toBe('/b');
    expect(hubCacheDir({ HF_HOME: '/c' })).toBe('/c/hub');
    expect(hubCacheDir({})).toBe(path.join(os.homedir(), '.cache', 'huggingface', 'hub'));
  });

  it('parses model ids', () => {
    expect(parseHubRef('hustvl/DiffusionVL-Qwen2.5VL-3B')).toEqual({ id: 'hustvl/DiffusionVL-Qwen2.5VL-3B' });
    expect(parseHubRef('a/b@v1.0')).toEqual({ id: 'a/b', revision: 'v1.0' });
    for (const bad of ['a', 'a/b/c', '../x', 'a/b@', './a']) expect(() => parseHubRef(bad)).toThrow(DvlError);
  });
});
