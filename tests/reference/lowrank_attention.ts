/**
 * Float64 CPU twins of kernels/lowrank_attention.wgsl, the causal low-rank attention map
 *   out_i = s·Σ_{j≤i} (a_i·w_j)·v_j
 * per batch b and query head h, with a, w: (B, H, T, R), v: (B, Hkv, T, D) (head h reads kv head
 * ⌊h / (H/Hkv)⌋) and out: (B, H, T, D). UNVERIFIED: the methods spec §6 reconstruction of LoRaDA's
 * low-rank attention map, not checked against the paper.
 *
 * Two independent forms: `lowrankAttentionForward`/`Backward` materialise the T×T map M_ij = s·a_i·w_j
 * (j ≤ i) as the spec writes it (O(T²), for T ≤ a few hundred); `lowrankAttentionScan` runs the
 * linear-attention prefix sums S_i = Σ_{j≤i} w_j v_jᵀ in O(T·R·D) (for long T).
 *
 * Gradient semantics follow the kernels: da and dw are written, dv accumulates (+=) because the softmax
 * attention also writes it; a kv head's dv sums its query heads.
 */

type Vec = Float64Array;

/** The sizes of one call. */
export interface LowrankShape {
  B: number;
  H: number;
  Hkv: number;
  T: number;
  R: number;
  D: number;
}

/** out: (B, H, T, D) = or += (accumulate); a, w: (B, H, T, R); v: (B, Hkv, T, D). */
export function lowrankAttentionForward(
  out: Vec,
  a: Vec,
  w: Vec,
  v: Vec,
  shape: LowrankShape,
  scale: number,
  accumulate = false,
): void {
  const { B, H, Hkv, T, R, D } = shape;
  const map = new Float64Array(T * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h;
      const vHead = (b * Hkv + Math.floor(h / (H / Hkv))) * T * D;
      causalMap(map, a, w, bh * T * R, T, R, scale);
      for (let i = 0; i < T; i++) {
        for (let d = 0; d < D; d++) {
          let y = 0;
          for (let j = 0; j <= i; j++) y += map[i * T + j] * v[vHead + j * D + d];
          const at = (bh * T + i) * D + d;
          out[at] = accumulate ? out[at] + y : y;
        }
      }
    }
  }
}

/** map: (T, T) with M_ij = s·a_i·w_j for j ≤ i and 0 above the diagonal. */
function causalMap(map: Vec, a: Vec, w: Vec, head: number, T: number, R: number, scale: number): void {
  map.fill(0);
  for (let i = 0; i < T; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let r = 0; r < R; r++) s += a[head + i * R + r] * w[head + j * R + r];
      map[i * T + j] = scale * s;
    }
  }
}

/**
 * da, dw: (B, H, T, R) written; dv: (B, Hkv, T, D) +=; dout: (B, H, T, D); a, w, v as the forward.
 * With dM_ij = dout_i·v_j (j ≤ i): da_i = s·Σ_{j≤i} dM_ij·w_j, dw_j = s·Σ_{i≥j} dM_ij·a_i and
 * dv_j += Σ_{i≥j} M_ij·dout_i.
 */
export function lowrankAttentionBackward(
  da: Vec,
  dw: Vec,
  dv: Vec,
  dout: Vec,
  a: Vec,
  w: Vec,
  v: Vec,
  shape: LowrankShape,
  scale: number,
): void {
  const { B, H, Hkv, T, R, D } = shape;
  const map = new Float64Array(T * T);
  const dmap = new Float64Array(T * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h;
      const head = bh * T * R;
      const oHead = bh * T * D;
      const vHead = (b * Hkv + Math.floor(h / (H / Hkv))) * T * D;
      causalMap(map, a, w, head, T, R, scale);
      dmap.fill(0);
      for (let i = 0; i < T; i++) {
        for (let j = 0; j <= i; j++) {
          let s = 0;
          for (let d = 0; d < D; d++) s += dout[oHead + i * D + d] * v[vHead + j * D + d];
          dmap[i * T + j] = s;
        }
      }
      for (let i = 0; i < T; i++) {
        for (let r = 0; r < R; r++) {
          let ga = 0, gw = 0;
          for (let j = 0; j <= i; j++) ga += dmap[i * T + j] * w[head + j * R + r];
          for (let k = i; k < T; k++) gw += dmap[k * T + i] * a[head + k * R + r];
          da[head + i * R + r] = scale * ga;
          dw[head + i * R + r] = scale * gw;
        }
      }
      for (let j = 0; j < T; j++) {
        for (let d = 0; d < D; d++) {
          let g = 0;
          for (let i = j; i < T; i++) g += map[i * T + j] * dout[oHead + i * D + d];
          dv[vHead + j * D + d] += g;
        }
      }
    }
  }
}

/**
 * The same forward as `lowrankAttentionForward`, computed as linear attention does: a running
 * S = Σ_{j≤i} w_j v_jᵀ (R×D) and out_i = s·a_iᵀ·S. O(B·H·T·R·D) time, O(R·D) extra memory.
 * out: (B, H, T, D) written; a, w: (B, H, T, R); v: (B, Hkv, T, D).
 */
export function lowrankAttentionScan(
  out: Vec,
  a: Vec,
  w: Vec,
  v: Vec,
  shape: LowrankShape,
  scale: number,
): void {
  const { B, H, Hkv, T, R, D } = shape;
  const S = new Float64Array(R * D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h;
      const head = bh * T * R;
      const vHead = (b * Hkv + Math.floor(h / (H / Hkv))) * T * D;
      S.fill(0);
      for (let i = 0; i < T; i++) {
        for (let r = 0; r < R; r++) {
          const wr = w[head + i * R + r];
          for (let d = 0; d < D; d++) S[r * D + d] += wr * v[vHead + i * D + d];
        }
        for (let d = 0; d < D; d++) {
          let y = 0;
          for (let r = 0; r < R; r++) y += a[head + i * R + r] * S[r * D + d];
          out[(bh * T + i) * D + d] = scale * y;
        }
      }
    }
  }
}
