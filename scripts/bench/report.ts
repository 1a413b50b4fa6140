/** Markdown tables of a benchmark run. */
import { KERNEL_LABEL, bytesPerWeight, type KernelError, type KernelId, type KernelTiming } from './kernels.js';
import type { ModelMeasurement } from './measure.js';

/** The kernel probe of one preset (scripts/bench/kernels.ts). */
export interface KernelProbe {
  preset: string;
  layers: number;
  /** Weights in the probe's layer stack. */
  weights: number;
  bandwidthGbps: number;
  timings: KernelTiming[];
  errors: KernelError[];
}

export interface BenchEntry {
  preset: string;
  dtype: string;
  /** From the conversion child: times and RSS only when it converted in this run (null when reused). */
  conversion: { dir: string; converted: boolean; seconds: number | null; peakRssGb: number | null };
  measurement: ModelMeasurement;
}

const f = (v: number, digits = 0) => (Number.isFinite(v) ? v.toFixed(digits) : '-');
const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
const gb = (bytes: number) => `${(bytes / 1e9).toFixed(2)} GB`;

export function renderMarkdown(entries: BenchEntry[], probes: KernelProbe[] = []): string {
  const out: string[] = [];
  for (const p of probes) out.push(...renderKernels(p));
  const m0 = entries[0]?.measurement.machine;
  if (m0) {
    out.push(
      `Machine: ${m0.cpuModel}, ${m0.logicalCores} logical cores, onnxruntime threads ${m0.threadsUsed}, ` +
        `${m0.totalMemoryGb} GiB RAM, streaming read ${m0.bandwidthGbps} GB/s, load average ${m0.loadAverage.join(' ')} ` +
        `at the start (a shared machine: numbers are noisy). Synthetic random weights: tokens are meaningless.`,
      '',
    );
  }
  for (const { preset, dtype, conversion, measurement: m } of entries) {
    out.push(`### ${preset} ${dtype}`, '');
    out.push(
      `decoder weights ${gb(m.weightBytes.decoder)} -> memory bound ${f(m.memoryBoundMs)} ms per forward at ${m.machine.bandwidthGbps} GB/s; ` +
        `on disk ${gb(m.weightBytes.onDisk)}; load ${f(m.loadMs)} ms; peak RSS (load, forwards, vision, generations, recompute) ${m.peakRssGb} GiB; ` +
        `conversion ${conversion.converted ? `${f(conversion.seconds ?? NaN)} s, peak RSS ${conversion.peakRssGb} GiB` : 'reused (not timed in this run)'}`,
      '',
    );
    if (m.startup?.length) {
      out.push('| start-up (model load in the worker) | decoder session | tokenizer | embeddings | total | variant on disk after |', '|---|---|---|---|---|---|');
      for (const s of m.startup) out.push(`| ${s.mode} | ${f(s.startup.decoderSessionMs)} ms | ${f(s.startup.tokenizerMs)} ms | ${f(s.startup.embeddingsMs)} ms | ${f(s.totalMs)} ms | ${s.variantBytes ? gb(s.variantBytes) : '-'} |`);
      out.push('');
    }
    out.push(
      `Memory floor with the kernels' packed layout: ${gb(m.packedDecoderBytes)} of decoder weights -> ${f(m.packedBoundMs)} ms per forward at ${m.machine.bandwidthGbps} GB/s ` +
        `(the "x bound" columns below use the file size, ${gb(m.weightBytes.decoder)}).`,
      '',
    );
    const caches = [...new Set(m.forward.map((t) => t.cacheLength))];
    const rows = [...new Set(m.forward.map((t) => t.rows))];
    out.push(`| decoder forward (all rows' logits) | ${caches.map((c) => `cache ${c}: ms (x bound)`).join(' | ')} |`);
    out.push(`|---|${caches.map(() => '---').join('|')}|`);
    for (const r of rows) {
      const cells = caches.map((c) => {
        const t = m.forward.find((x) => x.rows === r && x.cacheLength === c)!;
        return `${f(t.ms)} (${f(t.boundRatio, 2)})`;
      });
      out.push(`| ${r} rows | ${cells.join(' | ')} |`);
    }
    out.push('');
    const one = m.forward.find((t) => t.rows === 1 && t.cacheLength === caches[0]);
    const eight = m.forward.find((t) => t.rows === 8 && t.cacheLength === caches[0]);
    const staticOurs = m.generation.find((g) => g.remasking === 'low_confidence_static' && g.schedule === 'ours');
    if (one && eight && staticOurs) {
      out.push(
        `Block diffusion against one token at a time (cache ${caches[0]}): an 8-row call costs ${f(eight.ms / one.ms, 2)}x a 1-row call, so it pays only above ` +
          `${f(eight.ms / one.ms, 2)} tokens per call. The same weights decoded autoregressively (one 1-row forward per token) would give ` +
          `${f(1000 / one.ms, 2)} tokens/s; block diffusion with static remasking (1 token per call) gives ${f(staticOurs.tokensPerSecond, 2)}.`,
        '',
      );
    }
    if (m.fusedCommit?.length) {
      out.push('| commit + next block\'s first step | separate calls (8 + 8 rows) | fused (16 rows) | saved |');
      out.push('|---|---|---|---|');
      for (const t of m.fusedCommit) {
        out.push(`| cache ${t.cacheLength} | ${f(t.separateMs)} ms | ${f(t.fusedMs)} ms | ${f(t.separateMs - t.fusedMs)} ms |`);
      }
      out.push('');
    }
    out.push('| generation | schedule | NFE | tokens/NFE | tokens/s | decode ms | ms/call | in onnxruntime | decoder host | loop (sampling, embeddings) |');
    out.push('|---|---|---|---|---|---|---|---|---|---|');
    for (const g of m.generation) {
      out.push(
        `| ${g.genLength} tok ${g.remasking.replace('low_confidence_', '')} | ${g.schedule} | ${g.nfe} | ${f(g.tokensPerNfe, 2)} | ${f(g.tokensPerSecond, 2)} | ` +
          `${f(g.decodeMs)} | ${f(g.msPerCall)} | ${pct(g.share.ort)} | ${pct(g.share.decoderHost)} | ${pct(g.share.loop)} |`,
      );
    }
    out.push('');
    const r = m.recompute;
    const ours = m.generation.find((g) => g.remasking === 'low_confidence_static' && g.schedule === 'ours');
    if (r && ours) {
      out.push(`| ${r.genLength} tok static | NFE | rows per forward | ms per forward | decode s | tokens/s |`);
      out.push('|---|---|---|---|---|---|');
      out.push(`| KV cache, block by block (ours) | ${ours.nfe} | 8 or 16 | ${f(ours.msPerCall)} | ${f(ours.decodeMs / 1000, 1)} | ${f(ours.tokensPerSecond, 2)} |`);
      out.push(
        `| full recompute (LLaDA-V style) | ${r.nfeFull} | ${r.rowsPerForward} | ${f(r.msPerForward)} | ${f(r.decodeMsFull / 1000, 1)} | ${f(r.tokensPerSecond, 2)} |`,
      );
      out.push('');
      const scaled = r.forwardsRun < r.nfeFull ? `; recompute measured over ${r.blocksRun} block(s) = ${r.forwardsRun} forwards and scaled to ${r.genLength} tokens` : '';
      out.push(`KV cache is ${f(r.decodeMsFull / ours.decodeMs, 1)}x faster than full recompute${scaled}.`, '');
    }
    out.push('NFE counts decoder calls including the prefill; tokens/NFE excludes the prefill call. Dynamic remasking on random weights');
    out.push('never passes the confidence threshold, so its tokens/NFE says nothing about a real model.');
    out.push('');
    const pre = Object.entries(m.preprocessMs).map(([name, ms]) => `${name} ${f(ms)} ms`).join(', ');
    out.push(
      `| preprocess | vision encoder | prefill |`,
      `|---|---|---|`,
      `| ${pre} | ${f(m.vision.ms)} ms (${m.vision.pixels}, ${m.vision.tokens} tokens) | ${f(m.prefillMsPer100)} ms per 100 tokens |`,
      '',
    );
  }
  return out.join('\n');
}

