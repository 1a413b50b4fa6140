/**
 * The live view on a terminal: the committed answer text, followed in place by the block being denoised —
 * one dim placeholder per masked slot, and the tokens filled so far (those of the latest step highlighted),
 * so that one sees the most confident tokens appear first. When the block is done, the live segment is
 * replaced by the block's committed text and the next block starts after it.
 *
 * Redrawing: the live segment always starts where the committed text ends (row of the cursor, column
 * `column`). To redraw it, the cursor goes up the rows the segment wrapped onto, to that column, and the
 * screen is cleared from there (ED). Token text is drawn on one logical line (newlines shown as ↵), so the
 * rows it takes follow from its display width and the terminal width.
 */
import type { ChalkInstance } from 'chalk';
import type { AskEvent } from '../../ask.js';
import { displayWidth, type OutputStream } from './terminal.js';

const ESC = '\x1b[';
const MASK_GLYPH = '░';

export class LiveRenderer {
  /** Column after the committed text (0-based). */
  private column = 0;
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
        this.out.write('\n');
        this.column = 0;
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
    if (text === '') return;
    this.out.write(text);
    this.wrote = true;
    const lastNewline = text.lastIndexOf('\n');
    this.column = lastNewline >= 0 ? displayWidth(text.slice(lastNewline + 1)) : this.column + displayWidth(text);
    if (this.column >= this.width) {
      // The cursor may sit in the last column with the wrap still pending; a space and a backspace complete
      // the wrap, so that "column 0 of the next row" is where the cursor really is.
      if (this.column % this.width === 0) this.out.write(' \b');
      this.column %= this.width;
    }
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
    const width = displayWidth(plain);
    if (width === 0) return;
    this.out.write(styled);
    this.liveDrawn = true;
    // With the wrap pending at the right edge, a segment that ends exactly there stays on its last row.
    this.liveRows = Math.floor((this.column + width - 1) / this.width);
  }
}

/** A token's text on one line: newlines as ↵, tabs as a space, other control characters dropped. */
function visible(piece: string): string {
  return piece.replace(/\r?\n/g, '↵').replace(/\t/g, ' ').replace(/[\x00-\x1f\x7f]/g, '');
}
