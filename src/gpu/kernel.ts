/**
 * WGSL kernels: loaded from `kernels/`, specialised with `override` constants, compiled once.
 *
 * A kernel file may start with `//! import <name>` lines; each names another file in `kernels/`
 * (a library of WGSL functions such as `rng`) whose text is placed before the kernel's own.
 */
import { checked, type Gpu, GpuError } from "./device.ts";

const kernelDir = new URL("../../kernels/", import.meta.url);
const sources = new Map<string, string>();

/** The WGSL text of `kernels/<file>.wgsl` with its imports resolved. */
export function kernelSource(file: string): string {
  const cached = sources.get(file);
  if (cached !== undefined) return cached;
  const seen = new Set<string>();
  const parts: string[] = [];
  const visit = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    let text: string;
    try {
      text = Deno.readTextFileSync(new URL(`${name}.wgsl`, kernelDir));
    } catch (err) {
      throw new GpuError(`kernel file kernels/${name}.wgsl could not be read: ${(err as Error).message}`);
    }
    for (const match of text.matchAll(/^\/\/! import (\w+)\s*$/gm)) visit(match[1]);
    parts.push(`// ---- kernels/${name}.wgsl ----\n${text}`);
  };
  visit(file);
  const source = parts.join("\n");
  sources.set(file, source);
  return source;
}

/** Identifies one compiled pipeline: a file, an entry point and its override constants. */
export interface KernelSpec {
  file: string;
  entry: string;
  constants?: Record<string, number>;
}

/** A compiled compute pipeline with the name errors and timings use. */
export interface Kernel {
  name: string;
  pipeline: GPUComputePipeline;
}

const modules = new WeakMap<GPUDevice, Map<string, GPUShaderModule>>();
const pipelines = new WeakMap<GPUDevice, Map<string, Promise<Kernel>>>();

function kernelName(spec: KernelSpec): string {
  const constants = Object.entries(spec.constants ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const suffix = constants.map(([k, v]) => `${k}=${v}`).join(",");
  return `${spec.file}.${spec.entry}${suffix ? `<${suffix}>` : ""}`;
}

/**
 * The pipeline for `spec`, compiled on first request and cached per device.
 * Compilation errors are thrown as GpuError naming the kernel.
 * @example const k = await kernel(gpu, { file: "matmul", entry: "matmul", constants: { TILE: 16 } });
 */
export function kernel(gpu: Gpu, spec: KernelSpec): Promise<Kernel> {
  let cache = pipelines.get(gpu.device);
  if (!cache) pipelines.set(gpu.device, cache = new Map());
  const name = kernelName(spec);
  let entry = cache.get(name);
  if (!entry) {
    entry = compile(gpu, spec, name);
    cache.set(name, entry);
    entry.catch(() => cache.delete(name));
  }
  return entry;
}

async function compile(gpu: Gpu, spec: KernelSpec, name: string): Promise<Kernel> {
  let moduleCache = modules.get(gpu.device);
  if (!moduleCache) modules.set(gpu.device, moduleCache = new Map());
  let module = moduleCache.get(spec.file);
  if (!module) {
    const code = kernelSource(spec.file);
    module = await checked(
      gpu,
      `compiling kernels/${spec.file}.wgsl`,
      () => gpu.device.createShaderModule({ label: spec.file, code }),
    );
    const info = await module.getCompilationInfo?.();
    const errors = info?.messages.filter((m) => m.type === "error") ?? [];
    if (errors.length) {
      throw new GpuError(
        `kernels/${spec.file}.wgsl does not compile: ` +
          errors.map((m) => `line ${m.lineNum}:${m.linePos} ${m.message}`).join("; "),
      );
    }
    moduleCache.set(spec.file, module);
  }
  const pipeline = await checked(gpu, `creating pipeline ${name}`, () =>
    gpu.device.createComputePipeline({
      label: name,
      layout: "auto",
      compute: { module: module!, entryPoint: spec.entry, constants: spec.constants ?? {} },
    }));
  return { name, pipeline };
}
