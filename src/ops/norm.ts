/**
 * Launchers for LayerNorm (GPT-2) and RMSNorm (Llama), kernels/norm.wgsl.
 *
 * Rows are normalised by one workgroup each with a fixed reduction tree. The parameter gradients
 * (sums over all N rows) are deterministic without atomics: one dispatch writes per-block partial
 * sums over RB rows to a scratch tensor, a second sums the blocks in ascending order into dw (and
 * db). The scratch is kept per device and size and shared by every call: dispatches run in
 * recording order, and each call writes its partials before it reads them.
 */
import type { Gpu } from "../gpu/device.ts";
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import { f32, type Recorder } from "../gpu/recorder.ts";
import { createTensor, numel, type Tensor } from "../gpu/tensor.ts";

// 32 invocations per row (one NVIDIA warp; C = 768 takes 24 strides). On llvmpipe every doubling of
// the workgroup costs ~1.7× in barrier overhead (N = 2048, C = 768: 87 ms at 32, 270 ms at 128).
const WG = 32;
// Rows per partial block: N = 8192 gives 128 blocks, which the reduce sums in a short loop.
const RB = 64;

function checkSizes(op: string, N: number, C: number): void {
  for (const [name, value] of [["N", N], ["C", C]] as const) {
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(`${op}: ${name} = ${value} must be a positive integer`);
    }
  }
}

function checkTensor(op: string, t: Tensor, what: string, elements: number): void {
  if (t.dtype !== "f32") throw new TypeError(`${op}: ${t.label} is ${t.dtype}, expected f32`);
  if (numel(t.shape) !== elements) {
    throw new RangeError(
      `${op}: ${t.label} has shape [${t.shape.join(", ")}] (${numel(t.shape)} elements), expected ${what} ` +
        `(${elements} elements)`,
    );
  }
}

function checkEps(op: string, eps: number): void {
  if (!(eps > 0 && Number.isFinite(eps))) throw new RangeError(`${op}: eps = ${eps} must be finite and > 0`);
}

const scratches = new WeakMap<GPUDevice, Map<number, Tensor>>();

function partialScratch(gpu: Gpu, elements: number): Tensor {
  let bySize = scratches.get(gpu.device);
  if (!bySize) scratches.set(gpu.device, bySize = new Map());
  let t = bySize.get(elements);
  if (!t) bySize.set(elements, t = createTensor(gpu, [elements], { label: "norm:partials" }));
  return t;
}

/** Options of the norm backwards: add dx into the residual gradient instead of writing it. */
export interface NormBackwardOptions {
  accumulate?: boolean;
}

/**
 * LayerNorm forward: out = (x − mean)·rstd·w + b with the biased variance and eps (default 1e-5, as
 * GPT-2); mean and rstd are saved for the backward.
 * out: (N, C); mean, rstd: (N,); x: (N, C); w, b: (C,).
 */
export async function layernormForward(
  rec: Recorder,
  out: Tensor,
  mean: Tensor,
  rstd: Tensor,
  x: Tensor,
  w: Tensor,
  b: Tensor,
  N: number,
  C: number,
  opts: { eps?: number } = {},
): Promise<void> {
  const op = "layernormForward";
  checkSizes(op, N, C);
  const eps = opts.eps ?? 1e-5;
  checkEps(op, eps);
  checkTensor(op, out, `(N, C) = (${N}, ${C})`, N * C);
  checkTensor(op, mean, `(N,) = (${N},)`, N);
  checkTensor(op, rstd, `(N,) = (${N},)`, N);
  checkTensor(op, x, `(N, C) = (${N}, ${C})`, N * C);
  checkTensor(op, w, `(C,) = (${C},)`, C);
  checkTensor(op, b, `(C,) = (${C},)`, C);
  const k = await kernel(rec.gpu, { file: "norm", entry: "layernormForward", constants: { WG } });
  rec.dispatch(k, {
    uniforms: [N, C, f32(eps), 0],
    outputs: [out, mean, rstd],
    inputs: [x, w, b],
    workgroups: grid1d(rec.gpu, N, 1),
  });
}

/**
 * LayerNorm backward, inverting out = norm·w + b with norm = (x − mean)·rstd: writes dx (or adds to
 * it with `accumulate`) and adds dw += Σ_n dout·norm, db += Σ_n dout, deterministically (per-block
 * partials, then an ordered sum over blocks).
 * dx: (N, C); dw, db: (C,); dout, x: (N, C); w: (C,); mean, rstd: (N,).
 */
