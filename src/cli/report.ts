/**
 * What an answer shows: the renderer for the output mode (live view, plain text, JSONL, nothing until --json's
 * object), the progress on stderr, --verbose's figures, and the --json object.
 */
import type { AskEvent, AskResult, GenerationSettings } from '../ask.js';
import type { RequestPixelBudget } from '../models/index.js';
import type { StartupTimes } from '../runtime/model.js';
import type { ChosenDtype } from '../convert/default-dtype.js';
import type { WeightDtype } from '../convert/weight-dtype.js';
import type { Progress } from '../store/progress.js';
import type { BlockSizeInfo } from './session.js';
import type { ResolvedFlags } from './flags.js';
import { finishReasonOf } from './json-format.js';
import { JsonlRenderer } from './render/jsonl.js';
import { LiveRenderer } from './render/live.js';
import { PlainRenderer } from './render/plain.js';
import { colorsFor } from './render/terminal.js';

export type Renderer = LiveRenderer | PlainRenderer | JsonlRenderer;

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
  about: { pixels?: RequestPixelBudget; blockSize?: BlockSizeInfo; startup?: StartupTimes; remoteUrl?: string; dtype?: ChosenDtype },
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
  if (about.dtype) err(`dtype ${about.dtype.dtype} (${about.dtype.why})`);
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
  const prepacked = {
    used: 'weights packed for this machine',
    elsewhere: 'weights packed on another machine or onnxruntime: packed again in memory',
    built: 'weights packed now and saved for the next start',
    off: 'no packing (DVL_PREPACK=0, or an fp32/fp16 model)',
    unavailable: 'weights not packed: the store is not writable, or another dvl is packing them',
    unusable: "packed weights do not reproduce this model's logits here, not used",
    'no-space': 'weights not packed: not enough disk space to save them',
  }[s.prepacked];
  // The tokenizer is built on this thread while the worker encodes images and creates the decoder session: it
  // overlaps them, so it is not a part of the load to add up (with images it can even exceed the load).
  return `start-up: decoder session ${s.decoderSessionMs.toFixed(0)} ms (${prepacked}), embeddings ${s.embeddingsMs.toFixed(0)} ms; alongside them, the tokenizer ${s.tokenizerMs.toFixed(0)} ms`;
}

/** The --json object (and the --jsonl final line, and a batch result line). */
export function resultJson(result: AskResult, settings: GenerationSettings, loadMs: number, flags: ResolvedFlags & { dtype: WeightDtype }): Record<string, unknown> {
  return {
    text: result.text,
    tokens: result.tokens,
    model: flags.model,
    dtype: flags.dtype,
    settings: { ...settings, seed: result.seed },
    stopped_at_eos: result.stoppedAtEos,
    // 'length': the gen length ran out first (under --format / --json-schema: before the JSON document closed).
    finish_reason: finishReasonOf(result),
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
