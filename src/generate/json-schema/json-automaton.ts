/**
 * A byte-level automaton for JSON documents of a compiled schema (schema-graph.ts).
 *
 * Why bytes: byte-level BPE tokens can hold part of a multi-byte character, and a token can span several
 * JSON tokens ('"},' closes a string, an object and starts the next key), so the only unit every token is
 * made of is the byte.
 *
 * A *cursor* is one way of reading the bytes so far: an immutable stack of frames (innermost on top) and
 * the length of the current whitespace run. Stepping a byte gives zero, one or several cursors (several
 * while the alternatives of a union, or an enum value and a longer one, are both still possible); a state
 * of the constraint is the set of live cursors. Frames are never mutated, so a cursor can be stepped along
 * many continuations (the vocabulary walk) without copying.
 *
 * Every cursor knows `need`: the fewest bytes that complete a valid document from it (the sum over its
 * frames, from the shortest-document lengths of the schema). A cursor whose need is infinite is dead and
 * never produced. Since every byte is a token, `need` bytes are also enough tokens: the budget rule of the
 * constraint rests on this.
 *
 * Whitespace ('bounded', the default): only between JSON tokens inside the document (none before or after
 * it), only space, tab and newline, at most one newline and at most MAX_WHITESPACE_SPACES spaces/tabs per
 * run (pretty-printed JSON fits; an endless run of spaces does not). 'none': compact JSON only, which makes
 * keys and punctuation forced text (see JsonConstraint.forced).
 */
import type { CompiledSchema, NodeId, SchemaNode, UnionId } from './schema-graph.js';
import { MAX_INTEGER_DIGITS } from './schema-graph.js';
import { ESCAPE_PENDING, escapeNext, UTF8_PENDING, utf8Next } from './utf8.js';

export const MAX_WHITESPACE_SPACES = 20;
export type WhitespacePolicy = 'bounded' | 'none';
/** ws bit: the run holds its newline. */
const WS_NEWLINE = 32;
/** Number grammar limits (finite doubles only). */
const MAX_FRACTION_DIGITS = 15;
const MAX_EXPONENT_DIGITS = 2;

export type ObjectPhase = 'open' | 'afterKey' | 'afterValue' | 'afterComma';
export type ArrayPhase = 'open' | 'afterValue' | 'afterComma';
export type NumberPhase = 'start' | 'minus' | 'zero' | 'int' | 'dot' | 'frac' | 'exp' | 'expSign' | 'expDigits';

export interface StringFrame {
  readonly k: 'string';
  readonly minLength: number;
  readonly maxLength: number;
  /** Code points so far (capped at minLength when there is no maxLength: only "enough yet?" matters). */
  readonly count: number;
  readonly utf8: number;
  readonly esc: number;
}

export type Frame =
  /** A value of `union` is expected (whitespace may come first). */
  | { readonly k: 'value'; readonly union: UnionId }
  /**
   * Inside an object. `next`: the first declared key that may still be written; `prop`: the key just
   * written (afterKey, declared keys). Free-key objects use neither.
   */
  | { readonly k: 'object'; readonly node: NodeId; readonly phase: ObjectPhase; readonly next: number; readonly prop: number }
  /** Inside a declared key of an object: `alive` keys (indices) match the `pos` bytes written. */
  | { readonly k: 'key'; readonly node: NodeId; readonly alive: Int32Array; readonly pos: number }
  /** Inside an array; `count` items so far (capped at minItems when there is no maxItems). */
  | { readonly k: 'array'; readonly node: NodeId; readonly phase: ArrayPhase; readonly count: number }
  | StringFrame
  /** An integer: sign, magnitude and digit count so far. */
  | { readonly k: 'integer'; readonly node: NodeId; readonly neg: boolean; readonly mag: number; readonly digits: number }
  | { readonly k: 'number'; readonly phase: NumberPhase; readonly digits: number }
  /** A literal (enum/const/true/false/null): `alive` texts match the `pos` bytes written. */
  | { readonly k: 'literal'; readonly node: NodeId; readonly alive: Int32Array; readonly pos: number };

