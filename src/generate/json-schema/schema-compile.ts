/**
 * JSON Schema -> the graph the constrained decoder walks (schema-graph.ts), refusing up front what it cannot
 * guarantee: a keyword that would be silently ignored could let an invalid answer through, so every keyword
 * is either enforced, a pure annotation, or refused with its name and JSON pointer.
 *
 * Supported: type (one or a list), enum, const, properties, required, additionalProperties, items,
 * minItems, maxItems, minLength, maxLength, minimum / maximum / exclusiveMinimum / exclusiveMaximum (integers
 * only), anyOf, allOf with a single schema, $ref to local pointers (#, #/$defs/..., #/definitions/...,
 * recursion included), $defs / definitions; annotations (title, description, $schema, $id at the root,
 * $comment, default, examples, deprecated, readOnly, writeOnly) are accepted and ignored. The string
 * 'json_object' means any JSON object (OpenAI's json_object, Ollama's format "json").
 *
 * What is written (always valid against the schema, but not every valid document can be written):
 * - objects with `properties` (or `required`): only the declared keys, in declaration order (then required
 *   keys missing from `properties`, with values of additionalProperties), optional ones may be skipped;
 *   additionalProperties (absent, true or a schema) does not add keys. Without properties and required, any
 *   keys (values: additionalProperties, or any value). `properties` keys are in JS object order (JSON.parse
 *   puts integer-like keys first);
 * - without `type`, the types whose keywords appear (e.g. `properties` -> object); none -> any value;
 * - enum/const values are written as JSON.stringify writes them (compact), and only those that satisfy the
 *   rest of the schema;
 * - integers: at most 15 digits, no "-0"; numbers: at most 15 integer and 15 fraction digits, exponent of at
 *   most 2 digits (finite doubles only).
 * `anyOf`, `allOf` and `$ref` must stand alone (annotations aside): merging them with sibling keywords is
 * refused rather than approximated.
 */
import { usageError } from '../../util/errors.js';
import {
  MAX_INTEGER_DIGITS,
  MAX_WRITTEN_INTEGER,
  type CompiledSchema,
  type NodeId,
  type ObjectTables,
  type PropertySpec,
  type SchemaNode,
  type UnionId,
} from './schema-graph.js';
import { deepEqualJson, valueSatisfies } from './schema-values.js';

/** The "any JSON object" mode. */
export const JSON_OBJECT_MODE = 'json_object';

export type JsonSchemaInput = boolean | Record<string, unknown> | typeof JSON_OBJECT_MODE;

const ANNOTATIONS = new Set(['title', 'description', '$schema', '$comment', 'default', 'examples', 'deprecated', 'readOnly', 'writeOnly']);
const CONTAINERS = new Set(['$defs', 'definitions']);
const COMBINATORS = ['$ref', 'anyOf', 'allOf'] as const;
const OBJECT_KEYWORDS = ['properties', 'required', 'additionalProperties'];
const ARRAY_KEYWORDS = ['items', 'minItems', 'maxItems'];
const STRING_KEYWORDS = ['minLength', 'maxLength'];
const BOUND_KEYWORDS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'];
const TYPED_KEYWORDS = new Set(['type', 'enum', 'const', ...OBJECT_KEYWORDS, ...ARRAY_KEYWORDS, ...STRING_KEYWORDS, ...BOUND_KEYWORDS]);
const TYPE_NAMES = ['object', 'array', 'string', 'integer', 'number', 'boolean', 'null'] as const;
type TypeName = (typeof TYPE_NAMES)[number];

const encoder = new TextEncoder();

