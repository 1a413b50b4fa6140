import fs from 'node:fs';
import type { Command } from 'commander';
import type { AskResult, GenerationSettings } from '../ask.js';
import { ensureConverted } from '../convert/ensure.js';
import { type ModelSourceRef, WEIGHT_DTYPES, type WeightDtype } from '../convert/manifest.js';
import { REMASKING_STRATEGIES, type RemaskingStrategy } from '../generate/schedule.js';
import { DvlError, inputError, usageError } from '../util/errors.js';
import { convertInWorker } from './convert-in-worker.js';
import { floatInRange, intInRange, oneOf } from './parse.js';
import { createProgress } from './progress.js';
import { DEFAULT_DTYPE, resolveSource } from './pull-command.js';

export const DEFAULT_MODEL = 'hustvl/DiffusionVL-Qwen2.5VL-3B';

interface AskFlags {
  model: string;
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
  threads?: number;
  system?: string;
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

/** The flags with the pixel budget filled in. */
type ResolvedFlags = AskFlags & { minPixels: number; maxPixels: number };

export function registerAsk(program: Command, signal: AbortSignal): void {
  program
    .command('ask')
    .description('Answer a question about images (or plain text) with a DiffusionVL model.')
    .argument('[args...]', 'image files, then the prompt (the last argument; "-" reads it from stdin)')
    .option('-m, --model <model>', 'checkpoint directory', DEFAULT_MODEL)
    .option('--dtype <dtype>', `weight precision of the converted model: ${WEIGHT_DTYPES.join(', ')}`, oneOf('--dtype', WEIGHT_DTYPES), DEFAULT_DTYPE)
    .option('-n, --gen-length <n>', 'number of tokens to generate', intInRange('--gen-length', 1, 1 << 16), 128)
    .option('-s, --steps <n>', 'denoising steps per block', intInRange('--steps', 1, 1024), 8)
    .option('--block-size <n>', "tokens per diffusion block (default: the model's, 8 for the released models)", intInRange('--block-size', 1, 4096))
    .option('-t, --temperature <t>', '0 = greedy (argmax); > 0 samples', floatInRange('--temperature', 0, 100), 0)
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = off)', intInRange('--top-k', 0), 0)
    .option('--top-p <p>', 'nucleus sampling mass (1 = off)', floatInRange('--top-p', 0, 1, { minExclusive: true }), 1)
    .option(
      '--remasking <strategy>',
      `which masked tokens to fill at each step: ${REMASKING_STRATEGIES.join(', ')}`,
      oneOf('--remasking', REMASKING_STRATEGIES),
      'low_confidence_static',
    )
    .option('--threshold <p>', 'confidence above which low_confidence_dynamic fills a token', floatInRange('--threshold', 0, 1), 0.85)
    .option('--seed <n>', 'seed for sampling (temperature > 0); same seed, same answer', intInRange('--seed', 0))
    // No commander defaults here: the preprocessing module (and with it the image library) loads only when an
    // answer is computed, so that --help and usage errors start fast. The defaults are in the text below.
    .option('--min-pixels <n>', 'smallest image area after resizing', intInRange('--min-pixels', 28 * 28))
    .option('--max-pixels <n>', 'largest image area after resizing', intInRange('--max-pixels', 28 * 28))
    .option('--threads <n>', 'CPU threads for onnxruntime (default: all cores)', intInRange('--threads', 1, 1024))
    .option('--system <text>', 'system prompt (default: the one the model was trained with)')
    .option('--json', 'print one JSON object (text, tokens, settings, stats) instead of the text')
    .option('-q, --quiet', 'no progress on stderr')
    .option('--verbose', 'timings, image sizes and pixel budget on stderr')
    .addHelpText(
      'after',
      `
Examples:
  dvl ask --model ./DiffusionVL-Qwen2.5VL-3B photo.jpg "Describe this image."
  dvl ask -m ./ckpt --json a.jpg b.jpg "What differs between these pictures?" | jq -r .text
  echo "Write a haiku about rain." | dvl ask -m ./ckpt -
  dvl ask -m ./ckpt --temperature 0.7 --top-p 0.9 --seed 42 photo.jpg "Tell a story about this."

The model is converted on first use (see 'dvl pull'). Images are turned upright by their EXIF
orientation, then resized to between --min-pixels and --max-pixels (default 384*384..512*512).
Exit codes: 0 ok, 1 usage, 2 bad input (image, prompt), 3 model or conversion problem.`,
    )
    .action(async (args: string[], flags: AskFlags) => {
      await runAsk(args, flags, signal);
    });
}

