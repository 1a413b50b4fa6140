/**
 * Image references from API requests -> bytes, without letting a client use the server as a proxy into the
 * local network, a file reader for the whole disk, or a way to make it decode a gigapixel image.
 *
 * A reference is one of:
 * - a `data:<mime>;base64,<payload>` URL (OpenAI-style `image_url`);
 * - bare base64 (Ollama's `images` entries), with `bareBase64`;
 * - an http(s) URL, only with `allowRemote`. Private addresses are refused unless `allowPrivate`; the check is
 *   made in the socket's DNS lookup, on the addresses actually connected to, so a host name that resolves to a
 *   public address for a pre-check and to 127.0.0.1 for the connection (DNS rebinding) gets nowhere;
 * - a file path or `file:` URL, only inside `mediaDir` (after resolving symlinks).
 *
 * Every error is an input error (HTTP 400) with a one-line message, except an abort through `options.signal`,
 * which rejects with the signal's reason, as fetch() does.
 */
import dns from 'node:dns';
import { constants as fsConstants, promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp, { type Metadata } from 'sharp';
import { DvlError, inputError } from '../util/errors.js';
import { DVL_VERSION } from '../version.js';

export interface MediaPolicy {
  /** http(s) URLs allowed at all (--allow-remote-images). */
  allowRemote: boolean;
  /** Allow loopback/private/link-local/unique-local/CGNAT/unspecified/multicast addresses for remote fetches. */
  allowPrivate: boolean;
  /** Local paths and file: URLs are allowed only when they resolve inside this directory. */
  mediaDir?: string;
  /** Size cap for one image: decoded data: URL, remote body, local file. */
  maxBytes: number;
  /** Total time for one remote fetch, redirects included. */
  timeoutMs: number;
  /** Redirects followed before giving up. */
  maxRedirects: number;
  /** width * height limit, checked from the header before decoding. */
  maxPixels: number;
  /** max(width, height) limit. */
  maxDimension: number;
}

export const DEFAULT_MEDIA_POLICY: Omit<MediaPolicy, 'allowRemote' | 'allowPrivate' | 'mediaDir'> = {
  maxBytes: 20 * 1024 * 1024,
  timeoutMs: 10_000,
  maxRedirects: 3,
  maxPixels: 40_000_000,
  maxDimension: 16384,
};

export interface LoadImageOptions {
  /** The reference is an Ollama `images` entry: bare base64 (a data: URL is accepted too). */
  bareBase64?: boolean;
  /** Aborts a remote fetch; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Names the image in error messages, e.g. `messages[0].content[1].image_url`. Default `image`. */
  label?: string;
  /**
   * Which addresses a remote fetch may not connect to. Default: private ones, unless `policy.allowPrivate`.
   * It exists for tests, whose server can only be on loopback: they allow that one address and still see
   * every other private address refused.
   */
  isBlockedAddress?: (address: string) => boolean;
}

/**
 * Turns an image reference from a request into its bytes, enforcing the policy (see the module comment).
 * The bytes are not decoded here; pass them to checkImageLimits before decoding.
 */
export async function loadImageReference(
  ref: string,
  policy: MediaPolicy,
  options: LoadImageOptions = {},
): Promise<Buffer> {
  const label = options.label ?? 'image';
  options.signal?.throwIfAborted();
  const text = ref.trim();
  if (text === '') throw inputError(`${label}: empty image reference`);
  if (/^data:/i.test(text)) return decodeDataUrl(text, label, policy.maxBytes);
  if (options.bareBase64) return decodeBase64Strict(text, label, policy.maxBytes);

  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(text)?.[1].toLowerCase();
  if (scheme === 'http' || scheme === 'https') {
    if (!policy.allowRemote) {
      throw inputError(`${label}: remote image URLs are disabled (start dvl serve with --allow-remote-images)`);
    }
    const isBlocked = options.isBlockedAddress ?? ((address: string) => !policy.allowPrivate && isPrivateAddress(address));
    return fetchRemote(text, { policy, label, isBlocked, signal: options.signal });
  }
  if (scheme === 'file') return readLocalImage(filePathOfUrl(text, label), text, policy, label);
  // A one-letter "scheme" on Windows is a drive letter (C:\images\cat.png), not a URL.
  const isDriveLetter = scheme !== undefined && scheme.length === 1 && process.platform === 'win32';
  if (scheme !== undefined && !isDriveLetter) throw inputError(`${label}: unsupported URL scheme ${shown(scheme)}:`);
  return readLocalImage(text, text, policy, label);
}

/**
 * Reads width/height/format from the image header (sharp's metadata does not decode pixels) and refuses images
 * over the limits, so that a small file that decompresses into gigabytes of pixels is never decoded.
 */
export async function checkImageLimits(
  bytes: Buffer,
  policy: Pick<MediaPolicy, 'maxPixels' | 'maxDimension'>,
  options: { label?: string } = {},
): Promise<{ width: number; height: number; format: string }> {
  const label = options.label ?? 'image';
  let metadata: Metadata;
  try {
    // No pixel limit here: sharp's own would refuse with its message before ours could name the size.
    metadata = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (error) {
    throw inputError(`${label}: not a supported image (${firstLine(error)})`, error);
  }
  const { width, height, format } = metadata;
  if (!width || !height || !format) throw inputError(`${label}: not a supported image (no size in its header)`);
  // SVG is rendered, not decoded: the cost of drawing it is unrelated to its declared size.
  if (!RASTER_FORMATS.has(format)) throw inputError(`${label}: ${format} images are not supported`);
  if (width * height > policy.maxPixels) {
    throw inputError(`${label}: ${width}x${height} pixels is over the limit of ${policy.maxPixels}`);
  }
  if (Math.max(width, height) > policy.maxDimension) {
    throw inputError(`${label}: ${width}x${height} pixels is over the limit of ${policy.maxDimension} pixels a side`);
  }
  return { width, height, format };
}

const RASTER_FORMATS: ReadonlySet<string> = new Set(['jpeg', 'png', 'webp', 'gif', 'tiff', 'heif']);

// ---------------------------------------------------------------------------------------------------------
// Addresses

/**
 * True for addresses a remote image fetch must not reach by default: loopback, private, link-local, CGNAT,
 * unique-local, unspecified, multicast, reserved and documentation ranges; IPv4 embedded in IPv6 (mapped,
 * NAT64, 6to4) is judged by its IPv4 address. Anything that is not an IP address counts as private: the
 * function guards connections, so it fails closed.
 */
export function isPrivateAddress(address: string): boolean {
  let text = address.trim();
  if (text.startsWith('[') && text.endsWith(']')) text = text.slice(1, -1);
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone); // fe80::1%eth0: the zone names an interface, not part of the address
  if (net.isIPv4(text)) return isPrivateIPv4(ipv4ToNumber(text));
  if (net.isIPv6(text)) return isPrivateIPv6(ipv6Groups(text));
  return true;
}

const PRIVATE_IPV4_RANGES: ReadonlyArray<readonly [string, number]> = [
  ['0.0.0.0', 8], // "this network", the unspecified address among it
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, where cloud metadata services live
  ['172.16.0.0', 12],
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation
  ['192.168.0.0', 16],
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation
  ['203.0.113.0', 24], // documentation
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, the broadcast address among it
];

const PRIVATE_IPV4_MASKS = PRIVATE_IPV4_RANGES.map(([base, bits]) => {
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return { base: ipv4ToNumber(base), mask };
});

function ipv4ToNumber(text: string): number {
  return text.split('.').reduce((value, part) => ((value << 8) | Number(part)) >>> 0, 0);
}

function isPrivateIPv4(value: number): boolean {
  return PRIVATE_IPV4_MASKS.some(({ base, mask }) => ((value & mask) >>> 0) === base);
}

/** The eight 16-bit groups of a valid IPv6 address (net.isIPv6 has checked it). */
function ipv6Groups(text: string): number[] {
  let s = text;
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.', lastColon)) {
    // A trailing dotted quad (::ffff:127.0.0.1) is the last two groups.
    const v4 = ipv4ToNumber(s.slice(lastColon + 1));
    s = `${s.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const [head, tail] = s.split('::');
  const headGroups = head ? head.split(':') : [];
  const tailGroups = tail ? tail.split(':') : [];
  const zeros = new Array<string>(8 - headGroups.length - tailGroups.length).fill('0');
  return [...headGroups, ...zeros, ...tailGroups].map((group) => parseInt(group, 16));
}

function isPrivateIPv6(g: number[]): boolean {
  const zeroUpTo = (n: number) => g.slice(0, n).every((group) => group === 0);
  const embeddedV4 = (hi: number, lo: number) => ((hi << 16) | lo) >>> 0;
  if (zeroUpTo(5) && g[5] === 0xffff) return isPrivateIPv4(embeddedV4(g[6], g[7])); // ::ffff:a.b.c.d, mapped
  if (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0)) {
    return isPrivateIPv4(embeddedV4(g[6], g[7])); // 64:ff9b::a.b.c.d, NAT64 to that IPv4 address
  }
  if (g[0] === 0x2002) return isPrivateIPv4(embeddedV4(g[1], g[2])); // 6to4 relays to the IPv4 address
  if (g[0] === 0x2001 && (g[1] === 0 || g[1] === 0xdb8)) return true; // Teredo, documentation
  // Only 2000::/3 is global unicast. Everything else is private or special: :: and ::1, the deprecated
  // IPv4-compatible ::a.b.c.d, discard-only 100::/64, unique-local fc00::/7, link-local fe80::/10,
  // site-local fec0::/10, multicast ff00::/8, and unassigned space.
  return (g[0] & 0xe000) !== 0x2000;
}

// ---------------------------------------------------------------------------------------------------------
// data: URLs and base64

const BASE64_BODY = /^[A-Za-z0-9+/]*={0,2}$/;
const IMAGE_MIME = /^image\/[a-z0-9][a-z0-9.+-]*$/;

function decodeDataUrl(url: string, label: string, maxBytes: number): Buffer {
  const comma = url.indexOf(',');
  if (comma < 0) throw inputError(`${label}: malformed data: URL (no comma)`);
  const [mime, ...parameters] = url
    .slice('data:'.length, comma)
    .split(';')
    .map((part) => part.trim().toLowerCase());
  if (!IMAGE_MIME.test(mime) && mime !== 'application/octet-stream') {
    throw inputError(`${label}: data: URL has type ${shown(mime || '(none)')}, not an image`);
  }
  if (!parameters.includes('base64')) throw inputError(`${label}: data: URL is not base64-encoded`);
  return decodeBase64Strict(url.slice(comma + 1), label, maxBytes);
}

/**
 * Buffer.from(…, 'base64') skips characters it does not know and stops at the first '=', so it would turn
 * any text into some bytes; validate first, and size the result from the length before allocating it.
 */
function decodeBase64Strict(payload: string, label: string, maxBytes: number): Buffer {
  const compact = /\s/.test(payload) ? payload.replace(/\s+/g, '') : payload;
  if (compact === '') throw inputError(`${label}: empty image data`);
  const padding = compact.endsWith('==') ? 2 : compact.endsWith('=') ? 1 : 0;
  const dataChars = compact.length - padding;
  if (Math.floor((dataChars * 3) / 4) > maxBytes) throw inputError(`${label}: larger than ${maxBytes} bytes`);
  // Padding, when present, completes a 4-character group; one character alone can never encode a byte.
  const badLength = (padding > 0 && compact.length % 4 !== 0) || dataChars % 4 === 1;
  if (badLength || !BASE64_BODY.test(compact)) throw inputError(`${label}: invalid base64`);
  return Buffer.from(compact, 'base64');
}

// ---------------------------------------------------------------------------------------------------------
// Remote images

interface FetchContext {
  policy: MediaPolicy;
  label: string;
  isBlocked: (address: string) => boolean;
  signal?: AbortSignal;
}

type HopResult = { kind: 'body'; body: Buffer } | { kind: 'redirect'; location: string };

const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

async function fetchRemote(ref: string, context: FetchContext): Promise<Buffer> {
  const { policy, label } = context;
  let url = parseHttpUrl(ref, label, 'invalid URL');
  const deadline = deadlineSignal(policy.timeoutMs, label, context.signal);
  try {
    for (let redirects = 0; ; redirects++) {
      const hop = await fetchOnce(url, context, deadline.signal);
      if (hop.kind === 'body') return hop.body;
      if (redirects >= policy.maxRedirects) throw inputError(`${label}: more than ${policy.maxRedirects} redirects`);
      url = parseHttpUrl(hop.location, label, 'redirect to an invalid URL', url);
    }
  } finally {
    deadline.dispose();
  }
}

/** A URL that may be fetched: http or https only (a redirect may not lead to file:, ftp: or data:). */
function parseHttpUrl(text: string, label: string, invalid: string, base?: URL): URL {
  let url: URL;
  try {
    url = new URL(text, base);
  } catch {
    throw inputError(`${label}: ${invalid} ${shown(text)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw inputError(`${label}: ${base ? 'redirect to ' : ''}unsupported URL scheme ${shown(url.protocol)}`);
  }
  return url;
}

/** One signal for the whole fetch: aborted by the total timeout or by the caller's signal. */
function deadlineSignal(timeoutMs: number, label: string, outer?: AbortSignal) {
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(inputError(`${label}: remote image timed out after ${timeoutMs} ms`)),
    timeoutMs,
  );
  const onOuterAbort = () => controller.abort(outer?.reason);
  if (outer?.aborted) onOuterAbort();
  else outer?.addEventListener('abort', onOuterAbort, { once: true });
  const dispose = () => {
    clearTimeout(timer);
    outer?.removeEventListener('abort', onOuterAbort);
  };
  return { signal: controller.signal, dispose };
}

