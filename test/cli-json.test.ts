/**
 * Structured output through the real binary on a tiny random fp32 model: `dvl ask --format json` and
 * `--json-schema FILE` answer JSON that parses and validates (ajv) for several schemas; schemas dvl cannot
 * follow, unreadable files, a -n too small for the schema and conflicting flags fail in one line with their
 * exit codes; `dvl batch` lines take "format" / "json_schema" (bad ones are reported in place); `dvl chat`'s
 * /set format and /set json-schema change the answers' format, and /show says which.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkJsonFormat } from '../src/generate/json-schema/index.js';
import { runDvl } from './helpers/cli.js';
import { ajvValidator, SCHEMAS } from './helpers/json-schemas.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-cli-json-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home') };
const OPTS = ['--model', ckpt, '--dtype', 'fp32', '--steps', '4', '--threads', '1', '-q'];
const IMAGE = path.resolve('fixtures/images/chelsea.png');
const PIXELS = ['--min-pixels', '784', '--max-pixels', '3136'];

const RECEIPT = {
  type: 'object',
  properties: {
    store: { type: 'string', maxLength: 16 },
    total_cents: { type: 'integer', minimum: 0, maximum: 100000 },
    paid: { enum: ['cash', 'card'] },
    items: { type: 'array', items: { type: 'object', properties: { name: { type: 'string', maxLength: 8 }, qty: { type: 'integer', minimum: 1, maximum: 9 } }, required: ['name', 'qty'], additionalProperties: false }, maxItems: 2 },
  },
  required: ['store', 'total_cents', 'paid', 'items'],
  additionalProperties: false,
};
/** The set's schemas that are objects or arrays (the ones a file would hold), and the receipt. */
const FILE_SCHEMAS = [{ name: 'receipt', schema: RECEIPT }, ...SCHEMAS.filter((s) => typeof s.schema === 'object' && ['nested objects', 'array with bounds', 'type union', 'anyOf of two objects', '$ref recursion'].includes(s.name))];

/** A gen length with room beyond the schema's shortest document. */
const budget = (schema: unknown) => checkJsonFormat(schema as never) + 40;

function schemaFile(name: string, schema: unknown): string {
  const file = path.join(work, `${name.replace(/\W+/g, '-')}.schema.json`);
  fs.writeFileSync(file, JSON.stringify(schema));
  return file;
}

interface AskJson {
  text: string;
  finish_reason: string;
  stopped_at_eos: boolean;
  tokens: number[];
}

beforeAll(() => writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 }));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('dvl ask --format json / --json-schema', () => {
  it('--format json: a JSON object; --json-schema: JSON valid against the file, with an image too; finish_reason stop', () => {
    const any = runDvl(['ask', ...OPTS, '-n', '24', '--format', 'json', '--json', 'Give me JSON.'], { env });
    expect(any.status, any.stderr).toBe(0);
    const anyAnswer = JSON.parse(any.stdout) as AskJson;
    const value = JSON.parse(anyAnswer.text) as unknown;
    expect(typeof value === 'object' && value !== null && !Array.isArray(value)).toBe(true);
    expect(anyAnswer.finish_reason).toBe('stop');

    const file = schemaFile('receipt', RECEIPT);
    const n = String(budget(RECEIPT));
    const receipt = runDvl(['ask', ...OPTS, ...PIXELS, '-n', n, '--json-schema', file, '--json', IMAGE, 'Read this receipt.'], { env });
    expect(receipt.status, receipt.stderr).toBe(0);
    const answer = JSON.parse(receipt.stdout) as AskJson;
    expect(ajvValidator(RECEIPT)(JSON.parse(answer.text)), answer.text).toBe(true);
    expect(answer.finish_reason).toBe('stop');

    // Plain output: the same text (the JSON), and no warning: the document closed.
    const plain = runDvl(['ask', ...OPTS, ...PIXELS, '-n', n, '--json-schema', file, IMAGE, 'Read this receipt.'], { env });
    expect(plain.status, plain.stderr).toBe(0);
    expect(plain.stdout).toBe(`${answer.text}\n`);
    expect(plain.stderr).toBe('');
  });

  it('finish_reason is length for an answer the gen length cut short (no schema, no EOS in 4 tokens)', () => {
    const run = runDvl(['ask', ...OPTS, '-n', '4', '--json', 'Tell me a long story.'], { env });
    expect(run.status, run.stderr).toBe(0);
    const answer = JSON.parse(run.stdout) as AskJson;
    expect(answer.finish_reason).toBe(answer.stopped_at_eos ? 'stop' : 'length');
  });

  it('refusals: one line each, with the exit code of a usage error (1) or a bad input (2), before any model loads', () => {
    const cases: [string[], number, RegExp][] = [
      [['--json-schema', schemaFile('pattern', { type: 'object', properties: { a: { type: 'string', pattern: '^a+$' } } })], 1, /"pattern" at \/properties\/a is not supported/],
      [['--json-schema', schemaFile('tuple', { type: 'array', items: [{ type: 'integer' }] })], 1, /"items" at \/ as an array/],
      [['--json-schema', schemaFile('not-object', [1, 2])], 1, /a JSON Schema must be a JSON object/],
      [['--json-schema', path.join(work, 'missing.json')], 2, /missing\.json: cannot read it \(no such file\)/],
      [['--json-schema', work], 2, /cannot read it/],
      [['--json-schema', (() => (fs.writeFileSync(path.join(work, 'broken.json'), '{"type": '), path.join(work, 'broken.json')))()], 2, /broken\.json: not valid JSON/],
      [['--json-schema', schemaFile('receipt', RECEIPT), '-n', '8'], 1, new RegExp(`the schema needs at least ${checkJsonFormat(RECEIPT as never)} tokens; -n is 8`)],
      [['--format', 'json', '-n', '1'], 1, /the schema needs at least 2 tokens; -n is 1/],
      [['--format', 'json', '--json-schema', schemaFile('receipt', RECEIPT)], 1, /cannot be used together/],
      [['--format', 'yaml'], 1, /--format must be one of json, got 'yaml'/],
    ];
    for (const [args, code, message] of cases) {
      // A model that does not exist: a refusal that waited for the model would fail differently.
      const run = runDvl(['ask', '-m', path.join(work, 'no-such-model'), ...args, 'Hello'], { env });
      expect({ args, status: run.status }).toEqual({ args, status: code });
      expect(run.stdout).toBe('');
      expect(run.stderr.trimEnd().split('\n'), args.join(' ')).toHaveLength(1);
      expect(run.stderr).toMatch(/^dvl: /);
      expect(run.stderr).toMatch(message);
    }
  });
});

