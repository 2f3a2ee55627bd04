/**
 * The training loop's device side: one recording holds a whole optimizer step — forward, loss,
 * backward, global gradient norm, AdamW and the loss logged into a ring — and every step is one
 * submit of that recording after the batch and the step's scalars are written with writeBuffer.
 * Losses are read back every `lossReadEvery` steps without waiting, so the GPU stays busy.
 *
 * Determinism: every kernel reduces in a fixed order and there are no float atomics, so the same
 * weights, batches and adapter give bitwise-identical losses, also after resuming from a checkpoint
 * (params and both AdamW moments are saved exactly, as f32).
 */
import type { Gpu } from "../gpu/device.ts";
import { Recorder } from "../gpu/recorder.ts";
import { createTensor, readF32, readTensors, type Tensor, upload } from "../gpu/tensor.ts";
import {
  adamw,
  type AdamWConfig,
  adamwConfigSchema,
  type AdamWEntry,
  type AdamWTable,
  createAdamWStep,
  createAdamWTable,
  writeAdamWStep,
} from "../ops/adamw.ts";
import { checkTargets, IGNORE_INDEX } from "../ops/crossentropy.ts";
import { bucketTokens } from "../ops/encoder.ts";
import { reduceFull } from "../ops/reduce.ts";
import { hashJson } from "../data/hash.ts";
import {
  createGraph,
  destroyGraph,
  type Graph,
  type GraphOptions,
  recordBackward,
  recordForward,
} from "../model/model.ts";
import { decays, type ParamEntry, type ParamTable } from "../model/params.ts";
import { type Adapter, ALL_BASE, type BaseTrainable, trainableRange } from "../model/adapter.ts";
import { add } from "../ops/elementwise.ts";
import { LossLog } from "./loss_log.ts";
import { readSafetensors, writeSafetensors } from "../model/safetensors.ts";
import type { ModelWeights } from "../model/weights.ts";

/** One batch on the host: (B, T) token ids, next-token targets and optional loss weights. */
export interface HostBatch {
  tokens: Uint32Array;
  targets: Int32Array;
  /** Per-token loss weights; default 1 for every target that is not IGNORE_INDEX. */
  weights?: Float32Array;
  /** Turn ids and flags (TOKEN_RESPONSE, TOKEN_PAD) of the `turns` mask; required with it. */
  turn?: Uint32Array;
  tokenFlags?: Uint32Array;
}

/**
 * Uploads a batch into a training graph's inputs: tokens, targets, per-token loss weights pre-divided
 * by the counted targets (so the recorded loss kernel needs no per-step uniform), the encoder's buckets,
 * and the turns mask's ids and flags — from the batch, or from `turns(batch)` when it has none. Returns
 * the counted targets; throws naming the field when the batch does not fit the graph.
 */
export function uploadBatch(
  gpu: Gpu,
  graph: Graph,
  batch: HostBatch,
  turns?: (batch: HostBatch) => { turn: Uint32Array; tokenFlags: Uint32Array },
): number {
  const { B, T } = graph.options;
  const N = B * T;
  const V = graph.weights.dims.V;
  if (batch.tokens.length !== N || batch.targets.length !== N) {
    throw new RangeError(
      `batch: tokens (${batch.tokens.length}) and targets (${batch.targets.length}) must each hold B·T = ${N}`,
    );
  }
  checkTargets("batch.targets", batch.targets, V);
  let counted = 0;
  for (const t of batch.targets) if (t !== IGNORE_INDEX) counted++;
  if (counted === 0) throw new RangeError("batch: every target is IGNORE_INDEX; nothing to train on");
  const weights = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    weights[i] = batch.targets[i] === IGNORE_INDEX ? 0 : (batch.weights?.[i] ?? 1) / counted;
  }
  const buckets = bucketTokens(batch.tokens, V);
  const inputs = graph.inputs;
  upload(gpu, inputs.tokens, batch.tokens);
  upload(gpu, inputs.targets, batch.targets);
  upload(gpu, inputs.weights, weights);
  upload(gpu, inputs.bucketIds, buckets.ids);
  upload(gpu, inputs.bucketStart, buckets.start);
  upload(gpu, inputs.bucketPositions, buckets.positions);
  if (inputs.turn && inputs.tokenFlags) {
    const given = batch.turn && batch.tokenFlags
      ? { turn: batch.turn, tokenFlags: batch.tokenFlags }
      : undefined;
    const mask = given ?? turns?.(batch);
    if (mask?.turn.length !== N || mask?.tokenFlags.length !== N) {
      throw new RangeError(`batch: the turns mask needs turn and tokenFlags arrays of B·T = ${N} each`);
    }
    upload(gpu, inputs.turn, mask.turn);
    upload(gpu, inputs.tokenFlags, mask.tokenFlags);
  }
  return counted;
}

