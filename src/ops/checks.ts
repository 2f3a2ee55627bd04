/**
 * The argument checks kernel launchers share, so every launcher's errors read alike: the operation, the
 * tensor's label and shape, and what was expected.
 */
import type { Tensor } from "../gpu/tensor.ts";

/** A tensor as errors name it: "label (d0, d1, …)". */
export const shapeText = (t: Tensor): string => `${t.label} (${t.shape.join(", ")})`;

/** Throws a TypeError naming `what` and the first tensor that is not f32. */
export function checkF32(what: string, tensors: readonly Tensor[]): void {
  for (const t of tensors) {
    if (t.dtype !== "f32") throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected f32`);
  }
}

/**
 * Throws unless `t` has exactly the shape `want` (whose dimensions `names` spells, e.g. "(B, H, T)") and,
 * when given, the dtype.
 */
export function checkIs(
  what: string,
  t: Tensor,
  want: readonly number[],
  names: string,
  dtype?: "f32" | "u32",
): void {
  if (dtype && t.dtype !== dtype) throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected ${dtype}`);
  if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i])) {
    throw new RangeError(`${what}: ${shapeText(t)} must be ${names} = (${want.join(", ")})`);
  }
}