/** An immutable stack of frames; signature and need are computed once, on demand. */
export class Stack {
  private sigCache: string | undefined;
  needCache = -1;
  constructor(
    readonly top: Frame,
    readonly below: Stack | null,
  ) {}

  get sig(): string {
    if (this.sigCache === undefined) this.sigCache = (this.below ? this.below.sig + '/' : '') + frameSig(this.top);
    return this.sigCache;
  }
}

export interface Cursor {
  /** null: the document is complete. */
  readonly stack: Stack | null;
  /** Current whitespace run: spaces/tabs in the low bits, WS_NEWLINE once it holds a newline. */
  readonly ws: number;
}

function frameSig(f: Frame): string {
  switch (f.k) {
    case 'value':
      return `v${f.union}`;
    case 'object':
      return `o${f.node}.${f.phase}.${f.next}.${f.prop}`;
    case 'key':
      return `k${f.node}.${f.pos}.${f.alive.join(',')}`;
    case 'array':
      return `a${f.node}.${f.phase}.${f.count}`;
    case 'string':
      return `s${f.minLength}.${f.maxLength}.${f.count}.${f.utf8}.${f.esc}`;
    case 'integer':
      return `i${f.node}.${f.neg ? '-' : ''}${f.mag}.${f.digits}`;
    case 'number':
      return `n${f.phase}.${f.digits}`;
    case 'literal':
      return `l${f.node}.${f.pos}.${f.alive.join(',')}`;
  }
}

export const cursorSig = (c: Cursor): string => (c.stack ? c.stack.sig : '') + '|' + c.ws;

const isWhitespace = (b: number) => b === 0x20 || b === 0x0a || b === 0x09;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const POW10 = Array.from({ length: MAX_INTEGER_DIGITS + 1 }, (_, k) => 10 ** k);
const digitCount = (n: number) => String(n).length;

// (Local copies: some module loaders turn imported bindings into getters, slow on hot paths.)
const UTF8_PENDING_BYTES = Int32Array.from(UTF8_PENDING);
const ESCAPE_PENDING_BYTES = Int32Array.from(ESCAPE_PENDING);

export function stringNeed(minLength: number, count: number, utf8: number, esc: number): number {
  return UTF8_PENDING_BYTES[utf8] + ESCAPE_PENDING_BYTES[esc] + Math.max(0, minLength - count) + 1;
}

export class JsonAutomaton {
  private readonly nodes: readonly SchemaNode[];

  private readonly whitespaceAllowed: boolean;

  constructor(
    readonly schema: CompiledSchema,
    whitespace: WhitespacePolicy = 'bounded',
  ) {
    this.nodes = schema.nodes;
    this.whitespaceAllowed = whitespace === 'bounded';
  }

  initial(): Cursor {
    return { stack: new Stack({ k: 'value', union: this.schema.root }, null), ws: 0 };
  }

  /** Fewest bytes that complete a document from this cursor (Infinity: none). */
  need(c: Cursor): number {
    return this.stackNeed(c.stack);
  }

  /** The bytes so far are a whole document (a root-level number or literal may still go on). */
  isComplete(c: Cursor): boolean {
    return c.stack === null || (c.stack.below === null && this.canEnd(c.stack.top));
  }

  /** Adds the cursors after `byte` to `out` (only live ones: finite need). */
  step(c: Cursor, byte: number, out: Cursor[]): void {
    this.stepStack(c.stack, c.ws, byte, out);
  }

  /** Steps every cursor of a set, without duplicates. */
  stepAll(cursors: readonly Cursor[], byte: number): Cursor[] {
    const out: Cursor[] = [];
    for (const c of cursors) this.step(c, byte, out);
    return out.length > 1 ? dedupe(out) : out;
  }

  stackNeed(s: Stack | null): number {
    if (s === null) return 0;
    if (s.needCache < 0) s.needCache = this.frameNeed(s.top) + this.stackNeed(s.below);
    return s.needCache;
  }

  private emit(out: Cursor[], stack: Stack | null, ws: number): void {
    if (this.stackNeed(stack) < Infinity) out.push({ stack, ws });
  }

