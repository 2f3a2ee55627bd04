/**
 * LIFT, Long Input Fine-Tuning with Gated Memory (Mao et al., arXiv 2502.14644 v2/v3; methods spec §4):
 * the long input goes into the weights at test time instead of the prompt. For each document:
 *
 * 1. Segments (§4.1): windows of `segment` tokens starting every `stride` tokens (s_k = stride·k for every
 *    s_k < length; the last ones are shorter), each a plain LM example on all its tokens. The spec's 2048
 *    and 768 are scaled to the run: segment = min(segmentLength, trainLength), stride = round(segment·3/8).
 * 2. Auxiliary QA (§4.2), where the task knows facts about the document (bAbI/BABILong: `babiLocationQa`
 *    builds "Where is X?" pairs from the movement facts): prompt then answer, loss on the answer tokens
 *    only, head/tail-truncated to the model's length like every prompt (first ⌊max/2⌋ − |"..."| tokens,
 *    "...", the last ⌈max/2⌉). The prompt template is the caller's (the project's own, not LooGLE's).
 * 3. A fresh Gated Memory adapter (src/methods/gated_memory.ts) re-initialised from (seed, document), then
 *    AdamW with β = (0.9, 0.98), ε = 1e-8, weight decay 1e-4, clipping 1.0 and a constant rate: `epochs`
 *    passes over the segments, then `qaEpochs` passes over segments and QA together (mix_training), each
 *    shuffled from Philox (seed, document, epoch), one optimizer step per batch (`gatherBatches`: one step per
 *    epoch, the mean of the examples' mean losses, as the code's gather_batches).
 * 4. Every question is answered from its head/tail-truncated prompt by the adapted model; then the adapted
 *    weights are thrown away. The base model is never written.
 *
 * Choices where the spec leaves a gap or flags one: lr defaults to 1e-3, the first of the two values the
 * shells pass; argparse keeps the last (1e-5), which `lr: 1e-5` reproduces. qaEpochs defaults to 3 (the
 * spec gives no value). The regulariser's scale defaults to 0.1 (the shells use 0.1 or 1.0). The code's
 * dummy lm_head LoRA (r 2, α 4) trains with the memory, as there (gated_memory.ts). The pre-LIFT SFT
 * stage of the 2024 code is not part of this method; `documentInit: "prepared"` starts each document
 * from whatever state the prepared adapter holds (e.g. after the harness trained it) instead of a fresh
 * initialisation.
 */
import { z } from "zod";
import { sha256 } from "../data/hash.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import type { Gpu } from "../gpu/device.ts";
import { readF32, upload } from "../gpu/tensor.ts";
import { type Adapter, NO_BASE } from "../model/adapter.ts";
import type { ModelConfig } from "../model/config.ts";
import type { GraphOptions } from "../model/model.ts";
import type { ModelWeights } from "../model/weights.ts";
import { IGNORE_INDEX } from "../ops/crossentropy.ts";
import { gateWidth } from "../ops/gated_memory.ts";
import { Rng } from "../random/philox.ts";
import { type HostBatch, Trainer } from "../train/trainer.ts";
import {
  createGatedMemoryAdapter,
  type GatedMemoryAdapter,
  gatedMemoryParameterCount,
  gatedMemoryTable,
  HEAD_LORA,
  initGatedMemory,
  liftParameterCount,
  MAX_DOCUMENT,
} from "./gated_memory.ts";
import type { Method, MethodLengths, PrepareContext, PreparedMethod } from "./method.ts";

