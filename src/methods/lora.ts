/**
 * LoRA and rsLoRA as HF PEFT computes them (methods spec §1.1): on each targeted linear W0 (out × in),
 * y = W0·x + b0 + s·B·A·x with A (r × in), B (out × r), s = α/r (LoRA) or α/√r (rsLoRA). A starts
 * kaiming-uniform(a = √5) = U(−1/√in, 1/√in) (or N(0, 1/r) "gaussian", or orthogonal rows as HyLoRADA
 * does), B = 0, so the model is unchanged at step 0. Dropout is 0 (the harness never uses it).
 *
 * Targets name the block's linears: q, k, v (row blocks of the fused qkv projection), qkv (the fused
 * projection as one matrix, GPT-2's c_attn), o (attnOut, c_proj), fc and fcProj (GPT-2's MLP), gate, up
 * and down (Llama's MLP). The adapter records, per target, z = x·Aᵀ and then y += s·z·Bᵀ (into a column
 * block for q, k, v); the backward recomputes z rather than keeping it.
 */
import { z } from "zod";
import type { Gpu } from "../gpu/device.ts";
import { createTensor, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import {
  type Adapter,
  type AdapterHooks,
  type AttachContext,
  type LinearName,
  type LinearSite,
  NO_BASE,
  siteOutDim,
} from "../model/adapter.ts";
import { dims, type ModelConfig, type ModelDims } from "../model/config.ts";
import { buildTable, type ParamSpec, type ParamTable } from "../model/params.ts";
import { view } from "../model/weights.ts";
import { addColumns, getColumns } from "../ops/columns.ts";
import { matmul } from "../ops/matmul.ts";
import { fillNormal, fillUniform } from "../random/philox.ts";
import type { Method, PreparedMethod } from "./method.ts";

/** A LoRA target: a block linear, or q, k, v inside the fused qkv projection. */
export const LORA_TARGETS = ["q", "k", "v", "qkv", "o", "fc", "fcProj", "gate", "up", "down"] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

/** LoRA's configuration (PEFT's defaults, except targets: q, k, v, o). */
export const loraConfigSchema = z.object({
  r: z.number().int().positive().default(8),
  alpha: z.number().positive().default(16),
  /** α/√r instead of α/r. */
  rslora: z.boolean().default(false),
  targets: z.array(z.enum(LORA_TARGETS)).nonempty().default(["q", "k", "v", "o"]),
  /** Layers to adapt (default every layer). */
  layers: z.array(z.number().int().min(0)).optional(),
  /** A's initialisation. */
  init: z.enum(["kaiming", "gaussian", "orthogonal"]).default("kaiming"),
}).strict();
export type LoraConfig = z.infer<typeof loraConfigSchema>;

/** Where a target lives: the site it hooks, its column block there, and its matrix sizes. */
export interface TargetShape {
  site: LinearName;
  /** First output column in the site's output, and the target's output width. */
  offset: number;
  out: number;
  in: number;
}

/** The site, column block and sizes of `target` in a model, or null when the family lacks it. */
export function targetShape(d: ModelDims, family: "gpt2" | "llama", target: LoraTarget): TargetShape | null {
  const { C, H, Hkv, D, F } = d;
  const QKV = (H + 2 * Hkv) * D;
  switch (target) {
    case "q":
      return { site: "qkv", offset: 0, out: H * D, in: C };
    case "k":
      return { site: "qkv", offset: H * D, out: Hkv * D, in: C };
    case "v":
      return { site: "qkv", offset: (H + Hkv) * D, out: Hkv * D, in: C };
    case "qkv":
      return { site: "qkv", offset: 0, out: QKV, in: C };
    case "o":
      return { site: "attnOut", offset: 0, out: C, in: H * D };
    case "fc":
      return family === "gpt2" ? { site: "fc", offset: 0, out: F, in: C } : null;
    case "fcProj":
      return family === "gpt2" ? { site: "fcProj", offset: 0, out: C, in: F } : null;
    case "gate":
    case "up":
      return family === "llama" ? { site: target, offset: 0, out: F, in: C } : null;
    case "down":
      return family === "llama" ? { site: "down", offset: 0, out: C, in: F } : null;
  }
}

/** The LoRA scale s. */
export function loraScale(config: Pick<LoraConfig, "r" | "alpha" | "rslora">): number {
  return config.rslora ? config.alpha / Math.sqrt(config.r) : config.alpha / config.r;
}

/**
 * One adapted matrix: its layer, target, shape and the names of A and B in the adapter table. Target
 * "lmHead" (site "lmHead", layer -1) is not a config target: only LIFT's dummy head LoRA builds one.
 */
export interface LoraMatrix extends TargetShape {
  layer: number;
  target: LoraTarget | "lmHead";
  a: string;
  b: string;
}

/** Every matrix a LoRA config adapts in a model; throws naming a target the family lacks. */
export function loraMatrices(model: ModelConfig, config: LoraConfig, prefix = "lora"): LoraMatrix[] {
  const d = dims(model);
  const layers = config.layers ?? Array.from({ length: d.L }, (_, l) => l);
  for (const l of layers) {
    if (l >= d.L) throw new RangeError(`${prefix}: layer ${l} does not exist (the model has ${d.L})`);
  }
  if (config.targets.includes("qkv") && config.targets.some((t) => t === "q" || t === "k" || t === "v")) {
    throw new RangeError(`${prefix}: targets take either qkv or q/k/v, not both`);
  }
  const out: LoraMatrix[] = [];
  for (const layer of layers) {
    for (const target of config.targets) {
      const shape = targetShape(d, model.family, target);
      if (!shape) {
        throw new RangeError(`${prefix}: target "${target}" does not exist in ${model.family} models`);
      }
      const base = `h.${layer}.${target}.${prefix}`;
      out.push({ ...shape, layer, target, a: `${base}.A`, b: `${base}.B` });
    }
  }
  return out;
}

/** Σ r·(in + out) over the adapted matrices (methods spec §10). */
export function loraParameterCount(model: ModelConfig, config: LoraConfig): number {
  return loraMatrices(model, config).reduce((n, m) => n + config.r * (m.in + m.out), 0);
}

/** The table specs of A (r × in) and B (out × r) of every matrix. */
export function loraSpecs(matrices: readonly LoraMatrix[], r: number): ParamSpec[] {
  return matrices.flatMap((m) => [
    { name: m.a, shape: [r, m.in], role: "weight" as const, layer: m.layer },
    { name: m.b, shape: [m.out, r], role: "weight" as const, layer: m.layer },
  ]);
}

/**
 * Initial A values (B stays 0) written into `values` at the table's offsets, from Philox streams
 * (seed, matrix index).
 */
export function initLoraA(
  values: Float32Array,
  table: ParamTable,
  matrices: readonly LoraMatrix[],
  r: number,
  init: LoraConfig["init"],
  seed: number,
): void {
  matrices.forEach((m, index) => {
    const e = table.byName.get(m.a)!;
    const a = values.subarray(e.offset, e.offset + e.numel);
    if (init === "kaiming") {
      const bound = 1 / Math.sqrt(m.in);
      fillUniform(a, seed, index, -bound, bound);
    } else if (init === "gaussian") {
      fillNormal(a, seed, index, 0, 1 / r);
    } else {
      orthogonalRows(a, r, m.in, seed, index);
    }
  });
}

/**
 * torch.nn.init.orthogonal_ for an (r × n) matrix with r ≤ n: Gram–Schmidt (in f64, twice) on Gaussian
 * rows, so the rows are orthonormal. (torch uses QR with a sign fix; the distribution is the same.)
 */
export function orthogonalRows(out: Float32Array, r: number, n: number, seed: number, stream: number): void {
  if (r > n) throw new RangeError(`orthogonal init: ${r} rows cannot be orthonormal in ${n} dimensions`);
  const rows = Array.from(
    { length: r },
    (_, i) => fillNormal(new Float64Array(n), seed, stream, 0, 1, i * n),
  );
  for (let i = 0; i < r; i++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let j = 0; j < i; j++) {
        let dot = 0;
        for (let k = 0; k < n; k++) dot += rows[i][k] * rows[j][k];
        for (let k = 0; k < n; k++) rows[i][k] -= dot * rows[j][k];
      }
    }
    let norm = 0;
    for (let k = 0; k < n; k++) norm += rows[i][k] * rows[i][k];
    norm = Math.sqrt(norm);
    for (let k = 0; k < n; k++) {
      rows[i][k] /= norm;
      out[i * n + k] = rows[i][k];
    }
  }
}

