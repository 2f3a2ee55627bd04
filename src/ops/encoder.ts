/**
 * Launchers for the token and position embeddings (kernels/encoder.wgsl), llm.c's encoder.
 *
 * The backward is deterministic without atomics: the host, which knows a batch's tokens when it
 * builds the batch, buckets positions by token id once (`bucketTokens`), and one workgroup owns each
 * bucket's row of dwte and adds that bucket's positions in ascending order.
 */
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { numel, type Tensor } from "../gpu/tensor.ts";

const WG = 256;
// dwte rows are owned by one workgroup each; 64 threads cover C = 768 in 12 strides and waste
// little on small C.
const WG_TOKENS = 64;

/**
 * Positions of a batch grouped by token id, in CSR form, padded to N = B·T buckets so a recorded
 * step can be replayed with each new batch uploaded into the same three u32 tensors.
 */
export interface TokenBuckets {
  /** (N,) the distinct token ids in ascending order, then padding (0) after `count`. */
  ids: Uint32Array;
  /** (N + 1,) bucket u holds positions[start[u] … start[u + 1]); padding buckets are empty (start = N). */
  start: Uint32Array;
  /** (N,) flat positions b·T + t, sorted by token id, then by position. */
  positions: Uint32Array;
  /** Number of distinct token ids (non-empty buckets). */
  count: number;
}

/**
 * Buckets the positions of `tokens` (B·T ids, flat) by token id for `encoderBackward`; throws a
 * RangeError naming the first position whose id is not below V.
 * @example const buckets = bucketTokens(new Uint32Array([5, 2, 5]), 8); // ids [2, 5, 0], start [0, 1, 3, 3]
 */
export function bucketTokens(tokens: Uint32Array, V: number): TokenBuckets {
  if (!Number.isInteger(V) || V < 1 || V > 0xffffffff) {
    throw new RangeError(`bucketTokens: vocabulary size V = ${V} must be an integer in 1..2³²−1`);
  }
  const N = tokens.length;
  if (N === 0) throw new RangeError("bucketTokens: tokens is empty");
  const counts = new Uint32Array(V);
  for (let n = 0; n < N; n++) {
    const token = tokens[n];
    if (token >= V) {
      throw new RangeError(`bucketTokens: tokens[${n}] = ${token} is not below the vocabulary size V = ${V}`);
    }
    counts[token]++;
  }
  const ids = new Uint32Array(N);
  const start = new Uint32Array(N + 1).fill(N);
  // counts becomes each token's next free slot in positions (a counting sort, stable in position).
  let count = 0, at = 0;
  for (let v = 0; v < V; v++) {
    if (counts[v] === 0) continue;
    ids[count] = v;
    start[count++] = at;
    const size = counts[v];
    counts[v] = at;
    at += size;
  }
  const positions = new Uint32Array(N);
  for (let n = 0; n < N; n++) positions[counts[tokens[n]]++] = n;
  return { ids, start, positions, count };
}

function checkSizes(op: string, sizes: Record<string, number>): void {
  for (const [name, value] of Object.entries(sizes)) {
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(`${op}: ${name} = ${value} must be a positive integer`);
    }
  }
}

function checkTensor(op: string, t: Tensor, dtype: Tensor["dtype"], what: string, elements: number): void {
  if (t.dtype !== dtype) throw new TypeError(`${op}: ${t.label} is ${t.dtype}, expected ${dtype}`);
  if (numel(t.shape) !== elements) {
    throw new RangeError(
      `${op}: ${t.label} has shape [${t.shape.join(", ")}] (${numel(t.shape)} elements), expected ${what} ` +
        `(${elements} elements)`,
    );
  }
}

/** Rows (of C channels) of a table such as wte (V, C) or wpe (maxT, C); its last dimension must be C. */
function tableRows(op: string, t: Tensor, C: number): number {
  if (t.dtype !== "f32") throw new TypeError(`${op}: ${t.label} is ${t.dtype}, expected f32`);
  if (t.shape[t.shape.length - 1] !== C) {
    throw new RangeError(`${op}: ${t.label} has shape [${t.shape.join(", ")}], expected rows of C = ${C}`);
  }
  return numel(t.shape) / C;
}

function checkPositions(op: string, table: Tensor, maxT: number, positionOffset: number, T: number): void {
  if (!Number.isInteger(positionOffset) || positionOffset < 0) {
    throw new RangeError(`${op}: positionOffset = ${positionOffset} must be an integer ≥ 0`);
  }
  if (positionOffset + T > maxT) {
    throw new RangeError(
      `${op}: positions ${positionOffset}..${positionOffset + T - 1} exceed ${table.label} ` +
        `[${table.shape.join(", ")}], which holds maxT = ${maxT} positions`,
    );
  }
}

