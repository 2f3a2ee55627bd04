/**
 * Float64 twins of kernels/dora.wgsl and of one whole DoRA linear (PEFT's DoraLinearLayer with the
 * norm detached), plus the merge W' = diag(m/n)·(W0 + s·B·A).
 */

type Vec = ArrayLike<number>;

/** norms (rows,) of W[rowOffset + i, :] + s·(B·A)[i, :]; W (·, cols), A (R, cols), B (rows, R). */
export function doraRowNorm(
  w: Vec,
  rowOffset: number,
  a: Vec,
  b: Vec,
  rows: number,
  cols: number,
  R: number,
  scale: number,
): Float64Array {
  const out = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    let sum = 0;
    for (let j = 0; j < cols; j++) {
      let ba = 0;
      for (let k = 0; k < R; k++) ba += b[i * R + k] * a[k * cols + j];
      const v = w[(rowOffset + i) * cols + j] + scale * ba;
      sum += v * v;
    }
    out[i] = Math.sqrt(sum);
  }
  return out;
}

/** y[n, off + j] += (g − 1)·base[n, j] + g·lora[n, j], g = m/n; returns a new y. */
export function doraForward(
  y: Vec,
  base: Vec,
  lora: Vec,
  m: Vec,
  norms: Vec,
  N: number,
  W: number,
  w: number,
  off: number,
): Float64Array {
  const out = Float64Array.from(y);
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < w; j++) {
      const g = m[j] / norms[j];
      out[n * W + off + j] += (g - 1) * base[n * w + j] + g * lora[n * w + j];
    }
  }
  return out;
}

/** dyG = g⊙dy block, dyG1 = (g − 1)⊙dy block. */
export function doraScaleGrad(
  dy: Vec,
  m: Vec,
  norms: Vec,
  N: number,
  W: number,
  w: number,
  off: number,
): { dyG: Float64Array; dyG1: Float64Array } {
  const dyG = new Float64Array(N * w), dyG1 = new Float64Array(N * w);
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < w; j++) {
      const g = m[j] / norms[j];
      const d = dy[n * W + off + j];
      dyG[n * w + j] = g * d;
      dyG1[n * w + j] = (g - 1) * d;
    }
  }
  return { dyG, dyG1 };
}

/** dm[j] + Σ_n dy[n, off + j]·v[n, j] / norms[j]; returns a new dm. */
export function doraMagnitudeGrad(
  dm: Vec,
  dy: Vec,
  v: Vec,
  norms: Vec,
  N: number,
  W: number,
  w: number,
  off: number,
): Float64Array {
  const out = Float64Array.from(dm);
  for (let j = 0; j < w; j++) {
    let sum = 0;
    for (let n = 0; n < N; n++) sum += dy[n * W + off + j] * v[n * w + j];
    out[j] += sum / norms[j];
  }
  return out;
}

/** The sizes and tensors of one DoRA linear: W0 (out, in), A (R, in), B (out, R), m (out,). */
export interface DoraLinearRef {
  w0: Vec;
  a: Vec;
  b: Vec;
  m: Vec;
  out: number;
  in: number;
  R: number;
  scale: number;
}

/** V = W0 + s·B·A (out, in). */
export function doraDirection(p: DoraLinearRef): Float64Array {
  const v = new Float64Array(p.out * p.in);
  for (let i = 0; i < p.out; i++) {
    for (let j = 0; j < p.in; j++) {
      let ba = 0;
      for (let k = 0; k < p.R; k++) ba += p.b[i * p.R + k] * p.a[k * p.in + j];
      v[i * p.in + j] = p.w0[i * p.in + j] + p.scale * ba;
    }
  }
  return v;
}

/** The merged weight W' = diag(m/n)·(W0 + s·B·A), n the row norms of W0 + s·B·A. */
export function doraMerged(p: DoraLinearRef): Float64Array {
  const v = doraDirection(p);
  for (let i = 0; i < p.out; i++) {
    let sum = 0;
    for (let j = 0; j < p.in; j++) sum += v[i * p.in + j] ** 2;
    const g = p.m[i] / Math.sqrt(sum);
    for (let j = 0; j < p.in; j++) v[i * p.in + j] *= g;
  }
  return v;
}

/**
 * Gradients of one DoRA linear from the gradient dW' of its merged weight, with n constant:
 * dm_i = Σ_j dW'[i, j]·V[i, j]/n_i, dV = diag(m/n)·dW', dB = s·dV·Aᵀ, dA = s·Bᵀ·dV.
 */
export function doraGradsFromMerged(
  p: DoraLinearRef,
  dMerged: (i: number, j: number) => number,
): { dA: Float64Array; dB: Float64Array; dm: Float64Array } {
  const v = doraDirection(p);
  const dV = new Float64Array(p.out * p.in);
  const dm = new Float64Array(p.out);
  for (let i = 0; i < p.out; i++) {
    let sq = 0;
    for (let j = 0; j < p.in; j++) sq += v[i * p.in + j] ** 2;
    const n = Math.sqrt(sq);
    let sum = 0;
    for (let j = 0; j < p.in; j++) {
      const d = dMerged(i, j);
      sum += d * v[i * p.in + j];
      dV[i * p.in + j] = (p.m[i] / n) * d;
    }
    dm[i] = sum / n;
  }
  const dA = new Float64Array(p.R * p.in);
  const dB = new Float64Array(p.out * p.R);
  for (let i = 0; i < p.out; i++) {
    for (let k = 0; k < p.R; k++) {
      let sum = 0;
      for (let j = 0; j < p.in; j++) sum += dV[i * p.in + j] * p.a[k * p.in + j];
      dB[i * p.R + k] = p.scale * sum;
    }
  }
  for (let k = 0; k < p.R; k++) {
    for (let j = 0; j < p.in; j++) {
      let sum = 0;
      for (let i = 0; i < p.out; i++) sum += p.b[i * p.R + k] * dV[i * p.in + j];
      dA[k * p.in + j] = p.scale * sum;
    }
  }
  return { dA, dB, dm };
}