/** Groups matrices by the linear site they hook: `at(site)` lists them in their given order. */
export function matricesBySite<M extends { layer: number; site: LinearName }>(
  matrices: readonly M[],
): (site: LinearSite) => readonly M[] {
  const bySite = new Map<string, M[]>();
  for (const m of matrices) {
    const key = `${m.layer}.${m.site}`;
    bySite.set(key, [...(bySite.get(key) ?? []), m]);
  }
  return (site) => bySite.get(`${site.layer}.${site.name}`) ?? [];
}

/**
 * Width of the scratch that column blocks need (q, k or v inside the fused qkv output): the widest
 * matrix that does not cover its whole site, or 1 when every matrix does.
 */
export function columnBlockWidth(matrices: readonly TargetShape[], d: ModelDims): number {
  const blocks = matrices.filter((m) => m.offset !== 0 || m.out !== siteOutDim(d, m.site));
  return Math.max(1, ...blocks.map((m) => m.out));
}

/**
 * The LoRA hooks for one graph over `matrices` whose A and B live in `params`/`grads` at `table`'s
 * offsets. Scratch is shared by every matrix (the hooks run one after the other).
 */
export function loraHooks(
  gpu: Gpu,
  ctx: AttachContext,
  params: Tensor,
  table: ParamTable,
  matrices: readonly LoraMatrix[],
  r: number,
  scale: number,
): AdapterHooks {
  const N = ctx.B * ctx.T;
  const onSite = matricesBySite(matrices);
  const widest = columnBlockWidth(matrices, ctx.dims);
  const z = createTensor(gpu, [N, r], { label: "lora.z" });
  const dz = createTensor(gpu, [N, r], { label: "lora.dz" });
  const delta = createTensor(gpu, [N * widest], { label: "lora.delta" });
  const dyBlock = createTensor(gpu, [N * widest], { label: "lora.dy" });
  const at = (flat: Tensor, name: string) => view(flat, table.byName.get(name)!);
  const rows = (t: Tensor, cols: number): Tensor => ({ ...t, shape: [N, cols] });
  const whole = (m: LoraMatrix, site: LinearSite) => m.offset === 0 && m.out === site.outDim;
  return {
    async linearForward(rec, site, y, x) {
      for (const m of onSite(site)) {
        await matmul(rec, z, x, at(params, m.a), { transB: true });
        if (whole(m, site)) {
          await matmul(rec, y, z, at(params, m.b), { transB: true, accumulate: true, alpha: scale });
        } else {
          const d = rows(delta, m.out);
          await matmul(rec, d, z, at(params, m.b), { transB: true });
          await addColumns(rec, y, d, m.offset, scale);
        }
      }
    },
    async linearBackward(rec, site, dx, dy, x) {
      const grads = ctx.grads!;
      for (const m of onSite(site)) {
        let dyM = dy;
        if (!whole(m, site)) {
          dyM = rows(dyBlock, m.out);
          await getColumns(rec, dyM, dy, m.offset);
        }
        await matmul(rec, z, x, at(params, m.a), { transB: true });
        // dB += s·dyᵀ·z; dz = s·dy·B; dA += dzᵀ·x; dx += dz·A.
        await matmul(rec, at(grads, m.b), dyM, z, { transA: true, accumulate: true, alpha: scale });
        await matmul(rec, dz, dyM, at(params, m.b), { alpha: scale });
        await matmul(rec, at(grads, m.a), dz, x, { transA: true, accumulate: true });
        if (dx) await matmul(rec, dx, dz, at(params, m.a), { accumulate: true });
      }
    },
    destroy() {
      for (const t of [z, dz, delta, dyBlock]) t.buffer.destroy();
    },
  };
}