/** LIFT's configuration (spec §4.3's test-time hyperparameters as defaults). */
export const liftConfigSchema = z.object({
  /** Scale of the gate regulariser: loss += scale·mean(g) (shells: 0.1 or 1.0). */
  regularization: z.number().min(0).default(0.1),
  /** Segment length before scaling to the run's training length (spec 2048). */
  segmentLength: z.number().int().min(2).default(2048),
  /** Tokens between segment starts (default round(segment·3/8): 768 for 2048). */
  stride: z.number().int().positive().optional(),
  /** Passes over the segments alone. */
  epochs: z.number().int().min(0).default(8),
  /** Then passes over segments and auxiliary QA together (skipped when a document has no QA). */
  qaEpochs: z.number().int().min(0).default(3),
  /** Constant learning rate (the shells give 1e-3 then 1e-5; argparse keeps 1e-5). */
  lr: z.number().positive().default(1e-3),
  weightDecay: z.number().min(0).default(1e-4),
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.98),
  eps: z.number().positive().default(1e-8),
  maxGradNorm: z.number().positive().default(1),
  /** Examples per optimizer step. */
  batchSize: z.number().int().positive().default(1),
  /** One optimizer step per epoch over all its examples (the code's gather_batches). */
  gatherBatches: z.boolean().default(false),
  /** Shuffle each epoch's examples (the HF Trainer's random sampler). */
  shuffle: z.boolean().default(true),
  /** The model's length for head/tail truncation (LIFT's model_max_length); default its maxPositions. */
  contextLength: z.number().int().positive().optional(),
  /** Each document's adapter: re-initialised from (seed, document), or the prepared adapter's current state. */
  documentInit: z.enum(["fresh", "prepared"]).default("fresh"),
}).strict();
export type LiftConfig = z.infer<typeof liftConfigSchema>;

/** The lengths a config resolves to for a model and a run. */
export interface LiftPlan {
  segment: number;
  stride: number;
  /** Head/tail truncation length of prompts (the model's max length). */
  contextLength: number;
  /** Longest QA training example (min(contextLength, trainLength)). */
  qaLength: number;
}

/** Resolves segment, stride and truncation lengths (default lengths: the model's own context). */
export function liftPlan(model: ModelConfig, config: LiftConfig, lengths?: MethodLengths): LiftPlan {
  const trainLength = lengths?.trainLength ?? model.maxPositions;
  const segment = Math.min(config.segmentLength, trainLength);
  if (segment < 2) throw new RangeError(`lift: segment length ${segment} leaves no next-token target`);
  const stride = config.stride ?? Math.max(1, Math.round(segment * 3 / 8));
  const contextLength = config.contextLength ?? model.maxPositions;
  return { segment, stride, contextLength, qaLength: Math.min(contextLength, trainLength) };
}

/** One training example: (n,) tokens and next-token targets (IGNORE_INDEX where there is no loss). */
export interface LiftExample {
  tokens: number[];
  targets: number[];
}

/**
 * The segments of a document (spec §4.1): [s_k, s_k + segment) for s_k = stride·k < length, each an LM
 * example on all its tokens (the last position has no next token). Segments of one token are dropped.
 * @example segmentDocument(tokens, 2048, 768).length; // ⌈length / 768⌉ when length > 1
 */
export function segmentDocument(tokens: readonly number[], segment: number, stride: number): LiftExample[] {
  if (!Number.isInteger(segment) || segment < 2) throw new RangeError(`lift: segment ${segment} must be ≥ 2`);
  if (!Number.isInteger(stride) || stride < 1) throw new RangeError(`lift: stride ${stride} must be ≥ 1`);
  const out: LiftExample[] = [];
  for (let s = 0; s < tokens.length; s += stride) {
    const piece = tokens.slice(s, s + segment);
    if (piece.length < 2) continue;
    out.push({ tokens: [...piece], targets: [...piece.slice(1), IGNORE_INDEX] });
  }
  return out;
}

/**
 * Head/tail truncation (spec §4.2): longer than `max`, keep the first ⌊max/2⌋ − |ellipsis| tokens, the
 * ellipsis, then the last ⌈max/2⌉, so exactly `max` remain.
 * @example truncateMiddle([1, 2, 3, 4, 5, 6, 7, 8], 6, [0]); // [1, 2, 0, 6, 7, 8]
 */
export function truncateMiddle<T>(tokens: readonly T[], max: number, ellipsis: readonly T[]): T[] {
  if (tokens.length <= max) return [...tokens];
  const head = Math.floor(max / 2) - ellipsis.length;
  if (head < 0) {
    throw new RangeError(
      `lift: truncation to ${max} tokens has no room for a ${ellipsis.length}-token ellipsis`,
    );
  }
  const tail = max - Math.floor(max / 2);
  return [...tokens.slice(0, head), ...ellipsis, ...tokens.slice(tokens.length - tail)];
}

