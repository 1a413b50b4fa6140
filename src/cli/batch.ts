/**
 * Many questions, one model load: `dvl batch` (JSONL requests on stdin) and `dvl ask --each`. Requests are
 * answered one after the other and every one gets exactly one JSONL line on stdout, in input order, written
 * as soon as it is answered: the --json object plus "index" (0-based), "image" and "prompt"; or, for a
 * request that failed on its input (missing or corrupt image, bad request line), {"index", "image", "prompt",
 * "error": {"kind", "message"}}. Such failures do not stop the batch; at the end the command exits 2 if any
 * request failed. A model problem or Ctrl-C stops the whole batch (exit 3 / 130).
 */
import type { Command } from 'commander';
import { DvlError, inputError, usageError } from '../util/errors.js';
import { type AskFlags, addModelOptions, asInterrupted, checkReadableFile, openSession, type ResolvedFlags, resolveFlags, resultJson } from './ask-command.js';
import { createProgress } from './progress.js';

/** One request: `image` (or `images`), `prompt`, and optionally `system` and `seed`. */
export interface BatchRequest {
  image?: string;
  images?: string[];
  prompt: string;
  system?: string;
  seed?: number;
}

/** A line that could not be read as a request: reported in its place. */
type BatchItem = BatchRequest | { invalid: string };

export function registerBatch(program: Command, signal: AbortSignal): void {
  const command = program
    .command('batch')
    .description('Answer JSONL requests from stdin with one model load; one JSONL result per request, in order.');
  addModelOptions(command)
    .addHelpText(
      'after',
      `
Each stdin line is a JSON object: {"image": "a.jpg", "prompt": "Describe this."} (also "images": [...],
"system", "seed"; without an image the prompt is text only). Each result line is the 'ask --json' object
with "index", "image" and "prompt" added, or {"index", "image", "prompt", "error": {"kind", "message"}}
for a request whose image (or line) is bad; the batch goes on and exits 2 at the end.

Examples:
  printf '%s\\n' '{"image":"a.jpg","prompt":"Describe this."}' '{"image":"b.jpg","prompt":"How many people?"}' \\
    | dvl batch -m ./ckpt > answers.jsonl
  ls *.jpg | jq -R -c '{image: ., prompt: "Caption this image."}' | dvl batch -m ./ckpt | jq -r .text
  dvl ask -m ./ckpt --each "Describe this image." *.jpg          (the same, from the command line)`,
    )
    .action(async (flags: AskFlags) => {
      const resolved = await resolveFlags(flags);
      if (process.stdin.isTTY) throw usageError('dvl batch reads JSONL requests from stdin, but stdin is a terminal');
      const items = await readRequests(signal);
      if (items.length === 0) throw inputError('no requests on stdin');
      await runBatch(items, resolved, signal);
    });
}

/** Parses stdin lines (blank lines skipped); a line that is not a valid request becomes an `invalid` item. */
async function readRequests(signal: AbortSignal): Promise<BatchItem[]> {
  const chunks: Buffer[] = [];
  const stop = () => process.stdin.destroy();
  signal.addEventListener('abort', stop, { once: true });
  try {
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  } finally {
    signal.removeEventListener('abort', stop);
  }
  if (signal.aborted) throw new DvlError('interrupted', 'interrupted while reading requests from stdin');
  return Buffer.concat(chunks)
    .toString('utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map(parseRequest);
}

export function parseRequest(line: string): BatchItem {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { invalid: `not a JSON object: ${line.slice(0, 60)}` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { invalid: 'a request must be a JSON object' };
  const r = value as Record<string, unknown>;
  if (typeof r.prompt !== 'string' || r.prompt.trim() === '') return { invalid: 'a request needs a non-empty "prompt" string' };
  if (r.image !== undefined && typeof r.image !== 'string') return { invalid: '"image" must be a file path string' };
  if (r.images !== undefined && !(Array.isArray(r.images) && r.images.every((i) => typeof i === 'string'))) return { invalid: '"images" must be an array of file paths' };
  if (r.system !== undefined && typeof r.system !== 'string') return { invalid: '"system" must be a string' };
  if (r.seed !== undefined && !(Number.isSafeInteger(r.seed) && (r.seed as number) >= 0)) return { invalid: '"seed" must be a non-negative integer' };
  return { image: r.image as string | undefined, images: r.images as string[] | undefined, prompt: r.prompt, system: r.system as string | undefined, seed: r.seed as number | undefined };
}

export async function runBatch(items: BatchItem[], flags: ResolvedFlags, signal: AbortSignal): Promise<void> {
  const progress = await createProgress({ quiet: flags.quiet });
  const session = await openSession(flags, progress, signal);
  let failed = 0;
  try {
    for (const [index, item] of items.entries()) {
      progress.live(`answering ${index + 1} of ${items.length}`);
      const line = await answerOne(index, item);
      if ('error' in line) failed++;
      process.stdout.write(`${JSON.stringify(line)}\n`);
    }
  } catch (error) {
    throw asInterrupted(error, signal);
  } finally {
    progress.stop();
    await session.close();
  }
  if (failed > 0) throw inputError(`${failed} of ${items.length} requests failed (see their "error" in the output)`);

  async function answerOne(index: number, item: BatchItem): Promise<Record<string, unknown>> {
    if ('invalid' in item) return { index, error: { kind: 'input', message: item.invalid } };
    const images = [...(item.image !== undefined ? [item.image] : []), ...(item.images ?? [])];
    const head = { index, image: item.image ?? item.images ?? null, prompt: item.prompt };
    try {
      for (const image of images) checkReadableFile(image);
      const settings = item.seed === undefined ? session.settings : { ...session.settings, seed: item.seed };
      const result = await session.worker.ask(
        { images, prompt: item.prompt, system: item.system ?? flags.system, settings, minPixels: flags.minPixels, maxPixels: flags.maxPixels },
        { signal },
      );
      return { ...head, ...resultJson(result, settings, session.loadMs, flags) };
    } catch (error) {
      // Only a bad input is this request's own problem; anything else stops the batch.
      if (error instanceof DvlError && error.kind === 'input' && !signal.aborted) return { ...head, error: { kind: 'input', message: error.message } };
      throw error;
    }
  }
}
