/**
 * How a fine-tuning method attaches to the model. A method builds one `Adapter`: its own trainable
 * tensors (a parameter table and one flat buffer, so gradients and AdamW moments share its layout) and
 * an `attach` that, when a graph is created for some (B, T), returns the hooks the graph records at
 * fixed points of the forward and backward:
 *
 *   linear      after each block linear (fused qkv, attnOut, fc/fcProj or gate/up/down): y += term(x)
 *   attention   before each attention kernel: per-head logit scale and sink logit (noise filters)
 *   mixOutput   between the attention kernel and the output projection (Gated Memory)
 *   finalNorm   after the final norm, before the LM head (HyLoRADA's landmarks)
 *
 * Every backward hook mirrors its forward hook and runs in reverse order. Hooks write parameter
 * gradients into `grads` (the adapter's table layout), which the graph zeroes at the start of each
 * backward, and add their input gradients into the tensors they are given. Hooks keep whatever
 * activations their backward needs in buffers they allocate in `attach` (the graph's tensors they see
 * may be overwritten later in the step). `positions` gives each row's absolute position.
 */
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import type { ParamEntry, ParamTable } from "./params.ts";
import type { ModelDims } from "./config.ts";
import type { ModelWeights } from "./weights.ts";

/**
 * The linear layers of a block, by their parameter-table names without the `h.N.` prefix, and the LM
 * head ("lmHead": logits = lnf·Wᵀ with W = wte when tied, at layer -1).
 */
export type LinearName = "qkv" | "attnOut" | "fc" | "fcProj" | "gate" | "up" | "down" | "lmHead";

/** Layer index of the LM head's site (it follows the final norm, not a block). */
export const HEAD_LAYER = -1;

/** Output width of a linear site: qkv (H + 2·Hkv)·D; attnOut, fcProj, down C; fc, gate, up F; lmHead V. */
export function siteOutDim(d: ModelDims, name: LinearName): number {
  switch (name) {
    case "qkv":
      return (d.H + 2 * d.Hkv) * d.D;
    case "attnOut":
    case "fcProj":
    case "down":
      return d.C;
    case "fc":
    case "gate":
    case "up":
      return d.F;
    case "lmHead":
      return d.V;
  }
}

/** The LM head as a linear site: logits (rows, V) = lnf (rows, C) · Wᵀ. */
export function headSite(d: Pick<ModelDims, "C" | "V">): LinearSite {
  return { layer: HEAD_LAYER, name: "lmHead", inDim: d.C, outDim: d.V };
}

/** One linear layer: y (rows, outDim) = x (rows, inDim) · Wᵀ [+ b]; a block's, or the LM head's. */
export interface LinearSite {
  layer: number;
  name: LinearName;
  inDim: number;
  outDim: number;
}

/** What a graph tells an adapter when it attaches. */
export interface AttachContext {
  B: number;
  T: number;
  dims: ModelDims;
  family: "gpt2" | "llama";
  training: boolean;
  /** The base weights the graph runs (DoRA reads W0; hooks never write them). */
  weights: ModelWeights;
  /** The adapter's gradient buffer (table layout), zeroed at the start of each backward; null without training. */
  grads: Tensor | null;
  /** (B·T,) u32 absolute position of every row (t, or the decoding offset plus t). */
  positions: Tensor;
  /**
   * (B·T,) f32 per-token loss weights of the batch (the Trainer pre-divides them by the counted tokens,
   * so Σ weights·loss is the mean loss); 0 where a token has no target. Regularisers read it.
   */
  lossWeights: Tensor;
  /** Set when a KV-cache decoder attaches: its prompt graph or its one-token step (decode.ts). */
  decode?: DecodeLink;
}

/**
 * What a KV-cache decoder tells the adapters it attaches, so an adapter with state over the prefix (as
 * LoRaDA's map) can carry it from the prompt to the steps as attention carries its keys and values.
 */
export interface DecodeLink {
  /** "prefill": the prompt's graph (B = 1, T = prompt length); "step": one new token (T = 1). */
  phase: "prefill" | "step";
  /**
   * Tensors kept between the prefill and the steps, by name, shared by both attachments; the decoder
   * frees them. An adapter that sets `incremental` must rebuild them in every prefill.
   */
  state: Map<string, Tensor>;
}

/** Attention parameters an adapter supplies for one layer; the graph's defaults where absent. */
export interface AttentionParams {
  /** (H,) logit scale; default 1/√D. */
  logitScale?: Tensor;
  /** (H,) sink logit per head (a key whose value is zero); default none. */
  sinkLogit?: Tensor;
}

/** Gradients the attention backward produced for an adapter's attention parameters. */
export interface AttentionParamGrads {
  /** (H,) d loss / d logitScale (only when the adapter gave a logit scale). */
  dScale?: Tensor;
  /** (H,) d loss / d sinkLogit (only when the adapter gave a sink). */
  dSink?: Tensor;
}

