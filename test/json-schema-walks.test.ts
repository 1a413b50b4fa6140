/**
 * The constraint on the real Qwen2.5 vocabulary: thousands of random walks through allowed tokens, each
 * continued to EOS, must give text that JSON.parse accepts and ajv validates, within the budget, and that
 * the real tokenizer decodes to the same text. Plus targeted checks that breaking tokens are not allowed,
 * that the masks agree with stepping tokens one by one, and that the string tables agree with the trie walk.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { checkTokenBudget, compileJsonConstraint, Vocabulary, type JsonConstraint, type JsonState } from '../src/generate/json-schema/index.js';
import { prng } from './helpers/random-weights.js';
import { ajvValidator, qwenTokenizer, qwenVocabulary, QWEN_EOS, SCHEMAS } from './helpers/json-schemas.js';
import { DvlError } from '../src/util/errors.js';

let vocab: Vocabulary;
/** Single-byte token id of each byte. */
const byteToken = new Map<number, number>();
const tok = (ch: string) => byteToken.get(ch.charCodeAt(0))!;

beforeAll(() => {
  vocab = qwenVocabulary();
  for (const id of vocab.textIds) if (vocab.tokenLength(id) === 1) byteToken.set(vocab.tokenBytes(id)[0], id);
});

/** Feeds text as single-byte tokens. */
function feed(c: JsonConstraint, text: string, state = c.start()): JsonState {
  for (const b of new TextEncoder().encode(text)) {
    const next = c.advance(state, byteToken.get(b)!);
    if (!next) throw new Error(`rejected at ${JSON.stringify(text)}`);
    state = next;
  }
  return state;
}

interface Walk {
  ids: number[];
  text: string;
  /** Tokens before EOS. */
  length: number;
}

/**
 * One random walk: at every step a random allowed token (half of the time a single-byte one, which explores
 * structure; else any, which mostly writes long string content), until EOS.
 */
function randomWalk(
  c: JsonConstraint,
  budget: number,
  rand: () => number,
  check: (state: JsonState, allowed: Int32Array, text: string, remaining: number) => void,
): Walk {
  let state = c.start();
  const ids: number[] = [];
  for (let remaining = budget; ; remaining--) {
    const allowed = c.allowed(state, remaining);
    expect(allowed.length).toBeGreaterThan(0);
    check(state, allowed, vocab.decode(ids), remaining);
    // single-byte tokens are ids 0..255 (tested below), at the front of the ascending list
    let singles = 0;
    while (singles < allowed.length && allowed[singles] < 256) singles++;
    const id = singles > 0 && rand() < 0.5 ? allowed[Math.floor(rand() * singles)] : allowed[Math.floor(rand() * allowed.length)];
    if (id === QWEN_EOS) return { ids, text: vocab.decode(ids), length: ids.length };
    const next = c.advance(state, id);
    expect(next).not.toBeNull();
    state = next!;
    ids.push(id);
  }
}