/** An auxiliary QA pair in tokens. */
export interface LiftQa {
  prompt: readonly number[];
  answer: readonly number[];
}

/**
 * A QA training example: prompt then answer, loss on the answer tokens only, the whole sequence
 * head/tail-truncated to `max` (the answer sits in the kept tail unless it is longer than ⌈max/2⌉).
 */
export function qaExample(qa: LiftQa, max: number, ellipsis: readonly number[]): LiftExample {
  if (qa.answer.length === 0) throw new RangeError("lift: an auxiliary QA pair has an empty answer");
  if (qa.prompt.length === 0) throw new RangeError("lift: an auxiliary QA pair has an empty prompt");
  const all = [...qa.prompt, ...qa.answer];
  // Flags ride along so the loss stays on the answer tokens wherever truncation moved them.
  const isAnswer = all.map((_, i) => i >= qa.prompt.length);
  const tokens = truncateMiddle(all, max, ellipsis);
  const flags = truncateMiddle(isAnswer, max, ellipsis.map(() => false));
  const targets = tokens.map((_, i) => {
    const next = i + 1;
    return next < tokens.length && flags[next] ? tokens[next] : IGNORE_INDEX;
  });
  if (targets.every((t) => t === IGNORE_INDEX)) {
    throw new RangeError(`lift: truncation to ${max} tokens removed every answer token of a QA pair`);
  }
  return { tokens, targets };
}

// Philox stream of the epoch shuffles (document d, epoch e use counter range d·2³² + e·2²⁰).
const SHUFFLE_STREAM = 0x6c696674;

/** Batches of example indices for one document: `epochs` over segments, then `qaEpochs` over segments + QA. */
export function liftSchedule(
  config: LiftConfig,
  segments: number,
  qa: number,
  seed: number,
  document: number,
): number[][] {
  const batches: number[][] = [];
  const phases = [
    { epochs: config.epochs, count: segments },
    { epochs: qa > 0 ? config.qaEpochs : 0, count: segments + qa },
  ];
  let epoch = 0;
  for (const phase of phases) {
    for (let e = 0; e < phase.epochs; e++, epoch++) {
      const order = Array.from({ length: phase.count }, (_, i) => i);
      if (config.shuffle) new Rng(seed, SHUFFLE_STREAM, document * 2 ** 32 + epoch * 2 ** 20).shuffle(order);
      const per = config.gatherBatches ? Math.max(1, order.length) : config.batchSize;
      for (let i = 0; i < order.length; i += per) batches.push(order.slice(i, i + per));
    }
  }
  return batches;
}

/** What one document's adaptation did. */
export interface LiftTraining {
  /** Every optimizer step's token-mean cross-entropy over its batch (the regulariser is not included). */
  losses: number[];
  steps: number;
  /** The Trainer's (B, T). */
  B: number;
  T: number;
}

/**
 * Fine-tunes `adapter` in place on `examples` (segments first, then QA) with LIFT's schedule and AdamW;
 * nothing of the base trains. Shorter examples are padded with ignored targets to the longest one.
 */
export async function adaptGatedMemory(
  gpu: Gpu,
  weights: ModelWeights,
  adapter: GatedMemoryAdapter,
  config: LiftConfig,
  examples: { segments: readonly LiftExample[]; qa: readonly LiftExample[] },
  seed: number,
  document: number,
): Promise<LiftTraining> {
  const all = [...examples.segments, ...examples.qa];
  const batches = liftSchedule(config, examples.segments.length, examples.qa.length, seed, document);
  if (batches.length === 0) return { losses: [], steps: 0, B: 0, T: 0 };
  const T = Math.max(...all.map((e) => e.tokens.length));
  const B = Math.max(...batches.map((b) => b.length));
  const trainer = await Trainer.create(gpu, weights, {
    B,
    T,
    optimizer: {
      lr: config.lr,
      beta1: config.beta1,
      beta2: config.beta2,
      eps: config.eps,
      weightDecay: config.weightDecay,
      maxGradNorm: config.maxGradNorm,
    },
    adapter,
    trainable: NO_BASE,
  });
  try {
    for (const batch of batches) await trainer.step(liftBatch(all, batch, B, T, config.gatherBatches));
    const losses = await trainer.losses();
    return { losses, steps: batches.length, B, T };
  } finally {
    trainer.destroy();
  }
}

