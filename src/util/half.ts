/** IEEE 754 half precision: narrowing (round to nearest even, subnormals, overflow to infinity) and widening. */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The half-precision bit pattern nearest to `value` (as float32 first), ties to even; overflow -> ±Inf. */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  const bits = u32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | (mantissa === 0 ? 0x7c00 : 0x7e00 | (mantissa >>> 13)); // Inf, NaN (stays NaN)
  const e = exponent - 127; // unbiased
  if (e >= -14) {
    // Normal half (or overflow): keep 10 mantissa bits, round the 13 dropped ones to nearest even.
    let half = ((e + 15) << 10) | (mantissa >>> 13);
    const dropped = mantissa & 0x1fff;
    if (dropped > 0x1000 || (dropped === 0x1000 && (half & 1) === 1)) half++; // a carry may bump the exponent: fine
    return sign | (half >= 0x7c00 ? 0x7c00 : half);
  }
  // Subnormal half: value = m * 2^(e-23) with the implicit bit; in units of 2^-24 that is m >> (-e - 1).
  const shift = -e - 1; // >= 14
  if (shift > 24) return sign; // below half the smallest subnormal (2^-25), float32 subnormals included: zero
  const m = mantissa | 0x800000;
  let half = m >>> shift;
  const dropped = m & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  if (dropped > halfway || (dropped === halfway && (half & 1) === 1)) half++;
  return sign | half;
}

/** Converts a whole tensor to half-precision bit patterns. */
export function toFloat16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32ToFloat16Bits(values[i]);
  return out;
}

/** The value of a half-precision bit pattern. */
export function float16BitsToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}
