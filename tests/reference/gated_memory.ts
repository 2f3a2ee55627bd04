/**
 * Float64 reference of LIFT's Gated Memory (src/ops/gated_memory.ts, src/methods/gated_memory.ts): the
 * twin of every kernel, then one layer's whole mix, forward and backward, written per head and token
 * straight from the spec (§4.3) rather than through the kernels' head-major layout:
 *
 *   h = W1_i·q (2D), mem = W2_i·SiLU(h) (D), z = V_i·q (S), u = w_iᵀ·SiLU(z), g = σ(3(u − 1)),
 *   att[b, t, i·D + d] = (1 − g)·o[b, i, t, d] + g·mem[d],
 *
 * with q = qPre[b, i, t, :]; the backward adds reg·lossWeights[n] to ∂loss/∂g (the regulariser
 * reg·Σ_n lossWeights[n]·Σ_i g).
 */
import type { RefHooks } from "./model.ts";

/** Sizes of one layer's mix. */
export interface GmSizes {
  B: number;
  T: number;
  H: number;
  D: number;
  /** ⌊√D⌋. */
  S: number;
}

/** One layer's Gated Memory weights: W1 (H, 2D, D), W2 (H, D, 2D), V (H, S, D), w (H, S). */
export interface GmLayer {
  W1: ArrayLike<number>;
  W2: ArrayLike<number>;
  V: ArrayLike<number>;
  w: ArrayLike<number>;
}

/** Gradients of one layer's weights, same layout as GmLayer. */
export interface GmLayerGrads {
  W1: Float64Array;
  W2: Float64Array;
  V: Float64Array;
  w: Float64Array;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
/** SiLU(x) = x·σ(x). */
export const siluRef = (x: number) => x * sigmoid(x);
/** SiLU'(x) = σ(x)·(1 + x·(1 − σ(x))). */
export const siluGradRef = (x: number) => {
  const s = sigmoid(x);
  return s * (1 + x * (1 - s));
};

/** rows (H, B·T, D) ← x (B, H, T, D). */
export function headRowsRef(x: ArrayLike<number>, B: number, H: number, T: number, D: number): Float64Array {
  const rows = new Float64Array(B * H * T * D);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < H; i++) {
      for (let t = 0; t < T; t++) {
        for (let d = 0; d < D; d++) rows[((i * B + b) * T + t) * D + d] = x[((b * H + i) * T + t) * D + d];
      }
    }
  }
  return rows;
}

/** The gate from z (H, N, S) and w (H, S): a = SiLU(z) (H, N, S), g = σ(3(w·a − 1)) (H, N). */
export function gateForwardRef(
  z: ArrayLike<number>,
  w: ArrayLike<number>,
  H: number,
  N: number,
  S: number,
): { a: Float64Array; g: Float64Array } {
  const a = new Float64Array(H * N * S), g = new Float64Array(H * N);
  for (let i = 0; i < H; i++) {
    for (let n = 0; n < N; n++) {
      let u = 0;
      for (let s = 0; s < S; s++) {
        const r = (i * N + n) * S + s;
        a[r] = siluRef(z[r]);
        u += w[i * S + s] * a[r];
      }
      g[i * N + n] = sigmoid(3 * (u - 1));
    }
  }
  return { a, g };
}

/** att (B, T, H·D) = (1 − g)·o + g·mem; o (B, H, T, D), mem (H, N, D), g (H, N). */
export function gatedMixRef(
  o: ArrayLike<number>,
  mem: ArrayLike<number>,
  g: ArrayLike<number>,
  B: number,
  H: number,
  T: number,
  D: number,
): Float64Array {
  const N = B * T;
  const att = new Float64Array(N * H * D);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const n = b * T + t;
      for (let i = 0; i < H; i++) {
        const gg = g[i * N + n];
        for (let d = 0; d < D; d++) {
          att[(n * H + i) * D + d] = (1 - gg) * o[((b * H + i) * T + t) * D + d] +
            gg * mem[(i * N + n) * D + d];
        }
      }
    }
  }
  return att;
}

