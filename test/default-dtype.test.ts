/**
 * The default dtype (`--dtype auto`, src/convert/default-dtype.ts): int8 for the 3B models, int4 for the 7B ones,
 * decided from the parameters the config gives; what `ask --json`, `--verbose` and `dvl show` say about it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultDtype, INT8_MAX_PARAMETERS, resolveDtype } from '../src/convert/default-dtype.js';
import { parameterCount } from '../src/models/index.js';
import { runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { syntheticConfig, writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-default-dtype-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home') };
beforeAll(() => writeTinyCheckpoint(ckpt, { config: tinyConfig(), seed: 5 }), 60_000);
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('the default dtype', () => {
  it('is int8 for the 3B shapes and int4 for the 7B shapes, by their parameter count', () => {
    const b3 = syntheticConfig('3b');
    const b7 = syntheticConfig('7b');
    // The real models: 3.75 B and 8.29 B parameters (language model, tower and embeddings), either side of the line.
    expect(parameterCount(b3)).toBeLessThan(INT8_MAX_PARAMETERS);
    expect(parameterCount(b7)).toBeGreaterThan(INT8_MAX_PARAMETERS);
    expect(defaultDtype(b3).dtype).toBe('int8');
    expect(defaultDtype(b7).dtype).toBe('int4');
    expect(defaultDtype(b7).why).toMatch(/^the default above 5 B parameters, this model has 8\.\d B: /);
    expect(resolveDtype('int4-all', b3)).toEqual({ dtype: 'int4-all', why: 'asked for' });
  });

  it('ask without --dtype converts and answers with it, and says so; dvl show names it', () => {
    const r = runDvl(['ask', '-m', ckpt, '-n', '8', '--json', '--verbose', 'Hi'], { env });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).dtype).toBe('int8');
    expect(r.stderr).toMatch(/^dvl: dtype int8 \(the default up to 5 B parameters, this model has [\d.]+ M: the fastest dtype that keeps fp32's answers\)$/m);
    const show = runDvl(['show', ckpt], { env });
    expect(show.stdout).toMatch(/^dtype +int8 by default \(.*\); --dtype picks another$/m);
    expect(show.stdout).toMatch(/^variant +int8 /m);
    const asked = runDvl(['ask', '-m', ckpt, '-n', '8', '--json', '--verbose', '--dtype', 'int4-all', 'Hi'], { env });
    expect(asked.status, asked.stderr).toBe(0);
    expect(JSON.parse(asked.stdout).dtype).toBe('int4-all');
    expect(asked.stderr).toMatch(/^dvl: dtype int4-all \(asked for\)$/m);
  });
});
