/**
 * Host-side layout of the Qwen2.5-VL vision tower (spec §3): the window order of the patches, the 2-D rotary
 * tables and the windows' gather/scatter indices and padding mask, computed once per image and fed to the vision graph
 * (models/qwen25vl/vision-graph.ts).
 *
 * Orders used below:
 * - processor order: the rows of the image processor's patch matrix. Each merged unit (a 2x2 block of
 *   patches for spatial_merge_size 2) is `unit = s*s` consecutive rows; units are in raster order of the merged
 *   grid, frame by frame.
 * - window order: merged units regrouped window by window (windows of `windowSize/s/patchSize` merged units per
 *   side, row-major windows, row-major units inside a window; windows at the bottom/right edge are partial).
 *   The tower runs in this order; the merger output (one row per merged unit) is still in it and `reverseIndex`
 *   brings it back to raster order.
 *
 * Pure functions over typed arrays: no onnxruntime types here.
 */
import type { VisionConfig } from './types.js';
import { inputError, modelError } from '../../util/errors.js';

export type GridThw = [t: number, h: number, w: number];

export interface VisionLayout {
  gridThw: GridThw;
  /** Rows of the patch matrix: t*h*w. */
  numPatches: number;
  /** Rows per merged unit (spatial_merge_size^2). */
  mergeUnit: number;
  headDim: number;
  /** For each merged unit in window order, its index in processor (raster) order. Length numPatches/mergeUnit. */
  windowIndex: Int32Array;
  /** Inverse permutation of windowIndex: for each merged unit in raster order, its position in window order. */
  reverseIndex: Int32Array;
  /** For each row of the window-ordered sequence, the row of the processor's patch matrix it comes from. */
  patchOrder: Int32Array;
  /** Window id of each row of the window-ordered sequence (windows numbered in order, empty ones skipped). */
  windowOfRow: Int32Array;
  /** Row boundaries of the windows in window order: [0, ..., numPatches] (the reference's cu_window_seqlens). */
  cuWindowSeqlens: Int32Array;
  /** Row boundaries of the frames: [0, h*w, 2*h*w, ...] (full-attention blocks attend within a frame). */
  cuSeqlens: Int32Array;
  /** cos of the rotary angles, [numPatches, headDim], rows in window order. */
  rotaryCos: Float32Array;
  /** sin of the rotary angles, [numPatches, headDim], rows in window order. */
  rotarySin: Float32Array;
  /** How the windowed blocks cut the sequence into windows (see `windowBatch`). */
  windowBatch(): WindowBatch;
}

/**
 * The windowed blocks attend window by window: the rows of each window are gathered into a batch of `windows`
 * windows of `maxRows` rows (a partial window is padded with row 0, and its padding keys are masked out), the
 * attention runs on that batch, and `slots` scatters the results back to sequence order. This is the same
 * attention as an N x N mask that is 0 inside a window, at (window size / N) of the cost.
 */
export interface WindowBatch {
  windows: number;
  maxRows: number;
  /** [windows * maxRows]: the sequence row in each slot (padding slots: 0). */
  rows: BigInt64Array;
  /** [numPatches]: the slot of each sequence row. */
  slots: BigInt64Array;
  /** [windows * maxRows * maxRows]: additive bias per window, 0 for a real key, -Infinity for a padding key. */
  bias: Float32Array;
}

/** Merged units per window side: window_size / spatial_merge_size / patch_size (4 for the released models). */
export function windowUnits(vision: VisionConfig): number {
  const units = vision.windowSize / vision.spatialMergeSize / vision.patchSize;
  if (!Number.isInteger(units) || units < 1) {
    throw modelError(
      `vision window_size ${vision.windowSize} is not a positive multiple of spatial_merge_size*patch_size (${vision.spatialMergeSize * vision.patchSize})`,
    );
  }
  return units;
}

/** Head width of the vision attention; the 2-D rotary needs it divisible by 4. */
export function visionHeadDim(vision: VisionConfig): number {
  const headDim = vision.hiddenSize / vision.numHeads;
  if (!Number.isInteger(headDim) || headDim % 4 !== 0) {
    throw modelError(`vision hidden_size ${vision.hiddenSize} / num_heads ${vision.numHeads} is not a multiple of 4`);
  }
  return headDim;
}

/** Values per patch row: in_channels * temporal_patch_size * patch_size^2 (1176). */
export function patchWidth(vision: VisionConfig): number {
  return vision.inChannels * vision.temporalPatchSize * vision.patchSize * vision.patchSize;
}

