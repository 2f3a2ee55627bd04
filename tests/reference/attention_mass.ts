/**
 * Float64 twin of kernels/attention_mass.wgsl, written the materialised way: every (query, key) pair's
 * visibility straight from the mask's definition (tests/reference/attention.ts `visible`), its probability
 * exp(scale_h·q_i·k_j − lse_i) from the given lse, and the sums per category bit, for keys with no counted
 * bit, and the sink logit's exp(sink_h − lse_i). A row whose lse is EMPTY_ROW_LSE (it sees nothing) is 0.
 * Layouts: q (B, H, T, D); k (B, Hkv, T, D); lse (B, H, T); scale, sink (H,); categories (B, T);
 * mass (B, H, rows, cats + 2) for query rows [from, to).
 */
import { EMPTY_ROW_LSE, type RefMask, type RefSizes, visible } from "./attention.ts";

/** mass ← the softmax mass of rows [from, to) per category; see the file comment. */
export function attentionMass(
  mass: Float64Array,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  lse: ArrayLike<number>,
  scale: ArrayLike<number>,
  sink: ArrayLike<number> | null,
  categories: ArrayLike<number>,
  cats: number,
  mask: RefMask,
  s: RefSizes,
  from = 0,
  to = s.T,
): void {
  const { B, H, Hkv, T, D } = s;
  const cols = cats + 2;
  const rows = to - from;
  const counted = (1 << cats) - 1;
  mass.fill(0);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvHead = b * Hkv + Math.floor(h / (H / Hkv));
      for (let i = from; i < to; i++) {
        const rowLse = lse[(b * H + h) * T + i];
        if (rowLse <= EMPTY_ROW_LSE) continue;
        const out = ((b * H + h) * rows + (i - from)) * cols;
        if (sink) mass[out + cats + 1] = Math.exp(sink[h] - rowLse);
        for (let j = 0; j < T; j++) {
          if (!visible(mask, T, h, b, i, j)) continue;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[((b * H + h) * T + i) * D + d] * k[(kvHead * T + j) * D + d];
          const p = Math.exp(scale[h] * dot - rowLse);
          const cat = categories[b * T + j];
          for (let c = 0; c < cats; c++) if ((cat >> c) & 1) mass[out + c] += p;
          if ((cat & counted) === 0) mass[out + cats] += p;
        }
      }
    }
  }
}
