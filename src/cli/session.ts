/**
 * A model made ready and loaded in the inference worker for the answering commands (ask, batch, chat): the store
 * pulls and converts it if needed, the worker loads it (encoding a one-shot question's images meanwhile), and the
 * flags' settings and pixel budget are filled in with the model's own.
 */
import type { GenerationSettings } from '../ask.js';
import type { AnyModelConfig } from '../models/index.js';
import { blockSizeSource, contextLength, familyOf, pixelBudgetFor, type ImageSize, type RequestPixelBudget } from '../models/index.js';
import type { StartupTimes } from '../runtime/model.js';
import type { InferenceWorker } from '../runtime/worker-client.js';
import type { EncodeFirst } from '../runtime/worker-protocol.js';
import { prepareModel } from '../store/model-source.js';
import type { Progress } from '../store/progress.js';
import { DvlError } from '../util/errors.js';
import type { ChosenDtype } from '../convert/default-dtype.js';
import { imageOptions, requestSettings, type ResolvedFlags } from './flags.js';

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
  /** The dtype that answers and why (--dtype, or the model's default). */
  dtype: ChosenDtype;
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
    const dtype = { dtype: converted.manifest.dtype, why: converted.dtypeWhy };
    return { worker, settings, pixels, blockSize, dtype, loadMs: performance.now() - tLoad - worker.encodeMs, startup: worker.startup, close: () => worker.close() };
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
