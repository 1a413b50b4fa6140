/**
 * Ctrl-C (SIGINT) and SIGTERM for one CLI run. The first signal aborts `signal`, which the commands pass
 * down: a conversion worker is terminated and its staging directory deleted, generation stops before its next
 * decoder call, reading stdin stops; the command then fails with an 'interrupted' DvlError and the CLI exits
 * 130 (143 for SIGTERM). Should that take longer than `graceMs` (a model still loading), or on a second
 * signal, the process exits at once; a staging directory left that way belongs to a dead pid and is removed
 * by the next conversion.
 */

export interface InterruptWatch {
  readonly signal: AbortSignal;
  /** The first signal received, if any. */
  readonly received: NodeJS.Signals | undefined;
  /** Removes the handlers (the default behaviour of the signals returns). */
  dispose(): void;
}

const WATCHED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];

/** The shell convention: 128 + the signal number. */
export function exitCodeForSignal(name: NodeJS.Signals): number {
  return name === 'SIGTERM' ? 143 : 130;
}

export function watchInterrupts(options: { graceMs?: number } = {}): InterruptWatch {
  const graceMs = options.graceMs ?? 5000;
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const exitNow = (name: NodeJS.Signals) => {
    process.stderr.write('dvl: interrupted\n');
    process.exit(exitCodeForSignal(name));
  };
  const onSignal = (name: NodeJS.Signals) => {
    if (received) exitNow(received);
    received = name;
    controller.abort();
    setTimeout(() => exitNow(name), graceMs).unref();
  };
  for (const name of WATCHED) process.on(name, onSignal);
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
