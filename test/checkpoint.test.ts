import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint, tokenizerFiles } from '../src/checkpoint/checkpoint.js';
import { DvlError } from '../src/util/errors.js';
import type { MemoryWeights } from './helpers/random-weights.js';
import { tinyConfig } from './helpers/random-weights.js';
import { parseModelConfig } from '../src/models/qwen25vl/config.js';
import { expectedTensors } from '../src/models/qwen25vl/expected-tensors.js';
import { configJson, f32BitsToF16Bits, syntheticConfig, writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-ckpt-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** One checkpoint written once; tests that damage it work on copies. */
const baseDir = path.join(tmp, 'base');
let base: ReturnType<typeof writeTinyCheckpoint>;
beforeAll(() => {
  base = writeTinyCheckpoint(baseDir, { seed: 3 });
});

let copies = 0;
function copyOf(dir: string): string {
  const out = path.join(tmp, `copy${copies++}`);
  fs.cpSync(dir, out, { recursive: true });
  return out;
}

function editJson(file: string, edit: (json: any) => void): void {
  const json = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(json);
  fs.writeFileSync(file, JSON.stringify(json));
}

function modelErrorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DvlError);
    expect((e as DvlError).kind).toBe('model');
    expect((e as Error).message).not.toContain('\n');
    return (e as Error).message;
  }
  throw new Error('expected a model error');
}

/** Every tensor read from disk must have exactly the bits of the in-memory copy. */
function expectSameWeights(dir: string, weights: MemoryWeights): void {
  const ckpt = openCheckpoint(dir);
  expect(ckpt.names().sort()).toEqual(weights.names().sort());
  for (const name of weights.names()) {
    const want = weights.get(name);
    const got = ckpt.readF32(name);
    expect(ckpt.info(name).shape).toEqual(want.shape);
    const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
    const b = new Uint32Array(want.data.buffer, want.data.byteOffset, want.data.length);
    expect(a.length).toBe(b.length);
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) throw new Error(`${name}[${i}]: got ${got[i]}, want ${want.data[i]}`);
  }
}

