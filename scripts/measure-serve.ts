// `npx tsx scripts/measure-serve.ts`: time to first token of dvl serve on the bench's 3B int4 synthetic checkpoint
// (npm run bench writes it under .tmp/bench): cold (the first request loads the model), warm with a new image,
// a repeated image with another question, text only; and the server's overhead per request (the client's
// total minus the stage times the server reports). Not a test: prints what it measured.
import path from 'node:path';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
const env = { ...process.env, DVL_HOME: path.resolve('.tmp/bench/home'), CI: '1' };
const model = path.resolve('.tmp/bench/synthetic-3b');
const child = spawn(process.execPath, ['bin/dvl.js', 'serve', '--dtype', 'int4', '--port', '0', '--keep-alive', '-1'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
let stderr = '';
const url = await new Promise<string>((resolve) => child.stderr.on('data', (d) => { stderr += d; const m = /serving on (http:\/\/[^\s,]+)/.exec(stderr); if (m) resolve(m[1]); }));
const image = (file: string) => `data:image/${file.endsWith('.png') ? 'png' : 'jpeg'};base64,${fs.readFileSync(file).toString('base64')}`;
async function ask(label: string, img: string | null, text: string, max = 16) {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, stream: true, stream_options: { include_usage: true }, max_tokens: max, messages: [{ role: 'user', content: img ? [{ type: 'image_url', image_url: { url: img } }, { type: 'text', text }] : text }] }),
  });
  let first = 0; let usage: any = null; let buf = '';
  for await (const chunk of res.body as any) {
    buf += Buffer.from(chunk).toString();
    for (const line of buf.split('\n\n').slice(0, -1)) {
      if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
      const j = JSON.parse(line.slice(6));
      if (!first && j.choices?.[0]?.delta?.content) first = performance.now() - t0;
      if (j.usage) usage = j;
    }
    buf = buf.split('\n\n').at(-1)!;
  }
  const total = performance.now() - t0;
  const t = usage.timings;
  console.log(`${label}: first token ${first.toFixed(0)} ms, total ${total.toFixed(0)} ms | prompt ${usage.usage.prompt_tokens}, cached ${usage.usage.prompt_tokens_details.cached_tokens} | load ${t.load_ms} vision ${t.vision_ms} prefill ${t.prefill_ms} decode ${t.decode_ms} total_ms ${t.total_ms} | overhead ${(total - (t.preprocess_ms + t.vision_ms + t.prefill_ms + t.decode_ms + t.load_ms + t.queue_ms)).toFixed(0)} ms`);
}
const photo = image('.tmp/bench/images/square-512.png');
await ask('cold (loads the model), 512x512 image', photo, 'Describe this image.');
await ask('warm, same image, another question', photo, 'What colour is it?');
const other = image('fixtures/images/coffee.jpg');
await ask('warm, a new image (600x400)', other, 'Describe this image.');
await ask('warm, repeated image, another question', other, 'What is in the cup?');
await ask('warm, text only', null, 'Hi');
for (let i = 0; i < 3; i++) await ask(`warm, text only again ${i + 1}`, null, 'Hi');
child.kill('SIGTERM');
await new Promise((r) => child.on('exit', r));
