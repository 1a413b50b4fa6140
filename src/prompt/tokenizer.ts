/**
 * The checkpoint's tokenizer (tokenizer.json + tokenizer_config.json) through @huggingface/tokenizers.
 *
 * User text is encoded as plain text: special-token text typed by a user ("<|im_end|>") becomes ordinary
 * tokens, never the special id, so a prompt cannot forge conversation structure. The library has no switch
 * for that (its encode always matches added tokens first), so `encodeText` runs the library's own public
 * pipeline pieces without the added-token split: normalizer -> pre-tokenizer -> BPE model -> vocabulary ids.
 * For text that contains no added-token string this is exactly what the library's encode does (tested).
 * Template tokens (<|im_start|>, <|im_end|>) are inserted as ids by the caller (conversation.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { modelError } from '../util/errors.js';

/** The character a UTF-8 decoder puts in place of an incomplete byte sequence. */
const REPLACEMENT_CHARACTER = '\uFFFD';

export interface DecodeOptions {
  /** Drop special tokens (<|im_end|>, <|endoftext|>, ...) from the text. Default true. */
  skipSpecialTokens?: boolean;
}

export class TextTokenizer {
  private readonly tokenizer: Tokenizer;

  constructor(
    /** The parsed tokenizer.json (structured output reads its vocabulary: json-schema/vocabulary.ts). */
    readonly tokenizerJson: object,
    tokenizerConfig: object,
  ) {
    const config = tokenizerConfig as Record<string, unknown>;
    // encodeText reproduces the library's plain-text path, which these options would change.
    for (const option of ['remove_space', 'do_lowercase_and_remove_accent']) {
      if (config[option]) throw modelError(`tokenizer_config.json sets ${option}, which dvl does not support`);
    }
    try {
      this.tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (error) {
      throw modelError(`cannot build the tokenizer: ${(error as Error).message}`, error);
    }
    if (!this.tokenizer.model) throw modelError('tokenizer.json has no model');
  }

  /** Reads tokenizer.json and tokenizer_config.json from a checkpoint directory. */
  static load(directory: string): TextTokenizer {
    const json = path.join(directory, 'tokenizer.json');
    const read = (name: string): object => {
      const file = path.join(directory, name);
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (error) {
        throw modelError(`cannot read ${file}: ${(error as Error).message}`, error);
      }
      try {
        return JSON.parse(text) as object;
      } catch (error) {
        throw modelError(`${file} is not valid JSON: ${(error as Error).message}`, error);
      }
    };
    const tokenizerJson = read('tokenizer.json');
    const tokenizerConfig = read('tokenizer_config.json');
    try {
      return new TextTokenizer(tokenizerJson, tokenizerConfig);
    } catch (error) {
      throw modelError(`${json} (with tokenizer_config.json): ${(error as Error).message}`, error);
    }
  }

  /** Ids of plain text: special-token strings in it are ordinary text. */
  encodeText(text: string): number[] {
    if (text.length === 0) return [];
    const { normalizer, pre_tokenizer: preTokenizer, model } = this.tokenizer;
    const normalized = normalizer ? normalizer._call(text) : text;
    if (normalized.length === 0) return [];
    const pieces = preTokenizer ? preTokenizer._call(normalized, { section_index: 0 }) : [normalized];
    const tokens: string[] = model!._call(pieces);
    return tokens.map((token) => {
      const id = model!.tokens_to_ids.get(token) ?? model!.unk_token_id;
      if (id === undefined) throw modelError(`the tokenizer cannot encode ${JSON.stringify(token)}`);
      return id;
    });
  }

  /** Id of a special/added token given by its text, e.g. '<|im_start|>'. */
  tokenId(content: string): number {
    const id = this.tokenizer.token_to_id(content);
    if (id === undefined) throw modelError(`the tokenizer has no ${content} token`);
    return id;
  }

  /** Whether the tokenizer has text for this id (the diffusion mask id, for one, has none). */
  hasText(id: number): boolean {
    return this.tokenizer.id_to_token(id) !== undefined;
  }

  /** Text of ids; ids without text are dropped. */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const known = ids.filter((id) => this.hasText(id));
    if (known.length === 0) return '';
    return this.tokenizer.decode(known, { skip_special_tokens: options.skipSpecialTokens ?? true });
  }

  /** Text of generated ids up to (not including) the first EOS. */
  decodeGenerated(ids: readonly number[], eosTokenId: number, options: DecodeOptions = {}): string {
    const end = ids.indexOf(eosTokenId);
    return this.decode(end < 0 ? ids : ids.slice(0, end), options);
  }

  streamingDecoder(options: DecodeOptions = {}): StreamingDecoder {
    return new StreamingDecoder(this, options);
  }
}

/**
 * Checks that a checkpoint's tokenizer files build a tokenizer that can write dvl's prompts: it encodes text and
 * has the chat template's tokens. A model error naming the file otherwise (`dvl pull` stores no model whose
 * tokenizer cannot load).
 */
export function checkTokenizer(directory: string): void {
  const tokenizer = TextTokenizer.load(directory);
  const file = path.join(directory, 'tokenizer.json');
  for (const special of ['<|im_start|>', '<|im_end|>']) {
    try {
      tokenizer.tokenId(special);
    } catch {
      throw modelError(`${file} has no ${special} token: not the Qwen2.5 tokenizer DiffusionVL is trained with`);
    }
  }
  let ids: number[];
  try {
    ids = tokenizer.encodeText('Describe this image.');
  } catch (error) {
    throw modelError(`${file} cannot encode text: ${(error as Error).message}`, error);
  }
  if (ids.length === 0) throw modelError(`${file} encodes text to no tokens`);
}

/**
 * Turns ids arriving in order into text pieces without ever splitting a multi-byte character: a token can
 * hold part of a character's UTF-8 bytes, and decoding it alone ends in U+FFFD. Ids are held back until
 * their text no longer ends in U+FFFD; a complete character leaves the UTF-8 decoder in its initial state,
 * so the pieces concatenate to the text of all ids decoded at once.
 */
export class StreamingDecoder {
  private pending: number[] = [];

  constructor(
    private readonly tokenizer: TextTokenizer,
    private readonly options: DecodeOptions,
  ) {}

  /** Adds ids; returns the text that is now complete ('' while a character is incomplete). */
  push(ids: readonly number[]): string {
    for (const id of ids) this.pending.push(id);
    const text = this.tokenizer.decode(this.pending, this.options);
    if (text.endsWith(REPLACEMENT_CHARACTER)) return '';
    this.pending = [];
    return text;
  }

  /** Whatever is held back (at the end of generation), even if it ends in U+FFFD. */
  flush(): string {
    const text = this.tokenizer.decode(this.pending, this.options);
    this.pending = [];
    return text;
  }
}
