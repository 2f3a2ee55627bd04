/**
 * FocuSFT's bilevel training step (methods spec §5), recorded once and replayed, one submit per step:
 *
 *   reset φ      fast A ← kaiming-uniform from Philox (seed, stream of (step, matrix)), fast B ← 0
 *   inner × n    forward with φ, token-mean CE on the response tokens, backward to the adapter's
 *                gradients only (no base weight gradients), φ ← φ − η·clip_k(∇φ) per tensor (ops/sgd.ts)
 *   outer        forward and backward with φ* active, first-order (φ* is a constant: nothing
 *                differentiates through the inner updates), AdamW on the base (or an outer LoRA)
 *
 * The inner passes run on the same graph as the outer one, seen through a copy of the Graph record
 * whose base gradient table is absent (so no dW is computed), which costs no extra activation memory.
 * The reset's random fills carry the step in their stream, and a recording's uniforms are fixed when it
 * is sealed, so they are recorded afresh each step into a small recorder encoded in the same command
 * encoder as the replayed step.
 *
 * The spec's efficiency trick (§5.2: embeddings and the layers below the first fast-weight layer k under
 * no_grad) becomes: the first inner pass runs the whole forward, its backward stops at block k (nothing
 * below has a fast weight, and the inner pass computes no base gradient), and the later inner passes and
 * the outer forward start at block k (the lower blocks see the same batch, weights and outer adapter, so
 * their activations are still in place). Only the outer backward goes down to the embeddings. The results
 * are those of full passes, bit for bit (`innerFromFastLayers: false` runs those, for the test).
 */
import type { Gpu } from "../gpu/device.ts";
import { checked } from "../gpu/device.ts";
import { Recorder } from "../gpu/recorder.ts";
import { createTensor, readF32, type Tensor } from "../gpu/tensor.ts";
import { type Adapter, type BaseTrainable, NO_BASE } from "../model/adapter.ts";
import { createGraph, destroyGraph, type Graph, recordBackward, recordForward } from "../model/model.ts";
import type { ParamEntry } from "../model/params.ts";
import { type ModelWeights, view } from "../model/weights.ts";
import {
  adamw,
  type AdamWConfig,
  adamwConfigSchema,
  type AdamWTable,
  createAdamWStep,
  writeAdamWStep,
} from "../ops/adamw.ts";
import { TOKEN_PAD, TOKEN_RESPONSE } from "../ops/attention.ts";
import { IGNORE_INDEX } from "../ops/crossentropy.ts";
import { fill } from "../ops/elementwise.ts";
import { fillUniform } from "../ops/random.ts";
import { reduceFull } from "../ops/reduce.ts";
import { createSgdTable, destroySgdTable, sgdClipped, type SgdTable } from "../ops/sgd.ts";
import { LossLog } from "./loss_log.ts";
import {
  adamWState,
  adapterAdamWEntries,
  baseAdamWEntries,
  type HostBatch,
  type TrainerOptions,
  uploadBatch,
} from "./trainer.ts";

/**
 * FocuSFT's turn structure ("glm_bidir", spec §5.4) from a (B, T) loss mask (1 on response tokens):
 * each maximal run of 0s is a context turn (bidirectional inside), each maximal run of 1s a response
 * turn (causal inside); turn ids count the runs of each row from 0, as FocuSFT's cumulative sum of
 * changes does. `pad` (1 on padding) sets TOKEN_PAD, which blocks the token on both sides.
 * @example const { turn, tokenFlags } = turnsFromLossMask([0, 0, 1, 1, 0, 1], 1, 6);
 */
export function turnsFromLossMask(
  lossMask: ArrayLike<number>,
  B: number,
  T: number,
  pad?: ArrayLike<number>,
): { turn: Uint32Array; tokenFlags: Uint32Array } {
  if (lossMask.length !== B * T) {
    throw new RangeError(
      `turnsFromLossMask: lossMask holds ${lossMask.length} values, expected B·T = ${B * T}`,
    );
  }
  if (pad && pad.length !== B * T) {
    throw new RangeError(`turnsFromLossMask: pad holds ${pad.length} values, expected B·T = ${B * T}`);
  }
  const turn = new Uint32Array(B * T);
  const tokenFlags = new Uint32Array(B * T);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const i = b * T + t;
      const response = lossMask[i] !== 0;
      turn[i] = t === 0 ? 0 : turn[i - 1] + (response !== (lossMask[i - 1] !== 0) ? 1 : 0);
      tokenFlags[i] = (response ? TOKEN_RESPONSE : 0) | (pad && pad[i] !== 0 ? TOKEN_PAD : 0);
    }
  }
  return { turn, tokenFlags };
}

