/** IEEE 754 half <-> single conversions (exact widening; narrowing rounds to nearest even). */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Widens one float16 bit pattern to a float32 value (exact: subnormals, infinities and NaN included). */
export function float16ToFloat32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** Narrows a float32 value to the nearest float16 bit pattern (ties to even, overflow to infinity). */
export function float32ToFloat16(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  let e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // rounds to zero
    mantissa |= 0x800000; // implicit leading one
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mantissa & ((1 << shift) - 1);
    let result = mantissa >>> shift;
    if (rest > half || (rest === half && (result & 1))) result += 1;
    return sign | result;
  }
  const rest = mantissa & 0x1fff;
  let result = (e << 10) | (mantissa >>> 13);
  if (rest > 0x1000 || (rest === 0x1000 && (result & 1))) result += 1;
  return sign | result;
}

/** Narrows an array to float16 bit patterns. */
export function toFloat16Array(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32ToFloat16(values[i]);
  return out;
}
