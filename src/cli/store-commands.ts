/**
 * `dvl list`, `dvl show <model>`, `dvl rm <model> [--all]`: what is in the store ($DVL_HOME/models) and the
 * Hugging Face cache, without any network request.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { textTensors } from '../checkpoint/expected-tensors.js';
import { blockSizeSource, contextLength, familyOf } from '../models/index.js';
import { localSource } from '../store/ensure.js';
import { dvlHome, listLeftovers, listVariants, type StoredVariant, sourceKey, treeBytes } from '../store/layout.js';
import { hubCacheDir, looksLikeHubRef, parseHubRef, repoDir, snapshotFiles } from '../hub/cache.js';
import { hubModelDir, readPullRecords } from '../store/pull-record.js';
import { modelError } from '../util/errors.js';
import { defaultDtype } from '../convert/default-dtype.js';

const out = (line: string) => process.stdout.write(`${line}\n`);
/** Whether a variant's decoder weights are packed (store/prepacked.ts), and for which CPU. */
const packedNote = (v: StoredVariant) => (v.manifest.prepacked ? `  packed for ${v.manifest.prepacked.cpu} (onnxruntime ${v.manifest.prepacked.onnxruntime})` : '');
const size = (bytes: number) => (bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : bytes >= 1e5 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`);

export function registerStoreCommands(program: Command): void {
  program
    .command('list')
    .alias('ls')
    .description('List converted models: revision, dtype variants, size on disk.')
    .action(async () => listCommand(process.env));
  program
    .command('show')
    .description('Show a model: architecture, source files, converted variants.')
    .argument('<model>', 'Hub model id (org/name[@revision]) or checkpoint directory')
    .action(async (model: string) => showCommand(model, process.env));
  program
    .command('rm')
    .description("Remove a model's converted variants (--all: also its files in the Hugging Face cache).")
    .argument('<model>', 'Hub model id (org/name) or checkpoint directory')
    .option('--all', "also delete the model's downloaded files from the Hugging Face cache")
    .action(async (model: string, opts: { all?: boolean }) => rmCommand(model, Boolean(opts.all), process.env));
}

interface ModelGroup {
  /** The Hub id, or the checkpoint directory (absolute) of a local model: what `dvl list` shows. */
  name: string;
  revision: string;
  variants: StoredVariant[];
  /** A local checkpoint directory that no longer exists: its conversions can still be shown and removed. */
  sourceGone: boolean;
}

/** Variants grouped by model and revision, in name order. */
async function groups(env: NodeJS.ProcessEnv): Promise<ModelGroup[]> {
  const map = new Map<string, ModelGroup>();
  for (const v of await listVariants(dvlHome(env))) {
    const s = v.manifest.source;
    const name = s.kind === 'hub' ? s.id : s.dir;
    const key = `${name}\0${s.revision}`;
    const g = map.get(key) ?? { name, revision: s.kind === 'hub' ? s.revision : 'local', variants: [], sourceGone: s.kind === 'local' && !fs.existsSync(s.dir) };
    g.variants.push(v);
    map.set(key, g);
  }
  return [...map.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * The local models a `show` / `rm` argument names: by the directory `dvl list` shows (also once that directory
 * is gone), or by any path to the same directory while it exists.
 */
function localGroups(all: ModelGroup[], model: string): ModelGroup[] {
  const wanted = path.resolve(model);
  const real = realpathOrUndefined(wanted);
  return all.filter((g) => g.revision === 'local' && (g.name === wanted || (real !== undefined && realpathOrUndefined(g.name) === real)));
}

function realpathOrUndefined(p: string): string | undefined {
  try {
    return fs.realpathSync(p);
  } catch {
    return undefined;
  }
}

export async function listCommand(env: NodeJS.ProcessEnv): Promise<void> {
  const all = await groups(env);
  if (all.length === 0) {
    out(`no models in ${dvlHome(env)} (get one with: dvl pull hustvl/DiffusionVL-Qwen2.5VL-3B)`);
    reportLeftovers(env);
    return;
  }
  const rows = all.map((g) => [
    g.name,
    g.revision === 'local' ? 'local' : g.revision.slice(0, 12),
    g.variants.map((v) => v.manifest.dtype).sort().join(','),
    size(g.variants.reduce((s, v) => s + v.bytes, 0)),
  ]);
  const table = [['MODEL', 'REVISION', 'VARIANTS', 'SIZE'], ...rows];
  const widths = table[0].map((_, i) => Math.max(...table.map((r) => r[i].length)));
  const line = (cells: string[], note?: string) => {
    const padded = cells.map((c, i) => (i < cells.length - 1 || note ? c.padEnd(widths[i]) : c));
    return (note ? [...padded, note] : padded).join('  ');
  };
  out(line(table[0]));
  // A checkpoint directory deleted after its conversion: shown with a note, removable with `dvl rm <MODEL>`.
  all.forEach((g, i) => out(line(rows[i], g.sourceGone ? '(source gone)' : undefined)));
  reportLeftovers(env);
}

/** Space that interrupted conversions left behind, and how it goes away. */
function reportLeftovers(env: NodeJS.ProcessEnv): void {
  const leftovers = listLeftovers(dvlHome(env));
  if (leftovers.length === 0) return;
  const bytes = leftovers.reduce((s, l) => s + l.bytes, 0);
  out(`reclaimable: ${size(bytes)} left by interrupted work (removed by the model's next use, or 'dvl rm MODEL'):`);
  for (const l of leftovers) out(`  ${l.dir} (${size(l.bytes)})`);
}

/** "19.6 M (19,627,008)" below a billion, "3.75 B (3,754,622,976)" from there. */
export function parameterCount(params: number): string {
  const short = params >= 1e9 ? `${(params / 1e9).toFixed(2)} B` : `${(params / 1e6).toFixed(1)} M`;
  return `${short} (${params.toLocaleString('en-US')})`;
}

export async function showCommand(model: string, env: NodeJS.ProcessEnv): Promise<void> {
  const found = await findModel(model, env);
  const first = found[0];
  const config = first.variants[0].manifest.config;
  const family = familyOf(config);
  const s = first.variants[0].manifest.source;
  const params = [...textTensors(config.text), ...family.visionTensors(config)].reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1), 0);
  const t = config.text;
  out(`model       ${first.name}`);
  out(`revision    ${first.revision}`);
  out(`source      ${s.dir}${first.sourceGone ? ' (gone)' : ''}`);
  out(`type        ${config.modelType}`);
  out(`parameters  ${parameterCount(params)}`);
  out(`text        ${t.numLayers} layers, hidden ${t.hiddenSize}, ${t.numHeads} heads (${t.numKvHeads} KV), vocab ${t.vocabSize}`);
  for (const line of family.describe(config)) out(line);
  out(`block size  ${config.blockSize} (${blockSizeSource(config)})`);
  out(`context     ${contextLength(config)} tokens, prompt and answer (${config.text.maxPositionEmbeddings !== undefined ? 'config.json max_position_embeddings' : "not in config.json: the model class's default"})`);
  const chosen = defaultDtype(config);
  out(`dtype       ${chosen.dtype} by default (${chosen.why}); --dtype picks another`);
  for (const note of config.notes ?? []) out(`note        ${note}`);
  const files = fs.existsSync(s.dir) ? snapshotFiles(s.dir) : [];
  out(`files       ${files.length === 0 ? '(source files not on disk)' : files.map((f) => `${f.name} (${size(f.size)})`).join(', ')}`);
  for (const g of found) {
    for (const v of g.variants) out(`variant     ${v.manifest.dtype}  ${size(v.bytes)}  converted ${v.manifest.createdAt}${packedNote(v)}  ${v.dir}`);
  }
}

