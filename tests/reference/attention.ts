/**
 * Float64 twin of kernels/attention_fwd.wgsl and kernels/attention_bwd.wgsl, written the textbook way: the
 * full T×T score matrix, an explicit mask function per (head, query, key) straight from each mode's
 * definition, a softmax that includes the sink, and the backward by the softmax Jacobian
 * (dS = P∘(dP − rowsum(P∘dP))) rather than the flash identity Δ = rowsum(dO∘O).
 * Layouts: q (B, H, T, D); k, v (B, Hkv, T, D); o like q; lse (B, H, T); scale, sink (H,).
 * Row-wise functions at the end cost O(T·D) per row, for checking single rows at long T.
 */
import type { AttentionMode } from "../../src/ops/attention.ts";

/** Mode codes, as in kernels/attention_mask.wgsl. */
export const MODE_FULL = 0;
export const MODE_CAUSAL = 1;
export const MODE_GROUPS = 2;
export const MODE_GROUPS_SHIFTED = 3;
export const MODE_TURNS = 4;

/** The reference's mode number of each launcher mode name. */
export const MODE_CODE: Record<AttentionMode, number> = {
  full: MODE_FULL,
  causal: MODE_CAUSAL,
  groups: MODE_GROUPS,
  "groups-shifted": MODE_GROUPS_SHIFTED,
  turns: MODE_TURNS,
};
/** tokenFlags bits. */
export const TOKEN_RESPONSE = 1;
export const TOKEN_PAD = 2;
/** The lse of a row that sees nothing and has no sink. */
export const EMPTY_ROW_LSE = Math.fround(-3.0e38);

/** The mask in plain arrays: per-head mode codes, the group size, per-token turn ids and flags (B·T). */
export interface RefMask {
  modes: readonly number[];
  G: number;
  turn?: ArrayLike<number>;
  flags?: ArrayLike<number>;
}

/** Sizes of one attention call. */
export interface RefSizes {
  B: number;
  H: number;
  Hkv: number;
  T: number;
  D: number;
}

/** Whether query i of head h, batch b, may attend key j; each mode from its definition. */
export function visible(mask: RefMask, T: number, h: number, b: number, i: number, j: number): boolean {
  const mode = mask.modes[h];
  const G = mask.G;
  switch (mode) {
    case MODE_FULL:
      return true;
    case MODE_CAUSAL:
      return j <= i;
    case MODE_GROUPS:
      return j <= i && Math.floor(i / G) === Math.floor(j / G);
    case MODE_GROUPS_SHIFTED:
      // Segments [0, G/2), [G/2, 3G/2), …: the segment index of x is ⌊(x + G/2)/G⌋.
      return j <= i && Math.floor((i + G / 2) / G) === Math.floor((j + G / 2) / G);
    case MODE_TURNS: {
      const ti = mask.turn![b * T + i], tj = mask.turn![b * T + j];
      const fi = mask.flags![b * T + i], fj = mask.flags![b * T + j];
      if ((fi & TOKEN_PAD) || (fj & TOKEN_PAD)) return false;
      if (tj < ti) return true;
      if (tj > ti) return false;
      return (fi & TOKEN_RESPONSE) ? j <= i : true;
    }
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

/** Scores s_ij = scale_h·(q_i·k_j) of one (b, h), masked entries NaN-free and flagged. */
function scoresOf(
  q: Float64Array,
  k: Float64Array,
  scale: ArrayLike<number>,
  mask: RefMask,
  s: RefSizes,
  b: number,
  h: number,
): { S: Float64Array; M: Uint8Array } {
  const { H, Hkv, T, D } = s;
  const hkv = Math.floor(h / (H / Hkv));
  const S = new Float64Array(T * T);
  const M = new Uint8Array(T * T);
  const qBase = (b * H + h) * T * D;
  const kBase = (b * Hkv + hkv) * T * D;
  for (let i = 0; i < T; i++) {
    for (let j = 0; j < T; j++) {
      if (!visible(mask, T, h, b, i, j)) continue;
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[qBase + i * D + d] * k[kBase + j * D + d];
      S[i * T + j] = scale[h] * dot;
      M[i * T + j] = 1;
    }
  }
  return { S, M };
}

/** Softmax rows of S over visible entries plus the sink; returns P (T×T), pSink (T) and lse (T). */
function softmaxOf(
  S: Float64Array,
  M: Uint8Array,
  sink: number | null,
  T: number,
): { P: Float64Array; pSink: Float64Array; lse: Float64Array } {
  const P = new Float64Array(T * T);
  const pSink = new Float64Array(T);
  const lse = new Float64Array(T);
  for (let i = 0; i < T; i++) {
    let max = sink ?? -Infinity;
    for (let j = 0; j < T; j++) if (M[i * T + j]) max = Math.max(max, S[i * T + j]);
    if (max === -Infinity) {
      lse[i] = EMPTY_ROW_LSE;
      continue;
    }
    let sum = sink === null ? 0 : Math.exp(sink - max);
    for (let j = 0; j < T; j++) if (M[i * T + j]) sum += Math.exp(S[i * T + j] - max);
    lse[i] = max + Math.log(sum);
    for (let j = 0; j < T; j++) if (M[i * T + j]) P[i * T + j] = Math.exp(S[i * T + j] - lse[i]);
    if (sink !== null) pSink[i] = Math.exp(sink - lse[i]);
  }
  return { P, pSink, lse };
}

/** o, lse ← softmax(scale·q·kᵀ masked, sink)·v. */
export function attentionForward(
  o: Float64Array,
  lse: Float64Array,
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  scale: ArrayLike<number>,
  sink: ArrayLike<number> | null,
  mask: RefMask,
  s: RefSizes,
): void {
  const { B, H, Hkv, T, D } = s;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const { S, M } = scoresOf(q, k, scale, mask, s, b, h);
      const sm = softmaxOf(S, M, sink ? sink[h] : null, T);
      const hkv = Math.floor(h / (H / Hkv));
      const vBase = (b * Hkv + hkv) * T * D;
      const oBase = (b * H + h) * T * D;
      for (let i = 0; i < T; i++) {
        lse[(b * H + h) * T + i] = sm.lse[i];
        for (let d = 0; d < D; d++) {
          let sum = 0;
          for (let j = 0; j < T; j++) sum += sm.P[i * T + j] * v[vBase + j * D + d];
          o[oBase + i * D + d] = sum;
        }
      }
    }
  }
}

