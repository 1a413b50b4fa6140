import fs from 'node:fs';
import type { Command } from 'commander';
import type { AskEvent, AskResult, FamilyImageOptions, GenerationSettings } from '../ask.js';
import { WEIGHT_DTYPES, type WeightDtype } from '../store/manifest.js';
import { REMASKING_STRATEGIES, type RemaskingStrategy } from '../generate/schedule.js';
import { DvlError, inputError, usageError } from '../util/errors.js';
import type { InferenceWorker } from '../runtime/worker-client.js';
import type { EncodeFirst } from '../runtime/worker-protocol.js';
import type { StartupTimes } from '../runtime/model.js';
import { blockSizeSource, contextLength, familyOf, pixelBudgetFor, type ImageSize, type RequestPixelBudget } from '../models/index.js';
import type { AnyModelConfig } from '../checkpoint/types.js';
import { prepareModel } from '../store/model-source.js';
import { askRemote, remoteModel, type RemoteTarget, remoteTarget } from './remote.js';
import { capThreads, flagParser, intInRange, oneOf } from './parse.js';
import { createProgress, type Progress } from './progress.js';
import { JsonlRenderer } from './render/jsonl.js';
import { LiveRenderer } from './render/live.js';
import { PlainRenderer } from './render/plain.js';
import { colorsFor } from './render/terminal.js';
import { DEFAULT_DTYPE } from './pull-command.js';

export const DEFAULT_MODEL = 'hustvl/DiffusionVL-Qwen2.5VL-3B';

export interface AskFlags {
  model: string;
  token?: string;
  offline?: boolean;
  dtype: WeightDtype;
  genLength: number;
  steps: number;
  blockSize?: number;
  temperature: number;
  topK: number;
  topP: number;
  remasking: RemaskingStrategy;
  threshold: number;
  seed?: number;
  minPixels?: number;
  maxPixels?: number;
  /** SigLIP family: anyres_max_N's N. */
  tiles?: number;
  /** SigLIP family: 'pad' reads each image as one crop. */
  imageMode?: 'anyres' | 'pad';
  threads?: number;
  system?: string;
  json?: boolean;
  jsonl?: boolean;
  /** commander's --no-live: false when given. */
  live?: boolean;
  each?: string;
  quiet?: boolean;
  verbose?: boolean;
  /** --host: answer on a running dvl serve (default $DVL_HOST). */
  host?: string;
  /** --api-key for that server (default $DVL_API_KEY). */
  apiKey?: string;
  /** -m was given (not commander's default): with --host, without it the server's loaded model answers. */
  modelGiven?: boolean;
}

/** Whether the command's -m was given rather than defaulted. */
export function modelGiven(command: Command): boolean {
  return command.getOptionValueSource('model') !== 'default';
}

/** The flags once checked (the pixel budget is filled in when the model is known: see ModelSession.pixels). */
export type ResolvedFlags = AskFlags;