/** Options of the encoder: the position of token t = 0 (KV-cache decoding continues past 0). */
export interface EncoderOptions {
  positionOffset?: number;
}

/**
 * out[b, t] = wte[tokens[b, t]] + wpe[positionOffset + t] (no position row when wpe is null, as in
 * RoPE models). A token id ≥ V on the device yields a NaN row (ids are checked by `bucketTokens`).
 * out: (B, T, C); tokens: (B, T) u32; wte: (V, C); wpe: (maxT, C) or null.
 */
export async function encoderForward(
  rec: Recorder,
  out: Tensor,
  tokens: Tensor,
  wte: Tensor,
  wpe: Tensor | null,
  B: number,
  T: number,
  opts: EncoderOptions = {},
): Promise<void> {
  const op = "encoderForward";
  const C = out.shape[out.shape.length - 1];
  checkSizes(op, { B, T, C });
  const N = B * T;
  checkTensor(op, out, "f32", `(B, T, C) = (${B}, ${T}, ${C})`, N * C);
  checkTensor(op, tokens, "u32", `(B, T) = (${B}, ${T})`, N);
  const V = tableRows(op, wte, C);
  const positionOffset = opts.positionOffset ?? 0;
  if (wpe) checkPositions(op, wpe, tableRows(op, wpe, C), positionOffset, T);
  const entry = wpe ? "encoderForward" : "encoderForwardTokens";
  const k = await kernel(rec.gpu, { file: "encoder", entry, constants: { WG } });
  rec.dispatch(k, {
    uniforms: [N, C, T, V, positionOffset],
    outputs: [out],
    inputs: wpe ? [tokens, wte, wpe] : [tokens, wte],
    workgroups: grid1d(rec.gpu, N * C, WG),
  });
}

/**
 * dwte[v] += Σ_{b,t: tokens[b,t] = v} dout[b, t] (rows of absent ids untouched; += because a tied LM
 * head also writes dwte) and dwpe[positionOffset + t] += Σ_b dout[b, t] when dwpe is given.
 * The three bucket tensors hold `bucketTokens(tokens, V)`'s arrays.
 * dwte: (V, C); dwpe: (maxT, C) or null; dout: (B, T, C); bucketIds: (N,) u32;
 * bucketStart: (N + 1,) u32; bucketPositions: (N,) u32; N = B·T.
 */
export async function encoderBackward(
  rec: Recorder,
  dwte: Tensor,
  dwpe: Tensor | null,
  dout: Tensor,
  bucketIds: Tensor,
  bucketStart: Tensor,
  bucketPositions: Tensor,
  B: number,
  T: number,
  opts: EncoderOptions = {},
): Promise<void> {
  const op = "encoderBackward";
  const C = dout.shape[dout.shape.length - 1];
  checkSizes(op, { B, T, C });
  const N = B * T;
  checkTensor(op, dout, "f32", `(B, T, C) = (${B}, ${T}, ${C})`, N * C);
  checkTensor(op, bucketIds, "u32", `(N,) = (${N},)`, N);
  checkTensor(op, bucketStart, "u32", `(N + 1,) = (${N + 1},)`, N + 1);
  checkTensor(op, bucketPositions, "u32", `(N,) = (${N},)`, N);
  const V = tableRows(op, dwte, C);
  const positionOffset = opts.positionOffset ?? 0;
  if (dwpe) checkPositions(op, dwpe, tableRows(op, dwpe, C), positionOffset, T);
  const uniforms = [N, C, T, V, positionOffset];
  const tokensKernel = await kernel(rec.gpu, {
    file: "encoder",
    entry: "encoderBackwardTokens",
    constants: { WG: WG_TOKENS },
  });
  rec.dispatch(tokensKernel, {
    uniforms,
    outputs: [dwte],
    inputs: [dout, bucketIds, bucketStart, bucketPositions],
    workgroups: grid1d(rec.gpu, N, 1),
  });
  if (!dwpe) return;
  const positionsKernel = await kernel(rec.gpu, {
    file: "encoder",
    entry: "encoderBackwardPositions",
    constants: { WG },
  });
  rec.dispatch(positionsKernel, {
    uniforms,
    outputs: [dwpe],
    inputs: [dout],
    workgroups: grid1d(rec.gpu, T * C, WG),
  });
}
