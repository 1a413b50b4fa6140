/**
 * The compiled form of a JSON Schema: a graph the byte automaton (json-automaton.ts) walks, with the
 * shortest-document lengths the budget rule needs. Produced by schema-compile.ts, read-only afterwards.
 *
 * A schema location compiles to a *union*: the set of concrete *nodes* a value there may take (a `type`
 * list, `anyOf` and `$ref` all become unions; recursion through `$ref` is a cycle in the graph). Each node
 * is one JSON shape the automaton knows how to write: object, array, string, integer, number, or a set of
 * literal texts (enum, const, true/false, null).
 */

export type NodeId = number;
export type UnionId = number;

/** One declared key of an object, in the order it is written. */
export interface PropertySpec {
  key: string;
  /** The key's JSON text (JSON.stringify, quotes included) as UTF-8: exactly what is written. */
  text: Uint8Array;
  value: UnionId;
  required: boolean;
}

/** What an object schema means, for checking literal values (enum/const) against it. */
export interface ObjectSemantics {
  properties: ReadonlyMap<string, UnionId>;
  required: readonly string[];
  /** false: no other key; true: any other key with any value; a union: other keys' values. */
  additional: boolean | UnionId;
}

export type SchemaNode =
  | {
      kind: 'object';
      /** Keys written, in order (used unless `freeValues` is set). */
      properties: PropertySpec[];
      /** Any key may be written, with values of this union (no `properties`/`required` given); else null. */
      freeValues: UnionId | null;
      semantics: ObjectSemantics;
    }
  | { kind: 'array'; items: UnionId; minItems: number; maxItems: number }
  /** Lengths in code points (JSON Schema's count); maxLength Infinity = none. */
  | { kind: 'string'; minLength: number; maxLength: number }
  | {
      kind: 'integer';
      /** Inclusive bounds the automaton writes within (at most 15 digits either way). */
      lo: number;
      hi: number;
      /** The schema's own bounds, for checking literal values. */
      minimum?: number;
      maximum?: number;
      exclusiveMinimum?: number;
      exclusiveMaximum?: number;
    }
  | { kind: 'number' }
  | {
      kind: 'literal';
      /** The allowed values (enum/const, or true/false/null), those that also satisfy `base`. */
      values: unknown[];
      /** JSON.stringify of each value, as UTF-8: the only texts written. */
      texts: Uint8Array[];
      /** The rest of the schema the values must satisfy (null: none). */
      base: UnionId | null;
    };

/** Per object node with declared keys: costs (bytes) of the shortest way to finish it from each point. */
export interface ObjectTables {
  /** Bytes of key j written completely with its shortest value: key text + ':' + value. */
  propCost: Float64Array;
  /** After a value, next candidate key index i (0..n): bytes to close ("," + required keys + "}"). */
  closeAfter: Float64Array;
  /** Right after '{': bytes to close. */
  closeOpen: number;
  /** After a ',' with next candidate i: bytes to finish (at least one more key). */
  commaCost: Float64Array;
  /** Keys j with i <= j <= lastCandidate[i] may be written next (a required key cannot be skipped). */
  lastCandidate: Int32Array;
}

/** Integers are written with at most this many digits (safe integers; no float rounding in JSON.parse). */
export const MAX_INTEGER_DIGITS = 15;
export const MAX_WRITTEN_INTEGER = 10 ** MAX_INTEGER_DIGITS - 1;

export interface CompiledSchema {
  readonly nodes: readonly SchemaNode[];
  /** Per union: its concrete nodes that have a finite document (the only ones ever started). */
  readonly alternatives: readonly Int32Array[];
  /** Per union / node: bytes of the shortest document (Infinity: none). */
  readonly unionMinLength: Float64Array;
  readonly nodeMinLength: Float64Array;
  /** Per node: tables for objects with declared keys (undefined otherwise). */
  readonly objectTables: readonly (ObjectTables | undefined)[];
  readonly root: UnionId;
  /** Bytes of the shortest document of the whole schema. */
  readonly minLength: number;
}
