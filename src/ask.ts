/**
 * One question about zero or more images, end to end: preprocess the images, encode them, build the prompt,
 * run block diffusion, decode the answer. The CLI (ask, batch, chat) and the server use this, in-process or
 * split over two threads (runtime/worker*.ts).
 *
 * The work has two sides, so that each can run where it is cheapest:
 * - the text side (`promptOf`, `AnswerText`) needs only the tokenizer: it turns the conversation into prompt
 *   segments (token ids and image places) and the generated ids back into text, stop strings included;
 * - the model side (`runPrompt`) needs only the model: images -> embeddings, prompt rows, block diffusion.
 *   It reports RunEvents (stages, the prompt's length, raw generation events) and ids, never text.
 * `ask` joins the two in one thread. The inference worker runs the model side in its thread and the caller's
 * thread keeps the tokenizer: building it (about a second) then overlaps the decoder session's creation.
 *
 * AskEvents are what renderers see: the stage being worked on and the generation events with their text
 * already decoded. Committed text is decoded with a StreamingDecoder: a multi-byte character split over two
 * tokens (or two blocks) is held back until complete, and the `text` of every block-end plus the `text` of
 * `finished` is exactly the answer's text.
 */
import { createHash } from 'node:crypto';
import { generate, type GenerationEvent, type GenerationSettings } from './generate/bd3lm.js';
import type { TokenConstraint } from './generate/constraint.js';
import { checkJsonFormat, JsonConstraintCache, type JsonSchemaInput } from './generate/json-schema/index.js';
import { contextLength, familyOf } from './models/index.js';
import type { ImageOptions, ImageSize, PreparedImage } from './models/family.js';
import type { AnyModelConfig } from './models/index.js';
import { buildPrompt, promptLength as segmentsLength, turnImages, type PromptSegment, type Turn, type UserPart } from './prompt/conversation.js';
import type { StreamingDecoder, TextTokenizer } from './prompt/tokenizer.js';
import type { LoadedModel } from './runtime/model.js';
import { inputError, usageError } from './util/errors.js';

export type { GenerationSettings } from './generate/bd3lm.js';
export type { JsonSchemaInput } from './generate/json-schema/index.js';

export interface AskRequest {
  /** Image files (or their bytes), in the order their placeholders appear. */
  images: (string | Buffer)[];
  prompt: string;
  /** The new turn as ordered text and image parts (the server's content parts); replaces `prompt` when given. */
  parts?: UserPart[];
  /** System prompt; undefined = the model's default, null = none. */
  system?: string | null;
  /** Earlier turns of a conversation. */
  history?: Turn[];
  /**
   * The images of the earlier turns, in conversation order (as many as the history's user turns count):
   * the prompt holds every turn's image tokens. Encoded again unless `imageCache` holds them.
   */
  historyImages?: (string | Buffer)[];
  /** Encoded images, reused across requests (chat, the server): an image is encoded once. */
  imageCache?: ImageCache;
  settings: GenerationSettings;
  minPixels: number;
  maxPixels: number;
  /** How the model family reads images (the SigLIP family: anyres_max_N's N, or 'pad'). */
  imageOptions?: FamilyImageOptions;
  /**
   * Generation ends after the block in which one of these strings first appears in the answer's text; the
   * text is cut before it (and never streamed past it). Default: none.
   */
  stop?: string[];
  /**
   * Structured output: the answer is a JSON document valid against this JSON Schema ('json_object': any JSON
   * object), within the gen length (see generate/json-schema/). A schema that is not supported, or a gen
   * length its shortest document does not fit in, is a usage error before anything runs.
   */
  jsonSchema?: JsonSchemaInput;
  /** Keep the decoder cache's rows that this prompt shares with the previous one (see PromptJob.reuseCache). */
  reuseCache?: boolean;
  /** A context shorter than the model's (see PromptJob.contextLength). */
  contextLength?: number;
  onEvent?: (event: GenerationEvent) => void;
  /** Stages and generation events with decoded text (for live display and JSONL). */
  onProgress?: (event: AskEvent) => void;
  signal?: AbortSignal;
}

/**
 * What `onProgress` reports. Indices are output indices (0 = first generated token); `size` is how many
 * output slots a block has (the first block can start inside the prompt, the last can end past gen length).
 */
