import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
/** The package version, read from package.json (recorded in manifests and printed by --version). */
export const DVL_VERSION: string = (require('../package.json') as { version: string }).version;