/**
 * Examples `picked` as a (B, T) batch padded with ignored targets. Plain: every counted token weighs 1
 * (the Trainer's token mean over the batch, as HF's). Gathered: each example's tokens weigh
 * counted/(examples·its counted tokens), so after the Trainer divides by the batch's counted tokens the
 * loss is the mean of the examples' mean losses (gradient accumulation over single-example steps).
 */
export function liftBatch(
  all: readonly LiftExample[],
  picked: readonly number[],
  B: number,
  T: number,
  gathered: boolean,
): HostBatch & { weights: Float32Array } {
  const tokens = new Uint32Array(B * T);
  const targets = new Int32Array(B * T).fill(IGNORE_INDEX);
  const weights = new Float32Array(B * T);
  const counts = picked.map((k) => all[k].targets.filter((t) => t !== IGNORE_INDEX).length);
  const counted = counts.reduce((a, b) => a + b, 0);
  const used = counts.filter((c) => c > 0).length;
  picked.forEach((k, row) => {
    const e = all[k];
    const w = gathered ? counted / (used * counts[row]) : 1;
    for (let t = 0; t < e.tokens.length; t++) {
      tokens[row * T + t] = e.tokens[t];
      targets[row * T + t] = e.targets[t];
      weights[row * T + t] = e.targets[t] === IGNORE_INDEX ? 0 : w;
    }
  });
  return { tokens, targets, weights };
}

/** The model an answer is generated with (the shape of src/eval/generate.ts's GenerationModel). */
export interface LiftModel {
  weights: ModelWeights;
  adapter: Adapter;
  evalMask?: GraphOptions["mask"];
}

/** One long document: its tokens (no special tokens) and auxiliary QA pairs about it. */
export interface LiftDocument {
  tokens: readonly number[];
  qa?: readonly LiftQa[];
}

/** How one document is run. */
export interface LiftDocumentOptions {
  seed: number;
  /** Index of the document (its adapter's initialisation and shuffles), < 2²⁰. */
  document: number;
  /** The run's training length (segments and QA examples never exceed it). */
  trainLength: number;
  /** "..." in the model's tokenizer, for head/tail truncation. */
  ellipsis: readonly number[];
  /** Tokens kept free after each question prompt (the answer's budget): prompts keep contextLength − answerRoom. */
  answerRoom?: number;
  /** Start values of the adapter (documentInit "prepared"); default the fresh initialisation. */
  start?: Float32Array;
}

/** What `liftDocument` returns. */
export interface LiftDocumentResult<R> extends LiftTraining {
  /** One per question, in order. */
  answers: R[];
  /** The truncated prompts the answers were generated from. */
  prompts: number[][];
  segments: number;
  qaExamples: number;
}

/**
 * LIFT on one document (spec §4.4): segments (+ QA) → a fresh Gated Memory adapter → fine-tune → answer
 * every question from its head/tail-truncated prompt through `answer` (e.g. a generator from
 * src/eval/generate.ts on the model it is given) → destroy the adapter. The base weights are only read.
 * @example
 * const { answers } = await liftDocument(gpu, base, config, { tokens }, [{ prompt }], async (model, p) => {
 *   const gen = createGenerator(gpu, model, { maxLength }); try { return (await gen.generate(p, o)).text; }
 *   finally { gen.destroy(); }
 * }, { seed: 0, document: 3, trainLength: 2048, ellipsis: tokenizer.encode("..."), answerRoom: 32 });
 */
