/**
 * Plain SGD with per-tensor gradient-norm clipping over a table of tensors (kernels/sgd.wgsl), as
 * FocuSFT's inner loop updates its fast weights: for each tensor k on its own,
 *   g_k ← g_k · c/(‖g_k‖ + 1e-12) when ‖g_k‖ > c,   p_k ← p_k − lr·g_k.
 * Three dispatches, whatever the number of tensors: chunk partial sums of g², per-tensor sums, update.
 * Each ‖g_k‖² is summed in a fixed order that depends only on the table (64 lanes × 16 elements per
 * chunk, a 64-wide tree, then the chunks of the tensor), and stays readable in `table.sumSq`.
 */
import type { Gpu } from "../gpu/device.ts";
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import { f32, type Recorder } from "../gpu/recorder.ts";
import { createTensor, numel, type Tensor, tensorFrom } from "../gpu/tensor.ts";

const WG = 64;
const ELEMS = 16;
/** Elements one workgroup reduces or updates; tensors are cut into chunks of this many. */
export const SGD_CHUNK = WG * ELEMS;

/** One tensor of the table: its element range in the params and grads buffers. */
export interface SgdEntry {
  label: string;
  offset: number;
  size: number;
}

/** The device copy of an SGD table and its scratch. */
export interface SgdTable {
  /** (tensors, 4) u32: offset, size, first chunk, chunk count. */
  table: Tensor;
  /** (chunkCount, 2) u32: tensor index and first element of each chunk. */
  chunks: Tensor;
  chunkCount: number;
  /** (chunkCount,) f32 partial sums of squares. */
  partials: Tensor;
  /** (tensors,) f32 Σ g² per tensor, written by every `sgdClipped`. */
  sumSq: Tensor;
  /** One past the last element any entry touches. */
  extent: number;
  entries: readonly SgdEntry[];
}

/**
 * Uploads a table of non-overlapping tensors and allocates its scratch.
 * @example const table = createSgdTable(gpu, [{ label: "A", offset: 0, size: 4096 }]);
 */
export function createSgdTable(gpu: Gpu, entries: readonly SgdEntry[]): SgdTable {
  if (entries.length === 0) throw new RangeError("createSgdTable: the table has no tensors");
  for (const e of entries) {
    if (!Number.isInteger(e.offset) || e.offset < 0 || !Number.isInteger(e.size) || e.size < 1) {
      throw new RangeError(`createSgdTable: ${e.label} has offset ${e.offset} and size ${e.size}`);
    }
  }
  const sorted = [...entries].sort((a, b) => a.offset - b.offset);
  for (let k = 1; k < sorted.length; k++) {
    const prev = sorted[k - 1];
    if (sorted[k].offset < prev.offset + prev.size) {
      throw new RangeError(`createSgdTable: ${sorted[k].label} overlaps ${prev.label}`);
    }
  }
  const extent = Math.max(...entries.map((e) => e.offset + e.size));
  if (extent > 0xffffffff) throw new RangeError(`createSgdTable: element ${extent} exceeds u32 indices`);
  const words: number[] = [];
  const chunkList: number[] = [];
  entries.forEach((e, k) => {
    const first = chunkList.length / 2;
    for (let at = 0; at < e.size; at += SGD_CHUNK) chunkList.push(k, at);
    words.push(e.offset, e.size, first, chunkList.length / 2 - first);
  });
  const chunkCount = chunkList.length / 2;
  return {
    table: tensorFrom(gpu, [entries.length, 4], words, { label: "sgd.table", dtype: "u32" }),
    chunks: tensorFrom(gpu, [chunkCount, 2], chunkList, { label: "sgd.chunks", dtype: "u32" }),
    chunkCount,
    partials: createTensor(gpu, [chunkCount], { label: "sgd.partials" }),
    sumSq: createTensor(gpu, [entries.length], { label: "sgd.sumSq" }),
    extent,
    entries: entries.map((e) => ({ ...e })),
  };
}

/** Frees a table's device buffers. */
export function destroySgdTable(table: SgdTable): void {
  for (const t of [table.table, table.chunks, table.partials, table.sumSq]) t.buffer.destroy();
}

/** Step size and clipping of `sgdClipped`. */
export interface SgdOptions {
  lr: number;
  /** Per-tensor gradient-norm bound c; 0 disables clipping. */
  maxNorm: number;
}

/**
 * One SGD step with per-tensor clipping over every tensor of `table`. params, grads: (total,) f32 in
 * one layout (different buffers). Leaves Σ g² of each tensor in `table.sumSq`; a tensor whose Σ g² is
 * not finite is not updated.
 * @example await sgdClipped(rec, fastParams, fastGrads, table, { lr: 1, maxNorm: 1 });
 */
export async function sgdClipped(
  rec: Recorder,
  params: Tensor,
  grads: Tensor,
  table: SgdTable,
  opts: SgdOptions,
): Promise<void> {
  const what = "sgdClipped";
  for (const t of [params, grads]) {
    if (t.dtype !== "f32") throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected f32`);
    if (numel(t.shape) < table.extent) {
      throw new RangeError(
        `${what}: ${t.label} holds ${numel(t.shape)} elements; the table reaches element ${table.extent}`,
      );
    }
  }
  if (numel(params.shape) !== numel(grads.shape)) {
    throw new RangeError(`${what}: ${grads.label} must have the layout of ${params.label}`);
  }
  if (!(opts.lr >= 0) || !Number.isFinite(opts.lr)) {
    throw new RangeError(`${what}: lr ${opts.lr} must be ≥ 0`);
  }
  if (!(opts.maxNorm >= 0) || !Number.isFinite(opts.maxNorm)) {
    throw new RangeError(`${what}: maxNorm ${opts.maxNorm} must be ≥ 0 (0: no clipping)`);
  }
  const gpu = rec.gpu;
  const tensors = table.entries.length;
  const uniforms = [table.chunkCount, tensors, f32(opts.lr), f32(opts.maxNorm)];
  const constants = { WG, ELEMS };
  const partial = await kernel(gpu, { file: "sgd", entry: "sumSqPartials", constants });
  rec.dispatch(partial, {
    uniforms,
    outputs: [table.partials],
    inputs: [grads, table.table, table.chunks],
    workgroups: grid1d(gpu, table.chunkCount, 1),
  });
  const perTensor = await kernel(gpu, { file: "sgd", entry: "sumSqTensors", constants });
  rec.dispatch(perTensor, {
    uniforms,
    outputs: [table.sumSq],
    inputs: [table.partials, table.table],
    workgroups: grid1d(gpu, tensors, 1),
  });
  const update = await kernel(gpu, { file: "sgd", entry: "sgdClipped", constants });
  rec.dispatch(update, {
    uniforms,
    outputs: [params],
    inputs: [grads, table.sumSq, table.table, table.chunks],
    workgroups: grid1d(gpu, table.chunkCount, 1),
  });
}
