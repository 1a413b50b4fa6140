/**
 * A local HTTP server (127.0.0.1 only) that speaks the Hugging Face Hub endpoints dvl and @huggingface/hub use,
 * serving checkpoint directories from disk, with faults a test can switch on: a connection dropped after N
 * bytes, corrupted bytes, 5xx answers, authentication (401) and gating (403). Every request is recorded.
 *   GET  /api/models/{repo}/revision/{rev}
 *   GET  /api/models/{repo}/tree/{sha}?recursive=true   (paginated with Link: rel="next")
 *   POST /api/models/{repo}/paths-info/{sha}
 *   GET  /{repo}/resolve/{sha}/{path}                   (Range, Content-Range, ETag / X-Linked-ETag)
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface ServedFile {
  path: string;
  bytes: Buffer;
  gitSha1: string;
  sha256: string;
  lfs: boolean;
}

export interface RecordedRequest {
  method: string;
  url: string;
  range?: string;
  authorization?: string;
}

export interface HubServer {
  endpoint: string;
  requests: RecordedRequest[];
  /** Requests for file contents (`/resolve/`), optionally of one file. */
  downloads(file?: string): RecordedRequest[];
  /** Publishes a directory as a new commit of `id` (branch main moves to it); returns the commit. */
  publish(id: string, dir: string, extra?: Record<string, Buffer>): string;
  /** Fault injection, each consumed when it fires. */
  faults: {
    /** Send only this many bytes of the file's body, then destroy the connection (once per entry). */
    dropAfter: Map<string, number>;
    /** Serve these files with one byte flipped (always). */
    corrupt: Set<string>;
    /** Answer the next n requests for this file with this status. */
    failWith: Map<string, { status: number; times: number }>;
    /** Answer the next n requests whose path starts with this prefix (e.g. "/api/models/") with this status. */
    failPaths: Map<string, { status: number; times: number }>;
  };
  close(): Promise<void>;
}

export interface HubServerOptions {
  /** When set, requests need `Authorization: Bearer <token>` (401 otherwise). */
  token?: string;
  /** A valid token without access to the repos: 403 GatedRepo. */
  gatedToken?: string;
  /** Tree page size (the real Hub pages too). */
  pageSize?: number;
  /** Safety bound: beyond this many requests the server answers 500 (a runaway loop fails fast). */
  maxRequests?: number;
}

interface Repo {
  commits: Map<string, ServedFile[]>;
  main: string;
}