const escapeToken = (token: string) => token.replace(/~/g, '~0').replace(/\//g, '~1');
const child = (pointer: string, ...tokens: (string | number)[]) => pointer + tokens.map((t) => '/' + escapeToken(String(t))).join('');
const where = (pointer: string) => pointer || '/';

function schemaError(keyword: string, pointer: string, problem: string): never {
  throw usageError(`json schema: "${keyword}" at ${where(pointer)} ${problem}`);
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isSchema = (v: unknown): v is boolean | Record<string, unknown> => typeof v === 'boolean' || isPlainObject(v);

/** The JSON text of a value, or undefined when it is not JSON (undefined, functions, non-finite numbers). */
function jsonText(value: unknown): string | undefined {
  if (typeof value === 'number' && !Number.isFinite(value)) return undefined;
  if (value === null || typeof value === 'boolean' || typeof value === 'number' || typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) {
    const parts = value.map(jsonText);
    return parts.includes(undefined) ? undefined : `[${parts.join(',')}]`;
  }
  if (isPlainObject(value)) {
    const parts: string[] = [];
    for (const [k, v] of Object.entries(value)) {
      const t = jsonText(v);
      if (t === undefined) return undefined;
      parts.push(`${JSON.stringify(k)}:${t}`);
    }
    return `{${parts.join(',')}}`;
  }
  return undefined;
}

function nonNegativeInteger(schema: Record<string, unknown>, keyword: string, pointer: string): number | undefined {
  const v = schema[keyword];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) schemaError(keyword, pointer, 'must be a non-negative integer');
  return v;
}

function finiteNumber(schema: Record<string, unknown>, keyword: string, pointer: string): number | undefined {
  const v = schema[keyword];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) schemaError(keyword, pointer, 'must be a number');
  return v;
}

const digits = (n: number) => String(n).length;

/** Bytes of the shortest integer text in [lo, hi]. */
function shortestInteger(lo: number, hi: number): number {
  if (lo > hi) return Infinity;
  if (lo <= 0 && hi >= 0) return 1;
  return lo > 0 ? digits(lo) : 1 + digits(-hi);
}

class Compiler {
  readonly nodes: SchemaNode[] = [];
  /** Per union: concrete member nodes and member unions ($ref, anyOf, a type list with any). */
  readonly unions: { nodes: NodeId[]; unions: UnionId[] }[] = [];
  private readonly byPointer = new Map<string, UnionId>();
  private anyUnion: UnionId | undefined;

  constructor(private readonly root: unknown) {}

  private newUnion(): UnionId {
    this.unions.push({ nodes: [], unions: [] });
    return this.unions.length - 1;
  }

  private addNode(union: UnionId, node: SchemaNode): void {
    this.nodes.push(node);
    this.unions[union].nodes.push(this.nodes.length - 1);
  }

  /** Any JSON value (the `true` / `{}` schema): built once, recursive through its object and array. */
  any(): UnionId {
    if (this.anyUnion !== undefined) return this.anyUnion;
    const u = this.newUnion();
    this.anyUnion = u;
    this.addNode(u, this.anyObjectNode(u));
    this.addNode(u, { kind: 'array', items: u, minItems: 0, maxItems: Infinity });
    this.addNode(u, { kind: 'string', minLength: 0, maxLength: Infinity });
    this.addNode(u, { kind: 'number' });
    this.addNode(u, literalNode([true, false, null], null));
    return u;
  }

  private anyObjectNode(values: UnionId): SchemaNode {
    return { kind: 'object', properties: [], freeValues: values, semantics: { properties: new Map(), required: [], additional: true } };
  }

  /** Any JSON object (json_object mode). */
  anyObject(): UnionId {
    const u = this.newUnion();
    this.addNode(u, this.anyObjectNode(this.any()));
    return u;
  }

  /** The union of the schema at `pointer` (memoized by pointer, so `$ref` recursion ends). */
  compile(schema: unknown, pointer: string): UnionId {
    const known = this.byPointer.get(pointer);
    if (known !== undefined) return known;
    if (schema === true) {
      const any = this.any();
      this.byPointer.set(pointer, any);
      return any;
    }
    const u = this.newUnion();
    this.byPointer.set(pointer, u);
    if (schema === false) return u; // no value
    if (!isPlainObject(schema)) throw usageError(`json schema: the schema at ${where(pointer)} must be an object or a boolean`);
    this.checkKeywords(schema, pointer);
    const combinator = COMBINATORS.find((k) => k in schema);
    if (combinator) {
      const sibling = Object.keys(schema).find((k) => TYPED_KEYWORDS.has(k) || (COMBINATORS as readonly string[]).includes(k) && k !== combinator);
      if (sibling) schemaError(combinator, pointer, `next to "${sibling}" is not supported`);
      this.compileCombinator(u, schema, combinator, pointer);
      return u;
    }
    if ('enum' in schema || 'const' in schema) {
      const base = this.newUnion();
      this.compileTyped(base, schema, pointer);
      this.addNode(u, literalNode(this.literalValues(schema, pointer), base));
      return u;
    }
    this.compileTyped(u, schema, pointer);
    return u;
  }

