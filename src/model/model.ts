/**
 * The transformer as recorded GPU work: forward (embeddings → L blocks → final norm → logits → loss)
 * and backward, for the GPT-2 and Llama families, in llm.c's layer order. A `Graph` owns the
 * activation and gradient buffers planned from (B, T, L); recording it into a Recorder adds the
 * dispatches, and the recorder can be replayed step after step with new batches uploaded.
 *
 * Block, pre-norm, for both families:
 *   r1 = x + attnOut(attention(split(qkv(norm1(x)))))         (RoPE on q, k for Llama)
 *   x' = r1 + mlp(norm2(r1))                                   (GELU MLP for GPT-2, SwiGLU for Llama)
 * Biases exist only in GPT-2. Parameter gradients accumulate (+=) into a zeroed gradient table, so
 * a tied embedding receives both its LM-head and its embedding gradient.
 *
 * With `recompute`, only the residual stream is kept per layer; the backward re-records each block's
 * forward into one shared set of buffers before differentiating it (one extra forward of compute
 * for activation memory of O(L·B·T·C) instead of O(L·B·T·(C + F + …))).
 */
import type { Gpu } from "../gpu/device.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { createTensor, numel, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import { geluBackward, geluForward, swigluBackward, swigluForward } from "../ops/activation.ts";
import {
  attentionBackward,
  attentionForward,
  type AttentionMask,
  headModes,
  type LayerMaskMode,
} from "../ops/attention.ts";
import { crossEntropyInPlace, crossEntropyLossSum } from "../ops/crossentropy.ts";
import { fill } from "../ops/elementwise.ts";
import { encoderBackward, encoderForward } from "../ops/encoder.ts";
import { mergeHeads, mergeHeadsBackward, splitHeads, splitHeadsBackward } from "../ops/heads.ts";
import { matmul } from "../ops/matmul.ts";
import { layernormBackward, layernormForward, rmsnormBackward, rmsnormForward } from "../ops/norm.ts";
import { ropeBackward, ropeForward, type RopeTableTensors, uploadRopeTables } from "../ops/rope.ts";
import { ropeTables } from "./rope_scaling.ts";
import { type ModelWeights, viewOf } from "./weights.ts";

/** How a graph is built. */
export interface GraphOptions {
  B: number;
  T: number;
  /** Build the backward's buffers too. */
  training: boolean;
  /** Keep only the residual stream per layer and recompute the rest in the backward. */
  recompute?: boolean;
  /** Attention mask of every layer (default causal); S²-Attn trains with `shifted-groups`. */
  mask?: { mode: LayerMaskMode; groupSize?: number };
}

/** One block's saved activations. */
interface BlockActs {
  ln1: Tensor;
  ln1Mean: Tensor;
  ln1Rstd: Tensor;
  qkv: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  o: Tensor;
  lse: Tensor;
  /** (N, H·D) heads merged back into rows. */
  att: Tensor;
  /** (N, C) residual after attention. */
  r1: Tensor;
  ln2: Tensor;
  ln2Mean: Tensor;
  ln2Rstd: Tensor;
  /** GPT-2: fc pre-activation; Llama: gate. (N, F) */
  fc: Tensor;
  /** Llama: up projection. (N, F) */
  up: Tensor | null;
  /** Activated hidden (GELU output or SwiGLU output). (N, F) */
  hidden: Tensor;
}

/** Per-batch inputs, uploaded before each submit. */
export interface GraphInputs {
  /** (B, T) u32 token ids. */
  tokens: Tensor;
  /** (B·T,) i32 next-token targets; IGNORE_INDEX (−100) for no loss. */
  targets: Tensor;
  /** (B·T,) f32 per-token loss weights. */
  weights: Tensor;
  /** Encoder-backward buckets (see bucketTokens), each (N,) / (N + 1,) u32. */
  bucketIds: Tensor;
  bucketStart: Tensor;
  bucketPositions: Tensor;
}

