/**
 * The renderers on their own, fed AskEvents: the live view is checked on a small terminal emulator written
 * here (cursor movement, line wrap with the pending-wrap rule, clear to end of screen), which shows what a
 * user would see after every event; the plain and JSONL renderers by their exact output.
 */
import { describe, expect, it } from 'vitest';
import type { AskEvent } from '../src/ask.js';
import { JsonlRenderer } from '../src/cli/render/jsonl.js';
import { advance, forTerminal, LiveRenderer } from '../src/cli/render/live.js';
import { PlainRenderer } from '../src/cli/render/plain.js';
import { colorsFor, displayWidth } from '../src/cli/render/terminal.js';

/** A VT100 subset: printable characters (width 1), \n, \r, \b, CSI A / C / J / ?25l / ?25h / m. */
class Screen {
  rows: string[][] = [[]];
  r = 0;
  c = 0;
  pendingWrap = false;
  cursorVisible = true;
  constructor(readonly columns: number) {}
  readonly isTTY = true;
  write(text: string): void {
    for (let i = 0; i < text.length; i++) {
      const ch = text[i];
      if (ch === '\x1b') {
        const m = /^\x1b\[(\??)(\d*(?:;\d+)*)([A-Za-z])/.exec(text.slice(i))!;
        expect(m, `unknown escape at ${JSON.stringify(text.slice(i, i + 8))}`).not.toBeNull();
        i += m[0].length - 1;
        const n = Number(m[2] || '1');
        if (m[3] === 'A') this.r = Math.max(0, this.r - n);
        else if (m[3] === 'C') this.c = Math.min(this.columns - 1, this.c + n);
        else if (m[3] === 'J') {
          this.row().length = Math.min(this.row().length, this.c);
          this.rows.length = this.r + 1;
        } else if (m[1] === '?' && m[2] === '25') this.cursorVisible = m[3] === 'h';
        else expect(m[3]).toBe('m');
        if (m[3] !== 'm') this.pendingWrap = false;
        continue;
      }
      if (ch === '\n') this.lineFeed();
      else if (ch === '\r') this.c = 0;
      else if (ch === '\b') this.c = Math.max(0, this.c - 1);
      else {
        if (this.pendingWrap) this.lineFeed();
        this.pendingWrap = false;
        const row = this.row();
        while (row.length < this.c) row.push(' ');
        row[this.c] = ch;
        if (this.c === this.columns - 1) this.pendingWrap = true;
        else this.c++;
        continue;
      }
      this.pendingWrap = false;
    }
  }
  private lineFeed(): void {
    this.r++;
    this.c = 0;
    while (this.rows.length <= this.r) this.rows.push([]);
  }
  private row(): string[] {
    while (this.rows.length <= this.r) this.rows.push([]);
    return this.rows[this.r];
  }
  text(): string {
    return this.rows.map((r) => r.join('').trimEnd()).join('\n');
  }
}

const noColor = colorsFor({ isTTY: true }, { NO_COLOR: '1' });
const unmask = (block: number, step: number, indices: number[], pieces: string[]): AskEvent => ({ type: 'unmask', block, step, indices, ids: indices.map(() => 1), pieces });
const blockEnd = (block: number, firstIndex: number, text: string): AskEvent => ({ type: 'block-end', block, firstIndex, ids: [1, 2, 3, 4], text, committed: true });
const finished = (text = ''): AskEvent => ({ type: 'finished', text, nfe: 9, blocks: 2, stoppedAtEos: false });

describe('live view', () => {
  it('shows masked slots, fills them in place, and leaves exactly the committed text', () => {
    const screen = new Screen(12);
    const live = new LiveRenderer(screen, noColor);
    live.onEvent({ type: 'block-start', block: 3, firstIndex: 0, size: 4 });
    expect(screen.text()).toBe('░░░░');
    expect(screen.cursorVisible).toBe(false);
    // The most confident token (slot 2) first, then slots 0 and 3: the others stay masked.
    live.onEvent(unmask(3, 0, [2], [' cat']));
    expect(screen.text()).toBe('░░ cat░');
    live.onEvent(unmask(3, 1, [0, 3], ['A', '\n']));
    expect(screen.text()).toBe('A░ cat↵');
    live.onEvent(unmask(3, 2, [1], [' black']));
    // 'A black cat↵' is 12 columns: exactly the width, no extra row.
    expect(screen.text()).toBe('A black cat↵');
    live.onEvent(blockEnd(3, 0, 'A black cat\n'));
    expect(screen.text()).toBe('A black cat\n');
    // The next block is drawn after the committed text, on the new line, and wraps past the width.
    live.onEvent({ type: 'block-start', block: 4, firstIndex: 4, size: 4 });
    live.onEvent(unmask(4, 0, [4, 5, 6, 7], ['sits', ' on', ' the', ' mat.']));
    expect(screen.text()).toBe('A black cat\nsits on the\nmat.');
    live.onEvent(unmask(4, 0, [5], [' at']));
    expect(screen.text()).toBe('A black cat\nsits at the\nmat.');
    live.onEvent(blockEnd(4, 4, 'sits on'));
    expect(screen.text()).toBe('A black cat\nsits on');
    live.onEvent(finished());
    expect(screen.text()).toBe('A black cat\nsits on\n');
    expect(screen.cursorVisible).toBe(true);
  });

  it('redraws a wrapped live segment in place when committed text ends mid-row and at the edge', () => {
    const screen = new Screen(10);
    const live = new LiveRenderer(screen, noColor);
    live.onEvent({ type: 'block-start', block: 0, firstIndex: 0, size: 2 });
    live.onEvent(blockEnd(0, 0, '0123456789')); // exactly one row: the wrap is pending
    live.onEvent({ type: 'block-start', block: 1, firstIndex: 2, size: 3 });
    expect(screen.text()).toBe('0123456789\n░░░');
    live.onEvent(blockEnd(1, 2, 'abcdefg'));
    live.onEvent({ type: 'block-start', block: 2, firstIndex: 5, size: 3 });
    live.onEvent(unmask(2, 0, [5, 6, 7], ['hij', 'klm', 'nop']));
    expect(screen.text()).toBe('0123456789\nabcdefghij\nklmnop');
    live.onEvent(unmask(2, 1, [6], ['K']));
    expect(screen.text()).toBe('0123456789\nabcdefghij\nKnop');
    live.onEvent(unmask(2, 2, [7], ['']));
    expect(screen.text()).toBe('0123456789\nabcdefghij\nK');
    live.onEvent(blockEnd(2, 5, 'hij'));
    live.onEvent(finished('!'));
    expect(screen.text()).toBe('0123456789\nabcdefghij\n!\n');
  });

  it('dispose() (Ctrl-C, errors) removes the live segment and shows the cursor again', () => {
    const screen = new Screen(20);
    const live = new LiveRenderer(screen, noColor);
    live.onEvent({ type: 'block-start', block: 0, firstIndex: 0, size: 3 });
    live.onEvent(blockEnd(0, 0, 'Hello'));
    live.onEvent({ type: 'block-start', block: 1, firstIndex: 3, size: 3 });
    live.onEvent(unmask(1, 0, [4], [' wor']));
    expect(screen.text()).toBe('Hello░ wor░');
    live.dispose();
    expect(screen.text()).toBe('Hello\n');
    expect(screen.cursorVisible).toBe(true);
  });

  it('dims masked slots and highlights new tokens only with colors on', () => {
    const out: string[] = [];
    const stream = { isTTY: true, columns: 80, write: (t: string) => out.push(t) };
    const live = new LiveRenderer(stream, colorsFor(stream, {}));
    live.onEvent({ type: 'block-start', block: 0, firstIndex: 0, size: 2 });
    live.onEvent(unmask(0, 0, [1], ['x']));
    expect(out.join('')).toContain('\x1b[2m░\x1b[22m');
    expect(out.join('')).toContain('\x1b[36mx\x1b[39m');
  });
});

describe('colors', () => {
  it('only on a terminal, never with NO_COLOR or TERM=dumb', () => {
    expect(colorsFor({ isTTY: true }, {}).level).toBeGreaterThan(0);
    expect(colorsFor({ isTTY: false }, {}).level).toBe(0);
    expect(colorsFor({ isTTY: true }, { NO_COLOR: '1' }).level).toBe(0);
    expect(colorsFor({ isTTY: true }, { NO_COLOR: '' }).level).toBeGreaterThan(0);
    expect(colorsFor({ isTTY: true }, { TERM: 'dumb' }).level).toBe(0);
  });

  it('measures display width: wide CJK characters 2, combining marks 0', () => {
    expect(displayWidth('abc')).toBe(3);
    expect(displayWidth('猫が')).toBe(4);
    expect(displayWidth('e\u0301')).toBe(1);
    expect(displayWidth('\x1b')).toBe(0);
    expect(displayWidth('😀🚀')).toBe(4);
  });

  it('writes committed text without anything that moves the cursor unseen: tabs expanded, controls dropped', () => {
    // Tab stops every 8 columns, counted from where the text starts, never past the last column.
    expect(forTerminal('a\tb', 0, 80)).toBe('a       b');
    expect(forTerminal('a\tb', 5, 80)).toBe('a  b');
    expect(forTerminal('\t', 75, 80)).toBe('    ');
    expect(forTerminal('\t', 79, 80)).toBe('');
    // A newline restarts the tab stops; CR LF and a lone CR are newlines; escapes and other controls vanish.
    expect(forTerminal('ab\r\n\tc\rd\x1b[2Je\x07', 0, 80)).toBe('ab\n        c\nd[2Je');
    // A wide character that does not fit wraps first: the tab after it counts from the new row.
    expect(forTerminal('猫\tx', 9, 10)).toBe('猫      x');
  });

  it('follows the cursor like a terminal: pending wrap at the edge, wide characters wrapped early', () => {
    expect(advance(0, 'abcde', 5)).toEqual({ rows: 0, column: 5 });
    expect(advance(0, 'abcdef', 5)).toEqual({ rows: 1, column: 1 });
    expect(advance(4, '猫', 5)).toEqual({ rows: 1, column: 2 });
    expect(advance(3, 'x\ny', 5)).toEqual({ rows: 1, column: 1 });
    expect(advance(5, '\n', 5)).toEqual({ rows: 1, column: 0 });
  });
});

describe('plain and JSONL renderers', () => {
  it('plain writes each block text as it is committed, then a newline', () => {
    const out: string[] = [];
    const plain = new PlainRenderer({ write: (t: string) => out.push(t) });
    plain.onEvent({ type: 'block-start', block: 0, firstIndex: 0, size: 4 });
    plain.onEvent(unmask(0, 0, [0], ['x']));
    expect(out).toEqual([]);
    plain.onEvent(blockEnd(0, 0, 'Caf'));
    plain.onEvent(blockEnd(1, 4, ''));
    plain.onEvent(blockEnd(2, 8, 'é au lait'));
    plain.onEvent(finished());
    expect(out).toEqual(['Caf', 'é au lait', '\n']);
  });

  it('JSONL writes one object per line with snake_case keys and a final result object', () => {
    const out: string[] = [];
    const jsonl = new JsonlRenderer({ write: (t: string) => out.push(t) });
    jsonl.onEvent({ type: 'stage', stage: 'vision' });
    jsonl.onEvent(blockEnd(0, 0, 'A'));
    jsonl.result({ text: 'A', tokens: [32] });
    expect(out.every((l) => l.endsWith('\n') && l.indexOf('\n') === l.length - 1)).toBe(true);
    const lines = out.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({ type: 'stage', stage: 'vision' });
    expect(lines[1]).toMatchObject({ type: 'block-end', block: 0, first_index: 0, text: 'A', committed: true, ids: [1, 2, 3, 4] });
    expect(typeof lines[1].ms).toBe('number');
    expect(lines[2]).toEqual({ type: 'result', text: 'A', tokens: [32] });
  });
});
