/** Image arguments on the command line: what looks like an image path, and whether it is a readable file. */
import fs from 'node:fs';
import { inputError } from '../util/errors.js';

const IMAGE_EXTENSION = /\.(jpe?g|png|gif|webp|tiff?|bmp|avif|heic|heif)$/i;

/** A single word ending in an image extension ("photo.png", "~/shots/a.jpg"): a path, not a question. */
export function looksLikeImagePath(arg: string): boolean {
  return IMAGE_EXTENSION.test(arg) && !/\s/.test(arg);
}

/**
 * Whether a command-line argument names an image file: an existing regular file with an image extension.
 * Both, so that a prompt is never mistaken for one: a question that happens to end in ".png" is not a file
 * here, and a file without an image extension (notes.txt) is left alone.
 */
export function isImageFile(arg: string): boolean {
  if (!IMAGE_EXTENSION.test(arg)) return false;
  try {
    return fs.statSync(arg).isFile();
  } catch {
    return false;
  }
}

export function checkReadableFile(file: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw inputError(`image not found: ${file}`);
  }
  if (!st.isFile()) throw inputError(`not an image file: ${file}`);
}
