/**
 * --jsonl: one JSON object per line for every event as it happens, then one final object (the --json object
 * with "type": "result"). The schema is documented in README.md ("--jsonl"). Lines are written whole, each
 * with its newline, so a reader that splits on "\n" never sees half an object.
 */
import type { AskEvent } from '../../ask.js';
import type { OutputStream } from './terminal.js';

/**
 * One AskEvent as it appears on a line: snake_case keys, elapsed milliseconds since the run started (a stage's
 * `at`, when it has one: the time the stage really began, which for images encoded while the model loaded is
 * before the answer's other events).
 */
export function jsonlEvent(event: AskEvent, elapsedMs: number): Record<string, unknown> {
  const ms = Math.round(elapsedMs * 10) / 10;
  switch (event.type) {
    case 'stage':
      return { type: 'stage', stage: event.stage, ms };
    case 'image-progress':
      return { type: 'image-progress', image: event.image, done: event.done, crops: event.crops, ms };
    case 'block-start':
      return { type: 'block-start', block: event.block, first_index: event.firstIndex, size: event.size, ms };
    case 'unmask':
      return { type: 'unmask', block: event.block, step: event.step, indices: event.indices, ids: event.ids, pieces: event.pieces, ms };
    case 'block-end':
      return { type: 'block-end', block: event.block, first_index: event.firstIndex, ids: event.ids, text: event.text, committed: event.committed, ms };
    case 'finished':
      return { type: 'finished', text: event.text, nfe: event.nfe, blocks: event.blocks, stopped_at_eos: event.stoppedAtEos, ms };
  }
}

export class JsonlRenderer {
  private readonly t0 = performance.now();
  constructor(private readonly out: OutputStream) {}

  onEvent(event: AskEvent): void {
    const at = event.type === 'stage' && event.at !== undefined ? event.at - performance.timeOrigin : performance.now();
    this.line(jsonlEvent(event, at - this.t0));
  }

  /** The final object (the same fields as --json). */
  result(object: Record<string, unknown>): void {
    this.line({ type: 'result', ...object });
  }

  /** The last line of a run stopped by Ctrl-C or SIGTERM (instead of "result"). */
  interrupted(): void {
    this.line({ type: 'interrupted', ms: Math.round((performance.now() - this.t0) * 10) / 10 });
  }

  line(object: Record<string, unknown>): void {
    this.out.write(`${JSON.stringify(object)}\n`);
  }
}
