/**
 * Static top-k FFN neuron tuning (methods spec §7.4, our own design, not a published method): score the
 * d_ff neurons of each chosen layer on calibration sequences, keep the top k, and train zero-initialised
 * deltas on exactly their parameters, W ← W0 + scatter(Δ):
 *
 *   Llama (SwiGLU)  act_j = SiLU(gate_j·x)·(up_j·x): deltas on gate row j, up row j and down column j (3·C);
 *   GPT-2 (GELU)    act_j = GELU(fc_j·x + b_j): deltas on fc row j, fc bias entry j and fcProj column j
 *                   (2·C + 1). The bias entry belongs to the neuron as much as its row does and costs one
 *                   parameter, so it trains too.
 *
 * Scores (§7.4 options i and ii): "activation" is E|act_j| over every calibration token; "snip" is the
 * SNIP-style saliency E_s Σ_t |act_tj·∂L_s/∂act_tj| with L_s the mean loss of sequence s (the per-token
 * absolute value, not SNIP's |Σ_t …| of a mask gate). Both are column sums on the device in a fixed order
 * (kernels/sparse_ffn.wgsl); the top k per layer are chosen on the host with ties broken by the lower
 * index, so a selection repeats exactly on one device (across devices, last-bit differences in the
 * activations can swap neurons whose scores tie to f32 precision).
 *
 * The deltas run as small dense products over the selected rows through the linear hooks: on the up side
 * z = x·Δ_rowsᵀ (+ Δ_b) is scattered into the selected columns of the projection's output; on the down
 * side the selected columns of the hidden activation are gathered and y += h[:, sel]·Δ_colsᵀ. Selected
 * indices are stored ascending; row i of a delta belongs to neuron index[i].
 */
import type { Gpu } from "../gpu/device.ts";
import { Recorder } from "../gpu/recorder.ts";
import { createTensor, readF32, type Tensor, tensorFrom, upload } from "../gpu/tensor.ts";
import {
  type Adapter,
  type AdapterHooks,
  type AttachContext,
  type LinearName,
  NO_BASE,
} from "../model/adapter.ts";
import { dims, type ModelConfig } from "../model/config.ts";
import { createGraph, destroyGraph, recordBackward, recordForward } from "../model/model.ts";
import { buildTable, type ParamSpec, type ParamTable } from "../model/params.ts";
import { type ModelWeights, view } from "../model/weights.ts";
import { matmul } from "../ops/matmul.ts";
import { columnSaliency, gatherColumns, scatterAddColumns } from "../ops/sparse_ffn.ts";

/** How neurons are scored on the calibration set. */
export const NEURON_SCORES = ["activation", "snip"] as const;
export type NeuronScore = (typeof NEURON_SCORES)[number];

/** One calibration sequence: (T,) tokens and next-token targets (−100: no loss). */
export interface CalibrationSequence {
  tokens: Uint32Array;
  targets: Int32Array;
}

/** Trainable parameters of one selected neuron: 3·C (SwiGLU) or 2·C + 1 (GPT-2's row, bias entry, column). */
export function neuronCost(model: ModelConfig): number {
  const { C } = dims(model);
  return model.family === "llama" ? 3 * C : 2 * C + 1;
}

/** One layer's selected neurons and the names of their deltas in an adapter table. */
export interface NeuronLayer {
  layer: number;
  /** (k,) distinct neuron indices, ascending. */
  index: Uint32Array;
  /** Row deltas (k, C) on the up side, by the site they add to: fc (GPT-2), or gate and up (Llama). */
  rows: { site: LinearName; name: string }[];
  /** GPT-2's fc bias deltas (k,); null for Llama. */
  bias: string | null;
  /** Column deltas (C, k) of the down projection (fcProj or down). */
  cols: { site: LinearName; name: string };
}

