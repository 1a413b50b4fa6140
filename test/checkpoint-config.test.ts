import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseModelConfig, readModelConfig } from '../src/models/qwen25vl/config.js';
import type { ModelConfig } from '../src/models/qwen25vl/types.js';
import { DvlError } from '../src/util/errors.js';

/** The text keys of DiffusionVL-Qwen2.5VL-3B / Qwen2.5-VL-3B-Instruct, as written in their config.json. */
const TEXT_3B = {
  vocab_size: 151936,
  hidden_size: 2048,
  intermediate_size: 11008,
  num_hidden_layers: 36,
  num_attention_heads: 16,
  num_key_value_heads: 2,
  hidden_act: 'silu',
  max_position_embeddings: 128000,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  rope_scaling: { type: 'mrope', mrope_section: [16, 24, 24] },
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
};

const VISION_3B = {
  depth: 32,
  hidden_act: 'silu',
  hidden_size: 1280,
  intermediate_size: 3420,
  num_heads: 16,
  in_chans: 3,
  out_hidden_size: 2048,
  patch_size: 14,
  spatial_merge_size: 2,
  spatial_patch_size: 14,
  window_size: 112,
  fullatt_block_indexes: [7, 15, 23, 31],
  tokens_per_second: 2,
  temporal_patch_size: 2,
};

/** What the 3B config must parse to (values read off the JSON above by hand). */
const EXPECTED_3B: ModelConfig = {
  modelType: 'diffusionvl_qwenvl',
  text: {
    hiddenSize: 2048,
    numLayers: 36,
    numHeads: 16,
    numKvHeads: 2,
    headDim: 128,
    intermediateSize: 11008,
    vocabSize: 151936,
    rmsNormEps: 1e-6,
    ropeTheta: 1e6,
    tieWordEmbeddings: true,
    maxPositionEmbeddings: 128000,
  },
  vision: {
    depth: 32,
    hiddenSize: 1280,
    numHeads: 16,
    intermediateSize: 3420,
    patchSize: 14,
    temporalPatchSize: 2,
    spatialMergeSize: 2,
    windowSize: 112,
    fullattBlockIndexes: [7, 15, 23, 31],
    outHiddenSize: 2048,
    inChannels: 3,
  },
  blockSize: 8,
  imageTokenId: 151655,
  maskTokenId: 151671,
  eosTokenId: 151645,
};

function diffusionVl3b(): Record<string, any> {
  return {
    architectures: ['DiffusionVLQwenVLForCausalLM'],
    model_type: 'diffusionvl_qwenvl',
    ...structuredClone(TEXT_3B),
    text_config: { ...structuredClone(TEXT_3B), model_type: 'qwen2_5_vl_text' },
    vision_config: { ...structuredClone(VISION_3B), in_channels: 3 },
    image_token_id: 151655,
    video_token_id: 151656,
    enable_bd3lm: true,
    bd3lm_block_size: 8,
    mm_projector_type: 'qwen_merger',
  };
}

function expectModelError(fn: () => unknown, pattern: RegExp): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DvlError);
    expect((e as DvlError).kind).toBe('model');
    expect((e as Error).message).toMatch(pattern);
    expect((e as Error).message).not.toContain('\n');
    return;
  }
  throw new Error(`expected a model error matching ${pattern}`);
}

