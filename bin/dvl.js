#!/usr/bin/env node
// Entry point. `npm ci` compiles src/ into dist/ (the `prepare` script), and the compiled CLI starts in a
// fraction of a second. A checkout whose src/ changed after the last build runs the sources through tsx
// instead (slower to start), so an edit is never shadowed by an old build.
import fs from 'node:fs';

// Starting takes a moment; a Ctrl-C in that time must still end with a `dvl:` line and the documented exit
// code, so provisional handlers cover the time until main() installs its own. They are never removed, only
// retired: removing the last listener of a signal drops one that was caught but not yet delivered to
// JavaScript (seen: a Ctrl-C just as the CLI finished loading was lost).
let handedOver = false;
const early = (name) => {
  if (handedOver) return;
  process.stderr.write('dvl: interrupted\n');
  process.exit(name === 'SIGTERM' ? 143 : 130);
};
process.on('SIGINT', early);
process.on('SIGTERM', early);

const root = new URL('../', import.meta.url);
const { main } = buildIsCurrent(root) ? await import('../dist/cli/main.js') : await fromSource();
handedOver = true;
process.exitCode = await main(process.argv);

/** dist/.built is written after every successful build; any source file newer than it means a rebuild is due. */
function buildIsCurrent(root) {
  let built;
  try {
    built = fs.statSync(new URL('dist/.built', root)).mtimeMs;
  } catch {
    return false;
  }
  const src = new URL('src/', root);
  for (const entry of fs.readdirSync(src, { recursive: true, withFileTypes: true })) {
    if (entry.isFile() && fs.statSync(`${entry.parentPath}/${entry.name}`).mtimeMs > built) return false;
  }
  return true;
}

async function fromSource() {
  const { register } = await import('tsx/esm/api');
  register();
  return import('../src/cli/main.ts');
}
