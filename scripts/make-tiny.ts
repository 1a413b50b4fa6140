/**
 * `npm run make-tiny -- DIR [--seed N]`: writes a tiny random DiffusionVL checkpoint into DIR, in the real
 * Hugging Face layout (config.json, bf16 safetensors, the real Qwen2.5 tokenizer), so that every dvl command
 * can be tried without the Hub. The model is the one the tests build (2 text layers of width 64, a 4-layer
 * vision tower): it converts in seconds and answers gibberish in the released models' output format.
 * The README's sample output was captured with `npm run make-tiny -- ./tiny` (seed 5).
 */
import fs from 'node:fs';
import path from 'node:path';
import { tinyConfig } from '../test/helpers/random-weights.js';
import { writeTinyCheckpoint } from '../test/helpers/tiny-checkpoint.js';

function main(argv: string[]): number {
  const args = [...argv];
  let seed = 5;
  const seedAt = args.indexOf('--seed');
  if (seedAt >= 0) {
    seed = Number(args[seedAt + 1]);
    args.splice(seedAt, 2);
    if (!Number.isSafeInteger(seed) || seed < 0) return fail(`--seed must be a non-negative integer, got '${argv[seedAt + 1] ?? ''}'`);
  }
  if (args.length !== 1 || args[0].startsWith('-')) return fail('usage: npm run make-tiny -- DIR [--seed N]');
  const dir = path.resolve(args[0]);
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) return fail(`${args[0]} exists and is not empty; pick a new directory`);
  writeTinyCheckpoint(dir, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed });
  process.stdout.write(`wrote a tiny random DiffusionVL checkpoint to ${dir}\ntry: dvl ask -m ${args[0]} --dtype fp32 fixtures/images/chelsea.png "What is in this picture?"\n`);
  return 0;
}

function fail(message: string): number {
  process.stderr.write(`make-tiny: ${message}\n`);
  return 1;
}

process.exitCode = main(process.argv.slice(2));
