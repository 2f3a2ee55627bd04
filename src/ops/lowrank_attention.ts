/**
 * Launchers for the causal low-rank attention map (kernels/lowrank_attention.wgsl), per batch b and
 * query head h:
 *   out_i = s·Σ_{j≤i} (a_i·w_j)·v_j = s·a_iᵀ·S_i,   S_i = Σ_{j≤i} w_j v_jᵀ ∈ R^{R×D},
 * with a = X·U_h and w = X·W_h (T×R, projected elsewhere), v the head's values (grouped-query attention:
 * query head h reads kv head ⌊h / (H/Hkv)⌋) and a scale s (1/√R by default). The result is meant to be
 * added to the softmax attention output (`accumulate`), giving A' = softmax(…) + M_causal ⊙ (a wᵀ)·s.
 *
 * UNVERIFIED: this is the methods spec §6 reconstruction of LoRaDA's "Low-rank Multi-head Attention Map"
 * (Li et al., Findings of EMNLP 2025) from its abstract; no official code or method section was found, so
 * the placement (after the softmax), the causal mask and the scale are assumptions.
 *
 * Linear time, never T×T: T is split into chunks of TC tokens. Pass 1 writes each chunk's Σ w_j v_jᵀ,
 * pass 2 turns them into exclusive prefix sums over chunks (one invocation per element walking the chunks
 * in order), pass 3 adds each chunk's causal TC×TC tile. The backward uses the same prefix sums for da
 * and the suffix sums G_j = Σ_{i≥j} a_i dout_iᵀ for dw and dv. No atomics; every output has one owner and
 * a fixed summation order, so runs repeat bit for bit. The chunk sums live in scratch tensors cached per
 * device and size and shared by every call: dispatches run in recording order, and each call writes its
 * sums before it reads them.
 */
import type { Gpu } from "../gpu/device.ts";
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import { f32, type Recorder } from "../gpu/recorder.ts";
import { createTensor, numel, type Tensor } from "../gpu/tensor.ts";

/** The sizes of one call: B batch, H query heads, Hkv kv heads (dividing H), T tokens, R rank, D head size */
export interface LowrankAttentionShape {
  B: number;
  H: number;
  Hkv: number;
  T: number;
  R: number;
  D: number;
}

/** Options shared by the forward and the backward; the backward must be given the forward's scale. */
export interface LowrankAttentionOptions {
  /** s in out_i = s·Σ_{j≤i} (a_i·w_j)·v_j; default 1/√R. */
  scale?: number;
  /**
   * Tokens per chunk TC (default 16): the results' last bits depend on it. The backward holds two TC×TC
   * f32 tiles in workgroup memory, so TC ≤ 64 on a device with 32 KiB; on llvmpipe the first compile of
   * a chunk size costs ~TC² (TC = 16: 0.4 s, TC = 32: 2.6 s for both kernels; Mesa caches it on disk).
   */
  chunkSize?: number;
}

/** Forward options: add into `out` (the softmax attention output) instead of writing it. */
export interface LowrankAttentionForwardOptions extends LowrankAttentionOptions {
  accumulate?: boolean;
}

/**
 * Default tokens per chunk. Per token the tile does TC/2·(R + D) multiply-adds and the chunk sums and
 * prefix reads 2·R·D whatever TC is, so small chunks do less work (TC = 16, R = 8, D = 64: 576 + 1024); the
 * scan's R·D/TC per token and the (B, H, T/TC, R, D) scratch bound it from below.
 */
export const LOWRANK_CHUNK = 16;
// 64 invocations per workgroup: two NVIDIA warps; a TC = 16 chunk's 16×16 tile and 16×D output rows split
// evenly over them.
const WG = 64;
// llvmpipe silently stops a loop after 65,535 iterations (measured), so no invocation may need more.
const MAX_LOOP = 65535;

interface Plan {
  shape: LowrankAttentionShape;
  TC: number;
  NC: number;
  scale: number;
}

