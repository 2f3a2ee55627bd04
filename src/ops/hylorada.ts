/**
 * Launchers for HyLoRADA's kernels (kernels/hylorada.wgsl; methods spec §3.2, §3.3):
 *
 * - the position bias s(p) = 1 + σ(w)·tanh(b[bucket(p)]), bucket(p) = min(⌊log2(p + 1)⌋, 63), which
 *   scales an adapter's rank-R activation rows by their absolute position, and its backward into the
 *   64 shared buckets and the module's w (per-chunk bucket sums in row order, then the chunks in order);
 * - the landmark mix's pieces that are not matmuls: per-sequence column sums, a broadcast add over
 *   each sequence's rows, the gate softmax and its backward (with dα).
 *
 * `bw` is the adapter's (64 + W,) slice [b; w_0 … w_{W−1}] (W = 1 for a global w), bound as one range.
 */
import type { Gpu } from "../gpu/device.ts";
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import { f32, type Recorder } from "../gpu/recorder.ts";
import { createTensor, numel, type Tensor, tensorFrom } from "../gpu/tensor.ts";

/** Buckets of the position bias (b ∈ R^64). */
export const POSITION_BUCKETS = 64;
/** Rows per workgroup of the bucket-gradient pass. */
const GRAD_ROWS = 64;
/** Rows per chunk of the per-sequence sums. */
const SEQ_CHUNK = 256;
const WG = 64;
// Thread loops stay below 65,535 iterations (some drivers stop longer loops).
const MAX_LOOP = 65535;

/**
 * bucket(p) = min(⌊log2(p + 1)⌋, 63), exactly (integer bit length). The host twin of the kernels'.
 * @example positionBucket(0) === 0; positionBucket(7) === 3;
 */
export function positionBucket(p: number): number {
  if (!Number.isInteger(p) || p < 0 || p > 0xfffffffe) {
    throw new RangeError(`position ${p} is not a u32 < 2³²−1`);
  }
  return Math.min(31 - Math.clz32(p + 1), POSITION_BUCKETS - 1);
}

const shapeText = (t: Tensor) => `${t.label} [${t.shape.join(", ")}]`;

