/**
 * The request fields every API takes beyond its own (the diffusion settings and the image budget, under the
 * names of `dvl batch`), and the small helpers the routes share to read them.
 */
import type { JsonSchemaInput } from '../ask.js';
import { checkJsonFormat } from '../generate/json-schema/index.js';
import { REMASKING_STRATEGIES } from '../generate/schedule.js';
import { DvlError } from '../util/errors.js';
import { ServerError } from './errors.js';

/** The largest min_pixels/max_pixels a request may ask for: 16384 patches of 28x28. */
export const MAX_RESIZE_PIXELS = 16384 * 28 * 28;

/** The diffusion extras: extra fields on the OpenAI routes, `options` on the Ollama routes. */
export const DIFFUSION_FIELDS = {
  steps: { type: 'integer', minimum: 1, maximum: 1024 },
  block_size: { type: 'integer', minimum: 1, maximum: 4096 },
  remasking: { type: 'string', enum: [...REMASKING_STRATEGIES] },
  threshold: { type: 'number', minimum: 0, maximum: 1 },
  // The name DiffusionVL's own generate() uses for the same setting.
  confidence_threshold: { type: 'number', minimum: 0, maximum: 1 },
  // Bounded: a request may not have a small image upscaled to gigapixels for the vision tower (memory, and
  // minutes no client can cancel). The bound is Qwen2.5-VL's own largest max_pixels.
  min_pixels: { type: 'integer', minimum: 1, maximum: MAX_RESIZE_PIXELS },
  max_pixels: { type: 'integer', minimum: 1, maximum: MAX_RESIZE_PIXELS },
  // DiffusionVL-Qwen2.5-7B (SigLIP family): anyres_max_N's N, or one crop per image.
  tiles: { type: 'integer', minimum: 1, maximum: 36 },
  image_mode: { type: 'string', enum: ['anyres', 'pad'] },
} as const;

/** `threshold`, or its upstream name `confidence_threshold`; both with different values is a 400. */
export function thresholdOf(fields: { threshold?: number; confidence_threshold?: number }): number | undefined {
  const { threshold, confidence_threshold: alias } = fields;
  if (threshold !== undefined && alias !== undefined && threshold !== alias) {
    throw new ServerError(400, 'invalid_request', `threshold (${threshold}) and confidence_threshold (${alias}) are the same setting: give one`, { param: 'confidence_threshold' });
  }
  return threshold ?? alias;
}

/**
 * A request's JSON Schema, checked before anything else happens: one dvl cannot follow is a 400 naming the
 * keyword and where it is (`param`: the field as the API names it, which the message starts with).
 */
export function checkRequestFormat(schema: unknown, param: string): JsonSchemaInput {
  if (typeof schema !== 'boolean' && (typeof schema !== 'object' || schema === null || Array.isArray(schema))) {
    throw new ServerError(400, 'invalid_request', `${param} must be a JSON Schema object`, { param });
  }
  try {
    checkJsonFormat(schema as JsonSchemaInput);
  } catch (error) {
    if (error instanceof DvlError) throw new ServerError(400, 'invalid_request', `${param}: ${error.message.replace(/^json schema: /, '')}`, { param });
    throw error;
  }
  return schema as JsonSchemaInput;
}

/** The object without its undefined fields (the request settings a body left out take the defaults). */
export function dropUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