/** A model's planned buffers for one (B, T). */
export interface Graph {
  gpu: Gpu;
  weights: ModelWeights;
  options: Required<Omit<GraphOptions, "mask">> & { mask: AttentionMask };
  inputs: GraphInputs;
  /** x[0] = embeddings, x[l + 1] = output of block l; each (B, T, C). */
  residual: Tensor[];
  blocks: BlockActs[];
  lnf: Tensor;
  lnfMean: Tensor;
  lnfRstd: Tensor;
  /** (N, V) logits; after the loss, overwritten by dlogits when training. */
  logits: Tensor;
  /** (N,) per-token −log p(target) (0 where ignored). */
  losses: Tensor;
  /** (1,) Σ losses. */
  lossSum: Tensor;
  /** Gradient table (same layout as params); only with training. */
  grads: Tensor | null;
  rope: RopeTableTensors | null;
  preRope: { q: Tensor; k: Tensor } | null;
  logitScale: Tensor;
  /** Bytes of every buffer the graph allocated (activations, gradients, scratch). */
  bytes: number;
  scratch: BackwardScratch | null;
}

interface BackwardScratch {
  dres: Tensor;
  dln: Tensor;
  dqkv: Tensor;
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  dqPre: Tensor | null;
  dkPre: Tensor | null;
  dO: Tensor;
  datt: Tensor;
  dfc: Tensor;
  dup: Tensor | null;
  dhidden: Tensor;
  dScale: Tensor;
  ones: Tensor;
}

/**
 * Plans and allocates a graph's buffers.
 * @example const graph = createGraph(gpu, weights, { B: 1, T: 512, training: true });
 */
export function createGraph(gpu: Gpu, weights: ModelWeights, opts: GraphOptions): Graph {
  const { B, T } = opts;
  const { V, C, L, H, Hkv, D, F, maxT } = weights.dims;
  if (!Number.isInteger(B) || B < 1 || !Number.isInteger(T) || T < 1) {
    throw new RangeError(`graph: B = ${B} and T = ${T} must be positive integers`);
  }
  const family = weights.config.family;
  if (family === "gpt2" && T > maxT) {
    throw new RangeError(`graph: T = ${T} exceeds the model's ${maxT} learned positions (extend wpe first)`);
  }
  const N = B * T;
  const QKV = (H + 2 * Hkv) * D;
  let bytes = 0;
  const make = (shape: number[], label: string, dtype: "f32" | "u32" | "i32" = "f32") => {
    bytes += numel(shape) * 4;
    return createTensor(gpu, shape, { label, dtype });
  };
  const block = (l: number | "shared"): BlockActs => ({
    ln1: make([N, C], `ln1.${l}`),
    ln1Mean: make([N], `ln1Mean.${l}`),
    ln1Rstd: make([N], `ln1Rstd.${l}`),
    qkv: make([B, T, QKV], `qkv.${l}`),
    q: make([B, H, T, D], `q.${l}`),
    k: make([B, Hkv, T, D], `k.${l}`),
    v: make([B, Hkv, T, D], `v.${l}`),
    o: make([B, H, T, D], `o.${l}`),
    lse: make([B, H, T], `lse.${l}`),
    att: make([B, T, H * D], `att.${l}`),
    r1: make([N, C], `r1.${l}`),
    ln2: make([N, C], `ln2.${l}`),
    ln2Mean: make([N], `ln2Mean.${l}`),
    ln2Rstd: make([N], `ln2Rstd.${l}`),
    fc: make([N, F], `fc.${l}`),
    up: family === "llama" ? make([N, F], `up.${l}`) : null,
    hidden: make([N, F], `hidden.${l}`),
  });
  const recompute = !!opts.recompute && opts.training;
  const shared = recompute ? block("shared") : null;
  const blocks = Array.from({ length: L }, (_, l) => shared ?? block(l));
  const inputs: GraphInputs = {
    tokens: make([B, T], "tokens", "u32"),
    targets: make([N], "targets", "i32"),
    weights: make([N], "lossWeights"),
    bucketIds: make([N], "bucketIds", "u32"),
    bucketStart: make([N + 1], "bucketStart", "u32"),
    bucketPositions: make([N], "bucketPositions", "u32"),
  };
  const rope = family === "llama"
    ? uploadRopeTables(gpu, ropeTables(weights.config.rope, D, Math.max(T, 1), T), "rope")
    : null;
  const modeSpec = opts.mask ?? { mode: "causal" as const };
  const mask: AttentionMask = { modes: headModes(H, modeSpec.mode), groupSize: modeSpec.groupSize };
  const scratch: BackwardScratch | null = opts.training
    ? {
      dres: make([N, C], "dres"),
      dln: make([N, C], "dln"),
      dqkv: make([B, T, QKV], "dqkv"),
      dq: make([B, H, T, D], "dq"),
      dk: make([B, Hkv, T, D], "dk"),
      dv: make([B, Hkv, T, D], "dv"),
      dqPre: family === "llama" ? make([B, H, T, D], "dqPre") : null,
      dkPre: family === "llama" ? make([B, Hkv, T, D], "dkPre") : null,
      dO: make([B, H, T, D], "dO"),
      datt: make([B, T, H * D], "datt"),
      dfc: make([N, F], "dfc"),
      dup: family === "llama" ? make([N, F], "dup") : null,
      dhidden: make([N, F], "dhidden"),
      dScale: make([H], "dScale"),
      ones: tensorFrom(gpu, [N, 1], new Float32Array(N).fill(1), { label: "ones" }),
    }
    : null;
  // q and k before RoPE (Llama): split heads write here, RoPE reads from here.
  const preRope = family === "llama"
    ? { q: make([B, H, T, D], "qPre"), k: make([B, Hkv, T, D], "kPre") }
    : null;
  const grads = opts.training ? make([weights.table.size], "grads") : null;
  return {
    gpu,
    weights,
    options: { B, T, training: opts.training, recompute, mask },
    inputs,
    residual: Array.from({ length: L + 1 }, (_, l) => make([B, T, C], `x.${l}`)),
    blocks,
    lnf: make([N, C], "lnf"),
    lnfMean: make([N], "lnfMean"),
    lnfRstd: make([N], "lnfRstd"),
    logits: make([N, V], "logits"),
    losses: make([N], "losses"),
    lossSum: make([1], "lossSum"),
    grads,
    rope,
    preRope,
    logitScale: tensorFrom(gpu, [H], new Float32Array(H).fill(1 / Math.sqrt(D)), { label: "logitScale" }),
    bytes,
    scratch,
  };
}