/** One request: the body of a 2xx answer, or where a redirect points. */
async function fetchOnce(url: URL, context: FetchContext, signal: AbortSignal): Promise<HopResult> {
  signal.throwIfAborted();
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  // The socket does no DNS lookup for an IP literal, so the lookup check below would never see it.
  if (net.isIP(host) && context.isBlocked(host)) throw privateAddressError(context.label, host);

  return new Promise<HopResult>((resolve, reject) => {
    let settled = false;
    const settle = (action: () => void) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      request.destroy();
      action();
    };
    const fail = (error: unknown) => settle(() => reject(error));
    const onAbort = () => fail(signal.reason);

    const client = url.protocol === 'https:' ? https : http;
    const request = client.request({
      protocol: url.protocol,
      hostname: host,
      port: url.port || undefined,
      path: `${url.pathname}${url.search}`,
      method: 'GET',
      // No Cookie, no Authorization (credentials in the URL are dropped), no Referer. identity: the body size
      // cap must be the size of the image, not of a compressed stream.
      headers: { 'user-agent': `dvl/${DVL_VERSION}`, accept: 'image/*', 'accept-encoding': 'identity' },
      // No connection pool: a pooled socket would skip the address check of this request's policy.
      agent: false,
      lookup: guardedLookup(context),
    });
    signal.addEventListener('abort', onAbort, { once: true });
    request.on('error', (error) => fail(error instanceof DvlError ? error : fetchError(context.label, url, error)));
    request.on('response', (response) => {
      response.on('error', (error) => fail(fetchError(context.label, url, error)));
      handleResponse(response, url, context, {
        fail,
        done: (result) => settle(() => resolve(result)),
      });
    });
    request.end();
  });
}