export async function startHubServer(options: HubServerOptions = {}): Promise<HubServer> {
  const repos = new Map<string, Repo>();
  const requests: RecordedRequest[] = [];
  const faults: HubServer['faults'] = { dropAfter: new Map(), corrupt: new Set(), failWith: new Map(), failPaths: new Map() };
  const pageSize = options.pageSize ?? 4;
  const maxRequests = options.maxRequests ?? 400;

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        handle(req, res, Buffer.concat(chunks));
      } catch (error) {
        sendJson(res, 500, { error: String(error) });
      }
    });
  });

  function handle(req: http.IncomingMessage, res: http.ServerResponse, body: Buffer): void {
    requests.push({ method: req.method ?? '', url: req.url ?? '', range: req.headers.range, authorization: req.headers.authorization });
    if (requests.length > maxRequests) return sendJson(res, 500, { error: 'too many requests in one test' });
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    for (const [prefix, fail] of faults.failPaths) {
      if (fail.times > 0 && url.pathname.startsWith(prefix)) {
        fail.times--;
        return sendJson(res, fail.status, { error: 'injected failure' });
      }
    }
    if (options.token) {
      const auth = req.headers.authorization;
      if (options.gatedToken && auth === `Bearer ${options.gatedToken}`) return sendJson(res, 403, { error: 'Access to model is restricted' }, { 'X-Error-Code': 'GatedRepo' });
      if (auth !== `Bearer ${options.token}`) return sendJson(res, 401, { error: 'Invalid credentials in Authorization header' });
    }
    let m = /^\/api\/models\/([^/]+\/[^/]+)\/(revision|tree|paths-info)\/([^/?]+)$/.exec(url.pathname);
    if (m) {
      const repo = repos.get(m[1]);
      if (!repo) return sendJson(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
      const rev = decodeURIComponent(m[3]);
      const commit = rev === 'main' || rev === 'HEAD' ? repo.main : repo.commits.has(rev) ? rev : undefined;
      if (!commit) return sendJson(res, 404, { error: `Invalid rev id: ${rev}` }, { 'X-Error-Code': 'RevisionNotFound' });
      const files = repo.commits.get(commit) ?? [];
      if (m[2] === 'revision') {
        return sendJson(res, 200, { _id: `id-${m[1]}`, id: m[1], sha: commit, private: false, siblings: files.map((f) => ({ rfilename: f.path })) });
      }
      if (m[2] === 'tree') {
        const start = Number(url.searchParams.get('cursor') ?? 0);
        const page = files.slice(start, start + pageSize).map(treeEntry);
        const headers: Record<string, string> = {};
        if (start + pageSize < files.length) {
          const next = new URL(url.toString());
          next.searchParams.set('cursor', String(start + pageSize));
          headers.Link = `<http://${req.headers.host}${next.pathname}${next.search}>; rel="next"`;
        }
        return sendJson(res, 200, page, headers);
      }
      const wanted = (JSON.parse(body.toString('utf8') || '{}') as { paths?: string[] }).paths ?? [];
      return sendJson(res, 200, files.filter((f) => wanted.includes(f.path)).map((f) => ({ ...treeEntry(f), lastCommit: { id: commit, title: 'update', date: '2025-01-01T00:00:00.000Z' } })));
    }
    m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (m) {
      const repo = repos.get(m[1]);
      if (!repo) return sendJson(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
      const rev = decodeURIComponent(m[2]);
      const commit = rev === 'main' ? repo.main : rev;
      const name = m[3].split('/').map(decodeURIComponent).join('/');
      const file = repo.commits.get(commit)?.find((f) => f.path === name);
      if (!file) return sendJson(res, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
      const fail = faults.failWith.get(name);
      if (fail && fail.times > 0) {
        fail.times--;
        return sendJson(res, fail.status, { error: 'injected failure' });
      }
      return sendFile(req, res, file, commit);
    }
    sendJson(res, 404, { error: 'not found' });
  }

  function sendFile(req: http.IncomingMessage, res: http.ServerResponse, file: ServedFile, commit: string): void {
    let bytes = file.bytes;
    if (faults.corrupt.has(file.path)) {
      bytes = Buffer.from(bytes);
      bytes[bytes.length >> 1] ^= 0xff;
    }
    const size = bytes.length;
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      ETag: `"${file.gitSha1}"`,
      'X-Repo-Commit': commit,
    };
    if (file.lfs) headers['X-Linked-ETag'] = `"${file.sha256}"`;
    let start = 0;
    let end = size - 1;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (req.headers.range && !range) return sendJson(res, 416, { error: 'bad range' });
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      if (start >= size) return sendJson(res, 416, { error: 'range not satisfiable' }, { 'Content-Range': `bytes */${size}` });
      headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
    }
    headers['Content-Length'] = end - start + 1;
    res.writeHead(range ? 206 : 200, headers);
    const payload = bytes.subarray(start, end + 1);
    const drop = faults.dropAfter.get(file.path);
    if (drop !== undefined && drop < payload.length) {
      faults.dropAfter.delete(file.path);
      res.write(payload.subarray(0, drop), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(payload);
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    faults,
    downloads: (file) => requests.filter((r) => r.url.includes('/resolve/') && (file === undefined || r.url.endsWith(`/${file}`))),
    publish(id, dir, extra = {}) {
      const files = [...readDir(dir), ...Object.entries(extra).map(([p, bytes]) => servedFile(p, bytes))].sort((a, b) => a.path.localeCompare(b.path));
      const commit = crypto.createHash('sha1').update(files.map((f) => `${f.path}:${f.gitSha1}`).join('\n')).digest('hex');
      const repo = repos.get(id) ?? { commits: new Map(), main: commit };
      repo.commits.set(commit, files);
      repo.main = commit;
      repos.set(id, repo);
      return commit;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function readDir(dir: string): ServedFile[] {
  const out: ServedFile[] = [];
  const walk = (sub: string) => {
    for (const e of fs.readdirSync(path.join(dir, sub), { withFileTypes: true })) {
      const rel = sub ? `${sub}/${e.name}` : e.name;
      if (e.isDirectory()) walk(rel);
      else out.push(servedFile(rel, fs.readFileSync(path.join(dir, rel))));
    }
  };
  walk('');
  return out;
}

/** Hashes computed here with node:crypto from the bytes, as the Hub computes them (git blob sha1, LFS sha256). */
function servedFile(p: string, bytes: Buffer): ServedFile {
  return {
    path: p,
    bytes,
    gitSha1: crypto.createHash('sha1').update(Buffer.concat([Buffer.from(`blob ${bytes.length}\0`), bytes])).digest('hex'),
    sha256: crypto.createHash('sha256').update(bytes).digest('hex'),
    // As on the Hub: weights and large files are stored with LFS.
    lfs: /\.(safetensors|bin)$/.test(p) || bytes.length > 1_000_000,
  };
}

function treeEntry(f: ServedFile) {
  const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${f.sha256}\nsize ${f.bytes.length}\n`;
  return f.lfs
    ? { type: 'file', oid: crypto.createHash('sha1').update(`blob ${pointer.length}\0${pointer}`).digest('hex'), size: f.bytes.length, path: f.path, lfs: { oid: f.sha256, size: f.bytes.length, pointerSize: pointer.length } }
    : { type: 'file', oid: f.gitSha1, size: f.bytes.length, path: f.path };
}

function sendJson(res: http.ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(body);
}
