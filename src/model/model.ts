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
 *
 * Fine-tuning methods attach through an `Adapter` (adapter.ts): hooks after every block linear, on the
 * attention parameters, between attention and its output projection, and after the final norm, with
 * gradients in the adapter's own buffer. `trainable` says which base tensors (or element ranges) get
 * gradients; base weight gradients of frozen linears are not computed at all, and without any
 * trainable base tensor there is no base gradient table.
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
import { type ModelWeights, view, viewOf } from "./weights.ts";
import {
  type Adapter,
  type AdapterHooks,
  ALL_BASE,
  type AttentionParams,
  type BaseTrainable,
  type DecodeLink,
  headSite,
  type LinearName,
  type LinearSite,
  trainableRange,
} from "./adapter.ts";
import { axpy } from "../ops/elementwise.ts";

/** How a graph is built. */
export interface GraphOptions {
  B: number;
  T: number;
  /** Build the backward's buffers too. */
  training: boolean;
  /** Keep only the residual stream per layer and recompute the rest in the backward. */
  recompute?: boolean;
  /**
   * Attention mask of every layer (default causal); S²-Attn trains with `shifted-groups`; `turns`
   * (FocuSFT's glm_bidir) reads the per-token turn ids and flags uploaded into `inputs.turn`/`tokenFlags`.
   */
  mask?: { mode: LayerMaskMode; groupSize?: number };
  /** A fine-tuning method's trainable tensors and hooks. */
  adapter?: Adapter;
  /** Set by a KV-cache decoder for its prompt graph (passed to the adapter's attach). */
  decode?: DecodeLink;
  /** Which base tensors train (default: all of them when training). */
  trainable?: BaseTrainable;
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
  /** (B·T,) u32 absolute position of every row (t for row b·T + t); adapters read it. */
  positions: Tensor;
  /** (B, T) u32 turn ids and flags of the `turns` mask; null with other masks. */
  turn: Tensor | null;
  tokenFlags: Tensor | null;
}