  private stepStack(stack: Stack | null, ws: number, b: number, out: Cursor[]): void {
    if (stack === null) return; // nothing after a complete document
    const f = stack.top;
    const below = stack.below;
    switch (f.k) {
      case 'value':
        if (isWhitespace(b)) {
          // (no whitespace before the document: below === null is the root value)
          if (below !== null) this.whitespace(stack, ws, b, out);
        } else for (const n of this.schema.alternatives[f.union]) this.start(n, below, b, out);
        return;
      case 'object':
        return this.stepObject(f, stack, ws, b, out);
      case 'key':
        return this.stepKey(f, below, b, out);
      case 'array':
        return this.stepArray(f, stack, ws, b, out);
      case 'string':
        return this.stepString(f, below, b, out);
      case 'integer':
        return this.stepInteger(f, below, b, out);
      case 'number':
        return this.stepNumber(f, below, b, out);
      case 'literal':
        return this.stepLiteral(f, below, b, out);
    }
  }

  private whitespace(stack: Stack, ws: number, b: number, out: Cursor[]): void {
    if (!this.whitespaceAllowed) return;
    if (b === 0x0a) {
      if (!(ws & WS_NEWLINE)) out.push({ stack, ws: ws | WS_NEWLINE });
    } else if ((ws & (WS_NEWLINE - 1)) < MAX_WHITESPACE_SPACES) out.push({ stack, ws: ws + 1 });
  }

  /** The first byte of a value of node `n`, on top of `below`. */
  private start(n: NodeId, below: Stack | null, b: number, out: Cursor[]): void {
    const node = this.nodes[n];
    switch (node.kind) {
      case 'object':
        if (b === 0x7b) this.emit(out, new Stack({ k: 'object', node: n, phase: 'open', next: 0, prop: -1 }, below), 0);
        return;
      case 'array':
        if (b === 0x5b) this.emit(out, new Stack({ k: 'array', node: n, phase: 'open', count: 0 }, below), 0);
        return;
      case 'string':
        if (b === QUOTE) this.emit(out, new Stack({ k: 'string', minLength: node.minLength, maxLength: node.maxLength, count: 0, utf8: 0, esc: 0 }, below), 0);
        return;
      case 'integer':
        return this.stepInteger({ k: 'integer', node: n, neg: false, mag: 0, digits: 0 }, below, b, out);
      case 'number':
        return this.stepNumber({ k: 'number', phase: 'start', digits: 0 }, below, b, out);
      case 'literal':
        return this.stepLiteral({ k: 'literal', node: n, alive: Int32Array.from(node.texts.keys()), pos: 0 }, below, b, out);
    }
  }

  private stepObject(f: Extract<Frame, { k: 'object' }>, stack: Stack, ws: number, b: number, out: Cursor[]): void {
    if (isWhitespace(b)) return this.whitespace(stack, ws, b, out);
    const node = this.nodes[f.node] as Extract<SchemaNode, { kind: 'object' }>;
    const tables = this.schema.objectTables[f.node];
    const below = stack.below;
    // With declared keys, '}' only when no required key is left (closeAfter is 1 exactly then).
    const mayClose = (next: number) => !tables || tables.closeAfter[next] === 1;
    switch (f.phase) {
      case 'open':
        if (b === 0x7d && (!tables || tables.closeOpen === 1)) this.emit(out, below, 0);
        else if (b === QUOTE) this.startKey(f, below, out);
        return;
      case 'afterComma':
        if (b === QUOTE) this.startKey(f, below, out);
        return;
      case 'afterValue':
        if (b === 0x2c) this.emit(out, new Stack({ ...f, phase: 'afterComma' }, below), 0);
        else if (b === 0x7d && mayClose(f.next)) this.emit(out, below, 0);
        return;
      case 'afterKey': {
        if (b !== 0x3a) return;
        const union = tables ? node.properties[f.prop].value : node.freeValues!;
        const next = tables ? f.prop + 1 : 0;
        const parent = new Stack({ k: 'object', node: f.node, phase: 'afterValue', next, prop: -1 }, below);
        this.emit(out, new Stack({ k: 'value', union }, parent), 0);
        return;
      }
    }
  }

