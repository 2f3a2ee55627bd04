/**
 * DoRA's kernels (kernels/dora.wgsl): the row norms n of W0 + s·B·A without forming B·A, the forward
 * y[:, block] += (m/n − 1)⊙(W0·x) + (m/n)⊙(s·B·A·x), and the backward's two pieces with n held
 * constant (DoRA §4.3): dy scaled by m/n and by m/n − 1, and the magnitude gradient
 * dm += Σ_rows dy⊙v / n with v = (W0 + s·B·A)·x. Every sum runs in a fixed order; m/n is exactly 1
 * where m == n.
 */
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import { f32, type Recorder } from "../gpu/recorder.ts";
import { numel, type Tensor } from "../gpu/tensor.ts";

const NORM_WG = 64;
const EW_WG = 256;
const MAG_COLS = 16;
const MAG_LANES = 16;
// llvmpipe silently stops a loop after 65,535 iterations (see ops/reduce.ts), so no thread may need more.
const MAX_LOOP = 65535;

const shapeText = (t: Tensor) => `${t.label} [${t.shape.join(", ")}]`;

function requireF32(what: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.dtype !== "f32") throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected f32`);
  }
}

function requireShape(what: string, t: Tensor, want: readonly number[]): void {
  if (numel(t.shape) !== numel(want) || t.shape[t.shape.length - 1] !== want[want.length - 1]) {
    throw new RangeError(`${what}: ${shapeText(t)} must be [${want.join(", ")}]`);
  }
}

/**
 * norms[i] = ‖W[rowOffset + i, :] + s·(B·A)[i, :]‖ for the `rows` rows of B. norms: (rows,);
 * w: (≥ rowOffset + rows, cols), the whole site weight (q, k, v are row blocks of the fused qkv);
 * a: (R, cols); b: (rows, R). One workgroup per row.
 * @example await doraRowNorm(rec, n, qkvW, loraA, loraB, kOffset, scale);
 */
export async function doraRowNorm(
  rec: Recorder,
  norms: Tensor,
  w: Tensor,
  a: Tensor,
  b: Tensor,
  rowOffset: number,
  scale: number,
): Promise<void> {
  const what = "doraRowNorm";
  requireF32(what, norms, w, a, b);
  if (w.shape.length !== 2 || a.shape.length !== 2 || b.shape.length !== 2) {
    throw new RangeError(`${what}: ${shapeText(w)}, ${shapeText(a)} and ${shapeText(b)} must be matrices`);
  }
  const [R, cols] = a.shape;
  const rows = b.shape[0];
  if (b.shape[1] !== R) {
    throw new RangeError(`${what}: ${shapeText(b)} must be [rows, ${R}] for ${shapeText(a)}`);
  }
  if (w.shape[1] !== cols) {
    throw new RangeError(`${what}: ${shapeText(w)} must have the ${cols} columns of ${shapeText(a)}`);
  }
  if (!Number.isInteger(rowOffset) || rowOffset < 0 || rowOffset + rows > w.shape[0]) {
    throw new RangeError(`${what}: rows [${rowOffset}, ${rowOffset + rows}) do not fit in ${shapeText(w)}`);
  }
  requireShape(what, norms, [rows]);
  if (!Number.isFinite(scale)) throw new RangeError(`${what}: scale ${scale} must be finite`);
  if (Math.ceil(cols / NORM_WG) > MAX_LOOP) {
    throw new RangeError(`${what}: ${cols} columns need more than ${MAX_LOOP} loop iterations per thread`);
  }
  const k = await kernel(rec.gpu, { file: "dora", entry: "rowNorm", constants: { WG: NORM_WG } });
  rec.dispatch(k, {
    uniforms: [rows, cols, R, rowOffset, f32(scale)],
    outputs: [norms],
    inputs: [w, a, b],
    workgroups: grid1d(rec.gpu, rows, 1),
  });
}

// Rows N, wide W and narrow w of a (N, W) site tensor and its (N, w) block at column `off`.
function columnDims(what: string, wide: Tensor, block: Tensor, off: number): [number, number, number] {
  const W = wide.shape[wide.shape.length - 1];
  const w = block.shape[block.shape.length - 1];
  const N = numel(wide.shape) / W;
  if (numel(block.shape) !== N * w) {
    throw new RangeError(`${what}: ${shapeText(block)} must have the ${N} rows of ${shapeText(wide)}`);
  }
  if (!Number.isInteger(off) || off < 0 || off + w > W) {
    throw new RangeError(`${what}: columns [${off}, ${off + w}) do not fit in ${shapeText(wide)}`);
  }
  return [N, W, w];
}

/**
 * y[:, off + j] += (g_j − 1)·base[:, j] + g_j·lora[:, j], g = m/n. y: (N, W); base, lora: (N, w);
 * m, norms: (w,).
 * @example await doraForward(rec, qkv, base, lora, magnitude, norms, kOffset);
 */
export async function doraForward(
  rec: Recorder,
  y: Tensor,
  base: Tensor,
  lora: Tensor,
  m: Tensor,
  norms: Tensor,
  off: number,
): Promise<void> {
  const what = "doraForward";
  requireF32(what, y, base, lora, m, norms);
  const [N, W, w] = columnDims(what, y, base, off);
  requireShape(what, lora, [N, w]);
  requireShape(what, m, [w]);
  requireShape(what, norms, [w]);
  const k = await kernel(rec.gpu, { file: "dora", entry: "forward", constants: { EW_WG } });
  rec.dispatch(k, {
    uniforms: [N, W, w, off],
    outputs: [y],
    inputs: [base, lora, m, norms],
    workgroups: grid1d(rec.gpu, N * w, EW_WG),
  });
}

/**
 * dyG = g⊙dy[:, off : off + w] and dyG1 = (g − 1)⊙dy[:, off : off + w], g = m/n. dyG, dyG1: (N, w);
 * dy: (N, W); m, norms: (w,).
 * @example await doraScaleGrad(rec, dyG, dyG1, dqkv, magnitude, norms, kOffset);
 */
export async function doraScaleGrad(
  rec: Recorder,
  dyG: Tensor,
  dyG1: Tensor,
  dy: Tensor,
  m: Tensor,
  norms: Tensor,
  off: number,
): Promise<void> {
  const what = "doraScaleGrad";
  requireF32(what, dyG, dyG1, dy, m, norms);
  const [N, W, w] = columnDims(what, dy, dyG, off);
  requireShape(what, dyG1, [N, w]);
  requireShape(what, m, [w]);
  requireShape(what, norms, [w]);
  const k = await kernel(rec.gpu, { file: "dora", entry: "scaleGrad", constants: { EW_WG } });
  rec.dispatch(k, {
    uniforms: [N, W, w, off],
    outputs: [dyG, dyG1],
    inputs: [dy, m, norms],
    workgroups: grid1d(rec.gpu, N * w, EW_WG),
  });
}

/**
 * dm[j] += (Σ_n dy[n, off + j]·v[n, j]) / norms[j]. dm, norms: (w,); dy: (N, W); v: (N, w).
 * @example await doraMagnitudeGrad(rec, dm, dqkv, v, norms, kOffset);
 */
export async function doraMagnitudeGrad(
  rec: Recorder,
  dm: Tensor,
  dy: Tensor,
  v: Tensor,
  norms: Tensor,
  off: number,
): Promise<void> {
  const what = "doraMagnitudeGrad";
  requireF32(what, dm, dy, v, norms);
  const [N, W, w] = columnDims(what, dy, v, off);
  requireShape(what, dm, [w]);
  requireShape(what, norms, [w]);
  if (Math.ceil(N / MAG_LANES) > MAX_LOOP) {
    throw new RangeError(`${what}: ${N} rows need more than ${MAX_LOOP} loop iterations per thread`);
  }
  const k = await kernel(rec.gpu, { file: "dora", entry: "magnitudeGrad" });
  rec.dispatch(k, {
    uniforms: [N, W, w, off],
    outputs: [dm],
    inputs: [dy, v, norms],
    workgroups: grid1d(rec.gpu, Math.ceil(w / MAG_COLS), 1),
  });
}
