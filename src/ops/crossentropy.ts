/**
 * Launchers for the fused softmax + cross-entropy (kernels/crossentropy.wgsl): per-token losses
 * (−log p[target], also the evaluation log-likelihoods) and dlogits = (softmax − onehot)·weight·gradScale
 * in one kernel, either into their own buffer or over the logits to save an (N, V) buffer; and the
 * deterministic loss sum over tokens.
 */
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import { f32, i32, type Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { reduceFull } from "./reduce.ts";
import { shapeText } from "./checks.ts";

/** The target value that marks a token with no loss and no gradient (PyTorch's and HF's default). */
export const IGNORE_INDEX = -100;

/** Options of a cross-entropy launch. */
export interface CrossEntropyOptions {
  /** Multiplies every gradient, usually 1 / (number of counted tokens). Default 1. */
  gradScale?: number;
  /** Target value of tokens without loss. Default −100. */
  ignoreIndex?: number;
}

/** Threads per row: the smallest power of two ≥ V within [32, 256], so short rows do not idle 256 threads. */
export function crossEntropyWorkgroupSize(V: number): number {
  return Math.min(256, Math.max(32, 2 ** Math.ceil(Math.log2(V))));
}

function requireDtype(what: string, t: Tensor, dtype: Tensor["dtype"]): void {
  if (t.dtype !== dtype) throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected ${dtype}`);
}

function checkRows(what: string, logits: Tensor, targets: Tensor, weights: Tensor, losses: Tensor) {
  requireDtype(what, logits, "f32");
  requireDtype(what, targets, "i32");
  requireDtype(what, weights, "f32");
  requireDtype(what, losses, "f32");
  if (logits.shape.length !== 2) throw new RangeError(`${what}: ${shapeText(logits)} must be (N, V)`);
  const [N, V] = logits.shape;
  for (const t of [targets, weights, losses]) {
    if (t.shape.length !== 1 || t.shape[0] !== N) {
      throw new RangeError(
        `${what}: ${shapeText(t)} must be (N,) with N = ${N} rows of ${shapeText(logits)}`,
      );
    }
  }
  if (N * V > 0xffffffff) {
    throw new RangeError(`${what}: ${shapeText(logits)} has more than 2³² − 1 elements (u32 indices)`);
  }
  return { N, V };
}

function uniforms(what: string, N: number, V: number, opts: CrossEntropyOptions) {
  const gradScale = opts.gradScale ?? 1;
  const ignoreIndex = opts.ignoreIndex ?? IGNORE_INDEX;
  if (!Number.isFinite(gradScale)) throw new RangeError(`${what}: gradScale ${gradScale} must be finite`);
  if (!Number.isInteger(ignoreIndex) || (ignoreIndex >= 0 && ignoreIndex < V)) {
    throw new RangeError(`${what}: ignoreIndex ${ignoreIndex} must be an integer outside 0 … ${V - 1}`);
  }
  return [N, V, f32(gradScale), i32(ignoreIndex)];
}

/**
 * losses[n] = −log softmax(logits[n])[targets[n]] (0 where ignored); dlogits[n] = (softmax(logits[n]) −
 * onehot(targets[n]))·weights[n]·gradScale (0 where ignored). losses: (N,); dlogits, logits: (N, V);
 * targets: (N,) i32; weights: (N,) f32. A target outside [0, V) other than the ignore index gives NaN.
 * @example await crossEntropy(rec, losses, dlogits, logits, targets, weights, { gradScale: 1 / count });
 */
export async function crossEntropy(
  rec: Recorder,
  losses: Tensor,
  dlogits: Tensor,
  logits: Tensor,
  targets: Tensor,
  weights: Tensor,
  opts: CrossEntropyOptions = {},
): Promise<void> {
  const what = "crossEntropy";
  const { N, V } = checkRows(what, logits, targets, weights, losses);
  requireDtype(what, dlogits, "f32");
  if (dlogits.shape.length !== 2 || dlogits.shape[0] !== N || dlogits.shape[1] !== V) {
    throw new RangeError(`${what}: ${shapeText(dlogits)} must have the shape of ${shapeText(logits)}`);
  }
  const WG = crossEntropyWorkgroupSize(V);
  const k = await kernel(rec.gpu, { file: "crossentropy", entry: "crossEntropy", constants: { WG } });
  rec.dispatch(k, {
    uniforms: uniforms(what, N, V, opts),
    outputs: [losses, dlogits],
    inputs: [logits, targets, weights],
    workgroups: grid1d(rec.gpu, N, 1),
  });
}

/**
 * As `crossEntropy`, with dlogits written over the logits (one (N, V) buffer instead of two); the
 * logits are gone afterwards. losses: (N,); logits: (N, V) in, dlogits out; targets: (N,) i32; weights: (N,).
 * @example await crossEntropyInPlace(rec, losses, logits, targets, weights, { gradScale: 1 / count });
 */
export async function crossEntropyInPlace(
  rec: Recorder,
  losses: Tensor,
  logits: Tensor,
  targets: Tensor,
  weights: Tensor,
  opts: CrossEntropyOptions = {},
): Promise<void> {
  const what = "crossEntropyInPlace";
  const { N, V } = checkRows(what, logits, targets, weights, losses);
  if (losses.buffer === logits.buffer) {
    throw new RangeError(`${what}: ${losses.label} and ${logits.label} must be in different GPU buffers`);
  }
  const WG = crossEntropyWorkgroupSize(V);
  const k = await kernel(rec.gpu, { file: "crossentropy", entry: "crossEntropyInPlace", constants: { WG } });
  rec.dispatch(k, {
    uniforms: uniforms(what, N, V, opts),
    outputs: [losses, logits],
    inputs: [targets, weights],
    workgroups: grid1d(rec.gpu, N, 1),
  });
}

/**
 * out[0] = Σₙ losses[n] in a fixed order (reduceFull), so the mean loss (× 1/count on the host) has the
 * same bits on every run. out: (1,); losses: (N,).
 * @example await crossEntropyLossSum(rec, lossSum, losses);
 */
export function crossEntropyLossSum(rec: Recorder, out: Tensor, losses: Tensor): Promise<void> {
  return reduceFull(rec, out, losses, "sum");
}

/**
 * Refuses host-side targets outside [0, V) other than the ignore index, naming the first one; the
 * kernel can only turn them into NaN, so data loaders check here before upload.
 * @example checkTargets("batch.targets", targets, V);
 */
export function checkTargets(
  label: string,
  targets: ArrayLike<number>,
  V: number,
  ignoreIndex = IGNORE_INDEX,
): void {
  for (let n = 0; n < targets.length; n++) {
    const t = targets[n];
    if (t !== ignoreIndex && !(Number.isInteger(t) && t >= 0 && t < V)) {
      throw new RangeError(
        `${label}[${n}] = ${t} is outside the vocabulary 0 … ${
          V - 1
        } (and not the ignore index ${ignoreIndex})`,
      );
    }
  }
}
