/**
 * LongLoRA (Chen et al. 2023, ICLR 2024; methods spec §2) as dvlab-research/LongLoRA trains it:
 *
 * - S²-Attn in training only: the group size is G = N/4 for the training length N; heads h < H/2
 *   attend causally inside [0, G), [G, 2G), …, the other half inside [0, G/2), [G/2, 3G/2), …,
 *   [N − G/2, N). This is the flash path's no-leak variant (half-groups at both ends, no wrap-around);
 *   the attention kernels implement it as the `shifted-groups` mask. Evaluation uses full causal
 *   attention. RoPE keeps global positions (the mask changes, the positions do not).
 * - "LoRA+": LoRA r = 8, α = 16 (s = α/r = 2) on q, k, v, o, plus the input embedding and every norm
 *   weight (and, for LayerNorm models, every norm bias) as trainable base tensors. The LM head stays
 *   frozen — except that GPT-2's head is tied to wte, so there training the embedding trains the head.
 * - Position interpolation when the longest length exceeds the model's context: Llama gets
 *   rope = linear with factor ⌈maxLength / maxPositions⌉ before its graph is built; GPT-2 (learned
 *   positions) gets its wpe extended (rows copied, new rows N(0, 0.02²)) and trains the new rows.
 *
 * Trainable parameters: r·L·Σ_{q,k,v,o}(d_in + d_out) + V·d + (2L+1)·d (RMSNorm; 2·(2L+1)·d with
 * LayerNorm's gains and biases) + d per new position row.
 */
import { z } from "zod";
import { type BaseTrainable, trainableRange } from "../model/adapter.ts";
import { dims, type ModelConfig } from "../model/config.ts";
import { parameterCount, type ParamTable } from "../model/params.ts";
import { createWeights, type ModelWeights } from "../model/weights.ts";
import { extendPositions, extensionRows, scaleRope } from "./extend.ts";
import {
  createLoraAdapter,
  LORA_TARGETS,
  type LoraConfig,
  loraMatrices,
  loraParameterCount,
  loraScale,
} from "./lora.ts";
import type { Method, MethodLengths, PrepareContext, PreparedMethod } from "./method.ts";

/** LongLoRA's configuration (the paper's defaults). */
export const longloraConfigSchema = z.object({
  r: z.number().int().positive().default(8),
  alpha: z.number().positive().default(16),
  targets: z.array(z.enum(LORA_TARGETS)).nonempty().default(["q", "k", "v", "o"]),
  /** Layers to adapt (default every layer). */
  layers: z.array(z.number().int().min(0)).optional(),
  /** A's initialisation (PEFT's kaiming-uniform). */
  init: z.enum(["kaiming", "gaussian", "orthogonal"]).default("kaiming"),
  /** Train the input embedding (wte; for GPT-2 that is also the tied LM head). */
  trainEmbeddings: z.boolean().default(true),
  /** Train every norm gain (and LayerNorm bias). */
  trainNorms: z.boolean().default(true),
  /** Train with S²-Attn (G = N/4); off gives plain causal training (an ablation). */
  shiftedSparseAttention: z.boolean().default(true),
}).strict();
export type LongloraConfig = z.infer<typeof longloraConfigSchema>;

/**
 * S²-Attn's training mask for training length N: shifted groups of G = N/4 (LongLoRA's
 * group_size_ratio). Throws when N is not a multiple of 4 or G is odd (the shifted half-groups need
 * G/2 whole tokens).
 */
export function shiftedGroupsMask(trainLength: number, field = "trainLength"): {
  mode: "shifted-groups";
  groupSize: number;
} {
  if (!Number.isInteger(trainLength) || trainLength < 4 || trainLength % 4 !== 0) {
    throw new RangeError(
      `S²-Attn: ${field} ${trainLength} must be a positive multiple of 4 (G = N/4 groups must tile N)`,
    );
  }
  const groupSize = trainLength / 4;
  if (groupSize % 2 !== 0) {
    throw new RangeError(
      `S²-Attn: ${field} ${trainLength} gives group size G = N/4 = ${groupSize}, which must be even ` +
        `(the shifted heads start half a group, G/2, later); use a multiple of 8`,
    );
  }
  return { mode: "shifted-groups", groupSize };
}

/** Elements of the norm tensors: (2L+1)·d gains, doubled for LayerNorm's biases. */
export function normParameterCount(model: ModelConfig): number {
  const { C, L } = dims(model);
  return (model.family === "gpt2" ? 2 : 1) * (2 * L + 1) * C;
}

