/**
 * LIFT's Gated Memory adapter (methods spec §4.3; LuckyGlass/2024-LIFT lift/gated_memory/model.py as the
 * spec reads it), on every layer and every query head i, through the attention-output mix hooks:
 *
 *   mem_i = W2_i·SiLU(W1_i·q_i)                W1_i ∈ R^{2D×D}, W2_i ∈ R^{D×2D}
 *   g_i   = σ(3·(w_iᵀ·SiLU(V_i·q_i) − 1))      V_i ∈ R^{S×D}, w_i ∈ R^S, S = ⌊√D⌋
 *   o'_i  = (1 − g_i)·o_i + g_i·mem_i          per token, then the heads merged for the output projection
 *
 * q_i is the head's query before RoPE (retrieval by content, not position). No biases: Llama's
 * attention_bias is false; for GPT-2, whose attention linears do have biases and which the 2024 code never
 * adapted, the same bias-free form is used so both families share one formula. Parameters per layer:
 * H·(4D² + D·S + S). Every tensor starts kaiming-uniform(a = √5), i.e. U(±1/√fan_in) with fan_in the
 * per-head linear's input width (D, 2D, D, S) — the spec does not say how the grouped weights computed
 * their fan-in [UNVERIFIED]. So mem ≠ 0 and g ≈ σ(−3) ≈ 0.05 at init: the model is perturbed from step 0.
 *
 * The regulariser (GMLlamaForCausalLM.forward) adds scale·mean(g) over supervised positions, heads and
 * layers to the loss. Its gradient enters the gate's backward as scale·lossWeights[n]/(H·L) per (head,
 * token): the graph's loss weights are the batch's per-token weights already divided by the counted
 * tokens. Its value is not added to the graph's loss sum, so reported losses are the cross-entropy only.
 *
 * Each layer keeps its head-major pre-RoPE query (H, B·T, D) from the forward (the graph does not keep
 * qPre per layer); the backward recomputes the memory and the gate from it. The four per-head linears are
 * batched matmuls over heads; the rest is kernels/gated_memory.wgsl.
 *
 * The 2024 code also puts a "dummy" LoRA (r = 2, α = 4, so s = 2) on lm_head so that PEFT accepts the
 * model, and it trains with the rest: logits += 2·(lnf·Aᵀ)·Bᵀ with A (2, C) kaiming-uniform and B (V, 2)
 * zero (PEFT's init), through the graph's LM-head linear site. Its 2·(C + V) parameters sit at the end of
 * the table and draw from streams after the memory's, so the memory's initial values do not depend on it.
 */
import type { Gpu } from "../gpu/device.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { createTensor, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import { type Adapter, type AdapterHooks, type AttachContext, HEAD_LAYER } from "../model/adapter.ts";
import { dims, type ModelConfig } from "../model/config.ts";
import { buildTable, type ParamSpec, type ParamTable } from "../model/params.ts";
import { view } from "../model/weights.ts";
import {
  gateBackward,
  gatedMix,
  gatedMixBackward,
  gateForward,
  gateWidth,
  headRows,
  headRowsBackward,
  siluBackward,
  siluForward,
} from "../ops/gated_memory.ts";
import { matmul } from "../ops/matmul.ts";
import { fillUniform } from "../random/philox.ts";
import { loraHooks, type LoraMatrix } from "./lora.ts";

/** The 2024 code's dummy LoRA on lm_head: r = 2, α = 4 (s = α/r = 2), and its tensors' table names. */
export const HEAD_LORA = { r: 2, alpha: 4, a: "lm_head.lora_A", b: "lm_head.lora_B" } as const;

/** The head LoRA as a LoRA matrix of the table (site "lmHead"). */
export function headLoraMatrix(model: ModelConfig): LoraMatrix {
  const { C, V } = dims(model);
  return {
    site: "lmHead",
    target: "lmHead",
    layer: HEAD_LAYER,
    offset: 0,
    out: V,
    in: C,
    a: HEAD_LORA.a,
    b: HEAD_LORA.b,
  };
}

/** Table names of layer l's tensors; the `self_attn.` prefix keeps the attention's gate_proj apart from the MLP's. */
export function gatedMemoryNames(layer: number): { W1: string; W2: string; V: string; w: string } {
  const p = `h.${layer}.self_attn`;
  return { W1: `${p}.mem_proj.W1`, W2: `${p}.mem_proj.W2`, V: `${p}.gate_proj.V`, w: `${p}.gate_proj.w` };
}

/** The memory and gates alone: L·H·(4D² + D·⌊√D⌋ + ⌊√D⌋) (methods spec §10). */
export function gatedMemoryParameterCount(model: ModelConfig): number {
  const { L, H, D } = dims(model);
  const S = gateWidth(D);
  return L * H * (4 * D * D + D * S + S);
}

/** Everything LIFT trains: the memory and gates plus the head LoRA's r·(C + V) (spec: ≈ 68.6M + 0.26M). */
export function liftParameterCount(model: ModelConfig): number {
  const { C, V } = dims(model);
  return gatedMemoryParameterCount(model) + HEAD_LORA.r * (C + V);
}

