/**
 * FocuSFT (Pei et al., arXiv 2605.09932; code JarvisPei/FocuSFT; methods spec §5): bilevel SFT with
 * transient fast weights. Each step resets LoRA "fast weights" φ (rank r_f = 32, α_f = 64, s = 2) on
 * the FFN projections of the top 35% of layers — layers ⌊L·(1 − 0.35)⌋ … L − 1; Llama gate, up and
 * down, GPT-2 fc and fcProj (c_fc, c_proj of the MLP) — with a fresh kaiming-uniform A and B = 0,
 * adapts them by 2 plain SGD steps (lr 1, each tensor's gradient clipped to norm 1 on its own) on the
 * token-mean cross-entropy of the response tokens, then takes a first-order outer step: the gradient
 * of the same loss with respect to the base weights with φ* held fixed, AdamW on every base parameter
 * (full fine-tuning). Inner and outer passes use the "glm_bidir" turn mask (spec §5.4): context turns
 * bidirectional, response turns causal, earlier turns visible. The fast weights are dropped after
 * training: evaluation runs the base (trained) with a causal mask.
 *
 * `outer: "lora"` is our variant for equal-budget comparisons: the outer step trains an ordinary LoRA
 * (lora.ts) instead of the base, which stays frozen; evaluation runs base + that LoRA.
 *
 * Training needs the bilevel loop: `prepare` returns `details.trainer = "focusft"` and the harness
 * trains with `createFocusftTrainer(gpu, prepared, options)` (same step(batch)/losses() as Trainer)
 * instead of a plain Trainer; `prepared.adapter`, `trainable` and the masks describe evaluation and the
 * outer-trainable parameters.
 */
import { z } from "zod";
import type { Gpu } from "../gpu/device.ts";
import { tensorFrom } from "../gpu/tensor.ts";
import { type Adapter, ALL_BASE, NO_BASE } from "../model/adapter.ts";
import { dims, type ModelConfig } from "../model/config.ts";
import { buildTable, parameterCount, type ParamSpec, paramTable } from "../model/params.ts";
import { type FocusftSetup, FocusftTrainer, type FocusftTrainerOptions } from "../train/focusft_trainer.ts";
import {
  initLoraA,
  LORA_TARGETS,
  loraConfigSchema,
  loraHooks,
  loraMatrices,
  type LoraMatrix,
  loraParameterCount,
  loraScale,
  loraSpecs,
} from "./lora.ts";
import { chainHooks } from "./compose.ts";
import type { Method, PreparedMethod } from "./method.ts";

/** FocuSFT's configuration (the authors' defaults, configs/focusft_qwen25_7b.yaml and MemoryConfig). */
export const focusftConfigSchema = z.object({
  /** Fast-weight rank r_f and alpha α_f (scale α_f/r_f). */
  rank: z.number().int().positive().default(32),
  alpha: z.number().positive().default(64),
  /** Fraction of the top layers with fast weights: layers ⌊L·(1 − fraction)⌋ … L − 1. */
  layerFraction: z.number().gt(0).max(1).default(0.35),
  /** Fast-weight targets; default the family's FFN projections (Llama gate/up/down, GPT-2 fc/fcProj). */
  targets: z.array(z.enum(LORA_TARGETS)).nonempty().optional(),
  innerSteps: z.number().int().min(0).default(2),
  innerLr: z.number().nonnegative().default(1),
  /** Per-tensor gradient-norm bound of the inner steps; 0 disables clipping. */
  innerClip: z.number().min(0).default(1),
  /** Attention mask of training ("turns" = glm_bidir, or "causal"); evaluation is always causal. */
  mask: z.enum(["turns", "causal"]).default("turns"),
  /** What the outer step trains: every base parameter (the paper), or an ordinary LoRA (our variant). */
  outer: z.enum(["full", "lora"]).default("full"),
  /** The outer LoRA's configuration (with `outer: "lora"`). */
  outerLora: loraConfigSchema.prefault({}),
}).strict();
export type FocusftConfig = z.infer<typeof focusftConfigSchema>;