export async function liftDocument<R>(
  gpu: Gpu,
  base: ModelWeights,
  config: LiftConfig,
  doc: LiftDocument,
  questions: readonly { prompt: readonly number[] }[],
  answer: (model: LiftModel, prompt: number[]) => Promise<R>,
  options: LiftDocumentOptions,
): Promise<LiftDocumentResult<R>> {
  const plan = liftPlan(base.config, config, {
    trainLength: options.trainLength,
    maxLength: options.trainLength,
  });
  const room = options.answerRoom ?? 0;
  const promptLength = plan.contextLength - room;
  if (!Number.isInteger(room) || room < 0 || promptLength < 1) {
    throw new RangeError(
      `lift: answerRoom ${room} must be an integer in [0, contextLength ${plan.contextLength})`,
    );
  }
  const segments = segmentDocument(doc.tokens, plan.segment, plan.stride);
  const qa = (doc.qa ?? []).map((pair) => qaExample(pair, plan.qaLength, options.ellipsis));
  const adapter = createGatedMemoryAdapter(gpu, base.config, {
    seed: options.seed,
    document: options.document,
    regularization: config.regularization,
    values: options.start,
  });
  try {
    const training = await adaptGatedMemory(
      gpu,
      base,
      adapter,
      config,
      { segments, qa },
      options.seed,
      options.document,
    );
    const prompts = questions.map((q) => truncateMiddle(q.prompt, promptLength, options.ellipsis));
    const answers: R[] = [];
    for (const prompt of prompts) answers.push(await answer({ weights: base, adapter }, prompt));
    return { ...training, answers, prompts, segments: segments.length, qaExamples: qa.length };
  } finally {
    adapter.params.buffer.destroy();
  }
}

const MOVE = /^(\w+)(?: and (\w+))? (?:went to|journeyed to|travelled to|moved to|went back to) the (\w+)\.$/;

/**
 * Auxiliary QA pairs from bAbI facts (BABILong samples know theirs): "Where is X?" → X's latest location,
 * for every actor the movement facts place ("X moved to the kitchen.", "X and Y went to the park."), in
 * order of first mention, leaving out actors named in `exclude` (e.g. the words of the evaluation
 * question, so LIFT is not trained on the asked answer itself).
 * @example babiLocationQa(["Mary went to the kitchen.", "John moved to the park."], "Where is Mary?");
 * // [{ question: "Where is John?", answer: "park" }]
 */
export function babiLocationQa(
  facts: readonly string[],
  exclude = "",
): { question: string; answer: string }[] {
  const excluded = new Set(exclude.split(/\W+/).filter((w) => w.length > 0));
  const where = new Map<string, string>();
  for (const fact of facts) {
    const m = fact.trim().match(MOVE);
    if (!m) continue;
    for (const actor of [m[1], m[2]]) if (actor) where.set(actor, m[3]);
  }
  return [...where].filter(([actor]) => !excluded.has(actor)).map(([actor, place]) => ({
    question: `Where is ${actor}?`,
    answer: place,
  }));
}

/**
 * QA pairs in tokens: prompt = template(question), answer = " " + answer (no special tokens).
 * @example encodeQa(tokenizer, babiLocationQa(sample.facts, sample.question), (q) => `${context}\nQuestion: ${q}\nAnswer:`);
 */
export function encodeQa(
  tokenizer: Tokenizer,
  pairs: readonly { question: string; answer: string }[],
  template: (question: string) => string,
): LiftQa[] {
  return pairs.map((p) => ({
    prompt: tokenizer.encode(template(p.question)),
    answer: tokenizer.encode(` ${p.answer}`),
  }));
}

/** What the harness passes a per-sample adaptation (src/harness/method_hooks.ts's SampleInput). */
export interface LiftSampleInput {
  /** The whole evaluation input in tokens (it is the document LIFT reads). */
  tokens: readonly number[];
  seed: number;
}

/**
 * LIFT as a per-sample adaptation of a prepared `lift` method (the harness's `details.perSample`): the
 * input's tokens are the document (segments only: a bare input carries no facts for auxiliary QA); the
 * prepared adapter is re-initialised (from the seed and a document index hashed from the tokens) or kept
 * (documentInit "prepared"), trained in place, and the returned undo restores the values it had before.
 * Truncating the evaluation prompt is the caller's part (see `truncateMiddle` and the plan's contextLength).
 */
