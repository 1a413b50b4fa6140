/**
 * The byte automaton on its own (no vocabulary): texts fed byte by byte are rejected, valid prefixes, or
 * complete documents, checked against independent oracles: JSON.parse + ajv for complete documents, brute
 * enumeration for integer bounds, and hand-made UTF-8 byte sequences.
 */
import { describe, expect, it } from 'vitest';
import { compileJsonSchema } from '../src/generate/json-schema/index.js';
import { JsonAutomaton, MAX_WHITESPACE_SPACES, type Cursor, type WhitespacePolicy } from '../src/generate/json-schema/json-automaton.js';
import { ajvValidator } from './helpers/json-schemas.js';

type Status = 'rejected' | 'prefix' | 'complete';

function reader(schema: unknown, whitespace: WhitespacePolicy = 'bounded') {
  const automaton = new JsonAutomaton(compileJsonSchema(schema), whitespace);
  return (input: string | number[]): { status: Status; need: number } => {
    const bytes = typeof input === 'string' ? Array.from(new TextEncoder().encode(input)) : input;
    let cursors: Cursor[] = [automaton.initial()];
    for (const b of bytes) {
      cursors = automaton.stepAll(cursors, b);
      if (cursors.length === 0) return { status: 'rejected', need: Infinity };
    }
    const need = Math.min(...cursors.map((c) => automaton.need(c)));
    return { status: cursors.some((c) => automaton.isComplete(c)) ? 'complete' : 'prefix', need };
  };
}

/** Complete documents must parse and validate (the independent check of every 'complete' below). */
function expectStatuses(schema: unknown, cases: [string | number[], Status][], whitespace: WhitespacePolicy = 'bounded'): void {
  const read = reader(schema, whitespace);
  const valid = ajvValidator(schema);
  for (const [input, expected] of cases) {
    const { status } = read(input);
    expect([input, status]).toEqual([input, expected]);
    if (status === 'complete') {
      const text = typeof input === 'string' ? input : new TextDecoder().decode(Uint8Array.from(input));
      expect(valid(JSON.parse(text))).toBe(true);
    }
  }
}

const Q = 0x22;

describe('strings', () => {
  it('UTF-8 must be well formed, byte by byte', () => {
    expectStatuses({ type: 'string' }, [
      [[Q, 0xc3, 0xa9, Q], 'complete'], // é
      [[Q, 0xc3], 'prefix'], // half of é
      [[Q, 0xc3, Q], 'rejected'], // a quote inside a character
      [[Q, 0xc0, 0x80, Q], 'rejected'], // overlong NUL
      [[Q, 0xc1], 'rejected'],
      [[Q, 0xe0, 0x80], 'rejected'], // overlong 3-byte
      [[Q, 0xe0, 0xa0, 0x80, Q], 'complete'], // U+0800
      [[Q, 0xed, 0xa0], 'rejected'], // surrogate D800
      [[Q, 0xed, 0x9f, 0xbf, Q], 'complete'], // U+D7FF
      [[Q, 0xf0, 0x8f], 'rejected'], // overlong 4-byte
      [[Q, 0xf0, 0x9f, 0x98, 0x80, Q], 'complete'], // 😀
      [[Q, 0xf4, 0x90], 'rejected'], // above U+10FFFF
      [[Q, 0xf5], 'rejected'],
      [[Q, 0x80], 'rejected'], // stray continuation
      [[Q, 0x7f, Q], 'complete'], // DEL is allowed in JSON strings
    ]);
  });

  it('no raw control bytes; the JSON escapes only; no surrogate \\u escapes', () => {
    expectStatuses({ type: 'string' }, [
      ['"a\nb"', 'rejected'],
      ['"a\tb"', 'rejected'],
      [[Q, 0x00], 'rejected'],
      ['"a\\nb\\t\\r\\b\\f\\/\\\\\\""', 'complete'],
      ['"\\u00e9\\u00C9\\u0000"', 'complete'],
      ['"\\x41"', 'rejected'],
      ['"\\u12g4"', 'rejected'],
      ['"\\ud83d', 'rejected'],
      ['"\\uDC00', 'rejected'],
      ['"\\uD7FF"', 'complete'],
      ['"\\u00', 'prefix'],
    ]);
  });

  it('lengths count code points, as JSON Schema does', () => {
    expectStatuses({ type: 'string', minLength: 2, maxLength: 3 }, [
      ['"a"', 'rejected'],
      ['"ab"', 'complete'],
      ['"😀😀"', 'complete'],
      ['"😀😀😀"', 'complete'],
      ['"😀😀😀a', 'rejected'],
      ['"\\u00e9\\n"', 'complete'],
      ['"\\u00e9\\n\\t\\r', 'rejected'],
      ['"éé"', 'complete'],
    ]);
    // need: the pending bytes of a character, the missing characters, the closing quote
    const read = reader({ type: 'string', minLength: 3 });
    expect(read('"').need).toBe(4);
    expect(read([Q, 0xf0, 0x9f]).need).toBe(2 + 2 + 1);
    expect(read('"\\u0').need).toBe(3 + 2 + 1);
    expect(read('"abcd').need).toBe(1);
  });
});

