/**
 * The answer-agreement table alone (it is also part of `npm run bench`): each weight format's dev-set answers on
 * the trained proxy checkpoint against fp32's, and dynamic remasking's per threshold. Not a test.
 *
 *   npx tsx scripts/agreement.ts [--proxy ../shared/models/proxy-vqa] [--formats int8,int4-b32-act8,...]
 *                                [--thresholds 0.5,0.7,0.9] [--dir .tmp/bench/proxy] [--json FILE] [--extended]
 * --extended: every question kind about each dev image (540 questions) instead of the 60 dev questions.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { agreementMarkdown, FORMATS, measureAgreement } from './bench/agreement.js';

const { values } = parseArgs({
  options: {
    proxy: { type: 'string', default: '../shared/models/proxy-vqa' },
    formats: { type: 'string' },
    thresholds: { type: 'string', default: '0.5,0.6,0.7,0.8,0.85,0.9,0.95' },
    dir: { type: 'string', default: '.tmp/bench/proxy' },
    json: { type: 'string' },
    extended: { type: 'boolean', default: false },
  },
});
const proxy = path.resolve(values.proxy!);
if (!fs.existsSync(path.join(proxy, 'model.safetensors'))) {
  process.stderr.write(`no proxy checkpoint at ${proxy} (--proxy DIR)\n`);
  process.exit(1);
}
const formats = values.formats?.split(',');
for (const name of formats ?? []) if (!FORMATS.some((f) => f.name === name)) throw new Error(`unknown format ${name} (${FORMATS.map((f) => f.name).join(', ')})`);
const report = await measureAgreement(
  { proxy, dir: path.resolve(values.dir!), formats, extended: values.extended, thresholds: values.thresholds ? values.thresholds.split(',').map(Number) : [] },
  (line) => process.stderr.write(`${line}\n`),
);
if (values.json) fs.writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);
console.log(agreementMarkdown(report));
