/**
 * AdamW over a parameter table (kernels/adamw.wgsl), as torch.optim.AdamW computes it (amsgrad off):
 * one params buffer and grads, m, v buffers of the same layout; a table of (offset, size, lrScale,
 * weightDecay) per trainable tensor (frozen tensors are simply absent); one dispatch per step. The
 * per-step values (lr, bias corrections, max norm) sit in a small buffer rewritten with
 * `writeAdamWStep` before each submit, so a recorded step can be replayed. Gradient clipping reads the
 * global ‖g‖² that `reduceFull(…, "sumsq")` leaves on the device: no readback.
 */
import { z } from "zod";
import type { Gpu } from "../gpu/device.ts";
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { createTensor, numel, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import { shapeText } from "./checks.ts";

const WG = 256;
const ELEMS = 4;
/** Elements one workgroup updates; tensors are cut into chunks of this many. */
export const ADAMW_CHUNK = WG * ELEMS;

/** Optimizer hyperparameters (PyTorch's defaults). `lr` is the base rate a schedule scales. */
export const adamwConfigSchema = z.object({
  lr: z.number().nonnegative(),
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.999),
  eps: z.number().positive().default(1e-8),
  /** Decoupled weight decay of table entries that give none. */
  weightDecay: z.number().min(0).default(0.01),
  /** Clip the global gradient norm to this value (torch.nn.utils.clip_grad_norm_); absent: no clipping. */
  maxGradNorm: z.number().positive().optional(),
}).strict();

/** Validated optimizer hyperparameters. */
export type AdamWConfig = z.infer<typeof adamwConfigSchema>;

/** One trainable tensor: its element range in the params/grads/m/v buffers and its own multipliers. */
export const adamwEntrySchema = z.object({
  label: z.string(),
  offset: z.number().int().min(0),
  size: z.number().int().positive(),
  /** Multiplies the step's lr for this tensor (LoRA+ style ratios, per-group rates). Default 1. */
  lrScale: z.number().min(0).default(1),
  /** Decoupled weight decay; the config's when absent. */
  weightDecay: z.number().min(0).optional(),
}).strict();

/** What a caller writes for one table entry. */
export type AdamWEntry = z.input<typeof adamwEntrySchema>;

/** The device copy of a parameter table. */
export interface AdamWTable {
  /** (tensors, 4) u32 words: offset, size, lrScale (f32 bits), weightDecay (f32 bits). */
  table: Tensor;
  /** (chunkCount, 2) u32: tensor index and first element of each workgroup's chunk. */
  chunks: Tensor;
  chunkCount: number;
  /** One past the last element any entry touches; params, grads, m and v must be at least this long. */
  extent: number;
  entries: z.infer<typeof adamwEntrySchema>[];
  /** The hyperparameters the table was built for (default decay; whether steps clip). */
  config: AdamWConfig;
}

/**
 * Uploads a parameter table and its chunk list; entries must not overlap.
 * @example const table = createAdamWTable(gpu, [{ label: "loraA", offset: 0, size: 4096 }], { lr: 1e-4 });
 */
export function createAdamWTable(
  gpu: Gpu,
  entries: readonly AdamWEntry[],
  configInput: z.input<typeof adamwConfigSchema>,
): AdamWTable {
  const config = adamwConfigSchema.parse(configInput);
  if (entries.length === 0) throw new RangeError("createAdamWTable: the table has no trainable tensors");
  const parsed = entries.map((e) => adamwEntrySchema.parse(e));
  const sorted = [...parsed].sort((a, b) => a.offset - b.offset);
  for (let k = 1; k < sorted.length; k++) {
    const prev = sorted[k - 1];
    if (sorted[k].offset < prev.offset + prev.size) {
      throw new RangeError(
        `createAdamWTable: ${sorted[k].label} at [${sorted[k].offset}, ${
          sorted[k].offset + sorted[k].size
        }) ` +
          `overlaps ${prev.label} at [${prev.offset}, ${prev.offset + prev.size})`,
      );
    }
  }
  const extent = Math.max(...parsed.map((e) => e.offset + e.size));
  if (extent > 0xffffffff) throw new RangeError(`createAdamWTable: element ${extent} exceeds u32 indices`);
  const words = new ArrayBuffer(parsed.length * 16);
  const view = new DataView(words);
  const chunkList: number[] = [];
  parsed.forEach((e, k) => {
    view.setUint32(k * 16, e.offset, true);
    view.setUint32(k * 16 + 4, e.size, true);
    view.setFloat32(k * 16 + 8, e.lrScale, true);
    view.setFloat32(k * 16 + 12, e.weightDecay ?? config.weightDecay, true);
    for (let first = 0; first < e.size; first += ADAMW_CHUNK) chunkList.push(k, first);
  });
  const chunkCount = chunkList.length / 2;
  return {
    table: tensorFrom(gpu, [parsed.length, 4], new Uint32Array(words), {
      label: "adamw.table",
      dtype: "u32",
    }),
    chunks: tensorFrom(gpu, [chunkCount, 2], chunkList, { label: "adamw.chunks", dtype: "u32" }),
    chunkCount,
    extent,
    entries: parsed,
    config,
  };
}

