/**
 * Which tokens may follow a cursor of the JSON automaton, and how many bytes each leaves to write: the
 * expensive part of constrained decoding, so it is computed once per cursor signature and cached.
 *
 * Two ways to compute it, with the same result (a test compares them):
 * - the trie walk: the automaton is stepped along the vocabulary's byte trie, depth first, and a subtree is
 *   dropped as soon as no cursor survives its prefix. Outside strings only a few hundred nodes survive;
 * - inside a string (the common case, where ~97% of the 151k tokens are allowed and the walk would visit
 *   every trie node), a scan of the per-token string tables: a token of plain content is decided by two
 *   table lookups, and only tokens holding a quote, backslash or control byte (~5k) are stepped byte by byte.
 *
 * The result lists allowed ids ascending with the `need` after each (fewest bytes still needed to finish
 * the document); the budget filter is applied later, per call, by the constraint.
 */
import { cursorSig, JsonAutomaton, Stack, type Cursor, type StringFrame } from './json-automaton.js';
import { UTF8_PENDING, UTF8_STATES } from './utf8.js';
import type { Vocabulary } from './vocabulary.js';

/** (A local copy: some module loaders turn imported bindings into getters, slow in the vocabulary loop.) */
const PENDING = Int32Array.from(UTF8_PENDING);
const STATES = UTF8_STATES;

export interface CursorMask {
  /** Allowed token ids, ascending (EOS included when the document is complete). Shared: do not modify. */
  readonly ids: Int32Array;
  /** need[i]: bytes still needed to finish the document after ids[i]. */
  readonly need: Int32Array;
  readonly minNeed: number;
  readonly maxNeed: number;
}

export interface TokenMaskOptions {
  /** Use the string tables inside strings (default true; false: always walk the trie, for tests). */
  stringFastPath?: boolean;
  /** Cap on cached (id, need) entries over all cached masks (default 8M, about 64 MB). */
  cacheEntries?: number;
}

export class TokenMasks {
  private readonly cache = new Map<string, CursorMask>();
  private cachedEntries = 0;
  private readonly cacheEntries: number;
  private readonly stringFastPath: boolean;
  /** needById[id]: need recorded in the current computation, or -1. */
  private readonly needById: Int32Array;
  private readonly touched: Int32Array;
  private readonly needScratch: Int32Array;
  private touchedCount = 0;
  /** Cache statistics (for the benchmark). */
  hits = 0;
  misses = 0;

  constructor(
    private readonly automaton: JsonAutomaton,
    private readonly vocabulary: Vocabulary,
    options: TokenMaskOptions = {},
  ) {
    this.cacheEntries = options.cacheEntries ?? 8_000_000;
    this.stringFastPath = options.stringFastPath ?? true;
    this.needById = new Int32Array(vocabulary.idLimit).fill(-1);
    this.touched = new Int32Array(vocabulary.idLimit);
    this.needScratch = new Int32Array(vocabulary.idLimit);
  }

  /** The mask of one cursor (cached by its signature). */
  forCursor(c: Cursor): CursorMask {
    return this.cached(cursorSig(c), () => this.compute(c));
  }

  /** The mask of a set of cursors: per token the smallest need over the cursors that allow it. */
  forCursors(cursors: readonly Cursor[]): CursorMask {
    if (cursors.length === 1) return this.forCursor(cursors[0]);
    const key = cursors.map(cursorSig).sort().join('\n');
    return this.cached(key, () => {
      // (each cursor's own mask first: computing one uses the scratch arrays that merging fills)
      const masks = cursors.map((c) => this.forCursor(c));
      for (const m of masks) for (let i = 0; i < m.ids.length; i++) this.record(m.ids[i], m.need[i]);
      return this.collect();
    });
  }

  private cached(key: string, compute: () => CursorMask): CursorMask {
    const hit = this.cache.get(key);
    if (hit) {
      this.hits++;
      return hit;
    }
    this.misses++;
    const mask = compute();
    this.cache.set(key, mask);
    this.cachedEntries += mask.ids.length;
    // Oldest first (a Map iterates in insertion order).
    for (const [k, m] of this.cache) {
      if (this.cachedEntries <= this.cacheEntries || k === key) break;
      this.cache.delete(k);
      this.cachedEntries -= m.ids.length;
    }
    return mask;
  }

  private compute(c: Cursor): CursorMask {
    const top = c.stack?.top;
    const mask = this.stringFastPath && top?.k === 'string' && top.esc === 0 ? this.scanString(c, top) : this.walkTrie(c);
    return this.automaton.isComplete(c) ? withToken(mask, this.vocabulary.eosTokenId, 0) : mask;
  }

  private walkTrie(c: Cursor): CursorMask {
    this.walk(0, [c]);
    return this.collect();
  }

