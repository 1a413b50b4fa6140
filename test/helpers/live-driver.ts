/**
 * Feeds the AskEvents of a JSON file (argv[2]) to the real LiveRenderer writing to this process's stdout, so a
 * test can look at the result on a real terminal (tmux) without a model that happens to print tabs or emoji.
 */
import fs from 'node:fs';
import type { AskEvent } from '../../src/ask.js';
import { LiveRenderer } from '../../src/cli/render/live.js';
import { colorsFor } from '../../src/cli/render/terminal.js';

const events = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')) as AskEvent[];
const live = new LiveRenderer(process.stdout, colorsFor(process.stdout));
for (const event of events) {
  live.onEvent(event);
  // Let the terminal draw each state, as it would during a real run.
  await new Promise((resolve) => setTimeout(resolve, 5));
}
