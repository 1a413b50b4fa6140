/**
 * `dvl chat [image...]`: an interactive conversation with the model loaded once (in the inference worker).
 * Each question is sent with the whole conversation so far, in the format the model was trained with
 * (prompt/conversation.ts: ChatML turns, a user turn's images before its text); images given on the command
 * line or with /image belong to the next question, and every image is encoded once per session (the worker
 * keeps its embeddings). Images are decoded when they are given, so a bad one is reported at once (on the
 * command line: before the model loads, exit 2; with /image: it is not attached). Commands: /image PATH,
 * /set NAME VALUE, /show, /clear, /help, /exit.
 *
 * Keys, on a terminal (as in ollama and llama.cpp): Ctrl-C during an answer stops that answer, which is
 * not added to the conversation, and the prompt comes back; Ctrl-C on a typed line clears it; Ctrl-C or
 * Ctrl-D at an empty prompt leaves, with exit 0 (the user chose to leave; nothing was cut short). A real
 * SIGINT or SIGTERM (kill) still stops the whole command, exit 130 / 143.
 *
 * Answers stream like `dvl ask` (live view on a terminal); with stdin not a terminal, questions are read one
 * per line and only answers (and what /show and /help print) go to stdout, so a chat can be scripted.
 */
import readline from 'node:readline';
import type { Command } from 'commander';
import type { AskEvent, AskResult, FamilyImageOptions, GenerationSettings, JsonSchemaInput } from '../ask.js';
import type { Turn } from '../prompt/conversation.js';
import { DvlError, usageError } from '../util/errors.js';
import type { StartupTimes } from '../runtime/model.js';
import type { RequestPixelBudget } from '../models/index.js';
import { type AskFlags, addModelOptions, addRemoteOptions, imageOptions, modelGiven, requestSettings, type ResolvedFlags, resolveFlags } from './flags.js';
import { asInterrupted, type ModelSession, openSession, pixelsOf } from './session.js';
import { chooseRenderer, onAskEvent, reportVerbose } from './report.js';
import { GENERATION_SETTINGS, SETTING_NAMES, type SettingName } from '../generate/settings.js';
import { createProgress } from './progress.js';
import { ANY_JSON_OBJECT, checkFormatBudget, cutShortWarning, readJsonSchemaFile } from './json-format.js';
import { type Progress } from '../store/progress.js';
import { askRemote, remoteModel, type RemoteTarget, remoteTarget } from './remote.js';

/** Opens and closes a question of several lines. */
const MULTILINE = '"""';

const COMMANDS = `  """               a question of several lines: from a line starting with """ to one ending with """
  /image PATH       attach an image to your next question (several are fine)
  /set NAME VALUE   change a setting for the next answers, with the flag's values: gen-length, steps,
                    block-size, temperature, top-k, top-p, remasking, threshold, seed (also 'random');
                    /set system TEXT sets the system prompt; /set format json|off: answers are JSON
                    objects; /set json-schema FILE|off: answers are JSON valid against FILE's schema
  /show             print the current settings
  /clear            start a new conversation (forget the turns and images so far)
  /help             list these commands
  /exit             leave (or Ctrl-D, or Ctrl-C at an empty prompt: exit 0)
  Ctrl-C            during an answer: stop it (it is not added to the conversation) and ask again`;

export function registerChat(program: Command, signal: AbortSignal): void {
  const command = program
    .command('chat')
    .description('Talk with the model about images, over several turns (the model stays loaded).')
    .argument('[images...]', 'images for the first question');
  addRemoteOptions(addModelOptions(command))
    .option('--no-live', 'on a terminal, print only committed text (no live view)')
    .addHelpText(
      'after',
      `
In the chat:
${COMMANDS}

Examples:
  dvl chat -m ./ckpt photo.jpg
  printf 'What is this?\\nWhat colour is it?\\n' | dvl chat -m ./ckpt photo.jpg     (scripted: answers only)
  printf '/set gen-length 32\\n/set temperature 0.7\\nTell a story.\\n' | dvl chat -m ./ckpt
  dvl chat --host http://localhost:11435 -m ./ckpt photo.jpg     (the model of a running dvl serve)`,
    )
    .action(async (images: string[], flags: AskFlags, self: Command) => {
      await runChat(images, { ...flags, modelGiven: modelGiven(self) }, signal);
    });
}

/** The settings of the next answers; blockSize undefined: the model's (with --host, until the first answer). */
type ChatSettings = Omit<GenerationSettings, 'blockSize'> & { blockSize?: number };

/** What the next question is sent with; /set and /clear change it. */
interface ChatState {
  settings: ChatSettings;
  system: string | undefined;
  history: Turn[];
  /** The images of the history's user turns, in order. */
  historyImages: string[];
  /** Images for the next question. */
  pending: string[];
  /** Structured output for the next answers (/set format, /set json-schema; the flags at first). */
  jsonSchema?: JsonSchemaInput;
  /** How /show names it: "json", or the schema's file. */
  formatLabel?: string;
}

