/**
 * A model's base weights on the device: the parameter table's flat buffer and a named view per tensor.
 * Initialisation is GPT-2's (nanoGPT's): N(0, 0.02) for matrices and embeddings, residual output
 * projections scaled by 1/√(2L), zero biases, unit norm gains. Every draw comes from Philox with
 * (seed, tensor index) as its stream, so a weight does not depend on the order tensors are made in.
 */
import type { Gpu } from "../gpu/device.ts";
import { createTensor, readF32, type Tensor, upload } from "../gpu/tensor.ts";
import { fillNormal } from "../random/philox.ts";
import { dims, type ModelConfig, type ModelDims } from "./config.ts";
import { type ParamEntry, type ParamTable, paramTable } from "./params.ts";

/** The device copy of a model's base parameters. */
export interface ModelWeights {
  config: ModelConfig;
  dims: ModelDims;
  table: ParamTable;
  /** (table.size,) f32: every base tensor at its table offset. */
  params: Tensor;
}

/** A named tensor of a flat table buffer (params, grads, or an optimizer moment) as a Tensor. */
export function view(flat: Tensor, entry: ParamEntry): Tensor {
  return {
    buffer: flat.buffer,
    offset: flat.offset + entry.offset * 4,
    shape: entry.shape,
    dtype: "f32",
    label: entry.name,
  };
}

/** The view of `name` in `flat`, with an error naming the tensor when the table has none. */
export function viewOf(flat: Tensor, table: ParamTable, name: string): Tensor {
  const entry = table.byName.get(name);
  if (!entry) throw new RangeError(`parameter table has no tensor "${name}"`);
  return view(flat, entry);
}

/** Host values of a freshly initialised model (f32, the table's layout). */
export function initialWeights(config: ModelConfig, seed: number): Float32Array {
  const table = paramTable(config);
  const { L } = dims(config);
  const out = new Float32Array(table.size);
  table.entries.forEach((e, index) => {
    const values = out.subarray(e.offset, e.offset + e.numel);
    if (e.role === "norm") {
      // LayerNorm/RMSNorm gains are 1, LayerNorm biases 0.
      values.fill(e.name.endsWith(".b") ? 0 : 1);
    } else if (e.role === "bias") {
      values.fill(0);
    } else {
      const residual = /\.(attnOut|fcProj|down)\.w$/.test(e.name);
      fillNormal(values, seed, index, 0, residual ? 0.02 / Math.sqrt(2 * L) : 0.02);
    }
  });
  return out;
}

/**
 * Allocates the parameter buffer and uploads `values` (from `initialWeights` or a checkpoint).
 * @example const w = createWeights(gpu, config, initialWeights(config, 1337));
 */
export function createWeights(gpu: Gpu, config: ModelConfig, values: Float32Array): ModelWeights {
  const table = paramTable(config);
  if (values.length !== table.size) {
    throw new RangeError(
      `weights: ${values.length} values given, the ${config.family} table holds ${table.size}`,
    );
  }
  const params = createTensor(gpu, [table.size], { label: "params" });
  upload(gpu, params, values);
  return { config, dims: dims(config), table, params };
}

/** Reads every base parameter back (one readback). */
export function readWeights(gpu: Gpu, weights: ModelWeights): Promise<Float32Array> {
  return readF32(gpu, weights.params);
}
