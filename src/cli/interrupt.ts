/**
 * What stops one CLI run early: Ctrl-C (SIGINT), SIGTERM, and a reader of stdout that went away
 * (`dvl ask ... | head -1`: writes fail with EPIPE, which a Unix tool takes as SIGPIPE).
 *
 * The first of them aborts `signal`, which the commands pass down: a conversion worker is terminated and its
 * staging directory deleted, generation stops before its next decoder call, reading stdin stops; the command
 * then fails with an 'interrupted' DvlError and the CLI exits 130 (143 for SIGTERM, 141 for a broken pipe,
 * the shell's 128 + signal number). A broken pipe exits quietly: the reader asked for no more, so there is
 * nothing to report. Should stopping take longer than `graceMs` (a model still loading), or on a second
 * signal, the process exits at once; a staging directory left that way belongs to a dead pid and is removed
 * by the next conversion.
 *
 * Exiting at once on EPIPE is not an option: the inference worker may be inside onnxruntime, and a process
 * that exits under it aborts ("terminate called after throwing an instance of 'Napi::Error'").
 */

export type StopReason = 'SIGINT' | 'SIGTERM' | 'SIGPIPE';

export interface InterruptWatch {
  readonly signal: AbortSignal;
  /** Why the run is stopping, if it is. */
  readonly received: StopReason | undefined;
  /** Removes the signal handlers (the default behaviour of the signals returns). */
  dispose(): void;
}

const WATCHED = ['SIGINT', 'SIGTERM'] as const;

/** The shell convention: 128 + the signal number. */
export function exitCodeForSignal(name: StopReason): number {
  return { SIGINT: 130, SIGTERM: 143, SIGPIPE: 141 }[name];
}

export function watchInterrupts(options: { graceMs?: number; stdout?: NodeJS.WriteStream; stderr?: NodeJS.WriteStream } = {}): InterruptWatch {
  const graceMs = options.graceMs ?? 5000;
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const controller = new AbortController();
  let received: StopReason | undefined;
  let stderrOpen = true;
  const exitNow = (name: StopReason) => {
    if (name !== 'SIGPIPE' && stderrOpen) stderr.write('dvl: interrupted\n');
    process.exit(exitCodeForSignal(name));
  };
  const stop = (name: StopReason) => {
    if (received) {
      // A second Ctrl-C: the user does not want to wait. More failed writes change nothing.
      if (name !== 'SIGPIPE') exitNow(received);
      return;
    }
    received = name;
    controller.abort();
    setTimeout(() => exitNow(name), graceMs).unref();
  };
  const onSignal = (name: NodeJS.Signals) => stop(name as StopReason);
  for (const name of WATCHED) process.on(name, onSignal);
  // Every write to a closed pipe fails, also those still queued; the first one stops the run. Listening for
  // 'error' at all is what keeps Node from crashing with an unhandled EPIPE. The listeners stay after
  // dispose(): a write that completes after main() returned can still fail.
  stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (!isBrokenPipe(error)) throw error;
    if (received === undefined || received === 'SIGPIPE') process.exitCode = exitCodeForSignal('SIGPIPE');
    stop('SIGPIPE');
  });
  // A closed stderr (`2>&1 | head`) only loses progress lines; stdout may still be read.
  stderr.on('error', (error: NodeJS.ErrnoException) => {
    if (!isBrokenPipe(error)) throw error;
    stderrOpen = false;
  });
  return {
    signal: controller.signal,
    get received() {
      return received;
    },
    dispose() {
      for (const name of WATCHED) process.off(name, onSignal);
    },
  };
}

/** EPIPE, or a write attempted after the stream was torn down by one. */
function isBrokenPipe(error: NodeJS.ErrnoException): boolean {
  return error.code === 'EPIPE' || error.code === 'ERR_STREAM_DESTROYED';
}
