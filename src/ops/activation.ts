/**
 * Launchers for the MLP activations, kernels/activation.wgsl: GELU (tanh form, GPT-2) and SwiGLU
 * (Llama). Backwards write their gradients (they feed a matmul backward, nothing accumulates there).
 *
 * SwiGLU takes gate and up as two (N, F) tensors, not one fused (N, 2F) buffer: Llama's w1 and w3
 * projections are two matmuls writing two tensors, and two views need no row-stride arithmetic in
 * the kernel. Both may be views into one buffer (they are read-only), and so may dgate and dup.
 */
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { numel, type Tensor } from "../gpu/tensor.ts";

const WG = 256;

function checkSameShape(op: string, first: Tensor, others: readonly Tensor[]): number {
  const n = numel(first.shape);
  for (const t of [first, ...others]) {
    if (t.dtype !== "f32") throw new TypeError(`${op}: ${t.label} is ${t.dtype}, expected f32`);
    if (t.shape.length !== first.shape.length || t.shape.some((d, i) => d !== first.shape[i])) {
      throw new RangeError(
        `${op}: ${t.label} has shape [${t.shape.join(", ")}], expected the shape of ${first.label} ` +
          `[${first.shape.join(", ")}]`,
      );
    }
  }
  return n;
}

async function elementwise(
  rec: Recorder,
  entry: string,
  outputs: readonly Tensor[],
  inputs: readonly Tensor[],
): Promise<void> {
  const n = checkSameShape(entry, outputs[0], [...outputs.slice(1), ...inputs]);
  const k = await kernel(rec.gpu, { file: "activation", entry, constants: { WG } });
  rec.dispatch(k, { uniforms: [n], outputs, inputs, workgroups: grid1d(rec.gpu, n, WG) });
}

/** out = ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as GPT-2. out, x: any one shape, e.g. (N, 4C). */
export function geluForward(rec: Recorder, out: Tensor, x: Tensor): Promise<void> {
  return elementwise(rec, "geluForward", [out], [x]);
}

/** dx = dout·gelu'(x), written. dx, dout, x: one shape. */
export function geluBackward(rec: Recorder, dx: Tensor, dout: Tensor, x: Tensor): Promise<void> {
  return elementwise(rec, "geluBackward", [dx], [dout, x]);
}

/** out = silu(gate)·up with silu(g) = g·σ(g), as Llama's MLP. out, gate, up: (N, F). */
export function swigluForward(rec: Recorder, out: Tensor, gate: Tensor, up: Tensor): Promise<void> {
  return elementwise(rec, "swigluForward", [out], [gate, up]);
}

/**
 * dgate = dout·up·σ(g)·(1 + g·(1 − σ(g))) and dup = dout·silu(gate), written.
 * dgate, dup, dout, gate, up: (N, F).
 */
export function swigluBackward(
  rec: Recorder,
  dgate: Tensor,
  dup: Tensor,
  dout: Tensor,
  gate: Tensor,
  up: Tensor,
): Promise<void> {
  return elementwise(rec, "swigluBackward", [dgate, dup], [dout, gate, up]);
}