/**
 * dq, dk, dv, dScale, dSink ← gradients of L = Σ o∘dO. Textbook: dP = dO·vᵀ, dS = P∘(dP − rowsum(P∘dP)),
 * the sink a key with dP = 0; dq = scale·dS·k, dk = scale·dSᵀ·q (summed over a kv group's heads),
 * dv = Pᵀ·dO, dScale_h = Σ dS∘(q·kᵀ), dSink_h = Σ_i dS_i,sink.
 */
export function attentionBackward(
  dq: Float64Array,
  dk: Float64Array,
  dv: Float64Array,
  dScale: Float64Array,
  dSink: Float64Array,
  dO: Float64Array,
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  scale: ArrayLike<number>,
  sink: ArrayLike<number> | null,
  mask: RefMask,
  s: RefSizes,
): void {
  const { B, H, Hkv, T, D } = s;
  dk.fill(0);
  dv.fill(0);
  dScale.fill(0);
  dSink.fill(0);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const { S, M } = scoresOf(q, k, scale, mask, s, b, h);
      const { P, pSink } = softmaxOf(S, M, sink ? sink[h] : null, T);
      const hkv = Math.floor(h / (H / Hkv));
      const kvBase = (b * Hkv + hkv) * T * D;
      const qBase = (b * H + h) * T * D;
      const dS = new Float64Array(T * T);
      for (let i = 0; i < T; i++) {
        const dP = new Float64Array(T);
        let rowsum = 0; // Σ_j P_ij dP_ij, the sink's dP being 0
        for (let j = 0; j < T; j++) {
          if (!M[i * T + j]) continue;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += dO[qBase + i * D + d] * v[kvBase + j * D + d];
          dP[j] = dot;
          rowsum += P[i * T + j] * dot;
        }
        for (let j = 0; j < T; j++) if (M[i * T + j]) dS[i * T + j] = P[i * T + j] * (dP[j] - rowsum);
        dSink[h] += pSink[i] * (0 - rowsum);
      }
      for (let i = 0; i < T; i++) {
        for (let j = 0; j < T; j++) {
          const g = dS[i * T + j];
          if (g === 0) continue;
          let qk = 0;
          for (let d = 0; d < D; d++) qk += q[qBase + i * D + d] * k[kvBase + j * D + d];
          dScale[h] += g * qk;
        }
      }
      for (let i = 0; i < T; i++) {
        for (let d = 0; d < D; d++) {
          let sum = 0;
          for (let j = 0; j < T; j++) sum += dS[i * T + j] * k[kvBase + j * D + d];
          dq[qBase + i * D + d] = scale[h] * sum;
        }
      }
      for (let j = 0; j < T; j++) {
        for (let d = 0; d < D; d++) {
          let sumK = 0, sumV = 0;
          for (let i = 0; i < T; i++) {
            sumK += dS[i * T + j] * q[qBase + i * D + d];
            sumV += P[i * T + j] * dO[qBase + i * D + d];
          }
          dk[kvBase + j * D + d] += scale[h] * sumK;
          dv[kvBase + j * D + d] += sumV;
        }
      }
    }
  }
}

