import type { Command } from 'commander';
import { type EnsureResult, ensureConverted, localSource } from '../convert/ensure.js';
import { WEIGHT_DTYPES, type WeightDtype } from '../convert/manifest.js';
import { modelError } from '../util/errors.js';
import { convertInWorker } from './convert-in-worker.js';
import { oneOf } from './parse.js';
import { createProgress } from './progress.js';

export const DEFAULT_DTYPE: WeightDtype = 'int4';

/** Resolves a --model / pull argument. Hub repo ids come with the Hub support. */
export function resolveSource(model: string) {
  try {
    return localSource(model);
  } catch (error) {
    if (/^[\w.-]+\/[\w.-]+(@[\w./-]+)?$/.test(model) && !model.startsWith('.')) {
      throw modelError(`'${model}' is not a local checkpoint directory, and downloading from the Hugging Face Hub is not available in this version of dvl yet`);
    }
    throw error;
  }
}

export function registerPull(program: Command, signal: AbortSignal): void {
  program
    .command('pull')
    .description('Convert a DiffusionVL checkpoint into ONNX graphs that dvl runs (stored under DVL_HOME).')
    .argument('<model>', 'checkpoint directory (config.json, *.safetensors, tokenizer files)')
    .option('--dtype <dtype>', `weight precision: ${WEIGHT_DTYPES.join(', ')}`, oneOf('--dtype', WEIGHT_DTYPES), DEFAULT_DTYPE)
    .option('--force', 'convert again even if a current conversion exists')
    .option('-q, --quiet', 'no progress output')
    .option('--verbose', 'print details (error causes)')
    .addHelpText(
      'after',
      `
Examples:
  dvl pull ./DiffusionVL-Qwen2.5VL-3B              int4 weights (the default: fastest on a CPU)
  dvl pull ./DiffusionVL-Qwen2.5VL-3B --dtype fp32  full precision, reproduces the reference token for token`,
    )
    .action(async (model: string, opts: { dtype: WeightDtype; force?: boolean; quiet?: boolean }) => {
      const source = resolveSource(model);
      const progress = await createProgress({ quiet: opts.quiet });
      let result: EnsureResult;
      try {
        result = await ensureConverted(source, opts.dtype, {
          force: opts.force,
          onProgress: (stage, done, total) => progress.convert(stage, done, total),
          onConvertStart: (reason) => progress.step(`converting ${model} to ${opts.dtype} (${reason})`),
          convert: (options) => convertInWorker(options, signal),
        });
      } finally {
        progress.stop();
      }
      const m = result.manifest;
      const size = m.files.reduce((sum, f) => sum + f.size, 0);
      const what = result.convertedBecause ? `converted in ${m.conversion.seconds.toFixed(1)} s` : 'already converted';
      if (!opts.quiet) process.stderr.write(`dvl: ${model} (${opts.dtype}) ${what}: ${(size / 1e9).toFixed(2)} GB in ${result.dir}\n`);
    });
}