  /** Every keyword is known; values of the known ones are checked where they are used. */
  private checkKeywords(schema: Record<string, unknown>, pointer: string): void {
    for (const key of Object.keys(schema)) {
      if (ANNOTATIONS.has(key) || TYPED_KEYWORDS.has(key) || (COMBINATORS as readonly string[]).includes(key)) continue;
      if (CONTAINERS.has(key)) {
        if (!isPlainObject(schema[key])) schemaError(key, pointer, 'must be an object');
        continue;
      }
      if (key === '$id') {
        if (pointer !== '') schemaError(key, pointer, 'is not supported (only at the root)');
        continue;
      }
      schemaError(key, pointer, 'is not supported');
    }
  }

  private compileCombinator(u: UnionId, schema: Record<string, unknown>, keyword: (typeof COMBINATORS)[number], pointer: string): void {
    const value = schema[keyword];
    if (keyword === '$ref') {
      if (typeof value !== 'string') schemaError('$ref', pointer, 'must be a string');
      const target = this.resolve(value, pointer);
      this.unions[u].unions.push(this.compile(target.schema, target.pointer));
      return;
    }
    if (!Array.isArray(value) || value.length === 0) schemaError(keyword, pointer, 'must be a non-empty array of schemas');
    if (keyword === 'allOf' && value.length > 1) schemaError('allOf', pointer, 'with more than one schema is not supported');
    value.forEach((s, i) => {
      if (!isSchema(s)) schemaError(keyword, pointer, 'must be a non-empty array of schemas');
      this.unions[u].unions.push(this.compile(s, child(pointer, keyword, i)));
    });
  }

  /** A local reference: '#' or '#/json/pointer' (percent-decoded, ~0 ~1 unescaped). */
  private resolve(ref: string, pointer: string): { schema: unknown; pointer: string } {
    if (ref !== '#' && !ref.startsWith('#/')) schemaError('$ref', pointer, `${JSON.stringify(ref)} is not supported (only local references #/...)`);
    let tokens: string[];
    try {
      tokens = ref === '#' ? [] : ref.slice(2).split('/').map((t) => decodeURIComponent(t).replace(/~1/g, '/').replace(/~0/g, '~'));
    } catch {
      schemaError('$ref', pointer, `${JSON.stringify(ref)} is not a valid pointer`);
    }
    let target: unknown = this.root;
    for (const token of tokens) {
      if (Array.isArray(target) && /^(0|[1-9][0-9]*)$/.test(token) && Number(token) < target.length) target = target[Number(token)];
      else if (isPlainObject(target) && Object.prototype.hasOwnProperty.call(target, token)) target = target[token];
      else schemaError('$ref', pointer, `${JSON.stringify(ref)} does not resolve`);
    }
    if (!isSchema(target)) schemaError('$ref', pointer, `${JSON.stringify(ref)} is not a schema`);
    return { schema: target, pointer: child('', ...tokens) };
  }

  private literalValues(schema: Record<string, unknown>, pointer: string): unknown[] {
    let values: unknown[] | undefined;
    if ('enum' in schema) {
      const e = schema.enum;
      if (!Array.isArray(e) || e.length === 0) schemaError('enum', pointer, 'must be a non-empty array');
      for (const v of e) if (jsonText(v) === undefined) schemaError('enum', pointer, 'must hold JSON values');
      values = e;
    }
    if ('const' in schema) {
      if (jsonText(schema.const) === undefined) schemaError('const', pointer, 'must be a JSON value');
      values = values === undefined ? [schema.const] : values.filter((v) => deepEqualJson(v, schema.const));
    }
    return values ?? [];
  }

