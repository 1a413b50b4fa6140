import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { cmykToRgb, decodeImage } from '../src/preprocess/decode.js';
import { gifFirstFrameTransparentColour } from '../src/preprocess/gif-transparency.js';
import { DvlError } from '../src/util/errors.js';
import { expected, type Expected, sha256 } from './helpers/pillow-expected.js';

/**
 * Expected pixels: Pillow 9.4's `ImageOps.exif_transpose(Image.open(f)).convert("RGB")` (PIL's decoding plus
 * the EXIF orientation that dvl applies on purpose), stored by scripts/gen-preprocess-fixtures.py as
 * sha256 + sample pixels [x, y, r, g, b].
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-decode-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function pixel(image: { data: Uint8Array; width: number }, x: number, y: number): number[] {
  const p = (y * image.width + x) * 3;
  return Array.from(image.data.subarray(p, p + 3));
}

async function decodeError(input: string | Buffer, name?: string): Promise<DvlError> {
  try {
    await decodeImage(input, { name });
  } catch (e) {
    expect(e).toBeInstanceOf(DvlError);
    return e as DvlError;
  }
  throw new Error('expected decodeImage to fail');
}

describe('decodeImage matches PIL convert("RGB") (+ EXIF orientation)', () => {
  for (const [file, want] of Object.entries(expected.decode as Record<string, Expected>)) {
    it(file, async () => {
      const image = await decodeImage(`fixtures/images/${file}`);
      expect([image.width, image.height]).toEqual([want.width, want.height]);
      expect(want.samples.map(([x, y]) => [x, y, ...pixel(image, x, y)])).toEqual(want.samples);
      expect(sha256(image.data)).toBe(want.sha256);
    });
  }

  it('junk-bytes.jpg only draws a decoder warning, which sharp refuses by default and PIL accepts', async () => {
    await expect(sharp('fixtures/images/junk-bytes.jpg').raw().toBuffer()).rejects.toThrow(/extraneous bytes/);
  });

  it('decodes bytes as well as paths', async () => {
    const image = await decodeImage(fs.readFileSync('fixtures/images/coffee.jpg'));
    expect(sha256(image.data)).toBe(expected.decode['coffee.jpg'].sha256);
  });

  it('the GIF fixture really has transparent pixels (so its PIL comparison means something)', async () => {
    const { data } = await sharp('fixtures/images/anim.gif').raw().toBuffer({ resolveWithObject: true });
    let transparent = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] === 0) transparent++;
    expect(transparent).toBeGreaterThan(10);
  });
});

describe('decodeImage: hand-checkable generated images', () => {
  it('applies EXIF orientation 6: the stored left half ends up on top', async () => {
    // Stored 32x16: left half red, right half blue. Orientation 6 = rotate 90 degrees clockwise to display,
    // which turns the left column into the top row: upright is 16x32, red on top, blue below.
    const w = 32;
    const h = 16;
    const raw = Buffer.alloc(w * h * 3);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) raw.set(x < w / 2 ? [255, 0, 0] : [0, 0, 255], (y * w + x) * 3);
    }
    const file = path.join(tmp, 'orient6.jpg');
    await sharp(raw, { raw: { width: w, height: h, channels: 3 } })
      .jpeg({ quality: 95 })
      .withMetadata({ orientation: 6 })
      .toFile(file);
    expect((await sharp(file).metadata()).orientation).toBe(6);
    const image = await decodeImage(file);
    expect([image.width, image.height]).toEqual([16, 32]);
    const near = (got: number[], want: number[]) => got.every((v, i) => Math.abs(v - want[i]) < 12);
    expect(near(pixel(image, 8, 4), [255, 0, 0])).toBe(true);
    expect(near(pixel(image, 8, 27), [0, 0, 255])).toBe(true);
  });

  it('ignores an embedded (Display P3) ICC profile, as PIL does', async () => {
    // libvips' P3 profile, taken from an image sharp tags with it.
    const tagged = await sharp({ create: { width: 1, height: 1, channels: 3, background: '#ff0000' } })
      .withIccProfile('p3')
      .png()
      .toBuffer();
    const icc = (await sharp(tagged).metadata()).icc!;
    expect(icc.length).toBeGreaterThan(100);
    // Our own PNG: 2x1 saturated pixels (filter 0 rows) with that profile in an iCCP chunk.
    const crcTable = Array.from({ length: 256 }, (_, n) => {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      return c >>> 0;
    });
    const crc32 = (bytes: Buffer) => {
      let c = 0xffffffff;
      for (const b of bytes) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
      return (c ^ 0xffffffff) >>> 0;
    };
    const chunk = (type: string, payload: Buffer) => {
      const body = Buffer.concat([Buffer.from(type, 'latin1'), payload]);
      const head = Buffer.alloc(4);
      head.writeUInt32BE(payload.length);
      const tail = Buffer.alloc(4);
      tail.writeUInt32BE(crc32(body));
      return Buffer.concat([head, body, tail]);
    };
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(2, 0); // width
    ihdr.writeUInt32BE(1, 4); // height
    ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
    const pixels = [0, 250, 10, 20, 30, 240, 40]; // filter byte 0, then two RGB pixels
    const png = Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk('IHDR', ihdr),
      chunk('iCCP', Buffer.concat([Buffer.from('P3\0\0', 'latin1'), zlib.deflateSync(icc)])),
      chunk('IDAT', zlib.deflateSync(Buffer.from(pixels))),
      chunk('IEND', Buffer.alloc(0)),
    ]);
    expect((await sharp(png).metadata()).hasProfile).toBe(true);
    // Colour-managed decoding would move these saturated colours; PIL (and we) keep the stored bytes.
    const managed = Array.from(await sharp(png).removeAlpha().raw().toBuffer());
    expect(managed).not.toEqual([250, 10, 20, 30, 240, 40]);
    expect(Array.from((await decodeImage(png)).data)).toEqual([250, 10, 20, 30, 240, 40]);
  });

  it('drops alpha without compositing', async () => {
    // A fully transparent and a half transparent pixel keep their stored colour.
    const file = path.join(tmp, 'alpha.png');
    const rgba = Buffer.from([10, 20, 30, 0, 200, 100, 50, 128]);
    await sharp(rgba, { raw: { width: 2, height: 1, channels: 4 } }).png().toFile(file);
    expect(Array.from((await decodeImage(file)).data)).toEqual([10, 20, 30, 200, 100, 50]);
  });

  it('expands greyscale to three equal channels', async () => {
    const file = path.join(tmp, 'grey.png');
    const grey = Buffer.from([0, 77, 255]);
    await sharp(grey, { raw: { width: 3, height: 1, channels: 1 } }).toColourspace('b-w').png().toFile(file);
    expect(Array.from((await decodeImage(file)).data)).toEqual([0, 0, 0, 77, 77, 77, 255, 255, 255]);
  });

  it('16-bit grey is clipped to 255 like PIL (mode "I" -> RGB), not scaled', async () => {
    const file = path.join(tmp, 'grey16.png');
    const values = Uint16Array.from([100, 255, 256, 65535]);
    // sharp takes the sample depth from the typed array's type.
    await sharp(values, { raw: { width: 4, height: 1, channels: 1 } })
      .toColourspace('grey16')
      .png()
      .toFile(file);
    expect((await sharp(file).metadata()).depth).toBe('ushort');
    const rgb = Array.from((await decodeImage(file)).data);
    expect(rgb).toEqual([100, 100, 100, 255, 255, 255, 255, 255, 255, 255, 255, 255]);
  });

  it('16-bit RGB keeps the high byte', async () => {
    const file = path.join(tmp, 'rgb16.png');
    const values = Uint16Array.from([0x1234, 0xabff, 0x00ff]);
    await sharp(values, { raw: { width: 1, height: 1, channels: 3 } })
      .toColourspace('rgb16')
      .png()
      .toFile(file);
    expect(Array.from((await decodeImage(file)).data)).toEqual([0x12, 0xab, 0x00]);
  });

  it('takes the first frame of an animated GIF', async () => {
    // Two 4x3 frames: red, then blue.
    const raw = Buffer.alloc(4 * 3 * 2 * 3);
    for (let i = 0; i < 12; i++) {
      raw.set([255, 0, 0], i * 3);
      raw.set([0, 0, 255], (12 + i) * 3);
    }
    const file = path.join(tmp, 'anim.gif');
    await sharp(raw, { raw: { width: 4, height: 6, channels: 3, pageHeight: 3 } }).gif().toFile(file);
    expect((await sharp(file).metadata()).pages).toBe(2);
    const image = await decodeImage(file);
    expect([image.width, image.height]).toEqual([4, 3]);
    for (let y = 0; y < 3; y++) for (let x = 0; x < 4; x++) expect(pixel(image, x, y)).toEqual([255, 0, 0]);
  });
});

describe('cmykToRgb (PIL formula)', () => {
  it('computes (255 - k) - (x * (255 - k) + 128 + ...) >> 8 per channel', () => {
    // [c, m, y, k] -> rgb. nk = 255 - k; MULDIV255(a, nk) = (t + (t >> 8)) >> 8 with t = a * nk + 128.
    // (128, 0, 255, 0): nk = 255; t = 32768 -> (32768 + 128) >> 8 = 128 -> 127; 0 -> 255; 255 -> 0.
    // (0, 255, 10, 100): nk = 155; 0 -> 155; t = 39653 -> (39653 + 154) >> 8 = 155 -> 0;
    //   t = 1678 -> (1678 + 6) >> 8 = 6 -> 149.
    const cmyk = Uint8Array.from([128, 0, 255, 0, 0, 255, 10, 100, 0, 0, 0, 255]);
    expect(Array.from(cmykToRgb(cmyk, 3, 4))).toEqual([127, 255, 0, 155, 0, 149, 0, 0, 0]);
  });
});

describe('gifFirstFrameTransparentColour', () => {
  // Hand-built GIF prefix: header, 1x1 screen with a 2-entry global table, a graphic control extension with
  // transparent index 1, then an image descriptor (pixel data is never read).
  const header = [...Buffer.from('GIF89a'), 1, 0, 1, 0, 0x80, 0, 0];
  const globalTable = [10, 20, 30, 40, 50, 60];
  const gce = [0x21, 0xf9, 4, 0x01, 0, 0, 1, 0];
  const descriptor = (packed: number) => [0x2c, 0, 0, 0, 0, 1, 0, 1, 0, packed];

  it('uses the global table when the frame has none', () => {
    const gif = Uint8Array.from([...header, ...globalTable, ...gce, ...descriptor(0)]);
    expect(gifFirstFrameTransparentColour(gif)).toEqual([40, 50, 60]);
  });

  it('prefers the local table and skips other extensions', () => {
    const comment = [0x21, 0xfe, 3, 65, 66, 67, 0];
    const gif = Uint8Array.from([...header, ...globalTable, ...comment, ...gce, ...descriptor(0x80), 1, 2, 3, 4, 5, 6]);
    expect(gifFirstFrameTransparentColour(gif)).toEqual([4, 5, 6]);
  });

  it('returns undefined without transparency or for other formats', () => {
    const opaque = [0x21, 0xf9, 4, 0x00, 0, 0, 1, 0];
    const gif = Uint8Array.from([...header, ...globalTable, ...opaque, ...descriptor(0)]);
    expect(gifFirstFrameTransparentColour(gif)).toBeUndefined();
    expect(gifFirstFrameTransparentColour(Buffer.from('\x89PNG\r\n\x1a\n0000000000'))).toBeUndefined();
  });
});

describe('decodeImage errors: one line, input kind, naming the file', () => {
  it('missing file', async () => {
    const missing = path.join(tmp, 'nope.jpg');
    const e = await decodeError(missing);
    expect(e.kind).toBe('input');
    expect(e.message).toBe(`image not found: ${missing}`);
  });

  it('directory', async () => {
    const e = await decodeError(tmp);
    expect(e.message).toBe(`${tmp} is a directory, not an image`);
  });

  it('corrupt (truncated) JPEG', async () => {
    const e = await decodeError('fixtures/images/truncated.jpg');
    expect(e.kind).toBe('input');
    expect(e.message).toMatch(/^cannot decode image fixtures\/images\/truncated\.jpg: /);
    expect(e.message).not.toContain('\n');
  });

  it('not an image at all, and an empty file', async () => {
    const text = path.join(tmp, 'notes.png');
    fs.writeFileSync(text, 'hello, not a picture\n');
    expect((await decodeError(text)).message).toMatch(/^cannot decode image .*notes\.png: .*unsupported image format/);
    const empty = path.join(tmp, 'empty.jpg');
    fs.writeFileSync(empty, '');
    expect((await decodeError(empty)).message).toBe(`cannot decode image ${empty}: the file is empty`);
  });

  it('bad bytes are named by the given name', async () => {
    const e = await decodeError(Buffer.from('garbage'), 'clipboard.png');
    expect(e.message).toMatch(/^cannot decode image clipboard\.png: /);
  });
});
