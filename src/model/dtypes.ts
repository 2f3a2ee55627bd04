/**
 * IEEE binary16 (f16) and bfloat16 (bf16) ⇄ binary32 (f32), the conversions safetensors checkpoints
 * need. Everything works on bit patterns, never through a JS number, because a float passing through
 * an f64 may have its NaN payload quieted; bits in, bits out keeps every pattern exact.
 *
 * Decoding is exact (f16 and bf16 are subsets of f32). Encoding rounds to nearest, ties to even, as
 * PyTorch's `.half()` / `.bfloat16()` do; overflow rounds to ±∞ and NaN stays NaN with its top payload
 * bits.
 */

const F32_BITS = new Uint32Array(1);
const F32_VALUE = new Float32Array(F32_BITS.buffer);

/** Bits of the f32 nearest to `x` (x is rounded to f32 first, as storing it in a Float32Array does). */
export function f32Bits(x: number): number {
  F32_VALUE[0] = x;
  return F32_BITS[0];
}

/** The f32 (as a JS number) with bit pattern `bits`. */
export function f32FromBits(bits: number): number {
  F32_BITS[0] = bits;
  return F32_VALUE[0];
}

/** f32 bit pattern of the f16 with bit pattern `h`; exact for every pattern, subnormals, ±∞ and NaN included. */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exponent = (h >>> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0;
  if (exponent !== 0) return (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0;
  // A subnormal m·2⁻²⁴ becomes normal in f32: shift the leading 1 up to bit 10 and lower the exponent.
  let shift = 0;
  let m = mantissa;
  while ((m & 0x400) === 0) {
    m <<= 1;
    shift++;
  }
  return (sign | ((113 - shift) << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

/** f16 bit pattern nearest (ties to even) to the f32 with bit pattern `bits`. */
export function f32BitsToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) {
    if (mantissa === 0) return sign | 0x7c00;
    // Keep the top payload bits; if they are all zero the result would read as ∞, so set the quiet bit.
    const payload = mantissa >>> 13;
    return sign | 0x7c00 | (payload === 0 ? 0x200 : payload);
  }
  const e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Below 2⁻²⁵ even the smallest subnormal is more than twice as far as zero.
    if (e < -10) return sign;
    const significand = mantissa | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const remainder = significand & ((1 << shift) - 1);
    let result = significand >>> shift;
    if (remainder > half || (remainder === half && (result & 1) === 1)) result++;
    return sign | result;
  }
  const remainder = mantissa & 0x1fff;
  let result = (e << 10) | (mantissa >>> 13);
  // A carry out of the mantissa bumps the exponent, and out of the largest finite value gives ∞: both right.
  if (remainder > 0x1000 || (remainder === 0x1000 && (result & 1) === 1)) result++;
  return sign | result;
}

/** f32 bit pattern of the bf16 with bit pattern `b` (bf16 is the top half of an f32). */
export function bf16BitsToF32Bits(b: number): number {
  return (b << 16) >>> 0;
}

/** bf16 bit pattern nearest (ties to even) to the f32 with bit pattern `bits`. */
export function f32BitsToBf16Bits(bits: number): number {
  const top = bits >>> 16;
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) {
    return (top & 0x7f) === 0 ? top | 0x40 : top;
  }
  const roundingBias = 0x7fff + (top & 1);
  return ((bits + roundingBias) >>> 16) & 0xffff;
}

/** Value of the f16 with bit pattern `h`. */
export function f16ToF32(h: number): number {
  return f32FromBits(f16BitsToF32Bits(h));
}

/** f16 bit pattern nearest to `x` (rounded to f32 first). */
export function f32ToF16(x: number): number {
  return f32BitsToF16Bits(f32Bits(x));
}

/** Value of the bf16 with bit pattern `b`. */
export function bf16ToF32(b: number): number {
  return f32FromBits(bf16BitsToF32Bits(b));
}

/** bf16 bit pattern nearest to `x` (rounded to f32 first). */
export function f32ToBf16(x: number): number {
  return f32BitsToBf16Bits(f32Bits(x));
}

let f16Table: Uint32Array | undefined;

/** f32 values of f16 bit patterns (a 256 KiB lookup table, built on first use). */
export function f16ArrayToF32(halves: Uint16Array): Float32Array {
  if (f16Table === undefined) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32Bits(h);
  }
  const table = f16Table;
  const out = new Uint32Array(halves.length);
  for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]];
  return new Float32Array(out.buffer);
}

/** f16 bit patterns nearest to f32 values, read as bits so NaN payloads survive. */
export function f32ArrayToF16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16Bits(bits[i]);
  return out;
}

/** f32 values of bf16 bit patterns. */
export function bf16ArrayToF32(halves: Uint16Array): Float32Array {
  const out = new Uint32Array(halves.length);
  for (let i = 0; i < halves.length; i++) out[i] = halves[i] << 16;
  return new Float32Array(out.buffer);
}

/** bf16 bit patterns nearest to f32 values, read as bits so NaN payloads survive. */
export function f32ArrayToBf16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToBf16Bits(bits[i]);
  return out;
}