describe('vocabulary', () => {
  it('has every byte as a token, and no added token as text', () => {
    expect(byteToken.size).toBe(256);
    expect([...byteToken.values()].sort((a, b) => a - b)).toEqual(Array.from({ length: 256 }, (_, i) => i));
    expect(vocab.textIds.length).toBe(151643);
    expect(vocab.textIds.at(-1)).toBe(151642);
    expect(vocab.tokenLength(QWEN_EOS)).toBe(0);
    expect(vocab.idLimit).toBe(QWEN_EOS + 1);
    // the byte-level alphabet decoded: 'Ġ' is a space, 'Ċ' a newline
    expect(vocab.decode([220, 198])).toBe(' \n');
  });

  it('decodes like the real tokenizer', () => {
    const tokenizer = qwenTokenizer();
    const rand = prng(5);
    for (let i = 0; i < 200; i++) {
      const ids = Array.from({ length: 1 + Math.floor(rand() * 12) }, () => Math.floor(rand() * 151643));
      const bytesOk = (() => {
        try {
          new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(ids.flatMap((id) => Array.from(vocab.tokenBytes(id)))));
          return true;
        } catch {
          return false;
        }
      })();
      // (random ids may split characters; both sides then write U+FFFD the same way)
      expect([ids, bytesOk, vocab.decode(ids)]).toEqual([ids, bytesOk, tokenizer.decode(ids)]);
    }
  });

  it('is the same from a loaded TextTokenizer', () => {
    const fromTokenizer = Vocabulary.fromTokenizer(qwenTokenizer(), QWEN_EOS);
    expect(fromTokenizer.textIds).toEqual(vocab.textIds);
    for (const id of [0, 220, 1000, 77777, 151642]) expect(fromTokenizer.tokenBytes(id)).toEqual(vocab.tokenBytes(id));
  });

  it('needs every byte as a token and EOS as an added token', () => {
    // a toy byte-level vocabulary: the 256 byte tokens of the real one (GPT-2's alphabet)
    const real = JSON.parse(JSON.stringify(qwenTokenizer().tokenizerJson)) as { model: { vocab: Record<string, number> } };
    const alphabet = Object.entries(real.model.vocab).filter(([, id]) => id < 256);
    const toy = (entries: [string, number][]) => ({
      model: { type: 'BPE', vocab: Object.fromEntries(entries) },
      decoder: { type: 'ByteLevel' },
      added_tokens: [{ id: 300, content: '<eos>' }],
    });
    expect(Vocabulary.fromTokenizerJson(toy(alphabet), 300).textIds.length).toBe(256);
    expect(() => Vocabulary.fromTokenizerJson(toy(alphabet.slice(1)), 300)).toThrow('structured output needs a token for every byte; the vocabulary has 255 of 256');
    expect(() => Vocabulary.fromTokenizerJson(toy(alphabet), 42)).toThrow('the EOS id 42 is not an added token');
  });

  it('refuses a tokenizer that is not byte-level BPE', () => {
    expect(() => Vocabulary.fromTokenizerJson({ model: { type: 'WordPiece', vocab: {} } }, 0)).toThrow(/BPE tokenizer/);
  });
});

describe('random walks on the real vocabulary', () => {
  const tokenizer = () => qwenTokenizer();

  it.each(SCHEMAS.map((s, i) => [s.name, s.schema, i] as const))('%s: every walk closes within its budget, parses and validates', (_name, schema, index) => {
    // both whitespace policies, alternately
    const constraints = [compileJsonConstraint(schema, vocab), compileJsonConstraint(schema, vocab, { whitespace: 'none' })];
    const valid = ajvValidator(schema);
    const rand = prng(1000 + index);
    const walks = 140;
    let complete = 0;
    for (let w = 0; w < walks; w++) {
      const c = constraints[w % 2];
      // some walks on the tightest budget, the others with room to spare
      const budget = c.minTokens + (w % 4 < 2 ? 0 : Math.floor(rand() * 40));
      const walk = randomWalk(c, budget, rand, (state, allowed, text, remaining) => {
        const done = c.isComplete(state);
        // EOS exactly when complete; a complete document is valid; it only goes on as a number (or an enum
        // value a longer one extends, not in this schema set)
        // (allowed is ascending, so these checks look at its end only: the walks are long)
        expect(allowed.at(-1) === QWEN_EOS).toBe(done);
        if (done) {
          const value = JSON.parse(text);
          expect(valid(value)).toBe(true);
          if (typeof value !== 'number') expect(Array.from(allowed)).toEqual([QWEN_EOS]);
        }
        // never an id without text (the diffusion mask 151671, padded rows) nor another added token
        expect(allowed.at(-1)! <= QWEN_EOS).toBe(true);
        const lastText = allowed.at(-1) === QWEN_EOS ? allowed.at(-2) : allowed.at(-1);
        if (lastText !== undefined) expect(lastText).toBeLessThan(151643);
        // a forced token is allowed, and every allowed token agrees with it (one is a prefix of the other):
        // its text really is where every continuation goes
        const forced = c.forced(state, remaining);
        if (forced !== null) {
          expect(allowed.includes(forced)).toBe(true);
          // (bytes, not text: a token may hold part of a character)
          const f = vocab.tokenBytes(forced);
          const startsWith = (a: Uint8Array, b: Uint8Array) => a.length >= b.length && b.every((x, i) => a[i] === x);
          for (const id of allowed) {
            const t = vocab.tokenBytes(id);
            if (!(startsWith(t, f) || startsWith(f, t))) expect([text, Array.from(f), Array.from(t)]).toBe('compatible');
          }
        }
      });
      expect(walk.length).toBeLessThanOrEqual(budget);
      const value = JSON.parse(walk.text);
      expect([walk.text, valid(value)]).toEqual([walk.text, true]);
      expect(tokenizer().decode([...walk.ids, QWEN_EOS])).toBe(walk.text);
      complete++;
    }
    expect(complete).toBe(walks);
  });

  it('the masks agree with advancing token by token, and the string tables with the trie walk', () => {
    const rand = prng(77);
    for (const { schema } of SCHEMAS.filter((_, i) => i % 3 === 0)) {
      const fast = compileJsonConstraint(schema, vocab);
      const slow = compileJsonConstraint(schema, vocab, { stringFastPath: false });
      let compared = 0;
      for (let w = 0; w < 6; w++) {
        randomWalk(fast, fast.minTokens + 30, rand, (state, _allowed, text) => {
          const unbounded = fast.allowed(state, 1e9);
          expect(unbounded.every((id, i) => i === 0 || id > unbounded[i - 1])).toBe(true);
          const set = new Set(unbounded);
          // 300 random ids: advance accepts exactly the allowed ones
          for (let k = 0; k < 300; k++) {
            const id = Math.floor(rand() * 151936);
            expect([text, id, fast.advance(state, id) !== null]).toEqual([text, id, set.has(id)]);
          }
          if (compared < 4 && rand() < 0.3) {
            compared++;
            expect(Array.from(slow.allowed(state, 1e9))).toEqual(Array.from(unbounded));
            expect(Array.from(slow.allowed(state, 12))).toEqual(Array.from(fast.allowed(state, 12)));
          }
        });
      }
    }
  });
});

