/**
 * longtune: a reproducible benchmark harness for parameter-efficient and long-context fine-tuning,
 * with every kernel written in WGSL and run through Deno's WebGPU.
 *
 * This module is the public API. Everything exported here is documented; nothing else is public.
 *
 * @example
 * ```ts
 * import { getGpu, Recorder, createTensor, readF32 } from "./mod.ts";
 * const gpu = await getGpu();
 * console.log(gpu.adapter.description);
 * ```
 * @module
 */

export { type AdapterDescription, getGpu, type Gpu, GpuError, NoGpuError } from "./src/gpu/device.ts";
export { type Kernel, kernel, kernelSource, type KernelSpec } from "./src/gpu/kernel.ts";
export { type DispatchSpec, f32, i32, Recorder, type Uniform } from "./src/gpu/recorder.ts";
export {
  BufferPool,
  createTensor,
  type DType,
  numel,
  poison,
  readF32,
  readTensors,
  type Tensor,
  tensorFrom,
  upload,
} from "./src/gpu/tensor.ts";
export { fillNormal, fillUniform, philox4x32, Rng } from "./src/random/philox.ts";
export { fillNormal as fillNormalGpu, fillUniform as fillUniformGpu } from "./src/ops/random.ts";
