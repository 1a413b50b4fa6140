#!/usr/bin/env node
// Entry point: run the TypeScript CLI through tsx's loader, so no build step is needed after `npm ci`.
//
// Compiling the CLI takes most of a second; a Ctrl-C in that time must still end with a `dvl:` line and the
// documented exit code, so provisional handlers cover the time until main() installs its own.
const early = (name) => {
  process.stderr.write('dvl: interrupted\n');
  process.exit(name === 'SIGTERM' ? 143 : 130);
};
process.on('SIGINT', early);
process.on('SIGTERM', early);

const { register } = await import('tsx/esm/api');
register();
const { main } = await import('../src/cli/main.ts');
process.off('SIGINT', early);
process.off('SIGTERM', early);
process.exitCode = await main(process.argv);