function handleResponse(
  response: http.IncomingMessage,
  url: URL,
  context: FetchContext,
  outcome: { fail: (error: unknown) => void; done: (result: HopResult) => void },
): void {
  const { label, policy } = context;
  const status = response.statusCode ?? 0;
  if (REDIRECT_STATUSES.has(status)) {
    const location = response.headers.location;
    if (!location) return outcome.fail(inputError(`${label}: ${displayUrl(url)} answered ${status} without a Location`));
    return outcome.done({ kind: 'redirect', location });
  }
  if (status < 200 || status > 299) return outcome.fail(inputError(`${label}: ${displayUrl(url)} answered ${status}`));

  const encoding = response.headers['content-encoding'];
  if (encoding && encoding.toLowerCase() !== 'identity') {
    return outcome.fail(inputError(`${label}: ${displayUrl(url)} sent the image with Content-Encoding ${shown(encoding)}`));
  }
  const tooLarge = () => inputError(`${label}: remote image is larger than ${policy.maxBytes} bytes`);
  const declared = Number(response.headers['content-length']);
  if (Number.isFinite(declared) && declared > policy.maxBytes) return outcome.fail(tooLarge());

  const chunks: Buffer[] = [];
  let size = 0;
  response.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > policy.maxBytes) outcome.fail(tooLarge());
    else chunks.push(chunk);
  });
  response.on('end', () => outcome.done({ kind: 'body', body: Buffer.concat(chunks, size) }));
  response.on('close', () => {
    if (!response.complete) outcome.fail(inputError(`${label}: ${displayUrl(url)} closed the connection mid-image`));
  });
}