export type AskEvent =
  /** `at`: when the stage began, in epoch milliseconds (`performance.timeOrigin + performance.now()`, any thread). */
  | { type: 'stage'; stage: Stage; at?: number }
  /** A tower pass of image `image` (0-based over the prompt's images) is done: `done` of its `crops`. */
  | { type: 'image-progress'; image: number; images: number; done: number; crops: number }
  | { type: 'block-start'; block: number; firstIndex: number; size: number }
  /** Tokens filled in one denoising step, most confident first is the order the strategy picked them in. */
  | { type: 'unmask'; block: number; step: number; indices: number[]; ids: number[]; pieces: string[] }
  /** `text`: newly complete answer text (after EOS or a stop string nothing more); `ids` the block's output ids. */
  | { type: 'block-end'; block: number; firstIndex: number; ids: number[]; text: string; committed: boolean }
  /** The text held back at the end (an incomplete character), usually ''. */
  | { type: 'finished'; text: string; nfe: number; blocks: number; stoppedAtEos: boolean };

export type Stage = 'preprocess' | 'vision' | 'prefill' | 'generate';

/** Image options a request may set; the rest of ImageOptions comes from the request and its prompt. */
export type FamilyImageOptions = Pick<ImageOptions, 'tiles' | 'imageMode'>;

/**
 * Why generation ended: EOS, a stop string, or the gen length. Under a JSON Schema: 'eos' once the document is
 * complete (even if no EOS fitted after it), 'length' when the gen length ran out before it closed.
 */
export type FinishReason = 'eos' | 'stop' | 'length';

/**
 * Vision-tower output of images already seen, keyed by the image's bytes (sha256; a path is read) and pixel
 * budget, least recently used dropped first beyond `maxBytes` of embeddings.
 */
export class ImageCache {
  private readonly entries = new Map<string, ImageEntry>();
  private bytes = 0;
  constructor(private readonly maxBytes = Number.POSITIVE_INFINITY) {}

  get(key: string): ImageEntry | undefined {
    const entry = this.entries.get(key);
    if (entry) {
      this.entries.delete(key);
      this.entries.set(key, entry);
    }
    return entry;
  }
  set(key: string, value: ImageEntry): void {
    if (this.entries.has(key)) this.delete(key);
    this.entries.set(key, value);
    this.bytes += value.embeds.byteLength;
    for (const [oldest] of this.entries) {
      if (this.bytes <= this.maxBytes || this.entries.size === 1) break;
      this.delete(oldest);
    }
  }
  get size(): number {
    return this.entries.size;
  }
  /** Bytes of embeddings held. */
  get heldBytes(): number {
    return this.bytes;
  }
  clear(): void {
    this.entries.clear();
    this.bytes = 0;
  }
  private delete(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.bytes -= entry.embeds.byteLength;
    this.entries.delete(key);
  }
}

export interface ImageEntry {
  embeds: Float32Array;
  image: PreparedImage;
}

/** The cache key of an image: its content and what its preprocessing depended on (the family says what). */
export function imageKey(bytes: Uint8Array, preprocessing: string): string {
  return `${preprocessing}:${createHash('sha256').update(bytes).digest('hex')}`;
}

export interface AskStats {
  nfe: number;
  promptTokens: number;
  imageTokens: number;
  /** Prompt tokens whose K/V came from the previous request's cache (reuseCache), not prefilled. */
  cachedTokens: number;
  blocks: number;
  ms: { preprocess: number; vision: number; prefill: number; decode: number };
}

export interface AskResult {
  text: string;
  /** Generated ids up to, not including, the first EOS (and up to the last block made). */
  tokens: number[];
  /** All G output ids as the reference returns them. */
  rawTokens: number[];
  stoppedAtEos: boolean;
  finishReason: FinishReason;
  /** The stop string that ended the answer (finishReason 'stop'). */
  stopSequence?: string;
  /** With a jsonSchema: whether the answer is a complete JSON document (false: cut short by the gen length or a stop string). */
  constraintComplete?: boolean;
  seed: number;
  /** Per image of the new turn; `crops`: tower passes, for families that cut images into crops. */
  images: { original: { width: number; height: number }; resized: { width: number; height: number }; tokens: number; crops?: number }[];
  stats: AskStats;
}