/** A model's planned buffers for one (B, T). */
export interface Graph {
  gpu: Gpu;
  weights: ModelWeights;
  options: Required<Omit<GraphOptions, "mask" | "adapter" | "trainable" | "decode">> & {
    mask: AttentionMask;
  };
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
  /** Gradient table (same layout as params); only with training and some trainable base tensor. */
  grads: Tensor | null;
  /** The attached method, its hooks on this graph and its gradient buffer (with training). */
  adapter: Adapter | null;
  hooks: AdapterHooks;
  adapterGrads: Tensor | null;
  /** Which base tensors train; `frozenRanges` are the element ranges of `grads` zeroed after backward. */
  trainable: BaseTrainable;
  frozenRanges: { offset: number; count: number }[];
  /** Per layer, the attention parameters the adapter supplied in the last recorded forward. */
  attentionParams: AttentionParams[];
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
  dSink: Tensor;
  /** Gradients of the pre-RoPE query and of v from an attention-output mix (Gated Memory, LoRaDA). */
  dqMix: Tensor | null;
  dvMix: Tensor | null;
  /** Where frozen norms write their unused weight gradients (2·C). */
  junk: Tensor;
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
    positions: tensorFrom(gpu, [N], Uint32Array.from({ length: N }, (_, n) => n % T), {
      label: "positions",
      dtype: "u32",
    }),
    turn: opts.mask?.mode === "turns" ? make([B, T], "turn", "u32") : null,
    tokenFlags: opts.mask?.mode === "turns" ? make([B, T], "tokenFlags", "u32") : null,
  };
  bytes += N * 4;
  const rope = family === "llama"
    ? uploadRopeTables(gpu, ropeTables(weights.config.rope, D, Math.max(T, 1), T), "rope")
    : null;
  if (rope) bytes += 2 * numel(rope.cos.shape) * 4;
  const modeSpec = opts.mask ?? { mode: "causal" as const };
  const mask: AttentionMask = {
    modes: headModes(H, modeSpec.mode),
    groupSize: modeSpec.groupSize,
    turn: inputs.turn ?? undefined,
    tokenFlags: inputs.tokenFlags ?? undefined,
  };
  const trainable = opts.training ? (opts.trainable ?? ALL_BASE) : () => false;
  const frozenRanges: { offset: number; count: number }[] = [];
  let anyBase = false;
  for (const e of weights.table.entries) {
    const r = trainableRange(trainable, e);
    if (r) anyBase = true;
    const from = r?.from ?? 0;
    const to = r ? r.from + r.count : e.numel;
    if (from > 0) frozenRanges.push({ offset: e.offset, count: from });
    if (to < e.numel) frozenRanges.push({ offset: e.offset + to, count: e.numel - to });
  }
  const adapter = opts.adapter ?? null;
  const adapterGrads = opts.training && adapter && adapter.table.size > 0
    ? make([adapter.table.size], `${adapter.name}.grads`)
    : null;
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
      dSink: make([H], "dSink"),
      dqMix: null,
      dvMix: null,
      junk: make([2 * Math.ceil(C / 64) * 64], "junk"),
      ones: tensorFrom(gpu, [N, 1], new Float32Array(N).fill(1), { label: "ones" }),
    }
    : null;
  // q and k before RoPE (Llama): split heads write here, RoPE reads from here.
  const preRope = family === "llama"
    ? { q: make([B, H, T, D], "qPre"), k: make([B, Hkv, T, D], "kPre") }
    : null;
  if (scratch) bytes += N * 4; // ones
  bytes += H * 4; // logitScale
  const grads = opts.training && anyBase ? make([weights.table.size], "grads") : null;
  const hooks = adapter
    ? adapter.attach({
      B,
      T,
      dims: weights.dims,
      family,
      training: opts.training,
      weights,
      grads: adapterGrads,
      positions: inputs.positions,
      lossWeights: inputs.weights,
      decode: opts.decode,
    })
    : {};
  if (scratch && (hooks.mixOutput || hooks.mixOutputBackward)) {
    scratch.dqMix = make([B, H, T, D], "dqMix");
    scratch.dvMix = make([B, Hkv, T, D], "dvMix");
  }
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
    adapter,
    hooks,
    adapterGrads,
    trainable,
    frozenRanges,
    attentionParams: [],
    rope,
    preRope,
    logitScale: tensorFrom(gpu, [H], new Float32Array(H).fill(1 / Math.sqrt(D)), { label: "logitScale" }),
    bytes,
    scratch,
  };
}

const p = (g: Graph, name: string) => viewOf(g.weights.params, g.weights.table, name);
// The gradient of a base tensor (a table entry, never a q/k/v view) that trains, or null (frozen, or
// no base gradient table).
const dp = (g: Graph, name: string): Tensor | null => {
  if (!g.grads) return null;
  const entry = g.weights.table.byName.get(name);
  if (!entry) throw new RangeError(`parameter table has no tensor "${name}"`);
  return trainableRange(g.trainable, entry) ? view(g.grads, entry) : null;
};
// Where a norm writes its weight gradient: the table when it exists (frozen ranges are zeroed after
// the backward), else scratch.
const normGrad = (g: Graph, name: string, part: 0 | 1): Tensor => {
  if (g.grads) return viewOf(g.grads, g.weights.table, name);
  const C = g.weights.dims.C;
  const junk = g.scratch!.junk;
  const stride = Math.ceil(C / 64) * 64; // each half starts on a 256-byte boundary
  return { ...junk, offset: junk.offset + part * stride * 4, shape: [C], label: `${name} (frozen)` };
};
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
      normGrad(g, `${prefix}.w`, 0),
      normGrad(g, `${prefix}.b`, 1),
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
    await rmsnormBackward(
      rec,
      dx,
      normGrad(g, `${prefix}.w`, 0),
      dout,
      x,
      p(g, `${prefix}.w`),
      rstd,
      B * T,
      C,
      {
        accumulate,
      },
    );
  }
}

function site(g: Graph, layer: number, name: LinearName): LinearSite {
  const w = viewOf(g.weights.params, g.weights.table, `h.${layer}.${name}.w`);
  return { layer, name, inDim: w.shape[1], outDim: w.shape[0] };
}

