/**
 * The chat page at `/` (web/, built into dist/web/ by `npm run build`): its files are read once at start-up
 * and served from memory, only by GET (and HEAD), under a strict Content-Security-Policy: the page loads its
 * one script and one stylesheet from this server and talks only to this server's API, nothing else.
 *
 * Routes: `GET /` the page; `GET /ui/<file>` its assets, whose names carry a hash of their content (the build
 * writes them so), so they are cached for a year and a new build is fetched at once; the page itself is
 * revalidated every time (`no-cache`) so that it always names the current assets.
 *
 * The page is reachable without the API key (it has no secret in it; it asks for the key and sends it on its
 * API calls), so these paths are exempt from the key check in app.ts (`isPublicPath`). With `--no-ui`, or when
 * the page was not built, `GET /` answers a short plain text: Ollama clients probe `/` to see a server is up.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';

/** Where `npm run build` puts the page: dist/web/ (this file is src/server/ or dist/server/: both resolve there). */
export const WEB_UI_DIR = fileURLToPath(new URL('../../dist/web/', import.meta.url));

/** What the page may load and where it may connect: this origin only; thumbnails are blob: URLs. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** GET / when there is no page. */
export const NO_UI_TEXT = 'dvl is running\n';

const ASSET_PREFIX = '/ui/';

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

interface StaticFile {
  body: Buffer;
  contentType: string;
  cacheControl: string;
}

export interface WebUiOptions {
  /** false: `--no-ui`. */
  enabled: boolean;
  /** The built page (default WEB_UI_DIR). */
  dir?: string;
  log(line: string): void;
}

/** Paths that need no API key: the page and its assets (when served), and `/` in any case. */
export function isPublicPath(method: string, url: string, uiEnabled: boolean): boolean {
  if (method !== 'GET' && method !== 'HEAD') return false;
  const pathname = url.split('?')[0];
  return pathname === '/' || (uiEnabled && pathname.startsWith(ASSET_PREFIX));
}

export function registerWebUi(app: FastifyInstance, options: WebUiOptions): void {
  const files = options.enabled ? readBuiltPage(options.dir ?? WEB_UI_DIR, options.log) : null;
  const page = files?.get('index.html');
  if (!files || !page) {
    app.get('/', async (_request, reply) => reply.header('content-type', 'text/plain; charset=utf-8').header('x-content-type-options', 'nosniff').send(NO_UI_TEXT));
    return;
  }
  app.get('/', async (_request, reply) => sendFile(reply, page));
  app.get<{ Params: { file: string } }>(`${ASSET_PREFIX}:file`, async (request, reply) => {
    const file = request.params.file === 'index.html' ? undefined : files.get(request.params.file);
    if (!file) return reply.callNotFound();
    return sendFile(reply, file);
  });
}

function sendFile(reply: FastifyReply, file: StaticFile): FastifyReply {
  return reply
    .header('content-type', file.contentType)
    .header('cache-control', file.cacheControl)
    .header('content-security-policy', CONTENT_SECURITY_POLICY)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('cross-origin-opener-policy', 'same-origin')
    .header('cross-origin-resource-policy', 'same-origin')
    .send(file.body);
}

/**
 * The built files by name (a flat folder: index.html and hashed assets). Null, with a log line, when the page
 * was not built (a checkout whose `npm run build` has not run): the server still serves the APIs.
 */
function readBuiltPage(dir: string, log: (line: string) => void): Map<string, StaticFile> | null {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    log(`the web page is not built (no ${dir}; run npm run build): GET / answers "${NO_UI_TEXT.trim()}"`);
    return null;
  }
  const files = new Map<string, StaticFile>();
  for (const name of names) {
    const contentType = CONTENT_TYPES[path.extname(name)];
    if (!contentType) continue;
    const hashed = name !== 'index.html';
    files.set(name, {
      body: fs.readFileSync(path.join(dir, name)),
      contentType,
      // The page is checked again on every load; the assets' names change with their content.
      cacheControl: hashed ? 'public, max-age=31536000, immutable' : 'no-cache',
    });
  }
  return files;
}
