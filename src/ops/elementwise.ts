/**
 * Launchers for elementwise ops on same-shape f32 tensors (kernels/elementwise.wgsl). The first 4·⌊n/4⌋
 * elements go through vec4 loads and stores; the n mod 4 tail, when there is one, through a second
 * one-workgroup dispatch with scalar accesses. Tensors may be sub-ranges of bigger buffers.
 */
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import { f32, type Recorder } from "../gpu/recorder.ts";
import { checkBindable, numel, type Tensor } from "../gpu/tensor.ts";

/** Launch options shared by the elementwise ops. */
export interface ElementwiseOptions {
  /**
   * Threads per workgroup of the vec4 pass (default 256). Results do not depend on it; tests use 2 to
   * reach the 2-D grid that more than 65,535 workgroups need.
   */
  workgroupSize?: number;
}

const shapeText = (t: Tensor) => `[${t.shape.join(", ")}]`;

function sameShape(a: Tensor, b: Tensor): boolean {
  return a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
}

/** The first `n4` vec4s of `t`, bound as their own range. */
function body(t: Tensor, n4: number): Tensor {
  return { ...t, shape: [n4 * 4] };
}

async function launch(
  rec: Recorder,
  what: string,
  entry: "binary" | "scaled" | "fill",
  OP: number | undefined,
  out: Tensor,
  inputs: readonly Tensor[],
  alpha: number,
  opts: ElementwiseOptions,
): Promise<void> {
  const gpu = rec.gpu;
  for (const t of [out, ...inputs]) {
    if (t.dtype !== "f32") throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected f32`);
  }
  for (const t of inputs) {
    if (!sameShape(t, out)) {
      throw new RangeError(
        `${what}: ${t.label} ${shapeText(t)} and ${out.label} ${shapeText(out)} must have the same shape`,
      );
    }
  }
  for (const t of [out, ...inputs]) {
    checkBindable(gpu, `${what}: ${t.label} ${shapeText(t)}`, numel(t.shape) * 4);
    if (t.offset % 16 !== 0) {
      throw new RangeError(
        `${what}: ${t.label} starts at byte offset ${t.offset}, not a multiple of 16 (vec4)`,
      );
    }
  }
  const WG = opts.workgroupSize ?? 256;
  const maxWG = gpu.limits.maxComputeInvocationsPerWorkgroup;
  if (!Number.isInteger(WG) || WG < 1 || WG > Math.min(maxWG, gpu.limits.maxComputeWorkgroupSizeX)) {
    throw new RangeError(`${what}: workgroupSize ${WG} outside 1..${maxWG}`);
  }
  const n = numel(out.shape);
  const n4 = Math.floor(n / 4);
  const ops: Record<string, number> = OP === undefined ? {} : { OP };
  if (n4 > 0) {
    const k = await kernel(gpu, { file: "elementwise", entry, constants: { WG, ...ops } });
    rec.dispatch(k, {
      uniforms: [n4, 0, f32(alpha)],
      outputs: [body(out, n4)],
      inputs: inputs.map((t) => body(t, n4)),
      workgroups: grid1d(gpu, n4, WG),
    });
  }
  if (n > n4 * 4) {
    const k = await kernel(gpu, { file: "elementwise", entry: `${entry}Tail`, constants: ops });
    rec.dispatch(k, { uniforms: [n, n4 * 4, f32(alpha)], outputs: [out], inputs, workgroups: [1] });
  }
}

/**
 * out ← a + b. out, a, b: same shape.
 * @example await add(rec, residual, x, attnOut);
 */
export function add(
  rec: Recorder,
  out: Tensor,
  a: Tensor,
  b: Tensor,
  opts: ElementwiseOptions = {},
): Promise<void> {
  return launch(rec, "add", "binary", 0, out, [a, b], 0, opts);
}

/**
 * out ← a · b (elementwise). out, a, b: same shape.
 * @example await mul(rec, gated, up, gate);
 */
export function mul(
  rec: Recorder,
  out: Tensor,
  a: Tensor,
  b: Tensor,
  opts: ElementwiseOptions = {},
): Promise<void> {
  return launch(rec, "mul", "binary", 1, out, [a, b], 0, opts);
}

/**
 * out ← α·a (α is rounded to f32). out, a: same shape.
 * @example await scale(rec, loraDelta, loraOut, alpha / rank);
 */
export function scale(
  rec: Recorder,
  out: Tensor,
  a: Tensor,
  alpha: number,
  opts: ElementwiseOptions = {},
): Promise<void> {
  return launch(rec, "scale", "scaled", 0, out, [a], alpha, opts);
}

/**
 * out ← out + α·a, in place, through fma (one rounding where the backend fuses it). out, a: same shape, different buffers.
 * @example await axpy(rec, gradAccum, grad, 1 / microBatches);
 */
export function axpy(
  rec: Recorder,
  out: Tensor,
  a: Tensor,
  alpha: number,
  opts: ElementwiseOptions = {},
): Promise<void> {
  return launch(rec, "axpy", "scaled", 1, out, [a], alpha, opts);
}

/**
 * out ← value everywhere. out: any shape.
 * @example await fill(rec, grads, 0);
 */
export function fill(
  rec: Recorder,
  out: Tensor,
  value: number,
  opts: ElementwiseOptions = {},
): Promise<void> {
  return launch(rec, "fill", "fill", undefined, out, [], value, opts);
}
