/**
 * Launchers for greedy decoding's argmax (kernels/argmax.wgsl): the index of each row's largest logit,
 * and the fused greedy step that records the chosen token on the device and writes the next step's input
 * row, so decode steps chain without a readback. Ties go to the lowest index; a NaN counts as the largest
 * value (torch.argmax's rule), so a broken logit surfaces as a token instead of being skipped.
 */
import type { Gpu } from "../gpu/device.ts";
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { numel, type Tensor } from "../gpu/tensor.ts";
import { shapeText } from "./checks.ts";

/**
 * Threads per row: 64 on CPU adapters (each barrier of the tree costs there), 256 on GPUs. The result
 * does not depend on it.
 */
function workgroupSize(gpu: Gpu): number {
  return gpu.software ? 64 : 256;
}

function checkDtype(what: string, t: Tensor, dtype: Tensor["dtype"]): void {
  if (t.dtype !== dtype) throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected ${dtype}`);
}

function logitRows(what: string, logits: Tensor): { rows: number; V: number } {
  checkDtype(what, logits, "f32");
  if (logits.shape.length !== 2) throw new RangeError(`${what}: ${shapeText(logits)} must be (N, V)`);
  const [rows, V] = logits.shape;
  if (rows * V > 0xffffffff) {
    throw new RangeError(`${what}: ${shapeText(logits)} has more than 2³² − 1 elements (u32 indices)`);
  }
  return { rows, V };
}

/**
 * out[r] = argmax_v logits[firstRow + r, v] for r < out's length. out: (R,) u32; logits: (N, V) with
 * firstRow + R ≤ N.
 * @example await argmaxRows(rec, next, logits, { firstRow: T - 1 }); // the last row's greedy token
 */
export async function argmaxRows(
  rec: Recorder,
  out: Tensor,
  logits: Tensor,
  opts: { firstRow?: number } = {},
): Promise<void> {
  const what = "argmaxRows";
  const { rows, V } = logitRows(what, logits);
  checkDtype(what, out, "u32");
  if (out.shape.length !== 1) throw new RangeError(`${what}: ${shapeText(out)} must be (R,)`);
  const R = out.shape[0];
  const firstRow = opts.firstRow ?? 0;
  if (!Number.isInteger(firstRow) || firstRow < 0 || firstRow + R > rows) {
    throw new RangeError(
      `${what}: rows ${firstRow} … ${firstRow + R - 1} (firstRow ${firstRow}, ${shapeText(out)}) are not ` +
        `all rows of ${shapeText(logits)}`,
    );
  }
  const WG = workgroupSize(rec.gpu);
  const k = await kernel(rec.gpu, { file: "argmax", entry: "argmaxRows", constants: { WG } });
  rec.dispatch(k, {
    uniforms: [R, V, firstRow],
    outputs: [out],
    inputs: [logits],
    workgroups: grid1d(rec.gpu, R, 1),
  });
}

/** The device side of a greedy decode loop that `argmaxNext` advances. */
export interface GreedyState {
  /** (C,) f32: the input row of the next decode step (the chosen token's embedding). */
  x: Tensor;
  /** (K,) u32: generated tokens, one per step, at the step counter. */
  history: Tensor;
  /** (2,) u32: [position p of the token being decoded, tokens generated so far]. */
  state: Tensor;
}

/**
 * One greedy step on the device: token = argmax(logits[row]); history[state[1]] = token (dropped past
 * K); the token's position is p' = state[0] + 1 and x = wte[token] + wpe[p'] (wpe null for RoPE models;
 * a p' past wpe's rows gives a NaN row); state ← [p', state[1] + 1].
 * logits: (N, V); wte: (V, C); wpe: (P, C) or null.
 * @example await argmaxNext(rec, { x, history, state }, logits, wte, wpe, { row: T - 1 });
 */
export async function argmaxNext(
  rec: Recorder,
  greedy: GreedyState,
  logits: Tensor,
  wte: Tensor,
  wpe: Tensor | null,
  opts: { row?: number } = {},
): Promise<void> {
  const what = "argmaxNext";
  const { rows, V } = logitRows(what, logits);
  const { x, history, state } = greedy;
  checkDtype(what, x, "f32");
  checkDtype(what, history, "u32");
  checkDtype(what, state, "u32");
  checkDtype(what, wte, "f32");
  const C = numel(x.shape);
  if (wte.shape.length !== 2 || wte.shape[0] !== V || wte.shape[1] !== C) {
    throw new RangeError(`${what}: ${shapeText(wte)} must be (V, C) = (${V}, ${C})`);
  }
  if (wpe) {
    checkDtype(what, wpe, "f32");
    if (wpe.shape.length !== 2 || wpe.shape[1] !== C) {
      throw new RangeError(`${what}: ${shapeText(wpe)} must be (P, C) with C = ${C}`);
    }
  }
  if (numel(state.shape) !== 2) throw new RangeError(`${what}: ${shapeText(state)} must be (2,)`);
  const row = opts.row ?? 0;
  if (!Number.isInteger(row) || row < 0 || row >= rows) {
    throw new RangeError(`${what}: row ${row} is not a row of ${shapeText(logits)}`);
  }
  const WG = workgroupSize(rec.gpu);
  const k = await kernel(rec.gpu, { file: "argmax", entry: "argmaxNext", constants: { WG } });
  rec.dispatch(k, {
    uniforms: [V, row, C, wpe ? wpe.shape[0] : 0, numel(history.shape)],
    outputs: [x, history, state],
    // Without wpe the kernel never reads binding 6; wte stands in for it.
    inputs: [logits, wte, wpe ?? wte],
    workgroups: [1],
  });
}