function plan(
  gpu: Gpu,
  op: string,
  shape: LowrankAttentionShape,
  opts: LowrankAttentionOptions,
  tiles: number,
): Plan {
  const { H, Hkv, R } = shape;
  for (const name of ["B", "H", "Hkv", "T", "R", "D"] as const) {
    const value = shape[name];
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(`${op}: ${name} = ${value} must be a positive integer`);
    }
  }
  if (H % Hkv !== 0) {
    throw new RangeError(`${op}: H = ${H} query heads is not a multiple of Hkv = ${Hkv} kv heads`);
  }
  for (const name of ["R", "D"] as const) {
    if (shape[name] > MAX_LOOP) {
      throw new RangeError(
        `${op}: ${name} = ${shape[name]} exceeds ${MAX_LOOP}, the most loop iterations some drivers run`,
      );
    }
  }
  const TC = opts.chunkSize ?? LOWRANK_CHUNK;
  const maxShared = gpu.limits.maxComputeWorkgroupStorageSize;
  // The tiles are packed as ⌈TC²/4⌉ vec4s each (see the kernel file).
  if (!Number.isInteger(TC) || TC < 1 || tiles * Math.ceil((TC * TC) / 4) * 16 > maxShared) {
    throw new RangeError(
      `${op}: chunkSize = ${TC} must be a positive integer whose ${tiles} TC×TC f32 tile(s) fit this ` +
        `device's maxComputeWorkgroupStorageSize of ${maxShared} bytes (TC ≤ ${
          Math.floor(Math.sqrt(maxShared / (4 * tiles)))
        })`,
    );
  }
  const NC = Math.ceil(shape.T / TC);
  if (NC > MAX_LOOP) {
    throw new RangeError(
      `${op}: T = ${shape.T} makes ${NC} chunks of ${TC} tokens; the chunk scan loops over them and ` +
        `at most ${MAX_LOOP} iterations are safe; raise chunkSize`,
    );
  }
  const scale = opts.scale ?? 1 / Math.sqrt(R);
  if (!Number.isFinite(scale)) throw new RangeError(`${op}: scale = ${scale} must be finite`);
  const scratchBytes = shape.B * H * NC * R * shape.D * 4;
  const maxBinding = gpu.limits.maxStorageBufferBindingSize;
  if (scratchBytes > maxBinding) {
    throw new RangeError(
      `${op}: the chunk sums (B, H, NC, R, D) = (${shape.B}, ${H}, ${NC}, ${R}, ${shape.D}) take ` +
        `${scratchBytes} bytes, over this device's maxStorageBufferBindingSize of ${maxBinding}; ` +
        `raise chunkSize or split the batch`,
    );
  }
  return { shape, TC, NC, scale };
}

function checkTensor(op: string, t: Tensor, dims: string, values: readonly number[]): void {
  if (t.dtype !== "f32") throw new TypeError(`${op}: ${t.label} is ${t.dtype}, expected f32`);
  const elements = values.reduce((x, y) => x * y, 1);
  const n = numel(t.shape);
  if (n !== elements) {
    throw new RangeError(
      `${op}: ${t.label} has shape [${t.shape.join(", ")}] (${n} elements), expected ${dims} = ` +
        `(${values.join(", ")}) (${elements} elements)`,
    );
  }
}

function checkInputs(op: string, { shape: s }: Plan, a: Tensor, w: Tensor, v: Tensor): void {
  checkTensor(op, a, "(B, H, T, R)", [s.B, s.H, s.T, s.R]);
  checkTensor(op, w, "(B, H, T, R)", [s.B, s.H, s.T, s.R]);
  checkTensor(op, v, "(B, Hkv, T, D)", [s.B, s.Hkv, s.T, s.D]);
}

/**
 * Refuses an output that shares a buffer with an input (WebGPU forbids binding one buffer read-only and
 * read-write in one dispatch) or overlaps another output, before anything is recorded.
 */
function checkDistinct(op: string, outputs: readonly Tensor[], inputs: readonly Tensor[]): void {
  const end = (t: Tensor) => t.offset + numel(t.shape) * 4;
  outputs.forEach((o, k) => {
    for (const i of inputs) {
      if (i.buffer === o.buffer) {
        throw new RangeError(
          `${op}: output ${o.label} and input ${i.label} share one GPU buffer; WebGPU forbids binding a ` +
            `buffer read-only and read-write in one dispatch`,
        );
      }
    }
    for (const other of outputs.slice(k + 1)) {
      if (other.buffer === o.buffer && o.offset < end(other) && other.offset < end(o)) {
        throw new RangeError(`${op}: outputs ${o.label} and ${other.label} overlap in one GPU buffer`);
      }
    }
  });
}

const scratches = new WeakMap<GPUDevice, Map<string, Tensor>>();

/** The chunk sums (B, H, NC, R, D); `slot` tells apart the backward's prefix and suffix sums. */
function chunkScratch(gpu: Gpu, slot: "prefix" | "suffix", elements: number): Tensor {
  let bySize = scratches.get(gpu.device);
  if (!bySize) scratches.set(gpu.device, bySize = new Map());
  const key = `${slot}:${elements}`;
  let t = bySize.get(key);
  if (!t) bySize.set(key, t = createTensor(gpu, [elements], { label: `lowrankAttention:${slot}` }));
  return t;
}

/** Records chunkSums (Σ_{t in chunk} x_t y_tᵀ, y with HY heads) then the exclusive scan over chunks. */
async function recordScannedSums(
  rec: Recorder,
  sums: Tensor,
  x: Tensor,
  y: Tensor,
  HY: number,
  reverse: boolean,
  { shape: s, TC, NC, scale }: Plan,
): Promise<void> {
  const gpu = rec.gpu;
  const uniforms = [s.B, s.H, HY, s.T, s.R, s.D, NC, f32(scale)];
  const partial = await kernel(gpu, { file: "lowrank_attention", entry: "chunkSums", constants: { TC, WG } });
  rec.dispatch(partial, {
    uniforms,
    outputs: [sums],
    inputs: [x, y],
    workgroups: grid1d(gpu, s.B * s.H * NC * s.R * s.D, WG),
  });
  const scan = await kernel(gpu, {
    file: "lowrank_attention",
    entry: "chunkScan",
    constants: { WG, REVERSE: reverse ? 1 : 0 },
  });
  rec.dispatch(scan, {
    uniforms,
    outputs: [sums],
    inputs: [],
    workgroups: grid1d(gpu, s.B * s.H * s.R * s.D, WG),
  });
}