/**
 * The adapter's table: per layer W1 (H, 2D, D), W2 (H, D, 2D), V (H, S, D), w (H, S); then the head
 * LoRA's A (2, C) and B (V, 2).
 */
export function gatedMemoryTable(model: ModelConfig): ParamTable {
  const { L, H, D } = dims(model);
  const S = gateWidth(D);
  const specs: ParamSpec[] = [];
  for (let l = 0; l < L; l++) {
    const n = gatedMemoryNames(l);
    specs.push({ name: n.W1, shape: [H, 2 * D, D], role: "weight", layer: l });
    specs.push({ name: n.W2, shape: [H, D, 2 * D], role: "weight", layer: l });
    specs.push({ name: n.V, shape: [H, S, D], role: "weight", layer: l });
    specs.push({ name: n.w, shape: [H, S], role: "weight", layer: l });
  }
  const head = headLoraMatrix(model);
  specs.push({ name: head.a, shape: [HEAD_LORA.r, head.in], role: "weight", layer: HEAD_LAYER });
  specs.push({ name: head.b, shape: [head.out, HEAD_LORA.r], role: "weight", layer: HEAD_LAYER });
  return buildTable(specs);
}

/** Philox stream of the table's tensor k is INIT_STREAM + k. */
const INIT_STREAM = 0x6a7e0000;
/** Documents use disjoint counter ranges of each stream (tensors hold fewer than 2³² values). */
const DOCUMENT_STRIDE = 2 ** 32;
/** Largest document index whose counter range stays exact in a double. */
export const MAX_DOCUMENT = 2 ** 20;

/**
 * Kaiming-uniform(a = √5) values of every tensor into `values` (table layout): U(±1/√fan_in) with fan_in
 * the input width of the per-head linear (D for W1 and V, 2D for W2, S for w), drawn from Philox (seed,
 * INIT_STREAM + tensor index) at the document's own counter range, so document k of a seed always starts
 * from the same values and two documents never share them. The head LoRA's B is zero.
 */
export function initGatedMemory(values: Float32Array, table: ParamTable, seed: number, document = 0): void {
  if (!Number.isInteger(document) || document < 0 || document >= MAX_DOCUMENT) {
    throw new RangeError(
      `gated memory: document index ${document} must be an integer in [0, ${MAX_DOCUMENT})`,
    );
  }
  table.entries.forEach((e, k) => {
    const fanIn = e.shape[e.shape.length - 1];
    const bound = 1 / Math.sqrt(fanIn);
    fillUniform(
      values.subarray(e.offset, e.offset + e.numel),
      seed,
      INIT_STREAM + k,
      -bound,
      bound,
      document * DOCUMENT_STRIDE,
    );
  });
  const b = table.byName.get(HEAD_LORA.b)!;
  values.fill(0, b.offset, b.offset + b.numel);
}

/** A Gated Memory adapter with its initial values and regulariser scale. */
export interface GatedMemoryAdapter extends Adapter {
  readonly params: Tensor;
  /** The values the adapter was created with (table layout). */
  readonly values: Float32Array;
  /** Scale of the gate regulariser (0: none). */
  readonly regularization: number;
}

/** How a Gated Memory adapter is created. */
export interface GatedMemoryOptions {
  seed: number;
  /** Document index of the per-document initialisation (default 0). */
  document?: number;
  /** Regulariser scale: loss += scale·mean(g) over supervised positions, heads and layers. */
  regularization: number;
  /** Start from these values (table layout) instead of the seeded initialisation. */
  values?: Float32Array;
}

/**
 * A Gated Memory adapter on the device.
 * @example const gm = createGatedMemoryAdapter(gpu, config, { seed: 1, regularization: 0.1 });
 */
export function createGatedMemoryAdapter(
  gpu: Gpu,
  model: ModelConfig,
  opts: GatedMemoryOptions,
): GatedMemoryAdapter {
  if (!Number.isFinite(opts.regularization) || opts.regularization < 0) {
    throw new RangeError(`gated memory: regularization ${opts.regularization} must be a finite number ≥ 0`);
  }
  const table = gatedMemoryTable(model);
  let values: Float32Array;
  if (opts.values) {
    if (opts.values.length !== table.size) {
      throw new RangeError(
        `gated memory: ${opts.values.length} start values given, the table holds ${table.size}`,
      );
    }
    values = opts.values.slice();
  } else {
    values = new Float32Array(table.size);
    initGatedMemory(values, table, opts.seed, opts.document ?? 0);
  }
  const params = tensorFrom(gpu, [table.size], values, { label: "gatedMemory.params" });
  return {
    name: "lift",
    table,
    params,
    values,
    regularization: opts.regularization,
    attach: (ctx) => gatedMemoryHooks(gpu, ctx, params, table, opts.regularization),
  };
}

