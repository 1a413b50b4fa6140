/**
 * Structured output: constrain generation to JSON documents valid against a JSON Schema. The entry points
 * for the CLI and the server; see json-constraint.ts for the guarantees and schema-compile.ts for the
 * supported keywords and what is written.
 *
 *   const vocabulary = Vocabulary.fromTokenizerJson(tokenizerJson, eosId); // once per tokenizer
 *   const constraint = compileJsonConstraint(schema, vocabulary);          // usage error if unsupported
 *   checkTokenBudget(constraint, genLength, '-n');                          // usage error if too small
 *   const result = await generate({ ...options, constraint });             // result.constraintComplete
 */
export { compileJsonConstraint, JsonConstraint, type JsonConstraintOptions, type JsonState } from './json-constraint.js';
export { compileJsonSchema, JSON_OBJECT_MODE, type JsonSchemaInput } from './schema-compile.js';
export type { CompiledSchema } from './schema-graph.js';
export { Vocabulary } from './vocabulary.js';
export { checkJsonFormat, JsonConstraintCache } from './constraint-cache.js';
export { checkTokenBudget, type TokenConstraint } from '../constraint.js';
