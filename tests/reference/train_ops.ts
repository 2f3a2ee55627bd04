/**
 * Float64 twins of kernels/crossentropy.wgsl, kernels/adamw.wgsl and kernels/rope.wgsl, in llm.c
 * style: plain loops, outputs first, then inputs, then sizes. Also an independent transcription of
 * HF transformers' RoPE scaling code (`_compute_*_parameters`) to check src/model/rope_scaling.ts.
 */

// ----------------------------------------------------------------------------------------------
// fused softmax + cross-entropy: N rows over a vocabulary of V

/**
 * losses[n] = logsumexp(logits[n]) − logits[n, target[n]] (0 where target = ignoreIndex);
 * dlogits[n, v] = (softmax(logits[n])[v] − [v = target[n]])·weights[n]·gradScale (0 where ignored).
 * logits, dlogits: (N, V); targets, weights, losses: (N,)
 */
export function crossEntropyForwardBackward(
  losses: Float64Array,
  dlogits: Float64Array,
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  weights: ArrayLike<number>,
  N: number,
  V: number,
  gradScale: number,
  ignoreIndex = -100,
): void {
  for (let n = 0; n < N; n++) {
    const row = n * V;
    const target = targets[n];
    if (target === ignoreIndex) {
      losses[n] = 0;
      for (let v = 0; v < V; v++) dlogits[row + v] = 0;
      continue;
    }
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, logits[row + v]);
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(logits[row + v] - max);
    const lse = max + Math.log(sum);
    losses[n] = lse - logits[row + target];
    const scale = weights[n] * gradScale;
    for (let v = 0; v < V; v++) {
      const prob = Math.exp(logits[row + v] - lse);
      dlogits[row + v] = (prob - (v === target ? 1 : 0)) * scale;
    }
  }
}

/** The objective whose gradient dlogits is: gradScale·Σₙ weights[n]·losses[n]. */
export function crossEntropyObjective(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  weights: ArrayLike<number>,
  N: number,
  V: number,
  gradScale: number,
  ignoreIndex = -100,
): number {
  const losses = new Float64Array(N);
  crossEntropyForwardBackward(
    losses,
    new Float64Array(N * V),
    logits,
    targets,
    weights,
    N,
    V,
    gradScale,
    ignoreIndex,
  );
  let total = 0;
  for (let n = 0; n < N; n++) total += weights[n] * losses[n];
  return total * gradScale;
}

// ----------------------------------------------------------------------------------------------
// AdamW over a parameter table (torch.optim.AdamW, amsgrad = false, single-tensor path)

/** One row of the parameter table: a tensor's element range and its lr multiplier and decay. */
export interface AdamWEntryRef {
  offset: number;
  size: number;
  lrScale: number;
  weightDecay: number;
}

/** One step's values, as the host writes them before a submit. */
export interface AdamWStepRef {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** The step count t ≥ 1 (PyTorch increments it before the update). */
  step: number;
  /** Clip the global gradient norm to this value; absent: no clipping. */
  maxNorm?: number;
}

/**
 * One AdamW step in place, as torch.optim.AdamW does it for each tensor of the table:
 *   g = grad·clip,  p ← p·(1 − lr·wd),  m ← m + (1 − β1)(g − m),  v ← β2·v + (1 − β2)·g²,
 *   p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε),
 * with lr = step.lr·lrScale and clip = min(1, maxNorm/(‖grads‖₂ + 1e-6)) over the whole grads buffer
 * (torch.nn.utils.clip_grad_norm_). Elements outside the table are left alone.
 * params, m, v, grads: (total,)
 */
export function adamwUpdate(
  params: Float64Array,
  m: Float64Array,
  v: Float64Array,
  grads: ArrayLike<number>,
  table: readonly AdamWEntryRef[],
  step: AdamWStepRef,
): void {
  let clip = 1;
  if (step.maxNorm !== undefined) {
    let sumsq = 0;
    for (let i = 0; i < grads.length; i++) sumsq += grads[i] * grads[i];
    clip = Math.min(1, step.maxNorm / (Math.sqrt(sumsq) + 1e-6));
  }
  const biasCorrection1 = 1 - Math.pow(step.beta1, step.step);
  const biasCorrection2 = 1 - Math.pow(step.beta2, step.step);
  for (const entry of table) {
    const lr = step.lr * entry.lrScale;
    for (let j = 0; j < entry.size; j++) {
      const i = entry.offset + j;
      const g = grads[i] * clip;
      params[i] *= 1 - lr * entry.weightDecay;
      m[i] += (1 - step.beta1) * (g - m[i]);
      v[i] = step.beta2 * v[i] + (1 - step.beta2) * g * g;
      const denom = Math.sqrt(v[i]) / Math.sqrt(biasCorrection2) + step.eps;
      params[i] -= (lr / biasCorrection1) * m[i] / denom;
    }
  }
}

