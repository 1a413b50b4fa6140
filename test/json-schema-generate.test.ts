/**
 * generate() (bd3lm.ts) under a JSON Schema constraint, driven by a deterministic random "model"
 * (helpers/random-decoder.ts: seeded pseudo-random logits over the full 151936-row vocabulary of the 3B model).
 * Whatever the logits, every answer must parse and validate (ajv), within the token budget, for every
 * schema of the set, seeds, temperatures 0 / 0.7 / 1.5, static and dynamic remasking, block sizes 8 and 4.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { generate, type GenerateOptions, type GenerationEvent, type GenerateResult } from '../src/generate/bd3lm.js';
import { compileJsonConstraint, type JsonConstraint, type Vocabulary } from '../src/generate/json-schema/index.js';
import { ajvValidator, qwenTokenizer, qwenVocabulary, QWEN_EOS, SCHEMAS } from './helpers/json-schemas.js';
import { EMBEDDINGS, H, MASK, randomBaseRow, RandomDecoder } from './helpers/random-decoder.js';

let vocab: Vocabulary;
let base: Float32Array;
let punctuation: Map<number, number>;

beforeAll(() => {
  vocab = qwenVocabulary();
  base = randomBaseRow(2024);
  punctuation = new Map();
  for (const id of vocab.textIds) {
    if (vocab.tokenLength(id) !== 1) continue;
    const ch = String.fromCharCode(vocab.tokenBytes(id)[0]);
    if ('"{}[],:0123456789'.includes(ch)) punctuation.set(id, 7);
  }
  punctuation.set(QWEN_EOS, 7);
});

interface Run {
  temperature: number;
  remasking: GenerateOptions['remasking'];
  blockSize: number;
  steps: number;
  threshold?: number;
  topK?: number;
  topP?: number;
}

const RUNS: Run[] = [
  { temperature: 0, remasking: 'low_confidence_static', blockSize: 8, steps: 8 },
  { temperature: 0.7, remasking: 'low_confidence_dynamic', blockSize: 4, steps: 4, threshold: 0.3 },
  { temperature: 1.5, remasking: 'low_confidence_static', blockSize: 4, steps: 2 },
  { temperature: 0.7, remasking: 'low_confidence_static', blockSize: 8, steps: 4, topK: 50, topP: 0.9 },
  { temperature: 1.5, remasking: 'low_confidence_dynamic', blockSize: 8, steps: 8, threshold: 0.1 },
  { temperature: 0, remasking: 'low_confidence_dynamic', blockSize: 4, steps: 4, threshold: 0.5 },
];

interface Generated {
  result: GenerateResult;
  events: GenerationEvent[];
  decoder: RandomDecoder;
  /** Text up to the first EOS. */
  text: string;
  /** Output tokens before the first EOS. */
  length: number;
}

async function run(
  constraint: JsonConstraint,
  r: Run,
  seed: number,
  genLength: number,
  extra: Partial<GenerateOptions> = {},
): Promise<Generated> {
  const promptLength = seed % 2 === 0 ? 8 : 5;
  const promptEmbeds = new Float32Array(promptLength * H);
  for (let i = 0; i < promptLength; i++) EMBEDDINGS.rowInto(1000 + i * 37, promptEmbeds, i * H);
  const decoder = new RandomDecoder(seed, base, seed % 3 === 0 ? new Map() : punctuation);
  const events: GenerationEvent[] = [];
  const result = await generate({
    decoder,
    embeddings: EMBEDDINGS,
    promptEmbeds,
    promptLength,
    genLength,
    steps: r.steps,
    blockSize: r.blockSize,
    temperature: r.temperature,
    topK: r.topK ?? 0,
    topP: r.topP ?? 1,
    remasking: r.remasking,
    threshold: r.threshold ?? 0.9,
    seed,
    maskTokenId: MASK,
    eosTokenId: QWEN_EOS,
    constraint,
    onEvent: (e) => events.push(e),
    ...extra,
  });
  const eos = result.tokens.indexOf(QWEN_EOS);
  const length = eos < 0 ? result.tokens.length : eos;
  return { result, events, decoder, text: vocab.decode(result.tokens.slice(0, length)), length };
}

