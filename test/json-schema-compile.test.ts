/**
 * Schema compilation: every supported keyword is accepted (with the length of the shortest document it
 * allows, computed by hand), every unsupported one is refused by name and JSON pointer, and unsatisfiable
 * schemas are refused up front.
 */
import { describe, expect, it } from 'vitest';
import { compileJsonSchema } from '../src/generate/json-schema/index.js';
import { DvlError } from '../src/util/errors.js';
import { ajvValidator } from './helpers/json-schemas.js';

function refusal(schema: unknown): DvlError {
  try {
    compileJsonSchema(schema);
  } catch (error) {
    expect(error).toBeInstanceOf(DvlError);
    expect((error as DvlError).kind).toBe('usage');
    return error as DvlError;
  }
  throw new Error(`accepted ${JSON.stringify(schema)}`);
}

describe('compileJsonSchema: supported keywords', () => {
  // [schema, shortest document (the value of minLength is its length)]
  const cases: [string, unknown, string][] = [
    ['type object, properties, required, additionalProperties', { type: 'object', properties: { a: { type: 'string' }, b: {} }, required: ['a'], additionalProperties: false }, '{"a":""}'],
    ['items, minItems, maxItems', { type: 'array', items: { type: 'integer' }, minItems: 2, maxItems: 3 }, '[0,0]'],
    ['minLength, maxLength', { type: 'string', minLength: 3, maxLength: 5 }, '"aaa"'],
    ['minimum, maximum', { type: 'integer', minimum: 10, maximum: 20 }, '10'],
    ['maximum below zero', { type: 'integer', maximum: -5 }, '-5'],
    ['exclusiveMinimum', { type: 'integer', exclusiveMinimum: 99 }, '100'],
    ['exclusiveMaximum', { type: 'integer', exclusiveMaximum: -99 }, '-100'],
    ['fractional bounds on an integer', { type: 'integer', minimum: 1.5, maximum: 2.5 }, '2'],
    ['number', { type: 'number' }, '0'],
    ['boolean', { type: 'boolean' }, 'true'],
    ['null', { type: 'null' }, 'null'],
    ['type union', { type: ['string', 'null'] }, '""'],
    ['enum', { enum: ['red', 'green'] }, '"red"'],
    ['const', { const: 42 }, '42'],
    ['enum with const', { enum: [1, 22, 333], const: 22 }, '22'],
    ['anyOf', { anyOf: [{ type: 'string', minLength: 4 }, { type: 'boolean' }] }, 'true'],
    ['allOf of one schema', { allOf: [{ type: 'null' }] }, 'null'],
    ['$ref to $defs', { $ref: '#/$defs/x', $defs: { x: { type: 'boolean' } } }, 'true'],
    ['$ref to definitions', { $ref: '#/definitions/x', definitions: { x: { const: 'ok' } } }, '"ok"'],
    ['$ref to a property', { type: 'object', properties: { a: { type: 'integer', minimum: 7 }, b: { $ref: '#/properties/a' } }, required: ['b'] }, '{"b":7}'],
    [
      'recursive $ref to the root',
      { type: 'object', properties: { v: { type: 'integer' }, next: { anyOf: [{ $ref: '#' }, { type: 'null' }] } }, required: ['v', 'next'] },
      '{"v":0,"next":null}',
    ],
    [
      'annotations',
      { $schema: 'https://json-schema.org/draft/2020-12/schema', $id: 'https://example.com/s.json', title: 't', description: 'd', default: 1, examples: [1], $comment: 'c', deprecated: false, readOnly: true, writeOnly: false, type: 'integer' },
      '0',
    ],
    ['true schema', true, '0'],
    ['empty schema', {}, '0'],
    ['type inferred from keywords', { properties: { a: { type: 'null' } }, required: ['a'] }, '{"a":null}'],
    ['required key missing from properties', { type: 'object', required: ['k'] }, '{"k":0}'],
    ['required key valued by additionalProperties', { type: 'object', properties: {}, required: ['k'], additionalProperties: { type: 'boolean' } }, '{"k":true}'],
    ['escaped key', { type: 'object', properties: { 'a"b': { type: 'null' } }, required: ['a"b'] }, '{"a\\"b":null}'],
    ['enum filtered by the rest of the schema', { type: 'string', enum: [1, 'xy', 'abcd'] }, '"xy"'],
    ['json_object', 'json_object', '{}'],
  ];

  it.each(cases)('%s', (_name, schema, shortest) => {
    const compiled = compileJsonSchema(schema);
    expect(compiled.minLength).toBe(new TextEncoder().encode(shortest).length);
    // the hand-written shortest document is itself valid (an independent check of the case)
    expect(ajvValidator(schema)(JSON.parse(shortest))).toBe(true);
  });

  it('keeps only the enum values that satisfy the rest of the schema', () => {
    const compiled = compileJsonSchema({ type: 'string', enum: ['a', 1, 'bb', null], maxLength: 1 });
    const literals = compiled.nodes.filter((n) => n.kind === 'literal' && n.base !== null);
    expect(literals).toHaveLength(1);
    expect(literals[0].kind === 'literal' && literals[0].values).toEqual(['a']);
  });
});

