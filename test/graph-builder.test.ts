import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { GraphBuilder, float } from '../src/convert/onnx/graph-builder.js';

describe('GraphBuilder', () => {
  it('writes a graph whose external and inline initializers onnxruntime reads back', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-gb-'));
    const g = new GraphBuilder({ graphName: 't', modelPath: path.join(dir, 'm.onnx') });
    const x = g.input('x', 'float32', ['n', 300]);
    // 300x2 weight (2400 bytes) goes external; the bias stays inline.
    const w = new Float32Array(600).map((_, i) => ((i * 37) % 11) - 5);
    const wName = g.initializer('w', 'float32', [300, 2], w);
    const b = g.floats('b', [0.5, -0.25]);
    const y = g.op('Add', [g.op('MatMul', [x, wName]), b]);
    const z = g.op('LeakyRelu', [y], { alpha: float(0.5) });
    g.output(z, 'z', 'float32', ['n', 2]);
    const sizes = g.finish();
    expect(sizes.dataBytes).toBe(2400);
    const session = await ort.InferenceSession.create(path.join(dir, 'm.onnx'));
    const xs = new Float32Array(600).map((_, i) => (i % 7) / 7);
    const out = (await session.run({ x: new ort.Tensor('float32', xs, [2, 300]) })).z.data as Float32Array;
    for (let r = 0; r < 2; r++) {
      for (let c = 0; c < 2; c++) {
        let acc = c === 0 ? 0.5 : -0.25;
        for (let k = 0; k < 300; k++) acc += xs[r * 300 + k] * w[k * 2 + c];
        const expected = acc >= 0 ? acc : 0.5 * acc;
        expect(out[r * 2 + c]).toBeCloseTo(expected, 3);
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a non-integer number as an int attribute', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-gb-'));
    const g = new GraphBuilder({ graphName: 't', modelPath: path.join(dir, 'm.onnx') });
    const x = g.input('x', 'float32', [1]);
    expect(() => g.op('LeakyRelu', [x], { alpha: 0.5 })).toThrow(/float\(\)/);
    g.abort();
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