// ----------------------------------------------------------------------------------------------
// RoPE, rotate-half convention, on (B, H, T, D)

/**
 * out = x·cos + rotate_half(x)·sin with angle positions[t]·invFreq[i] and cos, sin scaled by
 * attentionFactor; `transpose` applies Rᵀ instead (the backward: sin negated).
 * out, x: (B, H, T, D); invFreq: (D/2,); positions: (T,)
 */
export function ropeRotate(
  out: Float64Array,
  x: ArrayLike<number>,
  invFreq: ArrayLike<number>,
  attentionFactor: number,
  positions: ArrayLike<number>,
  B: number,
  H: number,
  T: number,
  D: number,
  transpose = false,
): void {
  const half = D / 2;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const row = ((b * H + h) * T + t) * D;
        for (let i = 0; i < half; i++) {
          const angle = positions[t] * invFreq[i];
          const c = attentionFactor * Math.cos(angle);
          const s = (transpose ? -1 : 1) * attentionFactor * Math.sin(angle);
          const x1 = x[row + i], x2 = x[row + i + half];
          out[row + i] = x1 * c - x2 * s;
          out[row + i + half] = x2 * c + x1 * s;
        }
      }
    }
  }
}

// ----------------------------------------------------------------------------------------------
// RoPE scaling, transcribed from HF transformers modeling_rope_utils.py (default, linear, dynamic,
// yarn with truncate = True and no explicit mscale), in float64.

/** Inputs of the HF rope-init functions, flattened. */
export interface RopeScalingRef {
  type: "none" | "linear" | "dynamic" | "yarn";
  base: number;
  dim: number;
  factor: number;
  originalMaxPositions: number;
  seqLen: number;
  betaFast: number;
  betaSlow: number;
}

/** [inv_freq, attention_factor] as HF's `ROPE_INIT_FUNCTIONS[type]` computes them (in f64). */
export function ropeScalingReference(c: RopeScalingRef): [Float64Array, number] {
  const dim = c.dim;
  const arange = (n: number) => Array.from({ length: n }, (_, k) => 2 * k);
  const defaultInvFreq = (base: number) =>
    new Float64Array(arange(dim / 2).map((e) => 1 / base ** (e / dim)));
  if (c.type === "none") return [defaultInvFreq(c.base), 1];
  if (c.type === "linear") return [defaultInvFreq(c.base).map((x) => x / c.factor), 1];
  if (c.type === "dynamic") {
    // HF: seq_len = max(seq_len, max_position_embeddings); base *= (f·N/L − (f − 1))^(dim/(dim − 2))
    const seqLen = Math.max(c.seqLen, c.originalMaxPositions);
    const growth = c.factor * seqLen / c.originalMaxPositions - (c.factor - 1);
    const base = dim > 2 ? c.base * growth ** (dim / (dim - 2)) : c.base;
    return [defaultInvFreq(base), 1];
  }
  const findCorrectionDim = (numRotations: number) =>
    (dim * Math.log(c.originalMaxPositions / (numRotations * 2 * Math.PI))) / (2 * Math.log(c.base));
  const low = Math.max(Math.floor(findCorrectionDim(c.betaFast)), 0);
  const high = Math.min(Math.ceil(findCorrectionDim(c.betaSlow)), dim - 1);
  const rampMax = low === high ? high + 0.001 : high;
  const posFreqs = arange(dim / 2).map((e) => c.base ** (e / dim));
  const invFreq = new Float64Array(dim / 2);
  for (let k = 0; k < dim / 2; k++) {
    const extrapolation = 1 / posFreqs[k];
    const interpolation = 1 / (c.factor * posFreqs[k]);
    const ramp = Math.min(Math.max((k - low) / (rampMax - low), 0), 1);
    const extrapolationFactor = 1 - ramp;
    invFreq[k] = interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor;
  }
  const mscale = c.factor <= 1 ? 1 : 0.1 * Math.log(c.factor) + 1;
  return [invFreq, mscale];
}
