/**
 * Float64 twins of kernels/sparse_ffn.wgsl (indexed column gather, scatter-add and column sums) and of
 * kernels/attention_filters.wgsl (temperature → logit scale and its chain rule), written the plain way.
 * Layouts: wide (rows, W), block (rows, k), index (k,).
 */

/** out[n, i] = wide[n, index[i]]. */
export function gatherColumns(
  wide: ArrayLike<number>,
  index: ArrayLike<number>,
  rows: number,
  W: number,
): Float64Array {
  const k = index.length;
  const out = new Float64Array(rows * k);
  for (let n = 0; n < rows; n++) for (let i = 0; i < k; i++) out[n * k + i] = wide[n * W + index[i]];
  return out;
}

/** out[n, index[i]] += α·block[n, i] on a copy of `wide`. */
export function scatterAddColumns(
  wide: ArrayLike<number>,
  block: ArrayLike<number>,
  index: ArrayLike<number>,
  rows: number,
  W: number,
  alpha = 1,
): Float64Array {
  const k = index.length;
  const out = Float64Array.from(wide);
  for (let n = 0; n < rows; n++) {
    for (let i = 0; i < k; i++) out[n * W + index[i]] += alpha * block[n * k + i];
  }
  return out;
}

/** Σ_n |a[n, j]| or Σ_n |a[n, j]·b[n, j]| per column j. */
export function columnSaliency(
  a: ArrayLike<number>,
  b: ArrayLike<number> | null,
  rows: number,
  W: number,
): Float64Array {
  const out = new Float64Array(W);
  for (let n = 0; n < rows; n++) {
    for (let j = 0; j < W; j++) out[j] += Math.abs(a[n * W + j] * (b ? b[n * W + j] : 1));
  }
  return out;
}

/** Per-head logit scale exp(τ)/√D. */
export function temperatureScale(tau: ArrayLike<number>, D: number): Float64Array {
  return Float64Array.from(tau, (t) => Math.exp(t) / Math.sqrt(D));
}

/** dτ = dScale·exp(τ)/√D. */
export function temperatureGrad(dScale: ArrayLike<number>, tau: ArrayLike<number>, D: number): Float64Array {
  return Float64Array.from(dScale, (g, h) => g * Math.exp(tau[h]) / Math.sqrt(D));
}