describe('openCheckpoint', () => {
  it('reads a single-file DiffusionVL checkpoint: config, names, files, and every tensor bit-exact', () => {
    const ckpt = openCheckpoint(baseDir);
    expect(ckpt.dir).toBe(path.resolve(baseDir));
    expect(ckpt.config).toEqual(tinyConfig());
    expect(ckpt.config).toEqual(base.config);
    ckpt.validate();
    expect(ckpt.ignoredNames).toEqual([]);
    // Every source file that matters, and nothing else (not the remote-code .py file).
    expect(ckpt.files.map((f) => path.basename(f.path))).toEqual([
      'config.json',
      'generation_config.json',
      'model.safetensors',
      'preprocessor_config.json',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    for (const f of ckpt.files) expect(f.size).toBe(fs.statSync(f.path).size);
    expect(fs.existsSync(path.join(baseDir, 'modeling_diffusionvl.py'))).toBe(true);

    const info = ckpt.info('visual.blocks.1.attn.qkv.weight');
    expect(info).toMatchObject({ storedName: 'model.vision_tower.vision_tower.blocks.1.attn.qkv.weight', dtype: 'BF16', shape: [96, 32], byteLength: 96 * 32 * 2 });
    expect(info.file).toBe(path.join(path.resolve(baseDir), 'model.safetensors'));
    expect(ckpt.info('visual.merger.mlp.0.bias').storedName).toBe('model.mm_projector.merger.mlp.0.bias');
    expect(ckpt.has('lm_head.weight')).toBe(false); // tied
    expect(modelErrorOf(() => ckpt.info('lm_head.weight'))).toMatch(/has no tensor lm_head\.weight/);
    expectSameWeights(baseDir, base.weights);
  });

  it('reads embedding rows and fills caller buffers', () => {
    const ckpt = openCheckpoint(baseDir);
    const emb = base.weights.get('model.embed_tokens.weight').data;
    const hidden = 64;
    const rows = ckpt.readRowsF32('model.embed_tokens.weight', 151671, 3);
    expect(Array.from(rows)).toEqual(Array.from(emb.subarray(151671 * hidden, 151674 * hidden)));
    expect(modelErrorOf(() => ckpt.readRowsF32('model.embed_tokens.weight', 151679, 2))).toMatch(/rows \[151679, 151681\) are outside model\.embed_tokens\.weight \(151680 rows\)/);
    const buffer = new Float32Array(96 * 64 + 1);
    const up = ckpt.readF32Into('model.layers.1.mlp.up_proj.weight', buffer);
    expect(up.buffer).toBe(buffer.buffer);
    expect(Array.from(up)).toEqual(Array.from(base.weights.get('model.layers.1.mlp.up_proj.weight').data));
  });

  it('reads a sharded vanilla Qwen2.5-VL checkpoint (newer names, F16, untied, nested-only text keys)', () => {
    const dir = path.join(tmp, 'qwen-new');
    const config = tinyConfig({ text: { tieWordEmbeddings: false } });
    const { config: written, weights } = writeTinyCheckpoint(dir, { config, layout: 'qwen2_5_vl', shards: 3, dtype: 'F16', seed: 5 });
    const ckpt = openCheckpoint(dir);
    expect(ckpt.config).toEqual({ ...config, modelType: 'qwen2_5_vl' });
    expect(ckpt.config).toEqual(written);
    ckpt.validate();
    expect(ckpt.info('lm_head.weight')).toMatchObject({ storedName: 'lm_head.weight', dtype: 'F16', shape: [151680, 64] });
    expect(ckpt.info('model.norm.weight').storedName).toBe('model.language_model.norm.weight');
    expect(ckpt.files.map((f) => path.basename(f.path)).filter((f) => f.startsWith('model'))).toEqual([
      'model-00001-of-00003.safetensors',
      'model-00002-of-00003.safetensors',
      'model-00003-of-00003.safetensors',
      'model.safetensors.index.json',
    ]);
    expect(new Set(ckpt.names().map((n) => path.basename(ckpt.info(n).file))).size).toBe(3);
    expectSameWeights(dir, weights);
  });

  it('reads a sharded older Qwen2.5-VL checkpoint (visual./model. names, F32, flat config)', () => {
    const dir = path.join(tmp, 'qwen-old');
    const { config, weights } = writeTinyCheckpoint(dir, { layout: 'qwen2_5_vl_legacy', shards: 2, dtype: 'F32', nestedTextConfig: false, seed: 9 });
    const ckpt = openCheckpoint(dir);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).text_config).toBeUndefined();
    expect(ckpt.config).toEqual(config);
    ckpt.validate();
    expect(ckpt.info('visual.patch_embed.proj.weight')).toMatchObject({ storedName: 'visual.patch_embed.proj.weight', dtype: 'F32', shape: [32, 3, 2, 14, 14] });
    expectSameWeights(dir, weights);
  });

  it('lists tensors it does not use and refuses a second copy of a used one', () => {
    // Add an unused tensor and then a duplicate under another layout's name, by rewriting the header.
    const dir = copyOf(baseDir);
    const file = path.join(dir, 'model.safetensors');
    const addTensor = (storedName: string) => {
      const bytes = fs.readFileSync(file);
      const headerLength = Number(bytes.readBigUInt64LE(0));
      const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
      const data = bytes.subarray(8 + headerLength);
      header[storedName] = { dtype: 'BF16', shape: [64], data_offsets: [data.length, data.length + 128] };
      const newHeader = Buffer.from(JSON.stringify(header));
      const length = Buffer.alloc(8);
      length.writeBigUInt64LE(BigInt(newHeader.length));
      fs.writeFileSync(file, Buffer.concat([length, newHeader, data, Buffer.alloc(128)]));
    };
    addTensor('model.rotary_emb.inv_freq');
    const ckpt = openCheckpoint(dir);
    expect(ckpt.ignoredNames).toEqual(['model.rotary_emb.inv_freq']);
    ckpt.validate();
    addTensor('model.language_model.norm.weight');
    expect(modelErrorOf(() => openCheckpoint(dir))).toMatch(/tensors model\.norm\.weight and model\.language_model\.norm\.weight both map to model\.norm\.weight/);
  });
});

