/**
 * HyLoRADA (SadiaTabassum1216/hylorada, Feb 2026; methods spec §3) as its paper (PAPER.md,
 * METHODOLOGY.md) states it. The spec flags that the paper and the code disagree on nearly every
 * HyLoRADA-specific formula; each choice below says which one it follows and why.
 *
 * (a) rsLoRA, orthogonal A, B = 0, s = α/√r with α = 2r, on the paths the code's substring match hits:
 *     GPT-2 c_attn (fused qkv), attn.c_proj (attnOut) and mlp.c_proj (fcProj) — 811,008 parameters for
 *     GPT-2 small at r = 8, the paper's "811K"; Llama q, k, v, o. Dropout is 0 (the code's 0.05 is a
 *     regulariser the harness never uses).
 * (b) Position bias (paper): the rsLoRA delta of row n is multiplied by
 *     s(p) = 1 + σ(w)·tanh(b[min(⌊log2(p+1)⌋, 63)]) at the row's absolute position p, with b ∈ R^64 shared
 *     and zero-initialised, so s ≡ 1 at init. w is one global scalar by default (the paper's "65
 *     params"), or one per adapted module (`positionScale: "per-module"`, the code), initialised 0
 *     (σ = 0.5). Unlike the code, whose position bias never ran (positions were never passed, so b and w
 *     got no gradient), here it receives every row's position and trains. Log2 buckets as the paper says
 *     (the code used T5-style buckets); only ⌊log2(p+1)⌋ ≤ 31 is reachable, about 16 buckets below 64K.
 *     Scaling the delta rows equals scaling the rank-r rows of A·x, which is what the kernel does.
 * (c) Landmarks (paper): g = softmax(W_g·mean_t(h)), c = gᵀL, h' = h + α_s·c on the final norm's output,
 *     the mean taken per sequence over its T tokens. K = 8, L ~ N(0, 0.02²), W_g ~ U(±1/√d) (the code's
 *     bias-free Linear default), α_s learnable, init 0.1: 2Kd + 1 parameters. c ≠ 0 at init, so the model
 *     is perturbed from the first step (as in the paper and the code). The mean includes tokens after t,
 *     so this mix is not causal: every position sees a K-way summary of its whole sequence, future
 *     included, and decoding recomputes the prefix (the adapter is not incremental). The code instead
 *     gates per token, g_t = softmax(P[bucket(t)] + W_g·h_t), with 32 position gates.
 * (d) S²-Attn in training when the maximum length is ≥ 4096: LongLoRA's no-leak shifted groups with
 *     G = N/4 (the code's own wrapper used G = 2048, shifted all heads on alternate layers, and was never
 *     applied to GPT-2).
 * (e) RoPE scaling on Llama models, factor = maxLength / maxPositions, set before the graph is built
 *     (the code wrote it after the model was built, where it had no effect): linear up to 8K, YaRN above
 *     (the paper's deployment guidance), or as configured.
 * (f) GPT-2 beyond its context: wpe extended (rows copied, new rows N(0, 0.02²)) and the new rows train;
 *     with `trainEmbeddings` the whole position table trains (the paper counts n_pos·d). The code
 *     unfroze every nn.Embedding, wte included (V·d more, and on GPT-2 the tied LM head):
 *     `embeddingScope: "all"` reproduces that.
 * (g) The context-adaptive defaults of the paper (spec §3.6): position bias and landmarks from 2048,
 *     S²-Attn and norms from 4096, embeddings beyond 1024; each component can be switched alone.
 */