export async function liftSampleAdaptation(
  gpu: Gpu,
  prepared: PreparedMethod,
  input: LiftSampleInput,
): Promise<() => Promise<void>> {
  const adapter = prepared.adapter as GatedMemoryAdapter | null;
  if (!adapter || adapter.name !== "lift") {
    throw new TypeError("lift: the prepared method has no Gated Memory adapter");
  }
  const config = liftConfigSchema.parse(prepared.details.config);
  const plan = prepared.details.plan as LiftPlan;
  const saved = await readF32(gpu, adapter.params);
  const restore = () => upload(gpu, adapter.params, saved);
  const document = documentIndex(input.tokens);
  try {
    if (config.documentInit === "fresh") {
      const values = new Float32Array(adapter.table.size);
      initGatedMemory(values, adapter.table, input.seed, document);
      upload(gpu, adapter.params, values);
    }
    const segments = segmentDocument(input.tokens, plan.segment, plan.stride);
    await adaptGatedMemory(
      gpu,
      prepared.weights,
      adapter,
      config,
      { segments, qa: [] },
      input.seed,
      document,
    );
  } catch (err) {
    restore();
    throw err;
  }
  return () => {
    restore();
    return Promise.resolve();
  };
}

/** A document index in [0, 2²⁰) from the tokens' sha256 (the same document always gets the same one). */
export function documentIndex(tokens: readonly number[]): number {
  return parseInt(sha256(new Uint8Array(Uint32Array.from(tokens).buffer)).slice(0, 5), 16) % MAX_DOCUMENT;
}

function prepareLift(ctx: PrepareContext, config: LiftConfig): PreparedMethod {
  const model = ctx.base.config;
  const plan = liftPlan(model, config, ctx);
  const adapter = createGatedMemoryAdapter(ctx.gpu, model, {
    seed: ctx.seed,
    regularization: config.regularization,
  });
  const count = liftParameterCount(model);
  const allocated = gatedMemoryTable(model).entries.reduce((n, e) => n + e.numel, 0);
  if (count !== allocated) throw new Error(`lift: formula ${count} ≠ allocated ${allocated} parameters`);
  return {
    weights: ctx.base,
    adapter,
    trainable: NO_BASE,
    trainableParameters: count,
    details: {
      testTime: true,
      perSample: "lift",
      config,
      plan,
      gateWidth: gateWidth(ctx.base.dims.D),
      lmHeadLora: { ...HEAD_LORA, parameters: liftParameterCount(model) - gatedMemoryParameterCount(model) },
      note: "training happens per document at evaluation time (liftDocument / liftSampleAdaptation); " +
        "reported losses are the cross-entropy only (the gate regulariser is not in the loss sum)",
    },
    destroy: () => adapter.params.buffer.destroy(),
  };
}

/** LIFT with Gated Memory (2024 code, paper v2/v3). */
export const lift: Method<typeof liftConfigSchema> = {
  name: "lift",
  title: "LIFT: per-document test-time fine-tuning of a Gated Memory adapter on the long input",
  caveat:
    "Gated Memory belongs to LIFT's 2024 code (paper v2/v3); v4 uses plain LoRA (spec §4.5). Segments " +
    "scale to the run (min(2048, trainLength), stride 3/8 of it); lr 1e-3 (the shells' duplicated flag " +
    "leaves 1e-5 under argparse); qaEpochs 3 and the 0.1 regulariser are our choices; auxiliary QA comes " +
    "from task facts with the project's template, not an LLM; no biases on GPT-2 either; kaiming fan-in per " +
    "head [UNVERIFIED]; reported losses exclude the gate regulariser.",
  config: liftConfigSchema,
  parameterCount: (model) => liftParameterCount(model),
  // Errors reject the promise rather than throw.
  prepare: (ctx, config) => Promise.resolve().then(() => prepareLift(ctx, config)),
};