/** How a Trainer is built. */
export interface TrainerOptions {
  B: number;
  T: number;
  optimizer: Partial<AdamWConfig> & { lr: number };
  /** Learning rate of step t (1-based); default the optimizer's constant lr. */
  schedule?: (step: number) => number;
  recompute?: boolean;
  mask?: GraphOptions["mask"];
  /** Losses are read back in groups of this many steps (default 10). */
  lossReadEvery?: number;
  /** A method's adapter: its tensors train with their own AdamW moments. */
  adapter?: Adapter;
  /** Which base tensors train (default all; methods with an adapter usually pass NO_BASE). */
  trainable?: BaseTrainable;
}

/** AdamW entries of the base tensors `trainable` selects; tensors that decay get `weightDecay`. */
export function baseAdamWEntries(
  table: ParamTable,
  trainable: BaseTrainable,
  weightDecay: number,
): AdamWEntry[] {
  return table.entries.flatMap((e) => {
    const r = trainableRange(trainable, e);
    if (!r) return [];
    return [{
      label: e.name,
      offset: e.offset + r.from,
      size: r.count,
      weightDecay: decays(e) ? weightDecay : 0,
    }];
  });
}

/** AdamW entries of an adapter's tensors: its group multipliers, else the decay rule. */
export function adapterAdamWEntries(
  adapter: Adapter,
  entries: readonly ParamEntry[],
  weightDecay: number,
): AdamWEntry[] {
  return entries.map((e) => ({
    label: e.name,
    offset: e.offset,
    size: e.numel,
    lrScale: adapter.group?.(e).lrScale,
    weightDecay: adapter.group?.(e).weightDecay ?? (decays(e) ? weightDecay : 0),
  }));
}

/** Zeroed AdamW moments (`size` elements each) and the device table of `entries`. */
export function adamWState(
  gpu: Gpu,
  label: string,
  size: number,
  entries: AdamWEntry[],
  config: AdamWConfig,
): { m: Tensor; v: Tensor; table: AdamWTable } {
  const zeros = (name: string) => {
    const t = createTensor(gpu, [size], { label: `${label}.${name}` });
    upload(gpu, t, new Float32Array(size));
    return t;
  };
  return { m: zeros("m"), v: zeros("v"), table: createAdamWTable(gpu, entries, config) };
}

/** One AdamW state: the parameters, gradients and moments of one table. */
interface OptimizerPart {
  params: Tensor;
  grads: Tensor;
  m: Tensor;
  v: Tensor;
  table: AdamWTable;
  size: number;
  sumSq: Tensor;
}

/**
 * Trains the base tensors `trainable` selects (default all) and an adapter's tensors with AdamW; the
 * global gradient norm for clipping covers both.
 * @example
 * const trainer = await Trainer.create(gpu, weights, { B: 1, T: 512, optimizer: { lr: 3e-4 } });
 * for (const batch of batches) await trainer.step(batch);
 * console.log(await trainer.losses());
 */
export class Trainer {
  readonly graph: Graph;
  readonly config: AdamWConfig;
  /** The base part (null when no base tensor trains) and the adapter part (null without one). */
  readonly base: OptimizerPart | null;
  readonly adapterPart: OptimizerPart | null;
  #stepValues: Tensor;
  #gradSumSq: Tensor;
  #log: LossLog;
  #recording: Recorder;
  #step = 0;