async function runAsk(args: string[], rawFlags: AskFlags, signal: AbortSignal): Promise<void> {
  // Everything that can be checked without the model is checked first, so mistakes fail in milliseconds.
  const { DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS } = await import('../preprocess/index.js');
  const flags: ResolvedFlags = { ...rawFlags, minPixels: rawFlags.minPixels ?? DEFAULT_MIN_PIXELS, maxPixels: rawFlags.maxPixels ?? DEFAULT_MAX_PIXELS };
  if (flags.minPixels > flags.maxPixels) throw usageError(`--min-pixels (${flags.minPixels}) is larger than --max-pixels (${flags.maxPixels})`);
  if (args.length === 0) throw usageError('missing the prompt: give it as the last argument, or "-" to read it from stdin');
  const images = args.slice(0, -1);
  const promptArg = args[args.length - 1];
  for (const image of images) checkReadableFile(image);
  const source = resolveSource(flags.model);
  const prompt = promptArg === '-' ? await readStdin(signal) : promptArg;
  if (prompt.trim().length === 0) throw inputError(promptArg === '-' ? 'the prompt read from stdin is empty' : 'the prompt is empty');

  const { result, settings, loadMs } = await answer(source, images, prompt, flags, signal);
  report(result, settings, loadMs, flags);
}

interface Answer {
  result: AskResult;
  settings: GenerationSettings;
  loadMs: number;
}

/** Converts the model if needed, loads it and generates; any failure after Ctrl-C reads as 'interrupted'. */
async function answer(source: ModelSourceRef, images: string[], prompt: string, flags: ResolvedFlags, signal: AbortSignal): Promise<Answer> {
  const progress = await createProgress({ quiet: flags.quiet });
  try {
    const tLoad = performance.now();
    const converted = await ensureConverted(source, flags.dtype, {
      onProgress: (stage, done, total) => progress.convert(stage, done, total),
      onConvertStart: (reason) => progress.step(`converting ${flags.model} to ${flags.dtype} (${reason})`),
      convert: (options) => convertInWorker(options, signal),
    });
    progress.live('loading model');
    // onnxruntime and the image decoder load only now: usage errors and --help stay fast.
    const [{ loadModel }, { ask }] = await Promise.all([import('../runtime/model.js'), import('../ask.js')]);
    const model = await loadModel(converted.dir, converted.manifest, { threads: flags.threads });
    const loadMs = performance.now() - tLoad;
    try {
      signal.throwIfAborted();
      progress.live(images.length > 0 ? 'reading images' : 'thinking');
      const settings: GenerationSettings = {
        genLength: flags.genLength,
        steps: flags.steps,
        blockSize: flags.blockSize ?? converted.manifest.config.blockSize,
        temperature: flags.temperature,
        topK: flags.topK,
        topP: flags.topP,
        remasking: flags.remasking,
        threshold: flags.threshold,
        seed: flags.seed,
      };
      const result = await ask(model, {
        images,
        prompt,
        system: flags.system,
        settings,
        minPixels: flags.minPixels,
        maxPixels: flags.maxPixels,
        signal,
        onEvent: (event) => {
          if (event.type === 'block-start') progress.live(`generating (block ${event.block + 1})`);
        },
      });
      return { result, settings, loadMs };
    } finally {
      await model.close();
    }
  } catch (error) {
    const interrupted = error instanceof DvlError && error.kind === 'interrupted';
    throw signal.aborted && !interrupted ? new DvlError('interrupted', 'interrupted') : error;
  } finally {
    progress.stop();
  }
}

/** The answer on stdout (text, or one JSON object with --json); with --verbose, details on stderr. */
function report(result: AskResult, settings: GenerationSettings, loadMs: number, flags: ResolvedFlags): void {
  if (flags.verbose) {
    const ms = result.stats.ms;
    const err = (line: string) => process.stderr.write(`dvl: ${line}\n`);
    err(`pixel budget ${flags.minPixels}..${flags.maxPixels}`);
    result.images.forEach((im, i) => err(`image ${i + 1}: ${im.original.width}x${im.original.height} -> ${im.resized.width}x${im.resized.height}, ${im.tokens} tokens`));
    err(`load ${loadMs.toFixed(0)} ms, preprocess ${ms.preprocess.toFixed(0)} ms, vision ${ms.vision.toFixed(0)} ms, prefill ${ms.prefill.toFixed(0)} ms, decode ${ms.decode.toFixed(0)} ms`);
    err(`${result.stats.promptTokens} prompt tokens, ${result.tokens.length} generated, ${result.stats.nfe} NFE, ${(result.tokens.length / Math.max(1, result.stats.nfe)).toFixed(2)} tokens/NFE`);
  }

  if (flags.json) {
    const out = {
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
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } else {
    process.stdout.write(`${result.text}\n`);
  }
}

const round = (ms: number) => Math.round(ms * 10) / 10;

function checkReadableFile(file: string): void {
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