describe('parseModelConfig', () => {
  it('reads a DiffusionVL config with nested and top-level text keys', () => {
    expect(parseModelConfig(diffusionVl3b(), 'config.json')).toEqual(EXPECTED_3B);
  });

  it('reads a flat DiffusionVL config (no text_config)', () => {
    const json = diffusionVl3b();
    delete json.text_config;
    expect(parseModelConfig(json, 'config.json')).toEqual(EXPECTED_3B);
  });

  it('reads a config with only text_config (no top-level text keys)', () => {
    const json = diffusionVl3b();
    for (const key of Object.keys(TEXT_3B)) delete json[key];
    expect(parseModelConfig(json, 'config.json')).toEqual(EXPECTED_3B);
  });

  it('lets text_config win over top-level keys, and falls back to the top level for keys it lacks', () => {
    const json = diffusionVl3b();
    json.hidden_size = 999; // would fail validation if used
    json.num_hidden_layers = 7;
    json.text_config.num_hidden_layers = 5;
    json.tie_word_embeddings = true;
    json.text_config.tie_word_embeddings = false;
    delete json.text_config.intermediate_size;
    json.intermediate_size = 4242;
    const c = parseModelConfig(json, 'config.json');
    expect(c.text.hiddenSize).toBe(2048);
    expect(c.text.numLayers).toBe(5);
    expect(c.text.tieWordEmbeddings).toBe(false);
    expect(c.text.intermediateSize).toBe(4242);
  });

  it('uses the reference defaults for bd3lm_block_size, image_token_id, eps, theta, tying and vision geometry', () => {
    const json = diffusionVl3b();
    for (const key of ['bd3lm_block_size', 'image_token_id', 'rms_norm_eps', 'rope_theta', 'tie_word_embeddings']) {
      delete json[key];
      delete json.text_config[key];
    }
    for (const key of ['patch_size', 'temporal_patch_size', 'spatial_merge_size', 'window_size', 'fullatt_block_indexes', 'in_chans', 'in_channels']) {
      delete json.vision_config[key];
    }
    const c = parseModelConfig(json, 'config.json');
    // Not the config class's 4: every released model was trained and evaluated with blocks of 8.
    expect(c.blockSize).toBe(8);
    expect(c.blockSizeFrom).toBe('default');
    expect(c.imageTokenId).toBe(151655);
    expect(c.text.rmsNormEps).toBe(1e-5);
    expect(c.text.ropeTheta).toBe(1e6);
    expect(c.text.tieWordEmbeddings).toBe(false);
    expect(c.vision).toMatchObject({ patchSize: 14, temporalPatchSize: 2, spatialMergeSize: 2, windowSize: 112, fullattBlockIndexes: [7, 15, 23, 31], inChannels: 3 });
  });

  it('reads rope_theta from rope_parameters (newer transformers)', () => {
    const json = diffusionVl3b();
    delete json.rope_theta;
    delete json.text_config.rope_theta;
    json.text_config.rope_parameters = { rope_type: 'default', rope_theta: 500000, mrope_section: [16, 24, 24] };
    expect(parseModelConfig(json, 'config.json').text.ropeTheta).toBe(500000);
  });

  it('prefers in_channels over in_chans', () => {
    const json = diffusionVl3b();
    json.vision_config.in_channels = 4;
    json.vision_config.in_chans = 3;
    expect(parseModelConfig(json, 'config.json').vision.inChannels).toBe(4);
    delete json.vision_config.in_channels;
    json.vision_config.in_chans = 5;
    expect(parseModelConfig(json, 'config.json').vision.inChannels).toBe(5);
  });

  it('reads a DiffusionVL config saved as Qwen2.5-VL (flat, older transformers)', () => {
    const json = { architectures: ['Qwen2_5_VLForConditionalGeneration'], model_type: 'qwen2_5_vl', ...TEXT_3B, vision_config: VISION_3B, image_token_id: 151655, bd3lm_block_size: 4 };
    expect(parseModelConfig(json, 'config.json')).toEqual({ ...EXPECTED_3B, modelType: 'qwen2_5_vl', blockSize: 4 });
  });

  it('reads a DiffusionVL config saved as Qwen2.5-VL 7B (nested, newer transformers, untied)', () => {
    const text = { ...TEXT_3B, vocab_size: 152064, hidden_size: 3584, intermediate_size: 18944, num_hidden_layers: 28, num_attention_heads: 28, num_key_value_heads: 4, tie_word_embeddings: false };
    const json = { model_type: 'qwen2_5_vl', enable_bd3lm: true, text_config: text, vision_config: { ...VISION_3B, out_hidden_size: 3584 } };
    const c = parseModelConfig(json, 'config.json');
    expect(c.text).toEqual({ hiddenSize: 3584, numLayers: 28, numHeads: 28, numKvHeads: 4, headDim: 128, intermediateSize: 18944, vocabSize: 152064, rmsNormEps: 1e-6, ropeTheta: 1e6, tieWordEmbeddings: false, maxPositionEmbeddings: 128000 });
    expect(c.vision.outHiddenSize).toBe(3584);
  });

  it('treats num_key_value_heads: null as "same as num_attention_heads"', () => {
    const json = diffusionVl3b();
    json.num_key_value_heads = null;
    json.text_config.num_key_value_heads = null;
    expect(parseModelConfig(json, 'config.json').text.numKvHeads).toBe(16);
  });

  it('names a missing required key and the file', () => {
    const json = diffusionVl3b();
    delete json.hidden_size;
    delete json.text_config.hidden_size;
    expectModelError(() => parseModelConfig(json, '/models/x/config.json'), /^\/models\/x\/config\.json: missing "hidden_size" \(looked in text_config and at the top level\)$/);
    const flat = diffusionVl3b();
    delete flat.text_config;
    delete flat.num_attention_heads;
    expectModelError(() => parseModelConfig(flat, 'c.json'), /c\.json: missing "num_attention_heads" \(looked at the top level\)/);
    const noDepth = diffusionVl3b();
    delete noDepth.vision_config.depth;
    expectModelError(() => parseModelConfig(noDepth, 'c.json'), /missing "depth" \(looked in vision_config\)/);
    const noVision = diffusionVl3b();
    delete noVision.vision_config;
    expectModelError(() => parseModelConfig(noVision, 'c.json'), /missing "vision_config"/);
  });

  it('rejects values of the wrong type or range, naming where they were found', () => {
    const json = diffusionVl3b();
    json.text_config.num_hidden_layers = '36';
    expectModelError(() => parseModelConfig(json, 'c.json'), /"text_config\.num_hidden_layers" must be a positive integer, got "36"/);
    const frac = diffusionVl3b();
    frac.vision_config.depth = 31.5;
    expectModelError(() => parseModelConfig(frac, 'c.json'), /"vision_config\.depth" must be a positive integer/);
    const eps = diffusionVl3b();
    eps.text_config.rms_norm_eps = -1;
    expectModelError(() => parseModelConfig(eps, 'c.json'), /"text_config\.rms_norm_eps" must be a positive number/);
    const tie = diffusionVl3b();
    tie.text_config.tie_word_embeddings = 'yes';
    expectModelError(() => parseModelConfig(tie, 'c.json'), /tie_word_embeddings" must be true or false/);
    const full = diffusionVl3b();
    full.vision_config.fullatt_block_indexes = [7, -1];
    expectModelError(() => parseModelConfig(full, 'c.json'), /fullatt_block_indexes" must be a list of non-negative integers/);
  });

  it('checks the relations between keys', () => {
    const cases: [(j: Record<string, any>) => void, RegExp][] = [
      [(j) => (j.text_config.num_attention_heads = 15), /hidden_size 2048 is not divisible by num_attention_heads 15/],
      [(j) => (j.text_config.num_key_value_heads = 3), /num_attention_heads 16 is not divisible by num_key_value_heads 3/],
      [(j) => Object.assign(j.text_config, { num_attention_heads: 2048, num_key_value_heads: 2 }), /text head size 1 must be even/],
      [(j) => (j.text_config.vocab_size = 151671), /vocab_size 151671 has no row for the mask token 151671/],
      [(j) => (j.vision_config.num_heads = 12), /vision_config\.hidden_size 1280 is not divisible by vision_config\.num_heads 12/],
      [(j) => (j.vision_config.num_heads = 128), /vision head size 10 must be divisible by 4/],
      [(j) => (j.vision_config.out_hidden_size = 3584), /out_hidden_size 3584 does not match the text hidden_size 2048/],
      [(j) => (j.vision_config.fullatt_block_indexes = [7, 32]), /fullatt_block_indexes has 32, but depth is 32/],
      [(j) => (j.vision_config.window_size = 20), /window_size 20 is smaller than one merged patch \(28 pixels\)/],
    ];
    for (const [edit, pattern] of cases) {
      const json = diffusionVl3b();
      edit(json);
      expectModelError(() => parseModelConfig(json, 'c.json'), pattern);
    }
  });

  it('refuses non-objects', () => {
    expectModelError(() => parseModelConfig([1, 2], 'c.json'), /expected a JSON object/);
    expectModelError(() => parseModelConfig({ ...diffusionVl3b(), text_config: 3 }, 'c.json'), /"text_config" must be an object/);
  });
});

describe('readModelConfig', () => {
  it('reads config.json from a directory and reports unreadable or invalid files', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-cfg-'));
    try {
      expectModelError(() => readModelConfig(dir), /cannot read .*config\.json/);
      fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type": "diffusionvl_qwenvl",');
      expectModelError(() => readModelConfig(dir), /config\.json is not valid JSON/);
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(diffusionVl3b()));
      expect(readModelConfig(dir)).toEqual(EXPECTED_3B);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
