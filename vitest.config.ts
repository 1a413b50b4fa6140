import { defineConfig } from 'vitest/config';

// Tests that import onnxruntime-node directly (graph tests) must not record its telemetry either; dvl itself
// sets this in src/runtime/onnxruntime.ts. Set here, before the test workers start, it is in their C environment.
process.env.ORT_DISABLE_TELEMETRY ??= '1';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // Model tests build ONNX graphs and spawn the CLI: two cores, so keep the file-level parallelism modest.
    maxWorkers: 2,
  },
});
