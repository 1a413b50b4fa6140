/**
 * The token-embedding table on the host, read row by row from the converted model's `embed_tokens.bin`
 * (raw little-endian rows, float32 or float16). A prompt needs a few hundred rows, so positioned reads
 * beat holding a 1.2 GB fp32 table in memory.
 */
import fs from 'node:fs';
import type { EmbeddingTable } from '../generate/types.js';
import { modelError } from '../util/errors.js';
import { float16BitsToNumber } from '../util/half.js';

/** bfloat16 keeps a bf16 checkpoint's rows bit-exact at half the size of float32. */
export type EmbeddingDtype = 'float32' | 'float16' | 'bfloat16';

export class FileEmbeddingTable implements EmbeddingTable {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  private readonly fd: number;
  private readonly dtype: EmbeddingDtype;
  private readonly rowBytes: number;
  private readonly scratch: Buffer;
  /** Rows already read; generation reuses the same few hundred ids over and over. */
  private readonly cache = new Map<number, Float32Array>();

  constructor(file: string, vocabSize: number, hiddenSize: number, dtype: EmbeddingDtype) {
    this.vocabSize = vocabSize;
    this.hiddenSize = hiddenSize;
    this.dtype = dtype;
    this.rowBytes = hiddenSize * (dtype === 'float32' ? 4 : 2);
    const expected = this.rowBytes * vocabSize;
    let size: number;
    try {
      this.fd = fs.openSync(file, 'r');
      size = fs.fstatSync(this.fd).size;
    } catch (error) {
      throw modelError(`cannot open embedding table ${file}: ${(error as Error).message}`);
    }
    if (size !== expected) {
      fs.closeSync(this.fd);
      throw modelError(`embedding table ${file} has ${size} bytes, expected ${expected}: the conversion is incomplete`);
    }
    this.scratch = Buffer.alloc(this.rowBytes);
  }

  row(id: number): Float32Array {
    let row = this.cache.get(id);
    if (row) return row;
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new Error(`token id ${id} outside the vocabulary`);
    const read = fs.readSync(this.fd, this.scratch, 0, this.rowBytes, id * this.rowBytes);
    if (read !== this.rowBytes) throw modelError(`short read from the embedding table at row ${id}`);
    row = new Float32Array(this.hiddenSize);
    if (this.dtype === 'float32') {
      for (let i = 0; i < this.hiddenSize; i++) row[i] = this.scratch.readFloatLE(i * 4);
    } else if (this.dtype === 'float16') {
      for (let i = 0; i < this.hiddenSize; i++) row[i] = float16BitsToNumber(this.scratch.readUInt16LE(i * 2));
    } else {
      // bf16 is the top half of a float32.
      const bits = new Uint32Array(row.buffer);
      for (let i = 0; i < this.hiddenSize; i++) bits[i] = this.scratch.readUInt16LE(i * 2) << 16;
    }
    this.cache.set(id, row);
    return row;
  }

  rowInto(id: number, out: Float32Array, offset: number): void {
    out.set(this.row(id), offset);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
