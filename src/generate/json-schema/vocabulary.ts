/**
 * The bytes of every text token of a byte-level BPE tokenizer, and what constrained decoding precomputes
 * from them once per tokenizer: a byte trie (to walk the automaton over every token at once, sharing
 * prefixes) and per-token tables for string content (inside a JSON string almost every token is allowed,
 * so that case is a table lookup per token instead of a walk).
 *
 * Token bytes come from tokenizer.json's `model.vocab`, whose keys are written in GPT-2's bytes_to_unicode
 * alphabet (each byte is one printable character). Added tokens (<|im_end|>, <|endoftext|>, <tool_call>,
 * ...) have no bytes here: they are not text, and only EOS is ever allowed, by the constraint itself.
 * Ids with no token (the model's padded rows, the diffusion mask id) are never allowed.
 */
import { modelError } from '../../util/errors.js';
import { isPlainStringByte, startsCharacter, utf8Next, UTF8_STATES } from './utf8.js';

/** GPT-2's bytes_to_unicode: byte -> the character standing for it in a byte-level vocabulary. */
function byteLevelAlphabet(): Map<string, number> {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const charOfByte = new Map<number, number>(printable.map((b) => [b, b]));
  let n = 0;
  for (let b = 0; b < 256; b++) if (!charOfByte.has(b)) charOfByte.set(b, 256 + n++);
  return new Map([...charOfByte].map(([b, c]) => [String.fromCharCode(c), b]));
}

/** A byte trie over the vocabulary, as flat arrays (children of a node are contiguous, by byte). */
export interface TokenTrie {
  /** Node count; node 0 is the root. */
  readonly size: number;
  readonly firstChild: Int32Array;
  readonly childCount: Int32Array;
  /** The byte leading into each node. */
  readonly byte: Uint8Array;
  /** The token ending at each node, or -1. */
  readonly token: Int32Array;
}

/**
 * Per token, how it reads inside a JSON string: its first `plainLength` bytes are plain content (no quote,
 * backslash or control byte); `utf8After[id * 8 + s]` is the UTF-8 state after those bytes from state s
 * (-1: invalid), and `charsStarted[id]` the code points they start.
 */
export interface StringTables {
  readonly plainLength: Uint8Array;
  readonly utf8After: Int8Array;
  readonly charsStarted: Uint8Array;
  /** Byte length of each token (0: no text). */
  readonly tokenLength: Uint8Array;
}

export interface TokenizerJsonLike {
  model?: { type?: string; vocab?: Record<string, number> };
  decoder?: { type?: string } | null;
  added_tokens?: { id: number; content: string }[];
}

export class Vocabulary {
  /** Ids are < this (text ids and EOS). */
  readonly idLimit: number;
  /** All token bytes, back to back; token id's bytes are bytes[offsets[id] .. offsets[id + 1]). */
  private readonly bytes: Uint8Array;
  private readonly offsets: Int32Array;
  /** Text token ids, ascending. */
  readonly textIds: Int32Array;
  /** Built on first use (then shared by every constraint on this vocabulary). */
  private trieCache: TokenTrie | undefined;
  private stringCache: StringTables | undefined;

  private constructor(
    tokens: (Uint8Array | undefined)[],
    readonly eosTokenId: number,
  ) {
    this.idLimit = Math.max(tokens.length, eosTokenId + 1);
    this.offsets = new Int32Array(this.idLimit + 1);
    let total = 0;
    for (let id = 0; id < this.idLimit; id++) {
      this.offsets[id] = total;
      total += tokens[id]?.length ?? 0;
    }
    this.offsets[this.idLimit] = total;
    this.bytes = new Uint8Array(total);
    const ids: number[] = [];
    for (let id = 0; id < tokens.length; id++) {
      const t = tokens[id];
      if (t && t.length > 0) {
        this.bytes.set(t, this.offsets[id]);
        ids.push(id);
      }
    }
    this.textIds = Int32Array.from(ids);
    // The budget rule completes documents byte by byte: every single byte must be a token.
    const single = new Set<number>();
    for (const id of ids) if (this.offsets[id + 1] - this.offsets[id] === 1) single.add(this.bytes[this.offsets[id]]);
    if (single.size !== 256) throw modelError(`structured output needs a token for every byte; the vocabulary has ${single.size} of 256`);
  }