describe('generate under a JSON Schema: every answer parses and validates', () => {
  it.each(SCHEMAS.map((s, i) => [s.name, s.schema, i] as const))('%s', async (_name, schema, index) => {
    const constraint = compileJsonConstraint(schema, vocab);
    const valid = ajvValidator(schema);
    for (const [k, r] of RUNS.entries()) {
      for (const seed of [index * 10 + k, index * 10 + k + 100]) {
        const genLength = constraint.minTokens + 16 + (seed % 17);
        const g = await run(constraint, r, seed, genLength);
        const where = { seed, run: r, text: g.text };
        expect({ ...where, complete: g.result.constraintComplete }).toEqual({ ...where, complete: true });
        expect({ ...where, valid: valid(JSON.parse(g.text)) }).toEqual({ ...where, valid: true });
        expect(g.length).toBeLessThanOrEqual(genLength);
        // the real tokenizer reads the same text
        expect(qwenTokenizer().decodeGenerated(g.result.tokens, QWEN_EOS)).toBe(g.text);
        // after the document: EOS in the rest of its block, positions never reached hold the mask id
        const after = g.result.tokens.slice(g.length);
        const eosRun = after.findIndex((t) => t !== QWEN_EOS);
        if (eosRun >= 0) expect(after.slice(eosRun).every((t) => t === MASK)).toBe(true);
        if (g.length < genLength) expect(g.result.stoppedAtEos).toBe(true);
        // the unmask events replay the output
        const replay = new Array<number>(genLength).fill(MASK);
        for (const e of g.events) if (e.type === 'unmask') e.indices.forEach((i, j) => (replay[i] = e.ids[j]));
        expect(replay).toEqual(g.result.tokens);
      }
    }
  });
});