// y (N, out) = x (N, in) · Wᵀ [+ b], with an optional accumulate into y; then the adapter's term.
// With accumulate, the adapter sees y after the base product was added.
async function linear(
  rec: Recorder,
  g: Graph,
  y: Tensor,
  x: Tensor,
  layer: number,
  name: LinearName,
  accumulate = false,
) {
  const gpt2 = g.weights.config.family === "gpt2";
  const full = `h.${layer}.${name}`;
  await matmul(rec, flat2(y), flat2(x), p(g, `${full}.w`), {
    transB: true,
    accumulate,
    bias: gpt2 ? p(g, `${full}.b`) : undefined,
  });
  if (g.hooks.linearForward) await g.hooks.linearForward(rec, site(g, layer, name), flat2(y), flat2(x));
}

// dW += dyᵀ·x and db += Σ_rows dy when they train; dx (=, or += with accumulate) dy·W; then the
// adapter's backward.
async function linearBackward(
  rec: Recorder,
  g: Graph,
  dx: Tensor | null,
  dy: Tensor,
  x: Tensor,
  layer: number,
  name: LinearName,
  accumulateDx = false,
) {
  const s = g.scratch!;
  const full = `h.${layer}.${name}`;
  const dw = dp(g, `${full}.w`);
  if (dw) await matmul(rec, dw, flat2(dy), flat2(x), { transA: true, accumulate: true });
  const db = g.weights.config.family === "gpt2" ? dp(g, `${full}.b`) : null;
  if (db) await matmul(rec, asRow(db), s.ones, flat2(dy), { transA: true, accumulate: true });
  if (dx) await matmul(rec, flat2(dx), flat2(dy), p(g, `${full}.w`), { accumulate: accumulateDx });
  if (g.hooks.linearBackward) {
    await g.hooks.linearBackward(rec, site(g, layer, name), dx ? flat2(dx) : null, flat2(dy), flat2(x));
  }
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
  await linear(rec, g, a.qkv, a.ln1, l, "qkv");
  if (llama) {
    const unrotated = g.preRope!;
    await splitHeads(rec, unrotated.q, unrotated.k, a.v, a.qkv);
    await ropeForward(rec, a.q, unrotated.q, g.rope!, 0);
    await ropeForward(rec, a.k, unrotated.k, g.rope!, 0);
  } else {
    await splitHeads(rec, a.q, a.k, a.v, a.qkv);
  }
  const ap = g.hooks.attention ? await g.hooks.attention(rec, l) : {};
  g.attentionParams[l] = ap;
  await attentionForward(
    rec,
    { o: a.o, lse: a.lse },
    { q: a.q, k: a.k, v: a.v, logitScale: ap.logitScale ?? g.logitScale, sinkLogit: ap.sinkLogit },
    g.options.mask,
  );
  if (g.hooks.mixOutput) {
    await g.hooks.mixOutput(rec, l, { o: a.o, qPre: llama ? g.preRope!.q : a.q, v: a.v, att: a.att });
  } else {
    await mergeHeads(rec, a.att, a.o);
  }
  rec.copy(a.r1, flat2(x));
  await linear(rec, g, a.r1, a.att, l, "attnOut", true);
  await norm(rec, g, a.ln2, a.ln2Mean, a.ln2Rstd, a.r1, `${pre}.ln2`);
  const out = g.residual[l + 1];
  rec.copy(flat2(out), a.r1);
  if (llama) {
    await linear(rec, g, a.fc, a.ln2, l, "gate");
    await linear(rec, g, a.up!, a.ln2, l, "up");
    await swigluForward(rec, a.hidden, a.fc, a.up!);
    await linear(rec, g, out, a.hidden, l, "down", true);
  } else {
    await linear(rec, g, a.fc, a.ln2, l, "fc");
    await geluForward(rec, a.hidden, a.fc);
    await linear(rec, g, out, a.hidden, l, "fcProj", true);
  }
}

/**
 * Records the forward pass: embeddings, blocks, final norm, logits and per-token losses (and Σ loss).
 * With `training`, the loss kernel writes dlogits over the logits, scaled by `gradScale` (uniform
 * 1/number of counted tokens is the usual mean loss). With `logitsOnly`, the loss is not computed and
 * `g.logits` keeps the logits.
 *
 * `fromLayer` k > 0 starts at block k and leaves the embeddings and blocks below as they are: the caller
 * promises that an earlier forward of this graph on the same batch, with the same weights and adapter
 * values below k, left residual[k] and the lower blocks' activations in place (no backward below k
 * since). FocuSFT's inner passes use it; the results are those of a full forward, bit for bit.
 */
