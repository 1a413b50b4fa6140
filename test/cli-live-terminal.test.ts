/**
 * The live view on a real terminal (tmux): answers with tabs, wide CJK characters and emoji, wrapped at a
 * narrow width, must end on exactly the screen that the same terminal shows when the answer's text is simply
 * printed to it (the terminal expands the tabs and wraps the wide characters itself: an independent oracle).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { AskEvent } from '../src/ask.js';
import { REPO_ROOT } from './helpers/cli.js';

const hasTmux = spawnSync('tmux', ['-V']).status === 0;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-live-'));
const TSX = path.join(REPO_ROOT, 'node_modules/.bin/tsx');
const DRIVER = path.join(REPO_ROOT, 'test/helpers/live-driver.ts');

/** Block-by-block events for `blocks` (each block's pieces), unmasked in a scrambled order as diffusion does. */
function eventsFor(blocks: string[][]): AskEvent[] {
  const events: AskEvent[] = [];
  let first = 0;
  blocks.forEach((pieces, b) => {
    events.push({ type: 'block-start', block: b, firstIndex: first, size: pieces.length });
    const order = pieces.map((_, i) => i).sort((x, y) => ((x * 5 + 3) % pieces.length) - ((y * 5 + 3) % pieces.length));
    order.forEach((slot, step) => events.push({ type: 'unmask', block: b, step, indices: [first + slot], ids: [slot], pieces: [pieces[slot]] }));
    events.push({ type: 'block-end', block: b, firstIndex: first, ids: pieces.map((_, i) => i), text: pieces.join(''), committed: true });
    first += pieces.length;
  });
  events.push({ type: 'finished', text: '', nfe: 1, blocks: blocks.length, stoppedAtEos: true });
  return events;
}

describe.skipIf(!hasTmux && !process.env.CI)('live view on a terminal (tmux)', () => {
  // One tmux server (socket) per window: restarting a server on the same socket can race its shutdown.
  const sockets: string[] = [];
  afterAll(() => {
    for (const socket of sockets) spawnSync('tmux', ['-S', socket, 'kill-server']);
    fs.rmSync(work, { recursive: true, force: true });
  });

  /** Runs `command` in a fresh tmux window `width` columns wide and returns the screen once it is done. */
  async function screenAfter(command: string, width: number): Promise<string> {
    const socket = path.join(work, `tmux-${sockets.length}.sock`);
    sockets.push(socket);
    const tmux = (...args: string[]) => spawnSync('tmux', ['-S', socket, ...args], { encoding: 'utf8' });
    const done = path.join(work, `done-${sockets.length}`);
    const script = `${command}; touch ${JSON.stringify(done)}; sleep 30`;
    expect(tmux('new-session', '-d', '-x', String(width), '-y', '30', 'sh', '-c', script).status).toBe(0);
    const t0 = performance.now();
    while (!fs.existsSync(done) && performance.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 20));
    expect(fs.existsSync(done)).toBe(true);
    return tmux('capture-pane', '-p').stdout.replace(/\s+$/, '');
  }

  const cases: [string, string[][]][] = [
    ['tabs', [['Name', ':\t', 'Diffusion', 'VL'], ['a\tb', '\tc', ' d', '\t\te'], ['\n', 'x\ty']]],
    ['wide characters at the right edge', [['猫が', '好き', '猫', 'が好', 'き。'], ['x猫', '猫猫', '猫猫', '猫', 'y']]],
    ['emoji and mixed text', [['Hi ', '😀', '\t', '🚀🚀', ' ok'], ['行\t', '🙂 mix', 'ed\tend', '!']]],
  ];

  it.each(cases)('%s: the final screen is what printing the answer shows', async (_name, blocks) => {
    const width = 17;
    const events = path.join(work, 'events.json');
    fs.writeFileSync(events, JSON.stringify(eventsFor(blocks)));
    const text = path.join(work, 'text.txt');
    fs.writeFileSync(text, `${blocks.flat().join('')}\n`);
    const live = await screenAfter(`cd ${JSON.stringify(REPO_ROOT)} && NO_COLOR=1 ${JSON.stringify(TSX)} ${JSON.stringify(DRIVER)} ${JSON.stringify(events)}`, width);
    const printed = await screenAfter(`cat ${JSON.stringify(text)}`, width);
    expect(live).toBe(printed);
    expect(live).not.toContain('░');
  });
});
