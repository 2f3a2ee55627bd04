/**
 * Float64 twins of LoRaDA's hooks (src/methods/lorada.ts) and of LoRA's (src/methods/lora.ts), as
 * RefHooks for the reference model (tests/reference/model.ts), so a whole model with either or both
 * attached can be checked against the GPU graph. LoRaDA here is the methods spec §6 reconstruction
 * (UNVERIFIED): A'_h = softmax(…) + s·M_causal ⊙ (X·U_h)(X·W_h)ᵀ with X the qkv linear's input; its map
 * is the materialised T×T form of tests/reference/lowrank_attention.ts, an independent twin of the
 * kernels' chunked prefix sums.
 * Parameters and gradients use the adapter table's flat layout (`offsets` gives each tensor's start).
 */
import { mergeHeads, mergeHeadsBackward } from "./attention.ts";
import { lowrankAttentionBackward, lowrankAttentionForward } from "./lowrank_attention.ts";
import type { RefHooks } from "./model.ts";

type Vec = Float64Array;

/** Sizes the hooks need. */
export interface RefLoradaSizes {
  B: number;
  T: number;
  C: number;
  H: number;
  Hkv: number;
  D: number;
  R: number;
}

/**
 * LoRaDA's hooks reading U_l, W_l ((H·R, C) each) at `offsets(l)` in `params`, adding dU, dW into `grads`
 * at the same offsets.
 */
export function loradaRefHooks(
  params: ArrayLike<number>,
  grads: Vec,
  offsets: (layer: number) => { u: number; w: number },
  z: RefLoradaSizes,
  scale: number,
): RefHooks {
  const { B, T, C, H, Hkv, D, R } = z;
  const N = B * T, HR = H * R;
  const shape = { B, H, Hkv, T, R, D };
  const kept = new Map<number, { a: Vec; w: Vec; v: Vec | null; da: Vec; dw: Vec }>();
  // rows (N, H·R) = x (N, C)·Mᵀ for M (H·R, C) at `at`, then split into heads (B, H, T, R).
  const project = (x: Vec, at: number): Vec => {
    const rows = new Float64Array(N * HR);
    for (let n = 0; n < N; n++) {
      for (let o = 0; o < HR; o++) {
        let sum = 0;
        for (let c = 0; c < C; c++) sum += x[n * C + c] * params[at + o * C + c];
        rows[n * HR + o] = sum;
      }
    }
    const heads = new Float64Array(N * HR);
    mergeHeadsBackward(heads, rows, B, H, T, R);
    return heads;
  };
  return {
    linear(layer, name, _y, x) {
      if (name !== "qkv") return;
      const o = offsets(layer);
      const a = project(x, o.u), w = project(x, o.w);
      kept.set(layer, { a, w, v: null, da: new Float64Array(a.length), dw: new Float64Array(w.length) });
    },
    mixOutput(layer, att, o, v) {
      const k = kept.get(layer)!;
      // The reference model keeps every layer's v array, so holding it for the backward is safe.
      k.v = v;
      const mixed = Float64Array.from(o);
      lowrankAttentionForward(mixed, k.a, k.w, v, shape, scale, true);
      mergeHeads(att, mixed, B, H, T, D);
    },
    mixOutputBackward(layer, dO, dv, datt) {
      const k = kept.get(layer)!;
      mergeHeadsBackward(dO, datt, B, H, T, D);
      lowrankAttentionBackward(k.da, k.dw, dv, dO, k.a, k.w, k.v!, shape, scale);
    },
    linearBackward(layer, name, dx, _dy, x) {
      if (name !== "qkv") return;
      const k = kept.get(layer)!;
      const o = offsets(layer);
      for (const [d, at] of [[k.da, o.u], [k.dw, o.w]] as const) {
        const rows = new Float64Array(N * HR);
        mergeHeads(rows, d, B, H, T, R);
        for (let r = 0; r < HR; r++) {
          for (let c = 0; c < C; c++) {
            let sum = 0;
            for (let n = 0; n < N; n++) sum += rows[n * HR + r] * x[n * C + c];
            grads[at + r * C + c] += sum;
          }
        }
        for (let n = 0; n < N; n++) {
          for (let c = 0; c < C; c++) {
            let sum = 0;
            for (let r = 0; r < HR; r++) sum += rows[n * HR + r] * params[at + r * C + c];
            dx[n * C + c] += sum;
          }
        }
      }
    },
  };
}

/** One LoRA matrix for the reference: where it adds (site, column block) and A, B's table offsets. */
export interface RefLoraMatrix {
  layer: number;
  site: string;
  /** First output column in the site's output, the block's width, the input width. */
  offset: number;
  out: number;
  in: number;
  /** Table offsets of A (r, in) and B (out, r). */
  a: number;
  b: number;
}

/** LoRA's hooks: y[:, block] += s·(x·Aᵀ)·Bᵀ; gradients into `grads` at the table offsets. */
export function loraRefHooks(
  params: ArrayLike<number>,
  grads: Vec,
  matrices: readonly RefLoraMatrix[],
  N: number,
  r: number,
  scale: number,
): RefHooks {
  const z = (m: RefLoraMatrix, x: Vec): Vec => {
    const out = new Float64Array(N * r);
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < r; k++) {
        let sum = 0;
        for (let j = 0; j < m.in; j++) sum += x[n * m.in + j] * params[m.a + k * m.in + j];
        out[n * r + k] = sum;
      }
    }
    return out;
  };
  const at = (layer: number, name: string) => matrices.filter((m) => m.layer === layer && m.site === name);
  return {
    linear(layer, name, y, x) {
      for (const m of at(layer, name)) {
        const width = y.length / N;
        const zm = z(m, x);
        for (let n = 0; n < N; n++) {
          for (let i = 0; i < m.out; i++) {
            let sum = 0;
            for (let k = 0; k < r; k++) sum += zm[n * r + k] * params[m.b + i * r + k];
            y[n * width + m.offset + i] += scale * sum;
          }
        }
      }
    },
    linearBackward(layer, name, dx, dy, x) {
      for (const m of at(layer, name)) {
        const width = dy.length / N;
        const zm = z(m, x);
        const dz = new Float64Array(N * r);
        for (let n = 0; n < N; n++) {
          for (let i = 0; i < m.out; i++) {
            const g = scale * dy[n * width + m.offset + i];
            for (let k = 0; k < r; k++) {
              grads[m.b + i * r + k] += g * zm[n * r + k];
              dz[n * r + k] += g * params[m.b + i * r + k];
            }
          }
        }
        for (let n = 0; n < N; n++) {
          for (let k = 0; k < r; k++) {
            for (let j = 0; j < m.in; j++) {
              grads[m.a + k * m.in + j] += dz[n * r + k] * x[n * m.in + j];
              dx[n * m.in + j] += dz[n * r + k] * params[m.a + k * m.in + j];
            }
          }
        }
      }
    },
  };
}

/** Hooks of several parts, chained as compose.ts chains them (backward in reverse order). */
export function chainRefHooks(parts: readonly RefHooks[]): RefHooks {
  const backward = [...parts].reverse();
  const mix = parts.find((p) => p.mixOutput);
  return {
    linear(layer, name, y, x) {
      for (const p of parts) p.linear?.(layer, name, y, x);
    },
    linearBackward(layer, name, dx, dy, x) {
      for (const p of backward) p.linearBackward?.(layer, name, dx, dy, x);
    },
    ...(mix ? { mixOutput: mix.mixOutput, mixOutputBackward: mix.mixOutputBackward } : {}),
  };
}