describe('Checkpoint.validate', () => {
  it('names the first missing tensor and counts the others', () => {
    const dir = copyOf(baseDir);
    editJson(path.join(dir, 'config.json'), (j) => {
      j.num_hidden_layers = 3;
      j.text_config.num_hidden_layers = 3;
    });
    const ckpt = openCheckpoint(dir);
    expect(modelErrorOf(() => ckpt.validate())).toBe(`${path.resolve(dir)}: missing tensor model.layers.2.input_layernorm.weight (and 11 other tensor problems)`);
  });

  it('reports a vocabulary size that disagrees with the embedding rows', () => {
    const dir = copyOf(baseDir);
    editJson(path.join(dir, 'config.json'), (j) => {
      j.text_config.vocab_size = 151936;
    });
    expect(modelErrorOf(() => openCheckpoint(dir).validate())).toMatch(/: model\.embed_tokens\.weight has 151680 rows but config\.json vocab_size is 151936$/);
  });

  it('reports a shape mismatch with the stored name and both shapes', () => {
    const dir = copyOf(baseDir);
    editJson(path.join(dir, 'config.json'), (j) => {
      j.text_config.intermediate_size = 128;
    });
    expect(modelErrorOf(() => openCheckpoint(dir).validate())).toMatch(
      /: tensor model\.layers\.0\.mlp\.gate_proj\.weight has shape \[96, 64\], config\.json implies \[128, 64\] \(and 5 other tensor problems\)$/,
    );
  });

  it('requires lm_head.weight when the embeddings are not tied', () => {
    const dir = copyOf(baseDir);
    editJson(path.join(dir, 'config.json'), (j) => {
      j.tie_word_embeddings = false;
      j.text_config.tie_word_embeddings = false;
    });
    expect(modelErrorOf(() => openCheckpoint(dir).validate())).toMatch(/: missing tensor lm_head\.weight$/);
  });
});

describe('sharded checkpoints: index checks', () => {
  let shardedDir: string;
  beforeAll(() => {
    shardedDir = path.join(tmp, 'sharded');
    writeTinyCheckpoint(shardedDir, { shards: 2, seed: 3 });
  });
  const indexOf = (dir: string) => path.join(dir, 'model.safetensors.index.json');

  it('refuses an index entry that points at the wrong shard', () => {
    const dir = copyOf(shardedDir);
    editJson(indexOf(dir), (j) => {
      expect(j.weight_map['model.mm_projector.merger.mlp.2.bias']).toBe('model-00002-of-00002.safetensors');
      j.weight_map['model.mm_projector.merger.mlp.2.bias'] = 'model-00001-of-00002.safetensors';
    });
    expect(modelErrorOf(() => openCheckpoint(dir))).toMatch(
      /model\.mm_projector\.merger\.mlp\.2\.bias is listed in model\.safetensors\.index\.json under model-00001-of-00002\.safetensors but stored in model-00002-of-00002\.safetensors$/,
    );
  });

  it('refuses stored tensors missing from the index and index entries missing from the shards', () => {
    const dir = copyOf(shardedDir);
    editJson(indexOf(dir), (j) => {
      delete j.weight_map['model.norm.weight'];
      j.weight_map['model.layers.9.mlp.up_proj.weight'] = 'model-00001-of-00002.safetensors';
    });
    expect(modelErrorOf(() => openCheckpoint(dir))).toMatch(
      /model\.layers\.9\.mlp\.up_proj\.weight is listed in model\.safetensors\.index\.json but not stored in model-00001-of-00002\.safetensors \(and 1 other index mismatches\)$/,
    );
  });

  it('reports a missing shard and a malformed index', () => {
    const dir = copyOf(shardedDir);
    fs.rmSync(path.join(dir, 'model-00002-of-00002.safetensors'));
    expect(modelErrorOf(() => openCheckpoint(dir))).toMatch(/shard model-00002-of-00002\.safetensors listed in model\.safetensors\.index\.json is missing \(incomplete download\?\)$/);
    fs.writeFileSync(indexOf(dir), '{"weight_map": ');
    expect(modelErrorOf(() => openCheckpoint(dir))).toMatch(/model\.safetensors\.index\.json is not valid JSON/);
    fs.writeFileSync(indexOf(dir), '{"metadata": {}}');
    expect(modelErrorOf(() => openCheckpoint(dir))).toMatch(/model\.safetensors\.index\.json: missing "weight_map"$/);
    fs.writeFileSync(indexOf(dir), JSON.stringify({ weight_map: { 'model.norm.weight': '../elsewhere.safetensors' } }));
    expect(modelErrorOf(() => openCheckpoint(dir))).toMatch(/tensor model\.norm\.weight maps to "\.\.\/elsewhere\.safetensors", not a \.safetensors file name/);
  });

  it('reports a truncated shard', () => {
    const dir = copyOf(shardedDir);
    const shard = path.join(dir, 'model-00001-of-00002.safetensors');
    fs.truncateSync(shard, fs.statSync(shard).size - 1000);
    expect(modelErrorOf(() => openCheckpoint(dir))).toMatch(/model-00001-of-00002\.safetensors: tensor .*beyond the end of the file/);
  });
});