  /** After the opening quote of a key. */
  private startKey(f: Extract<Frame, { k: 'object' }>, below: Stack | null, out: Cursor[]): void {
    const tables = this.schema.objectTables[f.node];
    if (!tables) {
      // Free keys: any string, then ':' and a value (the object waits in afterKey under the key string).
      const parent = new Stack({ k: 'object', node: f.node, phase: 'afterKey', next: 0, prop: -1 }, below);
      this.emit(out, new Stack({ k: 'string', minLength: 0, maxLength: Infinity, count: 0, utf8: 0, esc: 0 }, parent), 0);
      return;
    }
    const alive: number[] = [];
    for (let j = f.next; j <= tables.lastCandidate[f.next]; j++) if (tables.propCost[j] < Infinity) alive.push(j);
    if (alive.length > 0) this.emit(out, new Stack({ k: 'key', node: f.node, alive: Int32Array.from(alive), pos: 1 }, below), 0);
  }

  private stepKey(f: Extract<Frame, { k: 'key' }>, below: Stack | null, b: number, out: Cursor[]): void {
    const props = (this.nodes[f.node] as Extract<SchemaNode, { kind: 'object' }>).properties;
    const going: number[] = [];
    for (const j of f.alive) {
      const text = props[j].text;
      if (text[f.pos] !== b) continue;
      // A key text ends with its closing quote, so a complete key is never a prefix of another.
      if (text.length === f.pos + 1) this.emit(out, new Stack({ k: 'object', node: f.node, phase: 'afterKey', next: j + 1, prop: j }, below), 0);
      else going.push(j);
    }
    if (going.length > 0) this.emit(out, new Stack({ k: 'key', node: f.node, alive: Int32Array.from(going), pos: f.pos + 1 }, below), 0);
  }

  private stepArray(f: Extract<Frame, { k: 'array' }>, stack: Stack, ws: number, b: number, out: Cursor[]): void {
    if (isWhitespace(b)) return this.whitespace(stack, ws, b, out);
    const node = this.nodes[f.node] as Extract<SchemaNode, { kind: 'array' }>;
    const below = stack.below;
    const startItem = () => {
      const count = node.maxItems === Infinity ? Math.min(f.count + 1, node.minItems) : f.count + 1;
      const parent = new Stack({ k: 'array', node: f.node, phase: 'afterValue', count }, below);
      for (const n of this.schema.alternatives[node.items]) this.start(n, parent, b, out);
    };
    switch (f.phase) {
      case 'open':
        if (b === 0x5d) {
          if (node.minItems === 0) this.emit(out, below, 0);
        } else if (node.maxItems >= 1) startItem();
        return;
      case 'afterComma':
        startItem();
        return;
      case 'afterValue':
        if (b === 0x2c && f.count < node.maxItems) this.emit(out, new Stack({ ...f, phase: 'afterComma' }, below), 0);
        else if (b === 0x5d && f.count >= node.minItems) this.emit(out, below, 0);
        return;
    }
  }

  private stepString(f: StringFrame, below: Stack | null, b: number, out: Cursor[]): void {
    if (f.esc > 0) {
      const esc = escapeNext(f.esc, b);
      if (esc >= 0) this.emit(out, new Stack({ ...f, esc }, below), 0);
      return;
    }
    if (f.utf8 > 0) {
      const utf8 = utf8Next(f.utf8, b);
      if (utf8 >= 0) this.emit(out, new Stack({ ...f, utf8 }, below), 0);
      return;
    }
    if (b === QUOTE) {
      if (f.count >= f.minLength) this.emit(out, below, 0);
      return;
    }
    if (b < 0x20 || f.count >= f.maxLength) return;
    const count = f.maxLength === Infinity ? Math.min(f.count + 1, f.minLength) : f.count + 1;
    if (b === BACKSLASH) {
      this.emit(out, new Stack({ ...f, count, esc: 1 }, below), 0);
      return;
    }
    const utf8 = utf8Next(0, b);
    if (utf8 >= 0) this.emit(out, new Stack({ ...f, count, utf8 }, below), 0);
  }

