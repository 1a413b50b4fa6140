/** The weight precisions a model can be converted to (`--dtype`). */
export type WeightDtype = 'fp32' | 'fp16' | 'int8' | 'int4';
export const WEIGHT_DTYPES: readonly WeightDtype[] = ['fp32', 'fp16', 'int8', 'int4'];
