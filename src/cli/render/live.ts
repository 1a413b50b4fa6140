/**
 * The live view on a terminal: the committed answer text, followed in place by the block being denoised —
 * one dim placeholder per masked slot, and the tokens filled so far (those of the latest step highlighted),
 * so that one sees the most confident tokens appear first. When the block is done, the live segment is
 * replaced by the block's committed text and the next block starts after it.
 *
 * Redrawing: the live segment always starts where the committed text ends (row of the cursor, column
 * `column`). To redraw it, the cursor goes up the rows the segment wrapped onto, to that column, and the
 * screen is cleared from there (ED). Token text is drawn on one logical line (newlines shown as ↵), so the
 * rows it takes follow from the width of each character and the terminal width.
 *
 * That bookkeeping is exact only if the terminal receives nothing whose effect on the cursor we do not
 * model: committed text reaches it with tabs expanded to spaces (to the next multiple of 8 columns) and with
 * other control characters (carriage returns, escapes) removed; wide characters that do not fit at the end of
 * a row wrap to the next one, as terminals do.
 */
import type { ChalkInstance } from 'chalk';
import type { AskEvent } from '../../ask.js';
import { charWidth, type OutputStream } from './terminal.js';

const ESC = '\x1b[';
const MASK_GLYPH = '░';

export class LiveRenderer {
  /** Column after the committed text (0-based; `width` while the terminal's wrap is pending). */
  private column = 0;
  /**
   * The row of committed text that ended at the right edge was wrapped by us (to draw the live segment after
   * it), so the cursor is already where the terminal would put a newline: the next newline is skipped.
   */
  private wrapped = false;
  /** Rows below the segment's first row that the drawn live segment reaches. */
  private liveRows = 0;
  private liveDrawn = false;
  private slots: (string | null)[] = [];
  private fresh = new Set<number>();
  private blockFirst = 0;
  private cursorHidden = false;
  private wrote = false;

  constructor(
    private readonly out: OutputStream,
    private readonly colors: ChalkInstance,
  ) {}

  private get width(): number {
    return Math.max(10, this.out.columns ?? 80);
  }

  onEvent(event: AskEvent): void {
    switch (event.type) {
      case 'block-start':
        this.slots = new Array<string | null>(event.size).fill(null);
        this.fresh.clear();
        this.blockFirst = event.firstIndex;
        if (!this.cursorHidden) {
          this.out.write(`${ESC}?25l`);
          this.cursorHidden = true;
        }
        this.draw();
        return;
      case 'unmask':
        this.fresh.clear();
        event.indices.forEach((index, k) => {
          const slot = index - this.blockFirst;
          if (slot >= 0 && slot < this.slots.length) {
            this.slots[slot] = event.pieces[k];
            this.fresh.add(slot);
          }
        });
        this.draw();
        return;
      case 'block-end':
        this.erase();
        this.slots = [];
        this.commit(event.text);
        return;
      case 'finished':
        this.erase();
        this.commit(event.text);
        if (!this.wrapped) this.out.write('\n');
        this.column = 0;
        this.wrapped = false;
        this.restoreCursor();
        return;
      case 'stage':
        return;
    }
  }

  /** Removes the live segment and shows the cursor (on errors and Ctrl-C: nothing half-drawn stays). */
  dispose(): void {
    this.erase();
    if (this.wrote && this.column > 0) this.out.write('\n');
    this.column = 0;
    this.restoreCursor();
  }

  get started(): boolean {
    return this.wrote;
  }

  private restoreCursor(): void {
    if (this.cursorHidden) this.out.write(`${ESC}?25h`);
    this.cursorHidden = false;
  }

  private commit(text: string): void {
    let shown = forTerminal(text, this.column, this.width);
    if (this.wrapped && shown.startsWith('\n')) shown = shown.slice(1);
    if (shown === '') return;
    this.wrapped = false;
    this.out.write(shown);
    this.wrote = true;
    this.column = advance(this.column, shown, this.width).column;
  }

  /**
   * With the wrap pending (the cursor in the last column), the cursor cannot be moved back to "where the text
   * ended" for a redraw; a space and a backspace complete the wrap, so the live segment starts at column 0 of
   * the next row.
   */
  private completeWrap(): void {
    if (this.column < this.width) return;
    this.out.write(' \b');
    this.column = 0;
    this.wrapped = true;
  }

  private erase(): void {
    if (!this.liveDrawn) return;
    let move = this.liveRows > 0 ? `${ESC}${this.liveRows}A` : '';
    move += '\r';
    if (this.column > 0) move += `${ESC}${this.column}C`;
    this.out.write(`${move}${ESC}J`);
    this.liveDrawn = false;
    this.liveRows = 0;
  }

  private draw(): void {
    this.erase();
    let plain = '';
    let styled = '';
    this.slots.forEach((piece, slot) => {
      if (piece === null) {
        plain += MASK_GLYPH;
        styled += this.colors.dim(MASK_GLYPH);
      } else {
        const shown = visible(piece);
        plain += shown;
        styled += this.fresh.has(slot) ? this.colors.cyan(shown) : shown;
      }
    });
    if (plain === '') return;
    this.completeWrap();
    this.out.write(styled);
    this.liveDrawn = true;
    // With the wrap pending at the right edge, a segment that ends exactly there stays on its last row.
    this.liveRows = advance(this.column, plain, this.width).rows;
  }
}

/**
 * Committed text as it is written to the terminal: CRLF and CR become newlines, tabs become the spaces up
 * to the next tab stop (every 8 columns of the row, at most to the last column, as the terminal's own tab
 * would move; the text starts at `column` of a terminal `width` wide), other control characters are dropped.
 */
export function forTerminal(text: string, column: number, width: number): string {
  let out = '';
  let col = column;
  for (const ch of text.replace(/\r\n?/g, '\n')) {
    if (ch === '\n') {
      out += ch;
      col = 0;
    } else if (ch === '\t') {
      // As a terminal's tab: to the next stop, but never past the last column, and never onto the next row.
      const spaces = Math.max(0, Math.min(col + 8 - (col % 8), width - 1) - col);
      out += ' '.repeat(spaces);
      col += spaces;
    } else if (!isControl(ch)) {
      const w = charWidth(ch);
      if (col + w > width) col = 0;
      out += ch;
      col += w;
    }
  }
  return out;
}

/**
 * Where the cursor is after `text` (printable characters and newlines only) is written from `column` on a
 * terminal `width` columns wide: the rows it moved down, and the column (`width` when the wrap is pending).
 */
export function advance(column: number, text: string, width: number): { rows: number; column: number } {
  let rows = 0;
  let col = column;
  for (const ch of text) {
    if (ch === '\n') {
      rows++;
      col = 0;
      continue;
    }
    const w = charWidth(ch);
    if (w === 0) continue;
    if (col + w > width) {
      rows++;
      col = 0;
    }
    col += w;
  }
  return { rows, column: col };
}

const isControl = (ch: string) => /[\x00-\x1f\x7f-\x9f]/.test(ch);

/** A token's text on one line: newlines as ↵, tabs as a space, other control characters dropped. */
function visible(piece: string): string {
  return piece.replace(/\r?\n/g, '↵').replace(/\t/g, ' ').replace(/[\x00-\x1f\x7f]/g, '');
}