  /** The typed part of a schema (type and the keywords of each type) as nodes of union `u`. */
  private compileTyped(u: UnionId, schema: Record<string, unknown>, pointer: string): void {
    const types = this.types(schema, pointer);
    if (types === 'any') {
      this.unions[u].unions.push(this.any());
      return;
    }
    for (const type of types) {
      switch (type) {
        case 'object':
          this.addNode(u, this.objectNode(schema, pointer));
          break;
        case 'array':
          this.addNode(u, this.arrayNode(schema, pointer));
          break;
        case 'string': {
          const minLength = nonNegativeInteger(schema, 'minLength', pointer) ?? 0;
          const maxLength = nonNegativeInteger(schema, 'maxLength', pointer) ?? Infinity;
          this.addNode(u, { kind: 'string', minLength, maxLength });
          break;
        }
        case 'integer':
          this.addNode(u, this.integerNode(schema, pointer));
          break;
        case 'number': {
          const bound = BOUND_KEYWORDS.find((k) => k in schema);
          if (bound) schemaError(bound, pointer, 'is not supported for type "number" (only for "integer")');
          this.addNode(u, { kind: 'number' });
          break;
        }
        case 'boolean':
          this.addNode(u, literalNode([true, false], null));
          break;
        case 'null':
          this.addNode(u, literalNode([null], null));
          break;
      }
    }
    // Keyword values are checked even where their type is not written (a broken schema is refused).
    if (!types.includes('string')) {
      nonNegativeInteger(schema, 'minLength', pointer);
      nonNegativeInteger(schema, 'maxLength', pointer);
    }
    if (!types.includes('array')) {
      nonNegativeInteger(schema, 'minItems', pointer);
      nonNegativeInteger(schema, 'maxItems', pointer);
      if ('items' in schema) this.itemsUnion(schema, pointer);
    }
    if (!types.includes('object') && (OBJECT_KEYWORDS.some((k) => k in schema))) this.objectNode(schema, pointer);
    if (!types.includes('integer')) for (const k of BOUND_KEYWORDS) finiteNumber(schema, k, pointer);
  }

  /** The `type` list, or the types whose keywords appear; 'any' when neither. */
  private types(schema: Record<string, unknown>, pointer: string): TypeName[] | 'any' {
    const t = schema.type;
    if (t !== undefined) {
      const list = Array.isArray(t) ? t : [t];
      if (list.length === 0) schemaError('type', pointer, 'must not be empty');
      for (const name of list) {
        if (!(TYPE_NAMES as readonly unknown[]).includes(name)) schemaError('type', pointer, `${JSON.stringify(name)} is not a JSON Schema type`);
      }
      if (new Set(list).size !== list.length) schemaError('type', pointer, 'must not repeat a type');
      return list as TypeName[];
    }
    const inferred: TypeName[] = [];
    if (OBJECT_KEYWORDS.some((k) => k in schema)) inferred.push('object');
    if (ARRAY_KEYWORDS.some((k) => k in schema)) inferred.push('array');
    if (STRING_KEYWORDS.some((k) => k in schema)) inferred.push('string');
    if (BOUND_KEYWORDS.some((k) => k in schema)) inferred.push('integer');
    return inferred.length > 0 ? inferred : 'any';
  }

  private itemsUnion(schema: Record<string, unknown>, pointer: string): UnionId {
    const items = schema.items;
    if (items === undefined) return this.any();
    if (Array.isArray(items)) schemaError('items', pointer, 'as an array (tuple form) is not supported');
    if (!isSchema(items)) schemaError('items', pointer, 'must be a schema');
    return this.compile(items, child(pointer, 'items'));
  }

  private arrayNode(schema: Record<string, unknown>, pointer: string): SchemaNode {
    const minItems = nonNegativeInteger(schema, 'minItems', pointer) ?? 0;
    const maxItems = nonNegativeInteger(schema, 'maxItems', pointer) ?? Infinity;
    return { kind: 'array', items: this.itemsUnion(schema, pointer), minItems, maxItems };
  }

