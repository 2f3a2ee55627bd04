/**
 * The budgeted hybrid (seed proposal "Adaptive Fine-Tuning for Efficient Long-Context Learning"; methods
 * spec §7.4, §8.2, §9 item 6, §10): one trainable-parameter budget P split by fractions (f_lora, f_sparse,
 * f_attn) among three components, with S²-Attn as the efficiency backbone.
 *
 * 1. Global: LoRA of rank r on the chosen linears (default q, k, v, o; lora.ts's pieces), s = α/r or α/√r.
 * 2. Local: the top k FFN neurons of every chosen layer, scored on calibration sequences, with
 *    zero-initialised deltas on their own rows and columns (sparse_ffn.ts).
 * 3. Noise filters: per head and layer a temperature τ_h (logit scale exp(τ_h)/√D, τ = 0 at init) and a
 *    sink logit σ_h (a key of value zero that can take attention mass away from every token). Additive
 *    per-head logit constants would do nothing under softmax (§9 item 6), so these are the two scalars
 *    (c = 2 per head).
 * 4. S²-Attn (LongLoRA's no-leak variant, §2.1): training at N ≥ `s2MinLength` tokens uses shifted groups
 *    of G = N/4; evaluation always uses full causal attention.
 *
 * The solver (hybrid_budget.ts) gives r = ⌊f_lora·P/Σ(d_in + d_out)⌋ and k = ⌊f_sparse·P/(n·|𝓛_s|)⌋, and
 * the trainable parameters are exactly r·Σ(d_in + d_out) + n·Σ_ℓ k_ℓ + 2·H·L (n = 3·C for Llama, 2·C + 1
 * for GPT-2), never more than P. Without an explicit `budget`, P is what LoRA of rank `budgetRank` on the
 * same targets costs, so the hybrid competes with that LoRA at equal size.
 *
 * The sink's initialisation: −∞ (no sink) is not representable, so σ starts at `sinkInit` (default −30).
 * The attention kernel starts each row's softmax sum at the sink's exp(σ − m) (m the first key block's
 * maximum score) and adds the keys' exp(s_j − m) to it; f32 rounding loses the sink's term unless the first
 * key the row sees scores below σ + 16.6 ≈ −13.4, so at −30 the logits equal the base's bit for bit in
 * practice (tests check it), and always once exp(σ − m) underflows (σ − m below about −104). A sink much
 * closer to 0 is not safe: a sharp head's row can have an lse far below 0 (a ×4-scaled random model shows
 * logit changes of 1.4 at σ = −12). The price:
 * dL/dσ = −Σ_rows p_sink·Δ_row with p_sink = exp(σ − lse), so at −30 σ's gradient is ~1e-16…1e-10, far
 * below AdamW's ε = 1e-8, and the sink only starts to learn where training drives some row's lse to within
 * ~15–20 of σ (as LoRA and τ sharpen attention). See `caveat`.
 */