describe('generate under a constraint: loop behaviour', () => {
  const person = {
    type: 'object',
    properties: { name: { type: 'string', maxLength: 10 }, age: { type: 'integer', minimum: 0, maximum: 120 }, city: { enum: ['Paris', 'Lyon', 'Marseille'] } },
    required: ['name', 'age', 'city'],
  };

  it('same seed, same answer; greedy and sampled answers differ from each other', async () => {
    const c = compileJsonConstraint(person, vocab);
    const a = await run(c, RUNS[1], 4, 60);
    const b = await run(c, RUNS[1], 4, 60);
    expect(b.result.tokens).toEqual(a.result.tokens);
    const greedy = await run(c, RUNS[0], 4, 60);
    expect(greedy.result.tokens).not.toEqual(a.result.tokens);
  });

  it('a budget too small for any document: the answer is incomplete (finish_reason "length")', async () => {
    const c = compileJsonConstraint(person, vocab);
    // minTokens counts bytes (what the constraint can promise); no document of this schema fits in 5 tokens
    const g = await run(c, RUNS[0], 1, 5);
    expect(g.result.constraintComplete).toBe(false);
    expect(g.result.tokens).not.toContain(QWEN_EOS);
    expect(() => JSON.parse(g.text)).toThrow();
    // ... and exactly the shortest budget completes
    const tight = await run(c, RUNS[0], 1, c.minTokens);
    expect(tight.result.constraintComplete).toBe(true);
    expect(ajvValidator(person)(JSON.parse(tight.text))).toBe(true);
  });

  it('static remasking fills the scheduled number of slots per step, left to right; dynamic fills confident runs', async () => {
    const c = compileJsonConstraint({ type: 'array', items: { type: 'integer' }, minItems: 30, maxItems: 30 }, vocab);
    const staticRun = await run(c, { temperature: 0.7, remasking: 'low_confidence_static', blockSize: 8, steps: 4 }, 6, 100, { fillForcedTokens: false });
    const unmasks = staticRun.events.filter((e): e is Extract<GenerationEvent, { type: 'unmask' }> => e.type === 'unmask');
    // steps = 4 on blocks of 8: two slots per step, adjacent, after the previous ones
    for (const e of unmasks.filter((e) => e.indices.length > 0 && e.indices[0] < staticRun.length - 2)) {
      expect(e.indices.length).toBe(2);
      expect(e.indices[1]).toBe(e.indices[0] + 1);
    }
    const dynamicRun = await run(c, { temperature: 0, remasking: 'low_confidence_dynamic', blockSize: 8, steps: 8, threshold: 0.01 }, 6, 100, { fillForcedTokens: false });
    const sizes = dynamicRun.events.filter((e): e is Extract<GenerationEvent, { type: 'unmask' }> => e.type === 'unmask').map((e) => e.indices.length);
    expect(Math.max(...sizes)).toBeGreaterThan(1);
    expect(dynamicRun.result.constraintComplete).toBe(true);
  });

  it('forced tokens are filled without decoder calls: fewer calls, still valid', async () => {
    let withForced = 0;
    let without = 0;
    for (const { schema } of SCHEMAS) {
      const c = compileJsonConstraint(schema, vocab);
      const valid = ajvValidator(schema);
      for (const seed of [1, 2]) {
        const a = await run(c, RUNS[0], seed, c.minTokens + 30);
        const b = await run(c, RUNS[0], seed, c.minTokens + 30, { fillForcedTokens: false });
        expect(valid(JSON.parse(a.text))).toBe(true);
        expect(valid(JSON.parse(b.text))).toBe(true);
        withForced += a.result.nfe;
        without += b.result.nfe;
      }
    }
    expect(withForced).toBeLessThan(without);
  });

  it('blocks finished by forced tokens alone are committed together with the next call', async () => {
    // a long key: "{" + the key + ":" spans several blocks of 4 that need no logits
    const key = 'a_rather_long_property_name_to_force';
    const schema = { type: 'object', properties: { [key]: { type: 'integer' } }, required: [key] };
    // compact JSON: '{"' + the key + '":' is forced text
    const c = compileJsonConstraint(schema, vocab, { whitespace: 'none' });
    const fused = await run(c, RUNS[0], 2, 60, { blockSize: 4, steps: 4 });
    const separate = await run(c, RUNS[0], 2, 60, { blockSize: 4, steps: 4, referenceSchedule: true });
    expect(fused.result.tokens).toEqual(separate.result.tokens);
    expect(ajvValidator(schema)(JSON.parse(fused.text))).toBe(true);
    // prompt of 8 rows (two blocks) prefilled; the first call with logits commits the held-back blocks
    expect(fused.decoder.requests[0]).toMatchObject({ start: 0, count: 8, commit: true, logitRows: [] });
    const first = fused.decoder.requests[1];
    expect(first.commit).toBe(true);
    expect(first.start).toBe(8);
    expect(first.commitRows! % 4).toBe(0);
    expect(first.commitRows!).toBeGreaterThanOrEqual(8);
    expect(first.count).toBe(first.commitRows! + 4);
    // the same rows reach the cache one way or the other
    expect(separate.decoder.requests.filter((q) => q.commit && q.logitRows.length === 0).length).toBeGreaterThan(2);
  });

  it('refuses a constraint for another EOS or a larger vocabulary', async () => {
    const c = compileJsonConstraint(person, vocab);
    await expect(run(c, RUNS[0], 1, 40, { eosTokenId: 151643 })).rejects.toThrow(/constraint's EOS/);
    const small = new RandomDecoder(1, base, new Map());
    Object.defineProperty(small, 'vocabSize', { value: 1000 });
    await expect(run(c, RUNS[0], 1, 40, { decoder: small })).rejects.toThrow(/larger than the decoder/);
  });

  it('without a constraint the result has no constraintComplete', async () => {
    const c = compileJsonConstraint(person, vocab);
    const g = await run(c, RUNS[0], 1, 16, { constraint: undefined });
    expect('constraintComplete' in g.result).toBe(false);
  });
});
