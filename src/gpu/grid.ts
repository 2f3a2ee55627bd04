/**
 * Launch grids. WebGPU caps each grid dimension (65535 workgroups on most adapters), so a flat
 * 1-D launch over more elements spills into y; kernels rebuild the flat index as
 * `gid.x + gid.y * num_workgroups.x * WG`.
 */
import type { Gpu } from "./device.ts";

/** Workgroup counts covering `n` invocations with `wg` per workgroup. */
export function grid1d(gpu: Gpu, n: number, wg: number): [number, number] {
  const groups = Math.max(1, Math.ceil(n / wg));
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return [groups, 1];
  const y = Math.ceil(groups / max);
  if (y > max) throw new RangeError(`${n} invocations exceed a ${max}×${max} grid of ${wg}-wide workgroups`);
  return [Math.ceil(groups / y), y];
}