/** The options every answering command (ask, batch, chat) shares: model, generation, images, output. */
export function addModelOptions(command: Command): Command {
  return command
    .option('-m, --model <model>', 'Hub model id (org/name[@revision]) or checkpoint directory', DEFAULT_MODEL)
    .option('--token <token>', 'Hugging Face access token for gated or private models (default: $HF_TOKEN)')
    .option('--offline', 'no network: use downloaded models only (also HF_HUB_OFFLINE=1)')
    .option('--dtype <dtype>', `weight precision of the converted model: ${WEIGHT_DTYPES.join(', ')}`, oneOf('--dtype', WEIGHT_DTYPES), DEFAULT_DTYPE)
    .option('-n, --gen-length <n>', 'number of tokens to generate', flagParser('genLength'), 128)
    .option('-s, --steps <n>', 'denoising steps per block', flagParser('steps'), 8)
    .option('--block-size <n>', "tokens per diffusion block (default: the model's, 8 for the released models)", flagParser('blockSize'))
    .option('-t, --temperature <t>', '0 = greedy (argmax); > 0 samples', flagParser('temperature'), 0)
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = off)', flagParser('topK'), 0)
    .option('--top-p <p>', 'nucleus sampling mass (1 = off)', flagParser('topP'), 1)
    .option(
      '--remasking <strategy>',
      `which masked tokens to fill at each step: ${REMASKING_STRATEGIES.join(', ')}`,
      flagParser('remasking'),
      'low_confidence_static',
    )
    .option('--threshold <p>', 'confidence above which low_confidence_dynamic fills a token', flagParser('threshold'), 0.85)
    .option('--seed <n>', 'seed for sampling (temperature > 0); same seed, same answer', flagParser('seed'))
    // No commander defaults here: the preprocessing module (and with it the image library) loads only when an
    // answer is computed, so that --help and usage errors start fast. The defaults are in the text below.
    .option('--min-pixels <n>', 'smallest image area after resizing', intInRange('--min-pixels', 28 * 28))
    .option('--max-pixels <n>', 'largest image area after resizing', intInRange('--max-pixels', 28 * 28))
    .option('--tiles <n>', "DiffusionVL-Qwen2.5-7B: keep at most about N tiles' worth of image tokens (anyres_max_N; default the model's, 4)", intInRange('--tiles', 1, 36))
    .option('--image-mode <mode>', 'DiffusionVL-Qwen2.5-7B: anyres (base image + tiles, the default) or pad (one crop, the cheapest)', oneOf('--image-mode', ['anyres', 'pad'] as const))
    .option('--threads <n>', 'CPU threads for onnxruntime (default: all cores)', intInRange('--threads', 1, 1024))
    .option('--system <text>', 'system prompt (default: the one the model was trained with)')
    .option('-q, --quiet', 'no progress on stderr')
    .option('--verbose', 'per-stage timings, NFE, tokens/NFE, tokens/s and peak memory on stderr');
}

/** --host and --api-key: ask and chat can answer on a running `dvl serve` (src/cli/remote.ts). */
export function addRemoteOptions(command: Command): Command {
  return command
    .option('--host <url>', 'send the request to a running dvl serve (default: $DVL_HOST)')
    .option('--api-key <key>', 'with --host: the key of a dvl serve started with --api-key (default: $DVL_API_KEY)');
}

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
        { images, prompt, system: flags.system, settings, ...pixelsOf(session), imageOptions: imageOptions(flags), cacheImages: encodeFirst !== undefined },
        { signal, onProgress: (event) => onAskEvent(event, progress, renderer) },
      );
    } catch (error) {
      if (renderer instanceof LiveRenderer) renderer.dispose();
      if (renderer instanceof JsonlRenderer && isInterrupted(error)) renderer.interrupted();
      throw error;
    }
    if (flags.verbose) reportVerbose(result, session.loadMs, { pixels: session.pixels, blockSize: session.blockSize, startup: session.startup });
    const json = resultJson(result, settings, session.loadMs, flags);
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
      { model: flags.model, prompt, images, system: flags.system, settings: requestSettings(flags), minPixels: flags.minPixels, maxPixels: flags.maxPixels, imageOptions: imageOptions(flags) },
      { signal, onProgress: (event) => onAskEvent(event, progress, renderer) },
    );
    progress.stop();
    if (flags.verbose) reportVerbose(answer.result, answer.loadMs, { pixels: answer.pixels, remoteUrl: remote.url });
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

/** The generation settings the flags ask for; blockSize undefined: the model's (known once it is loaded). */
export function requestSettings(flags: AskFlags): Omit<GenerationSettings, 'blockSize'> & { blockSize?: number } {
  return {
    genLength: flags.genLength,
    steps: flags.steps,
    blockSize: flags.blockSize,
    temperature: flags.temperature,
    topK: flags.topK,
    topP: flags.topP,
    remasking: flags.remasking,
    threshold: flags.threshold,
    seed: flags.seed,
  };
}

const isInterrupted = (error: unknown) => error instanceof DvlError && error.kind === 'interrupted';

/**
 * Validates the flags that need no model. The pixel budget is resolved once the model is known (its config.json
 * may set one): see openSession. Only two given bounds that conflict are an error here.
 */
export async function resolveFlags(rawFlags: AskFlags): Promise<ResolvedFlags> {
  if (rawFlags.minPixels !== undefined && rawFlags.maxPixels !== undefined && rawFlags.minPixels > rawFlags.maxPixels) {
    throw usageError(`--min-pixels (${rawFlags.minPixels}) is larger than --max-pixels (${rawFlags.maxPixels})`);
  }
  return { ...rawFlags, threads: capThreads(rawFlags.threads) };
}

