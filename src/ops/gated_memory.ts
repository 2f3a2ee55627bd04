/**
 * Launchers for LIFT's Gated Memory kernels (kernels/gated_memory.wgsl; methods spec §4.3). Per query head
 * i and token n = b·T + t, with q the head's query before RoPE:
 *
 *   mem = W2·SiLU(W1·q)   g = σ(3·(wᵀ·SiLU(V·q) − 1))   out = (1 − g)·o + g·mem
 *
 * The four per-head linears are batched matmuls over heads on head-major rows (H, N, ·) (the adapter in
 * src/methods/gated_memory.ts records them); these launchers hold the rest: the layout change to and from
 * head-major rows, SiLU and its backward, the gate, the mix that also merges the heads, and the mix's and
 * the gate's backward (with the gate regulariser's gradient).
 */
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import { f32, type Recorder } from "../gpu/recorder.ts";
import { numel, type Tensor } from "../gpu/tensor.ts";
import { checkF32, checkIs, shapeText } from "./checks.ts";

const WG = 256;

/**
 * The gate's hidden width ⌊√D⌋ for head size D.
 * @example gateWidth(12) === 3; gateWidth(128) === 11;
 */
export function gateWidth(D: number): number {
  if (!Number.isInteger(D) || D < 1) {
    throw new RangeError(`gated memory: head size D = ${D} must be a positive integer`);
  }
  let s = Math.floor(Math.sqrt(D));
  while (s * s > D) s--;
  while ((s + 1) * (s + 1) <= D) s++;
  return s;
}

function checkCount(what: string, n: number): void {
  if (n > 0xffffffff) throw new RangeError(`${what}: ${n} elements exceed the u32 indices of the kernels`);
}

// B, H, T, D of a (B, H, T, D) tensor.
function perHead(what: string, t: Tensor): [number, number, number, number] {
  if (t.shape.length !== 4) throw new RangeError(`${what}: ${shapeText(t)} must be (B, H, T, D)`);
  const [B, H, T, D] = t.shape;
  return [B, H, T, D];
}

// H, N, X of an (H, N, X) tensor.
function headRowsShape(what: string, t: Tensor, role: string): [number, number, number] {
  if (t.shape.length !== 3) throw new RangeError(`${what}: ${shapeText(t)} must be ${role}`);
  const [H, N, X] = t.shape;
  return [H, N, X];
}

async function launch(
  rec: Recorder,
  entry: string,
  sizes: { B: number; T: number; H: number; D: number; S: number; count: number; reg?: number },
  outputs: readonly Tensor[],
  inputs: readonly Tensor[],
): Promise<void> {
  checkCount(entry, sizes.count);
  const k = await kernel(rec.gpu, { file: "gated_memory", entry, constants: { WG } });
  rec.dispatch(k, {
    uniforms: [sizes.B, sizes.T, sizes.H, sizes.D, sizes.S, sizes.count, f32(sizes.reg ?? 0)],
    outputs,
    inputs,
    workgroups: grid1d(rec.gpu, sizes.count, WG),
  });
}

/**
 * rows (H, B·T, D) ← x (B, H, T, D): the heads as head-major rows, so one batched matmul over heads
 * applies each head's own weights.
 * @example await headRows(rec, qRows, qPre);
 */
export async function headRows(rec: Recorder, rows: Tensor, x: Tensor): Promise<void> {
  const what = "headRows";
  checkF32(what, [rows, x]);
  const [B, H, T, D] = perHead(what, x);
  checkIs(what, rows, [H, B * T, D], "(H, B·T, D)");
  await launch(rec, what, { B, T, H, D, S: 0, count: numel(x.shape) }, [rows], [x]);
}

/**
 * x (B, H, T, D) ← rows (H, B·T, D), the inverse of headRows (a permutation: written, not added).
 * @example await headRowsBackward(rec, dqPre, dqRows);
 */
export async function headRowsBackward(rec: Recorder, x: Tensor, rows: Tensor): Promise<void> {
  const what = "headRowsBackward";
  checkF32(what, [rows, x]);
  const [B, H, T, D] = perHead(what, x);
  checkIs(what, rows, [H, B * T, D], "(H, B·T, D)");
  await launch(rec, what, { B, T, H, D, S: 0, count: numel(x.shape) }, [x], [rows]);
}

function sameShape(what: string, first: Tensor, others: readonly Tensor[]): number {
  checkF32(what, [first, ...others]);
  for (const t of others) checkIs(what, t, first.shape, `the shape of ${first.label}`);
  return numel(first.shape);
}

/**
 * out = SiLU(x) = x·σ(x). out, x: one shape.
 * @example await siluForward(rec, hidden, preActivation);
 */
export async function siluForward(rec: Recorder, out: Tensor, x: Tensor): Promise<void> {
  const count = sameShape("silu", x, [out]);
  await launch(rec, "silu", { B: 1, T: 1, H: 1, D: 1, S: 0, count }, [out], [x]);
}

/**
 * dx = dout·SiLU'(x) = dout·σ(x)·(1 + x·(1 − σ(x))), written. dx, dout, x: one shape.
 * @example await siluBackward(rec, dPre, dHidden, preActivation);
 */
