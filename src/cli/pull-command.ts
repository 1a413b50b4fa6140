import { statSync } from 'node:fs';
import type { Command } from 'commander';
import { DTYPE_CHOICES, type DtypeChoice } from '../convert/weight-dtype.js';
import { localSource } from '../store/ensure.js';
import { looksLikeHubRef } from '../hub/cache.js';
import { checkManifest, type Manifest, type ModelSourceRef } from '../store/manifest.js';
import { prepareModel } from '../store/model-source.js';
import { packable } from '../store/prepacked.js';
import type { Progress } from '../store/progress.js';
import { oneOf } from './parse.js';
import { createProgress } from './progress.js';

export const DEFAULT_DTYPE: DtypeChoice = 'auto';

/** --dtype's help, shared by pull, ask, batch, chat and serve. */
export const DTYPE_HELP =
  "weight precision: auto (the default: int8 for the 3B models, int4 for the 7B ones, the fastest that keep the model's answers and fit in 8 GiB), int8, int4 (4-bit, head and first/last layers 8-bit), int4-all (every layer 4-bit: smaller, changes more answers), fp16, fp32 (reproduces the reference exactly)";

/** A --model value that names a local directory; Hub ids go through prepareModel (model-source.ts). */
export function resolveSource(model: string): ModelSourceRef | undefined {
  return looksLikeHubRef(model) && !fsExists(model) ? undefined : localSource(model);
}

function fsExists(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Packs a quantised variant's decoder weights for this CPU now (store/prepacked.ts), so that the first `ask`
 * starts like every later one: loading the model once does it. Returns the manifest as it is afterwards.
 */
async function packForThisMachine(dir: string, manifest: Manifest, progress: Progress, signal: AbortSignal): Promise<Manifest> {
  if (!packable(manifest) || manifest.prepacked || process.env.DVL_PREPACK === '0') return manifest;
  progress.live("packing the decoder's weights for this CPU");
  // onnxruntime loads only now (in the worker), as for ask.
  const { InferenceWorker } = await import('../runtime/worker-client.js');
  const worker = await InferenceWorker.start({ dir, manifest, signal });
  try {
    if (worker.startup.prepackWarning) progress.warn(worker.startup.prepackWarning);
    else if (worker.startup.prepacked === 'unusable') progress.warn("packed weights did not reproduce the model's logits on this CPU: dvl runs from the plain weights (slower starts)");
  } finally {
    await worker.close();
  }
  const now = checkManifest(dir, { checkSource: false });
  return 'manifest' in now ? now.manifest : manifest;
}

export function registerPull(program: Command, signal: AbortSignal): void {
  program
    .command('pull')
    .description('Download a DiffusionVL model from the Hugging Face Hub (or take a local checkpoint) and convert it for dvl.')
    .argument('<model>', 'Hub model id (org/name, org/name@revision) or a checkpoint directory')
    .option('--dtype <dtype>', DTYPE_HELP, oneOf('--dtype', DTYPE_CHOICES), DEFAULT_DTYPE)
    .option('--force', 'convert again even if a current conversion exists')
    .option('--token <token>', 'Hugging Face access token for gated or private models (default: $HF_TOKEN)')
    .option('--offline', 'no network: use the Hugging Face cache only (also HF_HUB_OFFLINE=1)')
    .option('-q, --quiet', 'no progress output')
    .option('--verbose', 'print details (error causes)')
    .addHelpText(
      'after',
      `
Examples:
  dvl pull hustvl/DiffusionVL-Qwen2.5VL-3B         download and convert (int8 for 3B, int4 for 7B: see --dtype)
  dvl pull hustvl/DiffusionVL-Qwen2.5VL-7B@main    a branch, tag or commit
  dvl pull ./DiffusionVL-Qwen2.5VL-3B              a local checkpoint directory
  dvl pull ./DiffusionVL-Qwen2.5VL-3B --dtype fp32  full precision, reproduces the reference token for token

Downloads go to the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub),
shared with Python; an interrupted download resumes. Environment: HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE.`,
    )
    .action(async (model: string, opts: { dtype: DtypeChoice; force?: boolean; quiet?: boolean; token?: string; offline?: boolean }) => {
      const progress = await createProgress({ quiet: opts.quiet });
      let result;
      try {
        result = await prepareModel(model, { dtype: opts.dtype, force: opts.force, token: opts.token, offline: opts.offline, quiet: opts.quiet, refresh: true, signal, progress });
        result = { ...result, manifest: await packForThisMachine(result.dir, result.manifest, progress, signal) };
      } finally {
        progress.stop();
      }
      const m = result.manifest;
      const size = m.files.reduce((sum, f) => sum + f.size, 0);
      const what = result.convertedBecause ? `converted in ${m.conversion.seconds.toFixed(1)} s` : 'already converted';
      const rev = result.source.kind === 'hub' ? ` @ ${result.source.revision.slice(0, 12)}` : '';
      const got = result.pulled && result.pulled.downloadedBytes > 0 ? `downloaded ${(result.pulled.downloadedBytes / 1e6).toFixed(1)} MB, ` : '';
      const packed = m.prepacked ? ', decoder packed for this CPU' : '';
      if (!opts.quiet) process.stderr.write(`dvl: ${model}${rev} (${m.dtype}${opts.dtype === 'auto' ? ', the default' : ''}) ${got}${what}${packed}: ${(size / 1e9).toFixed(2)} GB in ${result.dir}\n`);
    });
}
