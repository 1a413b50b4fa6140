/**
 * What an answer under a JSON Schema reports, without a model: the finish reason AnswerText derives from the
 * model side's result (a complete document is finished even when no EOS fitted after it; an unfinished one is
 * 'length'; a stop string is 'stop' and named), the CLI's warning for a document cut short, and the
 * per-model constraint cache (the vocabulary built once, constraints kept by schema text, least recently used
 * dropped first, unsupported schemas refused before the vocabulary is built).
 */
import { describe, expect, it } from 'vitest';
import { AnswerText, type RunResult } from '../src/ask.js';
import { cutShortWarning } from '../src/cli/json-format.js';
import { checkJsonFormat, JsonConstraintCache } from '../src/generate/json-schema/index.js';
import { DvlError } from '../src/util/errors.js';
import { qwenTokenizer, QWEN_DIR, QWEN_EOS } from './helpers/json-schemas.js';
import fs from 'node:fs';
import path from 'node:path';

function runResult(tokens: number[], over: Partial<RunResult>): RunResult {
  return {
    tokens,
    rawTokens: tokens,
    stoppedAtEos: false,
    stoppedByCaller: false,
    seed: 0,
    images: [],
    stats: { nfe: 1, promptTokens: 5, imageTokens: 0, cachedTokens: 0, blocks: 1, ms: { preprocess: 0, vision: 0, prefill: 0, decode: 0 } },
    ...over,
  };
}

describe('AnswerText under a constraint', () => {
  const tokenizer = qwenTokenizer();
  const ids = tokenizer.encodeText('{"a":1}');

  it('a complete document is finished (eos) even without an EOS after it; an unfinished one is length', () => {
    const text = () => new AnswerText(tokenizer, QWEN_EOS, ids.length);
    expect(text().result(runResult(ids, { constraintComplete: true })).finishReason).toBe('eos');
    const cut = text().result(runResult(ids.slice(0, -1), { constraintComplete: false }));
    expect(cut.finishReason).toBe('length');
    expect(cutShortWarning(cut, 6)).toBe('the JSON answer is cut short: -n 6 ran out before it closed (give a larger -n)');
    expect(cutShortWarning({ finishReason: 'eos', constraintComplete: true }, 6)).toBeNull();
    // Without a constraint: as before, EOS or not.
    expect(text().result(runResult(ids, { stoppedAtEos: true })).finishReason).toBe('eos');
    expect(text().result(runResult(ids, {})).finishReason).toBe('length');
    expect(cutShortWarning({ finishReason: 'length' }, 6)).toBeNull();
  });

  it('a stop string ends the answer with finishReason stop and names the string', () => {
    const answer = new AnswerText(tokenizer, QWEN_EOS, ids.length, { stop: ['zz', '":'] });
    answer.onRun({ type: 'prompt', length: 5 });
    answer.onRun({ type: 'block-end', block: 0, firstIndex: 0, ids, committed: true });
    const result = answer.result(runResult(ids, { constraintComplete: false, stoppedByCaller: true }));
    expect(result).toMatchObject({ text: '{"a', finishReason: 'stop', stopSequence: '":' });
  });
});

describe('JsonConstraintCache', () => {
  const tokenizerJson = JSON.parse(fs.readFileSync(path.join(QWEN_DIR, 'tokenizer.json'), 'utf8')) as unknown;

  it('builds the vocabulary once, keeps constraints by schema text, drops the least recently used', () => {
    let reads = 0;
    const cache = new JsonConstraintCache(() => (reads++, tokenizerJson), QWEN_EOS, 2);
    // Refused before the vocabulary is built.
    expect(() => cache.get({ type: 'string', pattern: 'x' })).toThrow(DvlError);
    expect(reads).toBe(0);
    const a = cache.get({ type: 'integer' });
    expect(cache.get({ type: 'integer' })).toBe(a);
    const b = cache.get('json_object');
    expect(a.vocabulary).toBe(b.vocabulary);
    expect(reads).toBe(1);
    // Key order is part of a schema (properties are written in it): another text, another constraint.
    const c1 = cache.get({ properties: { x: { type: 'null' } }, required: ['x'] });
    expect(cache.size).toBe(2);
    // {type: integer} was the least recently used: compiled again.
    expect(cache.get({ type: 'integer' })).not.toBe(a);
    expect(cache.get({ required: ['x'], properties: { x: { type: 'null' } } })).not.toBe(c1);
    expect(reads).toBe(1);
  });

  it('checkJsonFormat: the shortest document, and the budget refused below it', () => {
    expect(checkJsonFormat('json_object')).toBe(2);
    expect(() => checkJsonFormat({ enum: ['abc'] }, 4, '-n')).toThrow('the schema needs at least 5 tokens; -n is 4');
    expect(checkJsonFormat({ enum: ['abc'] }, 5, '-n')).toBe(5);
  });
});