/** The RoPE position-interpolation factor ⌈maxLength / maxPositions⌉, or null when the context fits. */
export function interpolationFactor(model: ModelConfig, maxLength: number): number | null {
  if (model.family !== "llama" || maxLength <= model.maxPositions) return null;
  return Math.ceil(maxLength / model.maxPositions);
}

/** The formula of §10 for LongLoRA (plus the new position rows of an extended GPT-2). */
export function longloraParameterCount(
  model: ModelConfig,
  config: LongloraConfig,
  lengths?: MethodLengths,
): number {
  const { V, C } = dims(model);
  const lora = loraParameterCount(model, longloraLora(config));
  const embed = config.trainEmbeddings ? V * C : 0;
  const norms = config.trainNorms ? normParameterCount(model) : 0;
  return lora + embed + norms + extensionRows(model, lengths?.maxLength ?? 0) * C;
}

/** Elements of `table` that `trainable` selects (what AdamW will update). */
export function baseTrainableCount(table: ParamTable, trainable: BaseTrainable): number {
  return table.entries.reduce((n, e) => n + (trainableRange(trainable, e)?.count ?? 0), 0);
}

/** The LoRA part of a LongLoRA config (s = α/r). */
export function longloraLora(config: LongloraConfig): LoraConfig {
  const { r, alpha, targets, layers, init } = config;
  return { r, alpha, rslora: false, targets, layers, init };
}

function prepareLonglora(ctx: PrepareContext, config: LongloraConfig): PreparedMethod {
  const trainMask = config.shiftedSparseAttention ? shiftedGroupsMask(ctx.trainLength) : undefined;
  const base = ctx.base.config;
  loraMatrices(base, longloraLora(config), "longlora"); // refuses bad targets before anything is allocated
  const factor = interpolationFactor(base, ctx.maxLength);
  // Base tensors train, so the method always works on its own copy of the weights.
  let weights: ModelWeights;
  let newRows: { from: number; count: number } | null = null;
  if (base.family === "gpt2" && extensionRows(base, ctx.maxLength) > 0) {
    const extended = extendPositions(ctx.gpu, base, ctx.baseValues, ctx.maxLength, ctx.seed);
    weights = extended.weights;
    newRows = extended.newRows;
  } else if (factor !== null) {
    weights = scaleRope(ctx.gpu, base, ctx.baseValues, { type: "linear", factor });
  } else {
    weights = createWeights(ctx.gpu, base, ctx.baseValues);
  }
  const adapter = createLoraAdapter(ctx.gpu, weights.config, longloraLora(config), ctx.seed, "longlora");
  const trainable: BaseTrainable = (e) => {
    if (e.name === "wte") return config.trainEmbeddings;
    if (e.role === "norm") return config.trainNorms;
    if (e.name === "wpe" && newRows) return newRows;
    return false;
  };
  return {
    weights,
    adapter,
    trainable,
    trainMask,
    evalMask: { mode: "causal" },
    trainableParameters: parameterCount(adapter.table) + baseTrainableCount(weights.table, trainable),
    details: {
      scale: loraScale(longloraLora(config)),
      matrices: adapter.matrices.length,
      groupSize: trainMask?.groupSize ?? null,
      ropeScaling: factor === null ? null : { type: "linear", factor },
      newPositionRows: newRows ? newRows.count / dims(base).C : 0,
      lmHeadTrains: config.trainEmbeddings && dims(base).tied,
    },
    destroy: () => {
      adapter.params?.buffer.destroy();
      weights.params.buffer.destroy();
    },
  };
}

/** LongLoRA: S²-Attn in training, LoRA on q, k, v, o plus trainable embedding and norms, PI. */
export const longlora: Method<typeof longloraConfigSchema> = {
  name: "longlora",
  title: "LongLoRA: S²-Attn training (G = N/4), LoRA r=8 α=16 on q,k,v,o + embedding + norms, PI",
  caveat: "S²-Attn is the flash path's no-leak variant (no wrap-around), G = N/4 (N a multiple of 8). " +
    "GPT-2's LM head is tied to wte, so training the embedding also trains the head (LongLoRA keeps the " +
    "head frozen on Llama). GPT-2 has no RoPE: beyond its context the wpe table is extended (new rows " +
    "N(0, 0.02²)) and the new rows train.",
  config: longloraConfigSchema,
  parameterCount: longloraParameterCount,
  // Errors reject the promise rather than throw.
  prepare: (ctx, config) => Promise.resolve().then(() => prepareLonglora(ctx, config)),
};