export async function siluBackward(rec: Recorder, dx: Tensor, dout: Tensor, x: Tensor): Promise<void> {
  const count = sameShape("siluBackward", x, [dx, dout]);
  await launch(rec, "siluBackward", { B: 1, T: 1, H: 1, D: 1, S: 0, count }, [dx], [x, dout]);
}

/**
 * The gate: a = SiLU(z) (H, N, S) and g = σ(3·(Σ_s w[i, s]·a[i, n, s] − 1)) (H, N), from z = V·q (H, N, S)
 * and w (H, S).
 * @example await gateForward(rec, gateHidden, gate, gatePre, w);
 */
export async function gateForward(rec: Recorder, a: Tensor, g: Tensor, z: Tensor, w: Tensor): Promise<void> {
  const what = "gateForward";
  checkF32(what, [a, g, z, w]);
  const [H, N, S] = headRowsShape(what, z, "(H, N, S)");
  checkIs(what, a, [H, N, S], "(H, N, S)");
  checkIs(what, g, [H, N], "(H, N)");
  checkIs(what, w, [H, S], "(H, S)");
  await launch(rec, what, { B: 1, T: N, H, D: 0, S, count: H * N }, [a, g], [z, w]);
}

// B, H, T, D of the mix after checking att, mem and g against o.
function mixSizes(
  what: string,
  att: Tensor,
  o: Tensor,
  mem: Tensor,
  g: Tensor,
): [number, number, number, number] {
  const [B, H, T, D] = perHead(what, o);
  checkIs(what, att, [B, T, H * D], "(B, T, H·D)");
  checkIs(what, mem, [H, B * T, D], "(H, B·T, D)");
  checkIs(what, g, [H, B * T], "(H, B·T)");
  return [B, H, T, D];
}

/**
 * att (B, T, H·D) = (1 − g)·o + g·mem, the heads merged as the output projection reads them.
 * o: (B, H, T, D); mem: (H, B·T, D); g: (H, B·T).
 * @example await gatedMix(rec, att, o, mem, gate);
 */
export async function gatedMix(rec: Recorder, att: Tensor, o: Tensor, mem: Tensor, g: Tensor): Promise<void> {
  const what = "gatedMix";
  checkF32(what, [att, o, mem, g]);
  const [B, H, T, D] = mixSizes(what, att, o, mem, g);
  await launch(rec, what, { B, T, H, D, S: 0, count: numel(att.shape) }, [att], [o, mem, g]);
}

/**
 * The mix's backward from datt (B, T, H·D): dO (B, H, T, D) = (1 − g)·datt, dmem (H, B·T, D) = g·datt and
 * dg (H, B·T) = Σ_d datt·(mem − o) (summed over d in order), all written.
 * @example await gatedMixBackward(rec, dO, dmem, dgate, datt, o, mem, gate);
 */
export async function gatedMixBackward(
  rec: Recorder,
  dO: Tensor,
  dmem: Tensor,
  dg: Tensor,
  datt: Tensor,
  o: Tensor,
  mem: Tensor,
  g: Tensor,
): Promise<void> {
  const what = "gatedMixBackward";
  checkF32(what, [dO, dmem, dg, datt, o, mem, g]);
  const [B, H, T, D] = mixSizes(what, datt, o, mem, g);
  checkIs(what, dO, o.shape, "the shape of o");
  checkIs(what, dmem, mem.shape, "the shape of mem");
  checkIs(what, dg, g.shape, "the shape of g");
  await launch(rec, what, { B, T, H, D, S: 0, count: H * B * T }, [dO, dmem, dg], [datt, o, mem, g]);
}

/**
 * The gate's backward: with dg (H, N) from the mix plus the regulariser's reg·lossWeights[n] (reg =
 * d(regulariser)/dg per unit loss weight), du = 3·g·(1 − g)·dg (H, N) and dz = du·w·SiLU'(z) (H, N, S),
 * written. g: (H, N); z: (H, N, S); w: (H, S); lossWeights: (N,).
 * @example await gateBackward(rec, du, dz, dgate, gate, gatePre, w, ctx.lossWeights, scale / (H * L));
 */
export async function gateBackward(
  rec: Recorder,
  du: Tensor,
  dz: Tensor,
  dg: Tensor,
  g: Tensor,
  z: Tensor,
  w: Tensor,
  lossWeights: Tensor,
  reg: number,
): Promise<void> {
  const what = "gateBackward";
  checkF32(what, [du, dz, dg, g, z, w, lossWeights]);
  const [H, N, S] = headRowsShape(what, z, "(H, N, S)");
  checkIs(what, dz, [H, N, S], "(H, N, S)");
  for (const t of [du, dg, g]) checkIs(what, t, [H, N], "(H, N)");
  checkIs(what, w, [H, S], "(H, S)");
  if (numel(lossWeights.shape) !== N) {
    throw new RangeError(`${what}: ${shapeText(lossWeights)} must hold one loss weight per token (${N})`);
  }
  if (!Number.isFinite(reg)) throw new RangeError(`${what}: reg = ${reg} must be finite`);
  await launch(rec, what, { B: 1, T: N, H, D: 0, S, count: H * N, reg }, [du, dz], [
    dg,
    g,
    z,
    w,
    lossWeights,
  ]);
}