/**
 * dns.lookup, keeping only the addresses the policy allows. The socket connects to what this returns, so the
 * check applies to the address really connected to, whatever the name resolved to a moment before.
 */
function guardedLookup(context: FetchContext): net.LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, '', 0);
      const allowed = addresses.filter(({ address }) => !context.isBlocked(address));
      if (allowed.length === 0) {
        const refused = addresses[0]?.address ?? hostname;
        return callback(privateAddressError(context.label, refused), '', 0);
      }
      // Happy-eyeballs connections (Node's autoSelectFamily) ask for every address, plain ones for one.
      if (options.all) callback(null, allowed);
      else callback(null, allowed[0].address, allowed[0].family);
    });
  };
}

function privateAddressError(label: string, address: string): DvlError {
  return inputError(`${label}: ${shown(address)} is a private address`);
}

function fetchError(label: string, url: URL, error: unknown): DvlError {
  const code = (error as NodeJS.ErrnoException).code;
  const reason = code === 'ENOTFOUND' || code === 'EAI_AGAIN' ? 'host not found' : firstLine(error);
  return inputError(`${label}: cannot fetch ${displayUrl(url)}: ${reason}`, error);
}

/** The URL for a message: without credentials, on one line, not endless. */
function displayUrl(url: URL): string {
  const copy = new URL(url);
  copy.username = '';
  copy.password = '';
  return shown(copy.href);
}

