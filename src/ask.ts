/**
 * One question about zero or more images, end to end: preprocess the images, encode them, build the prompt,
 * run block diffusion, decode the answer. The CLI (ask, batch, chat) uses this, in-process or inside the
 * inference worker (runtime/worker.ts).
 *
 * Besides the raw generation events (`onEvent`), `onProgress` reports AskEvents: the stage being worked on and
 * the generation events with their text already decoded, so that a renderer needs no tokenizer. Committed text
 * is decoded with a StreamingDecoder: a multi-byte character split over two tokens (or two blocks) is held back
 * until complete, and the `text` of every block-end plus the `text` of `finished` is exactly the answer's text.
 */
import { generate, type GenerationEvent, type GenerationSettings } from './generate/bd3lm.js';
import { preprocessImage, type PreprocessedImage } from './preprocess/index.js';
import { buildPrompt, type Turn } from './prompt/conversation.js';
import type { TextTokenizer } from './prompt/tokenizer.js';
import type { LoadedModel } from './runtime/model.js';
import { inputError, usageError } from './util/errors.js';

export type { GenerationSettings } from './generate/bd3lm.js';

export interface AskRequest {
  /** Image files (or their bytes), in the order their placeholders appear. */
  images: (string | Buffer)[];
  prompt: string;
  /** System prompt; undefined = the model's default, null = none. */
  system?: string | null;
  /** Earlier turns of a conversation. */
  history?: Turn[];
  /**
   * The images of the earlier turns, in conversation order (as many as the history's user turns count):
   * the prompt holds every turn's image tokens. Encoded again unless `imageCache` holds them.
   */
  historyImages?: (string | Buffer)[];
  /** Encoded images by file path, reused across requests (chat): an image is encoded once per session. */
  imageCache?: ImageCache;
  settings: GenerationSettings;
  minPixels: number;
  maxPixels: number;
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
  | { type: 'stage'; stage: 'preprocess' | 'vision' | 'prefill' | 'generate' }
  | { type: 'block-start'; block: number; firstIndex: number; size: number }
  /** Tokens filled in one denoising step, most confident first is the order the strategy picked them in. */
  | { type: 'unmask'; block: number; step: number; indices: number[]; ids: number[]; pieces: string[] }
  /** `text`: newly complete answer text (after EOS nothing more); `ids` the block's output ids. */
  | { type: 'block-end'; block: number; firstIndex: number; ids: number[]; text: string; committed: boolean }
  /** The text held back at the end (an incomplete character), usually ''. */
  | { type: 'finished'; text: string; nfe: number; blocks: number; stoppedAtEos: boolean };

/** Vision-tower output of images already seen, by path and pixel budget. */
export class ImageCache {
  private readonly entries = new Map<string, { embeds: Float32Array; image: PreprocessedImage }>();
  private key = (file: string, minPixels: number, maxPixels: number) => `${minPixels}:${maxPixels}:${file}`;
  get(file: string, minPixels: number, maxPixels: number) {
    return this.entries.get(this.key(file, minPixels, maxPixels));
  }
  set(file: string, minPixels: number, maxPixels: number, value: { embeds: Float32Array; image: PreprocessedImage }): void {
    this.entries.set(this.key(file, minPixels, maxPixels), value);
  }
  get size(): number {
    return this.entries.size;
  }
  clear(): void {
    this.entries.clear();
  }
}

export interface AskStats {
  nfe: number;
  promptTokens: number;
  imageTokens: number;
  blocks: number;
  ms: { preprocess: number; vision: number; prefill: number; decode: number };
}

export interface AskResult {
  text: string;
  /** Generated ids up to, not including, the first EOS. */
  tokens: number[];
  /** All G output ids as the reference returns them. */
  rawTokens: number[];
  stoppedAtEos: boolean;
  seed: number;
  images: { original: { width: number; height: number }; resized: { width: number; height: number }; tokens: number }[];
  stats: AskStats;
}

export async function ask(model: LoadedModel, request: AskRequest): Promise<AskResult> {
  const { config } = model.manifest;
  const hidden = config.text.hiddenSize;
  const history = request.history ?? [];
  const historyImages = request.historyImages ?? [];
  const historyImageCount = history.reduce((n, t) => n + (t.role === 'user' ? (t.images ?? 0) : 0), 0);
  if (historyImageCount !== historyImages.length) {
    throw usageError(`the conversation history counts ${historyImageCount} images but ${historyImages.length} were given`);
  }
  const allImages = [...historyImages, ...request.images];
  const progress = request.onProgress;
  const budget = { minPixels: request.minPixels, maxPixels: request.maxPixels };
  const cached = allImages.map((image) => (typeof image === 'string' ? request.imageCache?.get(image, budget.minPixels, budget.maxPixels) : undefined));

  const t0 = performance.now();
  if (allImages.length > 0) progress?.({ type: 'stage', stage: 'preprocess' });
  const preprocessed: PreprocessedImage[] = [];
  for (let i = 0; i < allImages.length; i++) {
    preprocessed.push(cached[i]?.image ?? (await preprocessImage(allImages[i], budget)));
  }
  const t1 = performance.now();
  const imageEmbeds: Float32Array[] = [];
  if (preprocessed.length > 0) {
    progress?.({ type: 'stage', stage: 'vision' });
    for (let i = 0; i < allImages.length; i++) {
      const known = cached[i]?.embeds;
      const embeds = known ?? (await (await model.vision()).encode(preprocessed[i])).embeds;
      imageEmbeds.push(embeds);
      const image = allImages[i];
      if (!known && typeof image === 'string') request.imageCache?.set(image, budget.minPixels, budget.maxPixels, { embeds, image: preprocessed[i] });
    }
  }
  const t2 = performance.now();

  const turns: Turn[] = [...history, { role: 'user', text: request.prompt, images: request.images.length }];
  const segments = buildPrompt(model.tokenizer, { system: request.system, turns });
  const imageTokens = imageEmbeds.map((e) => e.length / hidden);
  const promptLength = segments.reduce((n, s) => n + (s.kind === 'tokens' ? s.ids.length : imageTokens[s.index]), 0);
  if (promptLength === 0) throw inputError('the prompt is empty');
  const promptEmbeds = new Float32Array(promptLength * hidden);
  let row = 0;
  for (const segment of segments) {
    if (segment.kind === 'tokens') {
      for (const id of segment.ids) model.embeddings.rowInto(id, promptEmbeds, hidden * row++);
    } else {
      promptEmbeds.set(imageEmbeds[segment.index], hidden * row);
      row += imageTokens[segment.index];
    }
  }

  const s = request.settings;
  model.decoder.reset();
  model.decoder.reserve(Math.ceil((promptLength + s.genLength) / s.blockSize) * s.blockSize);
  let firstBlockAt = 0;
  progress?.({ type: 'stage', stage: 'prefill' });
  const describe = progress ? describeEvents(model.tokenizer, config.eosTokenId, promptLength, s.genLength, progress) : undefined;
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
    signal: request.signal,
    onEvent: (event) => {
      if (event.type === 'block-start' && firstBlockAt === 0) {
        firstBlockAt = performance.now();
        progress?.({ type: 'stage', stage: 'generate' });
      }
      request.onEvent?.(event);
      describe?.(event);
    },
  });
  const t3 = performance.now();
  const eos = result.tokens.indexOf(config.eosTokenId);
  const tokens = eos < 0 ? result.tokens : result.tokens.slice(0, eos);
  const prefillEnd = firstBlockAt || t3;
  return {
    text: model.tokenizer.decode(tokens),
    tokens,
    rawTokens: result.tokens,
    stoppedAtEos: result.stoppedAtEos,
    seed: result.seed,
    images: preprocessed.slice(historyImages.length).map((p, j) => ({
      original: { width: p.original.width, height: p.original.height },
      resized: { width: p.resized.width, height: p.resized.height },
      tokens: imageTokens[historyImages.length + j],
    })),
    stats: {
      nfe: result.nfe,
      promptTokens: promptLength,
      imageTokens: imageTokens.reduce((a, b) => a + b, 0),
      blocks: result.blocks,
      ms: { preprocess: t1 - t0, vision: t2 - t1, prefill: prefillEnd - t2, decode: t3 - prefillEnd },
    },
  };
}

