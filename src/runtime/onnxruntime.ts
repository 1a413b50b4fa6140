/**
 * The only place dvl imports onnxruntime-node from: telemetry is turned off first (ort-telemetry.ts), then the
 * package is imported, so nothing can initialise onnxruntime before the variable is set. Use `ort` for values
 * (ort.Tensor, ort.InferenceSession.create) and the `Ort` namespace for types (Ort.InferenceSession).
 */
import type * as OrtModule from 'onnxruntime-node';
import { disableOrtTelemetry } from './ort-telemetry.js';

export type * as Ort from 'onnxruntime-node';

disableOrtTelemetry();

export const ort: typeof OrtModule = await import('onnxruntime-node');
