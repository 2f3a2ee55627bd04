/**
 * Launchers for the head layout changes around attention (kernels/heads.wgsl): the QKV projection's packed
 * rows (B, T, (H + 2·Hkv)·D) split into q (B, H, T, D) and k, v (B, Hkv, T, D), and attention's o
 * (B, H, T, D) merged into the output projection's rows (B, T, H·D); each with its backward (the transpose,
 * a gather, so no accumulation).
 */
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { numel, type Tensor } from "../gpu/tensor.ts";
import { checkF32, checkIs, shapeText } from "./checks.ts";

const WG = 256;

function checkElements(what: string, t: Tensor): number {
  const n = numel(t.shape);
  if (n > 0xffffffff) throw new RangeError(`${what}: ${shapeText(t)} has ${n} elements; indices are u32`);
  return n;
}

// The per-head shapes from q and k, after checking the packed tensor against them.
function checkSplit(what: string, qkv: Tensor, q: Tensor, k: Tensor, v: Tensor): number[] {
  checkF32(what, [qkv, q, k, v]);
  if (q.shape.length !== 4) throw new RangeError(`${what}: ${shapeText(q)} must be (B, H, T, D)`);
  if (k.shape.length !== 4) throw new RangeError(`${what}: ${shapeText(k)} must be (B, Hkv, T, D)`);
  const [B, H, T, D] = q.shape;
  const Hkv = k.shape[1];
  checkIs(what, k, [B, Hkv, T, D], "(B, Hkv, T, D)");
  checkIs(what, v, [B, Hkv, T, D], "(B, Hkv, T, D)");
  checkIs(what, qkv, [B, T, (H + 2 * Hkv) * D], "(B, T, (H + 2·Hkv)·D)");
  checkElements(what, qkv);
  return [B, T, H, Hkv, D];
}

/**
 * q, k, v ← the per-head views of the QKV projection's rows. q: (B, H, T, D); k, v: (B, Hkv, T, D);
 * qkv: (B, T, (H + 2·Hkv)·D) with each row [q heads | k heads | v heads].
 * @example await splitHeads(rec, q, k, v, qkv);
 */
export async function splitHeads(rec: Recorder, q: Tensor, k: Tensor, v: Tensor, qkv: Tensor): Promise<void> {
  const sizes = checkSplit("splitHeads", qkv, q, k, v);
  const kern = await kernel(rec.gpu, { file: "heads", entry: "splitHeads", constants: { WG } });
  rec.dispatch(kern, {
    uniforms: sizes,
    outputs: [q, k, v],
    inputs: [qkv],
    workgroups: grid1d(rec.gpu, numel(qkv.shape), WG),
  });
}

/**
 * dqkv ← dq, dk, dv gathered back into packed rows (the transpose of splitHeads; overwrites dqkv).
 * dqkv: (B, T, (H + 2·Hkv)·D); dq: (B, H, T, D); dk, dv: (B, Hkv, T, D).
 * @example await splitHeadsBackward(rec, dqkv, dq, dk, dv);
 */
export async function splitHeadsBackward(
  rec: Recorder,
  dqkv: Tensor,
  dq: Tensor,
  dk: Tensor,
  dv: Tensor,
): Promise<void> {
  const sizes = checkSplit("splitHeadsBackward", dqkv, dq, dk, dv);
  const kern = await kernel(rec.gpu, { file: "heads", entry: "splitHeadsBackward", constants: { WG } });
  rec.dispatch(kern, {
    uniforms: sizes,
    outputs: [dqkv],
    inputs: [dq, dk, dv],
    workgroups: grid1d(rec.gpu, numel(dqkv.shape), WG),
  });
}

async function merge(
  what: "mergeHeads" | "mergeHeadsBackward",
  rec: Recorder,
  out: Tensor,
  input: Tensor,
  perHead: Tensor,
  rows: Tensor,
): Promise<void> {
  checkF32(what, [out, input]);
  if (perHead.shape.length !== 4) throw new RangeError(`${what}: ${shapeText(perHead)} must be (B, H, T, D)`);
  const [B, H, T, D] = perHead.shape;
  checkIs(what, rows, [B, T, H * D], "(B, T, H·D)");
  const n = checkElements(what, rows);
  const kern = await kernel(rec.gpu, { file: "heads", entry: what, constants: { WG } });
  rec.dispatch(kern, {
    uniforms: [B, T, H, 0, D],
    outputs: [out],
    inputs: [input],
    workgroups: grid1d(rec.gpu, n, WG),
  });
}

/**
 * y ← o with its heads laid side by side. y: (B, T, H·D); o: (B, H, T, D).
 * @example await mergeHeads(rec, attnY, o);
 */
export function mergeHeads(rec: Recorder, y: Tensor, o: Tensor): Promise<void> {
  return merge("mergeHeads", rec, y, o, o, y);
}

/**
 * dO ← dy split back per head (the transpose of mergeHeads). dO: (B, H, T, D); dy: (B, T, H·D).
 * @example await mergeHeadsBackward(rec, dO, dAttnY);
 */
export function mergeHeadsBackward(rec: Recorder, dO: Tensor, dy: Tensor): Promise<void> {
  return merge("mergeHeadsBackward", rec, dO, dy, dO, dy);
}