/**
 * Causal low-rank attention map forward: out_i = s·Σ_{j≤i} (a_i·w_j)·v_j, written or added to `out`
 * (`accumulate`, for adding to the softmax attention output). Three dispatches, O(T·R·(D + TC)) work.
 * out: (B, H, T, D); a, w: (B, H, T, R); v: (B, Hkv, T, D).
 * @example await lowrankAttentionForward(rec, attnOut, a, w, v, { B, H, Hkv, T, R, D }, { accumulate: true })
 */
export async function lowrankAttentionForward(
  rec: Recorder,
  out: Tensor,
  a: Tensor,
  w: Tensor,
  v: Tensor,
  shape: LowrankAttentionShape,
  opts: LowrankAttentionForwardOptions = {},
): Promise<void> {
  const op = "lowrankAttentionForward";
  const gpu = rec.gpu;
  const p = plan(gpu, op, shape, opts, 1);
  const { B, H, Hkv, T, R, D } = shape;
  checkTensor(op, out, "(B, H, T, D)", [B, H, T, D]);
  checkInputs(op, p, a, w, v);
  checkDistinct(op, [out], [a, w, v]);
  const prefix = chunkScratch(gpu, "prefix", B * H * p.NC * R * D);
  await recordScannedSums(rec, prefix, w, v, Hkv, false, p);
  const k = await kernel(gpu, {
    file: "lowrank_attention",
    entry: "forwardChunks",
    constants: { TC: p.TC, WG, ACCUMULATE: opts.accumulate ? 1 : 0 },
  });
  rec.dispatch(k, {
    uniforms: [B, H, Hkv, T, R, D, p.NC, f32(p.scale)],
    outputs: [out],
    inputs: [a, w, v, prefix],
    workgroups: grid1d(gpu, B * H * p.NC, 1),
  });
}

/**
 * Causal low-rank attention map backward, inverting out_i = s·Σ_{j≤i} (a_i·w_j)·v_j: with
 * S_i = Σ_{j≤i} w_j v_jᵀ and G_j = Σ_{i≥j} a_i dout_iᵀ, writes da_i = s·S_i·dout_i and dw_j = s·G_j·v_j,
 * and ADDS dv_j += s·G_jᵀ·w_j (the softmax attention writes dv too), summed over each kv head's query
 * heads in ascending order. Pass the forward's scale and chunkSize. Five dispatches; S is recomputed.
 * da, dw: (B, H, T, R); dv: (B, Hkv, T, D); dout: (B, H, T, D); a, w: (B, H, T, R); v: (B, Hkv, T, D).
 * @example await lowrankAttentionBackward(rec, da, dw, dv, dAttnOut, a, w, v, { B, H, Hkv, T, R, D });
 */
export async function lowrankAttentionBackward(
  rec: Recorder,
  da: Tensor,
  dw: Tensor,
  dv: Tensor,
  dout: Tensor,
  a: Tensor,
  w: Tensor,
  v: Tensor,
  shape: LowrankAttentionShape,
  opts: LowrankAttentionOptions = {},
): Promise<void> {
  const op = "lowrankAttentionBackward";
  const gpu = rec.gpu;
  const p = plan(gpu, op, shape, opts, 2);
  const { B, H, Hkv, T, R, D } = shape;
  checkTensor(op, da, "(B, H, T, R)", [B, H, T, R]);
  checkTensor(op, dw, "(B, H, T, R)", [B, H, T, R]);
  checkTensor(op, dv, "(B, Hkv, T, D)", [B, Hkv, T, D]);
  checkTensor(op, dout, "(B, H, T, D)", [B, H, T, D]);
  checkInputs(op, p, a, w, v);
  checkDistinct(op, [da, dw, dv], [dout, a, w, v]);
  const elements = B * H * p.NC * R * D;
  const prefix = chunkScratch(gpu, "prefix", elements);
  const suffix = chunkScratch(gpu, "suffix", elements);
  await recordScannedSums(rec, prefix, w, v, Hkv, false, p);
  await recordScannedSums(rec, suffix, a, dout, H, true, p);
  const k = await kernel(gpu, {
    file: "lowrank_attention",
    entry: "backwardChunks",
    constants: { TC: p.TC, WG },
  });
  rec.dispatch(k, {
    uniforms: [B, H, Hkv, T, R, D, p.NC, f32(p.scale)],
    outputs: [da, dw, dv],
    inputs: [dout, a, w, v, prefix, suffix],
    workgroups: grid1d(gpu, B * Hkv * p.NC, 1),
  });
}
