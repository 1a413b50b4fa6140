/**
 * The image area budget (pixels after resizing) a question is answered with: the model's default (config.json's
 * min_pixels / max_pixels, which the upstream tower reads, else DiffusionVL's training budget 384²..512²) with
 * the bounds a user gave on top. A default bound gives way to a bound the user gave (`--max-pixels 100000`
 * alone lowers the minimum to 100000 rather than failing about a --min-pixels nobody typed); only two given
 * bounds that conflict are an error, which the caller reports in its own words.
 */

/**
 * The budget DiffusionVL was trained and evaluated with (its vision tower's defaults). A `preprocessor_config.json`
 * shipped with a checkpoint (inherited from Qwen2.5-VL: 3136..12845056) must not silently replace these, and
 * does not upstream either.
 */
export const DEFAULT_MIN_PIXELS = 384 * 384;
export const DEFAULT_MAX_PIXELS = 512 * 512;

export interface PixelBounds {
  minPixels?: number;
  maxPixels?: number;
}

export interface ResolvedPixelBudget {
  minPixels: number;
  maxPixels: number;
  /** Where the budget came from, for --verbose: "--min-pixels/--max-pixels", "config.json", "default". */
  from: string;
}

/** `given` on top of `defaults`, each missing bound moved to fit the other. */
export function resolvePixelBudget(defaults: { minPixels: number; maxPixels: number }, given: PixelBounds): { minPixels: number; maxPixels: number } {
  const minPixels = given.minPixels ?? Math.min(defaults.minPixels, given.maxPixels ?? defaults.minPixels);
  const maxPixels = given.maxPixels ?? Math.max(defaults.maxPixels, given.minPixels ?? defaults.maxPixels);
  return { minPixels, maxPixels };
}

/** Given bounds that cannot both hold (min above max): a message, or undefined. */
export function conflictingBounds(given: PixelBounds): string | undefined {
  if (given.minPixels !== undefined && given.maxPixels !== undefined && given.minPixels > given.maxPixels) {
    return `min_pixels (${given.minPixels}) is larger than max_pixels (${given.maxPixels})`;
  }
  return undefined;
}