  private stepInteger(f: Extract<Frame, { k: 'integer' }>, below: Stack | null, b: number, out: Cursor[]): void {
    if (b === 0x2d && f.digits === 0 && !f.neg) {
      this.emit(out, new Stack({ ...f, neg: true }, below), 0);
    } else if (isDigit(b)) {
      const d = b - 0x30;
      const leadingZero = f.digits >= 1 && f.mag === 0;
      const minusZero = f.digits === 0 && f.neg && d === 0; // "-0" is not written
      if (!leadingZero && !minusZero && f.digits < MAX_INTEGER_DIGITS) {
        this.emit(out, new Stack({ ...f, mag: f.mag * 10 + d, digits: f.digits + 1 }, below), 0);
      }
    }
    // A number ends at the first byte that cannot continue it; that byte belongs to the enclosing value.
    if (this.canEnd(f)) this.stepStack(below, 0, b, out);
  }

  private stepNumber(f: Extract<Frame, { k: 'number' }>, below: Stack | null, b: number, out: Cursor[]): void {
    const to = (phase: NumberPhase, digits = 0) => this.emit(out, new Stack({ k: 'number', phase, digits }, below), 0);
    const digit = isDigit(b);
    const exp = b === 0x65 || b === 0x45;
    switch (f.phase) {
      case 'start':
      case 'minus':
        if (f.phase === 'start' && b === 0x2d) to('minus');
        else if (b === 0x30) to('zero');
        else if (digit) to('int', 1);
        break;
      case 'zero':
        if (b === 0x2e) to('dot');
        else if (exp) to('exp');
        break;
      case 'int':
        if (digit && f.digits < MAX_INTEGER_DIGITS) to('int', f.digits + 1);
        else if (b === 0x2e) to('dot');
        else if (exp) to('exp');
        break;
      case 'dot':
        if (digit) to('frac', 1);
        break;
      case 'frac':
        if (digit && f.digits < MAX_FRACTION_DIGITS) to('frac', f.digits + 1);
        else if (exp) to('exp');
        break;
      case 'exp':
        if (b === 0x2b || b === 0x2d) to('expSign');
        else if (digit) to('expDigits', 1);
        break;
      case 'expSign':
        if (digit) to('expDigits', 1);
        break;
      case 'expDigits':
        if (digit && f.digits < MAX_EXPONENT_DIGITS) to('expDigits', f.digits + 1);
        break;
    }
    if (this.canEnd(f)) this.stepStack(below, 0, b, out);
  }

  private stepLiteral(f: Extract<Frame, { k: 'literal' }>, below: Stack | null, b: number, out: Cursor[]): void {
    const texts = (this.nodes[f.node] as Extract<SchemaNode, { kind: 'literal' }>).texts;
    const going: number[] = [];
    let allEnd = true;
    for (const t of f.alive) {
      const text = texts[t];
      if (text.length > f.pos && text[f.pos] === b) {
        going.push(t);
        if (text.length !== f.pos + 1) allEnd = false;
      }
    }
    if (going.length > 0) {
      // Every remaining text is complete: the value is done (a root literal leaves only EOS).
      if (allEnd) this.emit(out, below, 0);
      else this.emit(out, new Stack({ k: 'literal', node: f.node, alive: Int32Array.from(going), pos: f.pos + 1 }, below), 0);
    }
    if (this.canEnd(f)) this.stepStack(below, 0, b, out);
  }

  /** Can the value of this frame end here (numbers and literals that may still go on)? */
  private canEnd(f: Frame): boolean {
    switch (f.k) {
      case 'integer': {
        if (f.digits === 0) return false;
        const node = this.nodes[f.node] as Extract<SchemaNode, { kind: 'integer' }>;
        const v = f.neg ? -f.mag : f.mag;
        return v >= node.lo && v <= node.hi;
      }
      case 'number':
        return f.phase === 'zero' || f.phase === 'int' || f.phase === 'frac' || f.phase === 'expDigits';
      case 'literal': {
        const texts = (this.nodes[f.node] as Extract<SchemaNode, { kind: 'literal' }>).texts;
        return f.alive.some((t) => texts[t].length === f.pos);
      }
      default:
        return false;
    }
  }

