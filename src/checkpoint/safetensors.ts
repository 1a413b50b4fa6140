/**
 * Minimal safetensors reader: parses the header and reads single tensors by positioned reads.
 *
 * File format: 8-byte little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the data; offsets are
 * relative to the first byte after the header. Nothing here reads a whole file: the header is read once and
 * each tensor is read in bounded chunks straight into its float32 output.
 */
import fs from 'node:fs';
import os from 'node:os';
import { modelError } from '../util/errors.js';

/** Bytes per element of every dtype the safetensors format defines (for validating offsets). */
const ELEMENT_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};

/** The safetensors reference implementation refuses headers above 100 MB; so do we (a corrupt length). */
const MAX_HEADER_BYTES = 100_000_000;

/** Read granularity: bounds the temporary memory of a read; 1 MB measured ~2x faster than 8 MB (fresh pages cost). */
const CHUNK_BYTES = 1 << 20;

export interface SafetensorsEntry {
  name: string;
  /** As stored (e.g. "BF16", "I64"); only BF16, F16 and F32 can be read as float32. */
  dtype: string;
  shape: number[];
  /** Absolute byte offset of the first element in the file. */
  offset: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  /** Tensors in header order. */
  tensors: SafetensorsEntry[];
  metadata: Record<string, unknown>;
}

/** Reads and validates the header of `file` (two small reads, whatever the file size). */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw modelError(`cannot open ${file}: ${(e as Error).message}`, e);
  }
  try {
    const fileSize = fs.fstatSync(fd).size;
    if (fileSize < 8) throw modelError(`${file}: truncated safetensors file (${fileSize} bytes, no header length)`);
    const lengthBytes = readExactly(fd, file, 0, 8);
    // Checked as a BigInt: a corrupt length beyond 2^53 would print rounded as a Number.
    const storedLength = Buffer.from(lengthBytes).readBigUInt64LE(0);
    if (storedLength < 2n || storedLength > BigInt(MAX_HEADER_BYTES)) {
      throw modelError(`${file}: corrupt safetensors header length ${storedLength}`);
    }
    const headerLength = Number(storedLength);
    if (8 + headerLength > fileSize) {
      throw modelError(`${file}: truncated safetensors header (needs ${8 + headerLength} bytes, file has ${fileSize})`);
    }
    const headerText = Buffer.from(readExactly(fd, file, 8, headerLength)).toString('utf8');
    let json: unknown;
    try {
      json = JSON.parse(headerText);
    } catch (e) {
      throw modelError(`${file}: safetensors header is not valid JSON: ${(e as Error).message}`, e);
    }
    return parseHeader(json, file, fileSize, 8 + headerLength);
  } finally {
    fs.closeSync(fd);
  }
}

function parseHeader(json: unknown, file: string, fileSize: number, dataStart: number): SafetensorsHeader {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw modelError(`${file}: safetensors header is not a JSON object`);
  }
  const tensors: SafetensorsEntry[] = [];
  let metadata: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof value === 'object' && value !== null) metadata = value as Record<string, unknown>;
      continue;
    }
    tensors.push(parseEntry(name, value, file, fileSize, dataStart));
  }
  // Tensors must not overlap (the format also forbids holes; we tolerate them since they cannot mislead a read).
  const byOffset = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1];
    if (byOffset[i].offset < prev.offset + prev.byteLength) {
      throw modelError(`${file}: tensors ${prev.name} and ${byOffset[i].name} overlap`);
    }
  }
  return { file, fileSize, tensors, metadata };
}