  private constructor(
    readonly gpu: Gpu,
    readonly weights: ModelWeights,
    readonly options: TrainerOptions,
    graph: Graph,
  ) {
    this.graph = graph;
    this.config = adamwConfigSchema.parse(options.optimizer);
    const part = (label: string, params: Tensor, grads: Tensor, size: number, entries: AdamWEntry[]) => ({
      params,
      grads,
      ...adamWState(gpu, label, size, entries, this.config),
      size,
      sumSq: createTensor(gpu, [1], { label: `${label}.gradSumSq` }),
    });
    const decay = this.config.weightDecay;
    this.base = graph.grads
      ? part(
        "adam",
        weights.params,
        graph.grads,
        weights.table.size,
        baseAdamWEntries(weights.table, options.trainable ?? ALL_BASE, decay),
      )
      : null;
    const adapter = options.adapter;
    this.adapterPart = adapter && adapter.params && graph.adapterGrads
      ? part(
        `${adapter.name}.adam`,
        adapter.params,
        graph.adapterGrads,
        adapter.table.size,
        adapterAdamWEntries(adapter, adapter.table.entries, decay),
      )
      : null;
    if (!this.base && !this.adapterPart) {
      throw new RangeError("trainer: nothing trains (no trainable base tensor and no adapter tensor)");
    }
    this.#stepValues = createAdamWStep(gpu);
    this.#gradSumSq = createTensor(gpu, [1], { label: "gradSumSq" });
    this.#log = new LossLog(gpu, options.lossReadEvery ?? 10, 1, "lossHistory");
    this.#recording = new Recorder(gpu, "train step");
  }

  /** Builds the graph and records the step once. */
  static async create(gpu: Gpu, weights: ModelWeights, options: TrainerOptions): Promise<Trainer> {
    const graph = createGraph(gpu, weights, {
      B: options.B,
      T: options.T,
      training: true,
      recompute: options.recompute,
      mask: options.mask,
      adapter: options.adapter,
      trainable: options.trainable,
    });
    const trainer = new Trainer(gpu, weights, options, graph);
    await trainer.#record();
    return trainer;
  }

  async #record(): Promise<void> {
    const rec = this.#recording;
    const g = this.graph;
    // The loss is the mean over counted tokens: gradScale arrives per step through the weights, which
    // the host pre-divides by the batch's token count (see #upload).
    await recordForward(rec, g, { gradScale: 1 });
    await recordBackward(rec, g);
    const parts = [this.base, this.adapterPart].filter((x): x is OptimizerPart => x !== null);
    const clip = this.config.maxGradNorm !== undefined;
    if (clip) {
      // One global norm over both parts, summed in a fixed order.
      if (parts.length === 1) {
        await reduceFull(rec, this.#gradSumSq, parts[0].grads, "sumsq");
      } else {
        for (const q of parts) await reduceFull(rec, q.sumSq, q.grads, "sumsq");
        await add(rec, this.#gradSumSq, parts[0].sumSq, parts[1].sumSq);
      }
    }
    for (const q of parts) {
      await adamw(
        rec,
        q.params,
        q.m,
        q.v,
        q.grads,
        q.table,
        this.#stepValues,
        clip ? this.#gradSumSq : undefined,
      );
    }
    await this.#log.record(rec, 0, g.lossSum);
  }

  /** Steps taken so far. */
  get stepCount(): number {
    return this.#step;
  }

  #upload(batch: HostBatch): number {
    return uploadBatch(this.gpu, this.graph, batch);
  }