/** The model side's result: everything but the text. */
export type RunResult = Omit<AskResult, 'text' | 'finishReason' | 'stopSequence'> & { stoppedByCaller: boolean };

/** What the model side reports: stages, the prompt's length once the images are encoded, generation events. */
export type RunEvent =
  | Extract<AskEvent, { type: 'stage' }>
  | Extract<AskEvent, { type: 'image-progress' }>
  | { type: 'prompt'; length: number }
  | GenerationEvent;

/** The model side's work: the prompt as ids and image places, its images, the settings. */
export interface PromptJob {
  segments: PromptSegment[];
  /** Every image of the conversation, in prompt order (earlier turns first). */
  images: (string | Buffer)[];
  /** How many of `images` (the last ones) belong to the new turn: `result.images` describes those. */
  newImages: number;
  imageCache?: ImageCache;
  settings: GenerationSettings;
  minPixels: number;
  maxPixels: number;
  imageOptions?: FamilyImageOptions;
  /**
   * Keep the rows of the decoder's cache that hold this prompt's first whole blocks (the previous request's
   * prompt, or its answer, shared the same tokens and images): only the rest is prefilled. Exact where a row's
   * K/V does not depend on the other rows of its call (fp32, fp16, int4); the model says so.
   */
  reuseCache?: boolean;
  /**
   * The most prompt plus answer tokens this request may use: the model's context (max_position_embeddings) or a
   * lower limit the caller sets (`dvl serve --ctx-size`, Ollama's num_ctx). A longer request is refused (an
   * input error) before any image is encoded. Default: the model's.
   */
  contextLength?: number;
  onRun?: (event: RunEvent) => void;
  /** Asked after each finished block: true ends generation (stop strings). */
  stopAfterBlock?: (block: number) => boolean | Promise<boolean>;
  /** Structured output: the constraint every generated token obeys (see AskRequest.jsonSchema). */
  constraint?: TokenConstraint;
  signal?: AbortSignal;
}

/** The text side: a conversation -> the model side's prompt segments and images. */
export function promptOf(tokenizer: TextTokenizer, request: Pick<AskRequest, 'images' | 'prompt' | 'parts' | 'system' | 'history' | 'historyImages'>) {
  const history = request.history ?? [];
  const historyImages = request.historyImages ?? [];
  const historyImageCount = history.reduce((n, t) => n + turnImages(t), 0);
  if (historyImageCount !== historyImages.length) {
    throw usageError(`the conversation history counts ${historyImageCount} images but ${historyImages.length} were given`);
  }
  const last: Turn = request.parts ? { role: 'user', text: '', parts: request.parts } : { role: 'user', text: request.prompt, images: request.images.length };
  if (turnImages(last) !== request.images.length) {
    throw usageError(`the message has ${turnImages(last)} image places but ${request.images.length} images were given`);
  }
  const turns: Turn[] = [...history, last];
  return {
    segments: buildPrompt(tokenizer, { system: request.system, turns }),
    images: [...historyImages, ...request.images],
    newImages: request.images.length,
  };
}

/** Per tokenizer (so per loaded model): the JSON constraints of in-process asks. */
const constraintCaches = new WeakMap<TextTokenizer, JsonConstraintCache>();

/** The constraint for a request's jsonSchema, from the model's cache (the vocabulary is built once per model). */
function constraintFor(model: Pick<LoadedModel, 'tokenizer' | 'manifest'>, schema: JsonSchemaInput): TokenConstraint {
  let cache = constraintCaches.get(model.tokenizer);
  if (!cache) {
    const { tokenizer } = model;
    cache = new JsonConstraintCache(() => tokenizer.tokenizerJson, model.manifest.config.eosTokenId);
    constraintCaches.set(model.tokenizer, cache);
  }
  return cache.get(schema);
}

