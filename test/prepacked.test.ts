/**
 * The decoder's weights packed for this machine (src/store/prepacked.ts), through the real binary on a tiny int4
 * model: `dvl pull` packs them and makes the packed graph the variant's decoder (the plain files go), a later
 * `ask` starts from it and answers token for token as the plain conversion does; an ask on a variant not packed
 * yet packs it; a variant packed on another machine still answers the same (onnxruntime packs again in
 * memory); a machine where packing was found not to reproduce the logits does not try again.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sameValues } from '../src/store/prepacked.js';
import { runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const { onnx } = onnxProto;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-prepacked-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home') };
const ASK = ['ask', '--model', ckpt, '--dtype', 'int4', '--threads', '1', '-n', '16', '--verbose', '--json', 'Describe a cat.'];

function variantDir(): string {
  const local = path.join(env.DVL_HOME, 'models', 'local');
  return path.join(local, fs.readdirSync(local)[0], 'int4');
}
const manifest = () => JSON.parse(fs.readFileSync(path.join(variantDir(), 'manifest.json'), 'utf8'));
const editManifest = (edit: (m: Record<string, unknown>) => void) => {
  const m = manifest();
  edit(m);
  fs.writeFileSync(path.join(variantDir(), 'manifest.json'), JSON.stringify(m));
};
const tokensOf = (stdout: string) => (JSON.parse(stdout) as { tokens: number[] }).tokens;

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 9 });
}, 60_000);
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('decoder weights packed for this machine', () => {
  let plainTokens: number[];
  /** This machine, as a packing records it. */
  let here: unknown;

  it('off (DVL_PREPACK=0): the plain conversion, nothing packed', () => {
    const r = runDvl(ASK, { env: { ...env, DVL_PREPACK: '0' } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('no packing');
    plainTokens = tokensOf(r.stdout);
    expect(fs.readdirSync(variantDir())).toContain('decoder.onnx');
    expect(manifest().prepacked).toBeUndefined();
  });

  it('dvl pull packs them: the packed graph replaces the plain decoder files, every region 4096-aligned', () => {
    const pull = runDvl(['pull', ckpt, '--dtype', 'int4'], { env });
    expect(pull.status, pull.stderr).toBe(0);
    expect(pull.stderr).toMatch(/already converted, decoder packed for this CPU: [\d.]+ GB in /);
    const files = fs.readdirSync(variantDir());
    expect(files).toContain('decoder.packed.onnx');
    expect(files).not.toContain('decoder.onnx');
    expect(files).not.toContain('decoder.onnx.data');
    // Nothing of the packing is left beside it (staging files, the lock).
    expect(files.filter((f) => f.startsWith('.'))).toEqual([]);
    const m = manifest();
    expect(m.graphs.decoder).toBe('decoder.packed.onnx');
    expect(m.prepacked).toMatchObject({ onnxruntime: expect.any(String), cpu: expect.any(String) });
    // The manifest lists exactly the files there are, with their sizes.
    expect(m.files.map((f: { name: string }) => f.name).sort()).toEqual(files.filter((f) => f !== 'manifest.json').sort());

    const graph = onnx.ModelProto.decode(fs.readFileSync(path.join(variantDir(), 'decoder.packed.onnx')));
    const offsets: number[] = [];
    let blobs = 0;
    for (const tensor of graph.graph?.initializer ?? []) {
      for (const entry of tensor.externalData ?? []) {
        if (entry.key === 'location') expect(entry.value).toBe('decoder.packed.onnx.data');
        if (entry.key === 'offset') offsets.push(Number(entry.value));
        if (entry.key?.startsWith('prepacked')) {
          for (const blob of String(entry.value).split('|').slice(1)) {
            offsets.push(Number(blob.split(';')[0]));
            blobs++;
          }
        }
      }
    }
    expect(blobs).toBeGreaterThan(0);
    expect(offsets.filter((o) => o % 4096 !== 0)).toEqual([]);
  });

  it('an ask after pull starts from the packed weights and answers as the plain conversion', () => {
    const r = runDvl(ASK, { env });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('preparing');
    expect(r.stderr).toMatch(/decoder session \d+ ms \(weights packed for this machine\)/);
    expect(tokensOf(r.stdout)).toEqual(plainTokens);
  });

  it('dvl show and dvl list: the size on disk, and for which CPU the weights are packed', () => {
    const show = runDvl(['show', ckpt], { env });
    expect(show.status, show.stderr).toBe(0);
    expect(show.stdout).toMatch(/variant +int4 +[\d.]+ MB +converted .* packed for .* \(onnxruntime [\d.]+\)/);
    const bytes = fs.readdirSync(variantDir()).reduce((s, f) => s + fs.statSync(path.join(variantDir(), f)).size, 0);
    const list = runDvl(['list'], { env });
    expect(list.stdout).toContain(`${(bytes / 1e6).toFixed(1)} MB`);
  });

  it('packed on another machine: onnxruntime packs again in memory, the answer is the same', () => {
    editManifest((m) => ((m.prepacked as { cpu: string }).cpu = 'Another CPU'));
    const r = runDvl(ASK, { env });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('weights packed on another machine or onnxruntime: packed again in memory');
    expect(tokensOf(r.stdout)).toEqual(plainTokens);
  });

  it('an ask on a variant not packed yet packs it (once), the answer the same', () => {
    const first = runDvl(['pull', ckpt, '--dtype', 'int4', '--force', '--quiet'], { env: { ...env, DVL_PREPACK: '0' } });
    expect(first.status, first.stderr).toBe(0);
    expect(manifest().prepacked).toBeUndefined();
    const r = runDvl(ASK, { env });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain("preparing the decoder's weights for this CPU");
    expect(r.stderr).toMatch(/\(weights packed now and saved for the next start\)/);
    // onnxruntime's own warning about saving a hardware-specific graph stays off stderr.
    for (const line of r.stderr.trimEnd().split('\n')) expect(line).toMatch(/^dvl: /);
    expect(tokensOf(r.stdout)).toEqual(plainTokens);
    expect(manifest().graphs.decoder).toBe('decoder.packed.onnx');
    here = manifest().prepacked;
  });

  it('a start that read the manifest before another process switched the variant to its packed graph opens that graph', async () => {
    const { loadModel } = await import('../src/runtime/model.js');
    const current = manifest();
    // The manifest as it was before the switch: the plain decoder, whose files are gone now.
    const stale = { ...current, graphs: { ...current.graphs, decoder: 'decoder.onnx' }, prepacked: undefined };
    expect(fs.existsSync(path.join(variantDir(), 'decoder.onnx'))).toBe(false);
    // Another (live) process holds the packing lock: this start does not pack, it opens the manifest's graph.
    const lock = path.join(variantDir(), '.pack.lock');
    fs.writeFileSync(lock, `${process.pid}\n`);
    try {
      const model = await loadModel(variantDir(), stale, { threads: 1, tokenizer: false });
      expect(model.manifest.graphs.decoder).toBe('decoder.packed.onnx');
      expect(model.startup.prepacked).toBe('used');
      await model.close();
    } finally {
      fs.rmSync(lock, { force: true });
    }
    // The lock free (the other process is done): this start takes it, and finds the variant packed; the packed
    // files are the variant's, not leftovers of a packing cut short.
    const model = await loadModel(variantDir(), stale, { threads: 1, tokenizer: false });
    expect(model.manifest.graphs.decoder).toBe('decoder.packed.onnx');
    expect(model.startup.prepacked).toBe('used');
    await model.close();
    expect(fs.readdirSync(variantDir())).toEqual(expect.arrayContaining(['decoder.packed.onnx', 'decoder.packed.onnx.data']));
  });

  it('where packing did not reproduce the logits, it is not tried again on that machine', () => {
    const pull = runDvl(['pull', ckpt, '--dtype', 'int4', '--force', '--quiet'], { env: { ...env, DVL_PREPACK: '0' } });
    expect(pull.status, pull.stderr).toBe(0);
    // The mark a failed check leaves: this machine.
    editManifest((m) => (m.unpackable = here));
    const r = runDvl(ASK, { env });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('preparing');
    expect(r.stderr).toContain("packed weights do not reproduce this model's logits here, not used");
    expect(tokensOf(r.stdout)).toEqual(plainTokens);
    expect(fs.readdirSync(variantDir())).toContain('decoder.onnx');
  });

  it('dvl rm removes the packed variant', () => {
    const rm = runDvl(['rm', ckpt], { env });
    expect(rm.status, rm.stderr).toBe(0);
    expect(fs.readdirSync(path.join(env.DVL_HOME, 'models', 'local'))).toEqual([]);
  });

  it('compares outputs bit for bit', () => {
    expect(sameValues(Float32Array.of(1, 2, NaN), Float32Array.of(1, 2, NaN))).toBe(true);
    expect(sameValues(Float32Array.of(0), Float32Array.of(-0))).toBe(false);
    expect(sameValues(Float32Array.of(1, 2), Float32Array.of(1, 2.0000002))).toBe(false);
    expect(sameValues(Float32Array.of(1), Float32Array.of(1, 2))).toBe(false);
  });
});
