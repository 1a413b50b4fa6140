/**
 * `dvl serve`: the model stays loaded behind an HTTP server that speaks the OpenAI, Anthropic and Ollama APIs
 * (src/server), with a chat page at / (web/; --no-ui turns it off). Safe defaults: loopback only, no CORS, Host
 * header checked, an API key when one is set, remote image URLs and local image paths off. SIGINT/SIGTERM drain:
 * new connections are refused, waiting requests get 503, the running answer gets `--drain-timeout` to finish and
 * is then cancelled, the models are unloaded, exit 0. A --model that cannot load ends the command with its error
 * (exit 3).
 */
import path from 'node:path';
import type { Command } from 'commander';
import { DTYPE_CHOICES, type DtypeChoice } from '../convert/weight-dtype.js';
import { DvlError, modelError, usageError } from '../util/errors.js';
import { DEFAULT_DTYPE, DTYPE_HELP } from './pull-command.js';
import { capThreads, intInRange, oneOf } from './parse.js';

export const DEFAULT_PORT = 11435;

interface ServeFlags {
  model?: string;
  dtype: DtypeChoice;
  host: string;
  port: number;
  keepAlive: string;
  apiKey?: string;
  maxQueue: number;
  ctxSize?: number;
  maxLoaded: number;
  allowPull?: boolean;
  allowRemoteImages?: boolean;
  allowPrivateImageHosts?: boolean;
  mediaDir?: string;
  corsOrigin: string[];
  allowedHost: string[];
  bodyLimitMb: number;
  imageCacheMb: number;
  maxImagePixels: number;
  drainTimeout: number;
  ui: boolean;
  threads?: number;
  token?: string;
  quiet?: boolean;
}

const collect = (value: string, previous: string[]) => [...previous, ...value.split(',').map((v) => v.trim()).filter(Boolean)];

