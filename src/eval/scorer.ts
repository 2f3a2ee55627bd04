/**
 * The GPU model as a `LogProbScorer` (src/eval/perplexity.ts) for the perplexity protocols: one forward
 * per window over tokens[0 … n − 1) with the method's adapter and evaluation mask, and the per-token
 * losses of the training loss kernel (crossEntropyInPlace) with targets = the next tokens and the ignore
 * index on rows before firstTarget − 1, so log p(tokens[i] | tokens[0 … i)) = −loss[i − 1] exactly as
 * training computes it (f32 log-sum-exp, returned as float64).
 *
 * Graphs are built per window length and the last two are kept with their recordings, so a protocol's
 * windows of one length (all but the last, usually) reuse one graph and one recording. Each call
 * uploads its tokens and targets and reads back one (T,) loss vector; nothing carries from one call to
 * the next, so a call's result depends only on (tokens, firstTarget).
 */
import type { Gpu } from "../gpu/device.ts";
import { Recorder } from "../gpu/recorder.ts";
import { readTensors, upload } from "../gpu/tensor.ts";
import type { Adapter } from "../model/adapter.ts";
import { createGraph, destroyGraph, type Graph, type GraphOptions, recordForward } from "../model/model.ts";
import type { ModelWeights } from "../model/weights.ts";
import { IGNORE_INDEX } from "../ops/crossentropy.ts";
import type { LogProbScorer } from "./perplexity.ts";

/** The model a scorer runs: base weights, a method's adapter (or none) and its evaluation mask. */
export interface ScorerModel {
  weights: ModelWeights;
  adapter: Adapter | null;
  evalMask?: GraphOptions["mask"];
}

/** Options of a scorer. */
export interface ScorerOptions {
  /**
   * The longest token array `score` accepts (windows feed one token fewer). Default: the model's
   * positions + 1; a GPT-2 model cannot take more, a RoPE model can (at its own risk past training).
   */
  maxContext?: number;
  /** Graphs (one per window length) kept for reuse; default 2. */
  keepGraphs?: number;
}

/** A scorer that owns GPU buffers. */
export interface GpuScorer extends LogProbScorer {
  destroy(): void;
}

/**
 * A LogProbScorer backed by the model on the device.
 * @example
 * const scorer = createScorer(gpu, { weights, adapter: null }, {});
 * const report = await evaluatePerplexity(scorer, tokenizer, docs, { kind: "sliding", window: 512, stride: 256 });
 */
export function createScorer(gpu: Gpu, model: ScorerModel, opts: ScorerOptions = {}): GpuScorer {
  const { weights, adapter } = model;
  const { V, maxT } = weights.dims;
  const maxContext = opts.maxContext ?? maxT + 1;
  if (!Number.isInteger(maxContext) || maxContext < 2) {
    throw new RangeError(`scorer: maxContext = ${maxContext} must be an integer ≥ 2`);
  }
  if (weights.config.family === "gpt2" && maxContext > maxT + 1) {
    throw new RangeError(
      `scorer: maxContext = ${maxContext} needs ${maxContext - 1} positions; the GPT-2 model has ${maxT} ` +
        `(maxPositions)`,
    );
  }
  if (model.evalMask?.mode === "turns") {
    throw new RangeError(`scorer: evalMask mode "turns" needs per-token turn ids; score with a causal mask`);
  }
  const keep = opts.keepGraphs ?? 2;
  if (!Number.isInteger(keep) || keep < 1) throw new RangeError(`scorer: keepGraphs = ${keep} must be ≥ 1`);
  // Most recently used last.
  const graphs: { T: number; graph: Graph; rec: Recorder }[] = [];

  async function graphFor(T: number) {
    const at = graphs.findIndex((g) => g.T === T);
    if (at >= 0) {
      const [hit] = graphs.splice(at, 1);
      graphs.push(hit);
      return hit;
    }
    while (graphs.length >= keep) drop(graphs.shift()!);
    const graph = createGraph(gpu, weights, {
      B: 1,
      T,
      training: false,
      adapter: adapter ?? undefined,
      mask: model.evalMask,
    });
    const rec = new Recorder(gpu, `score T=${T}`);
    await recordForward(rec, graph);
    const entry = { T, graph, rec };
    graphs.push(entry);
    return entry;
  }

  function drop(entry: { graph: Graph; rec: Recorder }) {
    entry.rec.destroy();
    destroyGraph(entry.graph);
  }

  return {
    maxContext,
    async score(tokens, firstTarget) {
      const n = tokens.length;
      if (!Number.isInteger(firstTarget) || firstTarget < 1 || firstTarget > n || n > maxContext) {
        throw new RangeError(
          `scorer: need 1 ≤ firstTarget ≤ tokens.length ≤ maxContext, got firstTarget ${firstTarget}, ` +
            `${n} tokens, maxContext ${maxContext}`,
        );
      }
      for (let i = 0; i < n; i++) {
        const t = tokens[i];
        if (!Number.isInteger(t) || t < 0 || t >= V) {
          throw new RangeError(`scorer: tokens[${i}] = ${t} is not a token id in 0 … ${V - 1}`);
        }
      }
      if (firstTarget === n) return new Float64Array(0);
      const T = n - 1;
      const { graph, rec } = await graphFor(T);
      const targets = new Int32Array(T);
      for (let i = 0; i < T; i++) targets[i] = i + 1 >= firstTarget ? tokens[i + 1] : IGNORE_INDEX;
      upload(gpu, graph.inputs.tokens, tokens.slice(0, T));
      upload(gpu, graph.inputs.targets, targets);
      await rec.submit();
      const losses = (await readTensors(gpu, [graph.losses]))[0];
      const out = new Float64Array(n - firstTarget);
      for (let j = 0; j < out.length; j++) out[j] = -losses[firstTarget - 1 + j];
      return out;
    },
    destroy() {
      for (const g of graphs.splice(0)) drop(g);
    },
  };
}