/**
 * The loss mask of a batch from its next-token targets: token t of a row is a response token when the
 * target at t − 1 counts (FocuSFT's loss is over loss_mask[:, 1:]); token 0 of a row is context.
 */
export function lossMaskFromTargets(targets: ArrayLike<number>, B: number, T: number): Uint8Array {
  if (targets.length !== B * T) {
    throw new RangeError(
      `lossMaskFromTargets: targets hold ${targets.length} values, expected B·T = ${B * T}`,
    );
  }
  const mask = new Uint8Array(B * T);
  for (let b = 0; b < B; b++) {
    for (let t = 1; t < T; t++) mask[b * T + t] = targets[b * T + t - 1] !== IGNORE_INDEX ? 1 : 0;
  }
  return mask;
}

/** What the bilevel step needs from the method (src/methods/focusft.ts builds it). */
export interface FocusftSetup {
  /**
   * One adapter for training: the outer LoRA's tensors first (`outerSize` elements; none when the base
   * trains), then every fast A, then every fast B.
   */
  adapter: Adapter;
  /** The fast A tensors in order, each with its kaiming-uniform bound 1/√in. */
  fastA: { entry: ParamEntry; bound: number }[];
  /** The fast B tensors (contiguous after the last A). */
  fastB: ParamEntry[];
  /** Outer LoRA tensors (empty when the base trains). */
  outerEntries: ParamEntry[];
  outerSize: number;
  /** Base tensors the outer step trains (ALL_BASE, or NO_BASE with an outer LoRA). */
  trainable: BaseTrainable;
  /** Attention mask of the inner and outer passes. */
  mask: "turns" | "causal";
  innerSteps: number;
  innerLr: number;
  /** Per-tensor gradient-norm bound; 0: none. */
  innerClip: number;
  /** Philox key of the fast weights' initialisation. */
  seed: number;
}

/** How a FocusftTrainer is built: the Trainer's options without what the method decides. */
export type FocusftTrainerOptions = Omit<TrainerOptions, "adapter" | "trainable" | "mask"> & {
  /** Skip the blocks below the first fast-weight layer where the spec does (default true). */
  innerFromFastLayers?: boolean;
};

/** Streams of the fast-weight reset start here, far from the streams other initialisations use. */
export const FAST_STREAM_BASE = 0x80000000;

/** The Philox stream of fast matrix `m` of `count` at (1-based) training step `step`. */
export function fastStream(step: number, m: number, count: number): number {
  const stream = FAST_STREAM_BASE + (step - 1) * count + m;
  if (!Number.isInteger(step) || step < 1 || stream > 0xffffffff) {
    throw new RangeError(
      `focusft: step ${step} has no fast-weight stream (steps 1…${
        Math.floor(2 ** 31 / count)
      } with ${count} matrices)`,
    );
  }
  return stream;
}

interface OuterPart {
  params: Tensor;
  grads: Tensor;
  /** What the clipping norm sums over (the outer part of the gradients). */
  normOf: Tensor;
  m: Tensor;
  v: Tensor;
  table: AdamWTable;
}

/**
 * Trains a model with FocuSFT's bilevel step; the same step(batch)/losses() shape as Trainer.
 * @example
 * const trainer = await FocusftTrainer.create(gpu, weights, setup, { B: 1, T: 512, optimizer: { lr: 1e-5 } });
 * for (const batch of batches) await trainer.step(batch);
 * console.log(await trainer.losses(), await trainer.innerLosses());
 */
export class FocusftTrainer {
  readonly graph: Graph;
  readonly config: AdamWConfig;
  readonly outer: OuterPart;
  readonly sgd: SgdTable | null;
  #stepValues: Tensor;
  #gradSumSq: Tensor;
  #log: LossLog;
  #recording: Recorder;
  #step = 0;

