/**
 * onnxruntime-node (1.30) records usage telemetry unless told not to: it writes a device id and an SQLite queue
 * of events under ~/.cache/Microsoft/DeveloperTools/.onnxruntime/, and its library can upload them. dvl
 * promises to send nothing anywhere unless asked, so every onnxruntime that dvl starts runs with
 * ORT_DISABLE_TELEMETRY set (measured: with it, nothing is written; with a read-only HOME, no warning either).
 *
 * onnxruntime reads the variable from the C environment when it initialises. In the main thread, assigning
 * process.env calls setenv(); in a worker_threads Worker it only changes the worker's JS copy. So this must run
 * in the main thread before a worker that loads onnxruntime is spawned (worker-client.ts does), and before
 * onnxruntime is imported in the main thread itself (onnxruntime.ts does).
 *
 * No onnxruntime import here: the main thread of `dvl ask` calls this without loading onnxruntime.
 */
export const TELEMETRY_VARIABLE = 'ORT_DISABLE_TELEMETRY';

/** Sets ORT_DISABLE_TELEMETRY=1 unless the user set it (to anything) already. */
export function disableOrtTelemetry(env: NodeJS.ProcessEnv = process.env): void {
  if (env[TELEMETRY_VARIABLE] === undefined) env[TELEMETRY_VARIABLE] = '1';
}