/** The delta tensors of the selected neurons (layers without neurons are left out). */
export function neuronLayers(
  model: ModelConfig,
  selection: ReadonlyMap<number, Uint32Array>,
  prefix = "neurons",
): NeuronLayer[] {
  const { L, F } = dims(model);
  const gpt2 = model.family === "gpt2";
  const out: NeuronLayer[] = [];
  for (const [layer, index] of [...selection].sort((a, b) => a[0] - b[0])) {
    if (!Number.isInteger(layer) || layer < 0 || layer >= L) {
      throw new RangeError(`${prefix}: layer ${layer} does not exist (the model has ${L})`);
    }
    if (index.length === 0) continue;
    for (let i = 0; i < index.length; i++) {
      if (index[i] >= F || (i > 0 && index[i] <= index[i - 1])) {
        throw new RangeError(
          `${prefix}: layer ${layer}'s neuron indices must ascend strictly below d_ff = ${F}; ` +
            `found ${index[i]} at position ${i}`,
        );
      }
    }
    const name = (site: LinearName, part: string) => `h.${layer}.${site}.${prefix}.${part}`;
    out.push({
      layer,
      index,
      rows: (gpt2 ? ["fc"] as const : ["gate", "up"] as const).map((site) => ({
        site,
        name: name(site, "rows"),
      })),
      bias: gpt2 ? name("fc", "bias") : null,
      cols: gpt2
        ? { site: "fcProj", name: name("fcProj", "cols") }
        : { site: "down", name: name("down", "cols") },
    });
  }
  return out;
}

/** Table specs of every delta: rows (k, C) and bias (k,) as weight and bias, columns (C, k). */
export function neuronSpecs(model: ModelConfig, layers: readonly NeuronLayer[]): ParamSpec[] {
  const { C } = dims(model);
  return layers.flatMap((n) => {
    const k = n.index.length;
    const specs: ParamSpec[] = n.rows.map((r) => ({
      name: r.name,
      shape: [k, C],
      role: "weight",
      layer: n.layer,
    }));
    if (n.bias) specs.push({ name: n.bias, shape: [k], role: "bias", layer: n.layer });
    specs.push({ name: n.cols.name, shape: [C, k], role: "weight", layer: n.layer });
    return specs;
  });
}

/**
 * The k highest scores' indices, ascending; ties go to the lower index. Throws on a non-finite score.
 * @example topNeurons([0.5, 2, 2, 1], 2) // Uint32Array [1, 2]
 */
export function topNeurons(scores: ArrayLike<number>, k: number): Uint32Array {
  if (!Number.isInteger(k) || k < 0 || k > scores.length) {
    throw new RangeError(`topNeurons: k = ${k} must be an integer in [0, ${scores.length}]`);
  }
  const order = Array.from({ length: scores.length }, (_, j) => j);
  for (const j of order) {
    if (!Number.isFinite(scores[j])) throw new RangeError(`topNeurons: neuron ${j} has score ${scores[j]}`);
  }
  order.sort((a, b) => scores[b] - scores[a] || a - b);
  return Uint32Array.from(order.slice(0, k)).sort();
}

/** Device index lists of `layers`, one aligned u32 view each, in one buffer. */
export function uploadNeuronIndex(
  gpu: Gpu,
  layers: readonly NeuronLayer[],
): { index: Tensor[]; destroy(): void } {
  if (layers.length === 0) return { index: [], destroy() {} };
  // 64 u32 = 256 bytes: every view starts on a binding-offset boundary.
  const stride = (k: number) => Math.ceil(k / 64) * 64;
  const offsets: number[] = [];
  let total = 0;
  for (const n of layers) {
    offsets.push(total);
    total += stride(n.index.length);
  }
  const all = new Uint32Array(total);
  layers.forEach((n, i) => all.set(n.index, offsets[i]));
  const buffer = tensorFrom(gpu, [total], all, { label: "neurons.index", dtype: "u32" });
  return {
    index: layers.map((n, i) => ({
      ...buffer,
      offset: buffer.offset + offsets[i] * 4,
      shape: [n.index.length],
      label: `h.${n.layer}.neurons.index`,
    })),
    destroy: () => buffer.buffer.destroy(),
  };
}

/**
 * The linear hooks of the neuron deltas of `layers`, whose tensors live in `params`/`ctx.grads` at
 * `table`'s offsets; `index[i]` is the device index list of `layers[i]`.
 */
