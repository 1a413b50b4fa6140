/**
 * Many questions, one model load: `dvl batch` (JSONL requests on stdin) and `dvl ask --each`. Requests are
 * answered one after the other as they arrive (stdin is read line by line: a request is answered before the
 * next one is written, if the writer waits), and every one gets exactly one JSONL line on stdout, in input
 * order, written as soon as it is answered.
 *
 * A result line is the --json object plus "index" (0-based), "image" and "prompt", with each entry of
 * "images" naming its file; a request that failed on its input (missing or corrupt image, bad request line)
 * gets {"index", "image", "images": [{"file"}], "prompt", "error": {"kind", "message"}} instead, with
 * whatever of the request could be read. Such failures do not stop the batch; at the end the command exits 2
 * if any request failed. A model problem or Ctrl-C stops the whole batch (exit 3 / 130).
 *
 * The model loads when the first request that needs it arrives: an empty input fails at once with "no
 * requests on stdin", and converts nothing.
 */
import readline from 'node:readline';
import type { Command } from 'commander';
import type { GenerationSettings, JsonSchemaInput } from '../ask.js';
import { DvlError, inputError, usageError } from '../util/errors.js';
import { type AskFlags, addModelOptions, imageOptions, type ResolvedFlags, resolveFlags } from './flags.js';
import { asInterrupted, type ModelSession, openSession, pixelsOf } from './session.js';
import { checkReadableFile } from './image-args.js';
import { resultJson } from './report.js';
import { ANY_JSON_OBJECT, checkedSchema, checkFormatBudget } from './json-format.js';
import { GENERATION_SETTINGS, SETTING_NAMES, type SettingValues } from '../generate/settings.js';
import { createProgress } from './progress.js';

/** One request: `image` and/or `images`, `prompt`, and optionally `system` and generation settings. */
export interface BatchRequest {
  image?: string;
  images?: string[];
  prompt: string;
  system?: string;
  /** Overrides the flags' settings for this request only. */
  settings?: Partial<SettingValues>;
  /** "format" / "json_schema": structured output for this request (else the flags'). */
  jsonSchema?: JsonSchemaInput;
}

/** A line that could not be read as a request: reported in its place, with what of it could be read. */
interface InvalidRequest {
  invalid: string;
  files: string[];
  prompt: string | null;
}

type BatchItem = BatchRequest | InvalidRequest;

/** The keys a request line may have; any other key makes the line an error (a typo must not pass silently). */
const REQUEST_KEYS = ['image', 'images', 'prompt', 'system', ...SETTING_NAMES.flatMap((name) => [GENERATION_SETTINGS[name].key, ...(GENERATION_SETTINGS[name].aliases ?? [])]), 'format', 'json_schema'];

export function registerBatch(program: Command, signal: AbortSignal): void {
  const command = program
    .command('batch')
    .description('Answer JSONL requests from stdin with one model load; one JSONL result per request, in order.');
  addModelOptions(command)
    .addHelpText(
      'after',
      `
Each stdin line is a JSON object: {"image": "a.jpg", "prompt": "Describe this."}, also "images": [...]
(after "image"), "system", and settings for that request only, with the flags' ranges (numbers as JSON
numbers): ${SETTING_NAMES.map((name) => GENERATION_SETTINGS[name].key).join(', ')}; "format": "json" (any
JSON object) or a JSON Schema object, or "json_schema": a JSON Schema object (as --format / --json-schema).
Without an image the prompt is text only; any other key is an error. Lines are answered as they arrive,
one result line each, in order: the 'ask --json' object plus "index", "prompt" and "image" (the path when
the request has exactly one image, else null; each "images" entry also gets its "file"). A request whose
image or line is bad gets {"index", "image", "images": [{"file"}], "prompt", "error": {"kind", "message"}}
instead; the batch goes on and exits 2 at the end.

Examples:
  printf '%s\\n' '{"image":"a.jpg","prompt":"Describe this."}' '{"image":"b.jpg","prompt":"How many people?"}' \\
    | dvl batch -m ./ckpt > answers.jsonl
  ls *.jpg | jq -R -c '{image: ., prompt: "Caption this image."}' | dvl batch -m ./ckpt | jq -r .text
  echo '{"prompt": "Write a haiku.", "temperature": 0.7, "seed": 7, "gen_length": 64}' | dvl batch -m ./ckpt
  dvl ask -m ./ckpt --each "Describe this image." *.jpg          (the same, from the command line)`,
    )
    .action(async (flags: AskFlags) => {
      const resolved = await resolveFlags(flags);
      if (process.stdin.isTTY) throw usageError('dvl batch reads JSONL requests from stdin, but stdin is a terminal');
      const count = await runBatch(readRequests(signal), resolved, signal);
      if (count === 0) throw inputError('no requests on stdin');
    });
}