/** A model loaded in the inference worker, with the generation settings the flags ask for. */
export interface ModelSession {
  worker: InferenceWorker;
  settings: GenerationSettings;
  /** Where the worker's part of loadMs went (decoder session, tokenizer, embeddings). */
  startup: StartupTimes;
  /** Conversion check, conversion if needed, and model load. */
  loadMs: number;
  /** The image area budget: the flags' bounds over the model's default. */
  pixels: RequestPixelBudget;
  /** The block size and where it came from (--block-size, or the model's config). */
  blockSize: BlockSizeInfo;
  close(): Promise<void>;
}

export interface BlockSizeInfo {
  size: number;
  from: string;
}

/** The pixel budget fields of a request, from a session. */
export const pixelsOf = (session: { pixels: RequestPixelBudget }) => ({ minPixels: session.pixels.minPixels, maxPixels: session.pixels.maxPixels });

/**
 * Converts the model if needed and loads it in the inference worker (spinner on stderr). Any failure after
 * Ctrl-C reads as 'interrupted'.
 */
export async function openSession(flags: ResolvedFlags, progress: Progress, signal: AbortSignal, encode?: EncodeWhileLoading): Promise<ModelSession> {
  try {
    const tLoad = performance.now();
    const converted = await prepareModel(flags.model, { dtype: flags.dtype, signal, progress, quiet: flags.quiet, token: flags.token, offline: flags.offline });
    const config = converted.manifest.config;
    const pixels = pixelBudgetFor(config, { minPixels: flags.minPixels, maxPixels: flags.maxPixels });
    const encodeFirst: EncodeFirst | undefined =
      encode && surelyFits(config, encode, pixels, flags) ? { images: encode.images, minPixels: pixels.minPixels, maxPixels: pixels.maxPixels, imageOptions: imageOptions(flags) } : undefined;
    progress.live(encodeFirst ? 'encoding images, loading model' : 'loading model');
    // onnxruntime loads only now (in the worker): usage errors and --help stay fast.
    const { InferenceWorker } = await import('../runtime/worker-client.js');
    const worker = await InferenceWorker.start({
      dir: converted.dir,
      manifest: converted.manifest,
      threads: flags.threads,
      signal,
      encodeFirst,
      // Packing the weights for this CPU takes as long as a plain start plus writing them: say why it is slow.
      onDecoderStart: (building) => building && progress.step("preparing the decoder's weights for this CPU (once; later starts are faster)"),
    });
    if (worker.startup.prepackWarning) progress.warn(worker.startup.prepackWarning);
    const settings: GenerationSettings = { ...requestSettings(flags), blockSize: flags.blockSize ?? config.blockSize };
    const blockSize = { size: settings.blockSize, from: flags.blockSize !== undefined ? '--block-size' : blockSizeSource(config) };
    // The images' preprocessing and encoding are reported as such (in the answer's stats), not as loading.
    return { worker, settings, pixels, blockSize, loadMs: performance.now() - tLoad - worker.encodeMs, startup: worker.startup, close: () => worker.close() };
  } catch (error) {
    progress.stop();
    throw asInterrupted(error, signal);
  }
}

/** One question's images, to encode while the model loads, with what bounds the prompt's length. */
export interface EncodeWhileLoading {
  images: string[];
  /** Their upright sizes. */
  sizes: ImageSize[];
  /** UTF-8 bytes of the question and the system prompt: at least as many as their tokens. */
  textBytes: number;
}

/** Template tokens around the text (ChatML markers, role names, the default system prompt), with room to spare. */
const TEMPLATE_TOKENS = 64;

/**
 * Whether the prompt certainly fits the context, by an upper bound on its tokens (a token is at least one byte):
 * only then are the images encoded before the prompt is tokenized. Otherwise they wait for the exact count
 * (runPrompt), so that a prompt too long is refused before the vision tower runs.
 */
function surelyFits(config: AnyModelConfig, encode: EncodeWhileLoading, pixels: RequestPixelBudget, flags: ResolvedFlags): boolean {
  const family = familyOf(config);
  const options = { minPixels: pixels.minPixels, maxPixels: pixels.maxPixels, imagesInPrompt: encode.images.length, ...imageOptions(flags) };
  const imageTokens = encode.sizes.reduce((n, size) => n + family.imageTokens(config, size, options), 0);
  return encode.textBytes + TEMPLATE_TOKENS + imageTokens + flags.genLength <= contextLength(config);
}

