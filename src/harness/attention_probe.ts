/**
 * Attention diagnostics of one prompt (benchmarks spec §5.3; methods spec §5.5's working definitions):
 * where the query that predicts the first answer token — the prompt's last position — puts its
 * attention, per layer and head, as softmax mass on token regions, averaged over layers and heads.
 *
 * The prompt runs through the model's own forward (the method's adapter and evaluation mask
 * attached); each layer's attention kernel leaves the queries and keys it used (after RoPE) and the
 * row log-sum-exp lse (sink logit included) in the graph, so the probability of key j for the last
 * query of head h is exp(scale_h · q·k_j − lse) — the kernel's own softmax, summed per region for that
 * one row by the attention-mass kernel (src/ops/attention_mass.ts) in the same submit as the forward.
 * The sink logit's own mass, exp(sink_h − lse), counts as sink mass.
 *
 * Defined for masks under which the last query sees every earlier key (causal, full); others refuse.
 */

import type { Gpu } from "../gpu/device.ts";
import { Recorder } from "../gpu/recorder.ts";
import { createTensor, readTensors, tensorFrom, upload } from "../gpu/tensor.ts";
import type { Adapter } from "../model/adapter.ts";
import { createGraph, destroyGraph, type GraphOptions, recordForward } from "../model/model.ts";
import type { ModelWeights } from "../model/weights.ts";
import { layerAttentionMass } from "../eval/diagnostics.ts";
import type { TokenSpan } from "../eval/sweeps.ts";

/** Token regions of a prompt (half-open spans). */
export interface AttentionRegions {
  /** The first `sinks` positions count as attention sinks. */
  sinks: number;
  context: TokenSpan[];
  needle: TokenSpan[];
  distractors: TokenSpan[];
}

/** Mean softmax mass of the last query on each region (null for a region with no span). */
export interface AttentionMasses {
  sink: number;
  context: number | null;
  needle: number | null;
  distractors: number | null;
}

/** What is probed: base weights, the method's adapter and its evaluation mask. */
export interface ProbeModel {
  weights: ModelWeights;
  adapter: Adapter | null;
  evalMask?: GraphOptions["mask"];
}

/**
 * Attention masses of the last position of `tokens` over `regions`, averaged over layers and heads.
 * @example const m = await attentionMasses(gpu, { weights, adapter: null }, tokens, { sinks: 4, context: [{ start: 4, end: tokens.length }], needle: [], distractors: [] });
 */
export async function attentionMasses(
  gpu: Gpu,
  model: ProbeModel,
  tokens: readonly number[],
  regions: AttentionRegions,
): Promise<AttentionMasses> {
  const mode = model.evalMask?.mode ?? "causal";
  if (mode !== "causal" && mode !== "full") {
    throw new RangeError(
      `attention diagnostics: the evaluation mask "${mode}" hides keys from the last query`,
    );
  }
  const T = tokens.length;
  if (T < 1) throw new RangeError("attention diagnostics: empty prompt");
  const g = createGraph(gpu, model.weights, {
    B: 1,
    T,
    training: false,
    mask: model.evalMask,
    adapter: model.adapter ?? undefined,
  });
  // Category bits per key: sink positions, context past the sinks, needle, distractors.
  const sinks = Math.min(regions.sinks, T);
  const bits = new Uint32Array(T);
  const mark = (spans: readonly TokenSpan[], bit: number, from = 0) => {
    for (const s of spans) {
      for (let j = Math.max(from, s.start); j < Math.min(T, s.end); j++) bits[j] |= bit;
    }
  };
  for (let j = 0; j < sinks; j++) bits[j] |= 1;
  mark(regions.context, 2, sinks);
  mark(regions.needle, 4);
  mark(regions.distractors, 8);
  const { L, H } = model.weights.dims;
  const categories = tensorFrom(gpu, [1, T], bits, { label: "probe.categories", dtype: "u32" });
  const masses = Array.from(
    { length: L },
    (_, l) => createTensor(gpu, [1, H, 1, 6], { label: `probe.mass.${l}` }),
  );
  try {
    upload(gpu, g.inputs.tokens, tokens);
    const rec = new Recorder(gpu, "attention probe");
    await recordForward(rec, g, { logitsOnly: true });
    for (let l = 0; l < L; l++) {
      await layerAttentionMass(rec, g, l, masses[l], categories, {
        categoryCount: 4,
        rows: { from: T - 1, to: T },
      });
    }
    await rec.submit();
    const values = (await readTensors(gpu, masses)) as Float32Array[];
    // Columns: sink, context, needle, distractors, no category, sink logit.
    const sums = { sink: 0, context: 0, needle: 0, distractors: 0 };
    for (const m of values) {
      for (let h = 0; h < H; h++) {
        const at = h * 6;
        sums.sink += m[at] + m[at + 5];
        sums.context += m[at + 1];
        sums.needle += m[at + 2];
        sums.distractors += m[at + 3];
      }
    }
    const heads = L * H;
    return {
      sink: sums.sink / heads,
      context: regions.context.length > 0 ? sums.context / heads : null,
      needle: regions.needle.length > 0 ? sums.needle / heads : null,
      distractors: regions.distractors.length > 0 ? sums.distractors / heads : null,
    };
  } finally {
    for (const t of [categories, ...masses]) t.buffer.destroy();
    destroyGraph(g);
  }
}
