/**
 * Float64 CPU twins of the layer kernels, written as llm.c's train_gpt2.c loops: token and position
 * embeddings, LayerNorm, RMSNorm, GELU (tanh form) and SwiGLU. Outputs first, then inputs, then
 * sizes. Legend: B batch, T tokens, N = B·T rows, C channels, V vocabulary, F MLP width.
 *
 * Gradient semantics follow the kernels: parameter gradients (dwte, dwpe, dw, db) and the norms' dx
 * accumulate (+=); the activations' backwards (GELU, SwiGLU) write.
 */

type Vec = Float64Array;
type Ints = ArrayLike<number>;

// ----------------------------------------------------------------------------------------------
// encoder: out = wte[token] + wpe[positionOffset + t]

/** out: (B, T, C); tokens: (B, T); wte: (V, C); wpe: (maxT, C) or null (RoPE models add no position row). */
export function encoderForward(
  out: Vec,
  tokens: Ints,
  wte: Vec,
  wpe: Vec | null,
  B: number,
  T: number,
  C: number,
  positionOffset = 0,
): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const outBt = (b * T + t) * C;
      const wteIx = tokens[b * T + t] * C;
      const wpeT = (positionOffset + t) * C;
      for (let c = 0; c < C; c++) out[outBt + c] = wte[wteIx + c] + (wpe ? wpe[wpeT + c] : 0);
    }
  }
}

/** dwte: (V, C) +=; dwpe: (maxT, C) += or null; dout: (B, T, C); tokens: (B, T). */
export function encoderBackward(
  dwte: Vec,
  dwpe: Vec | null,
  dout: Vec,
  tokens: Ints,
  B: number,
  T: number,
  C: number,
  positionOffset = 0,
): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const doutBt = (b * T + t) * C;
      const dwteIx = tokens[b * T + t] * C;
      const dwpeT = (positionOffset + t) * C;
      for (let c = 0; c < C; c++) {
        dwte[dwteIx + c] += dout[doutBt + c];
        if (dwpe) dwpe[dwpeT + c] += dout[doutBt + c];
      }
    }
  }
}

// ----------------------------------------------------------------------------------------------
// LayerNorm (GPT-2): out = (x − mean)·rstd·w + b, rstd = 1/√(var + eps), biased variance

