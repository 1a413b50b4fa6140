import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // Model tests build ONNX graphs and spawn the CLI: two cores, so keep the file-level parallelism modest.
    maxWorkers: 2,
  },
});