/** Both sides in this thread. */
export async function ask(model: LoadedModel, request: AskRequest): Promise<AskResult> {
  const prompt = promptOf(model.tokenizer, request);
  if (request.jsonSchema !== undefined) checkJsonFormat(request.jsonSchema, request.settings.genLength);
  const constraint = request.jsonSchema !== undefined ? constraintFor(model, request.jsonSchema) : undefined;
  const text = new AnswerText(model.tokenizer, model.manifest.config.eosTokenId, request.settings.genLength, { onProgress: request.onProgress, stop: request.stop });
  const run = await runPrompt(model, {
    ...prompt,
    imageCache: request.imageCache,
    settings: request.settings,
    minPixels: request.minPixels,
    maxPixels: request.maxPixels,
    imageOptions: request.imageOptions,
    reuseCache: request.reuseCache,
    contextLength: request.contextLength,
    constraint,
    signal: request.signal,
    onRun: (event) => {
      if (event.type !== 'stage' && event.type !== 'prompt' && event.type !== 'image-progress') request.onEvent?.(event);
      text.onRun(event);
    },
    stopAfterBlock: request.stop?.length ? () => text.stopped : undefined,
  });
  return text.result(run);
}

/**
 * The text side's check of a request against the context, before it is queued or any image is encoded: the
 * prompt's exact length from its ids and the images' upright sizes (`sizes`, in prompt order, earlier turns
 * first), as runPrompt will count it. Throws checkContext's input error.
 */
export function checkRequestContext(
  tokenizer: TextTokenizer,
  config: AnyModelConfig,
  request: Pick<AskRequest, 'images' | 'prompt' | 'parts' | 'system' | 'history' | 'historyImages' | 'settings' | 'minPixels' | 'maxPixels' | 'imageOptions' | 'contextLength'>,
  sizes: readonly ImageSize[],
): void {
  checkContext(requestPromptLength(tokenizer, config, request, sizes), request.settings.genLength, request.contextLength ?? contextLength(config));
}

/**
 * The prompt's length in tokens as runPrompt will count it (stats.promptTokens), from the text side alone: the
 * prompt's ids and the images' upright sizes (`sizes`, in prompt order, earlier turns first).
 */
export function requestPromptLength(
  tokenizer: TextTokenizer,
  config: AnyModelConfig,
  request: Pick<AskRequest, 'images' | 'prompt' | 'parts' | 'system' | 'history' | 'historyImages' | 'minPixels' | 'maxPixels' | 'imageOptions'>,
  sizes: readonly ImageSize[],
): number {
  const prompt = promptOf(tokenizer, request);
  const family = familyOf(config);
  const options: ImageOptions = { minPixels: request.minPixels, maxPixels: request.maxPixels, imagesInPrompt: prompt.images.length, ...request.imageOptions };
  const tokens = sizes.map((size) => family.imageTokens(config, size, options));
  const length = segmentsLength(prompt.segments, tokens);
  const limit = prompt.images.length > 0 ? family.maxImagePromptLength(config) : undefined;
  return limit !== undefined ? Math.min(length, limit) : length;
}

/**
 * Refuses a prompt that, with the tokens to generate, does not fit the context (an input error: exit 2 on the
 * command line, 400 on the APIs). Positions past max_position_embeddings are ones the model never saw.
 */
export function checkContext(promptTokens: number, genLength: number, context: number): void {
  if (promptTokens + genLength <= context) return;
  const room = context - genLength;
  throw inputError(
    room > 0
      ? `prompt is ${promptTokens} tokens; the limit is ${room} (a context of ${context} tokens, less the ${genLength} to generate)`
      : `the context is ${context} tokens, which leaves no room for a prompt with ${genLength} tokens to generate`,
  );
}

/** Now, in epoch milliseconds with sub-millisecond precision: comparable between threads. */
export const epochNow = () => performance.timeOrigin + performance.now();

/** Per decoder cache row, what it holds: a token id or an image's row (for reuseCache). */
type RowKeys = readonly (number | string)[];