describe('tokens that would break the document are not allowed', () => {
  const person = {
    type: 'object',
    properties: { name: { type: 'string', maxLength: 3 }, age: { type: 'integer', minimum: 0, maximum: 150 }, tags: { type: 'array', items: { type: 'integer' }, maxItems: 5 } },
    required: ['name', 'age'],
  };
  const firstBytes = (allowed: Int32Array) => new Set(Array.from(allowed, (id) => (id === QWEN_EOS ? -1 : vocab.tokenBytes(id)[0])));
  const texts = (allowed: Int32Array) => Array.from(allowed, (id) => vocab.decode([id]));

  it('a quote where an integer goes', () => {
    const c = compileJsonConstraint(person, vocab);
    const allowed = c.allowed(feed(c, '{"name":"x","age":'), 100);
    expect(allowed.includes(tok('"'))).toBe(false);
    for (const b of firstBytes(allowed)) expect(String.fromCharCode(b)).toMatch(/[0-9 \n\t]/); // no '-': minimum 0
    expect(allowed.includes(tok('7'))).toBe(true);
  });

  it('a digit that takes an integer past its maximum', () => {
    const c = compileJsonConstraint(person, vocab);
    expect(c.allowed(feed(c, '{"name":"x","age":1'), 100).includes(tok('6'))).toBe(true); // 16
    const after15 = c.allowed(feed(c, '{"name":"x","age":15'), 100);
    expect(after15.includes(tok('0'))).toBe(true);
    expect(after15.includes(tok('1'))).toBe(false); // 151 > 150
    const after16 = c.allowed(feed(c, '{"name":"x","age":16'), 100);
    for (const d of '0123456789') expect(after16.includes(tok(d))).toBe(false);
    expect(after16.includes(tok('}'))).toBe(true);
    // a leading zero ends the number
    const after0 = c.allowed(feed(c, '{"name":"x","age":0'), 100);
    for (const d of '0123456789') expect(after0.includes(tok(d))).toBe(false);
  });

  it('a 6th item when maxItems is 5', () => {
    const c = compileJsonConstraint(person, vocab);
    const full = c.allowed(feed(c, '{"name":"x","age":1,"tags":[1,2,3,4,5'), 100);
    expect(full.includes(tok(','))).toBe(false);
    expect(full.includes(tok(']'))).toBe(true);
    expect(texts(full).some((t) => t.includes(','))).toBe(false);
    expect(c.allowed(feed(c, '{"name":"x","age":1,"tags":[1,2,3,4'), 100).includes(tok(','))).toBe(true);
  });

  it('a 4th character when maxLength is 3; a closing brace while a required key is missing', () => {
    const c = compileJsonConstraint(person, vocab);
    const atMax = c.allowed(feed(c, '{"name":"a😀c'), 100);
    for (const t of texts(atMax)) expect(t.startsWith('"')).toBe(true);
    expect(c.allowed(feed(c, '{"name":"ab"'), 100).includes(tok('}'))).toBe(false);
    expect(c.allowed(feed(c, '{'), 100).includes(tok('}'))).toBe(false);
  });

  it('after the document, only EOS', () => {
    const c = compileJsonConstraint(person, vocab);
    const done = feed(c, '{"name":"","age":3}');
    expect(Array.from(c.allowed(done, 100))).toEqual([QWEN_EOS]);
    const ended = c.advance(done, QWEN_EOS)!;
    expect(Array.from(c.allowed(ended, 100))).toEqual([QWEN_EOS]);
    expect(c.advance(ended, tok(' '))).toBeNull();
    expect(c.advance(c.start(), QWEN_EOS)).toBeNull();
  });
});