/** out: (N, C); mean, rstd: (N,); x: (N, C); w, b: (C,). */
export function layernormForward(
  out: Vec,
  mean: Vec,
  rstd: Vec,
  x: Vec,
  w: Vec,
  b: Vec,
  N: number,
  C: number,
  eps = 1e-5,
): void {
  for (let n = 0; n < N; n++) {
    const xN = n * C;
    let m = 0;
    for (let c = 0; c < C; c++) m += x[xN + c];
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[xN + c] - m) ** 2;
    v /= C;
    const s = 1 / Math.sqrt(v + eps);
    for (let c = 0; c < C; c++) out[xN + c] = (x[xN + c] - m) * s * w[c] + b[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

/**
 * dx: (N, C) +=; dw, db: (C,) +=; dout, x: (N, C); w: (C,); mean, rstd: (N,).
 * Inverts out = norm·w + b with norm = (x − mean)·rstd.
 */
export function layernormBackward(
  dx: Vec,
  dw: Vec,
  db: Vec,
  dout: Vec,
  x: Vec,
  w: Vec,
  mean: Vec,
  rstd: Vec,
  N: number,
  C: number,
): void {
  for (let n = 0; n < N; n++) {
    const xN = n * C;
    const m = mean[n], s = rstd[n];
    // Two reductions: the mean of dnorm and the mean of dnorm·norm.
    let dnormMean = 0, dnormNormMean = 0;
    for (let c = 0; c < C; c++) {
      const norm = (x[xN + c] - m) * s;
      const dnorm = w[c] * dout[xN + c];
      dnormMean += dnorm;
      dnormNormMean += dnorm * norm;
    }
    dnormMean /= C;
    dnormNormMean /= C;
    for (let c = 0; c < C; c++) {
      const norm = (x[xN + c] - m) * s;
      const dnorm = w[c] * dout[xN + c];
      db[c] += dout[xN + c];
      dw[c] += norm * dout[xN + c];
      dx[xN + c] += (dnorm - dnormMean - norm * dnormNormMean) * s;
    }
  }
}

// ----------------------------------------------------------------------------------------------
// RMSNorm (Llama): out = x·rstd·w, rstd = 1/√(mean(x²) + eps)

/** out: (N, C); rstd: (N,); x: (N, C); w: (C,). */
export function rmsnormForward(
  out: Vec,
  rstd: Vec,
  x: Vec,
  w: Vec,
  N: number,
  C: number,
  eps: number,
): void {
  for (let n = 0; n < N; n++) {
    const xN = n * C;
    let ms = 0;
    for (let c = 0; c < C; c++) ms += x[xN + c] ** 2;
    const s = 1 / Math.sqrt(ms / C + eps);
    for (let c = 0; c < C; c++) out[xN + c] = x[xN + c] * s * w[c];
    rstd[n] = s;
  }
}

/**
 * dx: (N, C) +=; dw: (C,) +=; dout, x: (N, C); w: (C,); rstd: (N,).
 * Inverts out = norm·w with norm = x·rstd; ∂rstd/∂x_j = −rstd³·x_j/C gives
 * dx = (dnorm − norm·mean(dnorm·norm))·rstd.
 */
export function rmsnormBackward(
  dx: Vec,
  dw: Vec,
  dout: Vec,
  x: Vec,
  w: Vec,
  rstd: Vec,
  N: number,
  C: number,
): void {
  for (let n = 0; n < N; n++) {
    const xN = n * C;
    const s = rstd[n];
    let dnormNormMean = 0;
    for (let c = 0; c < C; c++) dnormNormMean += w[c] * dout[xN + c] * x[xN + c] * s;
    dnormNormMean /= C;
    for (let c = 0; c < C; c++) {
      const norm = x[xN + c] * s;
      dw[c] += norm * dout[xN + c];
      dx[xN + c] += (w[c] * dout[xN + c] - norm * dnormNormMean) * s;
    }
  }
}

// ----------------------------------------------------------------------------------------------
// GELU, tanh form as in GPT-2: out = ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))

const GELU_SCALE = Math.sqrt(2 / Math.PI);
const GELU_CUBE = 0.044715;

/** out: (n,); x: (n,). */
export function geluForward(out: Vec, x: Vec, n: number): void {
  for (let i = 0; i < n; i++) {
    const xi = x[i];
    out[i] = 0.5 * xi * (1 + Math.tanh(GELU_SCALE * (xi + GELU_CUBE * xi ** 3)));
  }
}

/** dx: (n,) written; dout, x: (n,). dx = dout·gelu'(x). */
export function geluBackward(dx: Vec, dout: Vec, x: Vec, n: number): void {
  for (let i = 0; i < n; i++) {
    const xi = x[i];
    const u = GELU_SCALE * (xi + GELU_CUBE * xi ** 3);
    const th = Math.tanh(u);
    // sech² from cosh keeps its tiny tail for large |u| where 1 − tanh² would round to 0.
    const sech2 = 1 / Math.cosh(u) ** 2;
    const local = 0.5 * (1 + th) + 0.5 * xi * sech2 * GELU_SCALE * (1 + 3 * GELU_CUBE * xi * xi);
    dx[i] = local * dout[i];
  }
}

// ----------------------------------------------------------------------------------------------
// SwiGLU (Llama MLP): out = silu(gate)·up, silu(g) = g·σ(g)

const sigmoid = (g: number) => (g >= 0 ? 1 / (1 + Math.exp(-g)) : Math.exp(g) / (1 + Math.exp(g)));

/** out: (N, F); gate, up: (N, F), given as n = N·F elements. */
export function swigluForward(out: Vec, gate: Vec, up: Vec, n: number): void {
  for (let i = 0; i < n; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

/** dgate, dup: (N, F) written; dout, gate, up: (N, F). silu'(g) = σ(g)·(1 + g·(1 − σ(g))). */
export function swigluBackward(dgate: Vec, dup: Vec, dout: Vec, gate: Vec, up: Vec, n: number): void {
  for (let i = 0; i < n; i++) {
    const s = sigmoid(gate[i]);
    dup[i] = dout[i] * gate[i] * s;
    dgate[i] = dout[i] * up[i] * s * (1 + gate[i] * (1 - s));
  }
}

// ----------------------------------------------------------------------------------------------
// checking the analytic backwards above

/**
 * Central differences (f(x + h·eᵢ) − f(x − h·eᵢ)) / 2h of a scalar function for every element of
 * `x`, in float64, to check an analytic backward; `x` is restored afterwards.
 */
export function centralDifferences(f: () => number, x: Vec, h = 1e-6): Vec {
  const grad = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const saved = x[i];
    x[i] = saved + h;
    const plus = f();
    x[i] = saved - h;
    const minus = f();
    x[i] = saved;
    grad[i] = (plus - minus) / (2 * h);
  }
  return grad;
}

/** Σᵢ out[i]·g[i]: the scalar loss whose gradient with respect to `out` is `g`. */
export function dot(out: Vec, g: Vec): number {
  let s = 0;
  for (let i = 0; i < out.length; i++) s += out[i] * g[i];
  return s;
}
