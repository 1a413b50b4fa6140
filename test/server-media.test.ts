import { execFileSync } from 'node:child_process';
import dns from 'node:dns/promises';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import zlib from 'node:zlib';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkImageLimits,
  DEFAULT_MEDIA_POLICY,
  isPrivateAddress,
  loadImageReference,
  type MediaPolicy,
} from '../src/server/media.js';
import { DvlError } from '../src/util/errors.js';

// Every test here is local and quick; a hang is a bug, not a slow machine.
const QUICK = { timeout: 5000 };

let png: Buffer;

beforeAll(async () => {
  png = await sharp({ create: { width: 4, height: 3, channels: 3, background: '#f80' } })
    .png()
    .toBuffer();
});

/** Resolves to the input error a promise rejects with, failing the test if it resolves or rejects otherwise. */
async function inputErrorOf(promise: Promise<unknown>): Promise<DvlError> {
  const error = await promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DvlError);
  expect((error as DvlError).kind).toBe('input');
  expect((error as DvlError).message).not.toContain('\n');
  return error as DvlError;
}

function policy(overrides: Partial<MediaPolicy> = {}): MediaPolicy {
  return { ...DEFAULT_MEDIA_POLICY, allowRemote: false, allowPrivate: false, ...overrides };
}

// ---------------------------------------------------------------------------------------------------------

