/**
 * The checkpoint variants the upstream loader opens (issue "Ready for the real release"): dvl opens each the way
 * upstream does, and gives the tokens of the unmodified checkpoint (or of the reference run where the variant
 * changes the settings: block 8 for a missing bd3lm_block_size, config.json's pixel budget).
 * - model_type aliases, and unknown model_types recognised by architectures / auto_map or by structure;
 * - a missing bd3lm_block_size means 8;
 * - min_pixels / max_pixels in config.json are the default budget (flags still win);
 * - the upstream converter's layout (model.safetensors with the LLM only, vision_tower.safetensors,
 *   projector.safetensors, vision_config.json);
 * - a plain autoregressive Qwen2.5-VL checkpoint is refused (exit 3);
 * - confidence_threshold as an alias of threshold; chat_template.jinja among the source files; a SigLIP tower
 *   under another name is a warning when its tensors are a SigLIP tower's.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readConfigJson } from '../src/checkpoint/config.js';
import { storedName } from '../src/models/qwen25vl/weight-names.js';
import { checkManifest } from '../src/store/manifest.js';
import { variantDir } from '../src/store/layout.js';
import { familyForConfig, pixelBudgetFor } from '../src/models/index.js';
import { parseSiglipQwenConfig, parseTopLevel as parseSiglipTopLevel } from '../src/models/siglip-qwen/config.js';
import { thresholdOf } from '../src/server/request-fields.js';
import { runDvl } from './helpers/cli.js';
import { type E2eSettings, GREEDY, referenceQwenVlTokens, untilEos } from './helpers/e2e.js';
import { expectModelError } from './helpers/errors.js';
import { tinyConfig } from './helpers/random-weights.js';
import { configJson, writeBf16Tensors, writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';
import { writeTinySiglipCheckpoint } from './helpers/tiny-siglip.js';
import { expectedTensors } from '../src/models/qwen25vl/expected-tensors.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-variants-'));
const home = path.join(work, 'home');
const env = { DVL_HOME: home };
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const IMAGE = path.resolve('fixtures/images/chelsea.png');
const PROMPT = 'Describe this image.';
const SETTINGS: E2eSettings = { genLength: 16, steps: 8, ...GREEDY };
const PIXELS = ['--min-pixels', String(28 * 28), '--max-pixels', String(224 * 168)];
const CONFIG = tinyConfig({ text: { tieWordEmbeddings: false } });
const SEED = 21;

interface AskJson {
  tokens: number[];
  images: { resized: { width: number; height: number } }[];
  settings: { blockSize: number };
}

/** `dvl pull` (fp32) then `dvl ask --json` greedy about IMAGE; the pull's stderr is returned for warnings. */
function pullAndAskJson(dir: string, extra: string[] = PIXELS): { json: AskJson; pullStderr: string; askStderr: string } {
  const pull = runDvl(['pull', dir, '--dtype', 'fp32', '--quiet'], { env });
  expect(pull.status, pull.stderr).toBe(0);
  const ask = runDvl(['ask', '-m', dir, '--dtype', 'fp32', '--json', '--quiet', '-n', String(SETTINGS.genLength), ...extra, IMAGE, PROMPT], { env });
  expect(ask.status, ask.stderr).toBe(0);
  return { json: JSON.parse(ask.stdout) as AskJson, pullStderr: pull.stderr, askStderr: ask.stderr };
}