const p = (g: Graph, name: string) => viewOf(g.weights.params, g.weights.table, name);
const dp = (g: Graph, name: string) => viewOf(g.grads!, g.weights.table, name);
const asRow = (t: Tensor): Tensor => ({ ...t, shape: [1, numel(t.shape)] });

async function norm(
  rec: Recorder,
  g: Graph,
  out: Tensor,
  mean: Tensor,
  rstd: Tensor,
  x: Tensor,
  prefix: string,
) {
  const { B, T } = g.options;
  const C = g.weights.dims.C;
  if (g.weights.config.family === "gpt2") {
    await layernormForward(rec, out, mean, rstd, x, p(g, `${prefix}.w`), p(g, `${prefix}.b`), B * T, C, {
      eps: g.weights.config.lnEps,
    });
  } else {
    await rmsnormForward(rec, out, rstd, x, p(g, `${prefix}.w`), B * T, C, { eps: g.weights.config.rmsEps });
  }
}

async function normBackward(
  rec: Recorder,
  g: Graph,
  dx: Tensor,
  dout: Tensor,
  x: Tensor,
  mean: Tensor,
  rstd: Tensor,
  prefix: string,
  accumulate: boolean,
) {
  const { B, T } = g.options;
  const C = g.weights.dims.C;
  if (g.weights.config.family === "gpt2") {
    await layernormBackward(
      rec,
      dx,
      dp(g, `${prefix}.w`),
      dp(g, `${prefix}.b`),
      dout,
      x,
      p(g, `${prefix}.w`),
      mean,
      rstd,
      B * T,
      C,
      { accumulate },
    );
  } else {
    await rmsnormBackward(rec, dx, dp(g, `${prefix}.w`), dout, x, p(g, `${prefix}.w`), rstd, B * T, C, {
      accumulate,
    });
  }
}

// y (N, out) = x (N, in) · Wᵀ [+ b], with an optional accumulate into y.
function linear(rec: Recorder, g: Graph, y: Tensor, x: Tensor, name: string, accumulate = false) {
  const gpt2 = g.weights.config.family === "gpt2";
  return matmul(rec, flat2(y), flat2(x), p(g, `${name}.w`), {
    transB: true,
    accumulate,
    bias: gpt2 ? p(g, `${name}.b`) : undefined,
  });
}

// dW += dyᵀ·x; db += Σ_rows dy; dx (=, or += with accumulate) dy·W.
async function linearBackward(
  rec: Recorder,
  g: Graph,
  dx: Tensor | null,
  dy: Tensor,
  x: Tensor,
  name: string,
  accumulateDx = false,
) {
  const s = g.scratch!;
  await matmul(rec, dp(g, `${name}.w`), flat2(dy), flat2(x), { transA: true, accumulate: true });
  if (g.weights.config.family === "gpt2") {
    await matmul(rec, asRow(dp(g, `${name}.b`)), s.ones, flat2(dy), { transA: true, accumulate: true });
  }
  if (dx) await matmul(rec, flat2(dx), flat2(dy), p(g, `${name}.w`), { accumulate: accumulateDx });
}

