/** Checkpoint tensors for a graph writer: read one at a time, shape-checked, counted for progress. */
import type { WeightSource } from '../../checkpoint/types.js';
import { modelError } from '../../util/errors.js';

export class WeightReader {
  private done = 0;

  constructor(
    private readonly weights: WeightSource,
    /** How many tensors the writer reads in all (the progress total). */
    private readonly total: number,
    private readonly onProgress?: (done: number, total: number) => void,
  ) {}

  /** One tensor, whose shape must be `shape`; a clear model error when it is missing or shaped otherwise. */
  read(name: string, shape: number[]): Float32Array {
    if (!this.weights.has(name)) throw modelError(`checkpoint has no tensor ${name}`);
    const actual = this.weights.info(name).shape;
    if (actual.length !== shape.length || actual.some((d, i) => d !== shape[i])) {
      throw modelError(`tensor ${name} has shape [${actual.join(', ')}], expected [${shape.join(', ')}]`);
    }
    const data = this.weights.readF32(name);
    this.done++;
    this.onProgress?.(this.done, this.total);
    return data;
  }
}
