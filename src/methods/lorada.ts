/**
 * LoRaDA, Low-Rank Direct Attention Adaptation (Li et al., Findings of EMNLP 2025), AS RECONSTRUCTED by
 * the methods spec §6 from the paper's abstract alone: no official code and no method section were found,
 * so the placement after the softmax, the causal mask, the 1/√r scale and the zero init of W are
 * assumptions [UNVERIFIED]. Per layer and head h, a learned low-rank map is added to the attention
 * probabilities, so attention weights can be negative:
 *   A'_h = softmax(Q_hK_hᵀ·scale_h + M) + s·M_causal ⊙ (X·U_h)(X·W_h)ᵀ,   O_h = A'_h·V_h,
 * with X the block's normed input (ln1, the input of the fused qkv linear), U_h, W_h ∈ R^{C×r}, s = 1/√r.
 * W starts at zero (A' = A, so the logits at init equal the base's bit for bit), U kaiming-uniform
 * (a = √5, as LoRA's A). Trainable: L·2·H·r·C, alone or on top of LoRA (`withLora`, composed into one
 * adapter by compose.ts).
 *
 * How it attaches: U_all, W_all (H·r, C) per layer, so a = X·U_allᵀ and w = X·W_allᵀ are one matmul each,
 * computed in the qkv linear hook and kept per layer (B, H, T, r) for the backward. In mixOutput the map's
 * output s·Σ_{j≤i} (a_i·w_j)·v_j (src/ops/lowrank_attention.ts: linear time, never T×T) is added to a copy
 * of the attention output o (the attention backward needs o itself) and the heads merged. The backward
 * splits datt into dO (the softmax attention and the map get the same gradient), runs the map's backward
 * (da, dw, and dv, which the graph adds to the attention's), and the qkv linear's backward hook turns da,
 * dw into dU, dW and their share of dx.
 *
 * Decoding with a KV cache carries the map as attention carries keys and values: o_i += s·a_i·S_i with
 * S_i = Σ_{j≤i} w_jᵀ·v_j (R × D per head, per layer). The prompt's graph sets S from its w and v after
 * its map (one batched matmul per layer), each step adds w_iᵀ·v_i and reads a_i·S_i — the map's sums in
 * another order, so decoded logits equal recompute to f32 rounding, not bit for bit.
 *
 * The map is causal over the whole sequence whatever the graph's softmax mask (S²-Attn groups, turns):
 * the spec gives only M_causal. A training graph keeps a and w for every layer, 2·L·B·T·H·r floats.
 */
import { z } from "zod";
import type { Gpu } from "../gpu/device.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";
import { type AdapterHooks, type AttachContext, NO_BASE } from "../model/adapter.ts";
import { dims, type ModelConfig } from "../model/config.ts";
import { buildTable, type ParamSpec, type ParamTable } from "../model/params.ts";
import { view } from "../model/weights.ts";
import { fill } from "../ops/elementwise.ts";
import { mergeHeads, mergeHeadsBackward } from "../ops/heads.ts";
import {
  LOWRANK_CHUNK,
  lowrankAttentionBackward,
  lowrankAttentionForward,
} from "../ops/lowrank_attention.ts";
import { matmul } from "../ops/matmul.ts";
import { fillUniform } from "../random/philox.ts";
import { type AdapterPart, composeAdapters, type ComposedAdapter, loraPart } from "./compose.ts";
import { loraConfigSchema, loraParameterCount } from "./lora.ts";
import type { Method, PreparedMethod } from "./method.ts";

/** LoRaDA's configuration. */
export const loradaConfigSchema = z.object({
  /** Rank r of the map per head. */
  r: z.number().int().positive().default(8),
  /** s, the map's scale; default 1/√r (spec §6). */
  scale: z.number().positive().optional(),
  /** Tokens per chunk of the linear-time map (its results' last bits depend on it). */
  chunkSize: z.number().int().positive().default(LOWRANK_CHUNK),
  /** LoRA trained alongside (the abstract's "plugged into LoRA"); null: LoRaDA alone. */
  withLora: loraConfigSchema.nullable().default(null),
}).strict();
export type LoradaConfig = z.infer<typeof loradaConfigSchema>;

/** The map's scale s. */
export function loradaScale(config: Pick<LoradaConfig, "r" | "scale">): number {
  return config.scale ?? 1 / Math.sqrt(config.r);
}

/** Table names of layer l's U_all and W_all, each (H·r, C). */
export function loradaNames(layer: number): { u: string; w: string } {
  return { u: `h.${layer}.attn.lorada.U`, w: `h.${layer}.attn.lorada.W` };
}