/** f32 values in the per-step buffer (kernels/adamw.wgsl `Step`). */
const STEP_VALUES = 9;

/** The (9,) buffer of per-step values; fill it with `writeAdamWStep` before each submit. */
export function createAdamWStep(gpu: Gpu, label = "adamw.step"): Tensor {
  return createTensor(gpu, [STEP_VALUES], { label });
}

/**
 * Writes step t's values for `table`'s config: lr (the scheduled rate, default the config's), β1, β2,
 * 1 − β1, 1 − β2, ε, 1 − β1ᵗ, √(1 − β2ᵗ) and the max norm. The differences are taken in f64: in f32 on
 * the device, 1 − 0.999 would be off by 1.3e-5 relative.
 * @example writeAdamWStep(gpu, stepValues, table, { step: t, lr: schedule(t) });
 */
export function writeAdamWStep(
  gpu: Gpu,
  stepValues: Tensor,
  table: AdamWTable,
  at: { step: number; lr?: number },
): void {
  const config = table.config;
  if (!Number.isInteger(at.step) || at.step < 1) {
    throw new RangeError(`writeAdamWStep: step ${at.step} must be an integer ≥ 1 (PyTorch counts from 1)`);
  }
  if (stepValues.dtype !== "f32" || numel(stepValues.shape) !== STEP_VALUES) {
    throw new RangeError(`writeAdamWStep: ${stepValues.label} must be a (${STEP_VALUES},) f32 tensor`);
  }
  const lr = at.lr ?? config.lr;
  if (!(lr >= 0) || !Number.isFinite(lr)) {
    throw new RangeError(`writeAdamWStep: lr ${lr} must be finite and ≥ 0`);
  }
  const values = new Float32Array([
    lr,
    config.beta1,
    config.beta2,
    1 - config.beta1,
    1 - config.beta2,
    config.eps,
    1 - Math.pow(config.beta1, at.step),
    Math.sqrt(1 - Math.pow(config.beta2, at.step)),
    config.maxGradNorm ?? 0,
  ]);
  gpu.device.queue.writeBuffer(stepValues.buffer, stepValues.offset, values);
}

/**
 * One AdamW step over every tensor of `table`. params, m, v, grads: (total,) f32 in one layout;
 * stepValues: (9,) from `writeAdamWStep`; gradSumSq: (1,) Σ grads² (reduceFull "sumsq") when clipping,
 * scale = min(1, maxNorm/(√gradSumSq + 1e-6)).
 * @example await adamw(rec, params, m, v, grads, table, stepValues, gradSumSq);
 */
export async function adamw(
  rec: Recorder,
  params: Tensor,
  m: Tensor,
  v: Tensor,
  grads: Tensor,
  table: AdamWTable,
  stepValues: Tensor,
  gradSumSq?: Tensor,
): Promise<void> {
  const what = "adamw";
  const named = gradSumSq ? [params, m, v, grads, stepValues, gradSumSq] : [params, m, v, grads, stepValues];
  for (const t of named) {
    if (t.dtype !== "f32") throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected f32`);
  }
  const total = numel(params.shape);
  for (const t of [m, v, grads]) {
    if (numel(t.shape) !== total) {
      throw new RangeError(`${what}: ${shapeText(t)} must have the layout of ${shapeText(params)}`);
    }
  }
  if (total < table.extent) {
    throw new RangeError(
      `${what}: ${shapeText(params)} holds ${total} elements; the table reaches element ${table.extent}`,
    );
  }
  if (numel(stepValues.shape) !== STEP_VALUES) {
    throw new RangeError(`${what}: ${shapeText(stepValues)} must be (${STEP_VALUES},)`);
  }
  if ((gradSumSq === undefined) !== (table.config.maxGradNorm === undefined)) {
    throw new RangeError(
      `${what}: clipping needs both config.maxGradNorm (${table.config.maxGradNorm}) and a gradSumSq tensor ` +
        `(${gradSumSq ? gradSumSq.label : "none given"})`,
    );
  }
  if (gradSumSq && numel(gradSumSq.shape) !== 1) {
    throw new RangeError(`${what}: ${shapeText(gradSumSq)} must hold one element (Σ grads²)`);
  }
  const k = await kernel(rec.gpu, {
    file: "adamw",
    entry: gradSumSq ? "adamwClipped" : "adamw",
    constants: { WG, ELEMS },
  });
  const inputs = [grads, table.table, table.chunks, stepValues];
  rec.dispatch(k, {
    uniforms: [table.chunkCount],
    outputs: [params, m, v],
    inputs: gradSumSq ? [...inputs, gradSumSq] : inputs,
    workgroups: grid1d(rec.gpu, table.chunkCount, 1),
  });
}