export function neuronHooks(
  gpu: Gpu,
  ctx: AttachContext,
  params: Tensor,
  table: ParamTable,
  layers: readonly NeuronLayer[],
  index: readonly Tensor[],
): AdapterHooks {
  const N = ctx.B * ctx.T;
  const widest = Math.max(1, ...layers.map((n) => n.index.length));
  const scratch = createTensor(gpu, [N * widest], { label: "neurons.block" });
  const ones = ctx.training && layers.some((n) => n.bias)
    ? tensorFrom(gpu, [N, 1], new Float32Array(N).fill(1), { label: "neurons.ones" })
    : null;
  const byLayer = new Map(layers.map((n, i) => [n.layer, { n, index: index[i] }]));
  const at = (flat: Tensor, name: string) => view(flat, table.byName.get(name)!);
  const block = (k: number): Tensor => ({ ...scratch, shape: [N, k] });
  const asRow = (t: Tensor): Tensor => ({ ...t, shape: [1, t.shape[0]] });
  return {
    async linearForward(rec, site, y, x) {
      const entry = byLayer.get(site.layer);
      if (!entry) return;
      const { n, index } = entry;
      const z = block(n.index.length);
      const row = n.rows.find((r) => r.site === site.name);
      if (row) {
        // y[:, sel] += x·Δ_rowsᵀ (+ Δ_b).
        const bias = row.site === "fc" && n.bias ? at(params, n.bias) : undefined;
        await matmul(rec, z, x, at(params, row.name), { transB: true, bias });
        await scatterAddColumns(rec, y, z, index);
      } else if (n.cols.site === site.name) {
        // y += h[:, sel]·Δ_colsᵀ.
        await gatherColumns(rec, z, x, index);
        await matmul(rec, y, z, at(params, n.cols.name), { transB: true, accumulate: true });
      }
    },
    async linearBackward(rec, site, dx, dy, x) {
      const entry = byLayer.get(site.layer);
      if (!entry) return;
      const { n, index } = entry;
      const grads = ctx.grads!;
      const g = block(n.index.length);
      const row = n.rows.find((r) => r.site === site.name);
      if (row) {
        // g = dy[:, sel]; dΔ_rows += gᵀ·x; dΔ_b += Σ_rows g; dx += g·Δ_rows.
        await gatherColumns(rec, g, dy, index);
        await matmul(rec, at(grads, row.name), g, x, { transA: true, accumulate: true });
        if (row.site === "fc" && n.bias) {
          await matmul(rec, asRow(at(grads, n.bias)), ones!, g, { transA: true, accumulate: true });
        }
        if (dx) await matmul(rec, dx, g, at(params, row.name), { accumulate: true });
      } else if (n.cols.site === site.name) {
        // dΔ_cols += dyᵀ·h[:, sel]; dh[:, sel] += dy·Δ_cols.
        await gatherColumns(rec, g, x, index);
        await matmul(rec, at(grads, n.cols.name), dy, g, { transA: true, accumulate: true });
        if (dx) {
          await matmul(rec, g, dy, at(params, n.cols.name));
          await scatterAddColumns(rec, dx, g, index);
        }
      }
    },
    destroy() {
      scratch.buffer.destroy();
      ones?.buffer.destroy();
    },
  };
}

/**
 * W0 + scatter(Δ) on a host copy of the base (table layout): fc/gate/up rows and fc bias entries of the
 * selected neurons get their row deltas, fcProj/down columns their column deltas. Returns a new array.
 */
export function mergeNeuronDeltas<A extends Float32Array | Float64Array>(
  baseTable: ParamTable,
  base: A,
  adapterTable: ParamTable,
  adapter: ArrayLike<number>,
  layers: readonly NeuronLayer[],
): A {
  const out = base.slice() as A;
  for (const n of layers) {
    const k = n.index.length;
    for (const r of n.rows) {
      const w = baseTable.byName.get(`h.${n.layer}.${r.site}.w`)!;
      const d = adapterTable.byName.get(r.name)!;
      const C = w.shape[1];
      for (let i = 0; i < k; i++) {
        for (let c = 0; c < C; c++) out[w.offset + n.index[i] * C + c] += adapter[d.offset + i * C + c];
      }
    }
    if (n.bias) {
      const b = baseTable.byName.get(`h.${n.layer}.fc.b`)!;
      const d = adapterTable.byName.get(n.bias)!;
      for (let i = 0; i < k; i++) out[b.offset + n.index[i]] += adapter[d.offset + i];
    }
    const w = baseTable.byName.get(`h.${n.layer}.${n.cols.site}.w`)!;
    const d = adapterTable.byName.get(n.cols.name)!;
    const [C, F] = w.shape;
    for (let c = 0; c < C; c++) {
      for (let i = 0; i < k; i++) out[w.offset + c * F + n.index[i]] += adapter[d.offset + c * k + i];
    }
  }
  return out;
}