/** L·2·H·r·C (+ LoRA's Σ r·(in + out) with `withLora`). */
export function loradaParameterCount(model: ModelConfig, config: LoradaConfig): number {
  const { L, H, C } = dims(model);
  return L * 2 * H * config.r * C + (config.withLora ? loraParameterCount(model, config.withLora) : 0);
}

/**
 * LoRaDA as an adapter part (compose.ts): U kaiming-uniform U(−1/√C, 1/√C) from Philox (seed, layer),
 * W = 0.
 */
export function loradaPart(gpu: Gpu, model: ModelConfig, config: LoradaConfig, seed: number): AdapterPart {
  const { L, H, C } = dims(model);
  const rows = H * config.r;
  const specs: ParamSpec[] = [];
  for (let l = 0; l < L; l++) {
    const n = loradaNames(l);
    specs.push({ name: n.u, shape: [rows, C], role: "weight", layer: l });
    specs.push({ name: n.w, shape: [rows, C], role: "weight", layer: l });
  }
  const table = buildTable(specs);
  const values = new Float32Array(table.size);
  const bound = 1 / Math.sqrt(C);
  for (let l = 0; l < L; l++) {
    const e = table.byName.get(loradaNames(l).u)!;
    fillUniform(values.subarray(e.offset, e.offset + e.numel), seed, l, -bound, bound);
  }
  return {
    name: "lorada",
    table,
    values,
    attach: (ctx, params) => loradaHooks(gpu, ctx, params, table, config),
  };
}

/** The hooks of one graph; `params` and `ctx.grads` in the part's table layout. */
function loradaHooks(
  gpu: Gpu,
  ctx: AttachContext,
  params: Tensor,
  table: ParamTable,
  config: LoradaConfig,
): AdapterHooks {
  const { B, T } = ctx;
  const { H, Hkv, D } = ctx.dims;
  const R = config.r;
  const shape = { B, H, Hkv, T, R, D };
  const opts = { scale: loradaScale(config), chunkSize: config.chunkSize };
  const at = (flat: Tensor, layer: number, which: "u" | "w"): Tensor =>
    view(flat, table.byName.get(loradaNames(layer)[which])!);

  const made: Tensor[] = [];
  const make = (dimsOf: number[], label: string) => {
    const t = createTensor(gpu, dimsOf, { label: `lorada.${label}` });
    made.push(t);
    return t;
  };
  // a and w of every layer for the backward; one set suffices without training (each layer's mixOutput
  // runs right after its qkv linear).
  const kept = Array.from({ length: ctx.training ? ctx.dims.L : 1 }, (_, l) => ({
    a: make([B, H, T, R], `a.${l}`),
    w: make([B, H, T, R], `w.${l}`),
  }));
  const slot = (layer: number) => kept[ctx.training ? layer : 0];
  // (B, T, H·r) rows: projections before the head split; da, dw after the head merge.
  const rows = make([B, T, H * R], "rows");
  const rows2 = { ...rows, shape: [B * T, H * R] };
  const mixed = make([B, H, T, D], "o");
  const da = ctx.training ? make([B, H, T, R], "da") : null;
  const dw = ctx.training ? make([B, H, T, R], "dw") : null;
  // Decoding: each layer's S (H, R, D) lives in the decoder's state; v is widened to H heads for GQA.
  const decode = ctx.decode;
  if (decode && B !== 1) throw new RangeError(`lorada: a decoder attaches with B = 1, got ${B}`);
  const prefixSum = (layer: number): Tensor => {
    const name = `lorada.S.${layer}`;
    let S = decode!.state.get(name);
    if (!S) {
      S = createTensor(gpu, [H, R, D], { label: `lorada.decode.S.${layer}` });
      decode!.state.set(name, S);
    }
    return S;
  };
  const vHeads = decode && Hkv !== H ? make([H, T, D], "vHeads") : null;
  const perHead = (rec: Recorder, v: Tensor): Tensor => {
    if (!vHeads) return { ...v, shape: [H, T, D] };
    const group = H / Hkv, bytes = T * D * 4;
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / group);
      rec.copy({ ...vHeads, offset: vHeads.offset + h * bytes, shape: [T, D] }, {
        ...v,
        offset: v.offset + g * bytes,
        shape: [T, D],
      });
    }
    return vHeads;
  };

  return {
    async linearForward(rec, site, _y, x) {
      if (site.name !== "qkv") return;
      const s = slot(site.layer);
      await matmul(rec, rows2, x, at(params, site.layer, "u"), { transB: true });
      await mergeHeadsBackward(rec, s.a, rows);
      await matmul(rec, rows2, x, at(params, site.layer, "w"), { transB: true });
      await mergeHeadsBackward(rec, s.w, rows);
    },
    async mixOutput(rec, layer, t) {
      const s = slot(layer);
      rec.copy(mixed, t.o);
      const heads = (x: Tensor, cols: number): Tensor => ({ ...x, shape: [H, T, cols] });
      if (decode?.phase === "step") {
        // S += wᵀ·v, then o += s·a·S (T = 1).
        const S = prefixSum(layer), v = perHead(rec, t.v);
        await matmul(rec, S, heads(s.w, R), v, { transA: true, accumulate: true });
        await matmul(rec, heads(mixed, D), heads(s.a, R), S, { accumulate: true, alpha: opts.scale });
      } else {
        await lowrankAttentionForward(rec, mixed, s.a, s.w, t.v, shape, { ...opts, accumulate: true });
        if (decode?.phase === "prefill") {
          await matmul(rec, prefixSum(layer), heads(s.w, R), perHead(rec, t.v), { transA: true });
        }
      }
      await mergeHeads(rec, t.att, mixed);
    },
    async mixOutputBackward(rec, layer, t) {
      const s = slot(layer);
      await mergeHeadsBackward(rec, t.dO, t.datt);
      await fill(rec, t.dv, 0);
      await lowrankAttentionBackward(rec, da!, dw!, t.dv, t.dO, s.a, s.w, t.v, shape, opts);
      return { dq: false, dv: true };
    },
    async linearBackward(rec, site, dx, _dy, x) {
      if (site.name !== "qkv") return;
      const grads = ctx.grads!;
      // dU += daᵀ·X, dx += da·U_all; then the same for W.
      for (const [d, which] of [[da!, "u"], [dw!, "w"]] as const) {
        await mergeHeads(rec, rows, d);
        await matmul(rec, at(grads, site.layer, which), rows2, x, { transA: true, accumulate: true });
        if (dx) await matmul(rec, dx, rows2, at(params, site.layer, which), { accumulate: true });
      }
    },
    destroy() {
      for (const t of made) t.buffer.destroy();
    },
  };
}