  /** From a parsed tokenizer.json of a byte-level BPE tokenizer (Qwen2, GPT-2, Llama 3 style). */
  static fromTokenizerJson(json: unknown, eosTokenId: number): Vocabulary {
    const t = json as TokenizerJsonLike;
    const vocab = t?.model?.vocab;
    if (t?.model?.type !== 'BPE' || typeof vocab !== 'object' || vocab === null) throw modelError('structured output needs a BPE tokenizer.json (model.vocab)');
    if (t.decoder?.type !== 'ByteLevel') throw modelError(`structured output needs a byte-level tokenizer (tokenizer.json decoder is ${t.decoder?.type ?? 'none'})`);
    const added = new Set((t.added_tokens ?? []).map((a) => a.id));
    if (!added.has(eosTokenId)) throw modelError(`the EOS id ${eosTokenId} is not an added token of the tokenizer`);
    const alphabet = byteLevelAlphabet();
    const tokens: (Uint8Array | undefined)[] = [];
    for (const [text, id] of Object.entries(vocab)) {
      if (!Number.isInteger(id) || id < 0) throw modelError(`tokenizer.json: bad id ${id} for ${JSON.stringify(text)}`);
      if (added.has(id)) continue;
      const out = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) {
        const b = alphabet.get(text[i]);
        if (b === undefined) throw modelError(`tokenizer.json: token ${JSON.stringify(text)} is not in the byte-level alphabet`);
        out[i] = b;
      }
      tokens[id] = out;
    }
    return new Vocabulary(tokens, eosTokenId);
  }

  /** From a loaded tokenizer (the same tokenizer.json). */
  static fromTokenizer(tokenizer: { readonly tokenizerJson: object }, eosTokenId: number): Vocabulary {
    return Vocabulary.fromTokenizerJson(tokenizer.tokenizerJson, eosTokenId);
  }

  /** The bytes of a text token (empty for EOS and ids without text). Do not modify. */
  tokenBytes(id: number): Uint8Array {
    if (id < 0 || id >= this.idLimit) return new Uint8Array(0);
    return this.bytes.subarray(this.offsets[id], this.offsets[id + 1]);
  }

  /** Byte length of a token (0 for EOS and ids without text). */
  tokenLength(id: number): number {
    return id < 0 || id >= this.idLimit ? 0 : this.offsets[id + 1] - this.offsets[id];
  }

  /** UTF-8 text of ids (EOS and ids without text contribute nothing): the exact text the constraint checked. */
  decode(ids: readonly number[]): string {
    const parts = ids.map((id) => this.tokenBytes(id));
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(all);
  }

  get trie(): TokenTrie {
    return (this.trieCache ??= this.buildTrie());
  }

  get stringTables(): StringTables {
    return (this.stringCache ??= this.buildStringTables());
  }

  /** Both precomputations (for timing them, or to pay for them before the first request). */
  prepare(): void {
    void this.trie;
    void this.stringTables;
  }

  private buildTrie(): TokenTrie {
    const { bytes, offsets } = this;
    // Sort tokens by their bytes, then build nodes level by level of a depth-first insertion.
    const ids = Array.from(this.textIds);
    const compare = (a: number, b: number) => {
      const la = offsets[a + 1] - offsets[a];
      const lb = offsets[b + 1] - offsets[b];
      const n = Math.min(la, lb);
      for (let i = 0; i < n; i++) {
        const d = bytes[offsets[a] + i] - bytes[offsets[b] + i];
        if (d !== 0) return d;
      }
      return la - lb;
    };
    ids.sort(compare);
    // Nodes in pre-order as a linked structure first (children lists), then flattened breadth-wise so that
    // each node's children are contiguous.
    const childrenOf: number[][] = [[]];
    const byteOf: number[] = [0];
    const tokenOf: number[] = [-1];
    const path: number[] = [0]; // node at each depth along the previous token
    let previous: number | undefined;
    for (const id of ids) {
      const start = offsets[id];
      const length = offsets[id + 1] - start;
      let common = 0;
      if (previous !== undefined) {
        const ps = offsets[previous];
        const pl = offsets[previous + 1] - ps;
        while (common < Math.min(pl, length) && bytes[ps + common] === bytes[start + common]) common++;
      }
      path.length = common + 1;
      for (let d = common; d < length; d++) {
        const node = childrenOf.length;
        childrenOf.push([]);
        byteOf.push(bytes[start + d]);
        tokenOf.push(-1);
        childrenOf[path[d]].push(node);
        path.push(node);
      }
      tokenOf[path[length]] = id;
      previous = id;
    }
    const size = childrenOf.length;
    const order = new Int32Array(size); // new index -> old node
    const newIndex = new Int32Array(size);
    let head = 0;
    let tail = 1;
    order[0] = 0;
    while (head < tail) {
      const old = order[head++];
      for (const c of childrenOf[old]) order[tail++] = c;
    }
    for (let i = 0; i < size; i++) newIndex[order[i]] = i;
    const firstChild = new Int32Array(size);
    const childCount = new Int32Array(size);
    const byte = new Uint8Array(size);
    const token = new Int32Array(size);
    for (let i = 0; i < size; i++) {
      const old = order[i];
      const kids = childrenOf[old];
      childCount[i] = kids.length;
      firstChild[i] = kids.length > 0 ? newIndex[kids[0]] : 0;
      byte[i] = byteOf[old];
      token[i] = tokenOf[old];
    }
    return { size, firstChild, childCount, byte, token };
  }

  private buildStringTables(): StringTables {
    const n = this.idLimit;
    const plainLength = new Uint8Array(n);
    const utf8After = new Int8Array(n * UTF8_STATES).fill(-1);
    const charsStarted = new Uint8Array(n);
    const tokenLength = new Uint8Array(n);
    for (const id of this.textIds) {
      const t = this.tokenBytes(id);
      if (t.length > 255) throw modelError(`token ${id} is longer than 255 bytes`);
      let plain = 0;
      while (plain < t.length && isPlainStringByte(t[plain])) plain++;
      plainLength[id] = plain;
      tokenLength[id] = t.length;
      let chars = 0;
      for (let i = 0; i < plain; i++) if (startsCharacter(t[i])) chars++;
      charsStarted[id] = chars;
      for (let s = 0; s < UTF8_STATES; s++) {
        let state = s;
        for (let i = 0; i < plain && state >= 0; i++) state = utf8Next(state, t[i]);
        utf8After[id * UTF8_STATES + s] = state;
      }
    }
    return { plainLength, utf8After, charsStarted, tokenLength };
  }
}
