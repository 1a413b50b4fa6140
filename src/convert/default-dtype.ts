/**
 * Which dtype a model gets when none is asked for (`--dtype auto`, the default): the fastest whose answers agree
 * with fp32's on at least 95 % of the trained proxy checkpoint's questions and whose `dvl ask` with one image
 * fits in 8 GiB. Measured (README "Which --dtype"; scripts/agreement.ts, scripts/bench.ts, /usr/bin/time):
 * - int8 keeps fp32's answer on 96.7 % of 540 proxy questions (57 of the 60 dev ones) and is the fastest at the
 *   row counts block diffusion runs (3B, interleaved: 8-row call 1.1-1.25x int4-all's, prefill 2.1-2.3x); but a
 *   7B int8 `ask` peaks at 14.1 GiB (its packed weights and the originals they are packed from are both mapped);
 * - int4 (8-bit head and first/last layers) keeps 96.1 % (58 of 60) and a 7B `ask` peaks at 7.9 GiB.
 * So: int8 up to INT8_MAX_PARAMETERS (the 3B models), int4 above (the 7B models).
 */
import { type AnyModelConfig, parameterCount } from '../models/index.js';
import type { DtypeChoice, WeightDtype } from './weight-dtype.js';

/** Models with more parameters than this default to int4: their int8 `ask` does not fit in 8 GiB. */
export const INT8_MAX_PARAMETERS = 5e9;

export interface ChosenDtype {
  dtype: WeightDtype;
  /** Why: 'asked for', or the rule that chose it (--verbose, dvl show). */
  why: string;
}

export function defaultDtype(config: AnyModelConfig): ChosenDtype {
  const count = parameterCount(config);
  const size = count >= 1e9 ? `${(count / 1e9).toFixed(1)} B` : `${(count / 1e6).toFixed(1)} M`;
  return count <= INT8_MAX_PARAMETERS
    ? { dtype: 'int8', why: `the default up to ${INT8_MAX_PARAMETERS / 1e9} B parameters, this model has ${size}: the fastest dtype that keeps fp32's answers` }
    : { dtype: 'int4', why: `the default above ${INT8_MAX_PARAMETERS / 1e9} B parameters, this model has ${size}: keeps fp32's answers and a one-image ask within 8 GiB, where int8 needs about twice that` };
}

export function resolveDtype(choice: DtypeChoice, config: AnyModelConfig): ChosenDtype {
  return choice === 'auto' ? defaultDtype(config) : { dtype: choice, why: 'asked for' };
}
