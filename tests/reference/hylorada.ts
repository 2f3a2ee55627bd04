/**
 * Float64 twin of HyLoRADA's pieces (kernels/hylorada.wgsl, src/methods/hylorada.ts), written from the
 * formulas of the methods spec §3.2 and §3.3 rather than from the kernels' factorisation:
 *
 *   s(p) = 1 + σ(w)·tanh(b[min(⌊log2(p+1)⌋, 63)]);   y_n += s_lora·s(p_n)·B·A·x_n
 *   m_b = mean_t h_bt;  g_b = softmax(W_g·m_b);  h'_bt = h_bt + α·Σ_k g_bk·L_k
 *
 * plus `hyloradaRefHooks`, the method as RefHooks for tests/reference/model.ts.
 */
import type { RefHooks } from "./model.ts";

/** min(⌊log2(p + 1)⌋, 63), from the definition. */
export function bucketRef(p: number): number {
  return Math.min(Math.floor(Math.log2(p + 1)), 63);
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** s(p) for bucket values b (64) and a scalar w. */
export function positionScaleRef(p: number, b: ArrayLike<number>, w: number): number {
  return 1 + sigmoid(w) * Math.tanh(b[bucketRef(p)]);
}

/** out (N, R) = s(p_n)·x (N, R); bw = [b (64); w (W)]. */
export function positionScaleForward(
  out: Float64Array,
  x: ArrayLike<number>,
  positions: ArrayLike<number>,
  bw: ArrayLike<number>,
  slot: number,
  N: number,
  R: number,
): Float64Array {
  for (let n = 0; n < N; n++) {
    const s = positionScaleRef(positions[n], bw, bw[64 + slot]);
    for (let k = 0; k < R; k++) out[n * R + k] = s * x[n * R + k];
  }
  return out;
}

/**
 * Backward of u = s(p)·z given du: dbw[j] += Σ_{n in bucket j} g_n·σ(w)·(1 − tanh²b_j),
 * dbw[64 + slot] += Σ_n g_n·tanh(b_{bucket(n)})·σ'(w), with g_n = Σ_k du[n,k]·z[n,k]; dz = s(p)·du.
 */
export function positionScaleBackward(
  dbw: Float64Array,
  dz: Float64Array,
  du: ArrayLike<number>,
  z: ArrayLike<number>,
  positions: ArrayLike<number>,
  bw: ArrayLike<number>,
  slot: number,
  N: number,
  R: number,
): void {
  const w = bw[64 + slot];
  const sig = sigmoid(w);
  for (let n = 0; n < N; n++) {
    let g = 0;
    for (let k = 0; k < R; k++) g += du[n * R + k] * z[n * R + k];
    const j = bucketRef(positions[n]);
    const th = Math.tanh(bw[j]);
    dbw[j] += g * sig * (1 - th * th);
    dbw[64 + slot] += g * th * sig * (1 - sig);
    const s = 1 + sig * th;
    for (let k = 0; k < R; k++) dz[n * R + k] = s * du[n * R + k];
  }
}

/** What the landmark forward keeps for its backward. */
export interface LandmarkSaved {
  /** (B, C) per-sequence means. */
  m: Float64Array;
  /** (B, K) gates. */
  g: Float64Array;
  /** (B, C) g·L (without α). */
  c: Float64Array;
}

/** h (B·T, C) += α·g_bᵀL in place; L, Wg: (K, C). */
export function landmarksForward(
  h: Float64Array,
  L: ArrayLike<number>,
  Wg: ArrayLike<number>,
  alpha: number,
  B: number,
  T: number,
  C: number,
  K: number,
): LandmarkSaved {
  const m = new Float64Array(B * C), g = new Float64Array(B * K), c = new Float64Array(B * C);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) for (let i = 0; i < C; i++) m[b * C + i] += h[(b * T + t) * C + i] / T;
    const logits = Array.from({ length: K }, (_, k) => {
      let sum = 0;
      for (let i = 0; i < C; i++) sum += Wg[k * C + i] * m[b * C + i];
      return sum;
    });
    const top = Math.max(...logits);
    const e = logits.map((x) => Math.exp(x - top));
    const total = e.reduce((a, x) => a + x, 0);
    for (let k = 0; k < K; k++) g[b * K + k] = e[k] / total;
    for (let i = 0; i < C; i++) {
      let sum = 0;
      for (let k = 0; k < K; k++) sum += g[b * K + k] * L[k * C + i];
      c[b * C + i] = sum;
    }
    for (let t = 0; t < T; t++) for (let i = 0; i < C; i++) h[(b * T + t) * C + i] += alpha * c[b * C + i];
  }
  return { m, g, c };
}