// ---- row-wise references (long sequences) ----

/** Output row i and its lse for one (b, h), from the definitions, in O(T·D). */
export function attentionRow(
  q: Float64Array | Float32Array,
  k: Float64Array | Float32Array,
  v: Float64Array | Float32Array,
  scale: ArrayLike<number>,
  sink: ArrayLike<number> | null,
  mask: RefMask,
  s: RefSizes,
  b: number,
  h: number,
  i: number,
): { o: Float64Array; lse: number } {
  const { H, Hkv, T, D } = s;
  const hkv = Math.floor(h / (H / Hkv));
  const kBase = (b * Hkv + hkv) * T * D;
  const qBase = (b * H + h) * T * D + i * D;
  const scores = new Float64Array(T);
  let max = sink ? sink[h] : -Infinity;
  for (let j = 0; j < T; j++) {
    if (!visible(mask, T, h, b, i, j)) {
      scores[j] = NaN;
      continue;
    }
    let dot = 0;
    for (let d = 0; d < D; d++) dot += q[qBase + d] * k[kBase + j * D + d];
    scores[j] = scale[h] * dot;
    max = Math.max(max, scores[j]);
  }
  const o = new Float64Array(D);
  if (max === -Infinity) return { o, lse: EMPTY_ROW_LSE };
  let sum = sink ? Math.exp(sink[h] - max) : 0;
  for (let j = 0; j < T; j++) if (!Number.isNaN(scores[j])) sum += Math.exp(scores[j] - max);
  const lse = max + Math.log(sum);
  for (let j = 0; j < T; j++) {
    if (Number.isNaN(scores[j])) continue;
    const prob = Math.exp(scores[j] - lse);
    for (let d = 0; d < D; d++) o[d] += prob * v[kBase + j * D + d];
  }
  return { o, lse };
}

/**
 * Row i of dq for one (b, h), from the definitions in O(T·D): P_i·, lse_i and Δ_i = Σ_j P_ij (dO_i·v_j) are
 * recomputed from q, k, v first. dq_i = scale_h·Σ_j P_ij (dO_i·v_j − Δ_i)·k_j.
 */
export function queryGradRow(
  q: Float64Array | Float32Array,
  k: Float64Array | Float32Array,
  v: Float64Array | Float32Array,
  dO: Float64Array | Float32Array,
  scale: ArrayLike<number>,
  sink: ArrayLike<number> | null,
  mask: RefMask,
  s: RefSizes,
  b: number,
  h: number,
  i: number,
): Float64Array {
  const { H, Hkv, T, D } = s;
  const { o, lse } = attentionRow(q, k, v, scale, sink, mask, s, b, h, i);
  const qBase = (b * H + h) * T * D + i * D;
  const kBase = (b * Hkv + Math.floor(h / (H / Hkv))) * T * D;
  let delta = 0;
  for (let d = 0; d < D; d++) delta += dO[qBase + d] * o[d];
  const dq = new Float64Array(D);
  for (let j = 0; j < T; j++) {
    if (!visible(mask, T, h, b, i, j)) continue;
    let qk = 0, dov = 0;
    for (let d = 0; d < D; d++) {
      qk += q[qBase + d] * k[kBase + j * D + d];
      dov += dO[qBase + d] * v[kBase + j * D + d];
    }
    const ds = Math.exp(scale[h] * qk - lse) * (dov - delta);
    for (let d = 0; d < D; d++) dq[d] += scale[h] * ds * k[kBase + j * D + d];
  }
  return dq;
}