// ---------------------------------------------------------------------------------------------------------
// Local files

function filePathOfUrl(ref: string, label: string): string {
  try {
    return fileURLToPath(new URL(ref));
  } catch {
    // file://host/… (a remote share) and encoded slashes are not local paths.
    throw inputError(`${label}: invalid file: URL ${shown(ref)}`);
  }
}

async function readLocalImage(filePath: string, ref: string, policy: MediaPolicy, label: string): Promise<Buffer> {
  if (policy.mediaDir === undefined) {
    throw inputError(`${label}: local image paths are disabled (start dvl serve with --media-dir DIR)`);
  }
  const outside = () => inputError(`${label}: image path ${shown(ref)} is outside the media directory`);
  const root = path.resolve(policy.mediaDir);
  const realRoot = await realpathOf(root, () => inputError(`${label}: the media directory cannot be read`));
  const candidate = path.resolve(root, filePath);
  // Refuse what is outside by its name before touching the disk, so that "not found" cannot be used to probe
  // which files exist elsewhere. (The root may be given through a symlink, hence both.)
  if (!isInside(root, candidate) && !isInside(realRoot, candidate)) throw outside();
  const real = await realpathOf(candidate, (error) =>
    isMissing(error) ? inputError(`${label}: image not found: ${shown(ref)}`) : readError(label, ref, error),
  );
  // The real path decides: a symlink inside the directory may point anywhere.
  if (!isInside(realRoot, real)) throw outside();
  return readRegularFile(real, ref, policy.maxBytes, label);
}

async function realpathOf(target: string, onError: (error: unknown) => DvlError): Promise<string> {
  try {
    return await fs.realpath(target);
  } catch (error) {
    throw onError(error);
  }
}

function isInside(root: string, target: string): boolean {
  const relative = path.relative(root, target);
  return relative === '' || (relative !== '..' && !relative.startsWith(`..${path.sep}`) && !path.isAbsolute(relative));
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * Reads at most the size the file had when opened, and only if it is a regular file: a FIFO or device in the
 * media directory could otherwise block the request or stream forever.
 */
async function readRegularFile(real: string, ref: string, maxBytes: number, label: string): Promise<Buffer> {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer. O_NOFOLLOW: `real` has no symlinks left, so
  // one appearing now is a swap after the check.
  const flags = fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0) | (fsConstants.O_NOFOLLOW ?? 0);
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(real, flags);
  } catch (error) {
    throw readError(label, ref, error);
  }
  try {
    const stat = await handle.stat();
    if (stat.isDirectory()) throw inputError(`${label}: ${shown(ref)} is a directory, not an image`);
    if (!stat.isFile()) throw inputError(`${label}: ${shown(ref)} is not a regular file`);
    if (stat.size > maxBytes) throw inputError(`${label}: ${shown(ref)} is larger than ${maxBytes} bytes`);
    const buffer = Buffer.alloc(stat.size);
    let offset = 0;
    while (offset < buffer.length) {
      const { bytesRead } = await handle.read(buffer, offset, buffer.length - offset, offset);
      if (bytesRead === 0) break;
      offset += bytesRead;
    }
    return buffer.subarray(0, offset);
  } catch (error) {
    throw error instanceof DvlError ? error : readError(label, ref, error);
  } finally {
    await handle.close();
  }
}

function readError(label: string, ref: string, error: unknown): DvlError {
  return inputError(`${label}: cannot read ${shown(ref)}: ${firstLine(error)}`, error);
}

// ---------------------------------------------------------------------------------------------------------
// Messages

/** Client-supplied text in a message: control characters replaced, so the message stays one line; bounded. */
function shown(text: string, max = 200): string {
  const clean = text.replace(/[\u0000-\u001f\u007f]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

/** The first line of an error message, without sharp's detail or a trailing colon. */
function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0].trim().replace(/:$/, '');
}