/** The model side: images -> embeddings, prompt rows, block diffusion. */
export async function runPrompt(model: Omit<LoadedModel, 'tokenizer'>, job: PromptJob): Promise<RunResult> {
  const { config } = model.manifest;
  const hidden = config.text.hiddenSize;
  const emit = job.onRun;
  const family = familyOf(config);
  const imageOptions: ImageOptions = { minPixels: job.minPixels, maxPixels: job.maxPixels, imagesInPrompt: job.images.length, ...job.imageOptions };
  const preprocessing = family.imageKey(config, imageOptions);
  const cache = job.imageCache;

  const t0 = performance.now();
  if (job.images.length > 0) emit?.({ type: 'stage', stage: 'preprocess', at: epochNow() });
  const keys: (string | undefined)[] = [];
  const preprocessed: (PreparedImage | undefined)[] = [];
  const known: (Float32Array | undefined)[] = [];
  for (const image of job.images) {
    // Keyed by content, so the same photo sent again (as bytes or as a path) is found; a file is read once.
    const bytes = cache || job.reuseCache ? await readImage(image) : undefined;
    const key = bytes ? imageKey(bytes, preprocessing) : undefined;
    const entry = key ? cache?.get(key) : undefined;
    keys.push(key);
    known.push(entry?.embeds);
    // A file that could not be read goes as its path: preprocessing reports the problem in its own words.
    const name = typeof image === 'string' ? image : imageOptions.name;
    preprocessed.push(entry?.image ?? (await family.prepareImage(bytes ?? image, config, { ...imageOptions, name })));
  }
  const t1 = performance.now();
  // The prompt's length is known now, from the images' sizes: a prompt too long for the context is refused
  // before the vision tower runs.
  const expectedTokens = preprocessed.map((p) => family.imageTokens(config, p!.original, imageOptions));
  const expectedLength = segmentsLength(job.segments, expectedTokens);
  const limit = job.images.length > 0 ? family.maxImagePromptLength(config) : undefined;
  checkContext(limit !== undefined ? Math.min(expectedLength, limit) : expectedLength, job.settings.genLength, job.contextLength ?? contextLength(config));
  const imageEmbeds: Float32Array[] = [];
  if (job.images.length > 0) {
    emit?.({ type: 'stage', stage: 'vision', at: epochNow() });
    for (let i = 0; i < job.images.length; i++) {
      const crops = preprocessed[i]!.crops ?? 1;
      // Only for families that cut images into crops (the others' output stays as it was).
      const progressOf = (done: number) => preprocessed[i]!.crops !== undefined && emit?.({ type: 'image-progress', image: i, images: job.images.length, done, crops });
      const embeds = known[i] ?? (await (await model.vision()).encode(preprocessed[i]!, progressOf)).embeds;
      if (known[i]) progressOf(crops);
      imageEmbeds.push(embeds);
      if (!known[i] && cache && keys[i]) cache.set(keys[i]!, { embeds, image: preprocessed[i]! });
    }
  }
  const t2 = performance.now();

  const imageTokens = imageEmbeds.map((e) => e.length / hidden);
  imageTokens.forEach((n, i) => {
    if (n !== expectedTokens[i]) throw new Error(`image ${i + 1} became ${n} tokens, but its size promised ${expectedTokens[i]}`);
  });
  const splicedLength = segmentsLength(job.segments, imageTokens);
  if (splicedLength === 0) throw inputError('the prompt is empty');
  // The SigLIP family's reference cuts image prompts to tokenizer_model_max_length after splicing.
  const promptLength = limit !== undefined ? Math.min(splicedLength, limit) : splicedLength;
  const spliced = new Float32Array(splicedLength * hidden);
  const rowKeys: (number | string)[] = [];
  let row = 0;
  for (const segment of job.segments) {
    if (segment.kind === 'tokens') {
      for (const id of segment.ids) {
        model.embeddings.rowInto(id, spliced, hidden * row++);
        rowKeys.push(id);
      }
    } else {
      spliced.set(imageEmbeds[segment.index], hidden * row);
      row += imageTokens[segment.index];
      for (let r = 0; r < imageTokens[segment.index]; r++) rowKeys.push(`${keys[segment.index]}#${r}`);
    }
  }
  const promptEmbeds = promptLength === splicedLength ? spliced : spliced.subarray(0, promptLength * hidden);
  rowKeys.length = promptLength;
  emit?.({ type: 'prompt', length: promptLength });

  const s = job.settings;
  const decoder = model.decoder;
  // int8 quantises each call's activations per tensor (DynamicQuantizeMatMul): a row's K/V depends on the
  // other rows of its call, so rows prefilled with another prompt are not exactly what a fresh prefill makes.
  const reuse = job.reuseCache === true && model.manifest.dtype !== 'int8';
  const cachedRows = reuse ? reusableRows(decoder.rowKeys, rowKeys, decoder.cacheLength, s.blockSize, promptLength, s.genLength) : 0;
  if (cachedRows === 0) decoder.reset();
  // A request that fails half-way leaves rows nobody has labelled: not reused.
  decoder.rowKeys = null;
  model.decoder.reserve(Math.ceil((promptLength + s.genLength) / s.blockSize) * s.blockSize);
  let firstBlockAt = 0;
  let outputEnd = 0;
  let uncommitted = false;
  emit?.({ type: 'stage', stage: 'prefill', at: epochNow() });
  const result = await generate({
    decoder: model.decoder,
    embeddings: model.embeddings,
    promptEmbeds,
    promptLength,
    genLength: s.genLength,
    steps: s.steps,
    blockSize: s.blockSize,
    temperature: s.temperature,
    topK: s.topK,
    topP: s.topP,
    remasking: s.remasking,
    threshold: s.threshold,
    seed: s.seed,
    maskTokenId: config.maskTokenId,
    eosTokenId: config.eosTokenId,
    quirks: family.generation,
    cachedRows,
    stopAfterBlock: job.stopAfterBlock,
    constraint: job.constraint,
    signal: job.signal,
    onEvent: (event) => {
      if (event.type === 'block-start' && firstBlockAt === 0) {
        firstBlockAt = performance.now();
        emit?.({ type: 'stage', stage: 'generate', at: epochNow() });
      }
      if (event.type === 'block-end') {
        outputEnd = event.firstIndex + event.ids.length;
        uncommitted ||= !event.committed;
      }
      emit?.(event);
    },
  });
  const t3 = performance.now();
  if (reuse && !uncommitted) {
    // The cache now holds positions 0..cacheLength-1 in order: the prompt, then the committed answer blocks.
    decoder.rowKeys = [...rowKeys, ...result.tokens].slice(0, decoder.cacheLength);
  }
  const reached = result.stopped ? result.tokens.slice(0, outputEnd) : result.tokens;
  const eos = reached.indexOf(config.eosTokenId);
  const tokens = eos < 0 ? reached : reached.slice(0, eos);
  const prefillEnd = firstBlockAt || t3;
  const first = job.images.length - job.newImages;
  return {
    tokens,
    rawTokens: result.tokens,
    stoppedAtEos: result.stoppedAtEos,
    stoppedByCaller: result.stopped,
    ...(result.constraintComplete !== undefined ? { constraintComplete: result.constraintComplete } : {}),
    seed: result.seed,
    images: preprocessed.slice(first).map((p, j) => ({
      original: { width: p!.original.width, height: p!.original.height },
      resized: { width: p!.resized.width, height: p!.resized.height },
      tokens: imageTokens[first + j],
      ...(p!.crops !== undefined ? { crops: p!.crops } : {}),
    })),
    stats: {
      nfe: result.nfe,
      promptTokens: promptLength,
      imageTokens: imageTokens.reduce((a, b) => a + b, 0),
      cachedTokens: result.cachedRows,
      blocks: result.blocks,
      ms: { preprocess: t1 - t0, vision: t2 - t1, prefill: prefillEnd - t2, decode: t3 - prefillEnd },
    },
  };
}

