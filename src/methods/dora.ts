/**
 * DoRA, weight-decomposed low-rank adaptation (Liu et al. 2024), as HF PEFT computes it with
 * `use_dora=True` (methods spec §1.2): on each targeted linear W0 (out × in), LoRA's A (r × in) and
 * B (out × r, zero at init) plus a magnitude m (out), and the effective weight
 *
 *   W' = diag(m/n)·(W0 + s·B·A),   n = the row norms ‖W0[i, :] + s·(B·A)[i, :]‖,
 *
 * with n recomputed every forward and detached (no gradient through n; DoRA §4.3). m starts at the
 * row norms of W0 (+ s·B·A with B = 0), so W' = W0 at step 0. The forward is PEFT's:
 *
 *   y = W0·x + b0 + (m/n − 1)⊙(W0·x) + (m/n)⊙(s·B·A·x)        (the bias is not rescaled)
 *
 * The graph's hook sees y after the base product (and, for attnOut, fcProj and down, after the
 * residual was accumulated into it), so the hook recomputes W0·x without bias from the graph's
 * weights rather than subtracting b0 from y as PEFT does; the backward recomputes W0·x and B·A·x
 * again instead of keeping them. n comes from one kernel (kernels/dora.wgsl rowNorm) that sums
 * (W0 + s·B·A)[i, j]² over j in a fixed order without forming B·A, per adapted matrix per forward
 * (r·in·out multiply-adds); m is initialised by that same kernel, and m/n is taken as exactly 1 where
 * m == n, so the model at initialisation reproduces the base logits bit for bit. Scratch per graph:
 * two (B·T, widest d_out) buffers, and a copy of W0's rows for q, k or v blocks whose start inside the
 * fused qkv weight is not a bindable offset (copied before each use, an out × in buffer copy).
 *
 * Gradients, with g = m/n constant: dm = Σ_rows dy⊙((W0 + s·B·A)·x) / n, and the low-rank path sees
 * g⊙dy: z = x·Aᵀ, dB = s·(g⊙dy)ᵀ·z, dz = s·(g⊙dy)·B, dA = dzᵀ·x; dx gains dz·A + ((g − 1)⊙dy)·W0 on
 * top of the base layer's dy·W0. m has the role "weight", so AdamW decays it as HF's Trainer does
 * (it decays every parameter but biases and LayerNorm weights). Dropout is 0 (the harness never uses
 * it), so PEFT's recomputation of W0·x on the dropped-out input does not arise.
 */
