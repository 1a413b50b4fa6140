/**
 * What `dvl pull` resolved, per model and revision name: `$DVL_HOME/models/hub/<org>--<name>/pulls.json`.
 * `ask` reads it to use the pulled commit without asking the Hub again (zero requests); `pull` rewrites it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { makeDirs } from '../util/dirs.js';

export interface PullRecord {
  commit: string;
  /** The snapshot directory in the Hugging Face cache. */
  dir: string;
  pulledAt: string;
}

export const hubModelDir = (home: string, id: string) => path.join(home, 'models', 'hub', id.replace('/', '--'));
const recordFile = (home: string, id: string) => path.join(hubModelDir(home, id), 'pulls.json');

export function readPullRecords(home: string, id: string): Record<string, PullRecord> {
  try {
    const parsed = JSON.parse(fs.readFileSync(recordFile(home, id), 'utf8')) as unknown;
    if (typeof parsed !== 'object' || parsed === null) return {};
    const out: Record<string, PullRecord> = {};
    for (const [name, r] of Object.entries(parsed as Record<string, Partial<PullRecord>>)) {
      if (typeof r?.commit === 'string' && typeof r.dir === 'string') out[name] = { commit: r.commit, dir: r.dir, pulledAt: String(r.pulledAt ?? '') };
    }
    return out;
  } catch {
    return {};
  }
}

export function writePullRecord(home: string, id: string, revision: string, record: PullRecord): void {
  const file = recordFile(home, id);
  const all = { ...readPullRecords(home, id), [revision]: record };
  makeDirs(path.dirname(file));
  fs.writeFileSync(`${file}.tmp-${process.pid}`, `${JSON.stringify(all, null, 2)}\n`);
  fs.renameSync(`${file}.tmp-${process.pid}`, file);
}
