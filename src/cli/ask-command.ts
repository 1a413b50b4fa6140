/**
 * `dvl ask`: one question about images (or plain text), answered by a model loaded here or by a running
 * `dvl serve` (--host); `--each` hands a list of images to `dvl batch`'s loop.
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import type { AskResult } from '../ask.js';
import { DvlError, inputError, usageError } from '../util/errors.js';
import { addModelOptions, addRemoteOptions, type AskFlags, imageOptions, modelGiven, requestSettings, type ResolvedFlags, resolveFlags } from './flags.js';
import { checkReadableFile, isImageFile, looksLikeImagePath } from './image-args.js';
import { checkFormatBudget, cutShortWarning } from './json-format.js';
import { createProgress } from './progress.js';
import { askRemote, remoteModel, type RemoteTarget, remoteTarget } from './remote.js';
import { JsonlRenderer } from './render/jsonl.js';
import { LiveRenderer } from './render/live.js';
import { chooseRenderer, onAskEvent, reportVerbose, resultJson } from './report.js';
import { asInterrupted, type ModelSession, openSession, pixelsOf } from './session.js';
import type { ImageSize } from '../models/index.js';

export function registerAsk(program: Command, signal: AbortSignal): void {
  const command = program
    .command('ask')
    .description('Answer a question about images (or plain text) with a DiffusionVL model.')
    .argument('[args...]', 'image files, then the prompt (the last argument; "-" reads it from stdin)');
  addRemoteOptions(addModelOptions(command))
    .option('--json', 'print one JSON object (text, tokens, settings, stats) instead of the text')
    .option('--jsonl', 'print one JSON object per event as it happens, then the --json object with "type": "result"')
    .option('--no-live', 'on a terminal, print only committed text (no live view of the block being denoised)')
    .option('--each <prompt>', 'ask <prompt> about each image on its own (one model load); JSONL, one line per image')
    .addHelpText(
      'after',
      `
Examples:
  dvl ask --model ./DiffusionVL-Qwen2.5VL-3B photo.jpg "Describe this image."
  dvl ask -m ./ckpt --json a.jpg b.jpg "What differs between these pictures?" | jq -r .text
  echo "Write a haiku about rain." | dvl ask -m ./ckpt -
  dvl ask -m ./ckpt --temperature 0.7 --top-p 0.9 --seed 42 photo.jpg "Tell a story about this."
  dvl ask -m ./ckpt --jsonl photo.jpg "Describe this." | jq -c 'select(.type == "block-end") | .text'
  dvl ask -m ./ckpt --each "Describe this image." *.jpg > captions.jsonl
  dvl ask --host http://localhost:11435 -m ./ckpt photo.jpg "Describe this."   (on a running dvl serve)

The model is converted on first use (see 'dvl pull'). Images are turned upright by their EXIF
orientation, then resized to between --min-pixels and --max-pixels (default: the model's config.json
min_pixels/max_pixels, else 384*384..512*512, DiffusionVL's training budget).
On a terminal the block being denoised is shown live (masked slots dim); piped, stdout gets the
answer's text block by block and nothing else. Progress goes to stderr; NO_COLOR turns colors off.
Exit codes: 0 ok, 1 usage, 2 bad input (image, prompt, a prompt too long for the model's context;
with --each: any image failed), 3 model or conversion problem (a full disk too), 130 interrupted
(Ctrl-C), 141 the reader of stdout went away (| head), 143 terminated (SIGTERM).`,
    )
    .action(async (args: string[], flags: AskFlags, self: Command) => {
      await runAsk(args, { ...flags, modelGiven: modelGiven(self) }, signal);
    });
}

async function runAsk(args: string[], rawFlags: AskFlags, signal: AbortSignal): Promise<void> {
  // Everything that can be checked without the model is checked first, so mistakes fail in milliseconds.
  const flags = await resolveFlags(rawFlags);
  if (flags.json && flags.jsonl) throw usageError('--json and --jsonl cannot be used together');
  checkFormatBudget(flags.jsonFormat, flags.genLength, '-n');
  const remote = remoteTarget(flags);
  if (flags.each !== undefined) {
    if (remote) throw usageError('--each does not work with --host (dvl serve answers one question per request): ask each image on its own');
    if (flags.json) throw usageError('--each writes JSONL (one line per image); drop --json');
    if (flags.jsonl) throw usageError('--each writes one result line per image, not events; drop --jsonl');
    if (args.length === 0) throw usageError('--each needs at least one image');
    // The same check, and exit code, as for an empty prompt after the images.
    if (flags.each.trim().length === 0) throw inputError('the --each prompt is empty');
    const { runBatch } = await import('./batch.js');
    await runBatch(args.map((image) => ({ image, prompt: flags.each! })), flags, signal);
    return;
  }
  if (args.length === 0) throw usageError('missing the prompt: give it as the last argument, or "-" to read it from stdin');
  const images = args.slice(0, -1);
  const promptArg = args[args.length - 1];
  for (const image of images) checkImageArgument(image, promptArg);
  if (isImageFile(promptArg)) {
    throw usageError(`missing the prompt: the last argument ${promptArg} is an image file; give the prompt after the images: dvl ask [image...] <prompt>`);
  }
  // A lone "photo.png" that does not exist is a mistyped image, not a question about a file name.
  if (images.length === 0 && looksLikeImagePath(promptArg)) throw inputError(`no such image: ${promptArg} (the prompt goes last: dvl ask [image...] <prompt>)`);
  const prompt = promptArg === '-' ? await readStdin(signal) : promptArg;
  const sizes: ImageSize[] = [];
  if (prompt.trim().length === 0) throw inputError(promptArg === '-' ? 'the prompt read from stdin is empty' : 'the prompt is empty');

  if (images.length > 0) {
    // Decode once before the model is prepared: a corrupt image must not wait for minutes of download or
    // conversion to be reported. (The worker decodes again; that costs well under a second per photo.)
    const { decodeImage } = await import('../preprocess/decode.js');
    for (const image of images) {
      const { width, height } = await decodeImage(image);
      sizes.push({ width, height });
    }
  }
  if (remote) {
    await runRemoteAsk(remote, images, prompt, flags, signal);
    return;
  }

  const progress = await createProgress({ quiet: flags.quiet });
  // One question: the images are encoded while the model loads, before the decoder exists, so the vision tower
  // and the decoder are never in memory together.
  const encodeFirst = images.length > 0 ? { images, sizes, textBytes: Buffer.byteLength(prompt) + Buffer.byteLength(flags.system ?? '') } : undefined;
  // Made before the model loads: --jsonl's times count from here, the load included.
  const renderer = chooseRenderer(flags);
  let session: ModelSession;
  try {
    session = await openSession(flags, progress, signal, encodeFirst);
  } catch (error) {
    // A --jsonl reader learns that the run was stopped, not just that the stream ended.
    if (renderer instanceof JsonlRenderer && isInterrupted(error)) renderer.interrupted();
    throw error;
  }
  try {
    const settings = session.settings;
    let result: AskResult;
    try {
      result = await session.worker.ask(
        { images, prompt, system: flags.system, settings, ...pixelsOf(session), imageOptions: imageOptions(flags), cacheImages: encodeFirst !== undefined, jsonSchema: flags.jsonFormat },
        { signal, onProgress: (event) => onAskEvent(event, progress, renderer) },
      );
    } catch (error) {
      if (renderer instanceof LiveRenderer) renderer.dispose();
      if (renderer instanceof JsonlRenderer && isInterrupted(error)) renderer.interrupted();
      throw error;
    }
    if (flags.verbose) reportVerbose(result, session.loadMs, { pixels: session.pixels, blockSize: session.blockSize, startup: session.startup, dtype: session.dtype });
    warnIfCutShort(result, settings.genLength, flags, progress.warn);
    const json = resultJson(result, settings, session.loadMs, { ...flags, dtype: session.dtype.dtype });
    if (renderer instanceof JsonlRenderer) renderer.result(json);
    else if (flags.json) process.stdout.write(`${JSON.stringify(json)}\n`);
  } finally {
    progress.stop();
    await session.close();
  }
}

/**
 * `dvl ask --host`: the same question answered by a running dvl serve, rendered as a local answer is (the
 * events as they come, then --json's object with the server's dtype and the settings it used).
 */