import type { Gpu } from "../gpu/device.ts";
import { Recorder } from "../gpu/recorder.ts";
import { createTensor, readF32, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import { type Adapter, type AdapterHooks, type AttachContext, NO_BASE } from "../model/adapter.ts";
import type { ModelConfig } from "../model/config.ts";
import { buildTable, PARAM_ALIGN, type ParamSpec, type ParamTable } from "../model/params.ts";
import { type ModelWeights, view, viewOf } from "../model/weights.ts";
import { doraForward, doraMagnitudeGrad, doraRowNorm, doraScaleGrad } from "../ops/dora.ts";
import { matmul } from "../ops/matmul.ts";
import {
  initLoraA,
  type LoraConfig,
  loraConfigSchema,
  loraMatrices,
  type LoraMatrix,
  loraScale,
  loraSpecs,
  matricesBySite,
} from "./lora.ts";
import type { Method, PreparedMethod } from "./method.ts";

/** DoRA's configuration: LoRA's (r, α, rsLoRA scale, targets, layers, A's init). */
export const doraConfigSchema = loraConfigSchema;
export type DoraConfig = LoraConfig;

/** One adapted matrix: LoRA's A and B plus the name of its magnitude m in the adapter table. */
export interface DoraMatrix extends LoraMatrix {
  m: string;
}

/** Every matrix a DoRA config adapts in a model (tensors named `h.L.<target>.dora.{A,B,m}`). */
export function doraMatrices(model: ModelConfig, config: DoraConfig): DoraMatrix[] {
  return loraMatrices(model, config, "dora").map((m) => ({ ...m, m: `h.${m.layer}.${m.target}.dora.m` }));
}

/** Σ r·(in + out) + out over the adapted matrices (methods spec §10). */
export function doraParameterCount(model: ModelConfig, config: DoraConfig): number {
  return doraMatrices(model, config).reduce((n, m) => n + config.r * (m.in + m.out) + m.out, 0);
}

/** The table specs of A (r × in), B (out × r) and m (out) of every matrix. */
export function doraSpecs(matrices: readonly DoraMatrix[], r: number): ParamSpec[] {
  return matrices.flatMap((m) => [
    ...loraSpecs([m], r),
    { name: m.m, shape: [m.out], role: "weight" as const, layer: m.layer },
  ]);
}

// W0's rows of `m` inside its site weight, as a tensor (its byte offset may not be bindable).
function weightBlock(weights: ModelWeights, m: DoraMatrix): Tensor {
  const e = weights.table.byName.get(`h.${m.layer}.${m.site}.w`);
  if (!e) throw new RangeError(`dora: the model has no tensor h.${m.layer}.${m.site}.w`);
  return {
    buffer: weights.params.buffer,
    offset: weights.params.offset + (e.offset + m.offset * m.in) * 4,
    shape: [m.out, m.in],
    dtype: "f32",
    label: `h.${m.layer}.${m.target} W0`,
  };
}

const bindable = (t: Tensor) => t.offset % (PARAM_ALIGN * 4) === 0;

// One buffer with an f32 slot of `out` elements per matrix, each on a PARAM_ALIGN boundary.
function normSlots(
  gpu: Gpu,
  matrices: readonly DoraMatrix[],
  label: string,
): { all: Tensor; of: (m: DoraMatrix) => Tensor } {
  const offsets = new Map<DoraMatrix, number>();
  let at = 0;
  for (const m of matrices) {
    offsets.set(m, at);
    at += Math.ceil(m.out / PARAM_ALIGN) * PARAM_ALIGN;
  }
  const all = createTensor(gpu, [Math.max(at, 1)], { label });
  return {
    all,
    of: (m) => ({ ...all, offset: offsets.get(m)! * 4, shape: [m.out], label: `${label} ${m.m}` }),
  };
}

/**
 * The DoRA hooks for one graph over `matrices` whose A, B and m live in `params`/`grads` at `table`'s
 * offsets. Scratch is shared by every matrix (the hooks run one after the other); n of each matrix is
 * kept from its forward for its backward (the same step's parameters).
 */
export function doraHooks(
  gpu: Gpu,
  ctx: AttachContext,
  params: Tensor,
  table: ParamTable,
  matrices: readonly DoraMatrix[],
  r: number,
  scale: number,
): AdapterHooks {
  const N = ctx.B * ctx.T;
  const onSite = matricesBySite(matrices);
  const widest = Math.max(1, ...matrices.map((m) => m.out));
  const norms = normSlots(gpu, matrices, "dora.norms");
  const z = createTensor(gpu, [N, r], { label: "dora.z" });
  const dz = createTensor(gpu, [N, r], { label: "dora.dz" });
  // Forward: W0·x and s·B·A·x. Backward: v = (W0 + s·B·A)·x, then g⊙dy and (g − 1)⊙dy over them.
  const first = createTensor(gpu, [N * widest], { label: "dora.base" });
  const second = createTensor(gpu, [N * widest], { label: "dora.lora" });
  // q, k and v blocks of the fused qkv weight may start off a bindable offset: those are copied here.
  const copied = matrices.filter((m) => !bindable(weightBlock(ctx.weights, m)));
  const w0Scratch = createTensor(gpu, [Math.max(1, ...copied.map((m) => m.out * m.in))], {
    label: "dora.w0",
  });
  const at = (flat: Tensor, name: string) => view(flat, table.byName.get(name)!);
  const rows = (t: Tensor, cols: number): Tensor => ({ ...t, shape: [N, cols] });
  const siteWeight = (m: DoraMatrix) =>
    viewOf(ctx.weights.params, ctx.weights.table, `h.${m.layer}.${m.site}.w`);
  const w0 = (rec: Recorder, m: DoraMatrix): Tensor => {
    const block = weightBlock(ctx.weights, m);
    if (bindable(block)) return block;
    const copy = { ...w0Scratch, shape: [m.out, m.in], label: block.label };
    rec.copy(copy, block);
    return copy;
  };
  return {
    async linearForward(rec, site, y, x) {
      for (const m of onSite(site)) {
        const a = at(params, m.a), b = at(params, m.b);
        const n = norms.of(m);
        await doraRowNorm(rec, n, siteWeight(m), a, b, m.offset, scale);
        const base = rows(first, m.out), lora = rows(second, m.out);
        await matmul(rec, base, x, w0(rec, m), { transB: true });
        await matmul(rec, z, x, a, { transB: true });
        await matmul(rec, lora, z, b, { transB: true, alpha: scale });
        await doraForward(rec, y, base, lora, at(params, m.m), n, m.offset);
      }
    },
    async linearBackward(rec, site, dx, dy, x) {
      const grads = ctx.grads!;
      for (const m of onSite(site)) {
        const a = at(params, m.a), b = at(params, m.b);
        const n = norms.of(m);
        const weight = w0(rec, m);
        // dm += Σ_rows dy⊙v / n with v = W0·x + s·(x·Aᵀ)·Bᵀ recomputed.
        const v = rows(first, m.out);
        await matmul(rec, v, x, weight, { transB: true });
        await matmul(rec, z, x, a, { transB: true });
        await matmul(rec, v, z, b, { transB: true, accumulate: true, alpha: scale });
        await doraMagnitudeGrad(rec, at(grads, m.m), dy, v, n, m.offset);
        // v is spent: its buffer takes g⊙dy.
        const dyG = rows(first, m.out), dyG1 = rows(second, m.out);
        await doraScaleGrad(rec, dyG, dyG1, dy, at(params, m.m), n, m.offset);
        // dB += s·dyGᵀ·z; dz = s·dyG·B; dA += dzᵀ·x; dx += dz·A + dyG1·W0.
        await matmul(rec, at(grads, m.b), dyG, z, { transA: true, accumulate: true, alpha: scale });
        await matmul(rec, dz, dyG, b, { alpha: scale });
        await matmul(rec, at(grads, m.a), dz, x, { transA: true, accumulate: true });
        if (dx) {
          await matmul(rec, dx, dz, a, { accumulate: true });
          await matmul(rec, dx, dyG1, weight, { accumulate: true });
        }
      }
    },
    destroy() {
      for (const t of [z, dz, first, second, w0Scratch, norms.all]) t.buffer.destroy();
    },
  };
}

/**
 * A DoRA adapter for `base`: A from `seed` as LoRA draws it, B = 0, and m = the row norms of W0
 * computed on the device by the forward's own kernel (so m/n = 1 exactly at step 0).
 */
export async function createDoraAdapter(
  gpu: Gpu,
  base: ModelWeights,
  config: DoraConfig,
  seed: number,
  name = "dora",
): Promise<Adapter & { matrices: DoraMatrix[]; values: Float32Array }> {
  const matrices = doraMatrices(base.config, config);
  const table = buildTable(doraSpecs(matrices, config.r));
  const host = new Float32Array(table.size);
  initLoraA(host, table, matrices, config.r, config.init, seed);
  const params = tensorFrom(gpu, [table.size], host, { label: `${name}.params` });
  const scale = loraScale(config);
  const norms = normSlots(gpu, matrices, `${name}.init norms`);
  const rec = new Recorder(gpu, `${name} init`);
  const at = (n: string) => view(params, table.byName.get(n)!);
  for (const m of matrices) {
    const w = viewOf(base.params, base.table, `h.${m.layer}.${m.site}.w`);
    await doraRowNorm(rec, norms.of(m), w, at(m.a), at(m.b), m.offset, scale);
    rec.copy(at(m.m), norms.of(m));
  }
  await rec.submit();
  const values = await readF32(gpu, params);
  rec.destroy();
  norms.all.buffer.destroy();
  return {
    name,
    table,
    params,
    matrices,
    values,
    attach: (ctx) => doraHooks(gpu, ctx, params, table, matrices, config.r, scale),
  };
}

/**
 * W ← diag(m/n)·(W0 + s·B·A) for every adapted matrix, n its row norms, on host copies (table
 * layouts), computed in float64 and rounded once: what evaluation can run without hooks. Returns a
 * new base array.
 */
export function mergeDora(
  baseTable: ParamTable,
  base: Float32Array,
  adapterTable: ParamTable,
  adapter: Float32Array,
  matrices: readonly DoraMatrix[],
  r: number,
  scale: number,
): Float32Array {
  const out = base.slice();
  for (const m of matrices) {
    const w = baseTable.byName.get(`h.${m.layer}.${m.site}.w`)!;
    const inDim = w.shape[1];
    const a = adapterTable.byName.get(m.a)!.offset;
    const b = adapterTable.byName.get(m.b)!.offset;
    const mag = adapterTable.byName.get(m.m)!.offset;
    const row = new Float64Array(m.in);
    for (let i = 0; i < m.out; i++) {
      const at = w.offset + (m.offset + i) * inDim;
      let sq = 0;
      for (let j = 0; j < m.in; j++) {
        let ba = 0;
        for (let k = 0; k < r; k++) ba += adapter[b + i * r + k] * adapter[a + k * m.in + j];
        row[j] = base[at + j] + scale * ba;
        sq += row[j] * row[j];
      }
      const g = adapter[mag + i] / Math.sqrt(sq);
      for (let j = 0; j < m.in; j++) out[at + j] = g * row[j];
    }
  }
  return out;
}

/** DoRA (Liu et al. 2024) as PEFT's `use_dora=True`. */
export const dora: Method<typeof doraConfigSchema> = {
  name: "dora",
  title: "DoRA: LoRA plus a per-row magnitude, W' = diag(m/‖W0 + sBA‖)(W0 + sBA) (PEFT use_dora)",
  config: doraConfigSchema,
  parameterCount: doraParameterCount,
  async prepare(ctx, config) {
    const adapter = await createDoraAdapter(ctx.gpu, ctx.base, config, ctx.seed);
    const prepared: PreparedMethod = {
      weights: ctx.base,
      adapter,
      trainable: NO_BASE,
      trainableParameters: doraParameterCount(ctx.base.config, config),
      details: { scale: loraScale(config), matrices: adapter.matrices.length, normDetached: true },
      destroy: () => adapter.params?.buffer.destroy(),
    };
    return prepared;
  },
};
