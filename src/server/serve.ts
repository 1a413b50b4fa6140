/**
 * `dvl serve` as a library call: build the app, listen, load the served model in the background (/health is
 * 503 until it is ready; `ready` says whether it loaded), and shut down in order: stop accepting
 * connections, refuse the requests waiting in line (503), let running answers finish for up to `drainMs`,
 * cancel what is left (a stream cut then ends properly, the routes say how), unload the models.
 */
import type { AddressInfo } from 'node:net';
import { buildApp } from './app.js';
import { type AppOptions } from './context.js';
import { shuttingDown } from './errors.js';

export interface ServeOptions extends AppOptions {
  port: number;
}

export interface RunningServer {
  /** Where it listens, e.g. http://127.0.0.1:11435 */
  url: string;
  addresses: string[];
  /**
   * Resolves once the served model (`pool.model`) is loaded (at once without one); rejects with the load's
   * error: a server whose model cannot load serves nothing (`dvl serve` exits 3).
   */
  ready: Promise<void>;
  /** Drains and closes: at most `drainMs` for running answers, then they are cancelled. */
  close(drainMs?: number): Promise<void>;
}

export async function startServer(options: ServeOptions): Promise<RunningServer> {
  const cancelAll = new AbortController();
  const { app, context } = await buildApp(options, cancelAll.signal);
  // 'localhost' listens on both loopback addresses (127.0.0.1 and ::1) where the machine has them.
  await app.listen({ host: options.host, port: options.port });
  const bound = app.addresses() as AddressInfo[];
  const addresses = bound.map((a) => (a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`));
  // IPv4 first: what a client on this machine reaches most surely.
  const first = bound.find((a) => a.family === 'IPv4') ?? bound[0];
  const url = `http://${first.family === 'IPv6' ? `[${first.address}]` : first.address}:${first.port}`;
  let ready = Promise.resolve();
  if (options.pool.model !== undefined) {
    const id = options.pool.model;
    ready = context.queue.run(async () => {
      await context.pool.acquire(id);
      context.pool.release(id);
    });
    // Handled here too: a caller that does not wait for it (a test) must not see an unhandled rejection.
    ready.catch(() => {});
  }
  let closing: Promise<void> | null = null;
  return {
    url,
    addresses,
    ready,
    close(drainMs = 10_000) {
      closing ??= (async () => {
        // Requests still waiting would only start to be cut off: they are answered 503 now. Running answers
        // are cancelled with the same reason after drainMs (the routes tell it from a client that left).
        const reason = shuttingDown();
        context.queue.close(reason);
        const timer = setTimeout(() => cancelAll.abort(reason), drainMs);
        // app.close() waits for every connection to end, and closes only those idle when it is called: a
        // keep-alive connection whose answer ends later (a stream drained or cancelled) would hold it until the
        // client hangs up. Close each one as soon as it is idle.
        const idle = setInterval(() => app.server.closeIdleConnections(), 50);
        try {
          await app.close();
        } finally {
          clearTimeout(timer);
          clearInterval(idle);
        }
        await context.pool.close();
      })();
      return closing;
    },
  };
}
