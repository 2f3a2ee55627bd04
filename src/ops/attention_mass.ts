/**
 * Launcher for the attention-mass kernel (kernels/attention_mass.wgsl): for every (batch, head, query row)
 * the softmax probability mass the row puts on each key category, recomputed from the attention
 * forward's q, k and row log-sum-exp without any T×T buffer:
 *   mass[b, h, i, c] = Σ_{j visible to i, bit c of categories[b, j] set} exp(logitScale_h·(q_i·k_j) − lse_i)
 * for c < CATS, then the mass on keys with none of those bits, then the sink logit's exp(sink_h − lse_i).
 * The visibility rule is the attention's own (per-head modes, groups, turns; attention_mask.wgsl), and
 * lse includes the sink, so over a partition of the keys a row's columns sum to 1 (up to f32 rounding).
 * Deterministic: every output has one owner that sums its keys in ascending order.
 */
import type { Gpu } from "../gpu/device.ts";
import { kernel } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { absent, type AttentionMask, checkMask, maskInputs, MAX_HEAD_SIZE } from "./attention.ts";
import { checkIs, shapeText } from "./checks.ts";

/** Category bits a call can count (the kernel's register array). */
export const MAX_CATEGORIES = 8;
const WG = 64;
/** Loop iterations llvmpipe allows one invocation in total before it silently stops (gallivm). */
const SOFTWARE_LOOP_LIMIT = 65535;

/** What the mass is computed from: the attention forward's inputs and its lse. */
export interface AttentionMassInputs {
  /** (B, H, T, D) the queries the attention used (after RoPE). */
  q: Tensor;
  /** (B, Hkv, T, D). */
  k: Tensor;
  /** (B, H, T) the forward's row log-sum-exp, sink included. */
  lse: Tensor;
  /** (H,) the logit scales the forward used. */
  logitScale: Tensor;
  /** (H,) the sink logits the forward used, if any. */
  sinkLogit?: Tensor;
  /** (B, T) u32 category bits of every key token. */
  categories: Tensor;
}

/** Options of attentionMass. */
export interface AttentionMassOptions {
  /** Category bits counted, CATS (default 4, at most MAX_CATEGORIES); bits above are ignored. */
  categoryCount?: number;
  /** Query rows measured, [from, to) (default all T): response rows only cost only their keys. */
  rows?: { from: number; to: number };
  /**
   * Keys per dispatch (each pass resumes from the sums stored by the one before; the results do not
   * depend on it). Default: all of T on GPUs; on CPU adapters as many as keep one invocation under
   * llvmpipe's 65,535 loop iterations.
   */
  keysPerPass?: number;
}

/**
 * mass ← the softmax mass of every measured query row on each key category, the uncategorised keys and
 * the sink logit. mass: (B, H, rows, CATS + 2); q: (B, H, T, D); k: (B, Hkv, T, D); lse: (B, H, T);
 * logitScale, sinkLogit: (H,); categories: (B, T) u32. One thread per query row, keys streamed.
 * @example await attentionMass(rec, mass, { q, k, lse, logitScale, categories }, graph.options.mask);
 */
export async function attentionMass(
  rec: Recorder,
  mass: Tensor,
  inputs: AttentionMassInputs,
  mask: AttentionMask,
  opts: AttentionMassOptions = {},
): Promise<void> {
  const what = "attentionMass";
  const gpu: Gpu = rec.gpu;
  const { q, k, lse, logitScale, sinkLogit, categories } = inputs;
  if (q.shape.length !== 4) throw new RangeError(`${what}: ${shapeText(q)} must be (B, H, T, D)`);
  if (k.shape.length !== 4) throw new RangeError(`${what}: ${shapeText(k)} must be (B, Hkv, T, D)`);
  const [B, H, T, D] = q.shape;
  const Hkv = k.shape[1];
  checkIs(what, q, [B, H, T, D], "(B, H, T, D)", "f32");
  checkIs(what, k, [B, Hkv, T, D], "(B, Hkv, T, D)", "f32");
  if (H % Hkv !== 0) {
    throw new RangeError(
      `${what}: H = ${H} query heads is not a multiple of Hkv = ${Hkv} in ${shapeText(k)}`,
    );
  }
  if (D % 4 !== 0 || D > MAX_HEAD_SIZE) {
    throw new RangeError(
      `${what}: head size D = ${D} must be a multiple of 4 and at most ${MAX_HEAD_SIZE} (rows kept as vec4)`,
    );
  }
  checkIs(what, lse, [B, H, T], "(B, H, T)", "f32");
  checkIs(what, logitScale, [H], "(H,)", "f32");
  if (sinkLogit) checkIs(what, sinkLogit, [H], "(H,)", "f32");
  checkIs(what, categories, [B, T], "(B, T)", "u32");
  checkMask(what, mask, B, H, T);
  const CATS = opts.categoryCount ?? 4;
  if (!Number.isInteger(CATS) || CATS < 1 || CATS > MAX_CATEGORIES) {
    throw new RangeError(`${what}: categoryCount = ${CATS} must be an integer in 1..${MAX_CATEGORIES}`);
  }
  const { from, to } = opts.rows ?? { from: 0, to: T };
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > T || from >= to) {
    throw new RangeError(`${what}: rows [${from}, ${to}) must be a non-empty range inside [0, T = ${T})`);
  }
  const rows = to - from;
  checkIs(what, mass, [B, H, rows, CATS + 2], "(B, H, rows, categoryCount + 2)", "f32");
  // Per key an invocation runs the D/4 dot loop, the category loop and the key loop itself.
  const perKey = D / 4 + CATS + 2;
  const perPass = opts.keysPerPass ??
    (gpu.software ? Math.floor((SOFTWARE_LOOP_LIMIT - 4 * (CATS + 2) - D) / perKey) : T);
  if (!Number.isInteger(perPass) || perPass < 1) {
    throw new RangeError(`${what}: keysPerPass = ${perPass} must be a positive integer`);
  }
  const k2 = await kernel(gpu, {
    file: "attention_mass",
    entry: "attentionMass",
    constants: { D, WG, CATS },
  });
  const [modes, turn, flags] = maskInputs(gpu, mask);
  // Causal-like modes show the measured rows no key at or past `to`.
  const keys = mask.modes.some((m) => m === "full" || m === "turns") ? T : to;
  for (let begin = 0; begin < keys; begin += perPass) {
    const end = Math.min(keys, begin + perPass);
    rec.dispatch(k2, {
      uniforms: [
        H,
        Hkv,
        T,
        mask.groupSize ?? 0,
        sinkLogit ? 1 : 0,
        from,
        rows,
        begin,
        end,
        begin === 0 ? 1 : 0,
      ],
      outputs: [mass],
      inputs: [q, k, lse, modes, logitScale, sinkLogit ?? absent(gpu, "f32"), turn, flags, categories],
      workgroups: [Math.ceil(rows / WG), H, B],
    });
  }
}