describe('dvl batch lines with "format" / "json_schema"', () => {
  it('answers each schema (valid JSON), reports bad lines in place and exits 2', () => {
    const lines: Record<string, unknown>[] = FILE_SCHEMAS.map((s) => ({ prompt: `Answer as ${s.name}.`, json_schema: s.schema, gen_length: budget(s.schema) }));
    lines.push({ prompt: 'Any object.', format: 'json', gen_length: 16 });
    lines.push({ prompt: 'Also a schema.', format: { type: 'array', items: { type: 'boolean' }, minItems: 1, maxItems: 3 }, gen_length: 24 });
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ prompt: 'x', json_schema: { type: 'string', format: 'email' } }, /"format" at \/ is not supported/],
      [{ prompt: 'x', format: 'yaml' }, /"format" must be "json" or a JSON Schema object/],
      [{ prompt: 'x', format: 'json', json_schema: { type: 'object' } }, /give one/],
      [{ prompt: 'x', json_schema: RECEIPT, gen_length: 8 }, /the schema needs at least \d+ tokens; "gen_length" is 8/],
    ];
    const input = [...lines, ...bad.map(([line]) => line)].map((l) => JSON.stringify(l)).join('\n');
    const run = runDvl(['batch', ...OPTS], { env, input: `${input}\n` });
    expect(run.status, run.stderr).toBe(2);
    const out = run.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { index: number; text?: string; finish_reason?: string; error?: { kind: string; message: string } });
    expect(out.map((l) => l.index)).toEqual([...lines, ...bad].map((_, i) => i));
    FILE_SCHEMAS.forEach((s, i) => {
      const { text, finish_reason } = out[i];
      expect({ schema: s.name, text, valid: ajvValidator(s.schema)(JSON.parse(text!)) }).toEqual({ schema: s.name, text, valid: true });
      expect(finish_reason).toBe('stop');
    });
    const anyObject = JSON.parse(out[FILE_SCHEMAS.length].text!) as unknown;
    expect(typeof anyObject === 'object' && anyObject !== null && !Array.isArray(anyObject)).toBe(true);
    expect(ajvValidator(lines[FILE_SCHEMAS.length + 1].format)(JSON.parse(out[FILE_SCHEMAS.length + 1].text!))).toBe(true);
    bad.forEach(([, message], j) => {
      const line = out[lines.length + j];
      expect(line.error?.kind).toBe('input');
      expect(line.error?.message).toMatch(message);
    });
  });
});

describe('dvl chat /set format and /set json-schema', () => {
  it('switches between JSON objects, a schema and plain text; a bad schema file is reported and the chat goes on', () => {
    const file = schemaFile('small', { type: 'object', properties: { answer: { enum: ['yes', 'no'] }, why: { type: 'string', maxLength: 10 } }, required: ['answer', 'why'], additionalProperties: false });
    // Each answer is followed by /show, whose block (ending with the format line) separates the answers: JSON
    // answers may hold newlines of their own.
    const input = [
      '/set gen-length 40',
      '/set format json',
      'Is it a cat?',
      '/show',
      `/set json-schema ${file}`,
      'Is it a dog?',
      '/set json-schema /nonexistent.json',
      '/show',
      '/set format off',
      '/set gen-length 6',
      'Say something.',
      `/set json-schema ${file}`,
      'Too short now.',
      '/exit',
    ].join('\n');
    const run = runDvl(['chat', ...OPTS], { env, input: `${input}\n` });
    expect(run.status, run.stderr).toBe(0);
    const show = /gen-length \d+\nsteps [\s\S]*?\n(format text|format json|json-schema [^\n]*)\n/g;
    const formats = [...run.stdout.matchAll(show)].map((m) => m[1]);
    // The bad file did not replace the schema.
    expect(formats).toEqual(['format json', `json-schema ${file}`]);
    const answers = run.stdout.split(show).filter((_, i) => i % 2 === 0);
    expect(answers).toHaveLength(3);
    const first = JSON.parse(answers[0]) as unknown;
    expect(typeof first === 'object' && first !== null && !Array.isArray(first), answers[0]).toBe(true);
    const second = JSON.parse(answers[1]) as { answer: string; why: string };
    expect(['yes', 'no']).toContain(second.answer);
    expect(answers[2].endsWith('\n')).toBe(true);
    expect(run.stderr).toMatch(/^dvl: json-schema \/nonexistent\.json: cannot read it \(no such file\)$/m);
    // After the plain answer, a gen length too short for the schema: refused, and the chat goes on to /exit.
    expect(run.stderr).toMatch(/^dvl: the schema needs at least \d+ tokens; gen-length is 6 \(\/set gen-length N, or \/set format off\)$/m);
    expect(run.stderr.trimEnd().split('\n')).toHaveLength(2);
  }, 120_000);
});