/** Tensors of the attention-output mix. */
export interface MixTensors {
  /** (B, H, T, D) the attention kernel's output. */
  o: Tensor;
  /** (B, H, T, D) the query before RoPE (the same as the attention's query for GPT-2). */
  qPre: Tensor;
  /** (B, Hkv, T, D) the values. */
  v: Tensor;
  /** (B, T, H·D) what the output projection reads; the hook writes it (merged heads, mixed). */
  att: Tensor;
}

/**
 * Tensors of the attention-output mix's backward (no pre-RoPE query: the graph does not keep it per
 * layer, so a hook saves what it needs in its forward).
 */
export interface MixGradTensors extends Omit<MixTensors, "qPre"> {
  /** (B, T, H·D) gradient with respect to `att`. */
  datt: Tensor;
  /** (B, H, T, D) the hook writes the gradient with respect to `o`. */
  dO: Tensor;
  /** (B, H, T, D) the hook may write its gradient with respect to the pre-RoPE query here. */
  dqPre: Tensor;
  /** (B, Hkv, T, D) the hook may write its gradient with respect to v here. */
  dv: Tensor;
}

/** Which of dqPre and dv a mix backward wrote (the graph adds those into the attention's gradients). */
export interface MixGradWritten {
  dq: boolean;
  dv: boolean;
}

/** The hooks of one adapter on one graph. Every hook is optional. */
export interface AdapterHooks {
  /** y already holds x·Wᵀ + b: add the adapter's term. */
  linearForward?(rec: Recorder, site: LinearSite, y: Tensor, x: Tensor): Promise<void>;
  /**
   * Accumulate parameter gradients from dy and x; add the term's input gradient into dx (which holds
   * the base dy·W already); dx is null when nothing needs it.
   */
  linearBackward?(rec: Recorder, site: LinearSite, dx: Tensor | null, dy: Tensor, x: Tensor): Promise<void>;
  /** Records whatever computes this layer's attention parameters and returns them. */
  attention?(rec: Recorder, layer: number): Promise<AttentionParams>;
  /** Receives the attention parameters' gradients of this layer (after the attention backward). */
  attentionBackward?(rec: Recorder, layer: number, grads: AttentionParamGrads): Promise<void>;
  /** Replaces merging the heads: writes `att` from `o` (and the pre-RoPE query). */
  mixOutput?(rec: Recorder, layer: number, t: MixTensors): Promise<void>;
  /**
   * Writes dO from datt; may write its pre-RoPE query and value gradients into dqPre and dv and says
   * which; accumulates parameter gradients.
   */
  mixOutputBackward?(rec: Recorder, layer: number, t: MixGradTensors): Promise<MixGradWritten>;
  /** Modifies the final norm's output (N, C) in place. */
  finalNorm?(rec: Recorder, lnf: Tensor): Promise<void>;
  /** dlnf (N, C) holds the gradient with respect to the modified output: make it the gradient with respect to the unmodified one, in place. */
  finalNormBackward?(rec: Recorder, dlnf: Tensor): Promise<void>;
  /** Frees what `attach` allocated. */
  destroy?(): void;
}

/** Optimizer multipliers of one adapter tensor. */
export interface AdapterGroup {
  lrScale?: number;
  weightDecay?: number;
}

/** A method's trainable tensors and how they attach. */
export interface Adapter {
  /** The method's registry name, for errors and reports. */
  readonly name: string;
  /** The adapter's tensors (may be empty for methods that only change the base's training). */
  readonly table: ParamTable;
  /** (table.size,) f32 values; null when the table is empty. */
  readonly params: Tensor | null;
  /** Builds the hooks for one graph. */
  attach(ctx: AttachContext): AdapterHooks;
  /** Optimizer multipliers per tensor (default: the config's lr and decay). */
  group?(entry: ParamEntry): AdapterGroup;
  /**
   * False when a row's hooks depend on other rows beyond what attention's KV cache holds (LoRaDA's
   * causal prefix sums): decoding then recomputes the whole prefix per token. Default true.
   */
  incremental?: boolean;
}

/**
 * Which base tensors train: true (all of it), false, or an element range [from, from + count) of it
 * (e.g. only the new rows of an extended position table). Gradients outside the range are zeroed.
 */
export type BaseTrainable = (entry: ParamEntry) => boolean | { from: number; count: number };

/** Every base tensor trains (full fine-tuning). */
export const ALL_BASE: BaseTrainable = () => true;
/** No base tensor trains (parameter-efficient methods). */
export const NO_BASE: BaseTrainable = () => false;

/** The element range of `entry` that trains under `trainable`, or null. */
export function trainableRange(
  trainable: BaseTrainable,
  entry: ParamEntry,
): { from: number; count: number } | null {
  const t = trainable(entry);
  if (t === false) return null;
  if (t === true) return { from: 0, count: entry.numel };
  if (!Number.isInteger(t.from) || !Number.isInteger(t.count) || t.from < 0 || t.count < 1) {
    throw new RangeError(`trainable range of ${entry.name}: from ${t.from}, count ${t.count} is not a range`);
  }
  if (t.from + t.count > entry.numel) {
    throw new RangeError(
      `trainable range of ${entry.name}: [${t.from}, ${
        t.from + t.count
      }) exceeds its ${entry.numel} elements`,
    );
  }
  return t;
}