function parseEntry(name: string, value: unknown, file: string, fileSize: number, dataStart: number): SafetensorsEntry {
  const bad = (what: string) => modelError(`${file}: tensor ${name}: ${what}`);
  if (typeof value !== 'object' || value === null) throw bad('entry is not an object');
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== 'string') throw bad('missing dtype');
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(`bad shape ${JSON.stringify(shape)}`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[0] > offsets[1]) {
    throw bad(`bad data_offsets ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (dataStart + end > fileSize) {
    throw bad(`data ends at byte ${dataStart + end}, beyond the end of the file (${fileSize} bytes; truncated download?)`);
  }
  const elementBytes = ELEMENT_BYTES[dtype];
  const count = (shape as number[]).reduce((a, b) => a * b, 1);
  if (elementBytes !== undefined && end - begin !== count * elementBytes) {
    throw bad(`data_offsets span ${end - begin} bytes but ${dtype} ${JSON.stringify(shape)} needs ${count * elementBytes}`);
  }
  return { name, dtype, shape: shape as number[], offset: dataStart + begin, byteLength: end - begin };
}

/** Element count of a shape (1 for a scalar). */
export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Reads elements [start, start+count) of a BF16/F16/F32 tensor as float32 (widened exactly).
 * Memory: the output plus one read chunk. `into` (length >= count) is filled instead of a new array and the
 * filled prefix returned: first-touching fresh memory costs far more than the read itself on some machines
 * (~3 ms per MB measured here), so converting many tensors is faster with one reused buffer.
 */
export function readTensorRangeF32(
  file: string,
  entry: Pick<SafetensorsEntry, 'name' | 'dtype' | 'shape' | 'offset' | 'byteLength'>,
  start: number,
  count: number,
  into?: Float32Array,
): Float32Array {
  const total = elementCount(entry.shape);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(count) || start < 0 || count < 0 || start + count > total) {
    throw modelError(`${file}: tensor ${entry.name}: elements [${start}, ${start + count}) are outside its ${total} elements`);
  }
  if (os.endianness() !== 'LE') throw modelError('safetensors data is little-endian; big-endian machines are not supported');
  if (into && into.length < count) throw new RangeError(`buffer of ${into.length} floats cannot hold ${count}`);
  const out = into ? into.subarray(0, count) : new Float32Array(count);
  const fd = fs.openSync(file, 'r');
  try {
    if (entry.dtype === 'F32') {
      // Same representation: read straight into the output's bytes.
      readInto(fd, file, entry.offset + start * 4, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
      return out;
    }
    const widen = entry.dtype === 'BF16' ? widenBf16 : entry.dtype === 'F16' ? widenF16 : undefined;
    if (!widen) throw modelError(`${file}: tensor ${entry.name} has dtype ${entry.dtype}; only BF16, F16 and F32 can be read`);
    const chunkElements = Math.min(count, CHUNK_BYTES / 2);
    const chunk = new Uint8Array(chunkElements * 2);
    for (let done = 0; done < count; ) {
      const n = Math.min(chunkElements, count - done);
      const bytes = chunk.subarray(0, n * 2);
      readInto(fd, file, entry.offset + (start + done) * 2, bytes);
      widen(new Uint16Array(bytes.buffer, 0, n), out, done);
      done += n;
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** The whole tensor as float32. */
export function readTensorF32(file: string, entry: Pick<SafetensorsEntry, 'name' | 'dtype' | 'shape' | 'offset' | 'byteLength'>, into?: Float32Array): Float32Array {
  return readTensorRangeF32(file, entry, 0, elementCount(entry.shape), into);
}

/** bf16 is the top half of a float32: shifting the bits back is exact for every value (incl. inf/nan). */
export function widenBf16(src: Uint16Array, out: Float32Array, outOffset: number): void {
  const bits = new Uint32Array(out.buffer, out.byteOffset + outOffset * 4, src.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
}

/** Every f16 value is exactly representable in float32 (including subnormals, ±inf, nan payloads). */
export function widenF16(src: Uint16Array, out: Float32Array, outOffset: number): void {
  const bits = new Uint32Array(out.buffer, out.byteOffset + outOffset * 4, src.length);
  for (let i = 0; i < src.length; i++) bits[i] = f16BitsToF32Bits(src[i]);
}

/** IEEE half (1 sign, 5 exponent, 10 mantissa bits) -> float32 bit pattern. */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exponent = (h >>> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0; // inf / nan (payload kept)
  if (exponent !== 0) return (sign | ((exponent + 127 - 15) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0; // ±0
  // Subnormal: value = mantissa * 2^-24. Normalise: shift the mantissa until its leading 1 reaches bit 10.
  let m = mantissa;
  let e = -14; // exponent of the implicit-1 position before shifting
  while ((m & 0x400) === 0) {
    m <<= 1;
    e -= 1;
  }
  return (sign | ((e + 127) << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

/** Reads exactly `length` bytes at `position` (a short read means the file shrank or is truncated). */
function readExactly(fd: number, file: string, position: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  readInto(fd, file, position, out);
  return out;
}

function readInto(fd: number, file: string, position: number, target: Uint8Array): void {
  let done = 0;
  while (done < target.length) {
    // readSync takes at most 2 GiB per call.
    const want = Math.min(target.length - done, 1 << 30);
    const n = fs.readSync(fd, target, done, want, position + done);
    if (n === 0) throw modelError(`${file}: unexpected end of file at byte ${position + done} (truncated?)`);
    done += n;
  }
}