describe('whitespace', () => {
  it('only between tokens, bounded per run, never after the document', () => {
    const spaces = (n: number) => ' '.repeat(n);
    expectStatuses({ type: 'object', properties: { a: { type: 'array', items: { type: 'integer' } } } }, [
      ['{ "a" : [ 1 , 2 ] }', 'complete'],
      ['{\n  "a": [\n    1,\n    2\n  ]\n}', 'complete'],
      ['\t{"a":[]}', 'rejected'], // nothing before the document
      ['{"a":[]}', 'complete'],
      [`{${spaces(MAX_WHITESPACE_SPACES)}"a":[]}`, 'complete'],
      [`{${spaces(MAX_WHITESPACE_SPACES + 1)}`, 'rejected'],
      ['{\n\n', 'rejected'],
      ['{ \n \n', 'rejected'],
      ['{\r\n', 'rejected'],
      ['{"a":[1 2', 'rejected'],
      ['{" a"', 'rejected'],
      ['{"a":[]} ', 'rejected'],
      ['{"a":[]}\n', 'rejected'],
    ]);
  });

  it("'none': compact JSON only", () => {
    const schema = { type: 'object', properties: { a: { type: 'array', items: { type: 'string' } } } };
    expectStatuses(
      schema,
      [
        ['{"a":["x y",""]}', 'complete'],
        ['{ ', 'rejected'],
        ['{"a" ', 'rejected'],
        ['{"a":[\n', 'rejected'],
        ['{"a":["x"] ', 'rejected'],
      ],
      'none',
    );
  });
});

describe('integers', () => {
  /** Every canonical integer text in [lo, hi] and every prefix of one: the oracle. */
  function oracle(lo: number, hi: number) {
    const full = new Set<string>();
    const prefixes = new Set<string>(['']);
    for (let v = lo; v <= hi; v++) {
      const t = String(v);
      full.add(t);
      for (let i = 1; i <= t.length; i++) prefixes.add(t.slice(0, i));
    }
    return { full, prefixes };
  }

  it.each([
    [-12, 7],
    [5, 130],
    [-300, -20],
    [0, 0],
    [10, 10],
    [-5, -5],
    [99, 101],
    [-1, 1],
  ])('[%i, %i]: every string of up to 4 of "-0123456789" against the enumeration', (lo, hi) => {
    const read = reader({ type: 'integer', minimum: lo, maximum: hi });
    const { full, prefixes } = oracle(lo, hi);
    const alphabet = '-0123456789';
    let strings = [''];
    for (let len = 1; len <= 4; len++) {
      strings = strings.flatMap((s) => [...alphabet].map((c) => s + c));
      for (const s of strings) {
        const { status, need } = read(s);
        const expected: Status = full.has(s) ? 'complete' : prefixes.has(s) ? 'prefix' : 'rejected';
        expect([s, status]).toEqual([s, expected]);
        if (status !== 'rejected') {
          // need: the fewest characters that complete it (from the enumeration)
          let best = Infinity;
          for (const f of full) if (f.startsWith(s)) best = Math.min(best, f.length - s.length);
          expect([s, need]).toEqual([s, best]);
        }
      }
    }
  });

  it('unbounded integers: no leading zero, no -0, at most 15 digits', () => {
    expectStatuses({ type: 'integer' }, [
      ['0', 'complete'],
      ['01', 'rejected'],
      ['-0', 'rejected'],
      ['-', 'prefix'],
      ['-12', 'complete'],
      ['999999999999999', 'complete'],
      ['9999999999999999', 'rejected'],
      ['1.0', 'rejected'],
      ['1e3', 'rejected'],
    ]);
  });
});

