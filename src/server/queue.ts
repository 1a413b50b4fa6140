/**
 * Requests run one at a time, in arrival order: two block forwards at once on a few CPU cores are each
 * compute-bound, so together they finish no sooner. At most `maxWaiting` requests wait behind the running
 * one; more are refused at once (503 with Retry-After). A request whose client leaves while it waits is
 * dropped from the line without running.
 */
import { ServerError } from './errors.js';

interface Waiter {
  start: () => void;
  signal?: AbortSignal;
  onAbort: () => void;
}

export class RequestQueue {
  private running = false;
  private readonly waiting: Waiter[] = [];

  constructor(
    private readonly maxWaiting: number,
    /** Told the depth (running + waiting) whenever it changes (metrics). */
    private readonly onDepth: (depth: number) => void = () => {},
  ) {}

  get depth(): number {
    return this.waiting.length + (this.running ? 1 : 0);
  }

  /** Runs `task` when its turn comes; rejects with 503 when the line is full, 499 when aborted while waiting. */
  async run<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw cancelled();
    if (this.running) {
      if (this.waiting.length >= this.maxWaiting) {
        throw new ServerError(503, 'server_busy', `the server is busy: ${this.waiting.length} requests are waiting; try again later`, { retryAfterSeconds: 5 });
      }
      await new Promise<void>((resolve, reject) => {
        const waiter: Waiter = {
          start: () => {
            signal?.removeEventListener('abort', waiter.onAbort);
            resolve();
          },
          signal,
          onAbort: () => {
            const at = this.waiting.indexOf(waiter);
            if (at >= 0) this.waiting.splice(at, 1);
            this.onDepth(this.depth);
            reject(cancelled());
          },
        };
        signal?.addEventListener('abort', waiter.onAbort, { once: true });
        this.waiting.push(waiter);
        this.onDepth(this.depth);
      });
    } else {
      this.running = true;
      this.onDepth(this.depth);
    }
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next.start();
      else this.running = false;
      this.onDepth(this.depth);
    }
  }
}

const cancelled = () => new ServerError(499, 'cancelled', 'the client went away');
