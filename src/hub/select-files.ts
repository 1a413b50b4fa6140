/**
 * Which files of a Hub repo dvl downloads: what the converter and the tokenizer read, nothing else. Remote code
 * (*.py) is never fetched, and PyTorch pickles (.bin) are never fetched: dvl reads safetensors only.
 */
import { modelError } from '../util/errors.js';

export interface RepoFile {
  path: string;
  size: number;
  /** Git blob sha1 (every file). */
  oid: string;
  /** LFS pointer data: sha256 of the contents and their size. */
  lfs?: { oid: string; size: number };
}

/** The name the cache stores a file under (as @huggingface/hub and huggingface_hub do): LFS sha256, else git sha1. */
export const etagOf = (f: RepoFile) => f.lfs?.oid ?? f.oid;

const SMALL_FILES = new Set([
  'config.json',
  'generation_config.json',
  'preprocessor_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'vocab.json',
  'merges.txt',
  'chat_template.json',
  'chat_template.jinja',
  'model.safetensors.index.json',
  'vision_config.json',
]);

/** Only top-level files: the released checkpoints keep everything at the root. */
export function selectFiles(id: string, files: RepoFile[]): RepoFile[] {
  const top = files.filter((f) => !f.path.includes('/'));
  const weights = top.filter((f) => f.path.endsWith('.safetensors'));
  if (!top.some((f) => f.path === 'config.json')) throw modelError(`${id} is not a DiffusionVL checkpoint: it has no config.json (found ${describe(top)})`);
  if (weights.length === 0) {
    const pickles = top.filter((f) => f.path.endsWith('.bin') || f.path.endsWith('.pt'));
    throw modelError(`${id} has no safetensors weights${pickles.length > 0 ? ' (only PyTorch .bin files, which dvl does not read)' : ''} (found ${describe(top)})`);
  }
  return [...top.filter((f) => SMALL_FILES.has(f.path)), ...weights].sort(bySize);
}

/** Small files first: config.json is checked before gigabytes move. */
const bySize = (a: RepoFile, b: RepoFile) => (a.path === 'config.json' ? -1 : b.path === 'config.json' ? 1 : a.size - b.size || a.path.localeCompare(b.path));

function describe(files: RepoFile[]): string {
  const names = files.map((f) => f.path);
  return names.length === 0 ? 'no files' : names.length <= 6 ? names.join(', ') : `${names.slice(0, 6).join(', ')} and ${names.length - 6} more`;
}
