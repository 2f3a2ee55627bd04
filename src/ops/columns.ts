/**
 * Column blocks of row-major (N, W) matrices (kernels/columns.wgsl): `addColumns` adds α·block into
 * columns [off, off + w); `getColumns` copies them out. Adapters on q, k or v use them to reach their
 * part of the fused qkv projection without a strided matmul.
 */
import { grid1d } from "../gpu/grid.ts";
import { kernel } from "../gpu/kernel.ts";
import { f32, type Recorder } from "../gpu/recorder.ts";
import { numel, type Tensor } from "../gpu/tensor.ts";

const WG = 256;

function dims(what: string, wide: Tensor, block: Tensor, off: number): [number, number, number] {
  for (const t of [wide, block]) {
    if (t.dtype !== "f32") throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected f32`);
  }
  const W = wide.shape[wide.shape.length - 1];
  const w = block.shape[block.shape.length - 1];
  const N = numel(wide.shape) / W;
  if (numel(block.shape) !== N * w) {
    throw new RangeError(
      `${what}: ${block.label} [${block.shape.join(", ")}] must have the ${N} rows of ${wide.label} ` +
        `[${wide.shape.join(", ")}]`,
    );
  }
  if (!Number.isInteger(off) || off < 0 || off + w > W) {
    throw new RangeError(`${what}: columns [${off}, ${off + w}) do not fit in ${W} columns of ${wide.label}`);
  }
  return [N, W, w];
}

/**
 * out[:, off : off + w] += α·block.
 * @example await addColumns(rec, qkv, deltaQ, 0, scale);
 */
export async function addColumns(
  rec: Recorder,
  out: Tensor,
  block: Tensor,
  off: number,
  alpha = 1,
): Promise<void> {
  const [N, W, w] = dims("addColumns", out, block, off);
  const k = await kernel(rec.gpu, { file: "columns", entry: "addBlock", constants: { WG } });
  rec.dispatch(k, {
    uniforms: [N, W, w, off, f32(alpha)],
    outputs: [out],
    inputs: [block],
    workgroups: grid1d(rec.gpu, N * w, WG),
  });
}

/**
 * out = wide[:, off : off + w].
 * @example await getColumns(rec, dq, dqkv, 0);
 */
export async function getColumns(rec: Recorder, out: Tensor, wide: Tensor, off: number): Promise<void> {
  const [N, W, w] = dims("getColumns", wide, out, off);
  const k = await kernel(rec.gpu, { file: "columns", entry: "getBlock", constants: { WG } });
  rec.dispatch(k, {
    uniforms: [N, W, w, off, f32(1)],
    outputs: [out],
    inputs: [wide],
    workgroups: grid1d(rec.gpu, N * w, WG),
  });
}