  private objectNode(schema: Record<string, unknown>, pointer: string): SchemaNode {
    const props = schema.properties;
    if (props !== undefined && !isPlainObject(props)) schemaError('properties', pointer, 'must be an object');
    const required = schema.required;
    if (required !== undefined && (!Array.isArray(required) || required.some((r) => typeof r !== 'string') || new Set(required).size !== required.length)) {
      schemaError('required', pointer, 'must be an array of distinct strings');
    }
    const requiredKeys = (required ?? []) as string[];
    const ap = schema.additionalProperties;
    if (ap !== undefined && !isSchema(ap)) schemaError('additionalProperties', pointer, 'must be a schema');
    const additional: boolean | UnionId = ap === undefined || ap === true ? true : ap === false ? false : this.compile(ap, child(pointer, 'additionalProperties'));

    const semanticsProps = new Map<string, UnionId>();
    const properties: PropertySpec[] = [];
    for (const [key, value] of Object.entries(props ?? {})) {
      if (!isSchema(value)) schemaError('properties', pointer, `"${key}" must be a schema`);
      const union = this.compile(value, child(pointer, 'properties', key));
      semanticsProps.set(key, union);
      properties.push({ key, text: encoder.encode(JSON.stringify(key)), value: union, required: requiredKeys.includes(key) });
    }
    for (const key of requiredKeys) {
      if (semanticsProps.has(key)) continue;
      if (additional === false) schemaError('required', pointer, `names "${key}", which is not in properties while additionalProperties is false (no object can satisfy it)`);
      properties.push({ key, text: encoder.encode(JSON.stringify(key)), value: additional === true ? this.any() : additional, required: true });
    }
    const semantics = { properties: semanticsProps, required: requiredKeys, additional };
    const free = props === undefined && required === undefined && additional !== false;
    return { kind: 'object', properties: free ? [] : properties, freeValues: free ? (additional === true ? this.any() : additional) : null, semantics };
  }

  private integerNode(schema: Record<string, unknown>, pointer: string): SchemaNode {
    const minimum = finiteNumber(schema, 'minimum', pointer);
    const maximum = finiteNumber(schema, 'maximum', pointer);
    const exclusiveMinimum = finiteNumber(schema, 'exclusiveMinimum', pointer);
    const exclusiveMaximum = finiteNumber(schema, 'exclusiveMaximum', pointer);
    let lo = -MAX_WRITTEN_INTEGER;
    let hi = MAX_WRITTEN_INTEGER;
    if (minimum !== undefined) lo = Math.max(lo, Math.ceil(minimum));
    if (exclusiveMinimum !== undefined) lo = Math.max(lo, Math.floor(exclusiveMinimum) + 1);
    if (maximum !== undefined) hi = Math.min(hi, Math.floor(maximum));
    if (exclusiveMaximum !== undefined) hi = Math.min(hi, Math.ceil(exclusiveMaximum) - 1);
    for (const [keyword, bound] of [['minimum', lo], ['exclusiveMinimum', lo], ['maximum', hi], ['exclusiveMaximum', hi]] as const) {
      if (keyword in schema && Math.abs(bound) > MAX_WRITTEN_INTEGER) {
        schemaError(keyword, pointer, `beyond ${MAX_INTEGER_DIGITS} digits is not supported`);
      }
    }
    return { kind: 'integer', lo, hi, minimum, maximum, exclusiveMinimum, exclusiveMaximum };
  }

  /** Concrete nodes of a union, through member unions; a cycle of unions adds nothing. */
  flatten(u: UnionId): NodeId[] {
    const out = new Set<NodeId>();
    const seen = new Set<UnionId>();
    const visit = (x: UnionId) => {
      if (seen.has(x)) return;
      seen.add(x);
      for (const n of this.unions[x].nodes) out.add(n);
      for (const m of this.unions[x].unions) visit(m);
    };
    visit(u);
    return [...out].sort((a, b) => a - b);
  }
}

function literalNode(values: unknown[], base: UnionId | null): SchemaNode {
  return { kind: 'literal', values, texts: values.map((v) => encoder.encode(jsonText(v)!)), base };
}

/**
 * Compiles a JSON Schema (a parsed JSON object or boolean) or 'json_object' (any JSON object). Throws a
 * usage error naming the keyword and its JSON pointer for anything unsupported or unsatisfiable.
 */