function requireType(what: string, t: Tensor, dtype: Tensor["dtype"]): void {
  if (t.dtype !== dtype) throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected ${dtype}`);
}

function requireSize(what: string, t: Tensor, n: number, role: string): void {
  if (numel(t.shape) !== n) {
    throw new RangeError(`${what}: ${shapeText(t)} must hold ${n} values (${role})`);
  }
}

// N, R of an (N, R) activation and the checked w index of a bw slice.
function positionSizes(
  what: string,
  x: Tensor,
  positions: Tensor,
  bw: Tensor,
  slot: number,
): [number, number] {
  requireType(what, x, "f32");
  requireType(what, positions, "u32");
  requireType(what, bw, "f32");
  if (x.shape.length !== 2) throw new RangeError(`${what}: ${shapeText(x)} must be (N, R)`);
  const [N, R] = x.shape;
  requireSize(what, positions, N, "one position per row");
  const W = numel(bw.shape) - POSITION_BUCKETS;
  if (W < 1) throw new RangeError(`${what}: ${shapeText(bw)} must hold 64 buckets then at least one w`);
  if (!Number.isInteger(slot) || slot < 0 || slot >= W) {
    throw new RangeError(`${what}: w slot ${slot} outside the ${W} of ${shapeText(bw)}`);
  }
  return [N, R];
}

/**
 * out (N, R) = s(p_n)·x (N, R): the position bias on an adapter's activation rows.
 * positions: (N,) u32; bw: (64 + W,) [b; w]; `slot` picks this module's w.
 * @example await positionScale(rec, u, z, ctx.positions, bw, 0);
 */
export async function positionScale(
  rec: Recorder,
  out: Tensor,
  x: Tensor,
  positions: Tensor,
  bw: Tensor,
  slot: number,
): Promise<void> {
  const [N, R] = positionSizes("positionScale", x, positions, bw, slot);
  requireType("positionScale", out, "f32");
  requireSize("positionScale", out, N * R, `the (N, R) = (${N}, ${R}) rows of ${x.label}`);
  const k = await kernel(rec.gpu, { file: "hylorada", entry: "positionScale", constants: { WG } });
  rec.dispatch(k, {
    uniforms: [N, R, POSITION_BUCKETS + slot],
    outputs: [out],
    inputs: [x, positions, bw],
    workgroups: grid1d(rec.gpu, N * R, WG),
  });
}

/** Scratch of positionScaleBackward for N rows: (⌈N/64⌉, 65) partial sums. */
export function positionGradScratch(gpu: Gpu, N: number): Tensor {
  return createTensor(gpu, [Math.ceil(N / GRAD_ROWS), POSITION_BUCKETS + 1], {
    label: "positionGrad.partial",
  });
}

/**
 * dbw (64 + W,) += the gradient of u = s(p)·z with respect to b (all 64 buckets) and to w[slot], given
 * du (N, R) and z (N, R). (The input gradient dz = s(p)·du is `positionScale` on du.) Per chunk of 64
 * rows, each bucket's terms are summed in row order; then the chunks in order: no atomics.
 * @example await positionScaleBackward(rec, dbw, partial, du, z, ctx.positions, bw, 0);
 */
export async function positionScaleBackward(
  rec: Recorder,
  dbw: Tensor,
  partial: Tensor,
  du: Tensor,
  z: Tensor,
  positions: Tensor,
  bw: Tensor,
  slot: number,
): Promise<void> {
  const what = "positionScaleBackward";
  const [N, R] = positionSizes(what, z, positions, bw, slot);
  requireType(what, du, "f32");
  requireType(what, dbw, "f32");
  requireType(what, partial, "f32");
  requireSize(what, du, N * R, `the shape of ${z.label}`);
  requireSize(what, dbw, numel(bw.shape), `the shape of ${bw.label}`);
  const chunks = Math.ceil(N / GRAD_ROWS);
  if (numel(partial.shape) < chunks * (POSITION_BUCKETS + 1)) {
    throw new RangeError(
      `${what}: scratch ${shapeText(partial)} needs (${chunks}, 65); see positionGradScratch`,
    );
  }
  if (chunks > MAX_LOOP) throw new RangeError(`${what}: N = ${N} rows exceed ${MAX_LOOP * GRAD_ROWS}`);
  const w = POSITION_BUCKETS + slot;
  const first = await kernel(rec.gpu, { file: "hylorada", entry: "positionGradPartial" });
  rec.dispatch(first, {
    uniforms: [N, R, w, chunks],
    outputs: [partial],
    inputs: [du, z, positions, bw],
    workgroups: grid1d(rec.gpu, chunks, 1),
  });
  const second = await kernel(rec.gpu, { file: "hylorada", entry: "positionGradFinal" });
  rec.dispatch(second, { uniforms: [N, R, w, chunks], outputs: [dbw], inputs: [partial], workgroups: [1] });
}

// A (1,) stand-in for α where a launch does not use it (the kernels bind it either way).
const unusedAlpha = new WeakMap<GPUDevice, Tensor>();
function alphaOrOne(gpu: Gpu, alpha: Tensor | undefined): Tensor {
  if (alpha) {
    requireType("landmarks", alpha, "f32");
    requireSize("landmarks", alpha, 1, "the scalar α");
    return alpha;
  }
  let t = unusedAlpha.get(gpu.device);
  if (!t) unusedAlpha.set(gpu.device, t = tensorFrom(gpu, [1], [1], { label: "alpha (unused)" }));
  return t;
}

// B, T, C of a (B, T, C) tensor.
function sequenceSizes(what: string, x: Tensor): [number, number, number] {
  requireType(what, x, "f32");
  if (x.shape.length !== 3) throw new RangeError(`${what}: ${shapeText(x)} must be (B, T, C)`);
  const [B, T, C] = x.shape;
  return [B, T, C];
}

/** Scratch of `sequenceSum` for (B, T, C): (B, ⌈T/256⌉, C). */
export function sequenceSumScratch(gpu: Gpu, B: number, T: number, C: number): Tensor {
  return createTensor(gpu, [B, Math.ceil(T / SEQ_CHUNK), C], { label: "sequenceSum.partial" });
}

/** Options of the per-sequence ops: a host scale and, optionally, the learnable α (a (1,) tensor). */
export interface SequenceScale {
  scale?: number;
  alpha?: Tensor;
}

/**
 * out[b, :] = scale·[α]·Σ_t x[b, t, :] (chunks of 256 rows, then the chunks, each in order).
 * out: (B, C); partial: sequenceSumScratch; x: (B, T, C).
 * @example await sequenceSum(rec, mean, partial, lnf, { scale: 1 / T });
 */
export async function sequenceSum(
  rec: Recorder,
  out: Tensor,
  partial: Tensor,
  x: Tensor,
  opts: SequenceScale = {},
): Promise<void> {
  const what = "sequenceSum";
  const [B, T, C] = sequenceSizes(what, x);
  requireType(what, out, "f32");
  requireSize(what, out, B * C, `(B, C) = (${B}, ${C})`);
  const chunks = Math.ceil(T / SEQ_CHUNK);
  if (numel(partial.shape) < B * chunks * C) {
    throw new RangeError(`${what}: scratch ${shapeText(partial)} needs (${B}, ${chunks}, ${C})`);
  }
  const alpha = alphaOrOne(rec.gpu, opts.alpha);
  const uniforms = [B, T, C, chunks, f32(opts.scale ?? 1), opts.alpha ? 1 : 0];
  const first = await kernel(rec.gpu, { file: "hylorada", entry: "seqSumPartial", constants: { WG } });
  rec.dispatch(first, {
    uniforms,
    outputs: [partial],
    inputs: [x],
    workgroups: grid1d(rec.gpu, B * chunks * C, WG),
  });
  const second = await kernel(rec.gpu, { file: "hylorada", entry: "seqSumFinal", constants: { WG } });
  rec.dispatch(second, {
    uniforms,
    outputs: [out],
    inputs: [partial, alpha],
    workgroups: grid1d(rec.gpu, B * C, WG),
  });
}

/**
 * out[b, t, :] += scale·[α]·v[b, :] for every t. out: (B, T, C); v: (B, C).
 * @example await addSequenceRows(rec, lnf, c, { alpha });
 */
export async function addSequenceRows(
  rec: Recorder,
  out: Tensor,
  v: Tensor,
  opts: SequenceScale = {},
): Promise<void> {
  const what = "addSequenceRows";
  const [B, T, C] = sequenceSizes(what, out);
  requireType(what, v, "f32");
  requireSize(what, v, B * C, `(B, C) = (${B}, ${C})`);
  const alpha = alphaOrOne(rec.gpu, opts.alpha);
  const k = await kernel(rec.gpu, { file: "hylorada", entry: "addSeqRows", constants: { WG } });
  rec.dispatch(k, {
    uniforms: [B, T, C, 0, f32(opts.scale ?? 1), opts.alpha ? 1 : 0],
    outputs: [out],
    inputs: [v, alpha],
    workgroups: grid1d(rec.gpu, B * T * C, WG),
  });
}

function gateSizes(what: string, t: Tensor): [number, number] {
  requireType(what, t, "f32");
  if (t.shape.length !== 2) throw new RangeError(`${what}: ${shapeText(t)} must be (B, K)`);
  const [B, K] = t.shape;
  return [B, K];
}

/**
 * g[b] = softmax(logits[b]) over K. g, logits: (B, K).
 * @example await landmarkGate(rec, g, gateLogits);
 */
export async function landmarkGate(rec: Recorder, g: Tensor, logits: Tensor): Promise<void> {
  const [B, K] = gateSizes("landmarkGate", logits);
  requireSize("landmarkGate", g, B * K, `the shape of ${logits.label}`);
  const k = await kernel(rec.gpu, { file: "hylorada", entry: "gateSoftmax", constants: { WG } });
  rec.dispatch(k, { uniforms: [B, K], outputs: [g], inputs: [logits], workgroups: [Math.ceil(B / WG)] });
}

/**
 * The gate's backward for c_b = α·g_bᵀ·L: with ls[b, k] = L[k]·S_b (S_b the gradient of the mixed rows
 * summed over the sequence), dz = α·g∘(ls − g·ls) (the pre-softmax gradient) and dAlpha += Σ_b g_b·ls_b.
 * dz, g, ls: (B, K); dAlpha, alpha: (1,).
 * @example await landmarkGateBackward(rec, dz, dAlpha, g, ls, alpha);
 */
export async function landmarkGateBackward(
  rec: Recorder,
  dz: Tensor,
  dAlpha: Tensor,
  g: Tensor,
  ls: Tensor,
  alpha: Tensor,
): Promise<void> {
  const what = "landmarkGateBackward";
  const [B, K] = gateSizes(what, g);
  for (const t of [dz, ls]) requireSize(what, t, B * K, `the shape of ${g.label}`);
  requireSize(what, dAlpha, 1, "the scalar dα");
  if (B * K > MAX_LOOP) throw new RangeError(`${what}: B·K = ${B * K} exceeds ${MAX_LOOP}`);
  const k = await kernel(rec.gpu, { file: "hylorada", entry: "gateBackward" });
  rec.dispatch(k, {
    uniforms: [B, K],
    outputs: [dz, dAlpha],
    inputs: [g, ls, alphaOrOne(rec.gpu, alpha)],
    workgroups: [1],
  });
}