export async function layernormBackward(
  rec: Recorder,
  dx: Tensor,
  dw: Tensor,
  db: Tensor,
  dout: Tensor,
  x: Tensor,
  w: Tensor,
  mean: Tensor,
  rstd: Tensor,
  N: number,
  C: number,
  opts: NormBackwardOptions = {},
): Promise<void> {
  const op = "layernormBackward";
  checkSizes(op, N, C);
  checkTensor(op, dx, `(N, C) = (${N}, ${C})`, N * C);
  checkTensor(op, dw, `(C,) = (${C},)`, C);
  checkTensor(op, db, `(C,) = (${C},)`, C);
  checkTensor(op, dout, `(N, C) = (${N}, ${C})`, N * C);
  checkTensor(op, x, `(N, C) = (${N}, ${C})`, N * C);
  checkTensor(op, w, `(C,) = (${C},)`, C);
  checkTensor(op, mean, `(N,) = (${N},)`, N);
  checkTensor(op, rstd, `(N,) = (${N},)`, N);
  const gpu = rec.gpu;
  const NB = Math.ceil(N / RB);
  const uniforms = [N, C, f32(0), NB];
  const rows = await kernel(gpu, {
    file: "norm",
    entry: "layernormBackward",
    constants: { WG, ACCUMULATE: opts.accumulate ? 1 : 0 },
  });
  rec.dispatch(rows, {
    uniforms,
    outputs: [dx],
    inputs: [dout, x, w, mean, rstd],
    workgroups: grid1d(gpu, N, 1),
  });
  const partial = partialScratch(gpu, 2 * NB * C);
  const partialKernel = await kernel(gpu, {
    file: "norm",
    entry: "layernormParamsPartial",
    constants: { WG, RB },
  });
  rec.dispatch(partialKernel, {
    uniforms,
    outputs: [partial],
    inputs: [dout, x, mean, rstd],
    workgroups: grid1d(gpu, NB * C, WG),
  });
  const reduce = await kernel(gpu, { file: "norm", entry: "layernormParamsReduce", constants: { WG } });
  rec.dispatch(reduce, { uniforms, outputs: [dw, db], inputs: [partial], workgroups: grid1d(gpu, C, WG) });
}

/**
 * RMSNorm forward: out = x·rstd·w with rstd = 1/√(mean(x²) + eps); rstd is saved for the backward.
 * eps has no default because models differ (Llama 2 uses 1e-5, others 1e-6).
 * out: (N, C); rstd: (N,); x: (N, C); w: (C,).
 */
export async function rmsnormForward(
  rec: Recorder,
  out: Tensor,
  rstd: Tensor,
  x: Tensor,
  w: Tensor,
  N: number,
  C: number,
  opts: { eps: number },
): Promise<void> {
  const op = "rmsnormForward";
  checkSizes(op, N, C);
  checkEps(op, opts.eps);
  checkTensor(op, out, `(N, C) = (${N}, ${C})`, N * C);
  checkTensor(op, rstd, `(N,) = (${N},)`, N);
  checkTensor(op, x, `(N, C) = (${N}, ${C})`, N * C);
  checkTensor(op, w, `(C,) = (${C},)`, C);
  const k = await kernel(rec.gpu, { file: "norm", entry: "rmsnormForward", constants: { WG } });
  rec.dispatch(k, {
    uniforms: [N, C, f32(opts.eps), 0],
    outputs: [out, rstd],
    inputs: [x, w],
    workgroups: grid1d(rec.gpu, N, 1),
  });
}

/**
 * RMSNorm backward, inverting out = norm·w with norm = x·rstd: writes dx (or adds to it with
 * `accumulate`) and adds dw += Σ_n dout·norm deterministically.
 * dx: (N, C); dw: (C,); dout, x: (N, C); w: (C,); rstd: (N,).
 */
export async function rmsnormBackward(
  rec: Recorder,
  dx: Tensor,
  dw: Tensor,
  dout: Tensor,
  x: Tensor,
  w: Tensor,
  rstd: Tensor,
  N: number,
  C: number,
  opts: NormBackwardOptions = {},
): Promise<void> {
  const op = "rmsnormBackward";
  checkSizes(op, N, C);
  checkTensor(op, dx, `(N, C) = (${N}, ${C})`, N * C);
  checkTensor(op, dw, `(C,) = (${C},)`, C);
  checkTensor(op, dout, `(N, C) = (${N}, ${C})`, N * C);
  checkTensor(op, x, `(N, C) = (${N}, ${C})`, N * C);
  checkTensor(op, w, `(C,) = (${C},)`, C);
  checkTensor(op, rstd, `(N,) = (${N},)`, N);
  const gpu = rec.gpu;
  const NB = Math.ceil(N / RB);
  const uniforms = [N, C, f32(0), NB];
  const rows = await kernel(gpu, {
    file: "norm",
    entry: "rmsnormBackward",
    constants: { WG, ACCUMULATE: opts.accumulate ? 1 : 0 },
  });
  rec.dispatch(rows, {
    uniforms,
    outputs: [dx],
    inputs: [dout, x, w, rstd],
    workgroups: grid1d(gpu, N, 1),
  });
  const partial = partialScratch(gpu, NB * C);
  const partialKernel = await kernel(gpu, {
    file: "norm",
    entry: "rmsnormParamsPartial",
    constants: { WG, RB },
  });
  rec.dispatch(partialKernel, {
    uniforms,
    outputs: [partial],
    inputs: [dout, x, rstd],
    workgroups: grid1d(gpu, NB * C, WG),
  });
  const reduce = await kernel(gpu, { file: "norm", entry: "rmsnormParamsReduce", constants: { WG } });
  rec.dispatch(reduce, { uniforms, outputs: [dw], inputs: [partial], workgroups: grid1d(gpu, C, WG) });
}