/**
 * Neuron scores of `layers` over the calibration sequences (one graph per distinct length, B = 1): per
 * layer a (F,) array of E|act_j| ("activation": mean over every token) or E_s Σ_t |act_tj·∂L_s/∂act_tj|
 * ("snip": mean over sequences, L_s the mean loss over the sequence's counted targets). The model runs
 * with a scoring adapter whose linear hooks sum the down projection's input (act) and, for "snip", its
 * input gradient, column by column on the device.
 */
export async function scoreNeurons(
  gpu: Gpu,
  weights: ModelWeights,
  calibration: readonly CalibrationSequence[],
  score: NeuronScore,
  layers: readonly number[],
): Promise<Float64Array[]> {
  const { L, F } = weights.dims;
  if (calibration.length === 0) throw new RangeError("neuron scores: the calibration set is empty");
  for (const l of layers) {
    if (!Number.isInteger(l) || l < 0 || l >= L) {
      throw new RangeError(`neuron scores: layer ${l} does not exist (the model has ${L})`);
    }
  }
  calibration.forEach((s, i) => {
    if (s.tokens.length < 1 || s.targets.length !== s.tokens.length) {
      throw new RangeError(
        `neuron scores: calibration sequence ${i} has ${s.tokens.length} tokens and ${s.targets.length} ` +
          `targets; expected as many targets as tokens, at least one`,
      );
    }
  });
  const snip = score === "snip";
  const stride = Math.ceil(F / 64) * 64;
  const sums = tensorFrom(gpu, [layers.length * stride], new Float32Array(layers.length * stride), {
    label: "neurons.scores",
  });
  const slot = new Map(
    layers.map((l, i) => [l, { ...sums, offset: sums.offset + i * stride * 4, shape: [F] }]),
  );
  const down: LinearName = weights.config.family === "llama" ? "down" : "fcProj";
  const hooks: AdapterHooks = snip
    ? {
      async linearBackward(rec, site, dx, _dy, x) {
        const out = site.name === down ? slot.get(site.layer) : undefined;
        if (out) await columnSaliency(rec, out, x, dx!, { accumulate: true });
      },
    }
    : {
      async linearForward(rec, site, _y, x) {
        const out = site.name === down ? slot.get(site.layer) : undefined;
        if (out) await columnSaliency(rec, out, x, null, { accumulate: true });
      },
    };
  const scorer: Adapter = { name: "neuron-scores", table: buildTable([]), params: null, attach: () => hooks };
  const byLength = new Map<number, CalibrationSequence[]>();
  for (const s of calibration) byLength.set(s.tokens.length, [...(byLength.get(s.tokens.length) ?? []), s]);
  let tokens = 0;
  try {
    for (const [T, group] of [...byLength].sort((a, b) => a[0] - b[0])) {
      const g = createGraph(gpu, weights, { B: 1, T, training: snip, trainable: NO_BASE, adapter: scorer });
      try {
        const rec = new Recorder(gpu, `neuron scores T=${T}`);
        await recordForward(rec, g, { logitsOnly: !snip });
        if (snip) await recordBackward(rec, g);
        for (const s of group) {
          upload(gpu, g.inputs.tokens, s.tokens);
          if (snip) {
            // Loss weights 1/count make L_s the sequence's mean loss.
            const counted = s.targets.reduce((n, t) => n + (t === -100 ? 0 : 1), 0);
            upload(gpu, g.inputs.targets, s.targets);
            upload(
              gpu,
              g.inputs.weights,
              Float32Array.from(s.targets, (t) => (t === -100 ? 0 : 1 / Math.max(1, counted))),
            );
          }
          await rec.submit();
          tokens += T;
        }
      } finally {
        destroyGraph(g);
      }
    }
    const host = await readF32(gpu, sums);
    const norm = snip ? calibration.length : tokens;
    return layers.map((_, i) =>
      Float64Array.from(host.subarray(i * stride, i * stride + F), (v) => v / norm)
    );
  } finally {
    sums.buffer.destroy();
  }
}
