/** Float64 twins of kernels/elementwise.wgsl. Scalars are taken as given; tests pass them rounded to f32. */

/** out = a + b. out, a, b: (n,). */
export function add(out: Float64Array, a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  for (let i = 0; i < out.length; i++) out[i] = a[i] + b[i];
  return out;
}

/** out = a · b. out, a, b: (n,). */
export function mul(out: Float64Array, a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  for (let i = 0; i < out.length; i++) out[i] = a[i] * b[i];
  return out;
}

/** out = α·a. out, a: (n,). */
export function scale(out: Float64Array, a: ArrayLike<number>, alpha: number): Float64Array {
  for (let i = 0; i < out.length; i++) out[i] = alpha * a[i];
  return out;
}

/** out = out + α·a, in place. out, a: (n,). */
export function axpy(out: Float64Array, a: ArrayLike<number>, alpha: number): Float64Array {
  for (let i = 0; i < out.length; i++) out[i] += alpha * a[i];
  return out;
}

/** out = value. out: (n,). */
export function fill(out: Float64Array, value: number): Float64Array {
  for (let i = 0; i < out.length; i++) out[i] = value;
  return out;
}
