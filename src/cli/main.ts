/**
 * The `dvl` command line: parses arguments with commander and maps every failure to a one-line message and an
 * exit code (0 ok, 1 usage, 2 input, 3 model or conversion, 130 interrupted — 143 for SIGTERM). The work is
 * done by the library.
 */
import { Command, CommanderError } from 'commander';
import { errorPath, isNoSpace } from '../util/disk.js';
import { DvlError } from '../util/errors.js';
import { DVL_VERSION } from '../version.js';
import { registerAsk } from './ask-command.js';
import { registerBatch } from './batch.js';
import { registerChat } from './chat-command.js';
import { exitCodeForSignal, watchInterrupts } from './interrupt.js';
import { registerPull } from './pull-command.js';
import { registerServe } from './serve-command.js';
import { registerStoreCommands } from './store-commands.js';

export async function main(argv: string[]): Promise<number> {
  const interrupts = watchInterrupts();
  // -v as well: what ollama, node and most tools answer to.
  if (argv.length === 3 && (argv[2] === '-V' || argv[2] === '-v' || argv[2] === '--version')) {
    // Not commander's --version: that one cannot wait for onnxruntime to say what it is.
    const { formatVersions, runtimeVersions } = await import('../runtime/versions.js');
    process.stdout.write(`${formatVersions(DVL_VERSION, await runtimeVersions())}\n`);
    interrupts.dispose();
    return 0;
  }
  const program = new Command('dvl')
    .description('Run DiffusionVL block-diffusion vision-language models locally (onnxruntime, CPU).')
    .version(DVL_VERSION, '-V, --version', 'print the versions of dvl and onnxruntime, and the execution providers (also -v)')
    .exitOverride();
  registerPull(program, interrupts.signal);
  registerAsk(program, interrupts.signal);
  registerBatch(program, interrupts.signal);
  registerChat(program, interrupts.signal);
  registerServe(program, interrupts.signal);
  registerStoreCommands(program);
  program.addHelpText(
    'after',
    `
Examples:
  dvl pull ./DiffusionVL-Qwen2.5VL-3B                 convert a local checkpoint (int4 by default)
  dvl ask --model ./DiffusionVL-Qwen2.5VL-3B photo.jpg "Describe this image."
  echo "What is 2+2?" | dvl ask --model ./ckpt --json -
  dvl ask -m ./ckpt --each "Describe this image." *.jpg > captions.jsonl
  dvl chat -m ./ckpt photo.jpg                        talk about a picture, several turns
  dvl serve -m ./ckpt                                 OpenAI, Anthropic and Ollama APIs on http://localhost:11435

Environment:
  DVL_HOME        where converted models are stored (default ~/.cache/dvl)
  HF_HUB_CACHE    where downloads go (default $HF_HOME/hub, else ~/.cache/huggingface/hub)
  HF_TOKEN        token for gated or private models;  HF_ENDPOINT  Hub mirror
  HF_HUB_OFFLINE  1: no network, downloaded models only
  DVL_HOST        ask and chat answer on this running dvl serve (as --host)
  DVL_API_KEY     the key dvl serve requires, and ask/chat --host send (as --api-key)`,
  );
  for (const command of [program, ...program.commands]) {
    const name = command === program ? 'dvl' : `dvl ${command.name()}`;
    command.configureOutput({ outputError: (text, write) => write(`dvl: ${tidyCommanderMessage(text)} (see '${name} --help')\n`) });
  }

  try {
    await program.parseAsync(argv);
    return interrupts.received === 'SIGPIPE' ? exitCodeForSignal('SIGPIPE') : 0;
  } catch (error) {
    // The reader of stdout went away: whatever failed after that is a consequence, not news.
    if (interrupts.received === 'SIGPIPE') return exitCodeForSignal('SIGPIPE');
    const code = reportError(error, argv.includes('--verbose'));
    return code === 130 && interrupts.received ? exitCodeForSignal(interrupts.received) : code;
  } finally {
    interrupts.dispose();
  }
}

/**
 * One line from commander's usage errors: "error: option '-s, --steps <n>' argument '0' is invalid. --steps
 * must be ..." becomes "--steps must be ..." (our value parsers already name the flag and the value).
 */
export function tidyCommanderMessage(text: string): string {
  const line = text.trim().replace(/^error: /, '');
  const rest = /^option '[^']*' argument '[^']*' is invalid\. (--.*)$/s.exec(line);
  return (rest ? rest[1] : line).replace(/\s*\n\s*/g, ' ');
}

function reportError(error: unknown, verbose: boolean): number {
  if (error instanceof CommanderError) {
    // Help and version exit 0; commander already printed the message for usage errors.
    return error.exitCode === 0 ? 0 : 1;
  }
  if (error instanceof DvlError) {
    process.stderr.write(`dvl: ${error.message}\n`);
    if (verbose && error.cause) process.stderr.write(`${String((error.cause as Error).stack ?? error.cause)}\n`);
    return error.exitCode;
  }
  // A full disk is the user's to fix, wherever it struck: one line saying so, not an internal error.
  if (isNoSpace(error)) {
    const where = errorPath(error);
    process.stderr.write(`dvl: not enough disk space${where ? ` to write ${where}` : ''}: free some space (or set DVL_HOME / HF_HUB_CACHE to another disk)\n`);
    if (verbose && error instanceof Error) process.stderr.write(`${error.stack}\n`);
    return 3;
  }
  const message = error instanceof Error ? error.message : String(error);
  if (verbose && error instanceof Error) {
    process.stderr.write(`dvl: internal error: ${message.split('\n')[0]}\n${error.stack}\n`);
  } else {
    process.stderr.write(`dvl: internal error: ${message.split('\n')[0]} (run again with --verbose for details)\n`);
  }
  return 3;
}
