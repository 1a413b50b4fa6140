/**
 * Structured output on the command line: `--format json` (any JSON object) and `--json-schema FILE` for ask,
 * batch and chat, a batch line's "format" / "json_schema", chat's `/set format` and `/set json-schema`. The
 * library does the work (generate/json-schema/); here a file becomes a schema, with one-line errors: a file
 * that cannot be read or is not JSON is a bad input (exit 2), a schema dvl cannot follow a usage error
 * naming the keyword (exit 1).
 */
import fs from 'node:fs';
import type { AskResult, JsonSchemaInput } from '../ask.js';
import { checkJsonFormat } from '../generate/json-schema/index.js';
import { DvlError, inputError, usageError } from '../util/errors.js';

/** Any JSON object (OpenAI's json_object, Ollama's format "json"). */
export const ANY_JSON_OBJECT: JsonSchemaInput = 'json_object';

/** A JSON Schema file, parsed and checked (the schema compiles); `name` is how errors call it. */
export function readJsonSchemaFile(file: string, name = '--json-schema'): JsonSchemaInput {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' ? 'permission denied' : (error as Error).message;
    throw inputError(`${name} ${file}: cannot read it (${why})`, error);
  }
  let schema: unknown;
  try {
    schema = JSON.parse(text);
  } catch (error) {
    throw inputError(`${name} ${file}: not valid JSON (${(error as Error).message.split('\n')[0]})`, error);
  }
  return checkedSchema(schema, `${name} ${file}`);
}

/** A parsed schema value checked as dvl reads schemas (an object or a boolean that compiles); `name` prefixes errors. */
export function checkedSchema(schema: unknown, name: string): JsonSchemaInput {
  if (typeof schema !== 'boolean' && (typeof schema !== 'object' || schema === null || Array.isArray(schema))) {
    throw usageError(`${name}: a JSON Schema must be a JSON object (or true/false)`);
  }
  try {
    checkJsonFormat(schema as JsonSchemaInput);
  } catch (error) {
    if (error instanceof DvlError) throw usageError(`${name}: ${error.message.replace(/^json schema: /, '')}`);
    throw error;
  }
  return schema as JsonSchemaInput;
}

/** `--format` and `--json-schema` as one format (undefined: plain text); both at once is a usage error. */
export function formatOfFlags(flags: { format?: string; jsonSchema?: string }): JsonSchemaInput | undefined {
  if (flags.format !== undefined && flags.jsonSchema !== undefined) throw usageError('--format json and --json-schema cannot be used together: a schema already asks for JSON');
  if (flags.jsonSchema !== undefined) return readJsonSchemaFile(flags.jsonSchema);
  return flags.format === 'json' ? ANY_JSON_OBJECT : undefined;
}

/** The usage error for a budget the format's shortest document does not fit in (`budgetName`: "-n", "\"gen_length\""). */
export function checkFormatBudget(format: JsonSchemaInput | undefined, genLength: number, budgetName: string): void {
  if (format !== undefined) checkJsonFormat(format, genLength, budgetName);
}

/** The answer's finish reason as the APIs say it: 'length' when the gen length ran out (a JSON document unfinished), else 'stop'. */
export function finishReasonOf(result: Pick<AskResult, 'finishReason'>): 'stop' | 'length' {
  return result.finishReason === 'length' ? 'length' : 'stop';
}

/**
 * The warning for a plain-text answer whose JSON document the gen length cut short (null when it is complete or
 * no format was asked for): --json and --jsonl say so in finish_reason instead.
 */
export function cutShortWarning(result: Pick<AskResult, 'constraintComplete' | 'finishReason'>, genLength: number, budgetName = '-n'): string | null {
  if (result.constraintComplete !== false || result.finishReason !== 'length') return null;
  return `the JSON answer is cut short: ${budgetName} ${genLength} ran out before it closed (give a larger ${budgetName})`;
}