  private constructor(
    readonly gpu: Gpu,
    readonly weights: ModelWeights,
    readonly setup: FocusftSetup,
    readonly options: FocusftTrainerOptions,
    graph: Graph,
  ) {
    this.graph = graph;
    this.config = adamwConfigSchema.parse(options.optimizer);
    const adapter = setup.adapter;
    if (!adapter.params || !graph.adapterGrads) throw new Error("focusft: the adapter holds no tensors");
    const decay = this.config.weightDecay;
    if (graph.grads) {
      const entries = baseAdamWEntries(weights.table, setup.trainable, decay);
      this.outer = {
        params: weights.params,
        grads: graph.grads,
        normOf: graph.grads,
        ...adamWState(gpu, "focusft.adam", weights.table.size, entries, this.config),
      };
    } else {
      if (setup.outerEntries.length === 0) {
        throw new RangeError("focusft: nothing trains in the outer step (no base tensor and no outer LoRA)");
      }
      const entries = adapterAdamWEntries(adapter, setup.outerEntries, decay);
      this.outer = {
        params: adapter.params,
        grads: graph.adapterGrads,
        normOf: { ...graph.adapterGrads, shape: [setup.outerSize], label: "focusft.outerGrads" },
        ...adamWState(gpu, "focusft.adam", adapter.table.size, entries, this.config),
      };
    }
    const fast = [...setup.fastA.map((a) => a.entry), ...setup.fastB];
    this.sgd = setup.innerSteps > 0
      ? createSgdTable(gpu, fast.map((e) => ({ label: e.name, offset: e.offset, size: e.numel })))
      : null;
    this.#stepValues = createAdamWStep(gpu, "focusft.adam.step");
    this.#gradSumSq = createTensor(gpu, [1], { label: "focusft.gradSumSq" });
    // Ring 0: the outer loss; rings 1…innerSteps: the inner losses before each inner update.
    this.#log = new LossLog(gpu, options.lossReadEvery ?? 10, 1 + setup.innerSteps, "focusft.lossHistory");
    this.#recording = new Recorder(gpu, "focusft step");
  }

  /** Builds the graph (with the method's mask and adapter) and records the step once. */
  static async create(
    gpu: Gpu,
    weights: ModelWeights,
    setup: FocusftSetup,
    options: FocusftTrainerOptions,
  ): Promise<FocusftTrainer> {
    for (
      const [name, value, ok] of [
        ["innerSteps", setup.innerSteps, Number.isInteger(setup.innerSteps) && setup.innerSteps >= 0],
        ["innerLr", setup.innerLr, setup.innerLr >= 0 && Number.isFinite(setup.innerLr)],
        ["innerClip", setup.innerClip, setup.innerClip >= 0 && Number.isFinite(setup.innerClip)],
      ] as const
    ) {
      if (!ok) throw new RangeError(`focusft: ${name} = ${value} is out of range`);
    }
    if (setup.fastA.length === 0) throw new RangeError("focusft: no fast-weight matrices");
    const graph = createGraph(gpu, weights, {
      B: options.B,
      T: options.T,
      training: true,
      recompute: options.recompute,
      mask: setup.mask === "turns" ? { mode: "turns" } : undefined,
      adapter: setup.adapter,
      trainable: setup.trainable,
    });
    const trainer = new FocusftTrainer(gpu, weights, setup, options, graph);
    await trainer.#record();
    return trainer;
  }

  async #record(): Promise<void> {
    const rec = this.#recording;
    const g = this.graph;
    const s = this.setup;
    const params = s.adapter.params!;
    // Fast B ← 0 (the A tensors are filled by the per-step reset, encoded before this recording).
    const firstB = s.fastB[0].offset;
    const lastB = s.fastB[s.fastB.length - 1];
    await fill(rec, { ...view(params, s.fastB[0]), shape: [lastB.offset + lastB.numel - firstB] }, 0);
    // The inner passes: the same buffers, no base weight gradients. Weights carry 1/count (see #upload),
    // so the loss kernel's gradient is that of the token-mean loss.
    const inner: Graph = { ...g, grads: null, trainable: NO_BASE };
    const lowest = this.options.innerFromFastLayers === false
      ? 0
      : Math.min(...s.fastA.map((a) => Math.max(0, a.entry.layer)));
    for (let k = 0; k < s.innerSteps; k++) {
      await recordForward(rec, inner, { gradScale: 1, fromLayer: k === 0 ? 0 : lowest });
      await this.#log.record(rec, 1 + k, g.lossSum);
      await recordBackward(rec, inner, { toLayer: lowest });
      await sgdClipped(rec, params, g.adapterGrads!, this.sgd!, { lr: s.innerLr, maxNorm: s.innerClip });
    }
    // The outer pass with φ* as constants.
    await recordForward(rec, g, { gradScale: 1, fromLayer: s.innerSteps > 0 ? lowest : 0 });
    await recordBackward(rec, g);
    const o = this.outer;
    const clip = this.config.maxGradNorm !== undefined;
    if (clip) await reduceFull(rec, this.#gradSumSq, o.normOf, "sumsq");
    await adamw(
      rec,
      o.params,
      o.m,
      o.v,
      o.grads,
      o.table,
      this.#stepValues,
      clip ? this.#gradSumSq : undefined,
    );
    await this.#log.record(rec, 0, g.lossSum);
  }