/** Stdin line by line as it arrives (blank lines skipped); a line that is not a valid request becomes an InvalidRequest. */
async function* readRequests(signal: AbortSignal): AsyncGenerator<BatchItem> {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  // Ctrl-C while waiting for input: stop reading (the batch then reports 'interrupted').
  const stop = () => {
    lines.close();
    process.stdin.destroy();
  };
  signal.addEventListener('abort', stop, { once: true });
  // A Ctrl-C that came before this point: the listener above will never fire.
  if (signal.aborted) stop();
  try {
    for await (const line of lines) {
      if (line.trim() !== '') yield parseRequest(line);
    }
  } finally {
    signal.removeEventListener('abort', stop);
    lines.close();
  }
}

export function parseRequest(line: string): BatchItem {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { invalid: `not a JSON object: ${line.slice(0, 60)}`, files: [], prompt: null };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { invalid: 'a request must be a JSON object', files: [], prompt: null };
  const r = value as Record<string, unknown>;
  // What could be read of a rejected line still goes into its result, to tell which request it was.
  const invalid = (message: string): InvalidRequest => ({ invalid: message, files: readableFiles(r), prompt: typeof r.prompt === 'string' ? r.prompt : null });

  const unknown = Object.keys(r).filter((key) => !REQUEST_KEYS.includes(key));
  if (unknown.length > 0) return invalid(`unknown key ${unknown.map((key) => JSON.stringify(key)).join(', ')} (a request takes ${REQUEST_KEYS.join(', ')})`);
  if (typeof r.prompt !== 'string' || r.prompt.trim() === '') return invalid('a request needs a non-empty "prompt" string');
  if (r.image !== undefined && typeof r.image !== 'string') return invalid('"image" must be a file path string');
  if (r.images !== undefined && !(Array.isArray(r.images) && r.images.every((i) => typeof i === 'string'))) return invalid('"images" must be an array of file paths');
  if (r.system !== undefined && typeof r.system !== 'string') return invalid('"system" must be a string');
  const settings = parseSettings(r);
  if (typeof settings === 'string') return invalid(settings);
  const format = parseFormat(r);
  if (typeof format === 'object' && 'problem' in format) return invalid(format.problem);
  return {
    image: r.image as string | undefined,
    images: r.images as string[] | undefined,
    prompt: r.prompt,
    system: r.system as string | undefined,
    settings,
    ...(format !== undefined ? { jsonSchema: format.schema } : {}),
  };
}

/** A request line's "format" ("json" or a schema) or "json_schema" (a schema), checked; or what is wrong with it. */
function parseFormat(r: Record<string, unknown>): { schema: JsonSchemaInput } | { problem: string } | undefined {
  if (r.format !== undefined && r.json_schema !== undefined) return { problem: '"format" and "json_schema" both ask for JSON: give one' };
  try {
    if (r.format !== undefined) {
      if (r.format === 'json') return { schema: ANY_JSON_OBJECT };
      if (typeof r.format === 'string' || r.format === null) return { problem: `"format" must be "json" or a JSON Schema object, got ${JSON.stringify(r.format)}` };
      return { schema: checkedSchema(r.format, '"format"') };
    }
    if (r.json_schema !== undefined) return { schema: checkedSchema(r.json_schema, '"json_schema"') };
  } catch (error) {
    return { problem: (error as Error).message };
  }
  return undefined;
}