/** A LoRA adapter on the device for a model, initialised from `seed`. */
export function createLoraAdapter(
  gpu: Gpu,
  model: ModelConfig,
  config: LoraConfig,
  seed: number,
  name = config.rslora ? "rslora" : "lora",
): Adapter & { matrices: LoraMatrix[]; values: Float32Array } {
  const matrices = loraMatrices(model, config);
  const table = buildTable(loraSpecs(matrices, config.r));
  const values = new Float32Array(table.size);
  initLoraA(values, table, matrices, config.r, config.init, seed);
  const params = tensorFrom(gpu, [table.size], values, { label: `${name}.params` });
  const scale = loraScale(config);
  return {
    name,
    table,
    params,
    matrices,
    values,
    attach: (ctx) => loraHooks(gpu, ctx, params, table, matrices, config.r, scale),
  };
}

/**
 * W ← W0 + s·B·A for every adapted matrix, on host copies (table layouts): what evaluation can run
 * without hooks. Returns a new base array.
 */
export function mergeLora(
  baseTable: ParamTable,
  base: Float32Array,
  adapterTable: ParamTable,
  adapter: Float32Array,
  matrices: readonly LoraMatrix[],
  r: number,
  scale: number,
): Float32Array {
  const out = base.slice();
  for (const m of matrices) {
    if (m.site === "lmHead") {
      throw new RangeError("mergeLora: an LM-head LoRA does not merge (wte may be tied)");
    }
    const w = baseTable.byName.get(`h.${m.layer}.${m.site}.w`)!;
    const inDim = w.shape[1];
    const a = adapterTable.byName.get(m.a)!;
    const b = adapterTable.byName.get(m.b)!;
    for (let i = 0; i < m.out; i++) {
      for (let j = 0; j < m.in; j++) {
        let sum = 0;
        for (let k = 0; k < r; k++) sum += adapter[b.offset + i * r + k] * adapter[a.offset + k * m.in + j];
        out[w.offset + (m.offset + i) * inDim + j] += scale * sum;
      }
    }
  }
  return out;
}

