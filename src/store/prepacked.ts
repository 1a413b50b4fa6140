/**
 * The decoder's weights packed for this machine, as the variant's own decoder files.
 *
 * Creating a decoder session is mostly onnxruntime packing its int4/int8 weights into the layout of the CPU's
 * kernels, and the packed copies are fresh memory the size of the weights. onnxruntime can save the optimized
 * graph with the packed copies (`optimizedModelFilePath` with `session.save_external_prepacked_constant_initializers`):
 * one data file holding every original initializer and, after each, its packed blob, keyed by a hash of the packed
 * bytes. A session made from that graph packs again from the originals (it always does), finds a blob with the
 * same hash and uses it memory-mapped instead of its fresh copy: starts are faster and the packed weights are
 * mapped pages, not resident memory (measured on the 3B int4 decoder: 2.7-5.1 s and 0.95 GB peak against
 * 5.9-13 s and 2.9 GB for the session alone). On another CPU, or another onnxruntime, the hashes differ and the
 * session uses its own fresh packs: the same file still loads and computes the same, as a plain conversion.
 *
 * So the packed graph replaces the conversion's plain decoder files (`decoder.onnx`, `decoder.onnx.data`):
 * saved as `decoder.packed.onnx` (+ `.data`), checked to give the plain session's logits bit for bit, then made
 * the manifest's decoder graph, and the plain files deleted. It costs the packed blobs on disk (0.75 bytes per
 * int4 block-32 weight beside the 0.64 of the original; 1 per int8 weight): about 2.2x the decoder's data.
 *
 * onnxruntime 1.30 writes external data of 1 MB or less at unaligned offsets, and a packed blob mapped from an
 * unaligned offset computes garbage (measured on small decoders); every region of the data file is rewritten
 * at a 4096-byte boundary (`realignExternalData`) before the check.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import onnxProto from 'onnx-proto';
import type { Manifest, PackedFor } from './manifest.js';

export type { PackedFor };

const { onnx } = onnxProto;

/** The decoder graph as onnxruntime saved it with its packed weights (its data in `<name>.data`). */
export const PACKED_GRAPH = 'decoder.packed.onnx';

export function thisMachine(onnxruntimeVersion: string): PackedFor {
  return { onnxruntime: onnxruntimeVersion, cpu: os.cpus()[0]?.model ?? 'unknown', cpuFlags: cpuFlags() };
}

export const sameMachine = (a: PackedFor, b: PackedFor) => a.onnxruntime === b.onnxruntime && a.cpu === b.cpu && a.cpuFlags === b.cpuFlags;

/** The CPU's feature flags from /proc/cpuinfo (Linux); elsewhere the model name stands for them. */
function cpuFlags(): string {
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const line = /^flags\s*:\s*(.*)$/m.exec(info)?.[1] ?? '';
    return line.split(/\s+/).filter(Boolean).sort().join(' ');
  } catch {
    return '';
  }
}

/** Whether a variant's weights are ones onnxruntime packs (the quantised dtypes; fp32/fp16 gain nothing). */
export const packable = (manifest: Manifest) => manifest.dtype !== 'fp32' && manifest.dtype !== 'fp16';

/** Room packing needs: the packed graph's data is about 2.2x the plain decoder's, written before the plain goes. */
export function packBytesNeeded(manifest: Manifest): number {
  return Math.ceil(decoderBytes(manifest) * 2.5) + (16 << 20);
}

/** Bytes of the manifest's decoder graph and its data. */
export function decoderBytes(manifest: Manifest): number {
  const graph = manifest.graphs.decoder;
  return manifest.files.filter((f) => f.name === graph || f.name === `${graph}.data`).reduce((s, f) => s + f.size, 0);
}

/** Staging names of a packing in progress (in the variant directory: the same filesystem, renamed into place). */
export function packingStaging(dir: string): { graph: string; raw: string } {
  const tag = `${process.pid}-${Date.now()}`;
  return { graph: path.join(dir, `.packing-${tag}.onnx`), raw: path.join(dir, `.packing-${tag}.raw.onnx`) };
}

/**
 * Rewrites a saved graph's external data so that every region (originals and packed blobs) starts at a
 * 4096-byte boundary: `from` (graph + its data file) to `to` (the graph) and `dataName` (its data, in the same
 * directory). Returns the data file's size.
 */
export function realignExternalData(from: string, to: string, dataName: string): number {
  const model = onnx.ModelProto.decode(fs.readFileSync(from));
  const source = path.join(path.dirname(from), externalLocation(model) ?? `${path.basename(from)}.data`);
  const input = fs.openSync(source, 'r');
  const output = fs.openSync(path.join(path.dirname(to), dataName), 'w');
  let end = 0;
  const copy = (offset: number, length: number): number => {
    const at = Math.ceil(end / 4096) * 4096;
    const buffer = Buffer.allocUnsafe(Math.min(length, 64 << 20));
    for (let done = 0; done < length; ) {
      const n = fs.readSync(input, buffer, 0, Math.min(buffer.length, length - done), offset + done);
      if (n <= 0) throw new Error(`${source}: ends before ${offset + length}`);
      for (let written = 0; written < n; ) written += fs.writeSync(output, buffer, written, n - written, at + done + written);
      done += n;
    }
    end = at + length;
    return at;
  };
  try {
    for (const tensor of model.graph?.initializer ?? []) {
      if (tensor.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) continue;
      const entries = tensor.externalData ?? [];
      const length = Number(entries.find((e) => e.key === 'length')?.value ?? 0);
      for (const entry of entries) {
        if (entry.key === 'location') entry.value = dataName;
        else if (entry.key === 'offset') entry.value = String(copy(Number(entry.value), length));
        else if (entry.key?.startsWith('prepacked')) {
          // "<kernel key>|offset;length;checksum|..." (onnxruntime's own record of a packed blob).
          const [key, ...blobs] = String(entry.value).split('|');
          entry.value = [key, ...blobs.map((blob) => {
            const [offset, blobLength, checksum] = blob.split(';');
            return `${copy(Number(offset), Number(blobLength))};${blobLength};${checksum}`;
          })].join('|');
        }
      }
    }
  } finally {
    fs.closeSync(input);
    fs.closeSync(output);
  }
  fs.writeFileSync(to, onnx.ModelProto.encode(model).finish());
  return end;
}

function externalLocation(model: InstanceType<typeof onnx.ModelProto>): string | undefined {
  for (const tensor of model.graph?.initializer ?? []) {
    const location = tensor.externalData?.find((e) => e.key === 'location')?.value;
    if (location) return String(location);
  }
  return undefined;
}

/** Deletes a file or directory, ignoring failures (a read-only store keeps it). */
export function discard(file: string): void {
  try {
    fs.rmSync(file, { recursive: true, force: true });
  } catch {
    // best effort
  }
}

/** Bit-for-bit equality of two outputs (NaN equal to NaN only if both are). */
export function sameValues(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}
