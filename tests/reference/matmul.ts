/**
 * Float64 twin of kernels/matmul.wgsl, llm.c style: out = [out +] alpha · op(A) · op(B) [+ bias],
 * with op(A) = A or Aᵀ per batch and B either per batch or shared by all batches.
 */

/** Sizes and layout of one matmul: a is (Bt, M, K) or (Bt, K, M); b is ([Bt,] K, N) or ([Bt,] N, K). */
export interface MatmulRefDims {
  Bt: number;
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
  /** False when one b is shared by every batch. */
  bBatched: boolean;
}

function aIndex(d: MatmulRefDims, batch: number, m: number, k: number): number {
  return batch * d.M * d.K + (d.transA ? k * d.M + m : m * d.K + k);
}

function bIndex(d: MatmulRefDims, batch: number, k: number, n: number): number {
  const base = d.bBatched ? batch * d.K * d.N : 0;
  return base + (d.transB ? n * d.K + k : k * d.N + n);
}

/**
 * out: (Bt, M, N) ← [out +] alpha · op(a) · op(b) [+ bias]; `out` holds the previous values when
 * accumulating.
 */
export function matmulForward(
  out: Float64Array,
  a: Float64Array,
  b: Float64Array,
  d: MatmulRefDims,
  opts: { bias?: Float64Array; accumulate?: boolean; alpha?: number } = {},
): Float64Array {
  const alpha = opts.alpha ?? 1;
  for (let batch = 0; batch < d.Bt; batch++) {
    for (let m = 0; m < d.M; m++) {
      for (let n = 0; n < d.N; n++) {
        let sum = 0;
        for (let k = 0; k < d.K; k++) sum += a[aIndex(d, batch, m, k)] * b[bIndex(d, batch, k, n)];
        const o = (batch * d.M + m) * d.N + n;
        const value = alpha * sum + (opts.bias ? opts.bias[n] : 0);
        out[o] = opts.accumulate ? out[o] + value : value;
      }
    }
  }
  return out;
}

/**
 * Backward of `matmulForward` (out = alpha · op(A) · op(B) + bias): given dOut, writes
 * dA = alpha · dOut · op(B)ᵀ and dB = alpha · op(A)ᵀ · dOut in the stored layouts (dB summed over
 * batches when B is shared) and dBias = column sums of dOut. Gradients are overwritten, not added.
 */
export function matmulBackward(
  dA: Float64Array,
  dB: Float64Array,
  dBias: Float64Array,
  dOut: Float64Array,
  a: Float64Array,
  b: Float64Array,
  d: MatmulRefDims,
  alpha = 1,
): void {
  dA.fill(0);
  dB.fill(0);
  dBias.fill(0);
  for (let batch = 0; batch < d.Bt; batch++) {
    for (let m = 0; m < d.M; m++) {
      for (let n = 0; n < d.N; n++) {
        const g = dOut[(batch * d.M + m) * d.N + n];
        dBias[n] += g;
        for (let k = 0; k < d.K; k++) {
          dA[aIndex(d, batch, m, k)] += alpha * g * b[bIndex(d, batch, k, n)];
          dB[bIndex(d, batch, k, n)] += alpha * g * a[aIndex(d, batch, m, k)];
        }
      }
    }
  }
}
