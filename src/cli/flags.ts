/**
 * The flags every answering command (ask, batch, chat) shares: the model, the generation settings, the images, the
 * output; and what they turn into once checked (the settings of a request, the image options).
 */
import type { Command } from 'commander';
import type { FamilyImageOptions, GenerationSettings, JsonSchemaInput } from '../ask.js';
import { DTYPE_CHOICES, type DtypeChoice } from '../convert/weight-dtype.js';
import { REMASKING_STRATEGIES, type RemaskingStrategy } from '../generate/schedule.js';
import { FAST_GAIN, FAST_THRESHOLD } from '../generate/presets.js';
import { usageError } from '../util/errors.js';
import { formatOfFlags } from './json-format.js';
import { capThreads, flagParser, intInRange, oneOf } from './parse.js';
import { DEFAULT_DTYPE, DTYPE_HELP } from './pull-command.js';

export const DEFAULT_MODEL = 'hustvl/DiffusionVL-Qwen2.5VL-3B';

/** The reference's threshold for low_confidence_dynamic (DiffusionVL's generate()). */
export const DEFAULT_THRESHOLD = 0.85;

export interface AskFlags {
  model: string;
  token?: string;
  offline?: boolean;
  dtype: DtypeChoice;
  genLength: number;
  steps: number;
  blockSize?: number;
  temperature: number;
  topK: number;
  topP: number;
  /** Unset until resolveFlags: --fast changes its default. */
  remasking?: RemaskingStrategy;
  /** Unset until resolveFlags: --fast changes its default. */
  threshold?: number;
  /** --fast: dynamic remasking at FAST_THRESHOLD. */
  fast?: boolean;
  seed?: number;
  minPixels?: number;
  maxPixels?: number;
  /** SigLIP family: anyres_max_N's N. */
  tiles?: number;
  /** SigLIP family: 'pad' reads each image as one crop. */
  imageMode?: 'anyres' | 'pad';
  threads?: number;
  system?: string;
  /** --format json: the answer is a JSON object. */
  format?: 'json';
  /** --json-schema FILE: the answer is JSON valid against the schema in FILE. */
  jsonSchema?: string;
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
export type ResolvedFlags = AskFlags & {
  remasking: RemaskingStrategy;
  threshold: number;
  /** --format / --json-schema as the library takes them (the schema file read and checked). */
  jsonFormat?: JsonSchemaInput;
};

/** The options every answering command (ask, batch, chat) shares: model, generation, images, output. */
export function addModelOptions(command: Command): Command {
  return command
    .option('-m, --model <model>', 'Hub model id (org/name[@revision]) or checkpoint directory', DEFAULT_MODEL)
    .option('--token <token>', 'Hugging Face access token for gated or private models (default: $HF_TOKEN)')
    .option('--offline', 'no network: use downloaded models only (also HF_HUB_OFFLINE=1)')
    .option('--dtype <dtype>', DTYPE_HELP, oneOf('--dtype', DTYPE_CHOICES), DEFAULT_DTYPE)
    .option('-n, --gen-length <n>', 'number of tokens to generate', flagParser('genLength'), 128)
    .option('-s, --steps <n>', 'denoising steps per block', flagParser('steps'), 8)
    .option('--block-size <n>', "tokens per diffusion block (default: the model's, 8 for the released models)", flagParser('blockSize'))
    .option('-t, --temperature <t>', '0 = greedy (argmax); > 0 samples', flagParser('temperature'), 0)
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = off)', flagParser('topK'), 0)
    .option('--top-p <p>', 'nucleus sampling mass (1 = off)', flagParser('topP'), 1)
    .option(
      '--remasking <strategy>',
      `which masked tokens to fill at each step: ${REMASKING_STRATEGIES.join(', ')} (default low_confidence_static, the reference's)`,
      flagParser('remasking'),
    )
    .option('--threshold <p>', `confidence above which low_confidence_dynamic fills a token (default ${DEFAULT_THRESHOLD}; with --fast ${FAST_THRESHOLD})`, flagParser('threshold'))
    .option('--fast', `--remasking low_confidence_dynamic --threshold ${FAST_THRESHOLD}: ${FAST_GAIN} (README: "Faster decoding")`)
    .option('--seed <n>', 'seed for sampling (temperature > 0); same seed, same answer', flagParser('seed'))
    // No commander defaults here: the preprocessing module (and with it the image library) loads only when an
    // answer is computed, so that --help and usage errors start fast. The defaults are in the text below.
    .option('--min-pixels <n>', 'smallest image area after resizing', intInRange('--min-pixels', 28 * 28))
    .option('--max-pixels <n>', 'largest image area after resizing', intInRange('--max-pixels', 28 * 28))
    .option('--tiles <n>', "DiffusionVL-Qwen2.5-7B: keep at most about N tiles' worth of image tokens (anyres_max_N; default the model's, 4)", intInRange('--tiles', 1, 36))
    .option('--image-mode <mode>', 'DiffusionVL-Qwen2.5-7B: anyres (base image + tiles, the default) or pad (one crop, the cheapest)', oneOf('--image-mode', ['anyres', 'pad'] as const))
    .option('--threads <n>', 'CPU threads for onnxruntime (default: all cores)', intInRange('--threads', 1, 1024))
    .option('--system <text>', 'system prompt (default: the one the model was trained with)')
    .option('--format <format>', 'json: the answer is a JSON object (constrained decoding; see --json-schema)', oneOf('--format', ['json'] as const))
    .option('--json-schema <file>', 'the answer is JSON valid against the JSON Schema in <file> (size -n for it: README "Structured output")')
    .option('-q, --quiet', 'no progress on stderr')
    .option('--verbose', 'per-stage timings, NFE, tokens/NFE, tokens/s and peak memory on stderr');
}