describe('data: URLs and base64', QUICK, () => {
  it('decodes an image data: URL, whitespace and case notwithstanding', async () => {
    const b64 = png.toString('base64');
    expect(await loadImageReference(`data:image/png;base64,${b64}`, policy())).toEqual(png);
    const wrapped = b64.replace(/(.{16})/g, '$1\r\n ');
    expect(await loadImageReference(`  DATA:Image/PNG;BASE64,${wrapped}\n`, policy())).toEqual(png);
    expect(await loadImageReference(`data:application/octet-stream;base64,${b64}`, policy())).toEqual(png);
    expect(await loadImageReference(`data:image/jpeg;charset=x;base64,${b64}`, policy())).toEqual(png);
  });

  it('refuses data: URLs that are not base64 images', async () => {
    const b64 = png.toString('base64');
    expect((await inputErrorOf(loadImageReference(`data:text/plain;base64,${b64}`, policy()))).message).toBe(
      'image: data: URL has type text/plain, not an image',
    );
    expect((await inputErrorOf(loadImageReference(`data:;base64,${b64}`, policy()))).message).toMatch(/\(none\)/);
    expect((await inputErrorOf(loadImageReference(`data:image/;base64,${b64}`, policy()))).message).toMatch(
      /not an image/,
    );
    expect((await inputErrorOf(loadImageReference('data:image/png,%89PNG', policy()))).message).toBe(
      'image: data: URL is not base64-encoded',
    );
    expect((await inputErrorOf(loadImageReference('data:image/png;base64', policy()))).message).toMatch(/no comma/);
  });

  it.each([
    ['a character outside the alphabet', 'iVBORw0K*GgoAAAA'],
    ['URL-safe characters', 'iVBORw0K-GgoAAA_'],
    ['padding in the middle', 'iVBO=w0KGgoAAAA'],
    ['too much padding', 'iVBORw0KGgo==='],
    ['padding that does not complete a group', 'iVBORw0KGg=='.slice(1)],
    ['a lone last character', 'iVBORw0KG'],
    ['a percent-encoded payload', 'iVBORw0KGgo%3D'],
  ])('refuses invalid base64: %s', async (_name, payload) => {
    const error = await inputErrorOf(loadImageReference(`data:image/png;base64,${payload}`, policy(), { label: 'image 2' }));
    expect(error.message).toBe('image 2: invalid base64');
  });

  it('accepts base64 without padding', async () => {
    expect(await loadImageReference('data:image/png;base64,aGk', policy())).toEqual(Buffer.from('hi'));
  });

  it('refuses a payload that decodes to more than maxBytes, counting before decoding', async () => {
    const ten = Buffer.alloc(10, 7).toString('base64');
    const eleven = Buffer.alloc(11, 7).toString('base64');
    expect(await loadImageReference(`data:image/png;base64,${ten}`, policy({ maxBytes: 10 }))).toHaveLength(10);
    expect((await inputErrorOf(loadImageReference(`data:image/png;base64,${eleven}`, policy({ maxBytes: 10 })))).message).toBe(
      'image: larger than 10 bytes',
    );
    // Oversized and not even base64: refused by its size alone, without scanning or decoding it.
    const huge = '*'.repeat(4_000_000);
    expect((await inputErrorOf(loadImageReference(`data:image/png;base64,${huge}`, policy({ maxBytes: 1000 })))).message).toMatch(
      /larger than 1000 bytes/,
    );
  });

  it('decodes bare base64 (Ollama images) and data: URLs given there', async () => {
    const b64 = png.toString('base64');
    expect(await loadImageReference(b64, policy(), { bareBase64: true })).toEqual(png);
    expect(await loadImageReference(`data:image/png;base64,${b64}`, policy(), { bareBase64: true })).toEqual(png);
    const error = await inputErrorOf(loadImageReference('this is not base64!', policy(), { bareBase64: true, label: 'images[0]' }));
    expect(error.message).toBe('images[0]: invalid base64');
    expect((await inputErrorOf(loadImageReference('   ', policy(), { bareBase64: true }))).message).toMatch(/empty/);
  });

  it('treats bare base64 as a path unless told otherwise (and paths are off by default)', async () => {
    const error = await inputErrorOf(loadImageReference(png.toString('base64'), policy()));
    expect(error.message).toBe('image: local image paths are disabled (start dvl serve with --media-dir DIR)');
  });

  it('refuses other URL schemes', async () => {
    for (const ref of ['ftp://127.0.0.1/cat.png', 'javascript:alert(1)', 'gopher://127.0.0.1/', 'blob:abc']) {
      expect((await inputErrorOf(loadImageReference(ref, policy({ allowRemote: true })))).message).toMatch(
        /^image: unsupported URL scheme [a-z]+:$/,
      );
    }
  });

  it('rejects at once when the signal is already aborted', async () => {
    const reason = new Error('gone');
    await expect(
      loadImageReference(`data:image/png;base64,aGk`, policy(), { signal: AbortSignal.abort(reason) }),
    ).rejects.toBe(reason);
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('remote images', QUICK, () => {
  let server: http.Server;
  let base: string;
  let connections = 0;
  const seenHeaders: http.IncomingHttpHeaders[] = [];

  function route(request: http.IncomingMessage, response: http.ServerResponse): void {
    const url = new URL(request.url ?? '/', 'http://test');
    const redirect = (location: string, headers: http.OutgoingHttpHeaders = {}) => {
      response.writeHead(302, { location, ...headers });
      response.end();
    };
    const chain = /^\/chain\/(\d+)$/.exec(url.pathname);
    if (chain) {
      const n = Number(chain[1]);
      return n === 0 ? void response.end(png) : redirect(`/chain/${n - 1}`);
    }
    switch (url.pathname) {
      case '/image.png':
        response.writeHead(200, { 'content-type': 'image/png', 'content-length': png.length });
        return void response.end(png);
      case '/redirect':
        return redirect('image.png');
      case '/redirect-absolute':
        return redirect(`${base}/image.png`);
      case '/to-private':
        return redirect('http://10.0.0.1:9/image.png');
      case '/to-mapped':
        return redirect('http://[::ffff:192.168.1.1]:9/image.png');
      case '/to-ftp':
        return redirect('ftp://127.0.0.1/image.png');
      case '/to-nowhere':
        response.writeHead(302);
        return void response.end();
      case '/missing':
        response.writeHead(404);
        return void response.end('not found');
      case '/huge-declared':
        // Says it is big, then sends a little and stalls: the client must not wait to count.
        response.writeHead(200, { 'content-length': 100_000 });
        return void response.write(Buffer.alloc(10));
      case '/huge-chunked':
        response.writeHead(200);
        for (let i = 0; i < 4; i++) response.write(Buffer.alloc(1024, i));
        return void response.end();
      case '/truncated':
        response.writeHead(200, { 'content-length': 1000 });
        response.write(Buffer.alloc(10));
        return void setTimeout(() => request.socket.destroy(), 20);
      case '/gzip':
        response.writeHead(200, { 'content-encoding': 'gzip' });
        return void response.end(zlib.gzipSync(png));
      case '/slow':
        return; // never answers
      case '/slow-body':
        response.writeHead(200, { 'content-length': 1000 });
        return void response.write(Buffer.alloc(10)); // and never finishes
      case '/redirect-slow':
        return redirect('/slow');
      case '/cookie-redirect':
        return redirect('/headers', { 'set-cookie': 'session=secret; Path=/' });
      case '/headers':
        seenHeaders.push(request.headers);
        return void response.end(JSON.stringify(request.headers));
      default:
        response.writeHead(500);
        response.end();
    }
  }

  beforeAll(async () => {
    server = http.createServer(route);
    server.on('connection', () => connections++);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const open = (overrides: Partial<MediaPolicy> = {}) =>
    policy({ allowRemote: true, allowPrivate: true, maxBytes: 2000, timeoutMs: 2000, ...overrides });
  // The test server can only be on loopback: allow exactly its address, keep every other private one refused.
  const onlyTestServer = (address: string) => address !== '127.0.0.1' && isPrivateAddress(address);

  it('fetches an image, following relative and absolute redirects', async () => {
    expect(await loadImageReference(`${base}/image.png`, open())).toEqual(png);
    expect(await loadImageReference(`${base}/redirect`, open())).toEqual(png);
    expect(await loadImageReference(`${base}/redirect-absolute`, open())).toEqual(png);
  });

  it('refuses remote URLs when they are disabled, without connecting', async () => {
    const before = connections;
    const error = await inputErrorOf(loadImageReference(`${base}/image.png`, open({ allowRemote: false }), { label: 'image_url' }));
    expect(error.message).toBe('image_url: remote image URLs are disabled (start dvl serve with --allow-remote-images)');
    expect(connections).toBe(before);
  });

  it('refuses the loopback server without allowPrivate, by literal address and by name, without connecting', async () => {
    const before = connections;
    const port = (server.address() as AddressInfo).port;
    const literal = await inputErrorOf(loadImageReference(`${base}/image.png`, open({ allowPrivate: false })));
    expect(literal.message).toBe('image: 127.0.0.1 is a private address');
    const byName = await inputErrorOf(loadImageReference(`http://localhost:${port}/image.png`, open({ allowPrivate: false })));
    expect(byName.message).toMatch(/^image: (127\.0\.0\.1|::1) is a private address$/);
    // WHATWG URL parsing turns these spellings into 127.0.0.1 / an IPv6 literal; all are refused.
    for (const host of ['2130706433', '0x7f.1', '[::ffff:127.0.0.1]', '[::1]', '0.0.0.0']) {
      const error = await inputErrorOf(loadImageReference(`http://${host}:${port}/image.png`, open({ allowPrivate: false })));
      expect(error.message).toMatch(/is a private address$/);
    }
    expect(connections).toBe(before);
  });

  it('connects only to allowed addresses among those a name resolves to', async () => {
    const port = (server.address() as AddressInfo).port;
    const addresses = await dns.lookup('localhost', { all: true });
    if (!addresses.some(({ address }) => address === '127.0.0.1')) return; // this machine's localhost is not 127.0.0.1
    const fetched = await loadImageReference(`http://localhost:${port}/image.png`, open({ allowPrivate: false }), {
      isBlockedAddress: onlyTestServer,
    });
    expect(fetched).toEqual(png);
  });

  it('re-checks the address and scheme of every redirect', async () => {
    const guarded = { isBlockedAddress: onlyTestServer };
    const toPrivate = await inputErrorOf(loadImageReference(`${base}/to-private`, open({ allowPrivate: false }), guarded));
    expect(toPrivate.message).toBe('image: 10.0.0.1 is a private address');
    const toMapped = await inputErrorOf(loadImageReference(`${base}/to-mapped`, open({ allowPrivate: false }), guarded));
    expect(toMapped.message).toBe('image: ::ffff:c0a8:101 is a private address');
    const toFtp = await inputErrorOf(loadImageReference(`${base}/to-ftp`, open()));
    expect(toFtp.message).toBe('image: redirect to unsupported URL scheme ftp:');
    const nowhere = await inputErrorOf(loadImageReference(`${base}/to-nowhere`, open()));
    expect(nowhere.message).toMatch(/answered 302 without a Location$/);
  });

  it('follows at most maxRedirects redirects', async () => {
    expect(await loadImageReference(`${base}/chain/3`, open({ maxRedirects: 3 }))).toEqual(png);
    const error = await inputErrorOf(loadImageReference(`${base}/chain/4`, open({ maxRedirects: 3 })));
    expect(error.message).toBe('image: more than 3 redirects');
    expect((await inputErrorOf(loadImageReference(`${base}/redirect`, open({ maxRedirects: 0 })))).message).toBe(
      'image: more than 0 redirects',
    );
  });

  it('names the status of an answer that is not 2xx', async () => {
    const error = await inputErrorOf(loadImageReference(`${base}/missing`, open(), { label: 'remote image' }));
    expect(error.message).toBe(`remote image: ${base}/missing answered 404`);
  });

  it('caps the body size, from Content-Length and while streaming', async () => {
    const started = Date.now();
    const declared = await inputErrorOf(loadImageReference(`${base}/huge-declared`, open({ timeoutMs: 3000 })));
    expect(declared.message).toBe('image: remote image is larger than 2000 bytes');
    expect(Date.now() - started).toBeLessThan(1000); // refused from the header, not after the stall
    const streamed = await inputErrorOf(loadImageReference(`${base}/huge-chunked`, open()));
    expect(streamed.message).toBe('image: remote image is larger than 2000 bytes');
  });

  it('refuses a truncated body and a compressed one', async () => {
    const truncated = await inputErrorOf(loadImageReference(`${base}/truncated`, open()));
    expect(truncated.message).toMatch(/closed the connection mid-image|cannot fetch .*: aborted/);
    const gzip = await inputErrorOf(loadImageReference(`${base}/gzip`, open()));
    expect(gzip.message).toMatch(/sent the image with Content-Encoding gzip$/);
  });

  it('times out, counting all hops together', async () => {
    for (const route of ['/slow', '/slow-body', '/redirect-slow']) {
      const started = Date.now();
      const error = await inputErrorOf(loadImageReference(`${base}${route}`, open({ timeoutMs: 300 })));
      expect(error.message).toBe('image: remote image timed out after 300 ms');
      const elapsed = Date.now() - started;
      expect(elapsed).toBeGreaterThanOrEqual(250);
      expect(elapsed).toBeLessThan(1500);
    }
  });

  it("honours the caller's abort signal, rejecting with its reason", async () => {
    const controller = new AbortController();
    const reason = new Error('client went away');
    setTimeout(() => controller.abort(reason), 50);
    const started = Date.now();
    await expect(loadImageReference(`${base}/slow`, open(), { signal: controller.signal })).rejects.toBe(reason);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('sends no cookies or credentials, and says who it is', async () => {
    const withCredentials = base.replace('http://', 'http://user:hunter2@');
    const echoed = JSON.parse((await loadImageReference(`${withCredentials}/cookie-redirect`, open())).toString());
    expect(echoed.authorization).toBeUndefined();
    expect(echoed.cookie).toBeUndefined();
    expect(echoed['user-agent']).toMatch(/^dvl\//);
    expect(echoed['accept-encoding']).toBe('identity');
    expect(seenHeaders).toHaveLength(1);
  });

  it('keeps credentials out of error messages', async () => {
    const withCredentials = base.replace('http://', 'http://user:hunter2@');
    const error = await inputErrorOf(loadImageReference(`${withCredentials}/missing`, open()));
    expect(error.message).not.toContain('hunter2');
  });

  it('reports a refused connection and an invalid URL', async () => {
    const spare = http.createServer();
    await new Promise<void>((resolve) => spare.listen(0, '127.0.0.1', resolve));
    const port = (spare.address() as AddressInfo).port;
    await new Promise<void>((resolve) => spare.close(() => resolve()));
    const refused = await inputErrorOf(loadImageReference(`http://127.0.0.1:${port}/x.png`, open()));
    expect(refused.message).toMatch(/^image: cannot fetch http:\/\/127\.0\.0\.1:\d+\/x\.png: connect ECONNREFUSED/);
    expect((await inputErrorOf(loadImageReference('http://[nope/x.png', open()))).message).toMatch(/^image: invalid URL/);
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('local image paths', QUICK, () => {
  let root: string;
  let media: string;
  let cat: string;

  beforeAll(async () => {
    root = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), 'dvl-media-')));
    media = path.join(root, 'media');
    cat = path.join(media, 'cat.png');
    await fs.mkdir(path.join(media, 'sub'), { recursive: true });
    await fs.mkdir(path.join(root, 'outside'));
    await fs.writeFile(cat, png);
    await fs.writeFile(path.join(media, 'sub', 'dog.png'), png);
    await fs.writeFile(path.join(media, '..hidden.png'), png);
    await fs.writeFile(path.join(media, 'big.png'), Buffer.alloc(3000));
    await fs.writeFile(path.join(root, 'outside', 'secret.png'), png);
    await fs.symlink(path.join(root, 'outside', 'secret.png'), path.join(media, 'escape.png'));
    await fs.symlink(path.join(root, 'outside'), path.join(media, 'dirlink'));
    await fs.symlink(path.join('sub', 'dog.png'), path.join(media, 'inner-link.png'));
    await fs.symlink(media, path.join(root, 'media-link'));
  });

  afterAll(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  const local = (overrides: Partial<MediaPolicy> = {}) => policy({ mediaDir: media, maxBytes: 2000, ...overrides });

  it('reads files inside the media directory: absolute, relative, file: URL, symlink within', async () => {
    expect(await loadImageReference(cat, local())).toEqual(png);
    expect(await loadImageReference('sub/dog.png', local())).toEqual(png);
    expect(await loadImageReference('./sub/../cat.png', local())).toEqual(png);
    expect(await loadImageReference(pathToFileURL(cat).href, local())).toEqual(png);
    expect(await loadImageReference('inner-link.png', local())).toEqual(png);
    expect(await loadImageReference('..hidden.png', local())).toEqual(png); // a name starting with "..", not a parent
  });

  it('accepts a media directory given through a symlink, with paths through either name', async () => {
    const viaLink = local({ mediaDir: path.join(root, 'media-link') });
    expect(await loadImageReference(cat, viaLink)).toEqual(png);
    expect(await loadImageReference(path.join(root, 'media-link', 'sub', 'dog.png'), viaLink)).toEqual(png);
    expect(await loadImageReference('sub/dog.png', viaLink)).toEqual(png);
  });

  it.each([
    ['an absolute path elsewhere', () => '/etc/passwd'],
    ['a relative path climbing out', () => '../outside/secret.png'],
    ['a file: URL elsewhere', () => pathToFileURL(path.join(root, 'outside', 'secret.png')).href],
    ['a symlink pointing out', () => 'escape.png'],
    ['a path through a symlinked directory pointing out', () => 'dirlink/secret.png'],
    ['a missing file elsewhere (no "not found" to probe with)', () => '/nonexistent/dir/x.png'],
  ])('refuses %s', async (_name, ref) => {
    const error = await inputErrorOf(loadImageReference(ref(), local()));
    expect(error.message).toBe(`image: image path ${ref()} is outside the media directory`);
  });

  it('refuses local paths when no media directory is configured', async () => {
    for (const ref of [cat, pathToFileURL(cat).href, 'cat.png']) {
      expect((await inputErrorOf(loadImageReference(ref, policy()))).message).toBe(
        'image: local image paths are disabled (start dvl serve with --media-dir DIR)',
      );
    }
  });

  it('reports missing files, directories, oversized files and remote file: URLs', async () => {
    expect((await inputErrorOf(loadImageReference('nope.png', local()))).message).toBe('image: image not found: nope.png');
    expect((await inputErrorOf(loadImageReference('cat.png/x', local()))).message).toBe('image: image not found: cat.png/x');
    expect((await inputErrorOf(loadImageReference('sub', local()))).message).toBe('image: sub is a directory, not an image');
    expect((await inputErrorOf(loadImageReference(media, local()))).message).toMatch(/is a directory, not an image$/);
    expect((await inputErrorOf(loadImageReference('big.png', local()))).message).toBe('image: big.png is larger than 2000 bytes');
    expect((await inputErrorOf(loadImageReference('file://server/share/cat.png', local()))).message).toMatch(
      /^image: invalid file: URL/,
    );
  });

  it.skipIf(process.platform === 'win32')('refuses a FIFO without blocking on it', async () => {
    const fifo = path.join(media, 'pipe.png');
    execFileSync('mkfifo', [fifo]);
    expect((await inputErrorOf(loadImageReference('pipe.png', local()))).message).toBe('image: pipe.png is not a regular file');
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('isPrivateAddress', () => {
  it.each([
    ['10.0.0.1', true],
    ['10.255.255.255', true],
    ['172.16.0.1', true],
    ['172.31.255.254', true],
    ['172.15.255.255', false],
    ['172.32.0.1', false],
    ['192.168.1.1', true],
    ['127.0.0.1', true],
    ['127.255.0.9', true],
    ['169.254.169.254', true],
    ['100.64.0.1', true],
    ['100.127.255.255', true],
    ['100.128.0.1', false],
    ['0.0.0.0', true],
    ['224.0.0.1', true],
    ['239.255.255.250', true],
    ['255.255.255.255', true],
    ['8.8.8.8', false],
    ['1.1.1.1', false],
    ['93.184.216.34', false],
    ['::1', true],
    ['::', true],
    ['[::1]', true],
    ['fc00::1', true],
    ['fd12:3456:789a::1', true],
    ['fe80::1', true],
    ['fe80::1%eth0', true],
    ['febf::1', true],
    ['ff02::1', true],
    ['::ffff:127.0.0.1', true],
    ['::ffff:7f00:1', true],
    ['::ffff:10.1.2.3', true],
    ['::ffff:8.8.8.8', false],
    ['::127.0.0.1', true],
    ['64:ff9b::10.0.0.1', true],
    ['64:ff9b::8.8.8.8', false],
    ['2002:c0a8:0101::1', true],
    ['2001:db8::1', true],
    ['2606:4700::1', false],
    ['2001:4860:4860::8888', false],
    ['2a00:1450:4001:82b::200e', false],
    ['not an address', true],
    ['', true],
  ])('%s -> %s', (address, expected) => {
    expect(isPrivateAddress(address)).toBe(expected);
  });
});

// ---------------------------------------------------------------------------------------------------------

/** CRC-32 (IEEE), which PNG chunks carry; zlib.crc32 is newer than Node 20. */
function crc32(bytes: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/**
 * A PNG that claims width x height RGB pixels but holds none: enough for the header, and what a decompression
 * bomb looks like to a header reader. (Making a real 20000x20000 PNG takes sharp several seconds.)
 */
function pngHeaderOnly(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([
    signature,
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', zlib.deflateSync(Buffer.alloc(0))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

describe('checkImageLimits', QUICK, () => {
  it('reads the size and format of a real image', async () => {
    expect(await checkImageLimits(png, DEFAULT_MEDIA_POLICY)).toEqual({ width: 4, height: 3, format: 'png' });
    const jpeg = await sharp(png).jpeg().toBuffer();
    expect(await checkImageLimits(jpeg, DEFAULT_MEDIA_POLICY)).toEqual({ width: 4, height: 3, format: 'jpeg' });
  });

  it('refuses a 20000x20000 image from its header, quickly', async () => {
    const bomb = pngHeaderOnly(20000, 20000);
    expect(bomb.length).toBeLessThan(100);
    const started = Date.now();
    const error = await inputErrorOf(checkImageLimits(bomb, DEFAULT_MEDIA_POLICY));
    expect(error.message).toBe('image: 20000x20000 pixels is over the limit of 40000000');
    expect(Date.now() - started).toBeLessThan(500);
  });

  it('refuses an image with a side over maxDimension, and accepts one at the limits', async () => {
    const long = await inputErrorOf(checkImageLimits(pngHeaderOnly(20000, 10), DEFAULT_MEDIA_POLICY, { label: 'images[1]' }));
    expect(long.message).toBe('images[1]: 20000x10 pixels is over the limit of 16384 pixels a side');
    expect(await checkImageLimits(pngHeaderOnly(16384, 2441), DEFAULT_MEDIA_POLICY)).toEqual({
      width: 16384,
      height: 2441,
      format: 'png',
    });
  });

  it('refuses garbage, empty input and SVG', async () => {
    const garbage = await inputErrorOf(checkImageLimits(Buffer.from('definitely not an image'), DEFAULT_MEDIA_POLICY));
    expect(garbage.message).toBe('image: not a supported image (Input buffer contains unsupported image format)');
    expect((await inputErrorOf(checkImageLimits(Buffer.alloc(0), DEFAULT_MEDIA_POLICY))).message).toMatch(
      /^image: not a supported image \(/,
    );
    const truncatedHeader = pngHeaderOnly(10, 10).subarray(0, 20);
    expect((await inputErrorOf(checkImageLimits(truncatedHeader, DEFAULT_MEDIA_POLICY))).message).toMatch(
      /^image: not a supported image \(/,
    );
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>');
    expect((await inputErrorOf(checkImageLimits(svg, DEFAULT_MEDIA_POLICY))).message).toBe('image: svg images are not supported');
  });
});
