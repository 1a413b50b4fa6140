/**
 * GET /metrics in Prometheus' text format, through prom-client, on a registry of this server's own (no
 * process-wide default registry: two servers in one process, as in the tests, keep separate counts).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AskResult } from '../ask.js';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: 'dvl_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['route', 'method', 'status'], registers: [this.registry] });
  readonly queueDepth = new Gauge({ name: 'dvl_queue_depth', help: 'Requests running or waiting for the model', registers: [this.registry] });
  readonly cancelled = new Counter({ name: 'dvl_requests_cancelled_total', help: 'Requests whose client went away before the answer was complete', registers: [this.registry] });
  readonly rejected = new Counter({ name: 'dvl_requests_rejected_total', help: 'Requests refused because the queue was full', registers: [this.registry] });
  readonly promptTokens = new Counter({ name: 'dvl_prompt_tokens_total', help: 'Prompt tokens of answered requests', registers: [this.registry] });
  readonly cachedTokens = new Counter({ name: 'dvl_prompt_tokens_cached_total', help: 'Prompt tokens whose K/V came from the previous request', registers: [this.registry] });
  readonly generatedTokens = new Counter({ name: 'dvl_generated_tokens_total', help: 'Generated tokens (up to EOS or a stop string)', registers: [this.registry] });
  readonly nfe = new Counter({ name: 'dvl_decoder_calls_total', help: 'Decoder calls (NFE) made', registers: [this.registry] });
  readonly stageSeconds = new Histogram({
    name: 'dvl_stage_seconds',
    help: 'Time per answer stage',
    labelNames: ['stage'],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });
  readonly modelsLoaded = new Gauge({ name: 'dvl_models_loaded', help: 'Models loaded now', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'dvl_process_' });
  }

  observeAnswer(result: AskResult): void {
    this.promptTokens.inc(result.stats.promptTokens);
    this.cachedTokens.inc(result.stats.cachedTokens);
    this.generatedTokens.inc(result.tokens.length);
    this.nfe.inc(result.stats.nfe);
    for (const [stage, ms] of Object.entries(result.stats.ms)) this.stageSeconds.observe({ stage }, ms / 1000);
  }
}
