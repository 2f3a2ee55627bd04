/**
 * Indexed columns of row-major (rows, W) matrices (kernels/sparse_ffn.wgsl), the pieces of top-k FFN
 * neuron tuning: `gatherColumns` copies the k columns an index list names into a (rows, k) block,
 * `scatterAddColumns` adds such a block back into them, and `columnSaliency` sums |a| or |a·b| down every
 * column (neuron scores over a calibration set). Index lists are u32 tensors of distinct column indices;
 * the launchers check sizes, the caller guarantees distinctness (the kernels would race otherwise).
 */
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import { f32, type Recorder } from "../gpu/recorder.ts";
import { numel, type Tensor } from "../gpu/tensor.ts";

/** Launch options of the indexed-column ops. */
export interface SparseFfnOptions {
  /**
   * Threads per workgroup (default 256). Results do not depend on it; tests use 2 to reach the 2-D grid
   * that more than 65,535 workgroups need.
   */
  workgroupSize?: number;
}

function workgroup(what: string, opts: SparseFfnOptions): number {
  const WG = opts.workgroupSize ?? 256;
  if (!Number.isInteger(WG) || WG < 1 || WG > 256) {
    throw new RangeError(`${what}: workgroupSize ${WG} outside 1..256`);
  }
  return WG;
}
/**
 * Rows one invocation of a column sum walks per dispatch: llvmpipe silently ends an invocation after
 * 65,535 loop iterations, so longer sums run as several accumulating passes (fixed order either way).
 */
export const SALIENCY_ROWS_PER_PASS = 16384;

const describe = (t: Tensor) => `${t.label} [${t.shape.join(", ")}]`;

function checkF32(what: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.dtype !== "f32") throw new TypeError(`${what}: ${describe(t)} is ${t.dtype}, expected f32`);
  }
}

// (rows, W, k) of a wide (rows, W) matrix, a (rows, k) block and a (k,) u32 index list.
function sizes(what: string, wide: Tensor, block: Tensor, index: Tensor): [number, number, number] {
  checkF32(what, wide, block);
  if (index.dtype !== "u32") {
    throw new TypeError(`${what}: index ${describe(index)} is ${index.dtype}, expected u32`);
  }
  if (index.shape.length !== 1 || index.shape[0] < 1) {
    throw new RangeError(`${what}: index ${describe(index)} must be a non-empty (k,) list`);
  }
  const k = index.shape[0];
  const W = wide.shape[wide.shape.length - 1];
  const rows = numel(wide.shape) / W;
  if (block.shape[block.shape.length - 1] !== k || numel(block.shape) !== rows * k) {
    throw new RangeError(
      `${what}: block ${describe(block)} must be (${rows}, ${k}) for ${describe(wide)} and ${k} indices`,
    );
  }
  if (k > W) {
    throw new RangeError(`${what}: ${k} distinct indices cannot fit in ${W} columns of ${describe(wide)}`);
  }
  return [rows, W, k];
}

/**
 * out[n, i] = wide[n, index[i]]. out: (rows, k); wide: (rows, W); index: (k,) u32, each < W.
 * @example await gatherColumns(rec, hiddenSelected, hidden, neuronIndex);
 */
export async function gatherColumns(
  rec: Recorder,
  out: Tensor,
  wide: Tensor,
  index: Tensor,
  opts: SparseFfnOptions = {},
): Promise<void> {
  const [rows, W, k] = sizes("gatherColumns", wide, out, index);
  const WG = workgroup("gatherColumns", opts);
  const kern = await kernel(rec.gpu, { file: "sparse_ffn", entry: "gatherColumns", constants: { WG } });
  rec.dispatch(kern, {
    uniforms: [rows, W, k, f32(1)],
    outputs: [out],
    inputs: [wide, index],
    workgroups: grid1d(rec.gpu, rows * k, WG),
  });
}

/**
 * out[n, index[i]] += α·block[n, i]. out: (rows, W); block: (rows, k); index: (k,) u32, distinct, each < W.
 * @example await scatterAddColumns(rec, fc, deltaSelected, neuronIndex);
 */
export async function scatterAddColumns(
  rec: Recorder,
  out: Tensor,
  block: Tensor,
  index: Tensor,
  alpha = 1,
  opts: SparseFfnOptions = {},
): Promise<void> {
  const [rows, W, k] = sizes("scatterAddColumns", out, block, index);
  const WG = workgroup("scatterAddColumns", opts);
  const kern = await kernel(rec.gpu, { file: "sparse_ffn", entry: "scatterAddColumns", constants: { WG } });
  rec.dispatch(kern, {
    uniforms: [rows, W, k, f32(alpha)],
    outputs: [out],
    inputs: [block, index],
    workgroups: grid1d(rec.gpu, rows * k, WG),
  });
}

/** Options of columnSaliency. */
export interface SaliencyOptions extends SparseFfnOptions {
  /** Add onto `out` instead of overwriting it. */
  accumulate?: boolean;
  /** Rows per dispatch (default SALIENCY_ROWS_PER_PASS); results depend on it in the last bits only. */
  rowsPerPass?: number;
}

/**
 * out[j] (+)= Σ_n |a[n, j]| (without b) or Σ_n |a[n, j]·b[n, j]|, rows in ascending order.
 * out: (W,); a, b: (rows, W).
 * @example await columnSaliency(rec, score, hidden, dHidden, { accumulate: true }); // SNIP-style
 */
export async function columnSaliency(
  rec: Recorder,
  out: Tensor,
  a: Tensor,
  b: Tensor | null,
  opts: SaliencyOptions = {},
): Promise<void> {
  const what = "columnSaliency";
  checkF32(what, out, a, ...(b ? [b] : []));
  const W = a.shape[a.shape.length - 1];
  const rows = numel(a.shape) / W;
  if (numel(out.shape) !== W) {
    throw new RangeError(`${what}: out ${describe(out)} must hold the ${W} columns of ${describe(a)}`);
  }
  if (b && (numel(b.shape) !== rows * W || b.shape[b.shape.length - 1] !== W)) {
    throw new RangeError(`${what}: b ${describe(b)} must have the shape of a ${describe(a)}`);
  }
  const per = opts.rowsPerPass ?? SALIENCY_ROWS_PER_PASS;
  if (!Number.isInteger(per) || per < 1) {
    throw new RangeError(`${what}: rowsPerPass = ${per} must be a positive integer`);
  }
  const WG = workgroup(what, opts);
  const entry = b ? "columnAbsProductSum" : "columnAbsSum";
  const kern = await kernel(rec.gpu, { file: "sparse_ffn", entry, constants: { WG } });
  for (let begin = 0; begin < rows; begin += per) {
    const end = Math.min(rows, begin + per);
    rec.dispatch(kern, {
      uniforms: [W, begin, end, begin > 0 || opts.accumulate ? 1 : 0],
      outputs: [out],
      inputs: b ? [a, b] : [a],
      workgroups: grid1d(rec.gpu, W, WG),
    });
  }
}
