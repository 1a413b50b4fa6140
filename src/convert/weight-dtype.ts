/**
 * The weight precisions a model can be converted to (`--dtype`). What each stores where is its recipe
 * (recipes.ts); `int4-all` is the int4 of dvl 0.x, every decoder linear at 4 bits, kept selectable.
 */
export type WeightDtype = 'fp32' | 'fp16' | 'int8' | 'int4' | 'int4-all';
export const WEIGHT_DTYPES: readonly WeightDtype[] = ['fp32', 'fp16', 'int8', 'int4', 'int4-all'];

/** What `--dtype` takes: a dtype, or `auto` (the default): the model's default dtype (default-dtype.ts). */
export type DtypeChoice = WeightDtype | 'auto';
export const DTYPE_CHOICES: readonly DtypeChoice[] = ['auto', ...WEIGHT_DTYPES];
