/**
 * Does a JSON value satisfy a compiled schema, with JSON Schema's meaning (not the narrower set of
 * documents the automaton writes)? Used once per enum/const value at compile time: such a value is written
 * verbatim, so it only needs to be *valid*, and a schema like {type: "string", enum: ["a", 1]} must drop 1.
 */
import type { NodeId, SchemaNode, UnionId } from './schema-graph.js';

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Length in code points, as JSON Schema (and ajv) count it: a surrogate pair is one. */
export function codePointLength(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    n++;
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
  }
  return n;
}

export function valueSatisfies(value: unknown, union: UnionId, nodes: readonly SchemaNode[], alternatives: readonly NodeId[][]): boolean {
  const inUnion = (v: unknown, u: UnionId): boolean => alternatives[u].some((n) => inNode(v, nodes[n]));
  const inNode = (v: unknown, node: SchemaNode): boolean => {
    switch (node.kind) {
      case 'object': {
        if (!isPlainObject(v)) return false;
        const { properties, required, additional } = node.semantics;
        if (!required.every((k) => Object.prototype.hasOwnProperty.call(v, k))) return false;
        return Object.entries(v).every(([k, x]) => {
          const p = properties.get(k);
          if (p !== undefined) return inUnion(x, p);
          return additional === true ? true : additional === false ? false : inUnion(x, additional);
        });
      }
      case 'array':
        return Array.isArray(v) && v.length >= node.minItems && v.length <= node.maxItems && v.every((x) => inUnion(x, node.items));
      case 'string': {
        if (typeof v !== 'string') return false;
        const n = codePointLength(v);
        return n >= node.minLength && n <= node.maxLength;
      }
      case 'integer':
        return (
          typeof v === 'number' &&
          Number.isInteger(v) &&
          (node.minimum === undefined || v >= node.minimum) &&
          (node.maximum === undefined || v <= node.maximum) &&
          (node.exclusiveMinimum === undefined || v > node.exclusiveMinimum) &&
          (node.exclusiveMaximum === undefined || v < node.exclusiveMaximum)
        );
      case 'number':
        return typeof v === 'number' && Number.isFinite(v);
      case 'literal':
        return node.values.some((x) => deepEqualJson(x, v)) && (node.base === null || inUnion(v, node.base));
    }
  };
  return inUnion(value, union);
}

/** JSON equality as enum/const use it (object key order does not matter). */
export function deepEqualJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqualJson(x, b[i]));
  if (isPlainObject(a) && isPlainObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqualJson(a[k], b[k]));
  }
  return false;
}
