import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { attentionBias } from '../src/runtime/decoder-session.js';
import { FileEmbeddingTable } from '../src/runtime/embeddings.js';
import { KvCache } from '../src/runtime/kv-cache.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-runtime-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('FileEmbeddingTable', () => {
  // 3 rows x 2 values. bf16/f16 bit patterns written by hand: 1.0 = 0x3f80 (bf16) / 0x3c00 (f16),
  // -2.5 = 0xc020 / 0xc100, 0.15625 = 0x3e20 / 0x3100, -1 = 0xbf80 / 0xbc00, 2 = 0x4000 / 0x4000.
  const expected = [
    [1, -2.5],
    [0.15625, 0],
    [-1, 2],
  ];
  it('reads float32 rows', () => {
    const file = path.join(dir, 'f32.bin');
    fs.writeFileSync(file, Buffer.from(Float32Array.from(expected.flat()).buffer));
    const table = new FileEmbeddingTable(file, 3, 2, 'float32');
    expect(Array.from(table.row(2))).toEqual(expected[2]);
    const out = new Float32Array(5);
    table.rowInto(0, out, 3);
    expect(Array.from(out)).toEqual([0, 0, 0, 1, -2.5]);
    table.close();
  });
  it('widens bfloat16 and float16 rows exactly', () => {
    const bf16 = Uint16Array.from([0x3f80, 0xc020, 0x3e20, 0x0000, 0xbf80, 0x4000]);
    const f16 = Uint16Array.from([0x3c00, 0xc100, 0x3100, 0x0000, 0xbc00, 0x4000]);
    fs.writeFileSync(path.join(dir, 'bf16.bin'), Buffer.from(bf16.buffer));
    fs.writeFileSync(path.join(dir, 'f16.bin'), Buffer.from(f16.buffer));
    for (const [file, dtype] of [['bf16.bin', 'bfloat16'], ['f16.bin', 'float16']] as const) {
      const table = new FileEmbeddingTable(path.join(dir, file), 3, 2, dtype);
      for (let r = 0; r < 3; r++) expect(Array.from(table.row(r))).toEqual(expected[r]);
      expect(() => table.row(3)).toThrow(/outside the vocabulary/);
      table.close();
    }
  });
  it('refuses a table of the wrong size (an incomplete conversion)', () => {
    const file = path.join(dir, 'short.bin');
    fs.writeFileSync(file, Buffer.alloc(10));
    expect(() => new FileEmbeddingTable(file, 3, 2, 'float32')).toThrow(/has 10 bytes, expected 24/);
  });
});

describe('KvCache', () => {
  it('appends rows per layer, grows, and exposes the committed prefix', () => {
    const cache = new KvCache(2, 1, 2, 1); // 2 layers, row width 2, room for 1 row at first
    const rows = (base: number, n: number) => Float32Array.from({ length: n * 2 }, (_, i) => base + i);
    cache.append([rows(0, 2), rows(100, 2)], [rows(10, 2), rows(110, 2)], 2);
    cache.append([rows(4, 1), rows(104, 1)], [rows(14, 1), rows(114, 1)], 1);
    expect(cache.length).toBe(3);
    expect(Array.from(cache.past(0).key)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(Array.from(cache.past(1).value)).toEqual([110, 111, 112, 113, 114, 115]);
    // a fused call's K/V arrays hold more rows than are committed: only the first `count` rows are appended
    cache.append([rows(6, 3), rows(106, 3)], [rows(16, 3), rows(116, 3)], 1);
    expect(cache.length).toBe(4);
    expect(Array.from(cache.past(0).key)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(Array.from(cache.past(1).value)).toEqual([110, 111, 112, 113, 114, 115, 116, 117]);
    cache.clear();
    expect(cache.length).toBe(0);
    expect(cache.past(0).key.length).toBe(0);
  });
});

describe('attentionBias', () => {
  it('lets new rows see the whole cache and blocks up to their own', () => {
    // 2 cached rows; 4 new rows at positions 6..9 with block size 4: rows 6,7 are in block 1, rows 8,9 in block 2.
    const bias = attentionBias(2, 6, 4, 4);
    const attend = Array.from({ length: 4 }, (_, r) => Array.from({ length: 6 }, (_, c) => bias[r * 6 + c] === 0));
    expect(attend).toEqual([
      [true, true, true, true, false, false],
      [true, true, true, true, false, false],
      [true, true, true, true, true, true],
      [true, true, true, true, true, true],
    ]);
    expect(bias[4]).toBe(-Infinity);
  });
});