/**
 * Generation events -> AskEvents: block starts in output slots, unmasked tokens with the text of each token
 * on its own (for display; it can be half a character), committed text through a StreamingDecoder, cut at
 * the first EOS.
 */
function describeEvents(
  tokenizer: TextTokenizer,
  eosTokenId: number,
  promptLength: number,
  genLength: number,
  emit: (event: AskEvent) => void,
): (event: GenerationEvent) => void {
  const decoder = tokenizer.streamingDecoder();
  let ended = false;
  return (event) => {
    switch (event.type) {
      case 'prefill':
        return;
      case 'block-start': {
        const first = Math.max(event.start, promptLength);
        const last = Math.min(event.start + event.rows, promptLength + genLength);
        emit({ type: 'block-start', block: event.block, firstIndex: first - promptLength, size: Math.max(0, last - first) });
        return;
      }
      case 'unmask':
        // A step can fill only slots of a block's prompt part, or past the answer's end: nothing to show.
        if (event.indices.length === 0) return;
        emit({ ...event, pieces: event.ids.map((id) => (id === eosTokenId ? '' : tokenizer.decode([id]))) });
        return;
      case 'block-end': {
        let text = '';
        if (!ended) {
          const eos = event.ids.indexOf(eosTokenId);
          ended = eos >= 0;
          text = decoder.push(ended ? event.ids.slice(0, eos) : event.ids);
        }
        emit({ ...event, text });
        return;
      }
      case 'finished':
        emit({ type: 'finished', text: decoder.flush(), nfe: event.result.nfe, blocks: event.result.blocks, stoppedAtEos: event.result.stoppedAtEos });
        return;
    }
  };
}
