/**
 * The colour PIL gives the transparent pixels of a GIF's first frame.
 *
 * PIL opens a GIF's first frame as a palette image and `convert("RGB")` ignores transparency, so a
 * transparent pixel becomes whatever colour the palette holds at the transparent index. libvips instead
 * returns RGBA with those pixels set to (0, 0, 0, 0). To match PIL we read, from the GIF stream itself, the
 * transparent index of the first frame (its Graphic Control Extension) and the colour table that frame
 * uses (its local table, else the global one).
 *
 * Only the block structure before the first image is walked; nothing is decompressed.
 */

export type Rgb = [number, number, number];

/** Returns undefined when the data is not a GIF, is malformed, or its first frame has no transparency. */
export function gifFirstFrameTransparentColour(bytes: Uint8Array): Rgb | undefined {
  const signature = String.fromCharCode(...bytes.subarray(0, 6));
  if (signature !== 'GIF87a' && signature !== 'GIF89a') return undefined;
  if (bytes.length < 13) return undefined;

  // Logical screen descriptor: width(2) height(2) packed(1) background(1) aspect(1).
  const screenPacked = bytes[10];
  let pos = 13;
  let globalTable: Uint8Array | undefined;
  if (screenPacked & 0x80) {
    const size = 3 * (1 << ((screenPacked & 0x07) + 1));
    globalTable = bytes.subarray(pos, pos + size);
    pos += size;
  }

  let transparentIndex: number | undefined;
  while (pos < bytes.length) {
    const introducer = bytes[pos];
    if (introducer === 0x21) {
      // Extension: label, then data sub-blocks (length byte + data) ending with a 0-length block.
      const label = bytes[pos + 1];
      pos += 2;
      if (label === 0xf9 && bytes[pos] >= 4) {
        // Graphic Control Extension: packed(1) delay(2) transparent index(1); bit 0 of packed = has transparency.
        const packed = bytes[pos + 1];
        transparentIndex = packed & 0x01 ? bytes[pos + 4] : undefined;
      }
      while (pos < bytes.length && bytes[pos] !== 0) pos += bytes[pos] + 1;
      pos += 1;
    } else if (introducer === 0x2c) {
      // Image descriptor: left(2) top(2) width(2) height(2) packed(1), then an optional local colour table.
      if (transparentIndex === undefined) return undefined;
      const packed = bytes[pos + 9];
      let table = globalTable;
      if (packed & 0x80) {
        const size = 3 * (1 << ((packed & 0x07) + 1));
        table = bytes.subarray(pos + 10, pos + 10 + size);
      }
      const at = transparentIndex * 3;
      // An index past the end of the table (a broken file) is taken as black.
      if (!table || at + 2 >= table.length) return [0, 0, 0];
      return [table[at], table[at + 1], table[at + 2]];
    } else {
      return undefined; // trailer (0x3b) or garbage before any image
    }
  }
  return undefined;
}