async function runRemoteAsk(remote: RemoteTarget, images: string[], prompt: string, given: ResolvedFlags, signal: AbortSignal): Promise<void> {
  const progress = await createProgress({ quiet: given.quiet });
  progress.live(`asking dvl serve at ${remote.url}`);
  const renderer = chooseRenderer(given);
  try {
    // Without -m: the model the server has loaded (the default model would rarely be the one it serves).
    const flags = given.modelGiven === false ? { ...given, model: await remoteModel(remote, signal) } : given;
    const answer = await askRemote(
      remote,
      { model: flags.model, prompt, images, system: flags.system, settings: requestSettings(flags), minPixels: flags.minPixels, maxPixels: flags.maxPixels, imageOptions: imageOptions(flags), jsonSchema: flags.jsonFormat },
      { signal, onProgress: (event) => onAskEvent(event, progress, renderer) },
    );
    progress.stop();
    if (flags.verbose) reportVerbose(answer.result, answer.loadMs, { pixels: answer.pixels, remoteUrl: remote.url });
    warnIfCutShort(answer.result, answer.settings.genLength, flags, progress.warn);
    const json = resultJson(answer.result, answer.settings, answer.loadMs, { ...flags, dtype: answer.dtype });
    if (renderer instanceof JsonlRenderer) renderer.result(json);
    else if (flags.json) process.stdout.write(`${JSON.stringify(json)}\n`);
  } catch (error) {
    progress.stop();
    if (renderer instanceof LiveRenderer) renderer.dispose();
    const reported = asInterrupted(error, signal);
    if (renderer instanceof JsonlRenderer && isInterrupted(reported)) renderer.interrupted();
    throw reported;
  }
}

