/** The real `dvl serve` in the test process on 127.0.0.1 (port 0), with loopback-only, quiet defaults. */
import { DEFAULT_MEDIA_POLICY } from '../../src/server/media.js';
import type { PoolOptions } from '../../src/server/model-pool.js';
import type { ServeOptions } from '../../src/server/serve.js';

export type TestServeOverrides = Partial<Omit<ServeOptions, 'pool'>> & { pool: Partial<PoolOptions> & Pick<PoolOptions, 'env'> };

/**
 * Options for startServer: 127.0.0.1, any free port, no CORS, no remote images, a 32 MB body limit, 16 waiting
 * requests, 1 s pings, no log; the pool keeps models loaded forever, one at a time, with one thread, fp32.
 */
export function testServeOptions(overrides: TestServeOverrides): ServeOptions {
  const { pool, ...rest } = overrides;
  return {
    host: '127.0.0.1',
    port: 0,
    allowedHosts: [],
    corsOrigins: [],
    bodyLimitBytes: 32 << 20,
    maxQueue: 16,
    pingMs: 1000,
    media: { ...DEFAULT_MEDIA_POLICY, allowRemote: false, allowPrivate: false },
    log: () => {},
    ...rest,
    pool: { dtype: 'fp32', keepAliveMs: -1, maxLoaded: 1, allowPull: false, threads: 1, imageCacheBytes: 64 << 20, log: () => {}, ...pool },
  };
}

/** Waits until GET /health answers 200 (the served model is loaded). */
export async function waitHealthy(url: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await fetch(`${url}/health`).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) return;
    if (Date.now() > deadline) throw new Error(`${url}/health did not become 200 (last ${status})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