// A (B, T, X) activation as the (N, X) matrix the matmuls see.
function flat2(t: Tensor): Tensor {
  if (t.shape.length === 2) return t;
  const last = t.shape[t.shape.length - 1];
  return { ...t, shape: [numel(t.shape) / last, last] };
}

async function blockForward(rec: Recorder, g: Graph, l: number): Promise<void> {
  const a = g.blocks[l];
  const x = g.residual[l];
  const pre = `h.${l}`;
  const llama = g.weights.config.family === "llama";
  await norm(rec, g, a.ln1, a.ln1Mean, a.ln1Rstd, x, `${pre}.ln1`);
  await linear(rec, g, a.qkv, a.ln1, `${pre}.qkv`);
  if (llama) {
    const unrotated = g.preRope!;
    await splitHeads(rec, unrotated.q, unrotated.k, a.v, a.qkv);
    await ropeForward(rec, a.q, unrotated.q, g.rope!, 0);
    await ropeForward(rec, a.k, unrotated.k, g.rope!, 0);
  } else {
    await splitHeads(rec, a.q, a.k, a.v, a.qkv);
  }
  await attentionForward(
    rec,
    { o: a.o, lse: a.lse },
    { q: a.q, k: a.k, v: a.v, logitScale: g.logitScale },
    g.options.mask,
  );
  await mergeHeads(rec, a.att, a.o);
  rec.copy(a.r1, flat2(x));
  await linear(rec, g, a.r1, a.att, `${pre}.attnOut`, true);
  await norm(rec, g, a.ln2, a.ln2Mean, a.ln2Rstd, a.r1, `${pre}.ln2`);
  const out = g.residual[l + 1];
  rec.copy(flat2(out), a.r1);
  if (llama) {
    await linear(rec, g, a.fc, a.ln2, `${pre}.gate`);
    await linear(rec, g, a.up!, a.ln2, `${pre}.up`);
    await swigluForward(rec, a.hidden, a.fc, a.up!);
    await linear(rec, g, out, a.hidden, `${pre}.down`, true);
  } else {
    await linear(rec, g, a.fc, a.ln2, `${pre}.fc`);
    await geluForward(rec, a.hidden, a.fc);
    await linear(rec, g, out, a.hidden, `${pre}.fcProj`, true);
  }
}

/**
 * Records the forward pass: embeddings, blocks, final norm, logits and per-token losses (and Σ loss).
 * With `training`, the loss kernel writes dlogits over the logits, scaled by `gradScale` (uniform
 * 1/number of counted tokens is the usual mean loss).
 */
export async function recordForward(
  rec: Recorder,
  g: Graph,
  opts: { gradScale?: number } = {},
): Promise<void> {
  const { B, T } = g.options;
  const gpt2 = g.weights.config.family === "gpt2";
  const w = g.weights;
  await encoderForward(rec, g.residual[0], g.inputs.tokens, p(g, "wte"), gpt2 ? p(g, "wpe") : null, B, T);
  for (let l = 0; l < w.dims.L; l++) await blockForward(rec, g, l);
  await norm(rec, g, g.lnf, g.lnfMean, g.lnfRstd, g.residual[w.dims.L], "lnf");
  await matmul(rec, g.logits, g.lnf, p(g, w.dims.tied ? "wte" : "lmHead.w"), { transB: true });
  // The in-place loss always writes dlogits; evaluation simply ignores them.
  await crossEntropyInPlace(rec, g.losses, g.logits, g.inputs.targets, g.inputs.weights, {
    gradScale: opts.gradScale ?? 1,
  });
  await crossEntropyLossSum(rec, g.lossSum, g.losses);
}

