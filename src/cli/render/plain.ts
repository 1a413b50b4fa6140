/**
 * Committed text only: each block's text is written as soon as the block is done (stdout is a pipe or a file,
 * or --no-live). The AskEvents' text never splits a multi-byte character (ask.ts holds incomplete ones back),
 * so a consumer reading the stream byte by byte always sees valid UTF-8 at block boundaries.
 */
import type { AskEvent } from '../../ask.js';
import type { OutputStream } from './terminal.js';

export class PlainRenderer {
  private wrote = false;
  constructor(private readonly out: OutputStream) {}

  onEvent(event: AskEvent): void {
    if ((event.type === 'block-end' || event.type === 'finished') && event.text !== '') {
      this.out.write(event.text);
      this.wrote = true;
    }
    if (event.type === 'finished') this.out.write('\n');
  }

  /** Whether any answer text has been written (an interrupted run then ends the line). */
  get started(): boolean {
    return this.wrote;
  }
}
