/**
 * Launchers for flash attention (kernels/attention_fwd.wgsl, kernels/attention_bwd.wgsl): a
 * FlashAttention-2 forward that writes O and the row log-sum-exp, and a backward in three kernels
 * (Δ = rowsum(dO∘O); dQ; dK and dV with one workgroup owning a KV block) plus a small pass that reduces
 * the per-head logit-scale and sink gradients. No T×T matrix, no atomics: each output has one owner and a
 * fixed summation order, so runs repeat bit for bit.
 *
 * The softmax of query i of head h runs over the keys its head's mask mode lets it see, plus an optional
 * sink: an extra key of logit sinkLogit[h] whose value vector is zero (it only enlarges the denominator):
 *   s_ij = logitScale[h]·(q_i·k_j),  lse_i = log(exp(sink_h) + Σ_j exp(s_ij)),  o_i = Σ_j exp(s_ij − lse_i)·v_j.
 * Grouped-query attention: query head h reads kv head ⌊h / (H/Hkv)⌋.
 */
import type { Gpu } from "../gpu/device.ts";
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { createTensor, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import { shapeText } from "./checks.ts";

/**
 * The mask of one head:
 * - `full`: every key;
 * - `causal`: keys j ≤ i;
 * - `groups`: causal inside [0, G), [G, 2G), … (S²-Attn, unshifted heads);
 * - `groups-shifted`: causal inside [0, G/2), [G/2, 3G/2), …, [T − G/2, T) (S²-Attn's shifted heads, the
 *   no-leak flash-path variant: half-groups at both ends, no wrap-around);
 * - `turns`: FocuSFT glm_bidir from per-token turn ids and flags (see AttentionMask).
 */
export type AttentionMode = "full" | "causal" | "groups" | "groups-shifted" | "turns";

/** A whole layer's mask, from which `headModes` builds the per-head modes. */
export type LayerMaskMode = "full" | "causal" | "shifted-groups" | "turns";

const modeCodes: Record<AttentionMode, number> = {
  full: 0,
  causal: 1,
  groups: 2,
  "groups-shifted": 3,
  turns: 4,
};

/** tokenFlags bit: the token belongs to a response turn (causal inside it); otherwise a context turn. */
export const TOKEN_RESPONSE = 1;
/** tokenFlags bit: padding; the token neither attends nor is attended (sink aside). */
export const TOKEN_PAD = 2;
/** The lse written for a row that sees no key and has no sink (its output row is 0). */
export const EMPTY_ROW_LSE = Math.fround(-3.0e38);

/**
 * Per-head modes for a layer: `shifted-groups` gives S²-Attn's split (heads h < H/2 `groups`, the rest
 * `groups-shifted`); the other layer modes apply to every head.
 * @example const modes = headModes(8, "shifted-groups");
 */
export function headModes(H: number, layer: LayerMaskMode): AttentionMode[] {
  if (!Number.isInteger(H) || H < 1) throw new RangeError(`headModes: H = ${H} must be a positive integer`);
  if (layer === "shifted-groups") {
    return Array.from({ length: H }, (_, h) => (h < Math.floor(H / 2) ? "groups" : "groups-shifted"));
  }
  if (!(layer in modeCodes)) {
    throw new RangeError(`headModes: unknown layer mode "${layer}" (full, causal, shifted-groups, turns)`);
  }
  return new Array<AttentionMode>(H).fill(layer);
}

/** Which keys each query sees. Never a T×T mask: per-head modes plus small per-token arrays. */
export interface AttentionMask {
  /** (H,) one mode per query head. */
  modes: readonly AttentionMode[];
  /** Group size G of the group modes: even, dividing T. Required when a head uses one. */
  groupSize?: number;
  /**
   * (B, T) u32 turn id per token, required by `turns`. Query i sees key j iff both are real and
   * turn(j) < turn(i), or they share a context turn, or they share a response turn and j ≤ i. The real
   * tokens' ids must not decrease along T (padding may carry any id): the kernels stop at the first key
   * tile that starts in a later turn than every real query of the tile.
   */
  turn?: Tensor;
  /** (B, T) u32 flags per token (TOKEN_RESPONSE, TOKEN_PAD), required by `turns`. */
  tokenFlags?: Tensor;
}

/** Forward inputs. */
export interface AttentionInputs {
  /** (B, H, T, D). */
  q: Tensor;
  /** (B, Hkv, T, D). */
  k: Tensor;
  /** (B, Hkv, T, D). */
  v: Tensor;
  /** (H,) the softmax runs over logitScale[h]·(q·k); 1/√D is the usual value. */
  logitScale: Tensor;
  /** (H,) optional sink logit per head. */
  sinkLogit?: Tensor;
}

/** Forward outputs. */
export interface AttentionOutputs {
  /** (B, H, T, D). */
  o: Tensor;
  /** (B, H, T) natural-log row log-sum-exp, sink included; the backward needs it. */
  lse: Tensor;
}

/** Backward inputs: the forward's inputs and outputs and the output gradient. */
export interface AttentionBackwardInputs extends AttentionInputs {
  /** (B, H, T, D) the forward output. */
  o: Tensor;
  /** (B, H, T) the forward's lse. */
  lse: Tensor;
  /** (B, H, T, D) gradient of the loss with respect to o. */
  dO: Tensor;
}

/** Backward outputs (each is overwritten, not accumulated into). */
export interface AttentionGrads {
  /** (B, H, T, D). */
  dq: Tensor;
  /** (B, Hkv, T, D), summed over the query heads of each kv group. */
  dk: Tensor;
  /** (B, Hkv, T, D). */
  dv: Tensor;
  /** (H,) gradient of the logit scales, summed over batch and tokens. */
  dScale: Tensor;
  /** (H,) gradient of the sink logits: dSink_h = −Σ_rows p_sink·Δ_row, Δ_row = dO_row·o_row. */
  dSink?: Tensor;
}

/** Options of attentionBackward. */
export interface AttentionBackwardOptions extends AttentionOptions {
  /** Scratch tensors; default: tensors cached per device and size. */
  scratch?: AttentionScratch;
}

/** Scratch the backward needs (both f32, in buffers of their own, (B, H, T) and (B, H, T, 2)). */
export interface AttentionScratch {
  /** (B, H, T) Δ = rowsum(dO∘O). */
  delta: Tensor;
  /** (B, H, T, 2) per-row terms of dScale and dSink, summed per head by the last dispatch. */
  rowTerms: Tensor;
}

interface Shapes {
  B: number;
  H: number;
  Hkv: number;
  T: number;
  D: number;
}

/** Largest head size: each thread keeps up to four rows of D floats in registers. */
export const MAX_HEAD_SIZE = 128;
/** Threads per workgroup of the attention kernels. */
const THREADS = 64;

function checkDtype(what: string, t: Tensor, dtype: "f32" | "u32"): void {
  if (t.dtype !== dtype) throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected ${dtype}`);
}

function checkShapeIs(what: string, t: Tensor, want: readonly number[], names: string): void {
  if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i])) {
    throw new RangeError(`${what}: ${shapeText(t)} must be ${names} = (${want.join(", ")})`);
  }
}

function checkInputs(what: string, inputs: AttentionInputs, mask: AttentionMask): Shapes {
  const { q, k, v, logitScale, sinkLogit } = inputs;
  for (const t of [q, k, v, logitScale]) checkDtype(what, t, "f32");
  if (sinkLogit) checkDtype(what, sinkLogit, "f32");
  if (q.shape.length !== 4) throw new RangeError(`${what}: ${shapeText(q)} must be (B, H, T, D)`);
  const [B, H, T, D] = q.shape;
  if (k.shape.length !== 4) throw new RangeError(`${what}: ${shapeText(k)} must be (B, Hkv, T, D)`);
  const Hkv = k.shape[1];
  checkShapeIs(what, k, [B, Hkv, T, D], "(B, Hkv, T, D)");
  checkShapeIs(what, v, [B, Hkv, T, D], "(B, Hkv, T, D)");
  if (H % Hkv !== 0) {
    throw new RangeError(
      `${what}: ${shapeText(q)} has H = ${H} query heads, not a multiple of Hkv = ${Hkv} in ${shapeText(k)}`,
    );
  }
  if (D % 4 !== 0 || D > MAX_HEAD_SIZE) {
    throw new RangeError(
      `${what}: head size D = ${D} of ${
        shapeText(q)
      } is unsupported; D must be a multiple of 4 and at most ` +
        `${MAX_HEAD_SIZE} (the kernels move rows as vec4 and keep them in registers)`,
    );
  }
  checkShapeIs(what, logitScale, [H], "(H,)");
  if (sinkLogit) checkShapeIs(what, sinkLogit, [H], "(H,)");
  checkMask(what, mask, B, H, T);
  return { B, H, Hkv, T, D };
}

/** Throws naming the field when `mask` does not fit (B, H, T) (shared with attention_mass.ts). */
export function checkMask(what: string, mask: AttentionMask, B: number, H: number, T: number): void {
  if (mask.modes.length !== H) {
    throw new RangeError(
      `${what}: mask.modes has ${mask.modes.length} entries, one per query head (H = ${H})`,
    );
  }
  for (const m of mask.modes) {
    if (!(m in modeCodes)) {
      throw new RangeError(`${what}: unknown mask mode "${m}" (full, causal, groups, groups-shifted, turns)`);
    }
  }
  if (mask.modes.some((m) => m === "groups" || m === "groups-shifted")) {
    const G = mask.groupSize;
    if (G === undefined || !Number.isInteger(G) || G < 2 || G % 2 !== 0 || T % G !== 0) {
      throw new RangeError(
        `${what}: group size G = ${G} must be an even integer ≥ 2 dividing T = ${T} ` +
          `(the group modes split the sequence into groups and half-groups of G/2)`,
      );
    }
  }
  if (mask.modes.includes("turns")) {
    for (const [name, t] of [["turn", mask.turn], ["tokenFlags", mask.tokenFlags]] as const) {
      if (!t) {
        throw new RangeError(`${what}: mode "turns" needs mask.${name}, a (B, T) = (${B}, ${T}) u32 tensor`);
      }
      checkDtype(what, t, "u32");
      checkShapeIs(what, t, [B, T], "(B, T)");
    }
  }
}

// Small constant tensors: the per-head mode codes (cached by content) and a stand-in for absent inputs.
const constantCache = new WeakMap<GPUDevice, Map<string, Tensor>>();

function cachedConstant(gpu: Gpu, key: string, make: () => Tensor): Tensor {
  let cache = constantCache.get(gpu.device);
  if (!cache) constantCache.set(gpu.device, cache = new Map());
  let t = cache.get(key);
  if (!t) cache.set(key, t = make());
  return t;
}

function modeTensor(gpu: Gpu, modes: readonly AttentionMode[]): Tensor {
  const codes = modes.map((m) => modeCodes[m]);
  return cachedConstant(
    gpu,
    `modes:${codes.join(",")}`,
    () => tensorFrom(gpu, [codes.length], codes, { label: "attention head modes", dtype: "u32" }),
  );
}

/** Bound where an optional input is absent; the kernels never read it then. */
export function absent(gpu: Gpu, dtype: "f32" | "u32"): Tensor {
  return cachedConstant(
    gpu,
    `absent:${dtype}`,
    () => tensorFrom(gpu, [4], [0, 0, 0, 0], { label: `absent ${dtype} input`, dtype }),
  );
}

/** The mask's bindings: per-head mode codes, turn ids and token flags (stand-ins when unused). */
export function maskInputs(gpu: Gpu, mask: AttentionMask): Tensor[] {
  const usesTurns = mask.modes.includes("turns");
  return [
    modeTensor(gpu, mask.modes),
    usesTurns ? mask.turn! : absent(gpu, "u32"),
    usesTurns ? mask.tokenFlags! : absent(gpu, "u32"),
  ];
}

/**
 * How the kernels tile head size D: R owned rows per thread (each streamed row load serves R rows) and BLOCK
 * streamed rows per step of the main loops. The loops over R, D/4 and a block unroll; R·D ≤ 128 and
 * BLOCK·R·D ≤ 512 keep the register arrays and unrolled bodies within what llvmpipe unrolls (beyond that it
 * compiles for ~20 s and runs 2–3× slower). R = 4 cuts llvmpipe's lane-by-lane storage loads per FLOP 4×.
 */
export function attentionTiling(D: number): { R: number; BLOCK: number; rowsPerWorkgroup: number } {
  const R = Math.max(1, Math.min(4, Math.floor(128 / D)));
  const BLOCK = Math.max(1, Math.min(16, Math.floor(512 / (R * D))));
  return { R, BLOCK, rowsPerWorkgroup: R * THREADS };
}

/** Options of the attention launchers. */
export interface AttentionOptions {
  /**
   * Streamed rows per dispatch: the forward and dQ stream keys in passes of this many (dK/dV streams
   * queries in passes of this many divided by H/Hkv), each pass resuming from the state the previous one
   * left in the outputs. Default: 2048 on CPU adapters (llvmpipe silently ends a shader invocation after
   * 65,535 loop iterations in total, and its compiler leaves a few loops per streamed row), else all of T.
   * Results depend on it in the last bits only; a fixed value gives fixed bits.
   */
  rowsPerPass?: number;
}

/** Rows per pass on CPU adapters: at most 32 loop iterations per streamed row stay under llvmpipe's cap. */
const SOFTWARE_ROWS_PER_PASS = 2048;
/** Loop iterations llvmpipe allows one shader invocation in total before it silently stops (gallivm). */
const SOFTWARE_LOOP_LIMIT = 65535;

// The [begin, end) ranges of the passes over T streamed rows.
function passes(
  gpu: Gpu,
  what: string,
  T: number,
  opts: AttentionOptions,
  divisor: number,
): [number, number][] {
  const per = opts.rowsPerPass ?? (gpu.software ? SOFTWARE_ROWS_PER_PASS : T);
  if (!Number.isInteger(per) || per < 1) {
    throw new RangeError(`${what}: rowsPerPass = ${per} must be a positive integer`);
  }
  const length = Math.max(1, Math.floor(per / divisor));
  const out: [number, number][] = [];
  for (let begin = 0; begin < T; begin += length) out.push([begin, Math.min(T, begin + length)]);
  return out;
}

function params(s: Shapes, mask: AttentionMask, hasSink: boolean, pass: [number, number]): number[] {
  return [s.H, s.Hkv, s.T, mask.groupSize ?? 0, hasSink ? 1 : 0, pass[0], pass[1], pass[0] === 0 ? 1 : 0];
}

/**
 * o, lse ← attention(q, k, v) under `mask`, with per-head logit scales and optional sinks.
 * o: (B, H, T, D); lse: (B, H, T); q: (B, H, T, D); k, v: (B, Hkv, T, D); logitScale, sinkLogit: (H,).
 * One workgroup per (R·64 query rows, head, batch), R rows per thread (attentionTiling); keys stream in
 * blocks with an online softmax, and key ranges outside the mask's window are skipped.
 * @example await attentionForward(rec, { o, lse }, { q, k, v, logitScale }, { modes: headModes(H, "causal") });
 */
export async function attentionForward(
  rec: Recorder,
  outputs: AttentionOutputs,
  inputs: AttentionInputs,
  mask: AttentionMask,
  opts: AttentionOptions = {},
): Promise<void> {
  const what = "attentionForward";
  const gpu = rec.gpu;
  const s = checkInputs(what, inputs, mask);
  const { o, lse } = outputs;
  checkDtype(what, o, "f32");
  checkDtype(what, lse, "f32");
  checkShapeIs(what, o, [s.B, s.H, s.T, s.D], "(B, H, T, D)");
  checkShapeIs(what, lse, [s.B, s.H, s.T], "(B, H, T)");
  const tiling = attentionTiling(s.D);
  const k = await kernel(gpu, {
    file: "attention_fwd",
    entry: "attentionForward",
    constants: { D: s.D, WG: THREADS, R: tiling.R, BLOCK: tiling.BLOCK },
  });
  const [modes, turn, flags] = maskInputs(gpu, mask);
  for (const pass of passes(gpu, what, s.T, opts, 1)) {
    rec.dispatch(k, {
      uniforms: params(s, mask, !!inputs.sinkLogit, pass),
      outputs: [o, lse],
      inputs: [
        inputs.q,
        inputs.k,
        inputs.v,
        modes,
        inputs.logitScale,
        inputs.sinkLogit ?? absent(gpu, "f32"),
        turn,
        flags,
      ],
      workgroups: [Math.ceil(s.T / tiling.rowsPerWorkgroup), s.H, s.B],
    });
  }
}

const scratchCache = new WeakMap<GPUDevice, Map<string, AttentionScratch>>();

// Scratch is consumed inside one backward, and dispatches run in order, so backwards of one size share it.
function cachedScratch(gpu: Gpu, B: number, H: number, T: number): AttentionScratch {
  let cache = scratchCache.get(gpu.device);
  if (!cache) scratchCache.set(gpu.device, cache = new Map());
  const key = `${B},${H},${T}`;
  let scratch = cache.get(key);
  if (!scratch) {
    scratch = {
      delta: createTensor(gpu, [B, H, T], { label: "attention Δ scratch" }),
      rowTerms: createTensor(gpu, [B, H, T, 2], { label: "attention dScale/dSink row terms" }),
    };
    cache.set(key, scratch);
  }
  return scratch;
}

/**
 * dq, dk, dv, dScale, dSink ← the gradients of attention given dO, recomputing probabilities from lse.
 * Shapes as in attentionForward; dScale, dSink: (H,). Four dispatches: Δ = rowsum(dO∘O) (B, H, T); dQ, one
 * query row per thread (also writing each row's dScale and dSink terms); dK/dV, R key rows per thread,
 * looping over the H/Hkv query heads of its kv group and their visible query rows in a fixed order; one
 * workgroup per head sums the row terms in a fixed tree.
 * `opts.scratch` ((B, H, T) and (B, H, T, 2) f32) defaults to tensors cached per device and size.
 * @example await attentionBackward(rec, { dq, dk, dv, dScale }, { q, k, v, o, lse, dO, logitScale }, mask);
 */
export async function attentionBackward(
  rec: Recorder,
  grads: AttentionGrads,
  inputs: AttentionBackwardInputs,
  mask: AttentionMask,
  opts: AttentionBackwardOptions = {},
): Promise<void> {
  const what = "attentionBackward";
  const gpu = rec.gpu;
  const s = checkInputs(what, inputs, mask);
  const { B, H, Hkv, T, D } = s;
  for (const t of [inputs.o, inputs.lse, inputs.dO, grads.dq, grads.dk, grads.dv, grads.dScale]) {
    checkDtype(what, t, "f32");
  }
  checkShapeIs(what, inputs.o, [B, H, T, D], "(B, H, T, D)");
  checkShapeIs(what, inputs.dO, [B, H, T, D], "(B, H, T, D)");
  checkShapeIs(what, inputs.lse, [B, H, T], "(B, H, T)");
  checkShapeIs(what, grads.dq, [B, H, T, D], "(B, H, T, D)");
  checkShapeIs(what, grads.dk, [B, Hkv, T, D], "(B, Hkv, T, D)");
  checkShapeIs(what, grads.dv, [B, Hkv, T, D], "(B, Hkv, T, D)");
  checkShapeIs(what, grads.dScale, [H], "(H,)");
  if (grads.dSink) {
    checkDtype(what, grads.dSink, "f32");
    checkShapeIs(what, grads.dSink, [H], "(H,)");
  }
  const { scratch } = opts;
  if (scratch) {
    checkDtype(what, scratch.delta, "f32");
    checkDtype(what, scratch.rowTerms, "f32");
    checkShapeIs(what, scratch.delta, [B, H, T], "(B, H, T)");
    checkShapeIs(what, scratch.rowTerms, [B, H, T, 2], "(B, H, T, 2)");
  }
  // attentionHeadGrads loops over B·T/64 rows per thread in one invocation.
  if (gpu.software && Math.ceil((B * T) / THREADS) > SOFTWARE_LOOP_LIMIT) {
    throw new RangeError(
      `${what}: B·T = ${B * T} rows per head need ${Math.ceil((B * T) / THREADS)} loop iterations in one ` +
        `invocation of the dScale/dSink sum; this software adapter stops after ${SOFTWARE_LOOP_LIMIT}`,
    );
  }
  const work = scratch ?? cachedScratch(gpu, B, H, T);
  const [modes, turn, flags] = maskInputs(gpu, mask);
  const tiling = attentionTiling(D);
  const specialised = { D, WG: THREADS, R: tiling.R, BLOCK: tiling.BLOCK };
  const tiles = Math.ceil(T / tiling.rowsPerWorkgroup);
  const sink = inputs.sinkLogit ?? absent(gpu, "f32");

  const rows = B * H * T;
  const rowDot = await kernel(gpu, {
    file: "attention_bwd",
    entry: "attentionRowDot",
    constants: specialised,
  });
  rec.dispatch(rowDot, {
    uniforms: [rows],
    outputs: [work.delta],
    inputs: [inputs.o, inputs.dO],
    workgroups: grid1d(gpu, rows, THREADS),
  });

  const dQ = await kernel(gpu, {
    file: "attention_bwd",
    entry: "attentionBackwardQuery",
    constants: specialised,
  });
  for (const pass of passes(gpu, what, T, opts, 1)) {
    rec.dispatch(dQ, {
      uniforms: params(s, mask, !!inputs.sinkLogit, pass),
      outputs: [grads.dq, work.rowTerms],
      inputs: [
        inputs.q,
        inputs.k,
        inputs.v,
        inputs.dO,
        inputs.lse,
        work.delta,
        modes,
        inputs.logitScale,
        sink,
        turn,
        flags,
      ],
      workgroups: [tiles, H, B],
    });
  }

  const dKV = await kernel(gpu, {
    file: "attention_bwd",
    entry: "attentionBackwardKeyValue",
    constants: specialised,
  });
  // A dK/dV invocation streams the queries of all H/Hkv heads of its group in each pass.
  for (const pass of passes(gpu, what, T, opts, H / Hkv)) {
    rec.dispatch(dKV, {
      uniforms: params(s, mask, !!inputs.sinkLogit, pass),
      outputs: [grads.dk, grads.dv],
      inputs: [
        inputs.q,
        inputs.k,
        inputs.v,
        inputs.dO,
        inputs.lse,
        work.delta,
        modes,
        inputs.logitScale,
        turn,
        flags,
      ],
      workgroups: [tiles, Hkv, B],
    });
  }

  const heads = await kernel(gpu, {
    file: "attention_bwd",
    entry: "attentionHeadGrads",
    constants: specialised,
  });
  const dSink = grads.dSink ?? cachedConstant(
    gpu,
    `dSink:${H}`,
    () => createTensor(gpu, [H], { label: "unused dSink" }),
  );
  rec.dispatch(heads, {
    uniforms: [B, H, T],
    outputs: [grads.dScale, dSink],
    inputs: [work.rowTerms],
    workgroups: [H],
  });
}