/** The layers with fast weights: ⌊L·(1 − fraction)⌋ … L − 1, as FocuSFT's int(L·(1 − fraction)). */
export function fastLayers(L: number, fraction: number): number[] {
  const start = Math.max(0, Math.floor(L * (1 - Math.min(1, Math.max(0, fraction)))));
  if (start >= L) throw new RangeError(`focusft: layerFraction ${fraction} leaves no fast layer of ${L}`);
  return Array.from({ length: L - start }, (_, i) => start + i);
}

/** The fast-weight matrices of a model (names `h.N.<target>.fast.A/B`). */
export function fastMatrices(model: ModelConfig, config: FocusftConfig): LoraMatrix[] {
  const targets = config.targets ?? (model.family === "llama" ? ["gate", "up", "down"] : ["fc", "fcProj"]);
  return loraMatrices(model, {
    r: config.rank,
    alpha: config.alpha,
    rslora: false,
    targets: targets as FocusftConfig["outerLora"]["targets"],
    layers: fastLayers(dims(model).L, config.layerFraction),
    init: "kaiming",
  }, "fast");
}

/**
 * Transient fast-weight parameters: Σ r_f·(in + out) over the fast matrices, i.e.
 * 3·r_f·(d + d_ff) per fast layer for Llama and 2·r_f·(d + d_ff) (d_ff = 4d) for GPT-2. Not trained
 * by the outer optimizer, not saved.
 */
export function fastParameterCount(model: ModelConfig, config: FocusftConfig): number {
  return fastMatrices(model, config).reduce((n, m) => n + config.rank * (m.in + m.out), 0);
}

/** The outer step's trainable parameters: every base parameter, or the outer LoRA's. */
export function focusftParameterCount(model: ModelConfig, config: FocusftConfig): number {
  return config.outer === "full"
    ? parameterCount(paramTable(model))
    : loraParameterCount(model, config.outerLora);
}

/** What `prepare` returns for FocuSFT: the usual fields plus what the bilevel trainer needs. */
export interface FocusftPrepared extends PreparedMethod {
  focusft: FocusftSetup;
}

/** Whether a prepared method needs FocuSFT's trainer. */
export function isFocusftPrepared(p: PreparedMethod): p is FocusftPrepared {
  return (p as Partial<FocusftPrepared>).focusft !== undefined;
}

/**
 * The adapters of one FocuSFT preparation: one buffer holding the outer LoRA (first) and the fast
 * weights (every A, then every B); the training adapter hooks both, the evaluation adapter (a view
 * of the outer prefix) only the outer LoRA.
 */
export function createFocusftSetup(
  gpu: Gpu,
  model: ModelConfig,
  config: FocusftConfig,
  seed: number,
): { setup: FocusftSetup; evalAdapter: Adapter | null; fast: LoraMatrix[]; outer: LoraMatrix[] } {
  const fast = fastMatrices(model, config);
  const outer = config.outer === "lora" ? loraMatrices(model, config.outerLora) : [];
  const outerSpecs = loraSpecs(outer, config.outerLora.r);
  const outerTable = buildTable(outerSpecs);
  const fastSpecs = loraSpecs(fast, config.rank);
  const specs: ParamSpec[] = [
    ...outerSpecs,
    ...fastSpecs.filter((s) => s.name.endsWith(".A")),
    ...fastSpecs.filter((s) => s.name.endsWith(".B")),
  ];
  const table = buildTable(specs);
  const values = new Float32Array(table.size);
  initLoraA(values, table, outer, config.outerLora.r, config.outerLora.init, seed);
  const params = tensorFrom(gpu, [table.size], values, { label: "focusft.params" });
  const outerScale = loraScale(config.outerLora);
  const fastScale = config.alpha / config.rank;
  const adapter: Adapter = {
    name: "focusft",
    table,
    params,
    attach: (ctx) => {
      const fastHooks = loraHooks(gpu, ctx, params, table, fast, config.rank, fastScale);
      if (!outer.length) return fastHooks;
      const outerHooks = loraHooks(gpu, ctx, params, table, outer, config.outerLora.r, outerScale);
      return chainHooks("focusft", [outerHooks, fastHooks], ["outer lora", "fast weights"]);
    },
  };
  const outerParams = { ...params, shape: [outerTable.size], label: "focusft.outerLora" };
  const evalAdapter: Adapter | null = outer.length
    ? {
      name: "focusft-lora",
      table: outerTable,
      params: outerParams,
      attach: (ctx) => loraHooks(gpu, ctx, outerParams, outerTable, outer, config.outerLora.r, outerScale),
    }
    : null;
  const setup: FocusftSetup = {
    adapter,
    fastA: fast.map((m) => ({ entry: table.byName.get(m.a)!, bound: 1 / Math.sqrt(m.in) })),
    fastB: fast.map((m) => table.byName.get(m.b)!),
    outerEntries: outer.flatMap((m) => [table.byName.get(m.a)!, table.byName.get(m.b)!]),
    outerSize: outer.length ? outerTable.size : 0,
    trainable: config.outer === "full" ? ALL_BASE : NO_BASE,
    mask: config.mask,
    innerSteps: config.innerSteps,
    innerLr: config.innerLr,
    innerClip: config.innerClip,
    seed,
  };
  return { setup, evalAdapter, fast, outer };
}