function checkGrid(gridThw: GridThw, vision: VisionConfig): void {
  const [t, h, w] = gridThw;
  const s = vision.spatialMergeSize;
  for (const [label, value] of [['t', t], ['h', h], ['w', w]] as const) {
    if (!Number.isInteger(value) || value < 1) throw inputError(`image grid ${label}=${value} is not a positive integer`);
  }
  if (h % s !== 0 || w % s !== 0) {
    throw inputError(`image grid ${h}x${w} patches is not a multiple of the spatial merge size ${s}`);
  }
}

/**
 * Rotary inverse frequencies as torch computes them in float32:
 * inv_freq[k] = 1 / 10000^(fround(2k/dim) ) with dim = headDim/2, every step rounded to float32.
 */
export function rotaryInvFreq(headDim: number): Float32Array {
  const dim = headDim / 2;
  const out = new Float32Array(dim / 2);
  for (let k = 0; k < out.length; k++) {
    const exponent = Math.fround((2 * k) / dim);
    out[k] = Math.fround(1 / Math.fround(Math.pow(10000, exponent)));
  }
  return out;
}

export function visionLayout(gridThw: GridThw, vision: VisionConfig): VisionLayout {
  checkGrid(gridThw, vision);
  const [t, h, w] = gridThw;
  const s = vision.spatialMergeSize;
  const unit = s * s;
  const headDim = visionHeadDim(vision);
  const ws = windowUnits(vision);
  const mergedH = h / s;
  const mergedW = w / s;
  const unitsPerFrame = mergedH * mergedW;
  const numUnits = t * unitsPerFrame;
  const numPatches = numUnits * unit;

  // Window order of the merged units, and the row boundaries of the windows.
  const windowIndex = new Int32Array(numUnits);
  const windowsH = Math.ceil(mergedH / ws);
  const windowsW = Math.ceil(mergedW / ws);
  const cuWindow: number[] = [0];
  let next = 0;
  for (let frame = 0; frame < t; frame++) {
    for (let wy = 0; wy < windowsH; wy++) {
      for (let wx = 0; wx < windowsW; wx++) {
        const rowEnd = Math.min((wy + 1) * ws, mergedH);
        const colEnd = Math.min((wx + 1) * ws, mergedW);
        for (let y = wy * ws; y < rowEnd; y++) {
          for (let x = wx * ws; x < colEnd; x++) windowIndex[next++] = frame * unitsPerFrame + y * mergedW + x;
        }
        cuWindow.push(next * unit);
      }
    }
  }

  const reverseIndex = new Int32Array(numUnits);
  for (let p = 0; p < numUnits; p++) reverseIndex[windowIndex[p]] = p;

  const patchOrder = new Int32Array(numPatches);
  for (let row = 0; row < numPatches; row++) {
    patchOrder[row] = windowIndex[Math.floor(row / unit)] * unit + (row % unit);
  }

  const cuWindowSeqlens = Int32Array.from(cuWindow);
  const windowOfRow = new Int32Array(numPatches);
  for (let win = 0; win + 1 < cuWindowSeqlens.length; win++) windowOfRow.fill(win, cuWindowSeqlens[win], cuWindowSeqlens[win + 1]);

  const cuSeqlens = Int32Array.from({ length: t + 1 }, (_, i) => i * h * w);

  // Rotary: a patch at (row, col) of its frame gets angles [row*inv_freq, col*inv_freq] (headDim/2 values),
  // duplicated to headDim, each product rounded to float32 as torch does.
  const invFreq = rotaryInvFreq(headDim);
  const quarter = invFreq.length;
  const rotaryCos = new Float32Array(numPatches * headDim);
  const rotarySin = new Float32Array(numPatches * headDim);
  for (let row = 0; row < numPatches; row++) {
    const [pr, pc] = patchPosition(patchOrder[row], h, w, s);
    const base = row * headDim;
    for (let k = 0; k < quarter; k++) {
      const angles = [Math.fround(pr * invFreq[k]), Math.fround(pc * invFreq[k])];
      for (let half = 0; half < 2; half++) {
        const cos = Math.cos(angles[half]);
        const sin = Math.sin(angles[half]);
        for (const copy of [0, headDim / 2]) {
          rotaryCos[base + copy + half * quarter + k] = cos;
          rotarySin[base + copy + half * quarter + k] = sin;
        }
      }
    }
  }

  return {
    gridThw: [t, h, w],
    numPatches,
    mergeUnit: unit,
    headDim,
    windowIndex,
    reverseIndex,
    patchOrder,
    windowOfRow,
    cuWindowSeqlens,
    cuSeqlens,
    rotaryCos,
    rotarySin,
    windowBatch: () => windowBatch(cuWindowSeqlens, numPatches),
  };
}

