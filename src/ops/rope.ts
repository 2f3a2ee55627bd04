/**
 * Launchers for rotary position embeddings (kernels/rope.wgsl) on q or k laid out (B, H, T, D),
 * rotate-half convention (pairs (i, i + D/2)). cos and sin come from (P, D/2) tables built on the
 * host in f64 by `ropeTables` (src/model/rope_scaling.ts), with YaRN's attention factor folded in.
 */
import type { Gpu } from "../gpu/device.ts";
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { numel, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import type { RopeTables } from "../model/rope_scaling.ts";
import { shapeText } from "./checks.ts";

const WG = 256;

/** The device copies of a pair of RoPE tables. */
export interface RopeTableTensors {
  /** (P, D/2) m·cos(p·inv_freq_i). */
  cos: Tensor;
  /** (P, D/2) m·sin(p·inv_freq_i). */
  sin: Tensor;
}

/**
 * Uploads host tables into two new tensors.
 * @example const tables = uploadRopeTables(gpu, ropeTables({ type: "none" }, 64, 4096));
 */
export function uploadRopeTables(gpu: Gpu, tables: RopeTables, label = "rope"): RopeTableTensors {
  const shape = [tables.P, tables.D / 2];
  return {
    cos: tensorFrom(gpu, shape, tables.cos, { label: `${label}.cos` }),
    sin: tensorFrom(gpu, shape, tables.sin, { label: `${label}.sin` }),
  };
}

function checkRope(
  name: string,
  out: Tensor,
  x: Tensor,
  tables: RopeTableTensors,
  positions: Tensor | number,
): { T: number; half: number; P: number } {
  for (const t of [out, x, tables.cos, tables.sin]) {
    if (t.dtype !== "f32") throw new TypeError(`${name}: ${t.label} is ${t.dtype}, expected f32`);
  }
  if (x.shape.length !== 4) {
    throw new RangeError(`${name}: ${shapeText(x)} must be (B, H, T, D)`);
  }
  if (out.shape.length !== 4 || out.shape.some((d, k) => d !== x.shape[k])) {
    throw new RangeError(`${name}: ${shapeText(out)} must have the shape of ${shapeText(x)}`);
  }
  const [, , T, D] = x.shape;
  if (D % 2 !== 0) {
    throw new RangeError(`${name}: ${shapeText(x)} has an odd head size D = ${D}; RoPE pairs (i, i + D/2)`);
  }
  const half = D / 2;
  for (const t of [tables.cos, tables.sin]) {
    if (t.shape.length !== 2 || t.shape[1] !== half) {
      throw new RangeError(`${name}: table ${shapeText(t)} must be (P, D/2) with D/2 = ${half}`);
    }
  }
  const P = tables.cos.shape[0];
  if (tables.sin.shape[0] !== P) {
    throw new RangeError(`${name}: tables ${shapeText(tables.cos)} and ${shapeText(tables.sin)} differ`);
  }
  if (typeof positions === "number") {
    if (!Number.isInteger(positions) || positions < 0 || positions + T > P) {
      throw new RangeError(
        `${name}: positions offset ${positions} … ${positions + T - 1} for T = ${T} must lie in the ` +
          `tables' 0 … ${P - 1} (${shapeText(tables.cos)})`,
      );
    }
  } else {
    if (positions.dtype !== "u32") {
      throw new TypeError(`${name}: positions ${positions.label} is ${positions.dtype}, expected u32`);
    }
    if (positions.shape.length !== 1 || positions.shape[0] !== T) {
      throw new RangeError(`${name}: positions ${shapeText(positions)} must be (T,) with T = ${T}`);
    }
  }
  return { T, half, P };
}

async function rope(
  name: string,
  transpose: boolean,
  rec: Recorder,
  out: Tensor,
  x: Tensor,
  tables: RopeTableTensors,
  positions: Tensor | number,
): Promise<void> {
  const { T, half, P } = checkRope(name, out, x, tables, positions);
  const pairs = numel(x.shape) / 2;
  const atOffset = typeof positions === "number";
  const k = await kernel(rec.gpu, {
    file: "rope",
    entry: atOffset ? "ropeAtOffset" : "ropeAtPositions",
    constants: { WG, TRANSPOSE: transpose ? 1 : 0 },
  });
  rec.dispatch(k, {
    uniforms: [pairs, T, half, P, atOffset ? positions : 0],
    outputs: [out],
    inputs: atOffset ? [x, tables.cos, tables.sin] : [x, tables.cos, tables.sin, positions],
    workgroups: grid1d(rec.gpu, pairs, WG),
  });
}

/**
 * out = x·cos + rotate_half(x)·sin at each token's position. out, x: (B, H, T, D); tables (P, D/2);
 * `positions` is a (T,) u32 tensor of positions (S²-Attn keeps global ones) or the position of t = 0.
 * Positions ≥ P give NaN.
 * @example await ropeForward(rec, qRot, q, tables, 0);
 */
export function ropeForward(
  rec: Recorder,
  out: Tensor,
  x: Tensor,
  tables: RopeTableTensors,
  positions: Tensor | number,
): Promise<void> {
  return rope("ropeForward", false, rec, out, x, tables, positions);
}

/**
 * dx = Rᵀ·dout, the transpose of the forward rotation (dx_i = d_i·cos + d_{i+D/2}·sin,
 * dx_{i+D/2} = d_{i+D/2}·cos − d_i·sin). dx, dout: (B, H, T, D); the same tables and positions.
 * @example await ropeBackward(rec, dq, dqRot, tables, positions);
 */
export function ropeBackward(
  rec: Recorder,
  dx: Tensor,
  dout: Tensor,
  tables: RopeTableTensors,
  positions: Tensor | number,
): Promise<void> {
  return rope("ropeBackward", true, rec, dx, dout, tables, positions);
}