  /** Fewest bytes that finish this frame, given that everything above it is finished. */
  private frameNeed(f: Frame): number {
    const s = this.schema;
    switch (f.k) {
      case 'value':
        return s.unionMinLength[f.union];
      case 'object': {
        const tables = s.objectTables[f.node];
        if (!tables) {
          const valueMin = s.unionMinLength[(this.nodes[f.node] as Extract<SchemaNode, { kind: 'object' }>).freeValues!];
          // '}' | ':' value '}' | '""' ':' value '}'
          return f.phase === 'afterKey' ? valueMin + 2 : f.phase === 'afterComma' ? valueMin + 4 : 1;
        }
        switch (f.phase) {
          case 'open':
            return tables.closeOpen;
          case 'afterValue':
            return tables.closeAfter[f.next];
          case 'afterComma':
            return tables.commaCost[f.next];
          case 'afterKey': {
            const props = (this.nodes[f.node] as Extract<SchemaNode, { kind: 'object' }>).properties;
            return 1 + s.unionMinLength[props[f.prop].value] + tables.closeAfter[f.prop + 1];
          }
        }
        break;
      }
      case 'key': {
        const tables = s.objectTables[f.node]!;
        let m = Infinity;
        // the rest of key j (its text is counted in propCost) and what the object needs after it
        for (const j of f.alive) m = Math.min(m, tables.propCost[j] - f.pos + tables.closeAfter[j + 1]);
        return m;
      }
      case 'array': {
        const node = this.nodes[f.node] as Extract<SchemaNode, { kind: 'array' }>;
        const itemMin = s.unionMinLength[node.items];
        switch (f.phase) {
          case 'open':
            return node.minItems === 0 ? 1 : node.minItems * (itemMin + 1);
          case 'afterValue':
            return Math.max(0, node.minItems - f.count) * (itemMin + 1) + 1;
          case 'afterComma': {
            const k = Math.max(1, node.minItems - f.count);
            return k * (itemMin + 1);
          }
        }
        break;
      }
      case 'string':
        return stringNeed(f.minLength, f.count, f.utf8, f.esc);
      case 'integer':
        return this.integerNeed(f);
      case 'number':
        return this.canEnd(f) ? 0 : 1;
      case 'literal': {
        const texts = (this.nodes[f.node] as Extract<SchemaNode, { kind: 'literal' }>).texts;
        let m = Infinity;
        for (const t of f.alive) m = Math.min(m, texts[t].length - f.pos);
        return m;
      }
    }
    throw new Error(`frameNeed: unknown frame ${JSON.stringify(f)}`);
  }

  /** Fewest digits (and sign) that turn the integer so far into one within [lo, hi]. */
  private integerNeed(f: Extract<Frame, { k: 'integer' }>): number {
    const { lo, hi } = this.nodes[f.node] as Extract<SchemaNode, { kind: 'integer' }>;
    if (f.digits === 0) {
      // negative: the smallest magnitude v >= 1 with -v in range
      const v = Math.max(1, -hi);
      const negative = v <= -lo ? digitCount(v) : Infinity;
      if (f.neg) return negative;
      const p = Math.max(lo, 0);
      const positive = p <= hi ? digitCount(p) : Infinity;
      return Math.min(positive, 1 + negative);
    }
    for (let k = 0; f.digits + k <= MAX_INTEGER_DIGITS; k++) {
      if (k > 0 && f.mag === 0) break; // "0" cannot go on
      const low = f.mag * POW10[k];
      const high = low + POW10[k] - 1;
      const [a, z] = f.neg ? [-high, -low] : [low, high];
      if (a <= hi && z >= lo) return k;
    }
    return Infinity;
  }
}

function dedupe(cursors: Cursor[]): Cursor[] {
  const seen = new Set<string>();
  return cursors.filter((c) => {
    const sig = cursorSig(c);
    if (seen.has(sig)) return false;
    seen.add(sig);
    return true;
  });
}
