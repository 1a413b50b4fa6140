/**
 * What `dvl --version` reports besides dvl's own version: the onnxruntime build it runs on and the execution
 * providers that build knows, as `ollama -v` and `llama-cli --version` do, so a bug report says what ran.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

export interface RuntimeVersions {
  onnxruntime: string;
  /** Every provider onnxruntime-node lists; `installed` is false for those whose library is not on disk. */
  providers: { name: string; installed: boolean }[];
}

export async function runtimeVersions(): Promise<RuntimeVersions> {
  const { env, listSupportedBackends } = await import('./onnxruntime.js').then((m) => m.ort);
  // Providers that are not bundled (CUDA, TensorRT) are separate libraries next to the binding, present only
  // when the user installed them (README: "CUDA is an opt-in").
  const require = createRequire(import.meta.url);
  const bindingDir = path.join(path.dirname(require.resolve('onnxruntime-node')), '..', 'bin', 'napi-v6', process.platform, process.arch);
  const providers = listSupportedBackends().map(({ name, bundled }) => ({
    name,
    installed: bundled || fs.existsSync(path.join(bindingDir, `libonnxruntime_providers_${name}.so`)),
  }));
  return { onnxruntime: env.versions.node ?? env.versions.common, providers };
}

export function formatVersions(dvlVersion: string, runtime: RuntimeVersions): string {
  const names = (installed: boolean) => runtime.providers.filter((p) => p.installed === installed).map((p) => p.name);
  const missing = names(false);
  return [
    `dvl ${dvlVersion}`,
    `onnxruntime-node ${runtime.onnxruntime}, node ${process.versions.node}, ${process.platform}-${process.arch}`,
    `execution providers: ${names(true).join(', ')}${missing.length ? ` (not installed: ${missing.join(', ')})` : ''}; dvl runs on cpu`,
  ].join('\n');
}
