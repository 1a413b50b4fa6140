/**
 * Structured output as the answering paths use it: a request's format (a JSON Schema, or 'json_object' for any
 * JSON object) checked where the request is made, and turned into a constraint where generation runs.
 *
 * - `checkJsonFormat` needs no tokenizer: it compiles the schema (a usage error naming an unsupported keyword)
 *   and, given the token budget, refuses one its shortest document does not fit in (checkTokenBudget). The
 *   CLI, the server's routes and the worker's caller run it before a model is loaded or a request queued.
 * - `JsonConstraintCache` belongs to one loaded model: the Vocabulary is built from its tokenizer.json on the
 *   first constrained request (once per model), and constraints are kept by the schema's JSON text, least
 *   recently used dropped first, so a schema asked again finds its token masks warm.
 */
import { checkTokenBudget } from '../constraint.js';
import { JsonConstraint } from './json-constraint.js';
import { compileJsonSchema, type JsonSchemaInput } from './schema-compile.js';
import { Vocabulary } from './vocabulary.js';

/**
 * Checks a requested format without a model: the schema compiles, and `genLength` (when given) fits its
 * shortest document. Returns the tokens that document needs. Throws usage errors (exit 1, HTTP 400).
 */
export function checkJsonFormat(format: JsonSchemaInput, genLength?: number, budgetName?: string): number {
  const compiled = compileJsonSchema(format);
  if (genLength !== undefined) checkTokenBudget({ minTokens: compiled.minLength }, genLength, budgetName);
  return compiled.minLength;
}

/** The constraints of one model (one tokenizer): its vocabulary, built once, and compiled schemas by their text. */
export class JsonConstraintCache {
  private vocabulary: Vocabulary | undefined;
  private readonly constraints = new Map<string, JsonConstraint>();

  /**
   * `tokenizerJson`: reads the model's parsed tokenizer.json (called once, on the first request); `eosTokenId`:
   * the model's EOS; `maxEntries`: schemas kept (each holds the token masks it has computed).
   */
  constructor(
    private readonly tokenizerJson: () => unknown,
    private readonly eosTokenId: number,
    private readonly maxEntries = 8,
  ) {}

  /** The constraint for a format (a usage error for an unsupported schema; a model error for a tokenizer it cannot use). */
  get(format: JsonSchemaInput): JsonConstraint {
    const key = JSON.stringify(format);
    const known = this.constraints.get(key);
    if (known) {
      this.constraints.delete(key);
      this.constraints.set(key, known);
      return known;
    }
    // Compiled first: an unsupported schema is refused without building the vocabulary.
    const schema = compileJsonSchema(format);
    this.vocabulary ??= Vocabulary.fromTokenizerJson(this.tokenizerJson(), this.eosTokenId);
    const constraint = new JsonConstraint(schema, this.vocabulary);
    this.constraints.set(key, constraint);
    for (const oldest of this.constraints.keys()) {
      if (this.constraints.size <= this.maxEntries) break;
      this.constraints.delete(oldest);
    }
    return constraint;
  }

  /** Schemas held now. */
  get size(): number {
    return this.constraints.size;
  }
}

export type { JsonSchemaInput };
