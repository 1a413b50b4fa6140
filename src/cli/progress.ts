/**
 * Progress on stderr: an ora spinner with a percentage on a terminal, a few plain lines otherwise
 * (stdout stays reserved for answers).
 */
import type { Ora } from 'ora';
import type { ConvertStage } from '../convert/convert.js';
import type { Progress } from '../store/progress.js';


const STAGE_LABEL: Record<ConvertStage, string> = {
  hash: 'hashing checkpoint files',
  vision: 'converting vision encoder',
  decoder: 'converting decoder',
  embeddings: 'writing embeddings',
};


export interface ProgressOptions {
  quiet?: boolean;
  /**
   * Leave stdin alone while the spinner turns. By default ora puts a terminal stdin in raw mode and turns a
   * Ctrl-C byte into SIGINT; chat reads its own keys there (readline: Ctrl-C stops an answer) and needs
   * them to reach readline instead.
   */
  keepStdin?: boolean;
}

export async function createProgress(options: ProgressOptions = {}): Promise<Progress> {
  const stream = process.stderr;
  const warn = (text: string) => stream.write(`dvl: warning: ${text}\n`);
  if (options.quiet) return { convert() {}, step() {}, live() {}, succeed() {}, warn, stop() {} };
  if (spinnerFits(stream)) {
    // Loaded only for a terminal: the spinner library costs ~0.1 s of start-up.
    const { default: ora } = await import('ora');
    let spinner: Ora | null = null;
    const show = (text: string) => {
      // NO_COLOR (no-color.org): ora's own color detection does not look at it.
      if (!spinner) spinner = ora({ text, stream, color: process.env.NO_COLOR ? false : 'cyan', discardStdin: !options.keepStdin }).start();
      else spinner.text = text;
    };
    return {
      convert: (stage, done, total) => show(`${STAGE_LABEL[stage]} ${total > 0 ? Math.floor((100 * done) / total) : 0}%`),
      step: show,
      live: show,
      succeed: (text) => {
        if (spinner) spinner.succeed(text);
        else stream.write(`${text}\n`);
        spinner = null;
      },
      warn: (text) => {
        // The line goes above the spinner, which goes on turning below it.
        spinner?.clear();
        warn(text);
        spinner?.render();
      },
      stop: () => {
        spinner?.stop();
        spinner = null;
      },
    };
  }
  // Not a terminal: one line per stage start and per 25% step, so logs stay short.
  let lastStage = '';
  let lastQuarter = -1;
  return {
    convert(stage, done, total) {
      const quarter = total > 0 ? Math.floor((4 * done) / total) : 0;
      if (stage !== lastStage) {
        lastStage = stage;
        lastQuarter = -1;
      }
      if (quarter !== lastQuarter) {
        lastQuarter = quarter;
        stream.write(`dvl: ${STAGE_LABEL[stage]} ${quarter * 25}%\n`);
      }
    },
    step: (text) => stream.write(`dvl: ${text}\n`),
    live() {},
    succeed: (text) => stream.write(`dvl: ${text}\n`),
    warn,
    stop() {},
  };
}

/**
 * Whether stderr can show a spinner: a terminal that reports its width (a bare pseudo-terminal that does not
 * makes the spinner's line accounting run away) and can move the cursor (TERM=dumb cannot); never under CI.
 */
export function spinnerFits(stream: { isTTY?: boolean; columns?: number }, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && (stream.columns ?? 0) > 0 && !env.CI && env.TERM !== 'dumb';
}