import { z } from "zod";
import type { Gpu } from "../gpu/device.ts";
import { createTensor, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import { hashJson } from "../data/hash.ts";
import { type Adapter, type AdapterHooks, type AttachContext, NO_BASE } from "../model/adapter.ts";
import { dims, type ModelConfig } from "../model/config.ts";
import { buildTable, type ParamEntry, type ParamSpec, type ParamTable } from "../model/params.ts";
import { view } from "../model/weights.ts";
import { sinkBackward, temperatureBackward, temperatureForward } from "../ops/attention_filters.ts";
import { type BudgetCosts, type BudgetPlan, solveBudget } from "./hybrid_budget.ts";
import {
  initLoraA,
  LORA_TARGETS,
  type LoraConfig,
  loraHooks,
  loraMatrices,
  type LoraMatrix,
  loraScale,
  loraSpecs,
} from "./lora.ts";
import { chainHooks } from "./compose.ts";
import type { Method, PrepareContext, PreparedMethod } from "./method.ts";
import {
  type CalibrationSequence,
  NEURON_SCORES,
  neuronCost,
  neuronHooks,
  type NeuronLayer,
  neuronLayers,
  neuronSpecs,
  scoreNeurons,
  topNeurons,
  uploadNeuronIndex,
} from "./sparse_ffn.ts";

const fraction = z.number().min(0).max(1);

/** The hybrid's configuration. */
export const hybridConfigSchema = z.object({
  /** The trainable-parameter budget P; default: LoRA of rank `budgetRank` on the same targets. */
  budget: z.number().int().positive().optional(),
  budgetRank: z.number().int().positive().default(8),
  /** f_lora, f_sparse, f_attn: non-negative, summing to 1. */
  fractions: z.object({ lora: fraction, sparse: fraction, attention: fraction }).strict()
    .default({ lora: 0.6, sparse: 0.3, attention: 0.1 }),
  /** LoRA: targets, layers (default all), α, rsLoRA scale and A's init, as in lora.ts. */
  targets: z.array(z.enum(LORA_TARGETS)).nonempty().default(["q", "k", "v", "o"]),
  loraLayers: z.array(z.number().int().min(0)).optional(),
  alpha: z.number().positive().default(16),
  rslora: z.boolean().default(false),
  init: z.enum(["kaiming", "gaussian", "orthogonal"]).default("kaiming"),
  /** Layers whose FFN neurons train (default all). */
  neuronLayers: z.array(z.number().int().min(0)).optional(),
  /** Neuron score on the calibration set: E|act| or SNIP-style E|act·∂L/∂act|. */
  neuronScore: z.enum(NEURON_SCORES).default("activation"),
  /** How many calibration sequences (the first ones given) score the neurons (spec §7.4: 64–256). */
  calibrationSequences: z.number().int().positive().default(64),
  /** Initial sink logit of every head (see the file comment). */
  sinkInit: z.number().max(0).default(-30),
  /** AdamW lr multiplier of the attention filters (weight decay is 0 for them). */
  attentionLrScale: z.number().positive().default(1),
  /** Train with S²-Attn (G = N/4) from this training length on; 0 always, a huge value never. */
  s2MinLength: z.number().int().min(0).default(4096),
}).strict();
export type HybridConfig = z.infer<typeof hybridConfigSchema>;

/** Scalars per head of the attention filters: τ and σ. */
export const FILTER_SCALARS = 2;

/** The LoRA part of a hybrid config at rank r. */
export function hybridLoraConfig(config: HybridConfig, r: number): LoraConfig {
  return {
    r: Math.max(1, r),
    alpha: config.alpha,
    rslora: config.rslora,
    targets: config.targets,
    layers: config.loraLayers,
    init: config.init,
  };
}

/** The layers that select neurons, checked against the model. */
function sparseLayerList(model: ModelConfig, config: HybridConfig): number[] {
  const { L } = dims(model);
  const layers = config.neuronLayers ?? Array.from({ length: L }, (_, l) => l);
  for (const l of layers) {
    if (l >= L) throw new RangeError(`hybrid: neuronLayers names layer ${l}; the model has ${L}`);
  }
  if (new Set(layers).size !== layers.length) throw new RangeError(`hybrid: neuronLayers repeats a layer`);
  return [...layers].sort((a, b) => a - b);
}

/** What a hybrid config costs per unit in a model (the solver's input). */
export function hybridCosts(model: ModelConfig, config: HybridConfig): BudgetCosts {
  const { H, L, F } = dims(model);
  return {
    loraPerRank: loraMatrices(model, hybridLoraConfig(config, 1), "hybrid").reduce(
      (n, m) => n + m.in + m.out,
      0,
    ),
    perNeuron: neuronCost(model),
    sparseLayers: sparseLayerList(model, config).length,
    maxNeurons: F,
    attention: FILTER_SCALARS * H * L,
  };
}

/** The budget plan of a config in a model: P, rank, neurons per layer, attention filters, spending. */
export function hybridPlan(model: ModelConfig, config: HybridConfig): BudgetPlan {
  const costs = hybridCosts(model, config);
  return solveBudget(config.budget ?? config.budgetRank * costs.loraPerRank, config.fractions, costs);
}

/** The hybrid's trainable parameters: r·Σ(d_in + d_out) + n·Σ_ℓ k_ℓ + 2·H·L (each term when its fraction > 0). */
export function hybridParameterCount(model: ModelConfig, config: HybridConfig): number {
  return hybridPlan(model, config).spent.total;
}

/** Names of one layer's filter scalars in the adapter table. */
export const filterNames = (layer: number) => ({ tau: `h.${layer}.attn.tau`, sink: `h.${layer}.attn.sink` });

/**
 * The attention-filter hooks: per layer, logitScale = exp(τ)/√D (computed into a scratch slot that lives
 * until the backward) and the sink logit read straight from the parameters; the backward adds
 * dτ = dScale·scale and dσ = dSink.
 */
export function filterHooks(gpu: Gpu, ctx: AttachContext, params: Tensor, table: ParamTable): AdapterHooks {
  const { L, H, D } = ctx.dims;
  const stride = Math.ceil(H / 64) * 64;
  const scales = createTensor(gpu, [L * stride], { label: "filters.logitScale" });
  const scaleOf = (l: number): Tensor => ({ ...scales, offset: scales.offset + l * stride * 4, shape: [H] });
  const at = (flat: Tensor, name: string) => view(flat, table.byName.get(name)!);
  return {
    async attention(rec, layer) {
      const names = filterNames(layer);
      await temperatureForward(rec, scaleOf(layer), at(params, names.tau), D);
      return { logitScale: scaleOf(layer), sinkLogit: at(params, names.sink) };
    },
    async attentionBackward(rec, layer, grads) {
      const names = filterNames(layer);
      await temperatureBackward(rec, at(ctx.grads!, names.tau), grads.dScale!, scaleOf(layer));
      await sinkBackward(rec, at(ctx.grads!, names.sink), grads.dSink!);
    },
    destroy: () => scales.buffer.destroy(),
  };
}

/** A hybrid adapter and what tests and reports read from it. */
export interface HybridAdapter extends Adapter {
  plan: BudgetPlan;
  /** LoRA matrices (empty when r = 0) and their scale. */
  matrices: LoraMatrix[];
  scale: number;
  /** Selected neurons per layer (layers without neurons left out). */
  neurons: NeuronLayer[];
  /** Whether the attention filters are on. */
  filters: boolean;
  /** Initial parameter values (table layout). */
  values: Float32Array;
  /** Frees the parameters and index lists. */
  destroy(): void;
}

/**
 * A hybrid adapter for a solved plan and a neuron selection (layer → ascending indices, k each), initialised
 * from `seed`: LoRA A as lora.ts, B = 0, neuron deltas 0, τ = 0, σ = sinkInit.
 */
export function createHybridAdapter(
  gpu: Gpu,
  model: ModelConfig,
  config: HybridConfig,
  plan: BudgetPlan,
  selection: ReadonlyMap<number, Uint32Array>,
  seed: number,
): HybridAdapter {
  const { L, H } = dims(model);
  const matrices = plan.r > 0 ? loraMatrices(model, hybridLoraConfig(config, plan.r), "lora") : [];
  const wanted = plan.k > 0 ? sparseLayerList(model, config) : [];
  const chosen = [...selection].filter(([, index]) => index.length > 0);
  if (
    chosen.length !== wanted.length ||
    chosen.some(([l, index]) => !wanted.includes(l) || index.length !== plan.k)
  ) {
    throw new RangeError(
      `hybrid: the neuron selection must hold ${plan.k} neurons in each of layers [${
        wanted.join(", ")
      }]; got ` +
        chosen.map(([l, index]) => `${index.length} in layer ${l}`).join(", "),
    );
  }
  const neurons = neuronLayers(model, selection);
  const filters = plan.attention;
  const specs: ParamSpec[] = [...loraSpecs(matrices, plan.r), ...neuronSpecs(model, neurons)];
  if (filters) {
    for (let l = 0; l < L; l++) {
      const names = filterNames(l);
      specs.push({ name: names.tau, shape: [H], role: "norm", layer: l });
      specs.push({ name: names.sink, shape: [H], role: "norm", layer: l });
    }
  }
  const table = buildTable(specs);
  const values = new Float32Array(table.size);
  if (matrices.length > 0) initLoraA(values, table, matrices, plan.r, config.init, seed);
  if (filters) {
    for (let l = 0; l < L; l++) {
      const e = table.byName.get(filterNames(l).sink)!;
      values.fill(config.sinkInit, e.offset, e.offset + e.numel);
    }
  }
  const params = table.size > 0 ? tensorFrom(gpu, [table.size], values, { label: "hybrid.params" }) : null;
  const index = uploadNeuronIndex(gpu, neurons);
  const scale = plan.r > 0 ? loraScale(hybridLoraConfig(config, plan.r)) : 0;
  const filterEntry = (e: ParamEntry) => /\.attn\.(tau|sink)$/.test(e.name);
  return {
    name: "hybrid",
    table,
    params,
    plan,
    matrices,
    scale,
    neurons,
    filters,
    values,
    attach(ctx) {
      const parts: AdapterHooks[] = [], names: string[] = [];
      if (matrices.length > 0) {
        parts.push(loraHooks(gpu, ctx, params!, table, matrices, plan.r, scale));
        names.push("lora");
      }
      if (neurons.length > 0) {
        parts.push(neuronHooks(gpu, ctx, params!, table, neurons, index.index));
        names.push("neurons");
      }
      if (filters) {
        parts.push(filterHooks(gpu, ctx, params!, table));
        names.push("filters");
      }
      return chainHooks("hybrid", parts, names);
    },
    group: (e) => (filterEntry(e) ? { lrScale: config.attentionLrScale, weightDecay: 0 } : {}),
    destroy() {
      params?.buffer.destroy();
      index.destroy();
    },
  };
}

/** The attention masks of training at `trainLength`: S²-Attn's shifted groups of N/4 from s2MinLength on. */
export function hybridTrainMask(config: HybridConfig, trainLength: number): PreparedMethod["trainMask"] {
  if (trainLength < config.s2MinLength) return undefined;
  if (trainLength % 8 !== 0) {
    throw new RangeError(
      `hybrid: S²-Attn needs a training length divisible by 8 (even groups of N/4); trainLength = ${trainLength} ` +
        `(raise s2MinLength above it to train with full attention)`,
    );
  }
  return { mode: "shifted-groups", groupSize: trainLength / 4 };
}

/** Scores neurons on the calibration set and keeps the top k in each sparse layer. */
async function selectNeurons(
  ctx: PrepareContext,
  config: HybridConfig,
  k: number,
): Promise<{ selection: Map<number, Uint32Array>; used: number }> {
  const layers = sparseLayerList(ctx.base.config, config);
  if (k === 0) return { selection: new Map(), used: 0 };
  const calibration: readonly CalibrationSequence[] | undefined = ctx.calibration;
  if (!calibration || calibration.length === 0) {
    throw new RangeError(
      "hybrid: fractions.sparse > 0 needs calibration sequences to score FFN neurons (PrepareContext.calibration)",
    );
  }
  const used = calibration.slice(0, config.calibrationSequences);
  const scores = await scoreNeurons(ctx.gpu, ctx.base, used, config.neuronScore, layers);
  return { selection: new Map(layers.map((l, i) => [l, topNeurons(scores[i], k)])), used: used.length };
}

/** The budgeted hybrid: LoRA + top-k FFN neurons + per-head temperature and sink, S²-Attn in training. */
export const hybrid: Method<typeof hybridConfigSchema> = {
  name: "hybrid",
  title: "Budgeted hybrid: LoRA + top-k FFN neurons + per-head temperature/sink filters, S²-Attn training",
  caveat: "Our reconstruction of a proposal (methods spec §7.4, §8.2): the neuron scores, the budget split " +
    "and the filters are our design, not a published method. The sink logit starts at sinkInit = −30 so the " +
    "base is unchanged; its gradient is proportional to its own mass (~1e-16 at init, below AdamW's ε), so " +
    "it learns only once training brings some row's log-sum-exp near it. No AdaLoRA-style reallocation " +
    "during training (spec §8.4): the split is fixed at preparation.",
  config: hybridConfigSchema,
  parameterCount: (model, config) => hybridParameterCount(model, config),
  async prepare(ctx, config) {
    const model = ctx.base.config;
    const plan = hybridPlan(model, config);
    const trainMask = hybridTrainMask(config, ctx.trainLength);
    const { selection, used } = await selectNeurons(ctx, config, plan.k);
    const adapter = createHybridAdapter(ctx.gpu, model, config, plan, selection, ctx.seed);
    const { L } = dims(model);
    const prepared: PreparedMethod = {
      weights: ctx.base,
      adapter,
      trainable: NO_BASE,
      trainMask,
      trainableParameters: plan.spent.total,
      details: {
        budget: plan.budget,
        fractions: plan.fractions,
        shares: plan.shares,
        spent: plan.spent,
        unspent: plan.unspent,
        loraRank: plan.r,
        loraScale: adapter.scale,
        loraMatrices: adapter.matrices.length,
        neuronsPerLayer: Array.from({ length: L }, (_, l) => selection.get(l)?.length ?? 0),
        neuronScore: config.neuronScore,
        calibrationSequences: used,
        neuronSelectionHash: hashJson([...selection].map(([l, idx]) => [l, Array.from(idx)])),
        attentionFilters: plan.attention
          ? { scalarsPerHead: FILTER_SCALARS, sinkInit: config.sinkInit }
          : null,
        trainMask: trainMask ?? { mode: "causal" },
      },
      destroy: () => adapter.destroy(),
    };
    return prepared;
  },
};
