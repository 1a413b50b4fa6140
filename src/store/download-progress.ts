/**
 * Download progress on stderr: on a terminal one live line (file, bar, bytes, speed, ETA) through the
 * spinner; otherwise terse lines (each file as it starts, and every 25% of the total), so logs stay short.
 */
import type { RetryNotice } from '../hub/client.js';
import type { DownloadProgress } from '../hub/pull.js';
import type { Progress } from './progress.js';

export function downloadReporter(progress: Progress, options: { quiet?: boolean; isTTY: boolean }): (p: DownloadProgress) => void {
  if (options.quiet) return () => {};
  const started = performance.now();
  let startBytes: number | undefined;
  let lastFile = '';
  let lastQuarter = -1;
  let lastDraw = 0;
  return (p) => {
    startBytes ??= p.done;
    const now = performance.now();
    const seconds = (now - started) / 1000;
    const speed = seconds > 0.2 ? (p.done - startBytes) / seconds : 0;
    if (options.isTTY) {
      if (now - lastDraw < 100 && p.fileDone < p.fileSize) return;
      lastDraw = now;
      const fraction = p.total > 0 ? p.done / p.total : 0;
      const width = 20;
      const bar = '#'.repeat(Math.round(fraction * width)).padEnd(width, '.');
      const eta = speed > 0 ? ` ETA ${clock((p.total - p.done) / speed)}` : '';
      progress.live(`downloading ${p.file} [${bar}] ${mb(p.done)}/${mb(p.total)}${speed > 0 ? ` ${mb(speed)}/s` : ''}${eta}`);
      return;
    }
    if (p.file !== lastFile) {
      lastFile = p.file;
      progress.step(`downloading ${p.file} (${mb(p.fileSize)}${p.fileDone > 0 ? `, resuming at ${mb(p.fileDone)}` : ''})`);
    }
    const quarter = p.total > 0 ? Math.floor((4 * p.done) / p.total) : 0;
    if (quarter > lastQuarter) {
      if (lastQuarter >= 0 || quarter > 0) progress.step(`downloaded ${quarter * 25}% (${mb(p.done)} of ${mb(p.total)}${speed > 0 ? `, ${mb(speed)}/s` : ''})`);
      lastQuarter = quarter;
    }
  };
}

/**
 * One line per retry ("dvl: https://huggingface.co answered 503; retrying in 2 s (attempt 2 of 6)"), so a slow
 * or flaky Hub is never a silent wait. On a terminal the spinner is stopped first so the line stays on screen
 * (the next progress update starts it again).
 */
export function retryReporter(progress: Progress, options: { quiet?: boolean; isTTY: boolean }): (notice: RetryNotice) => void {
  if (options.quiet) return () => {};
  return (n) => {
    const line = `${n.reason}; retrying in ${duration(n.delayMs)} (attempt ${n.attempt} of ${n.attempts})`;
    if (options.isTTY) {
      progress.stop();
      process.stderr.write(`dvl: ${line}\n`);
    } else {
      progress.step(line);
    }
  };
}

const duration = (ms: number) => (ms < 1000 ? `${Math.round(ms)} ms` : `${Number((ms / 1000).toFixed(1))} s`);

const mb = (bytes: number) => (bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`);

function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const mm = String(m).padStart(h > 0 ? 2 : 1, '0');
  return `${h > 0 ? `${h}:` : ''}${mm}:${String(s % 60).padStart(2, '0')}`;
}