/**
 * How many rows of the cache the new prompt can keep: the common prefix of what the cache holds and the new
 * prompt's rows, in whole blocks, no further than the prompt's whole blocks (the rows generation prefills).
 */
export function reusableRows(
  cached: RowKeys | null | undefined,
  prompt: RowKeys,
  cacheLength: number,
  blockSize: number,
  promptLength: number,
  genLength: number,
): number {
  if (!cached || blockSize >= promptLength + genLength) return 0;
  const limit = Math.min(cached.length, cacheLength, Math.floor(promptLength / blockSize) * blockSize);
  let same = 0;
  while (same < limit && cached[same] === prompt[same]) same++;
  return same - (same % blockSize);
}

/** The image's bytes (a path is read), or undefined when the file cannot be read. */
async function readImage(image: string | Buffer): Promise<Buffer | undefined> {
  if (typeof image !== 'string') return image;
  const { readFile } = await import('node:fs/promises');
  return readFile(image).catch(() => undefined);
}

/**
 * The text side of one answer: RunEvents -> AskEvents (block starts in output slots, unmasked tokens with the
 * text of each token on its own, which can be half a character, committed text through a StreamingDecoder cut
 * at the first EOS or stop string) and the RunResult -> the AskResult.
 */
export class AnswerText {
  private readonly decoder: StreamingDecoder;
  private readonly emit?: (event: AskEvent) => void;
  private readonly stops: string[];
  private promptLength = 0;
  private ended = false;
  /** A stop string was found: nothing more is text. */
  stopped = false;
  /** The stop string found. */
  private stopString: string | undefined;
  /** Text shown so far, and text held back because it could be the start of a stop string. */
  private shown = '';
  private held = '';