  /** One optimizer step on `batch`: uploads it, then one submit of the recorded step. */
  async step(batch: HostBatch): Promise<void> {
    const counted = this.#upload(batch);
    const t = this.#step + 1;
    const lr = this.options.schedule?.(t) ?? this.config.lr;
    writeAdamWStep(this.gpu, this.#stepValues, (this.base ?? this.adapterPart)!.table, { step: t, lr });
    this.#log.beforeSubmit();
    await this.#recording.submit();
    this.#step = t;
    this.#log.afterSubmit(counted);
  }

  /**
   * Σ losses of every step so far (the per-token mean loss of step s is sums[s] / counts[s]; here
   * returned already divided), waiting for outstanding readbacks.
   */
  async losses(): Promise<number[]> {
    await this.#log.settle();
    return this.#log.means();
  }

  /** The raw f32 loss sums (for bitwise comparisons). */
  async lossSums(): Promise<Float32Array> {
    await this.#log.settle();
    return Float32Array.from(this.#log.sums, (row) => row[0]);
  }

  /**
   * Saves params and both AdamW moments exactly (f32) with the step count, written to a temporary
   * file and renamed.
   */
  async save(path: string): Promise<void> {
    await this.losses();
    const parts = this.#parts();
    const values = await readTensors(this.gpu, parts.flatMap(([, q]) => [q.params, q.m, q.v]));
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    parts.forEach(([prefix, q], i) => {
      for (const [k, name] of ["params", "adam.m", "adam.v"].entries()) {
        tensors[`${prefix}${name}`] = { shape: [q.size], data: values[3 * i + k] as Float32Array };
      }
    });
    const meta = {
      format: "longtune-train-state",
      step: String(this.#step),
      config: JSON.stringify(this.weights.config),
      optimizer: JSON.stringify(this.config),
      tableHash: this.#tableHash(),
      losses: JSON.stringify(this.#log.sums.map((row) => row[0])),
      counts: JSON.stringify(this.#log.counts),
    };
    await writeSafetensors(path, tensors, meta);
  }

  // The parts that train, with the key prefix of their tensors in a checkpoint.
  #parts(): [string, OptimizerPart][] {
    const out: [string, OptimizerPart][] = [];
    if (this.base) out.push(["", this.base]);
    if (this.adapterPart) out.push(["adapter.", this.adapterPart]);
    return out;
  }

  #tableHash(): string {
    return hashJson({
      base: this.base ? this.weights.table.entries : null,
      baseTrainable: this.base?.table.entries ?? null,
      adapter: this.options.adapter ? [this.options.adapter.name, this.options.adapter.table.entries] : null,
    });
  }

  /** Restores params, moments, the step count and the loss log from `save`'s file. */
  async load(path: string): Promise<void> {
    const file = await readSafetensors(path);
    const meta = file.metadata;
    if (meta.format !== "longtune-train-state") {
      throw new Error(`${path}: not a longtune training checkpoint (metadata format is "${meta.format}")`);
    }
    const want = this.#tableHash();
    if (meta.tableHash !== want) {
      throw new Error(
        `${path}: its parameter tables (hash ${meta.tableHash}) differ from this trainer's (${want})`,
      );
    }
    const parts = this.#parts();
    for (const [prefix, q] of parts) {
      for (const name of ["params", "adam.m", "adam.v"]) {
        const t = file.tensors.get(`${prefix}${name}`);
        if (!t || t.dtype !== "F32" || t.shape.length !== 1 || t.shape[0] !== q.size) {
          throw new Error(`${path}: tensor "${prefix}${name}" must be F32 of shape [${q.size}]`);
        }
      }
    }
    for (const [prefix, q] of parts) {
      upload(this.gpu, q.params, file.tensors.get(`${prefix}params`)!.data as Float32Array);
      upload(this.gpu, q.m, file.tensors.get(`${prefix}adam.m`)!.data as Float32Array);
      upload(this.gpu, q.v, file.tensors.get(`${prefix}adam.v`)!.data as Float32Array);
    }
    this.#step = Number(meta.step);
    this.#log.restore(this.#step, JSON.parse(meta.losses), JSON.parse(meta.counts));
  }

  /** Frees everything the trainer allocated: graph, moments, tables, loss log (not the weights or adapter). */
  destroy(): void {
    this.#recording.destroy();
    destroyGraph(this.graph);
    for (const q of [this.base, this.adapterPart]) {
      if (!q) continue;
      for (const t of [q.m, q.v, q.sumSq, q.table.table, q.table.chunks]) t.buffer.destroy();
    }
    for (const t of [this.#stepValues, this.#gradSumSq]) t.buffer.destroy();
    this.#log.destroy();
  }

  /** The current base gradient table (after the last step's backward). */
  grads(): Promise<Float32Array> {
    if (!this.graph.grads) {
      throw new Error("trainer: no base tensor trains, so there is no base gradient table");
    }
    return readF32(this.gpu, this.graph.grads);
  }

  /** The adapter's current gradients (after the last step's backward). */
  adapterGrads(): Promise<Float32Array> {
    if (!this.graph.adapterGrads) {
      throw new Error("trainer: no adapter gradients (no adapter, or it has no tensors)");
    }
    return readF32(this.gpu, this.graph.adapterGrads);
  }
}