async function runChat(initialImages: string[], rawFlags: AskFlags, signal: AbortSignal): Promise<void> {
  const resolved = await resolveFlags(rawFlags);
  // Decoded before the model loads: a bad image fails in well under a second, not after the load, and never
  // leaves a scripted chat answering its first question with an error line.
  for (const image of initialImages) await decodeImage(image);
  const interactive = process.stdin.isTTY === true;
  const remote = remoteTarget(resolved);
  // With --host and without -m: the model the server has loaded.
  const flags = remote && resolved.modelGiven === false ? { ...resolved, model: await remoteModel(remote, signal) } : resolved;
  const progress = await createProgress({ quiet: flags.quiet, keepStdin: true });
  const session = remote ? remoteBackend(remote, flags) : localBackend(await openSession(flags, progress, signal));
  progress.stop();

  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: interactive, historySize: 100, prompt: '> ' });
  const state: ChatState = {
    settings: { ...session.settings },
    system: flags.system,
    history: [],
    historyImages: [],
    pending: [...initialImages],
    ...(flags.jsonFormat !== undefined ? { jsonSchema: flags.jsonFormat, formatLabel: flags.jsonSchema ?? 'json' } : {}),
  };
  /** The running answer's controller, while one runs. */
  let answering: AbortController | null = null;
  // On a terminal readline reads Ctrl-C as a key (raw mode): no signal is sent, the 'SIGINT' event is ours.
  rl.on('SIGINT', () => {
    if (answering) answering.abort();
    else if (rl.line !== '') clearTypedLine(rl);
    else rl.close();
  });
  const onAbort = () => rl.close();
  signal.addEventListener('abort', onAbort, { once: true });

  const say = (text: string) => interactive && process.stdout.write(`${text}\n`);
  const attached = state.pending.length ? ` (${state.pending.length} image${state.pending.length > 1 ? 's' : ''} attached)` : '';
  say(`dvl chat: ${flags.model}${remote ? ` on dvl serve at ${remote.url}` : ''}. /help lists the commands; Ctrl-C stops an answer, Ctrl-D leaves.${attached}`);
  let loadReported = false;
  try {
    if (interactive) rl.prompt();
    // A question of several lines (pasted text, code) goes between """ lines: each line would otherwise be a question.
    let block: string[] | null = null;
    for await (const raw of rl) {
      let line = raw.trim();
      let fromBlock = false;
      if (block !== null || line.startsWith(MULTILINE)) {
        const opening = block === null;
        block ??= [];
        const text = opening ? raw.slice(raw.indexOf(MULTILINE) + MULTILINE.length) : raw;
        const closes = text.trimEnd().endsWith(MULTILINE);
        block.push(closes ? text.trimEnd().slice(0, -MULTILINE.length) : text);
        if (!closes) {
          if (interactive) {
            rl.setPrompt('... ');
            rl.prompt();
          }
          continue;
        }
        line = block.join('\n').trim();
        block = null;
        fromBlock = true;
        if (interactive) rl.setPrompt('> ');
      }
      if (!fromBlock && (line === '/exit' || line === '/quit')) break;
      if (!fromBlock && line.startsWith('/')) {
        try {
          await chatCommand(line, state, session, say);
        } catch (error) {
          process.stderr.write(`dvl: ${(error as Error).message}\n`);
        }
      } else if (line !== '') {
        answering = new AbortController();
        try {
          const answered = await answer(line, state, session, flags, progress, { stop: answering.signal, interrupt: signal, say });
          if (answered && flags.verbose) {
            reportVerbose(answered.result, loadReported ? undefined : session.loadMs, { pixels: answered.pixels, startup: session.startup, remoteUrl: remote?.url });
            loadReported = true;
          }
        } finally {
          answering = null;
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

interface AnswerControl {
  /** Aborted by Ctrl-C (the key): stop this answer, the chat goes on. */
  stop: AbortSignal;
  /** Aborted by a real signal: the whole chat stops. */
  interrupt: AbortSignal;
  say(text: string): void;
}

/**
 * Answers one question with the conversation so far and adds the turn to it. Returns null when there is no
 * answer to add: stopped with Ctrl-C (the turn is not added; its images stay attached), or a bad image
 * (reported and dropped). A real interrupt or a model failure is thrown.
 */
async function answer(
  question: string,
  state: ChatState,
  session: ChatBackend,
  flags: ResolvedFlags,
  progress: Progress,
  { stop, interrupt, say }: AnswerControl,
): Promise<{ result: AskResult; pixels?: RequestPixelBudget } | null> {
  const renderer = chooseRenderer({ live: flags.live });
  const { history, historyImages, pending } = state;
  // The request stops on either: the key (this answer) or a signal (the whole chat).
  try {
    // A gen length too short for the schema: said here, and the chat goes on (the question is not asked).
    checkFormatBudget(state.jsonSchema, state.settings.genLength, 'gen-length');
  } catch (error) {
    process.stderr.write(`dvl: ${(error as Error).message} (/set gen-length N, or /set format off)\n`);
    return null;
  }
  const cancel = new AbortController();
  const onInterrupt = () => cancel.abort();
  interrupt.addEventListener('abort', onInterrupt, { once: true });
  stop.addEventListener('abort', onInterrupt, { once: true });
  try {
    const { result, settings, pixels } = await session.ask(
      {
        images: pending,
        prompt: question,
        system: state.system,
        history,
        historyImages,
        settings: state.settings,
        minPixels: flags.minPixels,
        maxPixels: flags.maxPixels,
        imageOptions: imageOptions(flags),
        ...(state.jsonSchema !== undefined ? { jsonSchema: state.jsonSchema } : {}),
      },
      { signal: cancel.signal, onProgress: (event) => onAskEvent(event, progress, renderer) },
    );
    progress.stop();
    const warning = cutShortWarning(result, settings.genLength, 'gen-length');
    if (warning) progress.warn(warning);
    // With --host the model's block size is known from the first answer on (/show says it).
    if (state.settings.blockSize === undefined) state.settings = { ...state.settings, blockSize: settings.blockSize };
    state.history = [...history, { role: 'user', text: question, images: pending.length }, { role: 'assistant', text: result.text }];
    state.historyImages = [...historyImages, ...pending];
    state.pending = [];
    return { result, pixels };
  } catch (error) {
    progress.stop();
    endAnswerLine(renderer);
    if (interrupt.aborted) throw error;
    if (stop.aborted && error instanceof DvlError && error.kind === 'interrupted') {
      say(`(answer stopped${pending.length ? '; its images stay attached for the next question' : ''})`);
      return null;
    }
    if (!(error instanceof DvlError && error.kind === 'input')) throw error;
    process.stderr.write(`dvl: ${error.message} (the images of that question were dropped)\n`);
    state.pending = [];
    return null;
  } finally {
    interrupt.removeEventListener('abort', onInterrupt);
    stop.removeEventListener('abort', onInterrupt);
  }
}

/** After a stopped or failed answer: nothing half-drawn stays, and the next output starts on its own line. */
function endAnswerLine(renderer: ReturnType<typeof chooseRenderer>): void {
  if (renderer && 'dispose' in renderer) renderer.dispose();
  else if (renderer && 'started' in renderer && renderer.started) process.stdout.write('\n');
}

/** /image, /set, /show, /clear, /help; throws a DvlError with the message to print for a mistake. */
async function chatCommand(line: string, state: ChatState, session: ChatBackend, say: (text: string) => void): Promise<void> {
  const [name] = line.split(/\s/, 1);
  const rest = line.slice(name.length).trim();
  switch (name) {
    case '/image': {
      if (!rest) throw usageError('usage: /image PATH');
      // Decoded now, so that a bad image is reported here and never attached.
      await decodeImage(rest);
      state.pending.push(rest);
      say(`(image attached: ${rest})`);
      return;
    }
    case '/set':
      say(setSetting(rest, state));
      return;
    case '/show':
      process.stdout.write(`${showSettings(state)}\n`);
      return;
    case '/clear':
      state.history = [];
      state.historyImages = [];
      state.pending = [];
      session.clearImageCache();
      say('(conversation cleared)');
      return;
    case '/help':
      process.stdout.write(`${COMMANDS}\n`);
      return;
    default:
      throw usageError(`unknown command ${name} (/help lists the commands)`);
  }
}

/** `/set NAME VALUE`, checked with the flag's own parser; returns the confirmation to show. */
function setSetting(args: string, state: ChatState): string {
  const [name = ''] = args.split(/\s/, 1);
  const value = args.slice(name.length).trim();
  if (name === 'system') {
    if (!value) throw usageError('usage: /set system TEXT');
    state.system = value;
    return '(system prompt set)';
  }
  if (name === 'format') {
    if (value === 'off' || value === 'text') {
      delete state.jsonSchema;
      delete state.formatLabel;
      return '(answers are plain text)';
    }
    if (value !== 'json') throw usageError(`usage: /set format json|off, got '${value}'`);
    state.jsonSchema = ANY_JSON_OBJECT;
    state.formatLabel = 'json';
    return '(answers are JSON objects)';
  }
  if (name === 'json-schema') {
    if (!value) throw usageError('usage: /set json-schema FILE|off');
    if (value === 'off') {
      delete state.jsonSchema;
      delete state.formatLabel;
      return '(answers are plain text)';
    }
    // Read and checked now: a schema dvl cannot follow is refused here, and the previous format stays.
    state.jsonSchema = readJsonSchemaFile(value, 'json-schema');
    state.formatLabel = value;
    return `(answers follow the JSON schema in ${value})`;
  }
  const setting = SETTING_NAMES.find((s) => GENERATION_SETTINGS[s].flag === name);
  if (!setting) {
    const names = [...SETTING_NAMES.map((s) => GENERATION_SETTINGS[s].flag), 'system', 'format', 'json-schema'].join(', ');
    throw usageError(name ? `unknown setting '${name}' (one of ${names})` : `usage: /set NAME VALUE, NAME one of ${names}`);
  }
  if (!value) throw usageError(`usage: /set ${name} VALUE`);
  if (setting === 'seed' && value === 'random') {
    state.settings = { ...state.settings, seed: undefined };
  } else {
    state.settings = { ...state.settings, [setting]: GENERATION_SETTINGS[setting].parser(name)(value) };
  }
  return `(${name} set to ${settingText(setting, state.settings)})`;
}

/** `/show`: one `name value` line per setting, then the system prompt. */
function showSettings(state: ChatState): string {
  const lines = SETTING_NAMES.map((s) => `${GENERATION_SETTINGS[s].flag} ${settingText(s, state.settings)}`);
  lines.push(`system ${state.system === undefined ? "(the model's default)" : JSON.stringify(state.system)}`);
  lines.push(state.formatLabel === undefined ? 'format text' : state.formatLabel === 'json' ? 'format json' : `json-schema ${state.formatLabel}`);
  return lines.join('\n');
}

const settingText = (name: SettingName, settings: ChatSettings) => String(settings[name] ?? (name === 'seed' ? 'random' : "(the model's)"));

/** One question of the chat, with the conversation so far. */
interface ChatQuestion {
  images: string[];
  prompt: string;
  system: string | undefined;
  history: Turn[];
  historyImages: string[];
  settings: ChatSettings;
  /** The bounds the user gave (the model's default fills in the rest). */
  minPixels?: number;
  maxPixels?: number;
  imageOptions?: FamilyImageOptions;
  jsonSchema?: JsonSchemaInput;
}

/** Where the chat's answers come from: the model loaded here, or a running dvl serve (--host). */
interface ChatBackend {
  /** The flags' settings (blockSize undefined with --host: the model's, told by the first answer). */
  readonly settings: ChatSettings;
  /** The answer and the settings it was made with. */
  ask(question: ChatQuestion, options: { signal: AbortSignal; onProgress: (event: AskEvent) => void }): Promise<{ result: AskResult; settings: GenerationSettings; pixels?: RequestPixelBudget }>;
  clearImageCache(): void;
  /** Loading the model (with --host: what the first answer waited for the server to load it). */
  readonly loadMs: number;
  readonly startup?: StartupTimes;
  close(): Promise<void>;
}

function localBackend(session: ModelSession): ChatBackend {
  return {
    settings: session.settings,
    loadMs: session.loadMs,
    startup: session.startup,
    async ask(question, options) {
      const settings = { ...question.settings, blockSize: question.settings.blockSize ?? session.settings.blockSize };
      // Every image is encoded once per session: the worker keeps the embeddings.
      const result = await session.worker.ask({ ...question, settings, ...pixelsOf(session), cacheImages: true }, options);
      return { result, settings, pixels: session.pixels };
    },
    clearImageCache: () => session.worker.clearImageCache(),
    close: () => session.close(),
  };
}

/** Each question is one request with the whole conversation: the server keeps its images and prompt rows. */
function remoteBackend(target: RemoteTarget, flags: ResolvedFlags): ChatBackend {
  let loadMs: number | undefined;
  return {
    settings: requestSettings(flags),
    get loadMs() {
      return loadMs ?? 0;
    },
    async ask(question, options) {
      const answer = await askRemote(target, { model: flags.model, ...question }, options);
      loadMs ??= answer.loadMs;
      return { result: answer.result, settings: answer.settings, pixels: answer.pixels };
    },
    // The server's cache is shared and bounded; /clear forgets the conversation, which is all that is ours.
    clearImageCache() {},
    async close() {},
  };
}

/** Ctrl-C on a typed line: clear it, as a shell does (readline's own Ctrl-E then Ctrl-U). */
function clearTypedLine(rl: readline.Interface): void {
  rl.write(null, { ctrl: true, name: 'e' });
  rl.write(null, { ctrl: true, name: 'u' });
}

/** The image decoder, loaded on first use (it loads the image library: --help stays fast). */
async function decodeImage(file: string): Promise<void> {
  const { decodeImage: decode } = await import('../preprocess/decode.js');
  await decode(file);
}