export async function recordForward(
  rec: Recorder,
  g: Graph,
  opts: { gradScale?: number; logitsOnly?: boolean; fromLayer?: number } = {},
): Promise<void> {
  const { B, T } = g.options;
  const gpt2 = g.weights.config.family === "gpt2";
  const w = g.weights;
  const from = layerBound(opts.fromLayer ?? 0, w.dims.L, "fromLayer");
  if (from === 0) {
    await encoderForward(rec, g.residual[0], g.inputs.tokens, p(g, "wte"), gpt2 ? p(g, "wpe") : null, B, T);
  }
  for (let l = from; l < w.dims.L; l++) await blockForward(rec, g, l);
  await norm(rec, g, g.lnf, g.lnfMean, g.lnfRstd, g.residual[w.dims.L], "lnf");
  if (g.hooks.finalNorm) await g.hooks.finalNorm(rec, g.lnf);
  await matmul(rec, g.logits, g.lnf, p(g, w.dims.tied ? "wte" : "lmHead.w"), { transB: true });
  if (g.hooks.linearForward) await g.hooks.linearForward(rec, headSite(w.dims), g.logits, g.lnf);
  // `logitsOnly` stops here and leaves the logits for reading (scoring, decoding).
  if (opts.logitsOnly) return;
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
    await linearBackward(rec, g, s.dhidden, s.dres, a.hidden, l, "down");
    await swigluBackward(rec, s.dfc, s.dup!, s.dhidden, a.fc, a.up!);
    await linearBackward(rec, g, s.dln, s.dfc, a.ln2, l, "gate");
    await linearBackward(rec, g, s.dln, s.dup!, a.ln2, l, "up", true);
  } else {
    await linearBackward(rec, g, s.dhidden, s.dres, a.hidden, l, "fcProj");
    await geluBackward(rec, s.dfc, s.dhidden, a.fc);
    await linearBackward(rec, g, s.dln, s.dfc, a.ln2, l, "fc");
  }
  await normBackward(rec, g, s.dres, s.dln, a.r1, a.ln2Mean, a.ln2Rstd, `${pre}.ln2`, true);
  // s.dres now holds d r1; the attention branch.
  await linearBackward(rec, g, s.datt, s.dres, a.att, l, "attnOut");
  let mixed = { dq: false, dv: false };
  if (g.hooks.mixOutputBackward) {
    mixed = await g.hooks.mixOutputBackward(rec, l, {
      o: a.o,
      v: a.v,
      att: a.att,
      datt: s.datt,
      dO: s.dO,
      dqPre: s.dqMix!,
      dv: s.dvMix!,
    });
  } else {
    await mergeHeadsBackward(rec, s.dO, s.datt);
  }
  const ap = g.attentionParams[l] ?? {};
  const inputs = {
    q: a.q,
    k: a.k,
    v: a.v,
    o: a.o,
    lse: a.lse,
    dO: s.dO,
    logitScale: ap.logitScale ?? g.logitScale,
    sinkLogit: ap.sinkLogit,
  };
  const attnGrads = {
    dq: s.dq,
    dk: s.dk,
    dv: s.dv,
    dScale: s.dScale,
    dSink: ap.sinkLogit ? s.dSink : undefined,
  };
  await attentionBackward(rec, attnGrads, inputs, g.options.mask);
  // In place through axpy (α = 1): WebGPU refuses a buffer bound as both the input and the output of add.
  if (mixed.dv) await axpy(rec, s.dv, s.dvMix!, 1);
  if (g.hooks.attentionBackward) {
    await g.hooks.attentionBackward(rec, l, {
      dScale: ap.logitScale ? s.dScale : undefined,
      dSink: ap.sinkLogit ? s.dSink : undefined,
    });
  }
  if (llama) {
    await ropeBackward(rec, s.dqPre!, s.dq, g.rope!, 0);
    await ropeBackward(rec, s.dkPre!, s.dk, g.rope!, 0);
    if (mixed.dq) await axpy(rec, s.dqPre!, s.dqMix!, 1);
    await splitHeadsBackward(rec, s.dqkv, s.dqPre!, s.dkPre!, s.dv);
  } else {
    if (mixed.dq) await axpy(rec, s.dq, s.dqMix!, 1);
    await splitHeadsBackward(rec, s.dqkv, s.dq, s.dk, s.dv);
  }
  await linearBackward(rec, g, s.dln, s.dqkv, a.ln1, l, "qkv");
  await normBackward(rec, g, s.dres, s.dln, g.residual[l], a.ln1Mean, a.ln1Rstd, `${pre}.ln1`, true);
}