describe('compileJsonSchema: refusals name the keyword and where it is', () => {
  const unsupported: [string, unknown, string][] = [
    ['pattern', { type: 'object', properties: { zip: { type: 'string', pattern: '^[0-9]{5}$' } } }, 'json schema: "pattern" at /properties/zip is not supported'],
    ['format', { type: 'string', format: 'date' }, 'json schema: "format" at / is not supported'],
    ['multipleOf', { type: 'integer', multipleOf: 2 }, '"multipleOf" at /'],
    ['oneOf', { oneOf: [{ type: 'string' }, { type: 'null' }] }, '"oneOf" at /'],
    ['not', { not: { type: 'null' } }, '"not" at /'],
    ['if/then', { if: { type: 'string' }, then: { minLength: 1 } }, '"if" at /'],
    ['patternProperties', { type: 'object', patternProperties: { '^a': {} } }, '"patternProperties" at /'],
    ['propertyNames', { type: 'object', propertyNames: { maxLength: 3 } }, '"propertyNames" at /'],
    ['minProperties', { type: 'object', minProperties: 1 }, '"minProperties" at /'],
    ['maxProperties', { type: 'object', maxProperties: 1 }, '"maxProperties" at /'],
    ['uniqueItems', { type: 'array', items: { type: 'integer' }, uniqueItems: true }, '"uniqueItems" at /'],
    ['contains', { type: 'array', contains: { type: 'integer' } }, '"contains" at /'],
    ['prefixItems', { type: 'array', prefixItems: [{ type: 'integer' }] }, '"prefixItems" at /'],
    ['dependentRequired', { type: 'object', dependentRequired: { a: ['b'] } }, '"dependentRequired" at /'],
    ['unevaluatedProperties', { type: 'object', unevaluatedProperties: false }, '"unevaluatedProperties" at /'],
    ['nullable (OpenAPI)', { type: 'string', nullable: true }, '"nullable" at /'],
    ['a keyword deep inside $defs', { $ref: '#/$defs/a', $defs: { a: { type: 'array', items: { type: 'string', contentEncoding: 'base64' } } } }, '"contentEncoding" at /$defs/a/items'],
    ['a key with a slash in the pointer', { type: 'object', properties: { 'a/b': { type: 'string', pattern: 'x' } } }, '"pattern" at /properties/a~1b'],
    ['minimum on a number', { type: 'number', minimum: 0 }, '"minimum" at / is not supported for type "number"'],
    ['exclusiveMaximum on a union with number', { type: ['integer', 'number'], exclusiveMaximum: 3 }, '"exclusiveMaximum" at / is not supported for type "number"'],
    ['allOf of two schemas', { allOf: [{ type: 'string' }, { maxLength: 3 }] }, '"allOf" at / with more than one schema'],
    ['anyOf next to type', { type: 'object', anyOf: [{ required: ['a'] }] }, '"anyOf" at / next to "type"'],
    ['$ref next to enum', { $ref: '#/$defs/a', enum: [1], $defs: { a: {} } }, '"$ref" at / next to "enum"'],
    ['remote $ref', { type: 'object', properties: { a: { $ref: 'https://example.com/s.json' } } }, '"$ref" at /properties/a "https://example.com/s.json" is not supported'],
    ['$ref that does not resolve', { $ref: '#/$defs/missing' }, '"$ref" at / "#/$defs/missing" does not resolve'],
    ['$id below the root', { type: 'object', properties: { a: { $id: 'urn:a', type: 'string' } } }, '"$id" at /properties/a is not supported (only at the root)'],
    ['tuple items', { type: 'array', items: [{ type: 'string' }] }, '"items" at / as an array'],
    ['integer bounds beyond 15 digits', { type: 'integer', minimum: 1e16 }, '"minimum" at / beyond 15 digits'],
    ['bad type name', { type: 'float' }, '"type" at / "float" is not a JSON Schema type'],
    ['negative minLength', { type: 'string', minLength: -1 }, '"minLength" at / must be a non-negative integer'],
    ['empty enum', { enum: [] }, '"enum" at / must be a non-empty array'],
    [
      'required key outside properties with additionalProperties false',
      { type: 'object', properties: { a: {} }, required: ['b'], additionalProperties: false },
      '"required" at / names "b", which is not in properties while additionalProperties is false',
    ],
  ];

  it.each(unsupported)('%s', (_name, schema, message) => {
    expect(refusal(schema).message).toContain(message);
  });

  it.each([
    ['contradictory integer bounds', { type: 'integer', minimum: 5, maximum: 4 }],
    ['no enum value of the type', { type: 'string', enum: [1, 2] }],
    ['const and enum disjoint', { enum: [1, 2], const: 3 }],
    ['false', false],
    ['minLength above maxLength', { type: 'string', minLength: 4, maxLength: 3 }],
    ['minItems above maxItems', { type: 'array', minItems: 2, maxItems: 1 }],
    ['required property with the false schema', { type: 'object', properties: { a: false }, required: ['a'] }],
    ['recursion without a base case', { type: 'object', properties: { next: { $ref: '#' } }, required: ['next'] }],
    ['a $ref cycle', { $ref: '#/$defs/a', $defs: { a: { $ref: '#/$defs/b' }, b: { $ref: '#/$defs/a' } } }],
  ])('unsatisfiable: %s', (_name, schema) => {
    expect(refusal(schema).message).toBe('json schema: no JSON value satisfies the schema (as dvl writes JSON: see the supported keywords)');
  });

  it('refuses what is not a schema', () => {
    expect(refusal('json').message).toBe('json schema: the schema must be a JSON object or a boolean');
    expect(refusal([]).message).toBe('json schema: the schema must be a JSON object or a boolean');
    expect(refusal({ properties: { a: 3 } }).message).toContain('"properties" at / "a" must be a schema');
  });
});
