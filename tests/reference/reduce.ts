/** Float64 twins of kernels/reduce.wgsl: row reductions over the last dimension and full sums. */

/** out[n] = sum, max or mean of x[n·C … n·C + C). out: (N,); x: (N, C). */
export function rowReduce(
  out: Float64Array,
  x: ArrayLike<number>,
  N: number,
  C: number,
  op: "sum" | "max" | "mean",
): Float64Array {
  for (let n = 0; n < N; n++) {
    const base = n * C;
    let acc = x[base];
    for (let c = 1; c < C; c++) {
      const v = x[base + c];
      acc = op === "max" ? Math.max(acc, v) : acc + v;
    }
    out[n] = op === "mean" ? acc / C : acc;
  }
  return out;
}

/** out[0] = Σ x or Σ x²; also returns Σ|x| or Σ x² (the scale of the rounding error of an f32 sum). */
export function reduceFull(
  out: Float64Array,
  x: ArrayLike<number>,
  op: "sum" | "sumsq",
): { magnitude: number } {
  let acc = 0, magnitude = 0;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    acc += op === "sumsq" ? v * v : v;
    magnitude += op === "sumsq" ? v * v : Math.abs(v);
  }
  out[0] = acc;
  return { magnitude };
}
