/**
 * onnxruntime-node, loaded with its usage telemetry off. (Placeholder until the telemetry work lands.)
 */
export const ort = await import('onnxruntime-node');