/** (row, col) in the patch grid of its frame for a row of the processor's patch matrix. */
function patchPosition(processorRow: number, h: number, w: number, s: number): [number, number] {
  const unit = s * s;
  const mergedW = w / s;
  const unitInFrame = Math.floor(processorRow / unit) % ((h / s) * mergedW);
  const within = processorRow % unit;
  const row = Math.floor(unitInFrame / mergedW) * s + Math.floor(within / s);
  const col = (unitInFrame % mergedW) * s + (within % s);
  return [row, col];
}

function windowBatch(cuWindowSeqlens: Int32Array, n: number): WindowBatch {
  const windows = cuWindowSeqlens.length - 1;
  let maxRows = 0;
  for (let win = 0; win < windows; win++) maxRows = Math.max(maxRows, cuWindowSeqlens[win + 1] - cuWindowSeqlens[win]);
  const rows = new BigInt64Array(windows * maxRows);
  const slots = new BigInt64Array(n);
  const bias = new Float32Array(windows * maxRows * maxRows);
  for (let win = 0; win < windows; win++) {
    const start = cuWindowSeqlens[win];
    const size = cuWindowSeqlens[win + 1] - start;
    for (let i = 0; i < size; i++) {
      rows[win * maxRows + i] = BigInt(start + i);
      slots[start + i] = BigInt(win * maxRows + i);
    }
    // Every query row of the window (padding rows too, whose results are dropped) sees the window's real keys.
    for (let q = 0; q < maxRows; q++) bias.fill(-Infinity, (win * maxRows + q) * maxRows + size, (win * maxRows + q + 1) * maxRows);
  }
  return { windows, maxRows, rows, slots, bias };
}

/** A tensor as plain data: the runtime wraps it in an onnxruntime tensor. */
export interface PlainTensor<T extends Float32Array | BigInt64Array = Float32Array> {
  data: T;
  dims: number[];
}

export interface VisionFeeds {
  feeds: {
    pixel_patches: PlainTensor;
    rotary_cos: PlainTensor;
    rotary_sin: PlainTensor;
    window_rows: PlainTensor<BigInt64Array>;
    window_slots: PlainTensor<BigInt64Array>;
    window_bias: PlainTensor;
  };
  /** Rows of image_embeds ([numPatches/mergeUnit, width], window order) put back in raster order of the merged grid. */
  reverse: (embeds: Float32Array, width: number) => Float32Array;
  layout: VisionLayout;
}

/**
 * The vision graph's inputs for one image: `patches` is the processor's patch matrix [t*h*w, 1176] in processor
 * order. Only single-frame inputs (images) are supported: the graph's full-attention blocks attend to every row,
 * which is the reference's behaviour for t = 1 only (it attends within each frame).
 */
export function visionFeeds(patches: Float32Array, gridThw: GridThw, vision: VisionConfig): VisionFeeds {
  const layout = visionLayout(gridThw, vision);
  if (layout.gridThw[0] !== 1) throw inputError(`vision input with ${gridThw[0]} frames: only single images (t = 1) are supported`);
  const width = patchWidth(vision);
  const n = layout.numPatches;
  if (patches.length !== n * width) {
    throw inputError(`image patches hold ${patches.length} values, expected ${n}x${width} for grid ${gridThw.join('x')}`);
  }
  const ordered = new Float32Array(n * width);
  for (let row = 0; row < n; row++) {
    const from = layout.patchOrder[row] * width;
    ordered.set(patches.subarray(from, from + width), row * width);
  }
  const hd = layout.headDim;
  const units = n / layout.mergeUnit;
  const windows = layout.windowBatch();
  const reverse = (embeds: Float32Array, embedWidth: number): Float32Array => {
    if (embeds.length !== units * embedWidth) {
      throw modelError(`vision output holds ${embeds.length} values, expected ${units}x${embedWidth}`);
    }
    const out = new Float32Array(embeds.length);
    for (let m = 0; m < units; m++) {
      const from = layout.reverseIndex[m] * embedWidth;
      out.set(embeds.subarray(from, from + embedWidth), m * embedWidth);
    }
    return out;
  };
  return {
    feeds: {
      pixel_patches: { data: ordered, dims: [n, width] },
      rotary_cos: { data: layout.rotaryCos, dims: [n, hd] },
      rotary_sin: { data: layout.rotarySin, dims: [n, hd] },
      window_rows: { data: windows.rows, dims: [windows.windows, windows.maxRows] },
      window_slots: { data: windows.slots, dims: [n] },
      window_bias: { data: windows.bias, dims: [windows.windows, 1, windows.maxRows, windows.maxRows] },
    },
    reverse,
    layout,
  };
}