/** Plain text only: --json and --jsonl tell a JSON answer cut short by their finish_reason. */
function warnIfCutShort(result: AskResult, genLength: number, flags: ResolvedFlags, warn: (text: string) => void): void {
  if (flags.json || flags.jsonl) return;
  const warning = cutShortWarning(result, genLength);
  if (warning) warn(warning);
}

const isInterrupted = (error: unknown) => error instanceof DvlError && error.kind === 'interrupted';

/**
 * checkReadableFile for an image argument of `dvl ask`. A missing "image" that does not look like a path
 * (no directory, no extension: "Hi"), followed by an existing file, is most likely the prompt put first: say
 * where the prompt goes.
 */
function checkImageArgument(image: string, lastArg: string): void {
  try {
    checkReadableFile(image);
  } catch (error) {
    const looksLikePath = /[\\/]/.test(image) || /\.[A-Za-z0-9]{1,5}$/.test(image);
    const lastIsFile = fs.statSync(lastArg, { throwIfNoEntry: false })?.isFile() === true;
    if (error instanceof DvlError && error.message.startsWith('image not found') && !looksLikePath && lastIsFile) {
      throw inputError(`${error.message} (the prompt goes last: dvl ask [image...] <prompt>)`);
    }
    throw error;
  }
}

/** The whole of stdin (one trailing newline dropped, as `echo` adds it); stops when `signal` aborts. */
async function readStdin(signal: AbortSignal): Promise<string> {
  if (process.stdin.isTTY) throw usageError('prompt "-" reads from stdin, but stdin is a terminal');
  // A Ctrl-C that came while the flags were checked: an abort listener added now would never fire.
  if (signal.aborted) throw new DvlError('interrupted', 'interrupted while reading the prompt from stdin');
  const chunks: Buffer[] = [];
  const stop = () => process.stdin.destroy();
  signal.addEventListener('abort', stop, { once: true });
  try {
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  } catch (error) {
    if (!signal.aborted) throw inputError(`cannot read the prompt from stdin: ${(error as Error).message}`, error);
  } finally {
    signal.removeEventListener('abort', stop);
  }
  if (signal.aborted) throw new DvlError('interrupted', 'interrupted while reading the prompt from stdin');
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}
