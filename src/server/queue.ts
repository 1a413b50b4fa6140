/**
 * Requests run one at a time, in arrival order: two block forwards at once on a few CPU cores are each
 * compute-bound, so together they finish no sooner. At most `maxWaiting` requests wait behind the running
 * one; more are refused at once (503 with Retry-After). A request whose client leaves while it waits is
 * dropped from the line without running; when the server drains, every waiting request is (503).
 */
import { cancellation, ServerError } from './errors.js';

interface Waiter {
  start: () => void;
  /** Out of the line without running (the server drains). */
  fail: (error: Error) => void;
}

export class RequestQueue {
  private running = false;
  private readonly waiting: Waiter[] = [];
  /** Set when the server drains: what waiting and new requests are told. */
  private closedWith: Error | null = null;

  constructor(
    private readonly maxWaiting: number,
    /** Told the depth (running + waiting) whenever it changes (metrics). */
    private readonly onDepth: (depth: number) => void = () => {},
  ) {}

  get depth(): number {
    return this.waiting.length + (this.running ? 1 : 0);
  }

  /**
   * Runs `task` when its turn comes; rejects with 503 when the line is full or closed, and with the signal's
   * cancellation (errors.ts) when aborted while waiting.
   */
  async run<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.closedWith) throw this.closedWith;
    if (signal?.aborted) throw cancellation(signal);
    if (this.running) {
      if (this.waiting.length >= this.maxWaiting) {
        throw new ServerError(503, 'server_busy', `the server is busy: ${this.waiting.length} requests are waiting; try again later`, { retryAfterSeconds: 5 });
      }
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          const at = this.waiting.indexOf(waiter);
          if (at >= 0) this.waiting.splice(at, 1);
          this.onDepth(this.depth);
          reject(cancellation(signal!));
        };
        const waiter: Waiter = {
          start: () => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          },
          fail: (error) => {
            signal?.removeEventListener('abort', onAbort);
            reject(error);
          },
        };
        signal?.addEventListener('abort', onAbort, { once: true });
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

  /**
   * The server drains: the requests waiting leave the line at once with `error` (they would only start to be
   * cut off), and later ones are refused with it; the running one goes on.
   */
  close(error: Error): void {
    this.closedWith = error;
    for (const waiter of this.waiting.splice(0)) waiter.fail(error);
    this.onDepth(this.depth);
  }
}
