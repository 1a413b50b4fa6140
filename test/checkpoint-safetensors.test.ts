import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { f16BitsToF32Bits, readSafetensorsHeader, readTensorF32, readTensorRangeF32 } from '../src/checkpoint/safetensors.js';
import { expectModelError } from './helpers/errors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-st-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let fileCounter = 0;

/** Assembles a safetensors file by hand: 8-byte LE length, the header text, then `data`. */
function writeRaw(headerText: string, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): string {
  const file = path.join(tmp, `t${fileCounter++}.safetensors`);
  const header = Buffer.from(headerText, 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(lengthOverride ?? BigInt(header.length));
  fs.writeFileSync(file, Buffer.concat([length, header, data]));
  return file;
}

const u16Bytes = (values: number[]) => new Uint8Array(new Uint16Array(values).buffer);

/** Independent f16 decoder: the IEEE 754 formula evaluated in float64 arithmetic. */
function f16Formula(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * Math.pow(2, -24);
  if (e === 31) return m === 0 ? sign * Infinity : NaN;
  return sign * (1 + m / 1024) * Math.pow(2, e - 15);
}

describe('safetensors reading', () => {
  it('widens BF16 exactly (hand-derived values)', () => {
    // 0x3f80 = 1; 0xc049 = -(1 + 73/128) * 2 = -3.140625; 0x0001 = smallest bf16 subnormal = 2^-133;
    // 0x7f7f = largest finite bf16 = (2 - 2^-7) * 2^127.
    const bits = [0x3f80, 0xc049, 0x4049, 0x7f80, 0xff80, 0x7fc0, 0x0001, 0x8000, 0x0000, 0x7f7f, 0x3c23];
    const expected = [1, -3.140625, 3.140625, Infinity, -Infinity, NaN, 2 ** -133, -0, 0, (2 - 2 ** -7) * 2 ** 127, (1 + 0x23 / 128) * 2 ** -7];
    const header = JSON.stringify({ x: { dtype: 'BF16', shape: [bits.length], data_offsets: [0, bits.length * 2] } });
    const file = writeRaw(header, u16Bytes(bits));
    const h = readSafetensorsHeader(file);
    const got = readTensorF32(file, h.tensors[0]);
    expect(got.length).toBe(expected.length);
    expected.forEach((v, i) => expect(Object.is(got[i], Math.fround(v)) || (Number.isNaN(v) && Number.isNaN(got[i]))).toBe(true));
  });

  it('widens F16 exactly, including subnormals, infinities and NaN (hand-derived values)', () => {
    const cases: [number, number][] = [
      [0x3c00, 1],
      [0xc000, -2],
      [0x7bff, 65504], // largest finite half
      [0x0400, 2 ** -14], // smallest normal
      [0x03ff, 1023 * 2 ** -24], // largest subnormal
      [0x0200, 2 ** -15],
      [0x0001, 2 ** -24], // smallest subnormal
      [0x8001, -(2 ** -24)],
      [0x3555, 0.333251953125], // 1/3 rounded: (1 + 341/1024) / 4
      [0x7c00, Infinity],
      [0xfc00, -Infinity],
      [0x8000, -0],
      [0x0000, 0],
    ];
    const bits = [...cases.map((c) => c[0]), 0x7e00, 0xfd01];
    const header = JSON.stringify({ h: { dtype: 'F16', shape: [bits.length], data_offsets: [0, bits.length * 2] } });
    const file = writeRaw(header, u16Bytes(bits));
    const got = readTensorF32(file, readSafetensorsHeader(file).tensors[0]);
    cases.forEach(([, v], i) => expect(Object.is(got[i], v)).toBe(true));
    expect(Number.isNaN(got[cases.length])).toBe(true);
    expect(Number.isNaN(got[cases.length + 1])).toBe(true);
  });

  it('decodes every one of the 65536 f16 bit patterns like the IEEE formula', () => {
    const f32 = new Float32Array(1);
    const u32 = new Uint32Array(f32.buffer);
    for (let h = 0; h < 65536; h++) {
      u32[0] = f16BitsToF32Bits(h);
      const want = f16Formula(h);
      if (Number.isNaN(want)) expect(Number.isNaN(f32[0])).toBe(true);
      else if (!Object.is(f32[0], want)) throw new Error(`f16 0x${h.toString(16)}: got ${f32[0]}, want ${want}`);
    }
  });

  it('reads F32 tensors, several tensors per file, and element ranges across read chunks', () => {
    // A BF16 tensor of 1.5 Mi elements (3 MB) spans several 1 MB read chunks; value i has bits (i * 7919) & 0x7f7f.
    const n = 3 << 19;
    const big = new Uint16Array(n).map((_, i) => (i * 7919) & 0x7f7f);
    const small = new Float32Array([1.5, -2.25, 1e-30, 3e38]);
    const header = JSON.stringify({
      __metadata__: { format: 'pt' },
      small: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] },
      big: { dtype: 'BF16', shape: [n], data_offsets: [16, 16 + 2 * n] },
    });
    const file = writeRaw(header, new Uint8Array(Buffer.concat([new Uint8Array(small.buffer), new Uint8Array(big.buffer)])));
    const h = readSafetensorsHeader(file);
    expect(h.metadata).toEqual({ format: 'pt' });
    expect(h.tensors.map((t) => [t.name, t.dtype, t.shape, t.offset - (8 + Buffer.byteLength(header)), t.byteLength])).toEqual([
      ['small', 'F32', [2, 2], 0, 16],
      ['big', 'BF16', [n], 16, 2 * n],
    ]);
    expect(Array.from(readTensorF32(file, h.tensors[0]))).toEqual(Array.from(small));

    const bigEntry = h.tensors[1];
    const all = readTensorF32(file, bigEntry);
    const allBits = new Uint32Array(all.buffer);
    for (let i = 0; i < n; i++) if (allBits[i] !== big[i] * 65536) throw new Error(`element ${i}`);
    const start = (1 << 19) - 3; // straddles the first chunk boundary
    const part = readTensorRangeF32(file, bigEntry, start, (1 << 20) - 10);
    expect(part.length).toBe((1 << 20) - 10);
    for (let i = 0; i < part.length; i++) if (part[i] !== all[start + i]) throw new Error(`range element ${i}`);
    // Into a caller buffer larger than needed: only the prefix is written and returned.
    const buffer = new Float32Array(n + 5).fill(7);
    const into = readTensorF32(file, bigEntry, buffer);
    expect(into.length).toBe(n);
    expect(into.buffer).toBe(buffer.buffer);
    expect(into[n - 1]).toBe(all[n - 1]);
    expect(buffer[n]).toBe(7);
    expectModelError(() => readTensorRangeF32(file, bigEntry, n - 1, 2), /outside its 1572864 elements/);
  });

  it('refuses to read dtypes it cannot widen', () => {
    const file = writeRaw(JSON.stringify({ ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }), new Uint8Array(16));
    const h = readSafetensorsHeader(file);
    expect(h.tensors[0].dtype).toBe('I64');
    expectModelError(() => readTensorF32(file, h.tensors[0]), /tensor ids has dtype I64; only BF16, F16 and F32 can be read/);
  });
});