/**
 * Rows j of dk and dv for kv head hkv, given every query row's lse and Δ = dO·o (from rowsOf or from the
 * device): dk_j = Σ_h Σ_i scale_h·P_ij (dO_i·v_j − Δ_i)·q_i, dv_j = Σ_h Σ_i P_ij·dO_i. O(T·D·H/Hkv).
 */
export function keyValueGradRow(
  q: Float64Array | Float32Array,
  k: Float64Array | Float32Array,
  v: Float64Array | Float32Array,
  dO: Float64Array | Float32Array,
  lse: (h: number, i: number) => number,
  delta: (h: number, i: number) => number,
  scale: ArrayLike<number>,
  mask: RefMask,
  s: RefSizes,
  b: number,
  hkv: number,
  j: number,
): { dk: Float64Array; dv: Float64Array } {
  const { H, Hkv, T, D } = s;
  const kBase = (b * Hkv + hkv) * T * D + j * D;
  const dk = new Float64Array(D);
  const dv = new Float64Array(D);
  const groupHeads = H / Hkv;
  for (let h = hkv * groupHeads; h < (hkv + 1) * groupHeads; h++) {
    const qBase = (b * H + h) * T * D;
    for (let i = 0; i < T; i++) {
      if (!visible(mask, T, h, b, i, j)) continue;
      let qk = 0, dov = 0;
      for (let d = 0; d < D; d++) {
        qk += q[qBase + i * D + d] * k[kBase + d];
        dov += dO[qBase + i * D + d] * v[kBase + d];
      }
      const prob = Math.exp(scale[h] * qk - lse(h, i));
      const ds = prob * (dov - delta(h, i));
      for (let d = 0; d < D; d++) {
        dk[d] += scale[h] * ds * q[qBase + i * D + d];
        dv[d] += prob * dO[qBase + i * D + d];
      }
    }
  }
  return { dk, dv };
}

// ---- heads ----

/** q (B,H,T,D), k, v (B,Hkv,T,D) ← qkv (B, T, (H + 2·Hkv)·D). */
export function splitHeads(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  qkv: ArrayLike<number>,
  s: RefSizes,
): void {
  const { B, H, Hkv, T, D } = s;
  const W = (H + 2 * Hkv) * D;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let n = 0; n < H + 2 * Hkv; n++) {
        for (let d = 0; d < D; d++) {
          const x = qkv[(b * T + t) * W + n * D + d];
          if (n < H) q[((b * H + n) * T + t) * D + d] = x;
          else if (n < H + Hkv) k[((b * Hkv + n - H) * T + t) * D + d] = x;
          else v[((b * Hkv + n - H - Hkv) * T + t) * D + d] = x;
        }
      }
    }
  }
}

/** dqkv (B, T, (H + 2·Hkv)·D) ← dq, dk, dv: the transpose of splitHeads (a pure permutation). */
export function splitHeadsBackward(
  dqkv: Float64Array,
  dq: ArrayLike<number>,
  dk: ArrayLike<number>,
  dv: ArrayLike<number>,
  s: RefSizes,
): void {
  const { B, H, Hkv, T, D } = s;
  const W = (H + 2 * Hkv) * D;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let n = 0; n < H + 2 * Hkv; n++) {
        for (let d = 0; d < D; d++) {
          dqkv[(b * T + t) * W + n * D + d] = n < H
            ? dq[((b * H + n) * T + t) * D + d]
            : n < H + Hkv
            ? dk[((b * Hkv + n - H) * T + t) * D + d]
            : dv[((b * Hkv + n - H - Hkv) * T + t) * D + d];
        }
      }
    }
  }
}

/** y (B, T, H·D) ← o (B, H, T, D). */
export function mergeHeads(
  y: Float64Array,
  o: ArrayLike<number>,
  B: number,
  H: number,
  T: number,
  D: number,
): void {
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        for (let d = 0; d < D; d++) y[(b * T + t) * H * D + h * D + d] = o[((b * H + h) * T + t) * D + d];
      }
    }
  }
}

/** dO (B, H, T, D) ← dy (B, T, H·D): the transpose of mergeHeads. */
export function mergeHeadsBackward(
  dO: Float64Array,
  dy: ArrayLike<number>,
  B: number,
  H: number,
  T: number,
  D: number,
): void {
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        for (let d = 0; d < D; d++) dO[((b * H + h) * T + t) * D + d] = dy[(b * T + t) * H * D + h * D + d];
      }
    }
  }
}