/** After Ctrl-C, whatever failed reports as 'interrupted' (exit 130). */
export function asInterrupted(error: unknown, signal: AbortSignal): unknown {
  const interrupted = error instanceof DvlError && error.kind === 'interrupted';
  return signal.aborted && !interrupted ? new DvlError('interrupted', 'interrupted') : error;
}

type Renderer = LiveRenderer | PlainRenderer | JsonlRenderer;

/** --jsonl: events; --json: nothing until the end; a terminal: the live view (unless --no-live); else plain text. */
export function chooseRenderer(flags: { json?: boolean; jsonl?: boolean; live?: boolean }): Renderer | null {
  const out = process.stdout;
  if (flags.jsonl) return new JsonlRenderer(out);
  if (flags.json) return null;
  // TERM=dumb: a terminal that cannot move the cursor gets the plain stream.
  if (out.isTTY && flags.live !== false && process.env.TERM !== 'dumb') return new LiveRenderer(out, colorsFor(out));
  return new PlainRenderer(out);
}

/**
 * One progress event: to the renderer, and to the spinner on stderr. When the answer is drawn on the
 * terminal (stdout is one), the spinner stops as the first block starts: the answer is the progress now.
 */
/** --tiles and --image-mode, for the model families that read them. */
export function imageOptions(flags: Pick<AskFlags, 'tiles' | 'imageMode'>): FamilyImageOptions | undefined {
  if (flags.tiles === undefined && flags.imageMode === undefined) return undefined;
  return { ...(flags.tiles !== undefined ? { tiles: flags.tiles } : {}), ...(flags.imageMode ? { imageMode: flags.imageMode } : {}) };
}

export function onAskEvent(event: AskEvent, progress: Progress, renderer: Renderer | null): void {
  if (event.type === 'image-progress') {
    const which = event.images > 1 ? `image ${event.image + 1} of ${event.images}, ` : '';
    progress.live(`encoding images (${which}crop ${Math.min(event.done + 1, event.crops)} of ${event.crops})`);
  } else if (event.type === 'stage') {
    const label = { preprocess: 'reading images', vision: 'encoding images', prefill: 'reading the prompt', generate: 'generating' }[event.stage];
    if (event.stage === 'generate' && renderer && !(renderer instanceof JsonlRenderer) && process.stdout.isTTY) progress.stop();
    else progress.live(label);
  } else if (event.type === 'block-start' && !(process.stdout.isTTY && renderer && !(renderer instanceof JsonlRenderer))) {
    progress.live(`generating (block ${event.block + 1})`);
  }
  renderer?.onEvent(event);
}

/**
 * --verbose: per-stage timings, NFE, tokens per NFE, tokens/s and peak memory, on stderr. The pixel budget
 * only when the prompt holds images; the load time only when `loadMs` is given (chat reports it once). With
 * `remoteUrl` (--host) the model ran in that server: this process's memory says nothing about the run.
 */
export function reportVerbose(
  result: AskResult,
  loadMs: number | undefined,
  about: { pixels?: RequestPixelBudget; blockSize?: BlockSizeInfo; startup?: StartupTimes; remoteUrl?: string },
): void {
  const ms = result.stats.ms;
  const err = (line: string) => process.stderr.write(`dvl: ${line}\n`);
  const { pixels, startup, remoteUrl } = about;
  // The pixel budget means something only to families that resize to it (those without crops).
  if (pixels && result.stats.imageTokens > 0 && result.images.every((im) => im.crops === undefined)) {
    if (pixels.moved === 'min') err(`--min-pixels lowered to ${pixels.minPixels} to fit --max-pixels`);
    if (pixels.moved === 'max') err(`--max-pixels raised to ${pixels.maxPixels} to fit --min-pixels`);
    err(`pixel budget ${pixels.minPixels}..${pixels.maxPixels} (${PIXEL_BUDGET_SOURCE[pixels.from]})`);
  }
  result.images.forEach((im, i) => {
    const crops = im.crops !== undefined ? `${im.crops} crop${im.crops === 1 ? '' : 's'}, ` : '';
    err(`image ${i + 1}: ${im.original.width}x${im.original.height} -> ${im.resized.width}x${im.resized.height}, ${crops}${im.tokens} tokens`);
  });
  if (about.blockSize) err(`block size ${about.blockSize.size} (${about.blockSize.from})`);
  const load = loadMs === undefined ? '' : `load ${loadMs.toFixed(0)} ms, `;
  if (loadMs !== undefined && startup) err(describeStartup(startup));
  err(`${load}preprocess ${ms.preprocess.toFixed(0)} ms, vision ${ms.vision.toFixed(0)} ms, prefill ${ms.prefill.toFixed(0)} ms, decode ${ms.decode.toFixed(0)} ms`);
  const generated = result.tokens.length;
  const perSecond = ms.decode > 0 ? (generated / ms.decode) * 1000 : 0;
  err(`${result.stats.promptTokens} prompt tokens, ${generated} generated, ${result.stats.nfe} NFE, ${(generated / Math.max(1, result.stats.nfe)).toFixed(2)} tokens/NFE, ${perSecond.toFixed(1)} tokens/s`);
  if (remoteUrl) err(`peak RSS not known here: the model ran in dvl serve at ${remoteUrl}`);
  else err(`peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`);
}

