/**
 * The suite runner: loads the base models, expands the suite into cells (cells.ts), keeps this shard's
 * cells, and runs them grouped by what trains once — prepare the method on a fresh copy of the base
 * weights, train it (the plain Trainer, or the loop `details.trainer` names), then evaluate every cell
 * of the group (evaluate.ts). Each finished cell is written at once, atomically (temporary file, then
 * rename), to a content-addressed cache (`<cache>/cells/<key>.json`); a trained group's state goes to
 * `<cache>/train/<group key>.safetensors`. A rerun skips cached cells, and a group whose cells are all
 * cached is not even prepared.
 *
 * Ctrl-C: the caller aborts `signal`; the runner stops between training steps or evaluation samples,
 * keeps every finished cell and throws the signal's reason (the CLI exits 130).
 *
 * At the end the shard's cells — computed or cached — are assembled into one report.json per model
 * (validated by its schema; `<out>/report.json`, or `<out>/<model>/report.json` for several models),
 * rendered to report.md and report.html. Metric values depend only on the cell keys' inputs: the same
 * suite run twice, resumed, or split into shards and merged gives the same numbers; only timings,
 * memory and the environment's timestamp differ.
 */

import cliProgress from "cli-progress";
import process from "node:process";
import { join } from "node:path";
import { z } from "zod";
import { canonicalJson, hashJson, sha256 } from "../data/hash.ts";
import { writeFileAtomic } from "../data/layouts.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { getGpu, type Gpu } from "../gpu/device.ts";
import { allocatedBytes, readTensors, upload } from "../gpu/tensor.ts";
import { createGenerator } from "../eval/generate.ts";
import { createScorer } from "../eval/scorer.ts";
import type { Method, PrepareContext, PreparedMethod } from "../methods/method.ts";
import { METHODS } from "../methods/registry.ts";
import { trainableRange } from "../model/adapter.ts";
import { readSafetensors, writeSafetensors } from "../model/safetensors.ts";
import { createWeights, type ModelWeights } from "../model/weights.ts";
import { attentionMasses } from "./attention_probe.ts";
import { type BaseModel, loadBaseModel } from "./base_models.ts";
import {
  cellEvalTokens,
  checkGuards,
  expandSuite,
  type Expansion,
  groupsOf,
  groupTrainTokens,
  type ModelFacts,
  RUNNER_CODE_VERSION,
  type Shard,
  shardCells,
  type SuiteCell,
  type TrainingGroup,
} from "./cells.ts";
import { captureEnvironment } from "./environment.ts";
import { cellData, type CellEvaluation, type EvalBackend, evaluateCell } from "./evaluate.ts";
import { sampleAdaptationFor, trainerFor } from "./method_hooks.ts";
import { renderHtml } from "./render_html.ts";
import { renderMarkdown } from "./render_md.ts";
import {
  type Cell,
  cellSchema,
  type Environment,
  type Report,
  REPORT_SCHEMA_VERSION,
  validateReport,
  writeReport,
} from "./report_schema.ts";
import type { ResolvedSuite, TrainingSettings } from "./suite.ts";
import { trainingStream } from "./training_data.ts";

// ---------------------------------------------------------------------------------------------
// Models.

/** A base model loaded for a run, with the facts cells hash. */
export interface LoadedModel {
  facts: ModelFacts;
  base: BaseModel;
}

/** sha256 of a model's config (canonical JSON) and its weights in table layout (f32 little-endian). */
export function modelHash(base: Pick<BaseModel, "config" | "values">): string {
  const bytes = new Uint8Array(base.values.buffer, base.values.byteOffset, base.values.byteLength);
  return sha256(`${canonicalJson(base.config)}\n${sha256(bytes)}`);
}