/** Rewrites a checkpoint's config.json. */
function editConfig(dir: string, edit: (json: Record<string, unknown>) => void): void {
  const json = readConfigJson(dir);
  edit(json);
  fs.writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(json, null, 2)}\n`);
}

let baseline: AskJson;
beforeAll(() => {
  const dir = path.join(work, 'release');
  writeTinyCheckpoint(dir, { config: CONFIG, seed: SEED, shards: 2 });
  baseline = pullAndAskJson(dir).json;
  expect(new Set(baseline.tokens).size).toBeGreaterThan(1);
});

describe('which family a config.json is', () => {
  const base = () => configJson(CONFIG, 'diffusionvl', true);

  it('takes the upstream aliases and names the model_type and architectures of a config it cannot place', () => {
    expect(familyForConfig({ ...base(), model_type: 'llada_qwen' }, 'c.json')).toEqual({ family: expect.objectContaining({ id: 'qwen25vl' }) });
    expect(familyForConfig({ model_type: 'diffusionvl_qwen' }, 'c.json').family.id).toBe('siglip-qwen');
    expectModelError(
      () => familyForConfig({ model_type: 'bert', architectures: ['BertModel'] }, 'c.json'),
      /^c\.json: model_type "bert" and architectures \["BertModel"\] name no DiffusionVL model dvl knows \(expected model_type diffusionvl_qwenvl, llada_qwen, qwen2_5_vl or diffusionvl_qwen, or a DiffusionVL class in architectures or auto_map\)$/,
    );
    expectModelError(() => familyForConfig({}, 'c.json'), /no model_type and no architectures name no DiffusionVL model/);
  });

  it('reads an unknown model_type by the DiffusionVL class in architectures or auto_map, then by structure', () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ model_type: 'diffusionvl_qwen2_5_vl', architectures: ['DiffusionVL_Qwen2_5_VL_ForConditionalGeneration'] }, 'qwen25vl', /names DiffusionVL_Qwen2_5_VL_ForConditionalGeneration/],
      [{ model_type: 'x', auto_map: { AutoModelForCausalLM: 'modeling_diffusionvl.DiffusionVLQwenVLForCausalLM' } }, 'qwen25vl', /names DiffusionVLQwenVLForCausalLM/],
      [{ model_type: 'x', auto_map: { AutoModelForCausalLM: 'modeling.DiffusionVLQwenForCausalLM' } }, 'siglip-qwen', /names DiffusionVLQwenForCausalLM/],
      [{ model_type: 'x', vision_config: { out_hidden_size: 64 }, mm_projector_type: 'qwen_merger' }, 'qwen25vl', /structure/],
      [{ model_type: 'x', mm_vision_tower: 'google/siglip2-so400m-patch14-384', mm_projector_type: 'mlp2x_gelu' }, 'siglip-qwen', /structure/],
    ];
    for (const [json, family, note] of cases) {
      const found = familyForConfig(json, 'c.json');
      expect(found.family.id).toBe(family);
      expect(found.note).toMatch(note);
    }
    // A Qwen2.5-VL tower without the qwen_merger projector is not enough: that is every Qwen2.5-VL model.
    expectModelError(() => familyForConfig({ model_type: 'x', vision_config: { out_hidden_size: 64 } }, 'c.json'), /name no DiffusionVL model/);
  });

  it('converts a checkpoint whose model_type is unknown but whose architecture is DiffusionVL, with a warning, to the same tokens', () => {
    const dir = path.join(work, 'unknown-type');
    writeTinyCheckpoint(dir, { config: CONFIG, seed: SEED, shards: 2 });
    editConfig(dir, (json) => {
      json.model_type = 'diffusionvl_qwen2_5_vl';
      json.architectures = ['DiffusionVL_Qwen2_5_VL_ForConditionalGeneration'];
    });
    const { json, pullStderr } = pullAndAskJson(dir);
    expect(pullStderr).toMatch(/^dvl: warning: config\.json has model_type "diffusionvl_qwen2_5_vl", which dvl does not know; read as DiffusionVL-Qwen2\.5VL because it names DiffusionVL_Qwen2_5_VL_ForConditionalGeneration$/m);
    expect(json.tokens).toEqual(baseline.tokens);
    const show = runDvl(['show', dir], { env });
    expect(show.stdout).toMatch(/^note {8}config\.json has model_type "diffusionvl_qwen2_5_vl"/m);
  });

  it('converts the llada_qwen alias without a warning, to the same tokens', () => {
    const dir = path.join(work, 'llada-qwen');
    writeTinyCheckpoint(dir, { config: CONFIG, seed: SEED });
    editConfig(dir, (json) => (json.model_type = 'llada_qwen'));
    const { json, pullStderr } = pullAndAskJson(dir);
    expect(pullStderr).toBe('');
    expect(json.tokens).toEqual(baseline.tokens);
  });
});

describe('a plain autoregressive Qwen2.5-VL checkpoint', () => {
  it('is refused with exit 3 by pull and ask, before any conversion', () => {
    const dir = path.join(work, 'autoregressive');
    writeTinyCheckpoint(dir, { config: CONFIG, seed: SEED, layout: 'qwen2_5_vl' });
    editConfig(dir, (json) => {
      delete json.bd3lm_block_size;
      delete json.enable_bd3lm;
    });
    for (const args of [['pull', dir, '--dtype', 'fp32'], ['ask', '-m', dir, '--dtype', 'fp32', 'Hi']]) {
      const run = runDvl(args, { env });
      expect(run.status).toBe(3);
      expect(run.stderr).toMatch(/^dvl: .*config\.json: this is an autoregressive Qwen2\.5-VL checkpoint \(model_type "qwen2_5_vl" without bd3lm_block_size or enable_bd3lm\), not a DiffusionVL one/);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
    }
    // Nothing was converted.
    expect(fs.existsSync(path.join(home, 'models'))).toBe(true);
    expect(fs.readdirSync(path.join(home, 'models')).some((name) => name.includes('autoregressive'))).toBe(false);
  });
});

describe('the block size', () => {
  it('is 8 when bd3lm_block_size is missing (QwenVL and SigLIP families), and show / --verbose say so', async () => {
    // A config whose explicit block size is 4, so that the missing key's 8 is visible in the tokens too.
    const config = { ...CONFIG, blockSize: 4 };
    const dir = path.join(work, 'no-block-size');
    const { weights } = writeTinyCheckpoint(dir, { config, seed: SEED });
    editConfig(dir, (json) => delete json.bd3lm_block_size);
    const { json } = pullAndAskJson(dir, [...PIXELS, '--verbose']);
    const ask = runDvl(['ask', '-m', dir, '--dtype', 'fp32', '--quiet', '--verbose', '-n', '16', ...PIXELS, IMAGE, PROMPT], { env });
    expect(ask.stderr).toMatch(/^dvl: block size 8 \(not in config\.json: 8, what the released models were trained and evaluated with\)$/m);
    expect(json.settings.blockSize).toBe(8);
    const reference = await referenceQwenVlTokens({ config: { ...config, blockSize: 8 }, dir, weights, images: [IMAGE], prompt: PROMPT, settings: SETTINGS, minPixels: 28 * 28, maxPixels: 224 * 168 });
    expect(json.tokens).toEqual(untilEos(reference.tokens, config.eosTokenId));
    expect(runDvl(['show', dir], { env }).stdout).toMatch(/^block size  8 \(not in config\.json: 8, what the released models were trained and evaluated with\)$/m);
    // --block-size still wins, and says so.
    const flagged = runDvl(['ask', '-m', dir, '--dtype', 'fp32', '--quiet', '--verbose', '--block-size', '4', '-n', '8', 'Hi'], { env });
    expect(flagged.stderr).toMatch(/^dvl: block size 4 \(--block-size\)$/m);

    const explicit = path.join(work, 'block-size-4');
    writeTinyCheckpoint(explicit, { config, seed: SEED });
    expect(runDvl(['pull', explicit, '--dtype', 'fp32', '--quiet'], { env }).status).toBe(0);
    expect(runDvl(['show', explicit], { env }).stdout).toMatch(/^block size  4 \(config\.json bd3lm_block_size\)$/m);

    const siglip = { model_type: 'diffusionvl_qwen', hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 96, vocab_size: 151680 };
    expect(parseSiglipTopLevel(siglip, 'c.json')).toMatchObject({ blockSize: 8, blockSizeFrom: 'default' });
    expect(parseSiglipTopLevel({ ...siglip, bd3lm_block_size: 16 }, 'c.json')).not.toHaveProperty('blockSizeFrom');
  });
});

describe('the pixel budget', () => {
  it("comes from config.json's min_pixels / max_pixels (the flags still win) and --verbose says where it came from", async () => {
    const dir = path.join(work, 'config-budget');
    const minPixels = 28 * 28;
    const maxPixels = 168 * 140;
    const { weights } = writeTinyCheckpoint(dir, { config: CONFIG, seed: SEED });
    editConfig(dir, (json) => Object.assign(json, { min_pixels: minPixels, max_pixels: maxPixels }));
    const { json } = pullAndAskJson(dir, []);
    // smart_resize by hand: 451x300 rounds to 448x308, over 23520 pixels, so b = sqrt(451*300/23520) = 2.3985,
    // h' = floor(300/b/28)*28 = 112, w' = floor(451/b/28)*28 = 168.
    expect(json.images[0].resized).toEqual({ width: 168, height: 112 });
    const reference = await referenceQwenVlTokens({ config: CONFIG, dir, weights, images: [IMAGE], prompt: PROMPT, settings: SETTINGS, minPixels, maxPixels });
    expect(json.tokens).toEqual(untilEos(reference.tokens, CONFIG.eosTokenId));

    const verbose = runDvl(['ask', '-m', dir, '--dtype', 'fp32', '--quiet', '--verbose', '-n', '8', IMAGE, PROMPT], { env });
    expect(verbose.stderr).toMatch(/^dvl: pixel budget 784\.\.23520 \(the model's config\.json min_pixels \/ max_pixels\)$/m);
    const flagged = runDvl(['ask', '-m', dir, '--dtype', 'fp32', '--json', '--quiet', '--verbose', '-n', '8', '--max-pixels', String(224 * 168), IMAGE, PROMPT], { env });
    expect(flagged.stderr).toMatch(/^dvl: pixel budget 784\.\.37632 \(--min-pixels \/ --max-pixels\)$/m);
    expect((JSON.parse(flagged.stdout) as AskJson).images[0].resized).toEqual({ width: 224, height: 140 });
    expect(runDvl(['show', dir], { env }).stdout).toMatch(/^images {6}resized to 784\.\.23520 pixels \(config\.json min_pixels \/ max_pixels\)$/m);
  });

  it('keeps the training budget without those keys, moves a missing bound to fit the given one, and refuses min > max', () => {
    const config = { ...CONFIG };
    expect(pixelBudgetFor(config, {})).toEqual({ minPixels: 147456, maxPixels: 262144, from: 'default' });
    expect(pixelBudgetFor({ ...config, maxPixels: 100000 }, {})).toEqual({ minPixels: 100000, maxPixels: 100000, from: 'config' });
    expect(pixelBudgetFor({ ...config, minPixels: 1000, maxPixels: 2000 }, { maxPixels: 500 })).toEqual({ minPixels: 500, maxPixels: 500, from: 'given', moved: 'min' });
    expect(pixelBudgetFor({ ...config, minPixels: 1000, maxPixels: 2000 }, { minPixels: 3000 })).toEqual({ minPixels: 3000, maxPixels: 3000, from: 'given', moved: 'max' });
    const dir = path.join(work, 'bad-budget');
    writeTinyCheckpoint(dir, { config: CONFIG, seed: SEED });
    editConfig(dir, (json) => Object.assign(json, { min_pixels: 5000, max_pixels: 4000 }));
    const run = runDvl(['pull', dir, '--dtype', 'fp32'], { env });
    expect(run.status).toBe(3);
    expect(run.stderr).toMatch(/config\.json: min_pixels 5000 is larger than max_pixels 4000/);
  });
});

describe("the upstream converter's layout", () => {
  /** convert_qwen2.5vl_to_diffusionvl.py's files, from the same weights as the release layout. */
  function writeConverterLayout(dir: string, shards: number, towerPrefix: string): void {
    const { weights } = writeTinyCheckpoint(path.join(work, 'scratch-source'), { config: CONFIG, seed: SEED });
    fs.mkdirSync(dir, { recursive: true });
    const all = expectedTensors(CONFIG).map(({ name, shape }) => ({ name, shape, data: weights.get(name).data }));
    const llm = all.filter((t) => !t.name.startsWith('visual.')).map((t) => ({ ...t, name: storedName(t.name, 'diffusionvl') }));
    const tower = all.filter((t) => t.name.startsWith('visual.') && !t.name.startsWith('visual.merger.')).map((t) => ({ ...t, name: towerPrefix + t.name.slice('visual.'.length) }));
    const projector = all.filter((t) => t.name.startsWith('visual.merger.')).map((t) => ({ ...t, name: t.name.slice('visual.merger.'.length) }));
    writeBf16Tensors(dir, llm, shards);
    for (const [file, tensors] of [['vision_tower.safetensors', tower], ['projector.safetensors', projector]] as const) {
      const scratch = path.join(work, `scratch-${file}`);
      fs.rmSync(scratch, { recursive: true, force: true });
      fs.mkdirSync(scratch);
      writeBf16Tensors(scratch, tensors);
      fs.renameSync(path.join(scratch, 'model.safetensors'), path.join(dir, file));
    }
    for (const name of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(work, 'scratch-source', name), path.join(dir, name));
    const config = configJson(CONFIG, 'diffusionvl', true);
    fs.writeFileSync(path.join(dir, 'vision_config.json'), JSON.stringify(config.vision_config));
    // The converter's config.json keeps a vision_config too; the loader replaces it with vision_config.json.
    config.vision_config = { ...(config.vision_config as object), depth: 99 };
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  }

  it('opens model.safetensors + vision_tower.safetensors + projector.safetensors + vision_config.json, single or sharded, to the same tokens', () => {
    for (const [name, shards, prefix] of [['converter', 1, ''], ['converter-sharded', 3, 'vision_tower.']] as const) {
      const dir = path.join(work, name);
      writeConverterLayout(dir, shards, prefix);
      const { json } = pullAndAskJson(dir);
      expect(json.tokens).toEqual(baseline.tokens);
      const manifest = checkManifest(variantDir(home, { kind: 'local', id: dir, revision: 'local', dir }, 'fp32'));
      if (!('manifest' in manifest)) throw new Error(manifest.reason);
      // The side files are sources: a change to any of them makes the conversion stale.
      expect(manifest.manifest.sourceFiles.map((f) => f.name)).toEqual(expect.arrayContaining(['vision_tower.safetensors', 'projector.safetensors', 'vision_config.json']));
    }
  });

  it('prefers vision_tower.safetensors over tower tensors in the main file, and reads a bare vision_tower. prefix there', () => {
    // The release layout plus a dedicated tower file: the file's tensors are the ones used (upstream's order).
    const dir = path.join(work, 'tower-file-wins');
    writeConverterLayout(dir, 1, '');
    const decoy = path.join(work, 'decoy');
    const { weights } = writeTinyCheckpoint(decoy, { config: CONFIG, seed: SEED + 1 });
    const towerNames = expectedTensors(CONFIG).filter((t) => t.name.startsWith('visual.') && !t.name.startsWith('visual.merger.'));
    const llm = expectedTensors(CONFIG).filter((t) => !t.name.startsWith('visual.'));
    const { weights: same } = writeTinyCheckpoint(path.join(work, 'scratch-source'), { config: CONFIG, seed: SEED });
    writeBf16Tensors(dir, [
      ...llm.map((t) => ({ name: storedName(t.name, 'diffusionvl'), shape: t.shape, data: same.get(t.name).data })),
      // Other weights under the bare prefix upstream also accepts: ignored while the dedicated file exists.
      ...towerNames.map((t) => ({ name: `vision_tower.${t.name.slice('visual.'.length)}`, shape: t.shape, data: weights.get(t.name).data })),
    ]);
    expect(pullAndAskJson(dir).json.tokens).toEqual(baseline.tokens);

    // The bare prefix alone: one model.safetensors with the tower under vision_tower. and the release's projector.
    const bare = path.join(work, 'bare-prefix');
    fs.mkdirSync(bare);
    for (const name of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(work, 'scratch-source', name), path.join(bare, name));
    writeBf16Tensors(
      bare,
      expectedTensors(CONFIG).map((t) => ({
        name: t.name.startsWith('visual.') && !t.name.startsWith('visual.merger.') ? `vision_tower.${t.name.slice('visual.'.length)}` : storedName(t.name, 'diffusionvl'),
        shape: t.shape,
        data: same.get(t.name).data,
      })),
    );
    expect(pullAndAskJson(bare).json.tokens).toEqual(baseline.tokens);
  });
});

describe('small ones', () => {
  it('confidence_threshold is threshold on batch lines and the APIs', () => {
    const dir = path.join(work, 'release');
    const lines = [
      { image: IMAGE, prompt: PROMPT, remasking: 'low_confidence_dynamic', threshold: 0.02, gen_length: 16 },
      { image: IMAGE, prompt: PROMPT, remasking: 'low_confidence_dynamic', confidence_threshold: 0.02, gen_length: 16 },
      { prompt: PROMPT, threshold: 0.5, confidence_threshold: 0.6 },
    ];
    const run = runDvl(['batch', '-m', dir, '--dtype', 'fp32', '--quiet', ...PIXELS], { env, input: lines.map((l) => JSON.stringify(l)).join('\n') });
    const [a, b, c] = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as { tokens?: number[]; settings?: { threshold: number }; error?: { message: string } });
    expect(b.settings?.threshold).toBe(0.02);
    expect(b.tokens).toEqual(a.tokens);
    expect(c.error?.message).toBe('"threshold" and "confidence_threshold" are the same setting: give one');
    expect(thresholdOf({ confidence_threshold: 0.7 })).toBe(0.7);
    expect(thresholdOf({ threshold: 0.7, confidence_threshold: 0.7 })).toBe(0.7);
    expect(() => thresholdOf({ threshold: 0.5, confidence_threshold: 0.6 })).toThrow(/same setting/);
  });

  it('chat_template.jinja is a source file: editing it makes the conversion stale', () => {
    const dir = path.join(work, 'jinja');
    writeTinyCheckpoint(dir, { config: CONFIG, seed: SEED });
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '{% for m in messages %}{{ m.content }}{% endfor %}');
    expect(runDvl(['pull', dir, '--dtype', 'fp32', '--quiet'], { env }).status).toBe(0);
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '{% for m in messages %}{{ m.role }}{% endfor %}');
    const again = runDvl(['pull', dir, '--dtype', 'fp32'], { env: { ...env, CI: '1' } });
    expect(again.status).toBe(0);
    expect(again.stderr).toMatch(/converting .* \(source file chat_template\.jinja changed since conversion\)/);
  });

  it("a SigLIP tower under another name is a warning when the checkpoint's tensors are a SigLIP tower's, an error when not", () => {
    const dir = path.join(work, 'siglip-renamed');
    writeTinySiglipCheckpoint(dir, { seed: 3 });
    editConfig(dir, (json) => (json.mm_vision_tower = '/data/towers/my-vision-encoder'));
    const pull = runDvl(['pull', dir, '--dtype', 'fp32', '--quiet'], { env });
    expect(pull.status).toBe(0);
    expect(pull.stderr).toBe(`dvl: warning: config.json's mm_vision_tower "/data/towers/my-vision-encoder" does not name a SigLIP tower, but the checkpoint's tensors are a SigLIP tower's: read as SigLIP\n`);
    const ask = runDvl(['ask', '-m', dir, '--dtype', 'fp32', '--quiet', '-n', '8', IMAGE, PROMPT], { env });
    expect(ask.status, ask.stderr).toBe(0);

    // Without a SigLIP tower's tensors the name decides: not this family's model.
    const json = { ...readConfigJson(dir), mm_vision_tower: 'openai/clip-vit-large-patch14' };
    expectModelError(() => parseSiglipQwenConfig(json, 'c.json', () => undefined), /^c\.json: mm_vision_tower "openai\/clip-vit-large-patch14" is not a SigLIP tower, and the checkpoint has no SigLIP tower tensors/);
  });
});
