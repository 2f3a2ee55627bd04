/** Float64 twin of kernels/sgd.wgsl: SGD with per-tensor gradient-norm clipping (FocuSFT's inner step). */

/** One tensor's element range. */
export interface SgdEntryRef {
  offset: number;
  size: number;
}

/**
 * For each tensor on its own: s = Σ g², g ← g·c/(√s + 1e-12) when √s > c (c > 0), p ← p − lr·g; a
 * tensor with a non-finite s is left unchanged. Returns the per-tensor sums of squares.
 */
export function sgdClippedRef(
  params: Float64Array,
  grads: ArrayLike<number>,
  table: readonly SgdEntryRef[],
  lr: number,
  maxNorm: number,
): Float64Array {
  return Float64Array.from(table, (e) => {
    let s = 0;
    for (let j = 0; j < e.size; j++) s += grads[e.offset + j] * grads[e.offset + j];
    if (!Number.isFinite(s)) return s;
    const norm = Math.sqrt(s);
    const factor = maxNorm > 0 && norm > maxNorm ? maxNorm / (norm + 1e-12) : 1;
    for (let j = 0; j < e.size; j++) params[e.offset + j] -= lr * grads[e.offset + j] * factor;
    return s;
  });
}
