/**
 * The committed K/V rows of every decoder layer, kept on the host in BSNH order ([rows, kvHeads, headDim]),
 * so the first P rows are one contiguous prefix: each call hands onnxruntime a view of that prefix, without
 * copying, and a commit appends the call's new rows at the end.
 */
export class KvCache {
  private keys: Float32Array[];
  private values: Float32Array[];
  private rows = 0;
  private capacityRows: number;
  readonly rowWidth: number;

  constructor(readonly numLayers: number, kvHeads: number, headDim: number, initialRows = 256) {
    this.rowWidth = kvHeads * headDim;
    this.capacityRows = Math.max(1, initialRows);
    this.keys = Array.from({ length: numLayers }, () => new Float32Array(this.capacityRows * this.rowWidth));
    this.values = Array.from({ length: numLayers }, () => new Float32Array(this.capacityRows * this.rowWidth));
  }

  get length(): number {
    return this.rows;
  }

  /** Makes room for `rows` rows in total (grows by doubling, so appends are amortised O(1)). */
  reserve(rows: number): void {
    if (rows <= this.capacityRows) return;
    let capacity = this.capacityRows;
    while (capacity < rows) capacity *= 2;
    const grow = (old: Float32Array) => {
      const next = new Float32Array(capacity * this.rowWidth);
      next.set(old.subarray(0, this.rows * this.rowWidth));
      return next;
    };
    this.keys = this.keys.map(grow);
    this.values = this.values.map(grow);
    this.capacityRows = capacity;
  }

  /** The committed rows of one layer (views, valid until the next append). */
  past(layer: number): { key: Float32Array; value: Float32Array } {
    const n = this.rows * this.rowWidth;
    return { key: this.keys[layer].subarray(0, n), value: this.values[layer].subarray(0, n) };
  }

  /** Appends `count` rows per layer. */
  append(newKeys: Float32Array[], newValues: Float32Array[], count: number): void {
    this.reserve(this.rows + count);
    const at = this.rows * this.rowWidth;
    for (let layer = 0; layer < this.numLayers; layer++) {
      this.keys[layer].set(newKeys[layer].subarray(0, count * this.rowWidth), at);
      this.values[layer].set(newValues[layer].subarray(0, count * this.rowWidth), at);
    }
    this.rows += count;
  }

  clear(): void {
    this.rows = 0;
  }

  /** Keeps the first `rows` rows. */
  truncate(rows: number): void {
    if (!Number.isInteger(rows) || rows < 0 || rows > this.rows) throw new Error(`kv cache: cannot keep ${rows} of ${this.rows} rows`);
    this.rows = rows;
  }
}