/** --host and --api-key: ask and chat can answer on a running `dvl serve` (src/cli/remote.ts). */
export function addRemoteOptions(command: Command): Command {
  return command
    .option('--host <url>', 'send the request to a running dvl serve (default: $DVL_HOST)')
    .option('--api-key <key>', 'with --host: the key of a dvl serve started with --api-key (default: $DVL_API_KEY)');
}

/** The generation settings the flags ask for; blockSize undefined: the model's (known once it is loaded). */
export function requestSettings(flags: ResolvedFlags): Omit<GenerationSettings, 'blockSize'> & { blockSize?: number } {
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

/**
 * Validates the flags that need no model. The pixel budget is resolved once the model is known (its config.json
 * may set one): see openSession. Only two given bounds that conflict are an error here.
 */
export async function resolveFlags(rawFlags: AskFlags): Promise<ResolvedFlags> {
  if (rawFlags.minPixels !== undefined && rawFlags.maxPixels !== undefined && rawFlags.minPixels > rawFlags.maxPixels) {
    throw usageError(`--min-pixels (${rawFlags.minPixels}) is larger than --max-pixels (${rawFlags.maxPixels})`);
  }
  if (rawFlags.fast && rawFlags.remasking !== undefined && rawFlags.remasking !== 'low_confidence_dynamic') {
    throw usageError(`--fast is --remasking low_confidence_dynamic; it cannot go with --remasking ${rawFlags.remasking}`);
  }
  const jsonFormat = formatOfFlags(rawFlags);
  return {
    ...rawFlags,
    remasking: rawFlags.remasking ?? (rawFlags.fast ? 'low_confidence_dynamic' : 'low_confidence_static'),
    threshold: rawFlags.threshold ?? (rawFlags.fast ? FAST_THRESHOLD : DEFAULT_THRESHOLD),
    threads: capThreads(rawFlags.threads),
    ...(jsonFormat !== undefined ? { jsonFormat } : {}),
  };
}

/** --tiles and --image-mode, for the model families that read them. */
export function imageOptions(flags: Pick<AskFlags, 'tiles' | 'imageMode'>): FamilyImageOptions | undefined {
  if (flags.tiles === undefined && flags.imageMode === undefined) return undefined;
  return { ...(flags.tiles !== undefined ? { tiles: flags.tiles } : {}), ...(flags.imageMode ? { imageMode: flags.imageMode } : {}) };
}