  /** Steps taken so far. */
  get stepCount(): number {
    return this.#step;
  }

  #upload(batch: HostBatch): number {
    const { B, T } = this.options;
    return uploadBatch(
      this.gpu,
      this.graph,
      batch,
      (b) => turnsFromLossMask(lossMaskFromTargets(b.targets, B, T), B, T),
    );
  }

  /**
   * One FocuSFT step on `batch` (turn ids and flags are built from its targets when absent): uploads
   * it, records this step's fast-weight reset and submits it with the replayed step.
   */
  async step(batch: HostBatch): Promise<void> {
    const counted = this.#upload(batch);
    const t = this.#step + 1;
    const lr = this.options.schedule?.(t) ?? this.config.lr;
    writeAdamWStep(this.gpu, this.#stepValues, this.outer.table, { step: t, lr });
    this.#log.beforeSubmit();
    const reset = new Recorder(this.gpu, "focusft reset");
    const s = this.setup;
    const params = s.adapter.params!;
    for (const [m, a] of s.fastA.entries()) {
      await fillUniform(reset, view(params, a.entry), -a.bound, a.bound, {
        seed: s.seed,
        stream: fastStream(t, m, s.fastA.length),
      });
    }
    await checked(this.gpu, `focusft step ${t} [${this.#recording.describe()}]`, () => {
      const encoder = this.gpu.device.createCommandEncoder({ label: "focusft step" });
      reset.encode(encoder);
      this.#recording.encode(encoder);
      this.gpu.device.queue.submit([encoder.finish()]);
    });
    // Its uniform buffer goes once the GPU is done with this submit.
    this.gpu.device.queue.onSubmittedWorkDone().then(() => reset.destroy());
    this.#step = t;
    this.#log.afterSubmit(counted);
  }

  /** The outer (token-mean) loss of every step so far, waiting for outstanding readbacks. */
  async losses(): Promise<number[]> {
    await this.#log.settle();
    return this.#log.means(0);
  }

  /** Per step, the inner losses before each inner update (token means). */
  async innerLosses(): Promise<number[][]> {
    await this.#log.settle();
    const log = this.#log;
    return log.sums.map((row, s) => row.slice(1).map((x) => x / log.counts[s]));
  }

  /** The raw f32 outer loss sums (for bitwise comparisons). */
  async lossSums(): Promise<Float32Array> {
    await this.#log.settle();
    return Float32Array.from(this.#log.sums, (row) => row[0]);
  }

  /** The outer step's gradients (base table, or the adapter's with an outer LoRA) after the last step. */
  grads(): Promise<Float32Array> {
    return readF32(this.gpu, this.outer.grads);
  }

  /** The adapter's values (outer LoRA, then the adapted fast weights φ* of the last step). */
  adapterValues(): Promise<Float32Array> {
    return readF32(this.gpu, this.setup.adapter.params!);
  }

  /** Frees what the trainer allocated (not the weights or the adapter). */
  destroy(): void {
    this.#recording.destroy();
    destroyGraph(this.graph);
    if (this.sgd) destroySgdTable(this.sgd);
    const o = this.outer;
    for (const t of [o.m, o.v, o.table.table, o.table.chunks, this.#stepValues, this.#gradSumSq]) {
      t.buffer.destroy();
    }
    this.#log.destroy();
  }
}
