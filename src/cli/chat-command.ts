/**
 * `dvl chat [image...]`: an interactive conversation with the model loaded once (in the inference worker).
 * Each question is sent with the whole conversation so far, in the format the model was trained with
 * (prompt/conversation.ts: ChatML turns, a user turn's images before its text); images given on the command
 * line or with /image belong to the next question, and every image is encoded once per session (the worker
 * keeps its embeddings). Commands: /image PATH, /clear (forget the conversation), /exit (or Ctrl-D).
 * Answers stream like `dvl ask` (live view on a terminal); with stdin not a terminal, questions are read one
 * per line and only answers are printed, so a chat can be scripted.
 */
import readline from 'node:readline';
import type { Command } from 'commander';
import type { Turn } from '../prompt/conversation.js';
import { DvlError } from '../util/errors.js';
import { type AskFlags, addModelOptions, asInterrupted, checkReadableFile, chooseRenderer, onAskEvent, openSession, reportVerbose, resolveFlags } from './ask-command.js';
import { createProgress } from './progress.js';

export function registerChat(program: Command, signal: AbortSignal): void {
  const command = program
    .command('chat')
    .description('Talk with the model about images, over several turns (the model stays loaded).')
    .argument('[images...]', 'images for the first question');
  addModelOptions(command)
    .option('--no-live', 'on a terminal, print only committed text (no live view)')
    .addHelpText(
      'after',
      `
In the chat:
  /image PATH   attach an image to your next question (several are fine)
  /clear        start a new conversation (forget the turns and images so far)
  /exit         leave (or Ctrl-D); Ctrl-C also stops a running answer and leaves (exit 130)

Examples:
  dvl chat -m ./ckpt photo.jpg
  printf 'What is this?\\nWhat colour is it?\\n' | dvl chat -m ./ckpt photo.jpg     (scripted: answers only)`,
    )
    .action(async (images: string[], flags: AskFlags) => {
      await runChat(images, flags, signal);
    });
}

async function runChat(initialImages: string[], rawFlags: AskFlags, signal: AbortSignal): Promise<void> {
  const flags = await resolveFlags(rawFlags);
  for (const image of initialImages) checkReadableFile(image);
  const interactive = process.stdin.isTTY === true;
  const progress = await createProgress({ quiet: flags.quiet });
  const session = await openSession(flags, progress, signal);
  progress.stop();

  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: interactive, historySize: 100, prompt: '> ' });
  // On a terminal readline takes Ctrl-C as a key; hand it to the CLI's interrupt handling (exit 130).
  rl.on('SIGINT', () => process.kill(process.pid, 'SIGINT'));
  const onAbort = () => rl.close();
  signal.addEventListener('abort', onAbort, { once: true });

  let history: Turn[] = [];
  let historyImages: string[] = [];
  let pending = [...initialImages];
  const say = (text: string) => interactive && process.stdout.write(`${text}\n`);
  say(`dvl chat: ${flags.model}. /image PATH, /clear, /exit.${pending.length ? ` (${pending.length} image${pending.length > 1 ? 's' : ''} attached)` : ''}`);
  try {
    if (interactive) rl.prompt();
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === '/exit' || line === '/quit') break;
      if (line === '/clear') {
        history = [];
        historyImages = [];
        pending = [];
        session.worker.clearImageCache();
        say('(conversation cleared)');
      } else if (line.startsWith('/image')) {
        const file = line.slice('/image'.length).trim();
        try {
          if (!file) throw new DvlError('usage', 'usage: /image PATH');
          checkReadableFile(file);
          pending.push(file);
          say(`(image attached: ${file})`);
        } catch (error) {
          process.stderr.write(`dvl: ${(error as Error).message}\n`);
        }
      } else if (line.startsWith('/')) {
        process.stderr.write(`dvl: unknown command ${line.split(/\s/)[0]} (try /image PATH, /clear, /exit)\n`);
      } else if (line !== '') {
        const renderer = chooseRenderer({ live: flags.live });
        try {
          const result = await session.worker.ask(
            { images: pending, prompt: line, system: flags.system, history, historyImages, settings: session.settings, minPixels: flags.minPixels, maxPixels: flags.maxPixels, cacheImages: true },
            { signal, onProgress: (event) => onAskEvent(event, progress, renderer) },
          );
          progress.stop();
          if (flags.verbose) reportVerbose(result, session.loadMs, flags);
          history.push({ role: 'user', text: line, images: pending.length }, { role: 'assistant', text: result.text });
          historyImages.push(...pending);
          pending = [];
        } catch (error) {
          progress.stop();
          if (renderer && 'dispose' in renderer) renderer.dispose();
          // A bad image is reported and dropped; the conversation goes on.
          if (!(error instanceof DvlError && error.kind === 'input') || signal.aborted) throw error;
          process.stderr.write(`dvl: ${error.message} (the images of that question were dropped)\n`);
          pending = [];
        }
      }
      if (interactive) rl.prompt();
    }
    if (signal.aborted) throw new DvlError('interrupted', 'interrupted');
  } catch (error) {
    throw asInterrupted(error, signal);
  } finally {
    signal.removeEventListener('abort', onAbort);
    rl.close();
    await session.close();
  }
}