describe('directories that are not checkpoints', () => {
  it('says what it found instead', () => {
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    expect(modelErrorOf(() => openCheckpoint(empty))).toBe(`${empty} is not a checkpoint: no config.json and no .safetensors weights (it is empty)`);

    const photos = path.join(tmp, 'photos');
    fs.mkdirSync(photos);
    for (const f of ['a.jpg', 'b.png']) fs.writeFileSync(path.join(photos, f), 'x');
    expect(modelErrorOf(() => openCheckpoint(photos))).toBe(`${photos} is not a checkpoint: no config.json and no .safetensors weights (found: a.jpg, b.png)`);

    const configOnly = path.join(tmp, 'config-only');
    fs.mkdirSync(configOnly);
    fs.copyFileSync(path.join(baseDir, 'config.json'), path.join(configOnly, 'config.json'));
    expect(modelErrorOf(() => openCheckpoint(configOnly))).toBe(`${configOnly}: no model.safetensors or model.safetensors.index.json (found: config.json)`);

    fs.writeFileSync(path.join(configOnly, 'pytorch_model.bin'), 'x');
    expect(modelErrorOf(() => openCheckpoint(configOnly))).toMatch(/only PyTorch \.bin\/\.pth weights found; dvl reads safetensors/);

    const weightsOnly = copyOf(baseDir);
    fs.rmSync(path.join(weightsOnly, 'config.json'));
    expect(modelErrorOf(() => openCheckpoint(weightsOnly))).toMatch(/: no config\.json next to the weights \(found: generation_config\.json, model\.safetensors/);

    expect(modelErrorOf(() => openCheckpoint(path.join(tmp, 'does-not-exist')))).toMatch(/checkpoint directory .*does-not-exist does not exist/);
    expect(modelErrorOf(() => openCheckpoint(path.join(baseDir, 'config.json')))).toMatch(/config\.json is not a directory/);
  });

  it('refuses a used tensor stored in a dtype it cannot read', () => {
    const dir = path.join(tmp, 'f64');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(baseDir, 'config.json'), path.join(dir, 'config.json'));
    const header = Buffer.from(JSON.stringify({ 'model.norm.weight': { dtype: 'F64', shape: [64], data_offsets: [0, 512] } }));
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.concat([length, header, Buffer.alloc(512)]));
    expect(modelErrorOf(() => openCheckpoint(dir))).toMatch(/tensor model\.norm\.weight has dtype F64; only BF16, F16, F32 are supported$/);
  });
});

