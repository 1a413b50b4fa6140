/**
 * Expected preprocessing outputs computed with Pillow 9.4 / numpy by scripts/gen-preprocess-fixtures.py:
 * sha256 of the RGB bytes plus a few sample pixels [x, y, r, g, b].
 */
import crypto from 'node:crypto';
import fs from 'node:fs';

export interface Expected {
  width: number;
  height: number;
  sha256: string;
  samples: [number, number, number, number, number][];
}

export const expected: any = JSON.parse(fs.readFileSync('fixtures/preprocess/expected.json', 'utf8'));

export const sha256 = (data: Uint8Array) => crypto.createHash('sha256').update(data).digest('hex');