export function compileJsonSchema(input: unknown): CompiledSchema {
  const compiler = new Compiler(input === JSON_OBJECT_MODE ? {} : input);
  let root: UnionId;
  if (input === JSON_OBJECT_MODE) root = compiler.anyObject();
  else if (isSchema(input)) root = compiler.compile(input, '');
  else throw usageError('json schema: the schema must be a JSON object or a boolean');

  const nodes = compiler.nodes;
  const rawAlternatives = compiler.unions.map((_, u) => compiler.flatten(u));

  // enum/const: keep the values that satisfy the rest of their schema.
  for (const node of nodes) {
    if (node.kind !== 'literal' || node.base === null) continue;
    const base = node.base;
    const kept = node.values.map((v, i) => [v, node.texts[i]] as const).filter(([v]) => valueSatisfies(v, base, nodes, rawAlternatives));
    node.values = kept.map(([v]) => v);
    node.texts = kept.map(([, t]) => t);
  }

  // Shortest documents: a fixpoint from Infinity (recursive schemas converge like shortest paths).
  const nodeMin = new Float64Array(nodes.length).fill(Infinity);
  const unionMin = new Float64Array(compiler.unions.length).fill(Infinity);
  const propCost = (p: PropertySpec) => p.text.length + 1 + unionMin[p.value];
  for (let changed = true; changed; ) {
    changed = false;
    for (let u = 0; u < unionMin.length; u++) {
      let m = Infinity;
      for (const n of rawAlternatives[u]) m = Math.min(m, nodeMin[n]);
      if (m < unionMin[u]) {
        unionMin[u] = m;
        changed = true;
      }
    }
    for (let n = 0; n < nodes.length; n++) {
      const node = nodes[n];
      let m: number;
      switch (node.kind) {
        case 'object': {
          if (node.freeValues !== null) m = 2;
          else {
            const req = node.properties.filter((p) => p.required);
            m = 2 + req.reduce((acc, p) => acc + propCost(p), 0) + Math.max(0, req.length - 1);
          }
          break;
        }
        case 'array':
          m = node.minItems > node.maxItems ? Infinity : node.minItems === 0 ? 2 : 2 + node.minItems * unionMin[node.items] + node.minItems - 1;
          break;
        case 'string':
          m = node.minLength > node.maxLength ? Infinity : 2 + node.minLength;
          break;
        case 'integer':
          m = shortestInteger(node.lo, node.hi);
          break;
        case 'number':
          m = 1;
          break;
        case 'literal':
          m = node.texts.reduce((acc, t) => Math.min(acc, t.length), Infinity);
          break;
      }
      if (m < nodeMin[n]) {
        nodeMin[n] = m;
        changed = true;
      }
    }
  }
  const minLength = unionMin[root];
  if (minLength === Infinity) throw usageError('json schema: no JSON value satisfies the schema (as dvl writes JSON: see the supported keywords)');

  const alternatives = rawAlternatives.map((list) => Int32Array.from(list.filter((n) => nodeMin[n] < Infinity)));
  const objectTables = nodes.map((node) => (node.kind === 'object' && node.freeValues === null ? objectTables_(node.properties, propCost) : undefined));
  return { nodes, alternatives, unionMinLength: unionMin, nodeMinLength: nodeMin, objectTables, root, minLength };
}

function objectTables_(props: PropertySpec[], cost: (p: PropertySpec) => number): ObjectTables {
  const n = props.length;
  const propCost = Float64Array.from(props, cost);
  const closeAfter = new Float64Array(n + 1);
  const commaCost = new Float64Array(n + 1);
  const lastCandidate = new Int32Array(n + 1);
  closeAfter[n] = 1;
  commaCost[n] = Infinity;
  lastCandidate[n] = n - 1;
  let requiredSum = 0; // sum of propCost of required keys >= i
  let requiredCount = 0;
  let cheapestOptional = Infinity; // min propCost over keys >= i
  let nextRequired = -1;
  for (let i = n - 1; i >= 0; i--) {
    if (props[i].required) {
      requiredSum += propCost[i];
      requiredCount++;
      nextRequired = i;
    }
    cheapestOptional = Math.min(cheapestOptional, propCost[i]);
    closeAfter[i] = requiredSum + requiredCount + 1;
    commaCost[i] = requiredCount > 0 ? requiredSum + requiredCount - 1 + 1 : cheapestOptional + 1;
    lastCandidate[i] = nextRequired >= 0 ? nextRequired : n - 1;
  }
  const closeOpen = requiredCount === 0 ? 1 : requiredSum + requiredCount - 1 + 1;
  return { propCost, closeAfter, closeOpen, commaCost, lastCandidate };
}