/** The mix's backward: dO = (1 − g)·datt, dmem = g·datt, dg = Σ_d datt·(mem − o). */
export function gatedMixBackwardRef(
  datt: ArrayLike<number>,
  o: ArrayLike<number>,
  mem: ArrayLike<number>,
  g: ArrayLike<number>,
  B: number,
  H: number,
  T: number,
  D: number,
): { dO: Float64Array; dmem: Float64Array; dg: Float64Array } {
  const N = B * T;
  const dO = new Float64Array(B * H * T * D),
    dmem = new Float64Array(H * N * D),
    dg = new Float64Array(H * N);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const n = b * T + t;
      for (let i = 0; i < H; i++) {
        const gg = g[i * N + n];
        for (let d = 0; d < D; d++) {
          const da = datt[(n * H + i) * D + d];
          const oi = ((b * H + i) * T + t) * D + d;
          const mi = (i * N + n) * D + d;
          dO[oi] = (1 - gg) * da;
          dmem[mi] = gg * da;
          dg[i * N + n] += da * (mem[mi] - o[oi]);
        }
      }
    }
  }
  return { dO, dmem, dg };
}

/** The gate's backward: du = 3g(1 − g)·(dg + reg·lossWeights[n]), dz = du·w·SiLU'(z). */
export function gateBackwardRef(
  dg: ArrayLike<number>,
  g: ArrayLike<number>,
  z: ArrayLike<number>,
  w: ArrayLike<number>,
  lossWeights: ArrayLike<number>,
  reg: number,
  H: number,
  N: number,
  S: number,
): { du: Float64Array; dz: Float64Array } {
  const du = new Float64Array(H * N), dz = new Float64Array(H * N * S);
  for (let i = 0; i < H; i++) {
    for (let n = 0; n < N; n++) {
      const r = i * N + n;
      du[r] = 3 * g[r] * (1 - g[r]) * (dg[r] + reg * lossWeights[n]);
      for (let s = 0; s < S; s++) dz[r * S + s] = du[r] * w[i * S + s] * siluGradRef(z[r * S + s]);
    }
  }
  return { du, dz };
}

// One head's vectors for one token, in float64.
function headPass(p: GmLayer, q: ArrayLike<number>, i: number, sz: GmSizes) {
  const { D, S } = sz;
  const R = 2 * D;
  const h = new Float64Array(R), a1 = new Float64Array(R), mem = new Float64Array(D);
  const z = new Float64Array(S), a2 = new Float64Array(S);
  for (let r = 0; r < R; r++) {
    let sum = 0;
    for (let c = 0; c < D; c++) sum += p.W1[(i * R + r) * D + c] * q[c];
    h[r] = sum;
    a1[r] = siluRef(sum);
  }
  for (let d = 0; d < D; d++) {
    let sum = 0;
    for (let r = 0; r < R; r++) sum += p.W2[(i * D + d) * R + r] * a1[r];
    mem[d] = sum;
  }
  let u = 0;
  for (let s = 0; s < S; s++) {
    let sum = 0;
    for (let c = 0; c < D; c++) sum += p.V[(i * S + s) * D + c] * q[c];
    z[s] = sum;
    a2[s] = siluRef(sum);
    u += p.w[i * S + s] * a2[s];
  }
  return { h, a1, mem, z, a2, g: sigmoid(3 * (u - 1)) };
}

/** One layer's mix: att (B, T, H·D) from o and qPre (B, H, T, D); also returns g (H, B·T). */
export function gatedMemoryForward(
  o: ArrayLike<number>,
  qPre: ArrayLike<number>,
  p: GmLayer,
  sz: GmSizes,
): { att: Float64Array; g: Float64Array } {
  const { B, T, H, D } = sz;
  const N = B * T;
  const att = new Float64Array(N * H * D), gates = new Float64Array(H * N);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < H; i++) {
      for (let t = 0; t < T; t++) {
        const base = ((b * H + i) * T + t) * D;
        const { mem, g } = headPass(p, Array.from({ length: D }, (_, c) => qPre[base + c]), i, sz);
        const n = b * T + t;
        gates[i * N + n] = g;
        for (let d = 0; d < D; d++) att[(n * H + i) * D + d] = (1 - g) * o[base + d] + g * mem[d];
      }
    }
  }
  return { att, g: gates };
}