/** Gradients of the landmark tensors. */
export interface LandmarkGrads {
  dL: Float64Array;
  dWg: Float64Array;
  dAlpha: number;
}

/**
 * dh (B·T, C) in place: from the gradient with respect to h' to the one with respect to h; adds the
 * landmark gradients into `grads` — by the chain rule through each formula of the forward.
 */
export function landmarksBackward(
  dh: Float64Array,
  grads: LandmarkGrads,
  saved: LandmarkSaved,
  L: ArrayLike<number>,
  Wg: ArrayLike<number>,
  alpha: number,
  B: number,
  T: number,
  C: number,
  K: number,
): void {
  const { m, g, c } = saved;
  for (let b = 0; b < B; b++) {
    // dc_b = α·Σ_t dh'_bt; dα = Σ_t dh'_bt·c_b.
    const S = new Float64Array(C);
    for (let t = 0; t < T; t++) for (let i = 0; i < C; i++) S[i] += dh[(b * T + t) * C + i];
    for (let i = 0; i < C; i++) grads.dAlpha += S[i] * c[b * C + i];
    // c = Σ_k g_k L_k: dL_k += g_k·dc; dg_k = L_k·dc.
    const dg = new Float64Array(K);
    for (let k = 0; k < K; k++) {
      for (let i = 0; i < C; i++) {
        grads.dL[k * C + i] += g[b * K + k] * alpha * S[i];
        dg[k] += L[k * C + i] * alpha * S[i];
      }
    }
    // Softmax Jacobian: dlogit_k = Σ_j (δ_jk g_k − g_j g_k)·dg_j.
    const dlogit = new Float64Array(K);
    for (let k = 0; k < K; k++) {
      for (let j = 0; j < K; j++) {
        dlogit[k] += ((j === k ? g[b * K + k] : 0) - g[b * K + j] * g[b * K + k]) * dg[j];
      }
    }
    // logits = W_g·m: dW_g += dlogit ⊗ m; dm = W_gᵀ·dlogit; m = mean_t h.
    const dm = new Float64Array(C);
    for (let k = 0; k < K; k++) {
      for (let i = 0; i < C; i++) {
        grads.dWg[k * C + i] += dlogit[k] * m[b * C + i];
        dm[i] += Wg[k * C + i] * dlogit[k];
      }
    }
    for (let t = 0; t < T; t++) for (let i = 0; i < C; i++) dh[(b * T + t) * C + i] += dm[i] / T;
  }
}

/** One adapted matrix as the reference sees it (names in the adapter table). */
export interface RefLoraMatrix {
  layer: number;
  site: string;
  offset: number;
  in: number;
  out: number;
  a: string;
  b: string;
  /** Its w slot (0 for a global w). */
  slot: number;
}

/** What `hyloradaRefHooks` needs of the method. */
export interface HyloradaRefSpec {
  /** Adapter table offsets by name. */
  offsets: ReadonlyMap<string, number>;
  values: ArrayLike<number>;
  matrices: readonly RefLoraMatrix[];
  r: number;
  scale: number;
  positionBias: boolean;
  landmarks: boolean;
  K: number;
  B: number;
  T: number;
  C: number;
}

/**
 * The method as reference hooks: y += s·s(p_n)·B·A·x on the adapted linears (positions t = n mod T),
 * the landmark mix on the final norm; gradients go into `grads` (the adapter table's layout).
 */
