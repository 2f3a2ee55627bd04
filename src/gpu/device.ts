/**
 * The WebGPU device: one per process, opened with the adapter's own limits so kernels get the
 * storage bindings, workgroup memory and buffer sizes the hardware really has (the WebGPU defaults
 * are 8 storage buffers, 16 KiB workgroup memory and 256 MiB buffers).
 */

/** Raised when no WebGPU adapter exists; the CLI turns it into one message and exit code 1. */
export class NoGpuError extends Error {
  constructor(detail: string) {
    super(
      `no WebGPU adapter (${detail}). longtune needs WebGPU: on Linux without a GPU install Mesa ` +
        `(apt-get install mesa-vulkan-drivers libvulkan1, or libgl1-mesa-dri for the OpenGL path); ` +
        `with a GPU install its Vulkan/Metal/D3D12 driver.`,
    );
    this.name = "NoGpuError";
  }
}

/** Raised when the device reports a validation or out-of-memory error; names the kernels involved. */
export class GpuError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GpuError";
  }
}

/** What a report records about the adapter. */
export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  features: string[];
  limits: Record<string, number>;
  /**
   * Smallest and largest subgroup size, or null where the runtime does not say. Deno does not name the
   * backend, and llvmpipe reports the same description through OpenGL and Vulkan while compiling shaders
   * differently (different float bits); the subgroup range differs (4–128 vs 8–8), so it keys "same
   * adapter" for bitwise comparisons.
   */
  subgroupSizes: [number, number] | null;
}

/** An open device plus the facts launchers need to pick kernels and check sizes. */
export interface Gpu {
  device: GPUDevice;
  adapter: AdapterDescription;
  limits: GPUSupportedLimits;
  /** True when the adapter runs on the CPU (llvmpipe/lavapipe/SwiftShader/WARP). */
  software: boolean;
  hasTimestamps: boolean;
  /** Set once the device is lost; every later use throws. */
  lost: string | null;
}

// The limits that shape kernels and memory; each is requested at the adapter's maximum.
const wantedLimits = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxStorageBuffersPerShaderStage",
  "maxStorageTexturesPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxTextureDimension2D",
  "maxUniformBufferBindingSize",
  "maxBindGroups",
] as const;

function limitsRecord(limits: GPUSupportedLimits): Record<string, number> {
  const out: Record<string, number> = {};
  for (const key in limits) {
    const value = (limits as unknown as Record<string, unknown>)[key];
    if (typeof value === "number") out[key] = value;
  }
  return out;
}

function subgroupSizes(info: GPUAdapterInfo): [number, number] | null {
  const { subgroupMinSize, subgroupMaxSize } = info as GPUAdapterInfo & {
    subgroupMinSize?: number;
    subgroupMaxSize?: number;
  };
  return typeof subgroupMinSize === "number" && typeof subgroupMaxSize === "number"
    ? [subgroupMinSize, subgroupMaxSize]
    : null;
}

function isSoftwareAdapter(info: GPUAdapterInfo): boolean {
  const text = `${info.description} ${info.vendor} ${info.device}`.toLowerCase();
  return info.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader|warp|software/.test(text);
}

let opened: Promise<Gpu> | null = null;

/**
 * The process-wide device, opened on first use.
 * @example const gpu = await getGpu(); console.log(gpu.adapter.description);
 */
export function getGpu(): Promise<Gpu> {
  opened ??= openGpu().catch((err) => {
    opened = null;
    throw err;
  });
  return opened;
}

async function openGpu(): Promise<Gpu> {
  if (typeof navigator === "undefined" || !("gpu" in navigator) || !navigator.gpu) {
    throw new NoGpuError("this runtime has no navigator.gpu");
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new NoGpuError("navigator.gpu.requestAdapter() returned null");
  const requiredLimits: Record<string, number> = {};
  for (const key of wantedLimits) {
    const value = (adapter.limits as unknown as Record<string, number>)[key];
    if (typeof value === "number") requiredLimits[key] = value;
  }
  const hasTimestamps = adapter.features.has("timestamp-query");
  const requiredFeatures: GPUFeatureName[] = hasTimestamps ? ["timestamp-query"] : [];
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  const info = adapter.info;
  const gpu: Gpu = {
    device,
    adapter: {
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      isFallbackAdapter: info.isFallbackAdapter ?? false,
      features: [...adapter.features].sort(),
      limits: limitsRecord(device.limits),
      subgroupSizes: subgroupSizes(info),
    },
    limits: device.limits,
    software: isSoftwareAdapter(info),
    hasTimestamps,
    lost: null,
  };
  device.lost?.then((reason) => {
    gpu.lost = `${reason.reason}: ${reason.message}`;
  });
  return gpu;
}

/** Throws if the device has been lost, naming what was about to run. */
export function assertAlive(gpu: Gpu, what: string): void {
  if (gpu.lost) throw new GpuError(`GPU device lost before ${what}: ${gpu.lost}`);
}

/**
 * Runs `body` inside validation and out-of-memory error scopes and throws a GpuError naming
 * `what` if the device reported one.
 */
export async function checked<T>(gpu: Gpu, what: string, body: () => T): Promise<T> {
  assertAlive(gpu, what);
  gpu.device.pushErrorScope("out-of-memory");
  gpu.device.pushErrorScope("validation");
  let result: T | undefined;
  let thrown: unknown = null;
  try {
    result = body();
  } catch (err) {
    thrown = err;
  }
  const validation = await gpu.device.popErrorScope();
  const oom = await gpu.device.popErrorScope();
  const err = validation ?? oom;
  if (err) throw new GpuError(`${what}: ${err.message}`);
  if (thrown !== null) throw thrown;
  return result as T;
}