/** LoRaDA (reconstruction), alone or composed after LoRA, as one adapter. */
export function createLoradaAdapter(
  gpu: Gpu,
  model: ModelConfig,
  config: LoradaConfig,
  seed: number,
): ComposedAdapter {
  const parts: AdapterPart[] = [];
  // LoRA's A draws from its own seed stream family (seed + 1) so the two inits never share Philox streams.
  if (config.withLora) parts.push(loraPart(gpu, model, config.withLora, seed + 1));
  parts.push(loradaPart(gpu, model, config, seed));
  return composeAdapters(gpu, "lorada", parts, { prefix: parts.length > 1 });
}

/** LoRaDA (methods spec §6 reconstruction). */
export const lorada: Method<typeof loradaConfigSchema> = {
  name: "lorada",
  title: "LoRaDA (reconstructed): causal low-rank attention map s·(XU)(XW)ᵀ added after the softmax, " +
    "alone or on LoRA",
  caveat:
    "A reconstruction from the abstract only (methods spec §6, UNVERIFIED): no official code or method " +
    "section was found, so the map's placement after the softmax, its causal mask, the 1/√r scale, per-head " +
    "U, W on the normed block input and W = 0 at init are our assumptions, not the paper's. The map " +
    "stays causal under other softmax masks. Attention diagnostics measure the softmax part only.",
  config: loradaConfigSchema,
  parameterCount: loradaParameterCount,
  prepare(ctx, config) {
    const model = ctx.base.config;
    const adapter = createLoradaAdapter(ctx.gpu, model, config, ctx.seed);
    const { L, H, C } = dims(model);
    const prepared: PreparedMethod = {
      weights: ctx.base,
      adapter,
      trainable: NO_BASE,
      trainableParameters: loradaParameterCount(model, config),
      details: {
        reconstruction: "methods spec §6, UNVERIFIED",
        rank: config.r,
        scale: loradaScale(config),
        chunkSize: config.chunkSize,
        mapParameters: L * 2 * H * config.r * C,
        withLora: config.withLora
          ? { ...config.withLora, parameters: loraParameterCount(model, config.withLora) }
          : null,
      },
      destroy: () => adapter.destroy(),
    };
    return Promise.resolve(prepared);
  },
};
