/** Launcher of kernels/scalar.wgsl: writes a device scalar into a ring slot chosen by a device index. */
import { kernel } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { numel, type Tensor } from "../gpu/tensor.ts";

/**
 * history[slot[0] mod K] ← value[0]. history: (K,) f32; value: (1,) f32; slot: (1,) u32, written by the
 * host before each submit, so one recording logs every step into its own slot.
 * @example await storeAt(rec, lossHistory, lossSum, stepSlot);
 */
export async function storeAt(rec: Recorder, history: Tensor, value: Tensor, slot: Tensor): Promise<void> {
  if (history.dtype !== "f32" || value.dtype !== "f32" || numel(value.shape) !== 1) {
    throw new TypeError(`storeAt: ${history.label} must be f32 and ${value.label} a (1,) f32 tensor`);
  }
  if (slot.dtype !== "u32" || numel(slot.shape) !== 1) {
    throw new TypeError(`storeAt: ${slot.label} must be (1,) u32`);
  }
  const k = await kernel(rec.gpu, { file: "scalar", entry: "storeAt" });
  rec.dispatch(k, { outputs: [history], inputs: [value, slot], workgroups: [1] });
}