  private record(id: number, need: number): void {
    const known = this.needById[id];
    if (known < 0) {
      this.touched[this.touchedCount++] = id;
      this.needById[id] = need;
    } else if (need < known) this.needById[id] = need;
  }

  /** The recorded ids, ascending, with their needs; resets the scratch state. */
  private collect(): CursorMask {
    const ids = this.touched.slice(0, this.touchedCount).sort(); // (trie order is byte order, not id order)
    const need = new Int32Array(ids.length);
    let minNeed = Infinity;
    let maxNeed = -Infinity;
    for (let i = 0; i < ids.length; i++) {
      const n = this.needById[ids[i]];
      need[i] = n;
      if (n < minNeed) minNeed = n;
      if (n > maxNeed) maxNeed = n;
      this.needById[ids[i]] = -1;
    }
    this.touchedCount = 0;
    return { ids, need, minNeed, maxNeed };
  }

  private minNeed(cursors: readonly Cursor[]): number {
    let m = Infinity;
    for (const c of cursors) m = Math.min(m, this.automaton.need(c));
    return m;
  }

  /** Depth-first over the trie below `node`, with the cursors its prefix leaves alive. */
  private walk(node: number, cursors: readonly Cursor[]): void {
    const { firstChild, childCount, byte, token } = this.vocabulary.trie;
    const end = firstChild[node] + childCount[node];
    for (let i = firstChild[node]; i < end; i++) {
      const next = this.automaton.stepAll(cursors, byte[i]);
      if (next.length === 0) continue;
      if (token[i] >= 0) this.record(token[i], this.minNeed(next));
      if (childCount[i] > 0) this.walk(i, next);
    }
  }

  /**
   * Inside a string, outside an escape: the string tables decide plain tokens, the rest is stepped. Tokens
   * are visited by ascending id, so the result comes out sorted.
   */
  private scanString(c: Cursor, f: StringFrame): CursorMask {
    const vocabulary = this.vocabulary;
    const { plainLength, utf8After, charsStarted, tokenLength } = vocabulary.stringTables;
    const below = c.stack!.below;
    const needBelow = this.automaton.stackNeed(below);
    const ids = vocabulary.textIds;
    const outIds = this.touched;
    const outNeed = this.needScratch;
    const { minLength, maxLength } = f;
    const utf8In = f.utf8;
    let n = 0;
    let minNeed = Infinity;
    let maxNeed = -Infinity;
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k];
      const plain = plainLength[id];
      let need: number;
      if (plain > 0) {
        const utf8 = utf8After[id * STATES + utf8In];
        if (utf8 < 0) continue;
        const total = f.count + charsStarted[id];
        if (total > maxLength) continue;
        const count = maxLength === Infinity ? Math.min(total, minLength) : total;
        if (plain === tokenLength[id]) {
          // stringNeed(minLength, count, utf8, 0), inlined: this loop runs over the whole vocabulary
          need = PENDING[utf8] + (minLength > count ? minLength - count : 0) + 1 + needBelow;
        } else {
          need = this.stepRest([{ stack: new Stack({ ...f, count, utf8 }, below), ws: 0 }], id, plain);
          if (need === Infinity) continue;
        }
      } else {
        need = this.stepRest([c], id, 0);
        if (need === Infinity) continue;
      }
      outIds[n] = id;
      outNeed[n] = need;
      n++;
      if (need < minNeed) minNeed = need;
      if (need > maxNeed) maxNeed = need;
    }
    return { ids: outIds.slice(0, n), need: outNeed.slice(0, n), minNeed, maxNeed };
  }

  /** Steps the bytes of token `id` from index `from`; the smallest need of what survives (Infinity: none). */
  private stepRest(start: readonly Cursor[], id: number, from: number): number {
    const bytes = this.vocabulary.tokenBytes(id);
    let cursors = start;
    for (let i = from; i < bytes.length && cursors.length > 0; i++) cursors = this.automaton.stepAll(cursors, bytes[i]);
    return cursors.length > 0 ? this.minNeed(cursors) : Infinity;
  }
}

/** The mask with one more token (EOS when the document is complete), kept sorted. */
function withToken(mask: CursorMask, id: number, need: number): CursorMask {
  let at = mask.ids.length;
  while (at > 0 && mask.ids[at - 1] > id) at--;
  if (at > 0 && mask.ids[at - 1] === id) throw new Error(`token ${id} is both text and EOS`);
  const ids = new Int32Array(mask.ids.length + 1);
  const needs = new Int32Array(ids.length);
  ids.set(mask.ids.subarray(0, at));
  needs.set(mask.need.subarray(0, at));
  ids[at] = id;
  needs[at] = need;
  ids.set(mask.ids.subarray(at), at + 1);
  needs.set(mask.need.subarray(at), at + 1);
  return { ids, need: needs, minNeed: Math.min(mask.minNeed, need), maxNeed: Math.max(mask.maxNeed, need) };
}
