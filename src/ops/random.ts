/** Launchers for device-side random fills (kernels/random.wgsl); bit-identical to src/random/philox.ts for uniforms. */
import type { Gpu } from "../gpu/device.ts";
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import { f32, type Recorder } from "../gpu/recorder.ts";
import { numel, type Tensor } from "../gpu/tensor.ts";
import { seedKey } from "../random/philox.ts";

const WG = 256;

/** Options of a random fill: which seed and stream, and where `out[0]` sits in the stream. */
export interface FillOptions {
  seed: number;
  stream: number;
  start?: number;
}

async function fill(
  rec: Recorder,
  entry: "fillUniform" | "fillNormal",
  out: Tensor,
  a: number,
  b: number,
  opts: FillOptions,
): Promise<void> {
  const gpu: Gpu = rec.gpu;
  if (out.dtype !== "f32") throw new TypeError(`${entry}: ${out.label} is ${out.dtype}, expected f32`);
  const n = numel(out.shape);
  const start = opts.start ?? 0;
  if (start + n > 0xffffffff) throw new RangeError(`${entry}: element indices up to ${start + n} exceed 2³²`);
  const [seedLo, seedHi] = seedKey(opts.seed);
  const k = await kernel(gpu, { file: "random", entry, constants: { WG } });
  rec.dispatch(k, {
    uniforms: [n, seedLo, seedHi, opts.stream >>> 0, start, f32(a), f32(b)],
    outputs: [out],
    inputs: [],
    workgroups: grid1d(gpu, n, WG),
  });
}

/** out ← U[lo, hi) elementwise. out: any shape. */
export function fillUniform(
  rec: Recorder,
  out: Tensor,
  lo: number,
  hi: number,
  opts: FillOptions,
): Promise<void> {
  return fill(rec, "fillUniform", out, lo, hi, opts);
}

/** out ← N(mean, std²) elementwise. out: any shape. */
export function fillNormal(
  rec: Recorder,
  out: Tensor,
  mean: number,
  std: number,
  opts: FillOptions,
): Promise<void> {
  return fill(rec, "fillNormal", out, mean, std, opts);
}