export async function rmCommand(model: string, all: boolean, env: NodeJS.ProcessEnv): Promise<void> {
  const home = dvlHome(env);
  let freed = 0;
  let removed = 0;
  const remove = (dir: string) => {
    if (!fs.existsSync(dir)) return;
    freed += diskUsage(dir);
    removed++;
    fs.rmSync(dir, { recursive: true, force: true });
  };
  if (!fs.existsSync(model) && looksLikeHubRef(model)) {
    const { id } = parseHubRef(model);
    const variants = (await groups(env)).filter((g) => g.name === id).flatMap((g) => g.variants);
    const cache = repoDir(hubCacheDir(env), id);
    if (variants.length === 0 && Object.keys(readPullRecords(home, id)).length === 0 && !(all && fs.existsSync(cache))) throw modelError(`${id} is not in the store (see 'dvl list')`);
    remove(hubModelDir(home, id));
    // The Hugging Face layout keeps each repo's blobs in its own folder: this deletes that model's files only.
    if (all) remove(cache);
    out(`removed ${id}: ${variants.length} converted variant(s)${all ? ' and its Hugging Face cache files' : ''}, ${size(freed)} freed`);
  } else {
    // By the name `dvl list` shows, also when the checkpoint directory is gone; while it exists, its store
    // directory goes too with variants that are not listed (stale, partial).
    const found = localGroups(await groups(env), model);
    const dirs = new Set(found.flatMap((g) => g.variants.map((v) => v.modelDir)));
    const exists = fs.statSync(model, { throwIfNoEntry: false })?.isDirectory() ?? false;
    if (exists) dirs.add(path.join(home, 'models', sourceKey(localSource(model))));
    const present = [...dirs].filter((d) => fs.existsSync(d));
    if (present.length === 0) throw modelError(`${model} has no converted variants (see 'dvl list')`);
    for (const dir of present) remove(dir);
    const name = found[0]?.name ?? path.resolve(model);
    out(`removed the converted variants of ${name} (${size(freed)} freed; ${exists ? 'the checkpoint itself is kept' : 'its checkpoint directory was already gone'})`);
  }
  if (removed === 0) out('nothing to remove');
}

async function findModel(model: string, env: NodeJS.ProcessEnv): Promise<ModelGroup[]> {
  const all = await groups(env);
  let found: ModelGroup[];
  if (!fs.existsSync(model) && looksLikeHubRef(model)) {
    const ref = parseHubRef(model);
    const records = readPullRecords(dvlHome(env), ref.id);
    const commit = ref.revision ? (records[ref.revision]?.commit ?? ref.revision) : records.main?.commit;
    found = all.filter((g) => g.name === ref.id);
    const pinned = found.filter((g) => g.revision === commit || (commit !== undefined && commit.length >= 7 && g.revision.startsWith(commit)));
    if (pinned.length > 0) found = pinned;
  } else {
    found = localGroups(all, model);
  }
  if (found.length === 0) throw modelError(`${model} is not in the store (see 'dvl list'; get it with 'dvl pull ${model}')`);
  return found;
}

/** Bytes of the files under `dir` (links not followed: a snapshot's links point into blobs/, counted once). */
const diskUsage = treeBytes;
