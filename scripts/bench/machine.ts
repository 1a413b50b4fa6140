/** Facts about the machine a benchmark ran on, measured in the benchmark's own process. */
import os from 'node:os';
import { Worker } from 'node:worker_threads';

export interface MachineFacts {
  cpuModel: string;
  logicalCores: number;
  /** Threads onnxruntime was given. */
  threadsUsed: number;
  /** 1-, 5- and 15-minute load averages when the run started (other jobs make every number noisy). */
  loadAverage: number[];
  totalMemoryGb: number;
  /** Streaming-read bandwidth, GB/s, with as many reader threads as onnxruntime threads. */
  bandwidthGbps: number;
}

/**
 * Streaming read bandwidth: `threads` workers each compare two identical buffers of `mbPerThread` MB
 * (memcmp: a native sequential read of 2 x mbPerThread MB, far larger than any cache). Best of `rounds`.
 */
export async function measureBandwidth(threads: number, mbPerThread = 256, rounds = 5): Promise<number> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const a = Buffer.alloc(workerData.bytes, 7);
    const b = Buffer.alloc(workerData.bytes, 7);
    parentPort.on('message', (go) => {
      if (!go) { parentPort.close(); return; }
      const t0 = process.hrtime.bigint();
      const equal = a.compare(b) === 0;
      const ns = Number(process.hrtime.bigint() - t0);
      parentPort.postMessage({ ns, equal });
    });
    parentPort.postMessage('ready');`;
  const bytes = mbPerThread << 20;
  const workers = Array.from({ length: threads }, () => new Worker(code, { eval: true, workerData: { bytes } }));
  const next = (w: Worker) => new Promise<{ ns: number; equal: boolean } | 'ready'>((resolve) => w.once('message', resolve));
  await Promise.all(workers.map(next));
  let best = 0;
  for (let round = 0; round < rounds; round++) {
    const t0 = performance.now();
    const replies = workers.map(next);
    for (const w of workers) w.postMessage(true);
    await Promise.all(replies);
    const seconds = (performance.now() - t0) / 1000;
    best = Math.max(best, (2 * bytes * threads) / seconds / 1e9);
  }
  for (const w of workers) w.postMessage(false);
  await Promise.all(workers.map((w) => new Promise((resolve) => w.once('exit', resolve))));
  return best;
}

export async function machineFacts(threadsUsed: number): Promise<MachineFacts> {
  return {
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    logicalCores: os.availableParallelism(),
    threadsUsed,
    loadAverage: os.loadavg().map((v) => Math.round(v * 100) / 100),
    totalMemoryGb: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    bandwidthGbps: Math.round((await measureBandwidth(threadsUsed)) * 100) / 100,
  };
}

/** Peak resident set size of this process so far, in GiB (2^30 bytes). */
export function peakRssGb(): number {
  return Math.round((process.resourceUsage().maxRSS / 2 ** 20) * 100) / 100;
}

/** Median of the samples (mean of the middle two for an even count). */
export function median(samples: number[]): number {
  if (samples.length === 0) return Number.NaN;
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Runs `fn` once to warm up, then `repeats` times; returns the median ms. */
export async function timeMedian(repeats: number, fn: () => Promise<unknown> | unknown, warmup = true): Promise<number> {
  if (warmup) await fn();
  const samples: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  return median(samples);
}