describe('forced text', () => {
  const person = { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' } }, required: ['name', 'age'] };
  /** Forced tokens from a state until none is forced, as text. */
  function forcedRun(c: JsonConstraint, state: JsonState): string {
    const ids: number[] = [];
    for (let id = c.forced(state, 100); id !== null && id !== QWEN_EOS; id = c.forced(state, 100)) {
      ids.push(id);
      state = c.advance(state, id)!;
    }
    return vocab.decode(ids);
  }

  it('compact JSON: keys and punctuation up to the next choice', () => {
    const c = compileJsonConstraint(person, vocab, { whitespace: 'none' });
    expect(forcedRun(c, c.start())).toBe('{"name":"');
    expect(forcedRun(c, feed(c, '{"name":"Al"'))).toBe(',"age":');
    expect(forcedRun(c, feed(c, '{"name":"Al","age":4'))).toBe('');
    expect(c.forced(feed(c, '{"name":"Al","age":4}'), 100)).toBe(QWEN_EOS);
  });

  it('bounded whitespace: the rest of a key, and enum values once unique', () => {
    const c = compileJsonConstraint({ ...person, properties: { ...person.properties, city: { enum: ['Paris', 'Lyon', 'Lille'] } } }, vocab);
    expect(forcedRun(c, c.start())).toBe('{');
    expect(forcedRun(c, feed(c, '{"n'))).toBe('ame"');
    expect(forcedRun(c, feed(c, '{"name":"x","age":1,"c'))).toBe('ity"');
    expect(forcedRun(c, feed(c, '{"name":"x","age":1,"city":"L'))).toBe('');
    expect(forcedRun(c, feed(c, '{"name":"x","age":1,"city":"Li'))).toBe('lle"');
  });
});

describe('the budget', () => {
  it('allows only tokens after which the document still fits', () => {
    const c = compileJsonConstraint({ type: 'string' }, vocab);
    const open = feed(c, '"');
    // one slot left: the token must close the string (any text, then '"')
    const last = c.allowed(open, 1);
    expect(last.length).toBeGreaterThan(1);
    for (const id of last) expect(vocab.decode([id]).endsWith('"')).toBe(true);
    expect(last.includes(QWEN_EOS)).toBe(false);
    // two slots: content is allowed again
    expect(c.allowed(open, 2).includes(tok('a'))).toBe(true);
    expect(c.allowed(open, 1).includes(tok('a'))).toBe(false);
  });

  it('every walk on the tightest budget still closes', () => {
    const schema = SCHEMAS.find((s) => s.name === 'nested objects')!.schema;
    const c = compileJsonConstraint(schema, vocab);
    const rand = prng(9);
    for (let w = 0; w < 50; w++) expect(randomWalk(c, c.minTokens, rand, () => {}).length).toBeLessThanOrEqual(c.minTokens);
  });

  it('a budget below the shortest document is refused up front (and without the check, the text stays a valid prefix)', () => {
    const c = compileJsonConstraint({ type: 'object', properties: { name: { type: 'string' } }, required: ['name'] }, vocab);
    expect(c.minTokens).toBe('{"name":""}'.length);
    const error = (() => {
      try {
        checkTokenBudget(c, 5, '-n');
      } catch (e) {
        return e as DvlError;
      }
    })();
    expect(error).toBeInstanceOf(DvlError);
    expect(error!.kind).toBe('usage');
    expect(error!.message).toBe('the schema needs at least 11 tokens; -n is 5');
    expect(() => checkTokenBudget(c, 11)).not.toThrow();
    // too small: the tokens that keep a valid prefix
    let state = c.start();
    const rand = prng(3);
    for (let remaining = 5; remaining > 0; remaining--) {
      const allowed = c.allowed(state, remaining);
      expect(allowed.length).toBeGreaterThan(0);
      state = c.advance(state, allowed[Math.floor(rand() * allowed.length)])!;
      expect(state).not.toBeNull();
    }
    expect(c.isComplete(state)).toBe(false);
  });
});