/** Loads the suite's models (shipped names are checked against their manifest hashes). */
export async function loadModels(names: readonly string[]): Promise<LoadedModel[]> {
  const out: LoadedModel[] = [];
  for (const name of names) {
    const base = await loadBaseModel(name);
    out.push({
      base,
      facts: { name, config: base.config, hash: modelHash(base), tokenizerHash: base.tokenizer.hash },
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Training.

/** Learning rate of step t (1-based) under a schedule. */
export function scheduleRate(settings: TrainingSettings): (t: number) => number {
  const { lr, steps, schedule } = settings;
  const { kind, warmupSteps, minLrRatio } = schedule;
  return (t) => {
    if (warmupSteps > 0 && t <= warmupSteps) return (lr * t) / warmupSteps;
    if (kind === "constant") return lr;
    const progress = Math.min(1, Math.max(0, t - warmupSteps) / Math.max(1, steps - warmupSteps));
    const shape = kind === "linear" ? 1 - progress : 0.5 * (1 + Math.cos(Math.PI * progress));
    return lr * (minLrRatio + (1 - minLrRatio) * shape);
  };
}

/** A training window as methods that score the base before training read it (PrepareContext.calibration). */
export interface CalibrationSequence {
  tokens: Uint32Array;
  targets: Int32Array;
}

/** How many training windows a method may read for calibration (methods spec §7.4: 64–256). */
export const CALIBRATION_WINDOWS = 256;

/** The first CALIBRATION_WINDOWS windows (B = 1) of a group's training stream. */
export function calibrationSequences(
  settings: TrainingSettings,
  tokenizer: Tokenizer,
  seed: number,
): CalibrationSequence[] {
  const stream = trainingStream(settings.data, tokenizer, seed, 1, settings.sequenceLength);
  return Array.from({ length: CALIBRATION_WINDOWS }, (_, i) => stream.batch(i));
}

/** What training a group produced (stored with the trained state). */
export interface TrainOutcome {
  /** One point per step, or bin means of at most 200 bins for long runs. */
  curve: Cell["trainingCurve"];
  seconds: number;
  tokens: number;
  peakBytes: number;
  trainingSet: { key: string; hash: string };
}

const trainMetaSchema = z.strictObject({
  format: z.literal("longtune-trained"),
  code: z.string(),
  groupKey: z.string(),
  outcome: z.strictObject({
    curve: z.array(z.strictObject({ step: z.number(), loss: z.number(), lr: z.number() })),
    seconds: z.number(),
    tokens: z.number(),
    peakBytes: z.number(),
    trainingSet: z.strictObject({ key: z.string(), hash: z.string() }),
  }),
  run: z.record(z.string(), z.json()),
});

/** The metadata stored with a trained state. */
export type TrainMeta = z.infer<typeof trainMetaSchema>;

function baseTrains(prepared: PreparedMethod): boolean {
  return prepared.weights.table.entries.some((entry) => trainableRange(prepared.trainable, entry) !== null);
}

/**
 * Saves what training changed — the adapter's parameters and, when any base tensor trains, the whole
 * weight table — with the outcome, atomically (safetensors writes a temporary file and renames it).
 */
export async function saveTrainedState(
  gpu: Gpu,
  path: string,
  prepared: PreparedMethod,
  meta: TrainMeta,
): Promise<void> {
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  const wanted = [];
  if (prepared.adapter?.params) wanted.push(["adapter", prepared.adapter.params] as const);
  if (baseTrains(prepared)) wanted.push(["weights", prepared.weights.params] as const);
  const values = await readTensors(gpu, wanted.map(([, t]) => t));
  wanted.forEach(([name], i) => {
    const data = values[i] as Float32Array;
    tensors[name] = { shape: [data.length], data };
  });
  await writeSafetensors(path, tensors, { longtune: JSON.stringify(meta) });
}

/** Loads a trained state into a freshly prepared method; returns its metadata. */
export async function loadTrainedState(path: string, prepared: PreparedMethod, gpu: Gpu): Promise<TrainMeta> {
  const file = await readSafetensors(path);
  let meta: TrainMeta;
  try {
    meta = trainMetaSchema.parse(JSON.parse(file.metadata.longtune ?? "null"));
  } catch (error) {
    throw new Error(`${path}: not a longtune trained state (${(error as Error).message})`);
  }
  const put = (name: string, tensor: { shape: readonly number[] } & Parameters<typeof upload>[1] | null) => {
    const stored = file.tensors.get(name);
    if (tensor === null) {
      if (stored !== undefined) throw new Error(`${path}: holds "${name}" but the prepared method has none`);
      return;
    }
    const size = tensor.shape.reduce((a, b) => a * b, 1);
    if (stored === undefined || stored.dtype !== "F32" || stored.data.length !== size) {
      throw new Error(`${path}: tensor "${name}" must be F32 with ${size} values`);
    }
    upload(gpu, tensor, stored.data as Float32Array);
  };
  put("adapter", prepared.adapter?.params ?? null);
  if (file.tensors.has("weights") || baseTrains(prepared)) put("weights", prepared.weights.params);
  return meta;
}

function curveOf(losses: readonly number[], lrAt: (t: number) => number): Cell["trainingCurve"] {
  const bin = Math.max(1, Math.ceil(losses.length / 200));
  const curve: Cell["trainingCurve"] = [];
  for (let from = 0; from < losses.length; from += bin) {
    const part = losses.slice(from, from + bin);
    const step = from + part.length;
    curve.push({ step, loss: part.reduce((a, b) => a + b, 0) / part.length, lr: lrAt(step) });
  }
  return curve;
}

/** Progress of a training run: called after each step with the tokens it read. */
export type StepCallback = (tokens: number) => void;

/**
 * Trains a prepared method for `settings` on its training stream (the loop its details ask for),
 * checking `checkpoint` before each step.
 */
export async function trainPrepared(
  gpu: Gpu,
  methodName: string,
  prepared: PreparedMethod,
  settings: TrainingSettings,
  tokenizer: Tokenizer,
  seed: number,
  checkpoint: () => void,
  onStep: StepCallback = () => {},
): Promise<TrainOutcome> {
  const before = allocatedBytes();
  const lrAt = scheduleRate(settings);
  const trainer = await trainerFor(methodName, prepared)({
    gpu,
    prepared,
    B: settings.batch,
    T: settings.sequenceLength,
    optimizer: { lr: settings.lr, ...settings.optimizer },
    schedule: lrAt,
    recompute: settings.recompute,
  });
  const stream = trainingStream(settings.data, tokenizer, seed, settings.batch, settings.sequenceLength);
  const started = performance.now();
  try {
    for (let step = 0; step < settings.steps; step++) {
      checkpoint();
      await trainer.step(stream.batch(step));
      onStep(settings.batch * settings.sequenceLength);
    }
    const losses = await trainer.losses();
    await gpu.device.queue.onSubmittedWorkDone();
    const seconds = (performance.now() - started) / 1000;
    const T = settings.sequenceLength, B = settings.batch;
    const hash = stream.hash();
    return {
      curve: curveOf(losses, lrAt),
      seconds,
      tokens: settings.steps * B * T,
      peakBytes: allocatedBytes() - before,
      trainingSet: { key: `train:T${T}xB${B}x${settings.steps}:seed${seed}:${hash.slice(0, 8)}`, hash },
    };
  } finally {
    trainer.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Evaluation backend.

/** The evaluation backend of a prepared method: GPU generator, GPU scorer, attention probe, hooks. */
export function methodBackend(
  gpu: Gpu,
  methodName: string,
  prepared: PreparedMethod,
  tokenizer: Tokenizer,
  context: { length: number; seed: number },
): EvalBackend {
  const model = { weights: prepared.weights, adapter: prepared.adapter, evalMask: prepared.evalMask };
  const eosId = tokenizer.special("<|endoftext|>");
  const adaptation = sampleAdaptationFor(methodName, prepared);
  return {
    tokenizer,
    generator(maxLength) {
      const generator = createGenerator(gpu, model, { maxLength });
      return Promise.resolve({
        async generate(prompt, options) {
          const tokens = tokenizer.encode(prompt);
          const room = maxLength - tokens.length;
          if (room < 1) {
            throw new RangeError(
              `a prompt of ${tokens.length} tokens leaves no room to generate within ${maxLength} tokens`,
            );
          }
          const out = await generator.generate(tokens, {
            maxNewTokens: Math.min(options.maxNewTokens, room),
            stop: [...options.stop],
            tokenizer,
            eosId,
          });
          return { text: out.text, tokens: out.tokens, promptTokens: out.promptTokens };
        },
        destroy: () => generator.destroy(),
      });
    },
    scorer(maxContext) {
      return Promise.resolve(createScorer(gpu, model, { maxContext }));
    },
    attention(prompt, regions) {
      return attentionMasses(gpu, model, prompt, regions);
    },
    async beforeSample(prompt, tokens) {
      if (adaptation === null) return () => Promise.resolve();
      return await adaptation(gpu, prepared, {
        prompt,
        tokens,
        tokenizer,
        length: context.length,
        seed: context.seed,
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The cell cache.

const cachedCellSchema = z.strictObject({
  format: z.literal("longtune-cell"),
  code: z.string(),
  key: z.string(),
  groupKey: z.string(),
  /** The cell as computed; method, task and seed are reassigned from the suite at assembly. */
  cell: cellSchema,
  evaluationSetHash: z.string(),
  trainingSet: z.strictObject({ key: z.string(), hash: z.string() }).nullable(),
});

/** A cell as stored in the cache. */
export type CachedCell = z.infer<typeof cachedCellSchema>;

/** Path of a cell in the cache. */
export function cellCachePath(cache: string, key: string): string {
  return join(cache, "cells", key.slice(0, 2), `${key}.json`);
}

/** Path of a group's trained state in the cache. */
export function trainCachePath(cache: string, groupKey: string): string {
  return join(cache, "train", `${groupKey}.safetensors`);
}

/** The cached cell of `key`, or undefined (a file that does not validate counts as missing). */
export async function readCachedCell(cache: string, key: string): Promise<CachedCell | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(cellCachePath(cache, key));
  } catch {
    return undefined;
  }
  try {
    const parsed = cachedCellSchema.safeParse(JSON.parse(text));
    return parsed.success && parsed.data.key === key ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

// ---------------------------------------------------------------------------------------------
// Progress.

interface Progress {
  line(text: string): void;
  advance(units: number, cellsDone?: number): void;
  stage(text: string): void;
  stop(): void;
}

function makeProgress(quiet: boolean, totalUnits: number, totalCells: number): Progress {
  const useBar = !quiet && Deno.stderr.isTerminal();
  let bar: cliProgress.SingleBar | null = null;
  let cells = 0;
  let stage = "";
  if (useBar) {
    bar = new cliProgress.SingleBar({
      stream: process.stderr,
      format:
        "{bar} {percentage}% | cells {cells}/{cellsTotal} | {stage} | {duration_formatted} elapsed | ETA {eta_formatted}",
      hideCursor: true,
      etaBuffer: 200,
    }, cliProgress.Presets.shades_classic);
    bar.start(Math.max(1, totalUnits), 0, { cells, cellsTotal: totalCells, stage });
  }
  return {
    line(text) {
      if (!quiet && bar === null) console.log(text);
    },
    advance(units, cellsDone = 0) {
      cells += cellsDone;
      bar?.increment(units, { cells, cellsTotal: totalCells, stage });
    },
    stage(text) {
      stage = text;
      bar?.update({ cells, cellsTotal: totalCells, stage });
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Running.

/** How `runSuite` runs. */
export interface RunOptions {
  suite: ResolvedSuite;
  /** The suite file and the sha256 of its bytes (reports record both). */
  suiteFile: { path: string; fileHash: string };
  /** Where report.json, report.md and report.html go. */
  out: string;
  /** The cell cache (default `<out>/cache`). */
  cache?: string;
  shard?: Shard;
  /** Aborting stops the run between steps or samples; its reason is thrown. */
  signal?: AbortSignal;
  quiet?: boolean;
  /** Called after each cell is written to the cache (tests interrupt with it). */
  onCellDone?: (cell: SuiteCell, cached: boolean) => void;
  /** The method registry (default: `METHODS`). */
  registry?: readonly Method[];
  gpu?: Gpu;
}

/** What a run did. */
export interface RunSummary {
  /** report.json paths, one per model. */
  reports: string[];
  cells: number;
  computed: number;
  cached: number;
  failed: number;
  seconds: number;
}

/** Everything a group needs while it runs. */
interface GroupContext {
  gpu: Gpu;
  model: LoadedModel;
  cache: string;
  check: () => void;
  signal?: AbortSignal;
  /** Failed cells of this run, by key (never cached). */
  failed: Map<string, CachedCell>;
  /** Finished cells by key; a later cell with the same key (other seeds of a method that trains nothing) reuses it. */
  found: Map<string, CachedCell>;
  progress: Progress;
  registry: readonly Method[];
  dataSeed: number;
  /** Cells of the group in the whole suite (training time is shared among them). */
  groupSize: number;
  onCellDone?: RunOptions["onCellDone"];
}

/** Results of a group's cells that were computed now. */
interface GroupCounts {
  computed: number;
  failed: number;
}

/** A group made ready for evaluation: fresh weights, the prepared method and (if it trains) its training. */
export interface PreparedGroup {
  weights: ModelWeights;
  prepared: PreparedMethod;
  outcome: TrainOutcome | null;
  /** allocatedBytes() before the group's weights were made. */
  allocatedBefore: number;
  dispose(): void;
}

/**
 * Prepares a group's method on a fresh copy of the base weights and trains it, or loads its trained
 * state from `<cache>/train/<group key>.safetensors` when present (and writes it there after training).
 */
export async function prepareGroup(
  gpu: Gpu,
  model: LoadedModel,
  group: TrainingGroup,
  options: {
    registry: readonly Method[];
    cache: string;
    check: () => void;
    onStep?: StepCallback;
    log?: (line: string) => void;
  },
): Promise<PreparedGroup> {
  const method = options.registry.find((m) => m.name === group.method.name);
  if (method === undefined) throw new RangeError(`method "${group.method.name}" is not registered`);
  const config = method.config.parse(group.method.config);
  const allocatedBefore = allocatedBytes();
  const weights: ModelWeights = createWeights(gpu, model.base.config, model.base.values);
  let prepared: PreparedMethod | null = null;
  const dispose = () => {
    prepared?.destroy();
    weights.params.buffer.destroy();
  };
  try {
    const t = group.method.training;
    let calibration: CalibrationSequence[] | undefined;
    const context: PrepareContext = {
      gpu,
      base: weights,
      baseValues: model.base.values,
      trainLength: group.lengths.trainLength,
      maxLength: group.lengths.maxLength,
      seed: group.seed,
      // The first training windows, made only if the method reads them (the hybrid's neuron scores).
      get calibration() {
        calibration ??= calibrationSequences(t, model.base.tokenizer, group.seed);
        return calibration;
      },
    };
    prepared = await method.prepare(context, config);
    let outcome: TrainOutcome | null = null;
    const label = `${group.method.label} seed ${group.seed}`;
    if (group.trains) {
      const path = trainCachePath(options.cache, group.key);
      if (await exists(path)) {
        const meta = await loadTrainedState(path, prepared, gpu);
        if (meta.groupKey !== group.key) {
          throw new Error(`${path}: holds the training of group ${meta.groupKey}, not ${group.key}`);
        }
        outcome = meta.outcome;
        options.onStep?.(groupTrainTokens(group));
        options.log?.(`loaded trained ${label} from ${path}`);
      } else {
        outcome = await trainPrepared(
          gpu,
          group.method.name,
          prepared,
          t,
          model.base.tokenizer,
          group.seed,
          options.check,
          options.onStep,
        );
        await Deno.mkdir(join(options.cache, "train"), { recursive: true });
        await saveTrainedState(gpu, path, prepared, {
          format: "longtune-trained",
          code: RUNNER_CODE_VERSION,
          groupKey: group.key,
          outcome,
          run: JSON.parse(canonicalJson({
            model: model.facts.name,
            modelHash: model.facts.hash,
            method: group.method.name,
            config: group.method.config,
            training: group.method.training,
            seed: group.seed,
            lengths: group.lengths,
          })),
        });
        options.log?.(
          `trained ${label}: ${t.steps} steps, ${(outcome.tokens / outcome.seconds).toFixed(0)} tokens/s, ` +
            `final loss ${outcome.curve.at(-1)?.loss.toFixed(4) ?? "–"}`,
        );
      }
    }
    return { weights, prepared, outcome, allocatedBefore, dispose };
  } catch (error) {
    dispose();
    throw error;
  }
}

async function runGroup(ctx: GroupContext, group: TrainingGroup, pending: SuiteCell[]): Promise<GroupCounts> {
  const { gpu, model, progress } = ctx;
  const counts: GroupCounts = { computed: 0, failed: 0 };
  const label = `${group.method.label} seed ${group.seed}`;
  progress.stage(`prepare and train ${label}`);
  let ready: PreparedGroup;
  try {
    ready = await prepareGroup(gpu, model, group, {
      registry: ctx.registry,
      cache: ctx.cache,
      check: ctx.check,
      onStep: (tokens) => progress.advance(tokens),
      log: (line) => progress.line(line),
    });
  } catch (thrown) {
    if (ctx.signal?.aborted) throw thrown;
    // A method that cannot be prepared or trained fails every cell of its group, and the run goes on.
    const error = `preparing or training ${group.method.label} failed: ${
      thrown instanceof Error ? thrown.message : String(thrown)
    }`;
    for (const cell of pending) {
      // The data still gets its hash, so this set's entry agrees with other methods' cells.
      const dataHash = await cellData({ ...cell, dataSeed: ctx.dataSeed }, model.base.tokenizer)
        .then((data) => data.hash, () => null);
      ctx.failed.set(cell.key, buildCell(cell, group, 0, null, null, error, 0, ctx, dataHash));
      counts.failed++;
      progress.line(`FAILED ${cell.model} ${label} ${cell.evaluation.name}@${cell.length}: ${error}`);
      progress.advance(cellEvalTokens(cell), 1);
      ctx.onCellDone?.(cell, false);
    }
    return counts;
  }
  const { prepared, outcome } = ready;
  try {
    for (const cell of pending) {
      ctx.check();
      progress.stage(`${group.method.label} ${cell.evaluation.name}@${cell.length} seed ${cell.seed}`);
      const backend = methodBackend(gpu, group.method.name, prepared, model.base.tokenizer, {
        length: cell.length,
        seed: cell.seed,
      });
      let evaluation: CellEvaluation | null = null;
      let error: string | null = null;
      const evalCell = { ...cell, dataSeed: ctx.dataSeed };
      let dataHash: string | null = null;
      try {
        const data = await cellData(evalCell, model.base.tokenizer);
        dataHash = data.hash;
        evaluation = await evaluateCell(backend, evalCell, data, ctx.check);
      } catch (thrown) {
        if (ctx.signal?.aborted) throw thrown;
        error = thrown instanceof Error ? thrown.message : String(thrown);
      }
      const peak = Math.max(allocatedBytes() - ready.allocatedBefore, outcome?.peakBytes ?? 0);
      const built = buildCell(
        cell,
        group,
        prepared.trainableParameters,
        outcome,
        evaluation,
        error,
        peak,
        ctx,
        dataHash,
      );
      if (evaluation !== null) {
        await writeFileAtomic(cellCachePath(ctx.cache, cell.key), JSON.stringify(built) + "\n");
        ctx.found.set(cell.key, built);
        counts.computed++;
        progress.line(
          `${cell.model} ${label} ${cell.evaluation.name}@${cell.length}: ${evaluation.primaryMetric} ` +
            `${evaluation.metrics[evaluation.primaryMetric].value.toFixed(4)} (${
              evaluation.evalSeconds.toFixed(1)
            } s)`,
        );
      } else {
        // Failures are not cached: a rerun tries again (the failure may be transient).
        ctx.failed.set(cell.key, built);
        counts.failed++;
        progress.line(`FAILED ${cell.model} ${label} ${cell.evaluation.name}@${cell.length}: ${error}`);
      }
      progress.advance(cellEvalTokens(cell), 1);
      ctx.onCellDone?.(cell, false);
    }
  } finally {
    ready.dispose();
  }
  return counts;
}

const noCheck = () => {};

function buildCell(
  cell: SuiteCell,
  group: TrainingGroup,
  trainableParameters: number,
  outcome: TrainOutcome | null,
  evaluation: CellEvaluation | null,
  error: string | null,
  peakBytes: number,
  ctx: Pick<GroupContext, "dataSeed" | "groupSize">,
  dataHash: string | null,
): CachedCell {
  const seeds: Record<string, number> = { replicate: cell.seed, data: ctx.dataSeed };
  if (group.trains) {
    seeds.init = cell.seed;
    seeds.trainData = group.method.training.data.seed;
  }
  const trainSeconds = outcome === null ? 0 : outcome.seconds / ctx.groupSize;
  const result: Cell = {
    method: group.method.label,
    task: cell.evaluation.name,
    family: evaluation?.family ?? familyOf(cell),
    length: cell.length,
    seed: cell.seed,
    seeds,
    evaluationSet: `${cell.evaluation.name}@${cell.length}`,
    trainingSet: outcome?.trainingSet.key ?? null,
    status: evaluation !== null ? { state: "ok" } : { state: "failed", error: error ?? "unknown error" },
    primaryMetric: evaluation?.primaryMetric ?? null,
    metrics: evaluation?.metrics ?? {},
    trainingCurve: outcome?.curve ?? [],
    trainTokensPerSecond: outcome === null || outcome.seconds === 0 ? null : outcome.tokens / outcome.seconds,
    evalTokensPerSecond: evaluation === null || evaluation.evalSeconds === 0
      ? null
      : evaluation.evalTokens / evaluation.evalSeconds,
    peakGpuMemoryBytes: peakBytes,
    trainableParameters,
    wallTimeSeconds: (evaluation?.evalSeconds ?? 0) + trainSeconds,
    extras: evaluation?.extras ?? {},
  };
  return {
    format: "longtune-cell",
    code: RUNNER_CODE_VERSION,
    key: cell.key,
    groupKey: cell.groupKey,
    cell: result,
    // A cell whose data could not be made has no data hash: the hash of the data's specification (the
    // same for every method) stands in.
    evaluationSetHash: evaluation?.evaluationSet.hash ?? dataHash ?? dataSpecHash(cell, ctx.dataSeed),
    trainingSet: outcome?.trainingSet ?? null,
  };
}

function dataSpecHash(cell: SuiteCell, dataSeed: number): string {
  const { name: _name, lengths: _lengths, samples: _samples, ...settings } = cell.evaluation;
  return hashJson({ unavailable: settings, length: cell.length, samples: cell.samples, dataSeed });
}

function familyOf(cell: SuiteCell): Cell["family"] {
  const family = cell.evaluation.family;
  return family === "wikitext" || family === "pg19" ? "perplexity" : family;
}

/** Methods' config hashes as a report records them. */
function methodConfigHash(method: SuiteCell["method"], trains: boolean): string {
  return hashJson({ name: method.name, config: method.config, training: trains ? method.training : null });
}

/** Where a model's report goes: `out` for a one-model suite, else `out/<model as a folder name>`. */
export function reportFolder(out: string, suite: ResolvedSuite, model: string): string {
  if (suite.models.length === 1) return out;
  return join(out, model.replace(/[^A-Za-z0-9_.\-]+/g, "_").replace(/^[._]+/, "") || "model");
}

/**
 * Builds one model's report from cells (suite order), validated against the schema.
 */
export function assembleReport(
  suite: ResolvedSuite,
  suiteFile: RunOptions["suiteFile"],
  model: LoadedModel,
  environment: Environment,
  cells: readonly { cell: SuiteCell; cached: CachedCell; trains: boolean }[],
): Report {
  const evaluationSets: Record<string, string> = {};
  const trainingSets: Record<string, string> = {};
  const methodConfigs: Record<string, string> = {};
  const reportCells: Cell[] = [];
  for (const { cell, cached, trains } of [...cells].sort((a, b) => a.cell.order - b.cell.order)) {
    const out: Cell = {
      ...cached.cell,
      method: cell.method.label,
      task: cell.evaluation.name,
      seed: cell.seed,
      evaluationSet: `${cell.evaluation.name}@${cell.length}`,
      trainingSet: cached.trainingSet?.key ?? null,
    };
    evaluationSets[out.evaluationSet] = cached.evaluationSetHash;
    if (cached.trainingSet !== null) trainingSets[cached.trainingSet.key] = cached.trainingSet.hash;
    methodConfigs[out.method] = methodConfigHash(cell.method, trains);
    reportCells.push(out);
  }
  const config = JSON.parse(canonicalJson(suite)) as Report["suite"]["config"];
  const report: Report = {
    schemaVersion: REPORT_SCHEMA_VERSION,
    suite: { name: suite.name, fileHash: suiteFile.fileHash, configHash: hashJson(config), config },
    environment,
    hashes: {
      baseModel: { name: model.facts.name, hash: model.facts.hash, dtype: "f32" },
      tokenizer: { name: model.base.tokenizer.name, hash: model.base.tokenizer.hash },
      evaluationSets: sortKeys(evaluationSets),
      trainingSets: sortKeys(trainingSets),
      methodConfigs: sortKeys(methodConfigs),
    },
    cells: reportCells,
  };
  return validateReport(report, `report of ${suite.name} for ${model.facts.name}`);
}

function sortKeys(record: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Writes report.json (validated), report.md and report.html into `folder`. */
export async function writeReportFiles(folder: string, report: Report): Promise<string> {
  await Deno.mkdir(folder, { recursive: true });
  const path = join(folder, "report.json");
  await writeReport(path, report);
  await writeFileAtomic(join(folder, "report.md"), renderMarkdown(report));
  await writeFileAtomic(join(folder, "report.html"), renderHtml(report));
  return path;
}

/**
 * Runs a resolved suite (or one shard of it) and writes its reports.
 * @example
 * const loaded = await loadSuite("benchmarks/suites/quick.json");
 * const suite = resolveSuite(loaded.suite, loaded.path);
 * await runSuite({ suite, suiteFile: loaded, out: "out/quick" });
 */
export async function runSuite(options: RunOptions): Promise<RunSummary> {
  const started = performance.now();
  const { suite } = options;
  const registry = options.registry ?? METHODS;
  const cache = options.cache ?? join(options.out, "cache");
  const models = await loadModels(suite.models);
  const expansion: Expansion = expandSuite(suite, models.map((m) => m.facts), registry);
  checkGuards(suite, expansion, options.suiteFile.path);
  const cells = options.shard ? shardCells(expansion.cells, options.shard) : expansion.cells;
  const groups = groupsOf(expansion, cells);
  const gpu = options.gpu ?? await getGpu();
  const environment = await captureEnvironment(gpu.adapter);

  // What is cached already (a cell of an earlier run, or of another suite with the same key).
  const found = new Map<string, CachedCell>();
  for (const cell of cells) {
    const cached = await readCachedCell(cache, cell.key);
    if (cached !== undefined) found.set(cell.key, cached);
  }
  const pendingOf = (group: TrainingGroup) => group.cells.filter((cell) => !found.has(cell.key));
  // The work ahead, for the progress bar: each missing key once (seeds of a method that trains nothing
  // share their keys), and a group's training when it has any such cell.
  let totalUnits = 0, pendingCount = 0;
  const planned = new Set<string>();
  for (const group of groups) {
    const own = pendingOf(group).filter((cell) => !planned.has(cell.key));
    if (own.length > 0) totalUnits += groupTrainTokens(group);
    for (const cell of own) {
      planned.add(cell.key);
      totalUnits += cellEvalTokens(cell);
      pendingCount++;
    }
  }
  const progress = makeProgress(options.quiet ?? false, totalUnits, pendingCount);
  const check = options.signal ? () => options.signal!.throwIfAborted() : noCheck;
  let computed = 0, failed = 0;
  const failedCells = new Map<string, CachedCell>();
  try {
    for (const cell of cells) if (found.has(cell.key)) options.onCellDone?.(cell, true);
    for (const group of groups) {
      check();
      const pending = pendingOf(group);
      if (pending.length === 0) continue;
      const model = models.find((m) => m.facts.name === group.model)!;
      const fullGroup = expansion.groups.find((g) => g.key === group.key && g.model === group.model)!;
      const counts = await runGroup(
        {
          gpu,
          model,
          cache,
          check,
          signal: options.signal,
          failed: failedCells,
          found,
          progress,
          registry,
          dataSeed: suite.dataSeed,
          groupSize: fullGroup.cells.length,
          onCellDone: options.onCellDone,
        },
        group,
        pending,
      );
      computed += counts.computed;
      failed += counts.failed;
    }
  } finally {
    progress.stop();
  }

  const reports: string[] = [];
  for (const model of models) {
    const own = cells.filter((cell) => cell.model === model.facts.name);
    const parts = own.map((cell) => {
      const cached = found.get(cell.key) ?? failedCells.get(cell.key);
      if (cached === undefined) throw new Error(`internal: cell ${cell.key} has no result`);
      const group = expansion.groups.find((g) => g.key === cell.groupKey)!;
      return { cell, cached, trains: group.trains };
    });
    const report = assembleReport(suite, options.suiteFile, model, environment, parts);
    reports.push(await writeReportFiles(reportFolder(options.out, suite, model.facts.name), report));
  }
  return {
    reports,
    cells: cells.length,
    computed,
    cached: cells.length - computed - failed,
    failed,
    seconds: (performance.now() - started) / 1000,
  };
}