describe('numbers', () => {
  it('the JSON number grammar, finite doubles only', () => {
    expectStatuses({ type: 'number' }, [
      ['0', 'complete'],
      ['-0.0', 'complete'],
      ['1.5e-3', 'complete'],
      ['12E+99', 'complete'],
      ['12e100', 'rejected'],
      ['01', 'rejected'],
      ['1.', 'prefix'],
      ['.5', 'rejected'],
      ['+1', 'rejected'],
      ['1e', 'prefix'],
      ['1e+', 'prefix'],
      ['1.2.3', 'rejected'],
      ['-', 'prefix'],
      ['1234567890123456', 'rejected'],
    ]);
  });
});

describe('objects, arrays, literals, unions', () => {
  it('declared keys in order, optional ones skippable, required ones mandatory', () => {
    const schema = {
      type: 'object',
      properties: { a: { type: 'integer' }, b: { type: 'string' }, c: { type: 'boolean' }, d: { type: 'null' } },
      required: ['b', 'd'],
    };
    expectStatuses(schema, [
      ['{"b":"","d":null}', 'complete'],
      ['{"a":1,"b":"x","c":true,"d":null}', 'complete'],
      ['{"b":"","c":false,"d":null}', 'complete'],
      ['{"d":null', 'rejected'], // b is required and comes first
      ['{"b":"x"}', 'rejected'],
      ['{"b":"x","a":1', 'rejected'], // declaration order
      ['{"e":1', 'rejected'], // only declared keys
      ['{}', 'rejected'],
      ['{"a":1,"a":2', 'rejected'],
      ['{"a":1,}', 'rejected'],
    ]);
    const read = reader(schema);
    expect(read('{').need).toBe('"b":"","d":null}'.length);
    expect(read('{"a":1,').need).toBe('"b":"","d":null}'.length);
    expect(read('{"b":"",').need).toBe('"d":null}'.length);
    expect(read('{"b":"","c').need).toBe('":true,"d":null}'.length);
  });

  it('arrays: item bounds', () => {
    expectStatuses({ type: 'array', items: { type: 'integer' }, minItems: 2, maxItems: 3 }, [
      ['[]', 'rejected'],
      ['[1]', 'rejected'],
      ['[1,2]', 'complete'],
      ['[1,2,3]', 'complete'],
      ['[1,2,3,', 'rejected'],
      ['[,', 'rejected'],
    ]);
  });

  it('enums: exact texts, and a value that a longer one extends', () => {
    expectStatuses({ enum: [1, 12, 'ab', { k: [null] }] }, [
      ['1', 'complete'],
      ['12', 'complete'],
      ['123', 'rejected'],
      ['"ab"', 'complete'],
      ['"a"', 'rejected'],
      ['{"k":[null]}', 'complete'],
      ['{"k": [null]}', 'rejected'], // written as JSON.stringify writes it
    ]);
    expectStatuses({ type: 'array', items: { enum: [1, 12] } }, [
      ['[1,12,1]', 'complete'],
      ['[12 ]', 'complete'],
    ]);
  });

  it('unions keep every live alternative', () => {
    expectStatuses({ anyOf: [{ type: 'object', properties: { a: { type: 'string' }, b: { type: 'integer' } }, required: ['a', 'b'] }, { type: 'object', properties: { a: { type: 'string' }, c: { type: 'null' } }, required: ['a', 'c'] }] }, [
      ['{"a":"x","b":1}', 'complete'],
      ['{"a":"x","c":null}', 'complete'],
      ['{"a":"x"}', 'rejected'],
      ['{"a":"x","b":null', 'rejected'],
    ]);
    expectStatuses({ type: ['integer', 'number', 'null'] }, [
      ['12', 'complete'],
      ['1.5', 'complete'],
      ['null', 'complete'],
      ['nul', 'prefix'],
    ]);
  });

  it('recursive $ref', () => {
    const schema = { $ref: '#/$defs/n', $defs: { n: { type: 'array', items: { $ref: '#/$defs/n' } } } };
    expectStatuses(schema, [
      ['[]', 'complete'],
      ['[[],[[[]]]]', 'complete'],
      ['[[],[[[]]]', 'prefix'],
      ['[1]', 'rejected'],
    ]);
  });

  it('json_object: any object, any values', () => {
    expectStatuses('json_object', [
      ['{}', 'complete'],
      ['{"a":[1,{"b":null}],"c":"d","e":-1.5e3,"f":true}', 'complete'],
      ['[]', 'rejected'],
      ['"x"', 'rejected'],
      ['{"a"}', 'rejected'],
    ]);
  });
});