/**
 * The bilevel trainer for a FocuSFT preparation (the harness calls this where
 * `prepared.details.trainer === "focusft"`).
 * @example const trainer = await createFocusftTrainer(gpu, prepared, { B: 1, T: 512, optimizer: { lr: 1e-5 } });
 */
export async function createFocusftTrainer(
  gpu: Gpu,
  prepared: PreparedMethod,
  options: FocusftTrainerOptions,
): Promise<FocusftTrainer> {
  if (!isFocusftPrepared(prepared)) {
    throw new TypeError("createFocusftTrainer: the prepared method is not FocuSFT's (no `focusft` setup)");
  }
  return await FocusftTrainer.create(gpu, prepared.weights, prepared.focusft, options);
}

/** FocuSFT: bilevel SFT with per-step fast weights, full fine-tuning outside (or an outer LoRA). */
export const focusft: Method<typeof focusftConfigSchema> = {
  name: "focusft",
  title: "FocuSFT: per-step fast LoRA on the top FFNs (2 SGD steps), first-order outer step, glm_bidir mask",
  caveat: "Trained with the glm_bidir turn mask but evaluated causally, as the authors release it (spec " +
    "§5.4 [FLAG]: train/inference mismatch). Fast weights are reset from Philox (seed, step) rather than " +
    "torch's RNG; outer: \"lora\" is our equal-budget variant, not the paper's.",
  config: focusftConfigSchema,
  parameterCount: focusftParameterCount,
  prepare(ctx, config) {
    const model = ctx.base.config;
    const { setup, evalAdapter, fast } = createFocusftSetup(ctx.gpu, model, config, ctx.seed);
    const layers = fastLayers(dims(model).L, config.layerFraction);
    const prepared: FocusftPrepared = {
      weights: ctx.base,
      adapter: evalAdapter,
      trainable: setup.trainable,
      trainMask: config.mask === "turns" ? { mode: "turns" } : { mode: "causal" },
      evalMask: { mode: "causal" },
      trainableParameters: focusftParameterCount(model, config),
      details: {
        trainer: "focusft",
        outer: config.outer,
        fastParameters: fastParameterCount(model, config),
        fastLayers: layers,
        fastTargets: [...new Set(fast.map((m) => m.target))],
        fastRank: config.rank,
        fastScale: config.alpha / config.rank,
        innerSteps: config.innerSteps,
        innerLr: config.innerLr,
        innerClip: config.innerClip,
        mask: config.mask === "turns" ? "glm_bidir (turns)" : "causal",
        evalMask: "causal",
        firstOrder: true,
        innerBelowFastLayers: "computed once per step and reused (the spec's no_grad trick)",
      },
      destroy: () => setup.adapter.params?.buffer.destroy(),
      focusft: setup,
    };
    return Promise.resolve(prepared);
  },
};