export function registerServe(program: Command, signal: AbortSignal): void {
  program
    .command('serve')
    .description('Keep a model loaded and answer over HTTP: a chat page at /, the OpenAI (/v1/chat/completions), Anthropic (/v1/messages) and Ollama (/api) APIs.')
    .option('-m, --model <model>', 'model to load at start-up (Hub id or checkpoint directory); requests may name any listed model')
    .option('--dtype <dtype>', DTYPE_HELP, oneOf('--dtype', DTYPE_CHOICES), DEFAULT_DTYPE)
    .option('--host <host>', 'address to listen on; "localhost" is 127.0.0.1 and ::1, 0.0.0.0 every interface', 'localhost')
    .option('--port <n>', 'TCP port', intInRange('--port', 0, 65535), DEFAULT_PORT)
    .option('--keep-alive <duration>', 'how long a model stays loaded after its last request (5m, 1h, 30s; -1 forever; 0 unload at once)', '5m')
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" (or "x-api-key: <key>") on every route but /health (default: $DVL_API_KEY)')
    .option('--ctx-size <n>', "most prompt plus answer tokens a request may use (default: each model's context, max_position_embeddings); longer ones get 400", intInRange('--ctx-size', 1))
    .option('--max-queue <n>', 'requests that may wait behind the running one; more get 503', intInRange('--max-queue', 0, 10_000), 16)
    .option('--max-loaded <n>', 'models held in memory at once (the least recently used goes first)', intInRange('--max-loaded', 1, 16), 1)
    .option('--allow-pull', 'download Hub models a request names that are not pulled yet')
    .option('--allow-remote-images', 'fetch http(s) image URLs (size cap, timeout, public addresses only)')
    .option('--allow-private-image-hosts', 'with --allow-remote-images: also fetch from loopback and private addresses')
    .option('--media-dir <dir>', 'allow image paths (and file: URLs) inside this directory')
    .option('--cors-origin <origin>', 'allow browser requests from this origin (repeatable, or comma-separated)', collect, [])
    .option('--allowed-host <name>', 'accept this Host header besides the loopback names (a reverse proxy; repeatable)', collect, [])
    .option('--body-limit-mb <n>', 'largest request body, in MB (413 beyond)', intInRange('--body-limit-mb', 1, 4096), 32)
    .option('--image-cache-mb <n>', 'memory for encoded images kept for later requests, in MB', intInRange('--image-cache-mb', 0, 1 << 20), 512)
    .option('--max-image-pixels <n>', 'largest image a request may send (width x height, checked before decoding)', intInRange('--max-image-pixels', 1), 40_000_000)
    .option('--drain-timeout <seconds>', 'on SIGINT/SIGTERM, how long running answers may take before they are cancelled', intInRange('--drain-timeout', 0, 3), 3)
    .option('--no-ui', 'do not serve the chat page at / (GET / then answers "dvl is running")')
    .option('--threads <n>', 'CPU threads for onnxruntime (default: all cores)', intInRange('--threads', 1, 1024))
    .option('--token <token>', 'Hugging Face access token, with --allow-pull (default: $HF_TOKEN)')
    .option('-q, --quiet', 'no access log on stderr')
    .addHelpText(
      'after',
      `
Requests run one at a time in arrival order (a CPU gains nothing from two at once). A model loads with its
first request (or at start-up with --model; /health answers 503 until it is ready) and stays loaded for
--keep-alive after its last one. Answers are those of 'dvl ask' with the same settings, token for token;
settings a request leaves out take 'dvl ask's defaults. Encoded images are kept by content, and the prompt
rows a request shares with the previous one (system prompt, image, earlier turns) are not computed again:
usage.prompt_tokens_details.cached_tokens counts them.

Routes:
  GET  /                      the chat page: drop a photo, ask, watch the answer denoise (--no-ui: off)
  POST /v1/chat/completions   OpenAI chat (stream, images as data: URLs, extra fields steps, block_size,
                              remasking, threshold, min_pixels, max_pixels, top_k)
  GET  /v1/models  /v1/models/{id}
  POST /api/chat  /api/generate   Ollama (images as base64; options.num_predict, steps, ...)
  GET  /api/tags  /api/ps  /api/version    POST /api/show
  POST /dvl/v1/ask            dvl's own, what 'dvl ask --host' speaks (NDJSON events)
  GET  /health    GET /metrics (Prometheus)

Examples:
  dvl serve -m hustvl/DiffusionVL-Qwen2.5VL-3B     # then open http://localhost:${DEFAULT_PORT}/
  curl http://localhost:${DEFAULT_PORT}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "hustvl/DiffusionVL-Qwen2.5VL-3B", "messages": [{"role": "user", "content": "Hi"}]}'
  DVL_API_KEY=secret dvl serve -m ./ckpt --host 0.0.0.0 --cors-origin http://localhost:3000`,
    )
    .action(async (flags: ServeFlags) => {
      const { parseDuration } = await import('../server/ollama.js');
      const keepAliveMs = parseDuration(flags.keepAlive);
      if (keepAliveMs === null) throw usageError(`--keep-alive must be a duration like 5m, 30s, 1h, 0 or -1, got '${flags.keepAlive}'`);
      if (flags.allowPrivateImageHosts && !flags.allowRemoteImages) throw usageError('--allow-private-image-hosts needs --allow-remote-images');
      const apiKey = flags.apiKey ?? (process.env.DVL_API_KEY || undefined);
      const log = flags.quiet ? () => {} : (line: string) => process.stderr.write(`dvl: ${line}\n`);
      const { startServer } = await import('../server/serve.js');
      const { DEFAULT_MEDIA_POLICY } = await import('../server/media.js');
      const server = await startServer({
        host: flags.host,
        port: flags.port,
        allowedHosts: flags.allowedHost,
        apiKey,
        corsOrigins: flags.corsOrigin,
        bodyLimitBytes: flags.bodyLimitMb * 1024 * 1024,
        maxQueue: flags.maxQueue,
        ctxSize: flags.ctxSize,
        pingMs: 5000,
        ui: flags.ui,
        media: {
          ...DEFAULT_MEDIA_POLICY,
          allowRemote: Boolean(flags.allowRemoteImages),
          allowPrivate: Boolean(flags.allowPrivateImageHosts),
          mediaDir: flags.mediaDir ? path.resolve(flags.mediaDir) : undefined,
          maxPixels: flags.maxImagePixels,
        },
        // The access log: -q silences it (as its help says).
        log,
        pool: {
          model: flags.model,
          dtype: flags.dtype,
          keepAliveMs,
          maxLoaded: flags.maxLoaded,
          allowPull: Boolean(flags.allowPull),
          threads: capThreads(flags.threads),
          token: flags.token,
          imageCacheBytes: flags.imageCacheMb * 1024 * 1024,
          env: process.env,
          log,
        },
      }).catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'EADDRINUSE') throw usageError(`port ${flags.port} is in use (another dvl serve?); pick another with --port`);
        if (error.code === 'EADDRNOTAVAIL' || error.code === 'ENOTFOUND') throw usageError(`cannot listen on --host ${flags.host}: ${error.message}`);
        throw error;
      });
      process.stderr.write(`dvl: serving on ${server.addresses.map((a) => `http://${a}`).join(', ')}${apiKey ? ' (API key required)' : ''}\n`);
      if (flags.ui) process.stderr.write(`dvl: chat page at ${server.url}/\n`);
      // Until SIGINT/SIGTERM, or until the --model fails to load: a server without its model would answer
      // /health 200 and every request with an error, so it stops instead, with the load error (exit 3).
      const outcome = await new Promise<{ failed: unknown } | null>((resolve) => {
        signal.addEventListener('abort', () => resolve(null), { once: true });
        server.ready.catch((error: unknown) => resolve({ failed: error }));
      });
      if (outcome && !signal.aborted) {
        await server.close(0);
        throw loadError(flags.model!, outcome.failed);
      }
      process.stderr.write('dvl: shutting down\n');
      await server.close(flags.drainTimeout * 1000);
    });
}

/** The --model's load failure as `dvl ask` reports one: a model problem (exit 3), one line naming the model. */
function loadError(model: string, error: unknown): DvlError {
  const message = String((error as Error)?.message ?? error).split('\n')[0];
  return modelError(`cannot load ${model}: ${message}`, error);
}