async function blockBackward(rec: Recorder, g: Graph, l: number): Promise<void> {
  const a = g.blocks[l];
  const s = g.scratch!;
  const pre = `h.${l}`;
  const llama = g.weights.config.family === "llama";
  // s.dres holds d x[l + 1]; the MLP branch first.
  if (llama) {
    await linearBackward(rec, g, s.dhidden, s.dres, a.hidden, `${pre}.down`);
    await swigluBackward(rec, s.dfc, s.dup!, s.dhidden, a.fc, a.up!);
    await linearBackward(rec, g, s.dln, s.dfc, a.ln2, `${pre}.gate`);
    await linearBackward(rec, g, s.dln, s.dup!, a.ln2, `${pre}.up`, true);
  } else {
    await linearBackward(rec, g, s.dhidden, s.dres, a.hidden, `${pre}.fcProj`);
    await geluBackward(rec, s.dfc, s.dhidden, a.fc);
    await linearBackward(rec, g, s.dln, s.dfc, a.ln2, `${pre}.fc`);
  }
  await normBackward(rec, g, s.dres, s.dln, a.r1, a.ln2Mean, a.ln2Rstd, `${pre}.ln2`, true);
  // s.dres now holds d r1; the attention branch.
  await linearBackward(rec, g, s.datt, s.dres, a.att, `${pre}.attnOut`);
  await mergeHeadsBackward(rec, s.dO, s.datt);
  const inputs = { q: a.q, k: a.k, v: a.v, o: a.o, lse: a.lse, dO: s.dO, logitScale: g.logitScale };
  if (llama) {
    await attentionBackward(rec, { dq: s.dq, dk: s.dk, dv: s.dv, dScale: s.dScale }, inputs, g.options.mask);
    await ropeBackward(rec, s.dqPre!, s.dq, g.rope!, 0);
    await ropeBackward(rec, s.dkPre!, s.dk, g.rope!, 0);
    await splitHeadsBackward(rec, s.dqkv, s.dqPre!, s.dkPre!, s.dv);
  } else {
    await attentionBackward(rec, { dq: s.dq, dk: s.dk, dv: s.dv, dScale: s.dScale }, inputs, g.options.mask);
    await splitHeadsBackward(rec, s.dqkv, s.dq, s.dk, s.dv);
  }
  await linearBackward(rec, g, s.dln, s.dqkv, a.ln1, `${pre}.qkv`);
  await normBackward(rec, g, s.dres, s.dln, g.residual[l], a.ln1Mean, a.ln1Rstd, `${pre}.ln1`, true);
}

/**
 * Records the backward pass after `recordForward` (with training): zeroes the gradient table, then
 * differentiates the LM head, every block in reverse and the embeddings.
 */
export async function recordBackward(rec: Recorder, g: Graph): Promise<void> {
  if (!g.grads || !g.scratch) throw new Error("recordBackward: the graph was built without training buffers");
  const { B, T } = g.options;
  const w = g.weights;
  const s = g.scratch;
  const gpt2 = w.config.family === "gpt2";
  await fill(rec, g.grads, 0);
  const head = w.dims.tied ? "wte" : "lmHead.w";
  // g.logits holds dlogits (N, V) here.
  await matmul(rec, dp(g, head), g.logits, g.lnf, { transA: true, accumulate: true });
  await matmul(rec, s.dln, g.logits, p(g, head));
  await normBackward(rec, g, s.dres, s.dln, g.residual[w.dims.L], g.lnfMean, g.lnfRstd, "lnf", false);
  for (let l = w.dims.L - 1; l >= 0; l--) {
    if (g.options.recompute) await blockForward(rec, g, l);
    await blockBackward(rec, g, l);
  }
  await encoderBackward(
    rec,
    dp(g, "wte"),
    gpt2 ? dp(g, "wpe") : null,
    s.dres,
    g.inputs.bucketIds,
    g.inputs.bucketStart,
    g.inputs.bucketPositions,
    B,
    T,
  );
}

/** Frees every buffer the graph allocated (the weights are not the graph's). */
export function destroyGraph(g: Graph): void {
  const seen = new Set<GPUBuffer>();
  const all: Tensor[] = [
    ...Object.values(g.inputs),
    ...g.residual,
    ...g.blocks.flatMap((b) => Object.values(b).filter((t): t is Tensor => t !== null)),
    g.lnf,
    g.lnfMean,
    g.lnfRstd,
    g.logits,
    g.losses,
    g.lossSum,
    g.logitScale,
    ...(g.grads ? [g.grads] : []),
    ...(g.scratch ? Object.values(g.scratch).filter((t): t is Tensor => !!t) : []),
    ...(g.preRope ? [g.preRope.q, g.preRope.k] : []),
    ...(g.rope
      ? Object.values(g.rope).filter((t): t is Tensor => typeof t === "object" && "buffer" in t)
      : []),
  ];
  for (const t of all) {
    if (!seen.has(t.buffer)) {
      seen.add(t.buffer);
      t.buffer.destroy();
    }
  }
}