/** A request line's generation settings, checked like the flags; or the message saying what is wrong. */
function parseSettings(r: Record<string, unknown>): Partial<SettingValues> | string {
  const settings: Record<string, unknown> = {};
  for (const name of SETTING_NAMES) {
    const spec = GENERATION_SETTINGS[name];
    const given = [spec.key, ...(spec.aliases ?? [])].filter((key) => r[key] !== undefined);
    if (given.length === 0) continue;
    if (given.length > 1) return `${given.map((key) => JSON.stringify(key)).join(' and ')} are the same setting: give one`;
    const value = r[given[0]];
    const label = JSON.stringify(given[0]);
    if (typeof value !== spec.json) return `${label} must be a ${spec.json === 'number' ? 'JSON number' : 'string'}, got ${JSON.stringify(value)}`;
    try {
      settings[name] = spec.parser(label)(String(value));
    } catch (error) {
      return (error as Error).message;
    }
  }
  return settings as Partial<SettingValues>;
}

/** The request's image files in prompt order: "image" first, then "images" (those that are strings). */
function readableFiles(r: { image?: unknown; images?: unknown }): string[] {
  const files = typeof r.image === 'string' ? [r.image] : [];
  if (Array.isArray(r.images)) files.push(...r.images.filter((i): i is string => typeof i === 'string'));
  return files;
}

/**
 * Answers the requests in order, as they come; returns how many there were. Throws an input error at the
 * end if any failed.
 */
export async function runBatch(requests: Iterable<BatchItem> | AsyncIterable<BatchItem>, flags: ResolvedFlags, signal: AbortSignal): Promise<number> {
  const progress = await createProgress({ quiet: flags.quiet });
  let session: ModelSession | undefined;
  let count = 0;
  let failed = 0;
  try {
    for await (const item of requests) {
      progress.live(`answering request ${count + 1}`);
      const line = await answerOne(count++, item);
      if ('error' in line) failed++;
      process.stdout.write(`${JSON.stringify(line)}\n`);
    }
    if (signal.aborted) throw new DvlError('interrupted', 'interrupted while reading requests from stdin');
  } catch (error) {
    throw asInterrupted(error, signal);
  } finally {
    progress.stop();
    await session?.close();
  }
  if (failed > 0) throw inputError(`${failed} of ${count} requests failed (see their "error" in the output)`);
  return count;

  async function answerOne(index: number, item: BatchItem): Promise<Record<string, unknown>> {
    const files = 'invalid' in item ? item.files : readableFiles(item);
    const head = { index, image: files.length === 1 ? files[0] : null, prompt: item.prompt };
    const failure = (message: string) => ({ ...head, images: files.map((file) => ({ file })), error: { kind: 'input', message } });
    if ('invalid' in item) return failure(item.invalid);
    try {
      for (const image of files) checkReadableFile(image);
    } catch (error) {
      return failure((error as Error).message);
    }
    const jsonSchema = item.jsonSchema ?? flags.jsonFormat;
    try {
      checkFormatBudget(jsonSchema, item.settings?.genLength ?? flags.genLength, item.settings?.genLength !== undefined ? '"gen_length"' : '-n');
    } catch (error) {
      return failure((error as Error).message);
    }
    // Loaded for the first request that needs the model (see the module comment); a failure stops the batch.
    session ??= await openSession(flags, progress, signal);
    const settings: GenerationSettings = { ...session.settings, ...item.settings };
    try {
      const result = await session.worker.ask(
        { images: files, prompt: item.prompt, system: item.system ?? flags.system, settings, ...pixelsOf(session), imageOptions: imageOptions(flags), jsonSchema },
        { signal },
      );
      const json = resultJson(result, settings, session.loadMs, { ...flags, dtype: session.dtype.dtype });
      return { ...head, ...json, images: result.images.map((image, i) => ({ file: files[i], ...image })) };
    } catch (error) {
      // Only a bad input is this request's own problem; anything else stops the batch.
      if (error instanceof DvlError && error.kind === 'input' && !signal.aborted) return failure(error.message);
      throw error;
    }
  }
}