/**
 * Records the backward pass after `recordForward` (with training): zeroes the gradient table, then
 * differentiates the LM head, every block in reverse and the embeddings. `toLayer` k > 0 (only for a
 * graph without base gradients) stops after block k: no input gradient reaches the blocks below, whose
 * adapter gradients stay zero.
 */
export async function recordBackward(
  rec: Recorder,
  g: Graph,
  opts: { toLayer?: number } = {},
): Promise<void> {
  if (!g.scratch) throw new Error("recordBackward: the graph was built without training buffers");
  const to = layerBound(opts.toLayer ?? 0, g.weights.dims.L, "toLayer");
  if (to > 0 && g.grads) {
    throw new RangeError(`recordBackward: toLayer ${to} would leave the base gradients below it unwritten`);
  }
  const { B, T } = g.options;
  const w = g.weights;
  const s = g.scratch;
  const gpt2 = w.config.family === "gpt2";
  if (g.grads) await fill(rec, g.grads, 0);
  if (g.adapterGrads) await fill(rec, g.adapterGrads, 0);
  const head = w.dims.tied ? "wte" : "lmHead.w";
  // g.logits holds dlogits (N, V) here.
  const dHead = dp(g, head);
  if (dHead) await matmul(rec, dHead, g.logits, g.lnf, { transA: true, accumulate: true });
  await matmul(rec, s.dln, g.logits, p(g, head));
  if (g.hooks.linearBackward) await g.hooks.linearBackward(rec, headSite(w.dims), s.dln, g.logits, g.lnf);
  if (g.hooks.finalNormBackward) await g.hooks.finalNormBackward(rec, s.dln);
  await normBackward(rec, g, s.dres, s.dln, g.residual[w.dims.L], g.lnfMean, g.lnfRstd, "lnf", false);
  for (let l = w.dims.L - 1; l >= to; l--) {
    if (g.options.recompute) await blockForward(rec, g, l);
    await blockBackward(rec, g, l);
  }
  if (g.grads) {
    // Embedding gradients go into the table whenever it exists; frozen ranges are zeroed below.
    await encoderBackward(
      rec,
      viewOf(g.grads, w.table, "wte"),
      gpt2 ? viewOf(g.grads, w.table, "wpe") : null,
      s.dres,
      g.inputs.bucketIds,
      g.inputs.bucketStart,
      g.inputs.bucketPositions,
      B,
      T,
    );
    for (const r of g.frozenRanges) {
      await fill(rec, { ...g.grads, offset: g.grads.offset + r.offset * 4, shape: [r.count] }, 0);
    }
  }
}

function layerBound(k: number, L: number, what: string): number {
  if (!Number.isInteger(k) || k < 0 || k >= L) {
    throw new RangeError(`${what} ${k} must be an integer block index in [0, ${L})`);
  }
  return k;
}

/** Frees every buffer the graph allocated (the weights are not the graph's). */
export function destroyGraph(g: Graph): void {
  const seen = new Set<GPUBuffer>();
  const all: Tensor[] = [
    ...Object.values(g.inputs).filter((t): t is Tensor => t !== null),
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
    ...(g.adapterGrads ? [g.adapterGrads] : []),
    ...(g.scratch ? Object.values(g.scratch).filter((t): t is Tensor => !!t) : []),
    ...(g.preRope ? [g.preRope.q, g.preRope.k] : []),
    ...(g.rope
      ? Object.values(g.rope).filter((t): t is Tensor => typeof t === "object" && "buffer" in t)
      : []),
  ];
  g.hooks.destroy?.();
  for (const t of all) {
    if (!seen.has(t.buffer)) {
      seen.add(t.buffer);
      t.buffer.destroy();
    }
  }
}