describe('safetensors header validation', () => {
  it('rejects a file too short for the length prefix', () => {
    const file = path.join(tmp, 'short.safetensors');
    fs.writeFileSync(file, Buffer.from([1, 2, 3]));
    expectModelError(() => readSafetensorsHeader(file), /truncated safetensors file \(3 bytes/);
  });

  it('rejects a header length beyond the end of the file or absurdly large', () => {
    const header = JSON.stringify({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } });
    expectModelError(() => readSafetensorsHeader(writeRaw(header, new Uint8Array(4), BigInt(header.length + 100))), /truncated safetensors header/);
    expectModelError(() => readSafetensorsHeader(writeRaw(header, new Uint8Array(4), 1n << 40n)), /corrupt safetensors header length/);
    expectModelError(() => readSafetensorsHeader(writeRaw(header, new Uint8Array(4), 0n)), /corrupt safetensors header length 0/);
  });

  it('rejects a header that is not JSON or not an object', () => {
    expectModelError(() => readSafetensorsHeader(writeRaw('{"x": {"dtype": "F32"')), /header is not valid JSON/);
    expectModelError(() => readSafetensorsHeader(writeRaw('[1, 2, 3]')), /header is not a JSON object/);
  });

  it('rejects data beyond the end of the file (a truncated download)', () => {
    const header = JSON.stringify({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [4], data_offsets: [16, 32] } });
    const file = writeRaw(header, new Uint8Array(32));
    expect(readSafetensorsHeader(file).tensors.length).toBe(2);
    fs.truncateSync(file, fs.statSync(file).size - 1);
    expectModelError(() => readSafetensorsHeader(file), /tensor b: data ends at byte \d+, beyond the end of the file/);
  });

  it('rejects offsets that disagree with the shape, overlap, or are malformed', () => {
    const data = new Uint8Array(64);
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ a: { dtype: 'F32', shape: [3], data_offsets: [0, 16] } }, /tensor a: data_offsets span 16 bytes but F32 \[3\] needs 12/],
      [{ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }, /tensors a and b overlap/],
      [{ a: { dtype: 'F32', shape: [4], data_offsets: [16, 0] } }, /tensor a: bad data_offsets \[16,0\]/],
      [{ a: { dtype: 'F32', shape: [4], data_offsets: [0] } }, /bad data_offsets/],
      [{ a: { dtype: 'F32', shape: [-4], data_offsets: [0, 16] } }, /tensor a: bad shape \[-4\]/],
      [{ a: { shape: [4], data_offsets: [0, 16] } }, /tensor a: missing dtype/],
      [{ a: 5 }, /tensor a: entry is not an object/],
    ];
    for (const [header, pattern] of cases) expectModelError(() => readSafetensorsHeader(writeRaw(JSON.stringify(header), data)), pattern);
  });

  it('reports a missing file as a model error', () => {
    expectModelError(() => readSafetensorsHeader(path.join(tmp, 'nope.safetensors')), /cannot open .*nope\.safetensors/);
  });
});
