/**
 * Builds the chat page (web/) into dist/web/, which `dvl serve` serves at / (src/server/web-ui.ts). Run by
 * `npm run build` (so `npm ci` runs it too) after the page was type-checked (`tsc -p web/tsconfig.json`).
 *
 * esbuild bundles web/src/main.ts into one minified ES module and web/src/style.css into one stylesheet;
 * every asset's name carries a hash of its content (app-XXXXXXXX.js), so the server can let browsers cache
 * them for good, and index.html, which names them, is written with those names. Nothing is fetched from the
 * network, at build time or in the page.
 *
 *   npx tsx scripts/build-web.ts [OUT_DIR]      (default dist/web; prints the sizes, raw and gzip)
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WEB = path.join(ROOT, 'web');
export const DEFAULT_OUT = path.join(ROOT, 'dist/web');

export interface BuiltFile {
  name: string;
  bytes: number;
  gzipBytes: number;
}

export async function buildWeb(outDir = DEFAULT_OUT): Promise<BuiltFile[]> {
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(outDir, { recursive: true });
  const result = await build({
    entryPoints: { app: path.join(WEB, 'src/main.ts'), style: path.join(WEB, 'src/style.css') },
    outdir: outDir,
    entryNames: '[name]-[hash]',
    bundle: true,
    minify: true,
    format: 'esm',
    // Browsers of 2024 on: the page's colours use light-dark().
    target: ['chrome123', 'firefox120', 'safari17.5'],
    legalComments: 'none',
    metafile: true,
    logLevel: 'warning',
  });
  // Each entry point -> the hashed file esbuild wrote for it.
  const names: Record<string, string> = {};
  for (const [file, output] of Object.entries(result.metafile.outputs)) {
    if (!output.entryPoint) continue;
    const entry = path.basename(output.entryPoint) === 'main.ts' ? 'app.js' : 'style.css';
    names[entry] = path.basename(file);
  }
  names['icon.svg'] = copyHashed(path.join(WEB, 'icon.svg'), outDir);
  const template = fs.readFileSync(path.join(WEB, 'index.html'), 'utf8').replace(/<!--[\s\S]*?-->\n?/g, '');
  const html = template.replace(/\{\{([\w.]+)\}\}/g, (whole, key: string) => {
    const name = names[key];
    if (!name) throw new Error(`web/index.html names {{${key}}}, which the build does not make`);
    return name;
  });
  fs.writeFileSync(path.join(outDir, 'index.html'), html);

  return fs
    .readdirSync(outDir)
    .sort()
    .map((name) => {
      const body = fs.readFileSync(path.join(outDir, name));
      return { name, bytes: body.length, gzipBytes: gzipSync(body, { level: 9 }).length };
    });
}

/** Copies `file` into `dir` as name-HASH.ext; returns the new name. */
function copyHashed(file: string, dir: string): string {
  const body = fs.readFileSync(file);
  const hash = createHash('sha256').update(body).digest('hex').slice(0, 8).toUpperCase();
  const ext = path.extname(file);
  const name = `${path.basename(file, ext)}-${hash}${ext}`;
  fs.writeFileSync(path.join(dir, name), body);
  return name;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const outDir = path.resolve(process.argv[2] ?? DEFAULT_OUT);
  const files = await buildWeb(outDir);
  const total = files.reduce((t, f) => ({ bytes: t.bytes + f.bytes, gzip: t.gzip + f.gzipBytes }), { bytes: 0, gzip: 0 });
  const kb = (n: number) => `${(n / 1024).toFixed(1)} kB`;
  const list = files.map((f) => `${f.name} ${kb(f.bytes)}`).join(', ');
  process.stdout.write(`web page: ${path.relative(ROOT, outDir) || outDir}: ${kb(total.bytes)} (${kb(total.gzip)} gzip): ${list}\n`);
}