export function hyloradaRefHooks(spec: HyloradaRefSpec, grads: Float64Array): RefHooks {
  const { offsets, values: v, r, scale, B, T, C, K } = spec;
  const N = B * T;
  const at = (name: string) => offsets.get(name)!;
  const posScale = (n: number, slot: number) =>
    spec.positionBias
      ? positionScaleRef(
        n % T,
        Array.from({ length: 64 }, (_, j) => v[at("posbias.b") + j]),
        v[at("posbias.w") + slot],
      )
      : 1;
  let saved: LandmarkSaved | null = null;
  const landmarkArgs = () => {
    const L = Float64Array.from({ length: K * C }, (_, i) => v[at("landmarks.L") + i]);
    const Wg = Float64Array.from({ length: K * C }, (_, i) => v[at("landmarks.Wg") + i]);
    return { L, Wg, alpha: v[at("landmarks.alpha")] };
  };
  return {
    linear(layer, name, y, x) {
      for (const m of spec.matrices.filter((q) => q.layer === layer && q.site === name)) {
        const W = y.length / N;
        for (let n = 0; n < N; n++) {
          const s = scale * posScale(n, m.slot);
          for (let k = 0; k < r; k++) {
            let z = 0;
            for (let j = 0; j < m.in; j++) z += v[at(m.a) + k * m.in + j] * x[n * m.in + j];
            for (let i = 0; i < m.out; i++) y[n * W + m.offset + i] += s * v[at(m.b) + i * r + k] * z;
          }
        }
      }
    },
    linearBackward(layer, name, dx, dy, x) {
      for (const m of spec.matrices.filter((q) => q.layer === layer && q.site === name)) {
        const W = dy.length / N;
        const sig = spec.positionBias ? 1 / (1 + Math.exp(-v[at("posbias.w") + m.slot])) : 0;
        for (let n = 0; n < N; n++) {
          const p = posScale(n, m.slot);
          // z = A·x_n, e = Bᵀ·dy_n; y_n += scale·p·B·z.
          const z = new Float64Array(r), e = new Float64Array(r);
          for (let k = 0; k < r; k++) {
            for (let j = 0; j < m.in; j++) z[k] += v[at(m.a) + k * m.in + j] * x[n * m.in + j];
            for (let i = 0; i < m.out; i++) e[k] += v[at(m.b) + i * r + k] * dy[n * W + m.offset + i];
          }
          for (let k = 0; k < r; k++) {
            for (let i = 0; i < m.out; i++) {
              grads[at(m.b) + i * r + k] += scale * p * dy[n * W + m.offset + i] * z[k];
            }
            for (let j = 0; j < m.in; j++) {
              grads[at(m.a) + k * m.in + j] += scale * p * e[k] * x[n * m.in + j];
              dx[n * m.in + j] += scale * p * e[k] * v[at(m.a) + k * m.in + j];
            }
          }
          if (spec.positionBias) {
            // ∂loss/∂s(p) = scale·Σ_k e_k·z_k; s = 1 + σ(w)·tanh(b_j).
            let ds = 0;
            for (let k = 0; k < r; k++) ds += scale * e[k] * z[k];
            const j = bucketRef(n % T);
            const th = Math.tanh(v[at("posbias.b") + j]);
            grads[at("posbias.b") + j] += ds * sig * (1 - th * th);
            grads[at("posbias.w") + m.slot] += ds * th * sig * (1 - sig);
          }
        }
      }
    },
    finalNorm(lnf) {
      if (!spec.landmarks) return;
      const { L, Wg, alpha } = landmarkArgs();
      saved = landmarksForward(lnf, L, Wg, alpha, B, T, C, K);
    },
    finalNormBackward(dlnf) {
      if (!spec.landmarks) return;
      const { L, Wg, alpha } = landmarkArgs();
      const g = { dL: new Float64Array(K * C), dWg: new Float64Array(K * C), dAlpha: 0 };
      landmarksBackward(dlnf, g, saved!, L, Wg, alpha, B, T, C, K);
      for (let i = 0; i < K * C; i++) {
        grads[at("landmarks.L") + i] += g.dL[i];
        grads[at("landmarks.Wg") + i] += g.dWg[i];
      }
      grads[at("landmarks.alpha")] += g.dAlpha;
    },
  };
}
