/**
 * Attention diagnostics of one prompt (benchmarks spec §5.3; methods spec §5.5's working definitions):
 * where the query that predicts the first answer token — the prompt's last position — puts its
 * attention, per layer and head, as softmax mass on token regions, averaged over layers and heads.
 *
 * The prompt runs through the model's own forward (the method's adapter and evaluation mask
 * attached); each layer's attention kernel leaves the queries and keys it used (after RoPE) and the
 * row log-sum-exp lse (sink logit included) in the graph, so the probability of key j for the last
 * query of head h is exp(scale_h · q·k_j − lse) — the kernel's own softmax, recomputed in float64 for
 * one row. The sink logit's own mass, exp(sink_h − lse), counts as sink mass.
 *
 * Defined for masks under which the last query sees every earlier key (causal, full); others refuse.
 */

import type { Gpu } from "../gpu/device.ts";
import { Recorder } from "../gpu/recorder.ts";
import { readTensors, type Tensor, upload } from "../gpu/tensor.ts";
import type { Adapter } from "../model/adapter.ts";
import { createGraph, destroyGraph, type GraphOptions, recordForward } from "../model/model.ts";
import type { ModelWeights } from "../model/weights.ts";
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
  try {
    upload(gpu, g.inputs.tokens, tokens);
    const rec = new Recorder(gpu, "attention probe");
    await recordForward(rec, g, { logitsOnly: true });
    await rec.submit();
    const { L, H, Hkv, D } = model.weights.dims;
    const wanted: Tensor[] = [];
    for (let l = 0; l < L; l++) {
      const ap = g.attentionParams[l] ?? {};
      wanted.push(g.blocks[l].q, g.blocks[l].k, g.blocks[l].lse, ap.logitScale ?? g.logitScale);
      if (ap.sinkLogit) wanted.push(ap.sinkLogit);
    }
    const values = await readTensors(gpu, wanted);
    let at = 0;
    const sums = { sink: 0, context: 0, needle: 0, distractors: 0 };
    const inSpans = (spans: readonly TokenSpan[]) => {
      const mask = new Uint8Array(T);
      for (const s of spans) mask.fill(1, Math.max(0, s.start), Math.min(T, s.end));
      return mask;
    };
    const masks = {
      context: inSpans(regions.context),
      needle: inSpans(regions.needle),
      distractors: inSpans(regions.distractors),
    };
    const sinks = Math.min(regions.sinks, T);
    for (let l = 0; l < L; l++) {
      const ap = g.attentionParams[l] ?? {};
      const q = values[at++] as Float32Array;
      const k = values[at++] as Float32Array;
      const lse = values[at++] as Float32Array;
      const scale = values[at++] as Float32Array;
      const sink = ap.sinkLogit ? values[at++] as Float32Array : null;
      for (let h = 0; h < H; h++) {
        const kvHead = Math.floor(h / (H / Hkv));
        const qRow = (h * T + (T - 1)) * D;
        const rowLse = lse[h * T + T - 1];
        let sinkMass = sink ? Math.exp(sink[h] - rowLse) : 0;
        for (let j = 0; j < T; j++) {
          let dot = 0;
          const kRow = (kvHead * T + j) * D;
          for (let d = 0; d < D; d++) dot += q[qRow + d] * k[kRow + d];
          const p = Math.exp(scale[h] * dot - rowLse);
          if (j < sinks) sinkMass += p;
          else if (masks.context[j]) sums.context += p;
          if (masks.needle[j]) sums.needle += p;
          if (masks.distractors[j]) sums.distractors += p;
        }
        sums.sink += sinkMass;
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
    destroyGraph(g);
  }
}