function prepareLora(name: string): Method<typeof loraConfigSchema>["prepare"] {
  return (ctx, config) => {
    const adapter = createLoraAdapter(ctx.gpu, ctx.base.config, config, ctx.seed, name);
    const prepared: PreparedMethod = {
      weights: ctx.base,
      adapter,
      trainable: NO_BASE,
      trainableParameters: loraParameterCount(ctx.base.config, config),
      details: { scale: loraScale(config), matrices: adapter.matrices.length },
      destroy: () => adapter.params?.buffer.destroy(),
    };
    return Promise.resolve(prepared);
  };
}

/** LoRA (Hu et al. 2021), s = α/r. */
export const lora: Method<typeof loraConfigSchema> = {
  name: "lora",
  title: "LoRA: low-rank B·A on the chosen linears, s = α/r (PEFT)",
  config: loraConfigSchema,
  parameterCount: loraParameterCount,
  prepare: prepareLora("lora"),
};

const rsloraConfigSchema = loraConfigSchema.extend({ rslora: z.boolean().default(true) });

/** rsLoRA (Kalajdzievski 2023): LoRA with s = α/√r. */
export const rslora: Method<typeof rsloraConfigSchema> = {
  name: "rslora",
  title: "rsLoRA: LoRA with the rank-stabilised scale s = α/√r",
  config: rsloraConfigSchema,
  parameterCount: loraParameterCount,
  prepare: prepareLora("rslora"),
};