const PIXEL_BUDGET_SOURCE: Record<RequestPixelBudget['from'], string> = {
  given: '--min-pixels / --max-pixels',
  config: "the model's config.json min_pixels / max_pixels",
  default: "DiffusionVL's training budget; the model's config.json sets none",
};

/** `--verbose`: the model load's parts. */
export function describeStartup(s: StartupTimes): string {
  const prepacked = { used: 'from pre-packed weights', built: 'pre-packed weights built for the next start', off: 'no pre-packing (DVL_PREPACK=0, or an fp32/fp16 model)', unavailable: 'no pre-packed weights: the store is not writable', unusable: "pre-packed weights do not reproduce this model's logits here, not used", 'no-space': 'no pre-packed weights: not enough disk space to save them' }[s.prepacked];
  // The tokenizer is built on this thread while the worker encodes images and creates the decoder session: it
  // overlaps them, so it is not a part of the load to add up (with images it can even exceed the load).
  return `start-up: decoder session ${s.decoderSessionMs.toFixed(0)} ms (${prepacked}), embeddings ${s.embeddingsMs.toFixed(0)} ms; alongside them, the tokenizer ${s.tokenizerMs.toFixed(0)} ms`;
}

/** The --json object (and the --jsonl final line, and a batch result line). */
export function resultJson(result: AskResult, settings: GenerationSettings, loadMs: number, flags: ResolvedFlags): Record<string, unknown> {
  return {
    text: result.text,
    tokens: result.tokens,
    model: flags.model,
    dtype: flags.dtype,
    settings: { ...settings, seed: result.seed },
    stopped_at_eos: result.stoppedAtEos,
    images: result.images,
    stats: {
      nfe: result.stats.nfe,
      prompt_tokens: result.stats.promptTokens,
      image_tokens: result.stats.imageTokens,
      generated_tokens: result.tokens.length,
      blocks: result.stats.blocks,
      ms: {
        load: round(loadMs),
        preprocess: round(result.stats.ms.preprocess),
        vision: round(result.stats.ms.vision),
        prefill: round(result.stats.ms.prefill),
        decode: round(result.stats.ms.decode),
      },
    },
  };
}

const round = (ms: number) => Math.round(ms * 10) / 10;

const IMAGE_EXTENSION = /\.(jpe?g|png|gif|webp|tiff?|bmp|avif|heic|heif)$/i;

/**
 * Whether a command-line argument names an image file: an existing regular file with an image extension.
 * Both, so that a prompt is never mistaken for one: a question that happens to end in ".png" is not a file
 * here, and a file without an image extension (notes.txt) is left alone.
 */
/** A single word ending in an image extension ("photo.png", "~/shots/a.jpg"): a path, not a question. */
export function looksLikeImagePath(arg: string): boolean {
  return IMAGE_EXTENSION.test(arg) && !/\s/.test(arg);
}

export function isImageFile(arg: string): boolean {
  if (!IMAGE_EXTENSION.test(arg)) return false;
  try {
    return fs.statSync(arg).isFile();
  } catch {
    return false;
  }
}

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

export function checkReadableFile(file: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw inputError(`image not found: ${file}`);
  }
  if (!st.isFile()) throw inputError(`not an image file: ${file}`);
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