/**
 * The hooks on one graph. Forward per layer: qRows = headRows(qPre) (kept per layer with training),
 * h = qRows·W1ᵀ, a1 = SiLU(h), mem = a1·W2ᵀ, z = qRows·Vᵀ, (a2, g) = gate(z, w), att = mix(o, mem, g).
 * Backward (h, a1, mem, z, a2, g recomputed from the kept qRows): (dO, dmem, dg) from datt; (du, dz) with
 * the regulariser; dw += duᵀ·a2, dV += dzᵀ·qRows, dW2 += dmemᵀ·a1, da1 = dmem·W2, dh = SiLU'(h)·da1,
 * dW1 += dhᵀ·qRows, dqRows = dh·W1 + dz·V → dqPre. The head LoRA runs as LoRA's hooks on the LM-head site.
 */
function gatedMemoryHooks(
  gpu: Gpu,
  ctx: AttachContext,
  params: Tensor,
  table: ParamTable,
  regularization: number,
): AdapterHooks {
  const { L, H, D } = ctx.dims;
  const S = gateWidth(D);
  const R = 2 * D;
  const N = ctx.B * ctx.T;
  const made: Tensor[] = [];
  const make = (shape: number[], label: string) => {
    const t = createTensor(gpu, shape, { label: `gatedMemory.${label}` });
    made.push(t);
    return t;
  };
  // With training, each layer's query rows survive until its backward; without, one buffer serves all.
  const qRows = Array.from({ length: ctx.training ? L : 1 }, (_, l) => make([H, N, D], `qRows.${l}`));
  const h = make([H, N, R], "h");
  const a1 = make([H, N, R], "a1");
  const mem = make([H, N, D], "mem");
  const z = make([H, N, S], "z");
  const a2 = make([H, N, S], "a2");
  const g = make([H, N], "g");
  const back = ctx.training
    ? {
      dmem: make([H, N, D], "dmem"),
      dg: make([H, N], "dg"),
      du: make([H, N], "du"),
      dz: make([H, N, S], "dz"),
      da1: make([H, N, R], "da1"),
      dh: make([H, N, R], "dh"),
      dq: make([H, N, D], "dq"),
    }
    : null;
  const at = (flat: Tensor, l: number) => {
    const n = gatedMemoryNames(l);
    const v = (name: string) => view(flat, table.byName.get(name)!);
    return { W1: v(n.W1), W2: v(n.W2), V: v(n.V), w: v(n.w) };
  };
  const reg = regularization / (H * L);
  const rowsOf = (l: number) => qRows[ctx.training ? l : 0];

  async function recordPieces(rec: Recorder, l: number) {
    const p = at(params, l);
    const q = rowsOf(l);
    await matmul(rec, h, q, p.W1, { transB: true });
    await siluForward(rec, a1, h);
    await matmul(rec, mem, a1, p.W2, { transB: true });
    await matmul(rec, z, q, p.V, { transB: true });
    await gateForward(rec, a2, g, z, p.w);
  }

  const head = loraHooks(
    gpu,
    ctx,
    params,
    table,
    [headLoraMatrix(ctx.weights.config)],
    HEAD_LORA.r,
    HEAD_LORA.alpha / HEAD_LORA.r,
  );
  return {
    linearForward: head.linearForward,
    linearBackward: head.linearBackward,
    async mixOutput(rec, l, t) {
      await headRows(rec, rowsOf(l), t.qPre);
      await recordPieces(rec, l);
      await gatedMix(rec, t.att, t.o, mem, g);
    },
    async mixOutputBackward(rec, l, t) {
      if (!back || !ctx.grads) throw new Error("gated memory: backward on a graph attached without training");
      const p = at(params, l);
      const dp = at(ctx.grads, l);
      const q = rowsOf(l);
      await recordPieces(rec, l);
      await gatedMixBackward(rec, t.dO, back.dmem, back.dg, t.datt, t.o, mem, g);
      await gateBackward(rec, back.du, back.dz, back.dg, g, z, p.w, ctx.lossWeights, reg);
      const duCol = { ...back.du, shape: [H, N, 1] };
      const dwRow = { ...dp.w, shape: [H, 1, S] };
      await matmul(rec, dwRow, duCol, a2, { transA: true, accumulate: true });
      await matmul(rec, dp.V, back.dz, q, { transA: true, accumulate: true });
      await matmul(rec, dp.W2, back.dmem, a1, { transA: true, accumulate: true });
      await matmul(rec, back.da1, back.dmem, p.W2);
      await siluBackward(rec, back.dh, back.da1, h);
      await matmul(rec, dp.W1, back.dh, q, { transA: true, accumulate: true });
      await matmul(rec, back.dq, back.dh, p.W1);
      await matmul(rec, back.dq, back.dz, p.V, { accumulate: true });
      await headRowsBackward(rec, t.dqPre, back.dq);
      return { dq: true, dv: false };
    },
    destroy() {
      for (const t of made) t.buffer.destroy();
      head.destroy?.();
    },
  };
}
