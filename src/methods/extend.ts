/**
 * Context extension shared by the long-context methods (LongLoRA, HyLoRADA; methods spec §2.2, §3.4,
 * §3.5): a GPT-2 position table grown to the target length, and a Llama model whose RoPE is scaled
 * before its graph is built.
 *
 * - Learned positions: rows 0 … P−1 of `wpe` are copied, rows P … maxLength−1 are drawn from
 *   N(0, 0.02²) with Philox (seed, WPE_STREAM), so the same seed gives the same table on any device.
 *   `newRows` is the element range of the new rows in `wpe`, what a method trains when only the
 *   extension should learn.
 * - RoPE: RoPE has no parameters, so the scaled model is the base table under a new config; the graph
 *   reads `config.rope` when it builds its cos/sin tables.
 *
 * Both return a fresh device copy: a method whose base tensors train must never update the caller's
 * weights in place (PrepareContext.base).
 */
import type { Gpu } from "../gpu/device.ts";
import type { Gpt2Config, ModelConfig } from "../model/config.ts";
import { paramTable } from "../model/params.ts";
import type { RopeScalingInput } from "../model/rope_scaling.ts";
import { ropeScalingConfigSchema } from "../model/rope_scaling.ts";
import { createWeights, type ModelWeights } from "../model/weights.ts";
import { fillNormal } from "../random/philox.ts";

/** Philox stream of the new position rows ("wpe" in ASCII), apart from every per-matrix stream. */
export const WPE_STREAM = 0x777065;

/** New rows a GPT-2 position table needs for `maxLength` tokens (0 for Llama or when it fits). */
export function extensionRows(model: ModelConfig, maxLength: number): number {
  return model.family === "gpt2" ? Math.max(0, maxLength - model.maxPositions) : 0;
}

/** A model whose context was extended, with the host values it was uploaded from. */
export interface ExtendedModel {
  weights: ModelWeights;
  values: Float32Array;
  /** Element range of the new rows inside `wpe` (count 0 when nothing was added). */
  newRows: { from: number; count: number };
}

/**
 * GPT-2 with `wpe` grown to `maxLength` rows (copied, then N(0, 0.02²) rows from Philox). The other
 * tensors are copied unchanged.
 * @example const { weights, newRows } = extendPositions(gpu, base.config, baseValues, 4096, seed);
 */
export function extendPositions(
  gpu: Gpu,
  config: Gpt2Config,
  baseValues: Float32Array,
  maxLength: number,
  seed: number,
): ExtendedModel {
  const rows = extensionRows(config, maxLength);
  const extended: Gpt2Config = { ...config, maxPositions: config.maxPositions + rows };
  const values = extendedValues(config, extended, baseValues, seed);
  const C = config.nEmbd;
  return {
    weights: createWeights(gpu, extended, values),
    values,
    newRows: { from: config.maxPositions * C, count: rows * C },
  };
}

/** Host values of `extended` (a GPT-2 config with more positions) from the base's values. */
export function extendedValues(
  base: Gpt2Config,
  extended: Gpt2Config,
  baseValues: Float32Array,
  seed: number,
): Float32Array {
  const from = paramTable(base);
  const to = paramTable(extended);
  if (baseValues.length !== from.size) {
    throw new RangeError(`extendPositions: ${baseValues.length} base values, the table holds ${from.size}`);
  }
  if (extended.maxPositions < base.maxPositions) {
    throw new RangeError(
      `extendPositions: maxPositions ${extended.maxPositions} is below the base's ${base.maxPositions}`,
    );
  }
  const values = new Float32Array(to.size);
  for (const e of from.entries) {
    const target = to.byName.get(e.name)!;
    values.set(baseValues.subarray(e.offset, e.offset + e.numel), target.offset);
  }
  const wpe = to.byName.get("wpe")!;
  const old = base.maxPositions * base.nEmbd;
  fillNormal(values.subarray(wpe.offset + old, wpe.offset + wpe.numel), seed, WPE_STREAM, 0, 0.02, old);
  return values;
}

/**
 * A Llama model whose RoPE uses `rope` (the base's theta is kept), on a fresh device copy of the base
 * values. Refuses a base that is already scaled: composing two scalings is not what either paper did.
 * @example const w = scaleRope(gpu, base.config, baseValues, { type: "linear", factor: 4 });
 */
export function scaleRope(
  gpu: Gpu,
  config: ModelConfig,
  baseValues: Float32Array,
  rope: RopeScalingInput,
): ModelWeights {
  return createWeights(gpu, scaledRopeConfig(config, rope), baseValues);
}

/** The config of `scaleRope`. */
export function scaledRopeConfig(config: ModelConfig, rope: RopeScalingInput): ModelConfig {
  if (config.family !== "llama") {
    throw new RangeError(`RoPE scaling needs a Llama-family model; ${config.family} has learned positions`);
  }
  if (config.rope.type !== "none") {
    throw new RangeError(
      `RoPE scaling: the base model already uses rope.type "${config.rope.type}" (factor ` +
        `${config.rope.factor}); position interpolation expects an unscaled RoPE`,
    );
  }
  return {
    ...config,
    rope: ropeScalingConfigSchema.parse({
      ...rope,
      base: config.rope.base,
      originalMaxPositions: rope.originalMaxPositions ?? config.maxPositions,
    }),
  };
}
