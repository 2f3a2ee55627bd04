/**
 * Launchers for deterministic reductions (kernels/reduce.wgsl): row reductions over the last dimension and a
 * full reduction (sum or sum of squares, e.g. the global gradient norm) whose tree depends only on the size.
 */
import type { Gpu } from "../gpu/device.ts";
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { createTensor, numel, type Tensor } from "../gpu/tensor.ts";

/** What a row reduction computes over each row. */
export type RowReduceOp = "sum" | "max" | "mean";
/** What a full reduction computes over all elements. */
export type FullReduceOp = "sum" | "sumsq";

const rowOps: Record<RowReduceOp, number> = { sum: 0, max: 1, mean: 2 };
const fullOps: Record<FullReduceOp, number> = { sum: 0, sumsq: 1 };

const shapeText = (t: Tensor) => `[${t.shape.join(", ")}]`;

function requireF32(what: string, t: Tensor): void {
  if (t.dtype !== "f32") throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected f32`);
}

/**
 * Threads per row. A software rasterizer pays per barrier and per invocation, so it gets 32 (30× faster than
 * 256 on llvmpipe at C = 1024); a GPU gets one thread per ~16 columns, a power of two in [32, 256]. The
 * result's bits depend on it, so it is a function of the adapter kind and C alone.
 */
export function rowReduceWorkgroupSize(gpu: Gpu, C: number): number {
  if (gpu.software) return 32;
  return Math.min(256, Math.max(32, 2 ** Math.ceil(Math.log2(Math.ceil(C / 16)))));
}

/** Launch options of rowReduce. */
export interface RowReduceOptions {
  /** Threads per row, a power of two in [32, 256] (default rowReduceWorkgroupSize); tests pin it. */
  workgroupSize?: number;
}

/**
 * out[n] ← sum, max or mean of x[n, :]. out: (N,) or any shape of N elements; x: (…, C) with N rows. One
 * workgroup per row (a 2-D grid past 65,535 rows); each thread reduces the columns t, t + WG, … in order,
 * then a fixed shared-memory tree.
 * @example await rowReduce(rec, rowMax, logits, "max");
 */
export async function rowReduce(
  rec: Recorder,
  out: Tensor,
  x: Tensor,
  op: RowReduceOp,
  opts: RowReduceOptions = {},
): Promise<void> {
  const gpu = rec.gpu;
  const what = `rowReduce(${op})`;
  if (!(op in rowOps)) throw new RangeError(`${what}: op must be "sum", "max" or "mean"`);
  requireF32(what, out);
  requireF32(what, x);
  if (x.shape.length < 1) throw new RangeError(`${what}: ${x.label} needs at least one dimension`);
  const C = x.shape[x.shape.length - 1];
  const N = numel(x.shape) / C;
  if (numel(out.shape) !== N) {
    const rows = `${x.label} ${shapeText(x)} has ${N} rows`;
    throw new RangeError(`${what}: ${out.label} ${shapeText(out)} must hold one value per row; ${rows}`);
  }
  const WG = opts.workgroupSize ?? rowReduceWorkgroupSize(gpu, C);
  if (!Number.isInteger(Math.log2(WG)) || WG < 32 || WG > 256) {
    throw new RangeError(`${what}: workgroupSize ${WG} is not a power of two in [32, 256]`);
  }
  // llvmpipe silently stops a loop after 65,535 iterations (measured), so no thread may need more.
  if (Math.ceil(C / WG) > 65536) {
    const loops = `${WG} threads per row would each loop more than 65,535 times, the most some drivers run`;
    throw new RangeError(
      `${what}: ${x.label} ${shapeText(x)} has C = ${C} columns; ${loops} (at most ${65536 * WG} columns)`,
    );
  }
  const k = await kernel(gpu, { file: "reduce", entry: "rowReduce", constants: { WG, OP: rowOps[op] } });
  rec.dispatch(k, { uniforms: [N, C], outputs: [out], inputs: [x], workgroups: grid1d(gpu, N, 1) });
}

// 64 threads × 32 vec4s: 4–6× faster on llvmpipe than 256 × 8 (fewer barriers per element), and still 32
// independent loads in flight per GPU thread. Fixed on every device, so the bits depend on numel(x) alone.
const FULL_WG = 64;
const FULL_K = 32;
/** Elements each partialSums workgroup reduces; a multiple of every offset alignment WebGPU allows. */
const ELEMENTS_PER_GROUP = FULL_WG * FULL_K * 4;

/** Length of the scratch tensor reduceFull needs for `n` elements (one partial per 8192 elements, ≥ 1). */
export function reduceFullScratchSize(n: number): number {
  return Math.max(1, Math.ceil(Math.floor(n / 4) * 4 / ELEMENTS_PER_GROUP));
}

const scratchCache = new WeakMap<GPUDevice, Map<number, Tensor>>();

function cachedScratch(gpu: Gpu, size: number): Tensor {
  let bySize = scratchCache.get(gpu.device);
  if (!bySize) scratchCache.set(gpu.device, bySize = new Map());
  let t = bySize.get(size);
  if (!t) bySize.set(size, t = createTensor(gpu, [size], { label: `reduceFull partials (${size})` }));
  return t;
}

/** Options of reduceFull beyond its scratch tensor. */
export interface ReduceFullOptions {
  /**
   * Caps the bytes of x bound per dispatch (default: the device's maxStorageBufferBindingSize), so x may
   * exceed one binding. The result's bits do not depend on it.
   */
  maxBindingBytes?: number;
}

/**
 * out[0] ← Σ x or Σ x², in an order fixed by numel(x) alone. out: (1,); x: any shape, possibly a
 * sub-range of a bigger buffer. Workgroup g sums elements [8192·g, 8192·(g+1)) into a partial (vec4 lanes,
 * then a 64-wide tree); one workgroup sums the partials in a fixed tree and adds the n mod 4 tail last.
 * `scratch` (f32, ≥ reduceFullScratchSize(numel(x)) elements, not in x's buffer) holds the partials; when
 * omitted one is allocated and cached per device and size, so reductions of one size share it in order.
 * @example await reduceFull(rec, gradNormSq, gradTable, "sumsq");
 */
export async function reduceFull(
  rec: Recorder,
  out: Tensor,
  x: Tensor,
  op: FullReduceOp,
  scratch?: Tensor,
  opts: ReduceFullOptions = {},
): Promise<void> {
  const gpu = rec.gpu;
  const what = `reduceFull(${op})`;
  if (!(op in fullOps)) throw new RangeError(`${what}: op must be "sum" or "sumsq"`);
  requireF32(what, out);
  requireF32(what, x);
  if (numel(out.shape) !== 1) {
    throw new RangeError(`${what}: ${out.label} ${shapeText(out)} must hold exactly one element`);
  }
  const n = numel(x.shape);
  const groupsTotal = reduceFullScratchSize(n);
  const partials = scratch ?? cachedScratch(gpu, groupsTotal);
  if (scratch) {
    requireF32(what, scratch);
    if (numel(scratch.shape) < groupsTotal) {
      throw new RangeError(
        `${what}: scratch ${scratch.label} ${shapeText(scratch)} holds ${numel(scratch.shape)} partials; ` +
          `${x.label} ${shapeText(x)} needs ${groupsTotal}`,
      );
    }
    if (scratch.buffer === x.buffer) {
      throw new RangeError(`${what}: scratch ${scratch.label} must not share a GPU buffer with ${x.label}`);
    }
  }
  if (x.offset % 16 !== 0) {
    throw new RangeError(
      `${what}: ${x.label} starts at byte offset ${x.offset}, not a multiple of 16 (vec4)`,
    );
  }
  const OP = fullOps[op];
  const n4 = Math.floor(n / 4);
  if (n4 > 0) {
    const limit = opts.maxBindingBytes ?? gpu.limits.maxStorageBufferBindingSize;
    const groupsPerChunk = Math.floor(limit / (ELEMENTS_PER_GROUP * 4));
    if (groupsPerChunk < 1) {
      throw new RangeError(
        `${what}: maxBindingBytes ${limit} is below one workgroup's ${ELEMENTS_PER_GROUP * 4}`,
      );
    }
    const k = await kernel(gpu, {
      file: "reduce",
      entry: "partialSums",
      constants: { WG: FULL_WG, K: FULL_K, OP },
    });
    const chunkVec4s = groupsPerChunk * ELEMENTS_PER_GROUP / 4;
    for (let first = 0, groupBase = 0; first < n4; first += chunkVec4s, groupBase += groupsPerChunk) {
      const count = Math.min(chunkVec4s, n4 - first);
      const groups = Math.ceil(count * 4 / ELEMENTS_PER_GROUP);
      const view: Tensor = { ...x, offset: x.offset + first * 16, shape: [count * 4], label: x.label };
      rec.dispatch(k, {
        uniforms: [groups, groupBase, count],
        outputs: [partials],
        inputs: [view],
        workgroups: grid1d(gpu, groups, 1),
      });
    }
  }
  // The tail is bound from the last aligned offset before it, so x itself may exceed one binding.
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const tailFirst = Math.min(n4 * 4, n - 1);
  const viewStart = Math.floor((x.offset + tailFirst * 4) / align) * align;
  const tailView: Tensor = {
    ...x,
    offset: viewStart,
    shape: [(x.offset + n * 4 - viewStart) / 4],
    label: `${x.label} tail`,
  };
  const k = await kernel(gpu, { file: "reduce", entry: "finalSum", constants: { WG: FULL_WG, OP } });
  rec.dispatch(k, {
    uniforms: [n4 > 0 ? groupsTotal : 0, (x.offset + n4 * 16 - viewStart) / 4, n - n4 * 4],
    outputs: [out],
    inputs: [partials, tailView],
    workgroups: [1],
  });
}
