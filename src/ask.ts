/**
 * One question about zero or more images, end to end: preprocess the images, encode them, build the prompt,
 * run block diffusion, decode the answer. The CLI and (later) chat/batch use this.
 */
import { generate, type GenerationEvent } from './generate/bd3lm.js';
import type { RemaskingStrategy } from './generate/schedule.js';
import { preprocessImage, type PreprocessedImage } from './preprocess/index.js';
import { buildPrompt, type Turn } from './prompt/conversation.js';
import type { LoadedModel } from './runtime/model.js';
import { inputError } from './util/errors.js';

export interface GenerationSettings {
  genLength: number;
  steps: number;
  blockSize: number;
  temperature: number;
  topK: number;
  topP: number;
  remasking: RemaskingStrategy;
  threshold: number;
  seed?: number;
}

export interface AskRequest {
  /** Image files (or their bytes), in the order their placeholders appear. */
  images: (string | Buffer)[];
  prompt: string;
  /** System prompt; undefined = the model's default, null = none. */
  system?: string | null;
  /** Earlier turns of a conversation (their images are not re-sent). */
  history?: Turn[];
  settings: GenerationSettings;
  minPixels: number;
  maxPixels: number;
  onEvent?: (event: GenerationEvent) => void;
  signal?: AbortSignal;
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
  const t0 = performance.now();
  const preprocessed: PreprocessedImage[] = [];
  for (const image of request.images) {
    preprocessed.push(await preprocessImage(image, { minPixels: request.minPixels, maxPixels: request.maxPixels }));
  }
  const t1 = performance.now();
  const imageEmbeds: Float32Array[] = [];
  if (preprocessed.length > 0) {
    const vision = await model.vision();
    for (const image of preprocessed) imageEmbeds.push((await vision.encode(image)).embeds);
  }
  const t2 = performance.now();

  const turns: Turn[] = [...(request.history ?? []), { role: 'user', text: request.prompt, images: request.images.length }];
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
      if (event.type === 'block-start' && firstBlockAt === 0) firstBlockAt = performance.now();
      request.onEvent?.(event);
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
    images: preprocessed.map((p, i) => ({
      original: { width: p.original.width, height: p.original.height },
      resized: { width: p.resized.width, height: p.resized.height },
      tokens: imageTokens[i],
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