  constructor(
    private readonly tokenizer: TextTokenizer,
    private readonly eosTokenId: number,
    private readonly genLength: number,
    options: { onProgress?: (event: AskEvent) => void; stop?: string[] } = {},
  ) {
    this.decoder = tokenizer.streamingDecoder();
    this.emit = options.onProgress;
    this.stops = (options.stop ?? []).filter((s) => s.length > 0);
  }

  onRun(event: RunEvent): void {
    const emit = this.emit;
    switch (event.type) {
      case 'stage':
        emit?.(event);
        return;
      case 'prompt':
        this.promptLength = event.length;
        return;
      case 'prefill':
        return;
      case 'block-start': {
        const first = Math.max(event.start, this.promptLength);
        const last = Math.min(event.start + event.rows, this.promptLength + this.genLength);
        emit?.({ type: 'block-start', block: event.block, firstIndex: first - this.promptLength, size: Math.max(0, last - first) });
        return;
      }
      case 'unmask':
        // A step can fill only slots of a block's prompt part, or past the answer's end: nothing to show.
        if (event.indices.length === 0 || !emit) return;
        emit({ ...event, pieces: event.ids.map((id) => (id === this.eosTokenId ? '' : this.tokenizer.decode([id]))) });
        return;
      case 'block-end': {
        let text = '';
        if (!this.ended) {
          const eos = event.ids.indexOf(this.eosTokenId);
          this.ended = eos >= 0;
          text = this.visible(this.decoder.push(this.ended ? event.ids.slice(0, eos) : event.ids));
        }
        emit?.({ ...event, text });
        return;
      }
      case 'finished': {
        const text = this.visible(this.stopped ? '' : this.decoder.flush(), true);
        emit?.({ type: 'finished', text, nfe: event.result.nfe, blocks: event.result.blocks, stoppedAtEos: event.result.stoppedAtEos });
        return;
      }
    }
  }

  result(run: RunResult): AskResult {
    const { stoppedByCaller, ...rest } = run;
    // Under a constraint the document may fill the gen length exactly, leaving no slot for EOS: it is complete.
    const ended = run.constraintComplete ?? run.stoppedAtEos;
    const finishReason: FinishReason = this.stopped ? 'stop' : ended ? 'eos' : 'length';
    const text = this.stopped ? this.shown : this.tokenizer.decode(run.tokens);
    return { ...rest, text, finishReason, ...(this.stopString !== undefined ? { stopSequence: this.stopString } : {}) };
  }

  /** New answer text -> the part that may be shown now (held back: a possible start of a stop string). */
  private visible(piece: string, last = false): string {
    if (this.stops.length === 0) return piece;
    if (this.stopped) return '';
    const text = this.held + piece;
    let cut = -1;
    let found: string | undefined;
    for (const stop of this.stops) {
      const at = text.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) {
        cut = at;
        found = stop;
      }
    }
    let out: string;
    if (cut >= 0) {
      this.stopped = true;
      this.stopString = found;
      this.ended = true;
      out = text.slice(0, cut);
      this.held = '';
    } else {
      const keep = last ? 0 : heldSuffix(text, this.stops);
      out = text.slice(0, text.length - keep);
      this.held = text.slice(text.length - keep);
    }
    this.shown += out;
    return out;
  }
}

/** Length of the longest end of `text` that is the beginning of a stop string (but not all of it). */
function heldSuffix(text: string, stops: string[]): number {
  let longest = 0;
  for (const stop of stops) {
    for (let n = Math.min(stop.length - 1, text.length); n > longest; n--) {
      if (text.endsWith(stop.slice(0, n))) {
        longest = n;
        break;
      }
    }
  }
  return longest;
}