function renderKernels(p: KernelProbe): string[] {
  const rows = [...new Set(p.timings.map((t) => t.rows))];
  const kernels = [...new Set(p.timings.map((t) => t.kernel))] as KernelId[];
  const out = [
    `### Weight-matmul kernels, ${p.preset} layer widths (${p.layers} layers of qkv, o, gate, up, down; no attention), ms per call`,
    '',
    `| kernel | bytes/weight (file) | ${rows.map((r) => `${r} rows`).join(' | ')} | floor (packed bytes / ${p.bandwidthGbps} GB/s) | error, plain | error, outlier channels |`,
    `|---|---|${rows.map(() => '---').join('|')}|---|---|---|`,
  ];
  for (const k of kernels) {
    const cells = rows.map((r) => f(p.timings.find((t) => t.kernel === k && t.rows === r)?.ms ?? NaN, 1));
    const packed = k.startsWith('nbits4') ? 0.5 + 8 / Number(k.split('-b')[1]) : k.startsWith('nbits8') ? 1 + 8 / 32 : k === 'fp32' ? 4 : 1;
    const floor = (p.weights * packed) / (p.bandwidthGbps * 1e9) * 1000;
    const e = p.errors.find((x) => x.kernel === k);
    out.push(`| ${KERNEL_LABEL[k]} | ${f(bytesPerWeight(k), 2)} | ${cells.join(' | ')} | ${f(floor, 1)} | ${e ? e.plain.toExponential(1) : '-'} | ${e ? e.outliers.toExponential(1) : '-'} |`);
  }
  out.push(
    '',
    'Interleaved calls in one process, medians. Error: relative RMS of one 2048 -> 11008 linear (8 rows) against float64, with Gaussian activations, and with 4 of the 2048 input channels 50-100x larger (what trained Qwen2.5 residual streams carry).',
    '',
  );
  return out;
}