/**
 * One layer's mix backward: writes dO (B, H, T, D), adds into dqPre (B, H, T, D) and into the weight
 * gradients; the regulariser adds reg·lossWeights[b·T + t] to every ∂loss/∂g.
 */
export function gatedMemoryBackward(
  dO: Float64Array,
  dqPre: Float64Array,
  grads: GmLayerGrads,
  datt: ArrayLike<number>,
  o: ArrayLike<number>,
  qPre: ArrayLike<number>,
  p: GmLayer,
  lossWeights: ArrayLike<number>,
  reg: number,
  sz: GmSizes,
): void {
  const { B, T, H, D, S } = sz;
  const R = 2 * D;
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < H; i++) {
      for (let t = 0; t < T; t++) {
        const base = ((b * H + i) * T + t) * D;
        const n = b * T + t;
        const q = Array.from({ length: D }, (_, c) => qPre[base + c]);
        const f = headPass(p, q, i, sz);
        let dg = reg * lossWeights[n];
        const dmem = new Float64Array(D);
        for (let d = 0; d < D; d++) {
          const da = datt[(n * H + i) * D + d];
          dO[base + d] = (1 - f.g) * da;
          dmem[d] = f.g * da;
          dg += da * (f.mem[d] - o[base + d]);
        }
        const du = 3 * f.g * (1 - f.g) * dg;
        for (let s = 0; s < S; s++) {
          grads.w[i * S + s] += du * f.a2[s];
          const dz = du * p.w[i * S + s] * siluGradRef(f.z[s]);
          for (let c = 0; c < D; c++) {
            grads.V[(i * S + s) * D + c] += dz * q[c];
            dqPre[base + c] += dz * p.V[(i * S + s) * D + c];
          }
        }
        for (let r = 0; r < R; r++) {
          let da1 = 0;
          for (let d = 0; d < D; d++) {
            grads.W2[(i * D + d) * R + r] += dmem[d] * f.a1[r];
            da1 += dmem[d] * p.W2[(i * D + d) * R + r];
          }
          const dh = da1 * siluGradRef(f.h[r]);
          for (let c = 0; c < D; c++) {
            grads.W1[(i * R + r) * D + c] += dh * q[c];
            dqPre[base + c] += dh * p.W1[(i * R + r) * D + c];
          }
        }
      }
    }
  }
}

/**
 * The reference model's hooks for a whole Gated Memory adapter (every layer), its values in the adapter
 * table's layout: `grads` (the same layout) receives every layer's weight gradients.
 */
export function gatedMemoryRefHooks(
  table: { byName: Map<string, { offset: number; numel: number }>; size: number },
  values: ArrayLike<number>,
  names: (layer: number) => { W1: string; W2: string; V: string; w: string },
  sz: GmSizes,
  lossWeights: ArrayLike<number>,
  reg: number,
): { hooks: RefHooks; grads: Float64Array } {
  const grads = new Float64Array(table.size);
  const slice = <T extends ArrayLike<number>>(flat: T, name: string): T => {
    const e = table.byName.get(name)!;
    return (flat as unknown as Float64Array).subarray(e.offset, e.offset + e.numel) as unknown as T;
  };
  const values64 = Float64Array.from(values);
  const layer = (l: number, flat: Float64Array) => {
    const n = names(l);
    return { W1: slice(flat, n.W1), W2: slice(flat, n.W2), V: slice(flat, n.V), w: slice(flat, n.w) };
  };
  const saved: { o: Float64Array; qPre: Float64Array }[] = [];
  return {
    grads,
    hooks: {
      mixOutput(l, att, o, _v, qPre) {
        att.set(gatedMemoryForward(o, qPre, layer(l, values64), sz).att);
        saved[l] = { o: o.slice(), qPre: qPre.slice() };
      },
      mixOutputBackward(l, dO, _dv, datt, dqPre) {
        const { o, qPre } = saved[l];
        gatedMemoryBackward(
          dO,
          dqPre,
          layer(l, grads),
          datt,
          o,
          qPre,
          layer(l, values64),
          lossWeights,
          reg,
          sz,
        );
      },
    },
  };
}
