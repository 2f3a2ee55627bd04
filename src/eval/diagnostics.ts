/**
 * Attention diagnostics over every response query of a batch, per layer and head, from a graph's own
 * forward: attention sink mass, context engagement and distractor mass (methods spec §5.5). These are
 * WORKING DEFINITIONS [UNVERIFIED]: FocuSFT's paper names the metrics but neither its code nor any text
 * we could reach defines them, so these implement the spec's working definitions (§5.5) until the paper's are checked:
 *
 * - sink mass (k = 1 and k = 4, as StreamingLLM's sinks): the mean over response queries of the softmax
 *   probability on positions t < k of the query's own sequence; a learned sink logit's own mass
 *   exp(sink_h − lse) is reported beside it (`sinkLogit`), not inside it;
 * - context engagement: the mean mass response queries put on context tokens outside the first 4
 *   positions;
 * - distractor mass (and needle mass): the mean mass on distractor-flagged (needle-flagged) tokens.
 *
 * Each is averaged per head over the response queries of all rows of the batch, per layer over heads,
 * and overall over layers and heads with equal weight. The probabilities are the attention kernel's own,
 * p_ij = exp(logitScale_h·q_i·k_j − lse_i) under the graph's mask (causal, S²-Attn groups, turns, full),
 * recomputed on the device by kernels/attention_mass.wgsl with O(T) memory, never a T×T buffer. Only
 * the softmax attention is measured: a map a method adds after the softmax (LoRaDA) is not part of it.
 */
