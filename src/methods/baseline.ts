/**
 * The two reference points every comparison needs: `baseline` (the base model, not trained) and `full`
 * (full fine-tuning: every base tensor trains with AdamW).
 */
import { z } from "zod";
import { ALL_BASE, NO_BASE } from "../model/adapter.ts";
import { parameterCount, paramTable } from "../model/params.ts";
import { createWeights } from "../model/weights.ts";
import type { Method } from "./method.ts";

const baselineConfigSchema = z.object({}).strict();

/** No training: the base model as it is. */
export const baseline: Method<typeof baselineConfigSchema> = {
  name: "baseline",
  title: "Baseline: the base model without training",
  config: baselineConfigSchema,
  parameterCount: () => 0,
  prepare: (ctx) =>
    Promise.resolve({
      weights: ctx.base,
      adapter: null,
      trainable: NO_BASE,
      trainableParameters: 0,
      details: {},
      destroy: () => {},
    }),
};

const fullConfigSchema = z.object({}).strict();

/** Full fine-tuning: every base parameter trains, on a copy of the base weights. */
export const full: Method<typeof fullConfigSchema> = {
  name: "full",
  title: "Full fine-tuning: every base parameter trains (AdamW)",
  config: fullConfigSchema,
  parameterCount: (model) => parameterCount(paramTable(model)),
  prepare: (ctx) => {
    const weights = createWeights(ctx.gpu, ctx.base.config, ctx.baseValues);
    return Promise.resolve({
      weights,
      adapter: null,
      trainable: ALL_BASE,
      trainableParameters: parameterCount(weights.table),
      details: {},
      destroy: () => weights.params.buffer.destroy(),
    });
  },
};