import { z } from "zod";
import type { Gpu } from "../gpu/device.ts";
import { createTensor, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import type { Adapter, AdapterHooks, AttachContext, BaseTrainable } from "../model/adapter.ts";
import { dims, type ModelConfig } from "../model/config.ts";
import { buildTable, parameterCount, type ParamSpec, type ParamTable } from "../model/params.ts";
import type { RopeScalingInput } from "../model/rope_scaling.ts";
import { createWeights, type ModelWeights, view } from "../model/weights.ts";
import { addColumns, getColumns } from "../ops/columns.ts";
import {
  addSequenceRows,
  landmarkGate,
  landmarkGateBackward,
  POSITION_BUCKETS,
  positionGradScratch,
  positionScale,
  positionScaleBackward,
  sequenceSum,
  sequenceSumScratch,
} from "../ops/hylorada.ts";
import { matmul } from "../ops/matmul.ts";
import { fillNormal, fillUniform } from "../random/philox.ts";
import { extendPositions, extensionRows, scaleRope } from "./extend.ts";
import { baseTrainableCount, normParameterCount, shiftedGroupsMask } from "./longlora.ts";
import {
  columnBlockWidth,
  initLoraA,
  LORA_TARGETS,
  type LoraConfig,
  loraHooks,
  loraMatrices,
  type LoraMatrix,
  loraScale,
  loraSpecs,
  matricesBySite,
} from "./lora.ts";
import type { Method, MethodLengths, PrepareContext, PreparedMethod } from "./method.ts";

/** HyLoRADA's configuration; unset switches follow the paper's context-adaptive table (spec §3.6). */
export const hyloradaConfigSchema = z.object({
  r: z.number().int().positive().default(8),
  /** LoRA α (default 2r, so s = α/√r = 2√r). */
  alpha: z.number().positive().optional(),
  /** Adapted paths (default GPT-2 qkv, o, fcProj; Llama q, k, v, o). */
  targets: z.array(z.enum(LORA_TARGETS)).nonempty().optional(),
  layers: z.array(z.number().int().min(0)).optional(),
  /** The position bias (default: maxLength ≥ 2048). */
  positionBias: z.boolean().optional(),
  /** One w for every module (paper, default) or one per adapted module (code). */
  positionScale: z.enum(["global", "per-module"]).default("global"),
  /** The landmark mix after the final norm (default: maxLength ≥ 2048). */
  landmarks: z.boolean().optional(),
  numLandmarks: z.number().int().positive().default(8),
  /** Initial α_s of the landmark mix. */
  landmarkScale: z.number().default(0.1),
  /** S²-Attn in training (default: maxLength ≥ 4096). */
  s2Attn: z.boolean().optional(),
  /** RoPE scaling of Llama models; auto: linear beyond the context, YaRN beyond 8192 tokens. */
  ropeScaling: z.enum(["auto", "none", "linear", "yarn"]).default("auto"),
  /** Train the embeddings (default: maxLength > 1024); `embeddingScope` says which. */
  trainEmbeddings: z.boolean().optional(),
  /** positions: GPT-2's whole wpe (paper); all: wte too (code; on GPT-2 also the tied LM head). */
  embeddingScope: z.enum(["positions", "all"]).default("positions"),
  /** Train every norm gain and bias (default: maxLength ≥ 4096). */
  trainNorms: z.boolean().optional(),
}).strict();
export type HyloradaConfig = z.infer<typeof hyloradaConfigSchema>;

/** What a config resolves to for one model and one run length. */
export interface HyloradaPlan {
  /** The rsLoRA part (orthogonal A). */
  lora: LoraConfig;
  positionBias: boolean;
  /** Number of w scalars: 1 (global) or one per adapted matrix. */
  positionScales: number;
  landmarks: boolean;
  K: number;
  s2Attn: boolean;
  rope: RopeScalingInput | null;
  /** Rows added to GPT-2's wpe. */
  newPositionRows: number;
  /** GPT-2: the whole wpe trains (else only the new rows). */
  trainPositions: boolean;
  /** wte trains. */
  trainTokenEmbedding: boolean;
  trainNorms: boolean;
}

/** Resolves the switches for a model and the run's lengths (default: the model's own context). */
export function hyloradaPlan(
  model: ModelConfig,
  config: HyloradaConfig,
  lengths?: MethodLengths,
): HyloradaPlan {
  const maxLength = lengths?.maxLength ?? model.maxPositions;
  const targets = config.targets ??
    (model.family === "gpt2" ? ["qkv", "o", "fcProj"] as const : ["q", "k", "v", "o"] as const);
  const lora: LoraConfig = {
    r: config.r,
    alpha: config.alpha ?? 2 * config.r,
    rslora: true,
    targets: [...targets] as LoraConfig["targets"],
    layers: config.layers,
    init: "orthogonal",
  };
  const matrices = loraMatrices(model, lora, "hylorada");
  const positionBias = config.positionBias ?? maxLength >= 2048;
  const landmarks = config.landmarks ?? maxLength >= 2048;
  const trainEmbeddings = config.trainEmbeddings ?? maxLength > 1024;
  let rope: RopeScalingInput | null = null;
  if (model.family === "gpt2") {
    if (config.ropeScaling === "linear" || config.ropeScaling === "yarn") {
      throw new RangeError(
        `hylorada: ropeScaling "${config.ropeScaling}" needs RoPE; GPT-2 has learned positions`,
      );
    }
  } else {
    const beyond = maxLength > model.maxPositions;
    const type = config.ropeScaling === "auto"
      ? (beyond ? (maxLength > 8192 ? "yarn" : "linear") : "none")
      : config.ropeScaling;
    if (type !== "none") {
      rope = {
        type,
        factor: Math.max(1, maxLength / model.maxPositions),
        originalMaxPositions: model.maxPositions,
      };
    }
  }
  return {
    lora,
    positionBias,
    positionScales: config.positionScale === "global" ? 1 : matrices.length,
    landmarks,
    K: config.numLandmarks,
    s2Attn: config.s2Attn ?? maxLength >= 4096,
    rope,
    newPositionRows: extensionRows(model, maxLength),
    trainPositions: model.family === "gpt2" && trainEmbeddings,
    trainTokenEmbedding: trainEmbeddings && config.embeddingScope === "all",
    trainNorms: config.trainNorms ?? maxLength >= 4096,
  };
}

/**
 * The parameter count from the components: Σ r·(d_in + d_out) + [64 + (1 or one per module)]
 * + [2Kd + 1] + GPT-2 position rows (new ones, or the whole extended table) + [V·d] + [norms].
 */
export function hyloradaParameterCount(
  model: ModelConfig,
  config: HyloradaConfig,
  lengths?: MethodLengths,
): number {
  const plan = hyloradaPlan(model, config, lengths);
  const { V, C } = dims(model);
  const lora = loraMatrices(model, plan.lora, "hylorada").reduce(
    (n, m) => n + plan.lora.r * (m.in + m.out),
    0,
  );
  const bias = plan.positionBias ? POSITION_BUCKETS + plan.positionScales : 0;
  const marks = plan.landmarks ? 2 * plan.K * C + 1 : 0;
  const rows = plan.trainPositions ? model.maxPositions + plan.newPositionRows : plan.newPositionRows;
  const wte = plan.trainTokenEmbedding ? V * C : 0;
  const norms = plan.trainNorms ? normParameterCount(model) : 0;
  return lora + bias + marks + rows * C + wte + norms;
}

/** Philox streams of the landmark tensors (LoRA's A use the matrix index as their stream). */
const LANDMARK_STREAM = 0x6c6d6b;
const GATE_STREAM = 0x6c6d67;

/** Table names of the method's own tensors. */
export const HYLORADA_NAMES = {
  b: "posbias.b",
  w: "posbias.w",
  landmarks: "landmarks.L",
  gate: "landmarks.Wg",
  alpha: "landmarks.alpha",
} as const;

/** A HyLoRADA adapter for a model, with its plan, matrices and initial values. */
export interface HyloradaAdapter extends Adapter {
  plan: HyloradaPlan;
  matrices: LoraMatrix[];
  values: Float32Array;
}

/** The adapter's table: A, B of every matrix, then [b; w], then L, W_g, α_s. */
export function hyloradaTable(
  model: ModelConfig,
  plan: HyloradaPlan,
): { table: ParamTable; matrices: LoraMatrix[] } {
  const matrices = loraMatrices(model, plan.lora, "hylorada");
  const C = dims(model).C;
  const specs: ParamSpec[] = loraSpecs(matrices, plan.lora.r);
  if (plan.positionBias) {
    // b then w, consecutive (b fills exactly 64 aligned elements), so one binding covers both.
    specs.push({ name: HYLORADA_NAMES.b, shape: [POSITION_BUCKETS], role: "bias", layer: -1 });
    specs.push({ name: HYLORADA_NAMES.w, shape: [plan.positionScales], role: "bias", layer: -1 });
  }
  if (plan.landmarks) {
    specs.push({ name: HYLORADA_NAMES.landmarks, shape: [plan.K, C], role: "weight", layer: -1 });
    specs.push({ name: HYLORADA_NAMES.gate, shape: [plan.K, C], role: "weight", layer: -1 });
    specs.push({ name: HYLORADA_NAMES.alpha, shape: [1], role: "bias", layer: -1 });
  }
  return { table: buildTable(specs), matrices };
}

/**
 * A HyLoRADA adapter on the device: orthogonal A, B = 0, b = 0, w = 0, L ~ N(0, 0.02²),
 * W_g ~ U(±1/√d), α_s = config's landmarkScale; every draw from Philox (seed, stream).
 */
export function createHyloradaAdapter(
  gpu: Gpu,
  model: ModelConfig,
  config: HyloradaConfig,
  plan: HyloradaPlan,
  seed: number,
): HyloradaAdapter {
  const { table, matrices } = hyloradaTable(model, plan);
  const values = new Float32Array(table.size);
  initLoraA(values, table, matrices, plan.lora.r, "orthogonal", seed);
  const C = dims(model).C;
  const slice = (name: string) => {
    const e = table.byName.get(name)!;
    return values.subarray(e.offset, e.offset + e.numel);
  };
  if (plan.landmarks) {
    fillNormal(slice(HYLORADA_NAMES.landmarks), seed, LANDMARK_STREAM, 0, 0.02);
    fillUniform(slice(HYLORADA_NAMES.gate), seed, GATE_STREAM, -1 / Math.sqrt(C), 1 / Math.sqrt(C));
    slice(HYLORADA_NAMES.alpha)[0] = config.landmarkScale;
  }
  const params = tensorFrom(gpu, [table.size], values, { label: "hylorada.params" });
  const scale = loraScale(plan.lora);
  return {
    name: "hylorada",
    table,
    params,
    plan,
    matrices,
    values,
    incremental: !plan.landmarks,
    attach: (ctx) => {
      const lora = plan.positionBias
        ? positionLoraHooks(gpu, ctx, params, table, matrices, plan, scale)
        : loraHooks(gpu, ctx, params, table, matrices, plan.lora.r, scale);
      const marks = plan.landmarks ? landmarkHooks(gpu, ctx, params, table, plan.K) : {};
      return {
        linearForward: lora.linearForward,
        linearBackward: lora.linearBackward,
        finalNorm: marks.finalNorm,
        finalNormBackward: marks.finalNormBackward,
        destroy() {
          lora.destroy?.();
          marks.destroy?.();
        },
      };
    },
  };
}

// [b; w] of the table as one (64 + W,) view of `flat` (params or grads).
function biasSlice(flat: Tensor, table: ParamTable, W: number): Tensor {
  const b = table.byName.get(HYLORADA_NAMES.b)!;
  return { ...view(flat, b), shape: [POSITION_BUCKETS + W], label: "posbias.bw" };
}

/**
 * rsLoRA with the position bias: z = x·Aᵀ, u = s(p)·z (rows), y += s·u·Bᵀ. Backward (z and u are
 * recomputed): dB += s·dyᵀ·u, du = s·dy·B, (db, dw) from Σ_k du·z per row, dz = s(p)·du, dA += dzᵀ·x,
 * dx += dz·A.
 */
function positionLoraHooks(
  gpu: Gpu,
  ctx: AttachContext,
  params: Tensor,
  table: ParamTable,
  matrices: readonly LoraMatrix[],
  plan: HyloradaPlan,
  scale: number,
): AdapterHooks {
  const N = ctx.B * ctx.T;
  const r = plan.lora.r;
  const slots = new Map(matrices.map((m, i) => [m, plan.positionScales === 1 ? 0 : i]));
  const onSite = matricesBySite(matrices);
  const widest = columnBlockWidth(matrices, ctx.dims);
  const z = createTensor(gpu, [N, r], { label: "hylorada.z" });
  const u = createTensor(gpu, [N, r], { label: "hylorada.u" });
  const du = createTensor(gpu, [N, r], { label: "hylorada.du" });
  const delta = createTensor(gpu, [N * widest], { label: "hylorada.delta" });
  const dyBlock = createTensor(gpu, [N * widest], { label: "hylorada.dy" });
  const partial = positionGradScratch(gpu, N);
  const bw = biasSlice(params, table, plan.positionScales);
  const at = (flat: Tensor, name: string) => view(flat, table.byName.get(name)!);
  const rows = (t: Tensor, cols: number): Tensor => ({ ...t, shape: [N, cols] });
  const whole = (m: LoraMatrix, outDim: number) => m.offset === 0 && m.out === outDim;
  return {
    async linearForward(rec, site, y, x) {
      for (const m of onSite(site)) {
        await matmul(rec, z, x, at(params, m.a), { transB: true });
        await positionScale(rec, u, z, ctx.positions, bw, slots.get(m)!);
        if (whole(m, site.outDim)) {
          await matmul(rec, y, u, at(params, m.b), { transB: true, accumulate: true, alpha: scale });
        } else {
          const d = rows(delta, m.out);
          await matmul(rec, d, u, at(params, m.b), { transB: true });
          await addColumns(rec, y, d, m.offset, scale);
        }
      }
    },
    async linearBackward(rec, site, dx, dy, x) {
      const grads = ctx.grads!;
      const dbw = biasSlice(grads, table, plan.positionScales);
      for (const m of onSite(site)) {
        let dyM = dy;
        if (!whole(m, site.outDim)) {
          dyM = rows(dyBlock, m.out);
          await getColumns(rec, dyM, dy, m.offset);
        }
        const slot = slots.get(m)!;
        await matmul(rec, z, x, at(params, m.a), { transB: true });
        await positionScale(rec, u, z, ctx.positions, bw, slot);
        await matmul(rec, at(grads, m.b), dyM, u, { transA: true, accumulate: true, alpha: scale });
        await matmul(rec, du, dyM, at(params, m.b), { alpha: scale });
        await positionScaleBackward(rec, dbw, partial, du, z, ctx.positions, bw, slot);
        // z is free again: it takes dz = s(p)·du.
        await positionScale(rec, z, du, ctx.positions, bw, slot);
        await matmul(rec, at(grads, m.a), z, x, { transA: true, accumulate: true });
        if (dx) await matmul(rec, dx, z, at(params, m.a), { accumulate: true });
      }
    },
    destroy() {
      for (const t of [z, u, du, delta, dyBlock, partial]) t.buffer.destroy();
    },
  };
}

/**
 * The landmark mix on the final norm's output h (B, T, C): m_b = mean_t h, g_b = softmax(W_g·m_b),
 * h' = h + α_s·g_bᵀL. Backward from dh' (S_b = Σ_t dh'): dL += gᵀ·(α_s·S), the gate through
 * ls = S·Lᵀ (dz and dα_s), dW_g += dzᵀ·m, dh = dh' + (dz·W_g)/T on every row of the sequence.
 */
function landmarkHooks(
  gpu: Gpu,
  ctx: AttachContext,
  params: Tensor,
  table: ParamTable,
  K: number,
): AdapterHooks {
  const { B, T } = ctx;
  const C = ctx.dims.C;
  const make = (shape: number[], label: string) => createTensor(gpu, shape, { label: `landmarks.${label}` });
  const partial = sequenceSumScratch(gpu, B, T, C);
  const m = make([B, C], "mean");
  const logits = make([B, K], "logits");
  const g = make([B, K], "gate");
  const c = make([B, C], "mix");
  const S = make([B, C], "S");
  const dc = make([B, C], "dc");
  const ls = make([B, K], "ls");
  const dz = make([B, K], "dz");
  const dm = make([B, C], "dm");
  const at = (flat: Tensor, name: string) => view(flat, table.byName.get(name)!);
  const seq = (t: Tensor): Tensor => ({ ...t, shape: [B, T, C] });
  return {
    async finalNorm(rec, lnf) {
      await sequenceSum(rec, m, partial, seq(lnf), { scale: 1 / T });
      await matmul(rec, logits, m, at(params, HYLORADA_NAMES.gate), { transB: true });
      await landmarkGate(rec, g, logits);
      await matmul(rec, c, g, at(params, HYLORADA_NAMES.landmarks));
      await addSequenceRows(rec, seq(lnf), c, { alpha: at(params, HYLORADA_NAMES.alpha) });
    },
    async finalNormBackward(rec, dlnf) {
      const grads = ctx.grads!;
      const alpha = at(params, HYLORADA_NAMES.alpha);
      await sequenceSum(rec, S, partial, seq(dlnf));
      await sequenceSum(rec, dc, partial, seq(dlnf), { alpha });
      await matmul(rec, ls, S, at(params, HYLORADA_NAMES.landmarks), { transB: true });
      await landmarkGateBackward(rec, dz, at(grads, HYLORADA_NAMES.alpha), g, ls, alpha);
      await matmul(rec, at(grads, HYLORADA_NAMES.landmarks), g, dc, { transA: true, accumulate: true });
      await matmul(rec, at(grads, HYLORADA_NAMES.gate), dz, m, { transA: true, accumulate: true });
      await matmul(rec, dm, dz, at(params, HYLORADA_NAMES.gate));
      await addSequenceRows(rec, seq(dlnf), dm, { scale: 1 / T });
    },
    destroy() {
      for (const t of [partial, m, logits, g, c, S, dc, ls, dz, dm]) t.buffer.destroy();
    },
  };
}

function prepareHylorada(ctx: PrepareContext, config: HyloradaConfig): PreparedMethod {
  const base = ctx.base.config;
  const plan = hyloradaPlan(base, config, ctx);
  const trainMask = plan.s2Attn ? shiftedGroupsMask(ctx.trainLength) : undefined;
  let newRows: { from: number; count: number } | null = null;
  let weights: ModelWeights = ctx.base;
  if (base.family === "gpt2" && plan.newPositionRows > 0) {
    const extended = extendPositions(ctx.gpu, base, ctx.baseValues, ctx.maxLength, ctx.seed);
    weights = extended.weights;
    newRows = extended.newRows;
  } else if (plan.rope) {
    weights = scaleRope(ctx.gpu, base, ctx.baseValues, plan.rope);
  }
  const trainable: BaseTrainable = (e) => {
    if (e.name === "wte") return plan.trainTokenEmbedding;
    if (e.name === "wpe") return plan.trainPositions || (newRows ?? false);
    if (e.role === "norm") return plan.trainNorms;
    return false;
  };
  const ownCopy = weights !== ctx.base;
  const trainsBase = baseTrainableCount(weights.table, trainable) > 0;
  // Base tensors that train need the method's own copy (the caller's weights are never updated).
  if (trainsBase && !ownCopy) weights = createWeights(ctx.gpu, base, ctx.baseValues);
  const adapter = createHyloradaAdapter(ctx.gpu, weights.config, config, plan, ctx.seed);
  return {
    weights,
    adapter,
    trainable,
    trainMask,
    evalMask: { mode: "causal" },
    trainableParameters: parameterCount(adapter.table) + baseTrainableCount(weights.table, trainable),
    details: {
      scale: loraScale(plan.lora),
      matrices: adapter.matrices.length,
      targets: plan.lora.targets,
      positionBias: plan.positionBias,
      positionScales: plan.positionBias ? plan.positionScales : 0,
      landmarks: plan.landmarks ? plan.K : 0,
      s2AttnGroupSize: trainMask?.groupSize ?? null,
      ropeScaling: plan.rope,
      newPositionRows: plan.newPositionRows,
      trainPositions: plan.trainPositions,
      trainTokenEmbedding: plan.trainTokenEmbedding,
      trainNorms: plan.trainNorms,
    },
    destroy: () => {
      adapter.params?.buffer.destroy();
      if (weights !== ctx.base) weights.params.buffer.destroy();
    },
  };
}

/** HyLoRADA as its paper states it (position bias that really runs, mean-pooled landmarks). */
export const hylorada: Method<typeof hyloradaConfigSchema> = {
  name: "hylorada",
  title: "HyLoRADA: rsLoRA (orthogonal) + log2 position bias + K=8 landmarks, adaptive by length",
  caveat: "Reimplemented from the paper where paper and code disagree (spec §3): log2 position buckets " +
    "with one global w that really receive positions and gradients (inert in the code); landmarks gated " +
    "by the per-sequence mean of the final-norm output (the code gates per token with position gates) — " +
    "that mean includes later tokens, so the landmark mix is not causal; S²-Attn is LongLoRA's no-leak " +
    "variant with G = N/4 (code: G = 2048, alternate layers, never on GPT-2); RoPE scaling is applied " +
    "before the graph is built (a no-op in the code); trainEmbeddings trains GPT-2's whole wpe (the " +
    "paper's count), not wte (embeddingScope 'all' does, as the code did); dropout 0 (code 0.05).",
  config: hyloradaConfigSchema,
  parameterCount: hyloradaParameterCount,
  // Errors reject the promise rather than throw.
  prepare: (ctx, config) => Promise.resolve().then(() => prepareHylorada(ctx, config)),
};