import type { Gpu } from "../gpu/device.ts";
import { Recorder } from "../gpu/recorder.ts";
import { createTensor, readTensors, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import type { Graph } from "../model/model.ts";
import { attentionMass, type AttentionMassOptions } from "../ops/attention_mass.ts";

/**
 * Records layer `l`'s attention mass per token category from what the graph's forward left: that layer's
 * q, k (after RoPE), row lse, its logit scale and sink, under the graph's mask.
 */
export async function layerAttentionMass(
  rec: Recorder,
  graph: Graph,
  l: number,
  out: Tensor,
  categories: Tensor,
  opts: AttentionMassOptions,
): Promise<void> {
  const block = graph.blocks[l];
  const ap = graph.attentionParams[l] ?? {};
  await attentionMass(
    rec,
    out,
    {
      q: block.q,
      k: block.k,
      lse: block.lse,
      logitScale: ap.logitScale ?? graph.logitScale,
      sinkLogit: ap.sinkLogit,
      categories,
    },
    graph.options.mask,
    opts,
  );
}

/** How a report names these numbers. */
export const DIAGNOSTIC_DEFINITIONS = "working definitions [UNVERIFIED] (methods spec §5.5): means over " +
  "response queries of softmax probabilities exp(scale·q·k − lse) under the graph's mask; sink mass = mass " +
  "on positions < k (k = 1, 4), the sink logit's own mass reported apart; context engagement = mass on " +
  "context tokens at positions ≥ 4; distractor (needle) mass = mass on distractor (needle) tokens; heads " +
  "and layers weighted equally; softmax attention only";

/** Key category bit (the mass kernel's column 0): position 0, the k = 1 sink. */
export const KEY_FIRST = 1 << 0;
/** Key category bit (column 1): positions 0 … 3, the k = 4 sinks. */
export const KEY_FIRST4 = 1 << 1;
/** Key category bit (column 2): a context token at position ≥ 4. */
export const KEY_CONTEXT = 1 << 2;
/** Key category bit (column 3): a distractor token. */
export const KEY_DISTRACTOR = 1 << 3;
/** Key category bit (column 4): a needle token. */
export const KEY_NEEDLE = 1 << 4;
const CATEGORIES = 5;
/** Positions counted as sinks by `sink4`, and left out of context engagement. */
export const SINK_POSITIONS = 4;

/** Per-token roles of a (B, T) batch: each (B·T,), nonzero where the token has the role. */
export interface DiagnosticRoles {
  /** Context tokens (what the response should draw on). */
  context: ArrayLike<number>;
  /** Response tokens: the query rows whose attention is measured. */
  response: ArrayLike<number>;
  /** Distractor tokens, if the task has any. */
  distractor?: ArrayLike<number>;
  /** Needle tokens, if the task has any. */
  needle?: ArrayLike<number>;
}

/** Mean softmax masses of response queries (see the file comment for each). */
export interface AttentionMassSummary {
  sink1: number;
  sink4: number;
  /** The learned sink logit's mass (0 when the graph has none). */
  sinkLogit: number;
  /** Context engagement. */
  context: number;
  /** Null when no token was flagged. */
  distractor: number | null;
  needle: number | null;
  /**
   * Mass on tokens with no role (neither the first 4 positions, context, distractor nor needle: the
   * question, the response itself). With distractors and needles inside the context,
   * sink4 + context + other + sinkLogit = 1.
   */
  other: number;
}

/** Diagnostics of one batch. */
export interface AttentionDiagnostics {
  definitions: string;
  /** Response queries each head's means run over. */
  queries: number;
  overall: AttentionMassSummary;
  /** Per layer (mean over heads). */
  layers: AttentionMassSummary[];
  /** Per layer and head. */
  heads: AttentionMassSummary[][];
}

/** The u32 category bits of every token of a (B, T) batch (the kernel's `categories`). */
export function diagnosticCategories(B: number, T: number, roles: DiagnosticRoles): Uint32Array {
  const out = new Uint32Array(B * T);
  for (let n = 0; n < B * T; n++) {
    const t = n % T;
    let bits = 0;
    if (t < 1) bits |= KEY_FIRST;
    if (t < SINK_POSITIONS) bits |= KEY_FIRST4;
    if (roles.context[n] && t >= SINK_POSITIONS) bits |= KEY_CONTEXT;
    if (roles.distractor?.[n]) bits |= KEY_DISTRACTOR;
    if (roles.needle?.[n]) bits |= KEY_NEEDLE;
    out[n] = bits;
  }
  return out;
}

function checkRoles(B: number, T: number, roles: DiagnosticRoles): void {
  for (const name of ["context", "response", "distractor", "needle"] as const) {
    const r = roles[name];
    if (r && r.length !== B * T) {
      throw new RangeError(
        `attentionDiagnostics: roles.${name} has ${r.length} entries, expected B·T = ${B * T}`,
      );
    }
  }
}

const flagged = (r: ArrayLike<number> | undefined) =>
  !!r && Array.prototype.some.call(r, (x: number) => x !== 0);

/**
 * The diagnostics of the forward `graph` last ran (record and submit it first, with the batch whose
 * `roles` are given, and call this before any parameter changes: adapters' sink logits are read now).
 * The graph must keep every layer's q, k and lse (not `recompute`); one small submit and readback per
 * layer, O(B·H·rows) device memory for the response rows' span.
 * @example const d = await attentionDiagnostics(graph, { context, response });
 */
export async function attentionDiagnostics(
  graph: Graph,
  roles: DiagnosticRoles,
): Promise<AttentionDiagnostics> {
  const gpu: Gpu = graph.gpu;
  const { B, T, recompute } = graph.options;
  const { L, H } = graph.weights.dims;
  if (recompute) {
    throw new RangeError(
      "attentionDiagnostics: the graph recomputes its blocks (recompute: true) and keeps no q, k, lse per layer",
    );
  }
  checkRoles(B, T, roles);
  let from = T, to = 0, queries = 0;
  for (let n = 0; n < B * T; n++) {
    if (!roles.response[n]) continue;
    from = Math.min(from, n % T);
    to = Math.max(to, (n % T) + 1);
    queries++;
  }
  if (queries === 0) throw new RangeError("attentionDiagnostics: roles.response flags no query row");
  const rows = to - from;
  const cols = CATEGORIES + 2;
  const categories = tensorFrom(gpu, [B, T], diagnosticCategories(B, T, roles), {
    label: "diagnostics.categories",
    dtype: "u32",
  });
  // One mass tensor per layer, every layer recorded into one submit and read back together.
  const masses = Array.from(
    { length: L },
    (_, l) => createTensor(gpu, [B, H, rows, cols], { label: `diagnostics.mass.${l}` }),
  );
  const hasDistractor = flagged(roles.distractor), hasNeedle = flagged(roles.needle);
  let values: Float32Array[];
  try {
    const rec = new Recorder(gpu, "attention diagnostics");
    try {
      for (let l = 0; l < L; l++) {
        await layerAttentionMass(rec, graph, l, masses[l], categories, {
          categoryCount: CATEGORIES,
          rows: { from, to },
        });
      }
      await rec.submit();
    } finally {
      rec.destroy();
    }
    values = (await readTensors(gpu, masses)) as Float32Array[];
  } finally {
    for (const t of [categories, ...masses] as Tensor[]) t.buffer.destroy();
  }
  const heads: AttentionMassSummary[][] = values.map((m) =>
    Array.from({ length: H }, (_, h) => {
      const sums = new Float64Array(cols);
      for (let b = 0; b < B; b++) {
        for (let i = 0; i < rows; i++) {
          if (!roles.response[b * T + from + i]) continue;
          const at = ((b * H + h) * rows + i) * cols;
          for (let c = 0; c < cols; c++) sums[c] += m[at + c];
        }
      }
      return summary(sums, queries, hasDistractor, hasNeedle);
    })
  );
  const layers = heads.map((row) => meanOf(row));
  return { definitions: DIAGNOSTIC_DEFINITIONS, queries, overall: meanOf(layers), layers, heads };
}

// Column sums over `queries` rows → means.
function summary(
  sums: Float64Array,
  queries: number,
  distractor: boolean,
  needle: boolean,
): AttentionMassSummary {
  const mean = (c: number) => sums[c] / queries;
  return {
    sink1: mean(0),
    sink4: mean(1),
    sinkLogit: mean(CATEGORIES + 1),
    context: mean(2),
    distractor: distractor ? mean(3) : null,
    needle: needle ? mean(4) : null,
    other: mean(CATEGORIES),
  };
}

// Equal-weight mean of summaries.
function meanOf(items: readonly AttentionMassSummary[]): AttentionMassSummary {
  const avg = (pick: (s: AttentionMassSummary) => number) =>
    items.reduce((a, s) => a + pick(s), 0) / items.length;
  const optional = (key: "distractor" | "needle") => (items[0][key] === null ? null : avg((s) => s[key]!));
  return {
    sink1: avg((s) => s.sink1),
    sink4: avg((s) => s.sink4),
    sinkLogit: avg((s) => s.sinkLogit),
    context: avg((s) => s.context),
    distractor: optional("distractor"),
    needle: optional("needle"),
    other: avg((s) => s.other),
  };
}
