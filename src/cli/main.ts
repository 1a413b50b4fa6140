/**
 * The `dvl` command line: parses arguments with commander and maps every failure to a one-line message and an
 * exit code (0 ok, 1 usage, 2 input, 3 model or conversion, 130 interrupted). The work is done by the library.
 */
import { Command, CommanderError } from 'commander';
import { DvlError } from '../util/errors.js';
import { DVL_VERSION } from '../version.js';
import { registerAsk } from './ask-command.js';
import { registerPull } from './pull-command.js';

export async function main(argv: string[]): Promise<number> {
  const program = new Command('dvl')
    .description('Run DiffusionVL block-diffusion vision-language models locally (onnxruntime, CPU).')
    .version(DVL_VERSION, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ outputError: (text, write) => write(`dvl: ${text.replace(/^error: /, '')}`) })
    .exitOverride();
  registerPull(program);
  registerAsk(program);
  program.addHelpText(
    'after',
    `
Examples:
  dvl pull ./DiffusionVL-Qwen2.5VL-3B                 convert a local checkpoint (int4 by default)
  dvl ask --model ./DiffusionVL-Qwen2.5VL-3B photo.jpg "Describe this image."
  echo "What is 2+2?" | dvl ask --model ./ckpt --json -

Environment:
  DVL_HOME   where converted models are stored (default ~/.cache/dvl)`,
  );

  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    return reportError(error, argv.includes('--verbose'));
  }
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
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`dvl: internal error: ${message.split('\n')[0]}\n`);
  if (verbose && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  else process.stderr.write('dvl: run again with --verbose for details\n');
  return 3;
}
