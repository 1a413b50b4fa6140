/**
 * The shape of the code (docs/architecture.md), checked by `npm test` with dependency-cruiser:
 * a library of stage folders under src/, two thin front ends over it (src/cli, src/server), model families
 * behind src/models/index.ts, and no import cycles (type-only imports count: a reader follows them too).
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Import cycles make a reader go round in circles: break them by moving what both sides need below both.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'server-not-cli',
      severity: 'error',
      comment: 'The server is a front end of the library, like the CLI: what both need belongs in the library.',
      from: { path: '^src/server/' },
      to: { path: '^src/cli/' },
    },
    {
      name: 'cli-not-server',
      severity: 'error',
      comment: "The CLI uses the library; only the serve command may start the server (the one arrow between them).",
      from: { path: '^src/cli/', pathNot: '^src/cli/serve-command\\.ts$' },
      to: { path: '^src/server/' },
    },
    {
      name: 'library-not-adapters',
      severity: 'error',
      comment: 'The library must not know its front ends: it never imports src/cli or src/server.',
      from: { path: '^src/', pathNot: '^src/(cli|server)/' },
      to: { path: '^src/(cli|server)/' },
    },
    {
      name: 'stages-not-families',
      severity: 'error',
      comment: 'The shared stages see model families only through src/models/index.ts (and the interface in src/models/family.ts).',
      from: { path: '^src/', pathNot: '^src/models/' },
      to: { path: '^src/models/(?!index\\.ts$|family\\.ts$)' },
    },
    {
      name: 'families-not-each-other',
      severity: 'error',
      comment: 'A model family is a folder of its own: what two families share belongs in a shared stage.',
      from: { path: '^src/models/([^/]+)/' },
      to: { path: '^src/models/([^/]+)/', pathNot: '^src/models/$1/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    includeOnly: '^src/',
  },
};