describe('tokenizerFiles', () => {
  it('returns the two tokenizer files and names the missing one', () => {
    expect(tokenizerFiles(baseDir)).toEqual({
      tokenizerJson: path.join(path.resolve(baseDir), 'tokenizer.json'),
      tokenizerConfig: path.join(path.resolve(baseDir), 'tokenizer_config.json'),
    });
    const dir = copyOf(baseDir);
    fs.rmSync(path.join(dir, 'tokenizer_config.json'));
    expect(modelErrorOf(() => tokenizerFiles(dir))).toBe(`${dir}: missing tokenizer file tokenizer_config.json`);
    fs.rmSync(path.join(dir, 'tokenizer.json'));
    expect(modelErrorOf(() => tokenizerFiles(dir))).toBe(`${dir}: missing tokenizer files tokenizer.json and tokenizer_config.json`);
  });
});

describe('test checkpoint writers', () => {
  it('write the real config keys and release tensor names', () => {
    const json = JSON.parse(fs.readFileSync(path.join(baseDir, 'config.json'), 'utf8'));
    expect(json).toMatchObject({ model_type: 'diffusionvl_qwenvl', hidden_size: 64, bd3lm_block_size: 8, enable_bd3lm: true, image_token_id: 151655 });
    expect(json.text_config).toMatchObject({ hidden_size: 64, num_hidden_layers: 2, num_key_value_heads: 2, vocab_size: 151680 });
    expect(json.vision_config).toMatchObject({ depth: 4, hidden_size: 32, in_chans: 3, in_channels: 3, out_hidden_size: 64, fullatt_block_indexes: [1, 3] });
    const bytes = fs.readFileSync(path.join(baseDir, 'model.safetensors'));
    const headerLength = Number(bytes.readBigUInt64LE(0));
    expect(headerLength % 8).toBe(0);
    const names = Object.keys(JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')));
    expect(names).toContain('model.vision_tower.vision_tower.blocks.3.mlp.down_proj.bias');
    expect(names).toContain('model.mm_projector.merger.ln_q.weight');
    expect(names).toContain('model.layers.1.self_attn.v_proj.bias');
    expect(names.filter((n) => n.startsWith('visual.'))).toEqual([]);
  });

  it('encode f16 test data with round-to-nearest-even (hand-derived bit patterns)', () => {
    const bitsOf = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0];
    const cases: [number, number][] = [
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [65520, 0x7c00], // halfway between 65504 and 65536: rounds to even, i.e. overflows to inf
      [2 ** -14, 0x0400],
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000], // halfway between 0 and 2^-24: ties to even 0
      [3 * 2 ** -26, 0x0001], // 0.75 ulp rounds up
      [3 * 2 ** -25, 0x0002], // 1.5 ulp: tie to even 2
      [1 / 3, 0x3555],
      [-Infinity, 0xfc00],
    ];
    for (const [x, h] of cases) expect(f32BitsToF16Bits(bitsOf(x))).toBe(h);
    expect(f32BitsToF16Bits(bitsOf(NaN)) & 0x7e00).toBe(0x7e00);
  });

  it('describe the released 3B and 7B shapes in a config that parses back', () => {
    for (const preset of ['3b', '7b'] as const) {
      const config = syntheticConfig(preset);
      expect(parseModelConfig(configJson(config, 'diffusionvl', true), 'synthetic')).toEqual(config);
    }
    const bytes = (preset: '3b' | '7b') => expectedTensors(syntheticConfig(preset)).reduce((sum, t) => sum + 2 * t.shape.reduce((a, b) => a * b, 1), 0);
    // Parameter counts of the released models: ~3.75 G (3B, tied) and ~8.29 G (7B, untied) bf16 values.
    expect(bytes('3b') / 2 / 1e9).toBeCloseTo(3.75, 1);
    expect(bytes('7b') / 2 / 1e9).toBeCloseTo(8.29, 1);
  });
});
