/**
 * A resolved suite expanded into cells — one per (model, method, seed, evaluation, length) — each with
 * a content-addressed key, grouped by what trains once (model, method with its config and training
 * settings, seed), and sliced into shards.
 *
 * Keys. A cell's key is the sha256 of the canonical JSON of everything that decides its numbers: the
 * runner's code version, the model's weight and tokenizer hashes, the method's registry name and
 * parsed config, the training settings (null when the method trains nothing), the seed (null when
 * nothing random depends on it), the lengths the method is prepared for, the evaluation's settings,
 * the cell's length and sample count, and the data seed. Labels, names and descriptions are left out,
 * so renaming a method in a suite keeps its cached cells; any change that can move a number changes
 * the key. Evaluation data is generated from (data seed, tokenizer, settings), so these inputs pin it.
 *
 * Shards. `--shard i/n` sorts the cells by (group key, cell key) and takes the i-th of n contiguous,
 * near-equal runs of that order: a partition of the cells that any scheduler can compute on its own,
 * which keeps most of a training group in one shard (a group split across two shards is trained in
 * both, with identical results).
 */

import { hashJson } from "../data/hash.ts";
import type { ModelConfig } from "../model/config.ts";
import type { Method } from "../methods/method.ts";
import { METHODS } from "../methods/registry.ts";
import denoConfig from "../../deno.json" with { type: "json" };
import type { ResolvedEvaluation, ResolvedMethod, ResolvedSuite } from "./suite.ts";

/**
 * Bumped whenever the runner would produce different numbers from the same inputs (a scoring or data
 * change), so caches made by older code are not reused.
 */
export const RUNNER_CODE_VERSION = `longtune-runner/1 (harness ${denoConfig.version})`;

/** What the expansion needs to know about a base model. */
export interface ModelFacts {
  /** As named in the suite. */
  name: string;
  config: ModelConfig;
  /** sha256 of the weights (see modelHash in runner.ts). */
  hash: string;
  tokenizerHash: string;
}

/** One unit of evaluation work and of caching. */
export interface SuiteCell {
  key: string;
  groupKey: string;
  model: string;
  method: ResolvedMethod;
  seed: number;
  evaluation: ResolvedEvaluation;
  length: number;
  samples: number;
  /** Position in the suite's order: model, method, seed, evaluation, length. */
  order: number;
}

/** The cells that share one preparation and one training run. */
export interface TrainingGroup {
  key: string;
  model: string;
  method: ResolvedMethod;
  seed: number;
  /** False when the method has no trainable parameters (nothing is trained, the seed is irrelevant). */
  trains: boolean;
  /** The lengths the method is prepared for (PrepareContext). */
  lengths: { trainLength: number; maxLength: number };
  cells: SuiteCell[];
}

/** Every cell of a suite, in suite order, and its training groups. */
export interface Expansion {
  cells: SuiteCell[];
  groups: TrainingGroup[];
}

/** The evaluation settings that decide a cell's data and scoring (the name is left out). */
function evaluationIdentity(evaluation: ResolvedEvaluation): Record<string, unknown> {
  const { name: _name, lengths: _lengths, samples: _samples, ...settings } = evaluation;
  return settings;
}

/** The context methods are prepared for: the suite's prepareLength (default the longest evaluation). */
export function suiteMaxLength(suite: ResolvedSuite): number {
  return suite.prepareLength;
}

/**
 * Expands a resolved suite over the loaded models. `registry` gives each method's parameter count
 * (zero means it trains nothing).
 * @example const { cells, groups } = expandSuite(resolved, [{ name: "llama-tiny", config, hash, tokenizerHash }]);
 */
export function expandSuite(
  suite: ResolvedSuite,
  models: readonly ModelFacts[],
  registry: readonly Method[] = METHODS,
): Expansion {
  const cells: SuiteCell[] = [];
  const groups: TrainingGroup[] = [];
  const maxLength = suiteMaxLength(suite);
  for (const modelName of suite.models) {
    const model = models.find((m) => m.name === modelName);
    if (model === undefined) throw new RangeError(`expandSuite: model "${modelName}" was not loaded`);
    for (const method of suite.methods) {
      const impl = registry.find((m) => m.name === method.name);
      if (impl === undefined) throw new RangeError(`expandSuite: method "${method.name}" is not registered`);
      const lengths = { trainLength: method.training.sequenceLength, maxLength };
      const trains = impl.parameterCount(model.config, impl.config.parse(method.config), lengths) > 0;
      for (const seed of suite.seeds) {
        const groupKey = hashJson({
          code: RUNNER_CODE_VERSION,
          model: { hash: model.hash, tokenizer: model.tokenizerHash },
          method: { name: method.name, config: method.config },
          training: trains ? method.training : null,
          seed: trains ? seed : null,
          lengths,
        });
        const group: TrainingGroup = {
          key: groupKey,
          model: modelName,
          method,
          seed,
          trains,
          lengths,
          cells: [],
        };
        for (const evaluation of suite.evaluations) {
          evaluation.lengths.forEach((length, i) => {
            const samples = evaluation.samples[i];
            const key = hashJson({
              group: groupKey,
              evaluation: evaluationIdentity(evaluation),
              length,
              samples,
              dataSeed: suite.dataSeed,
            });
            const cell: SuiteCell = {
              key,
              groupKey,
              model: modelName,
              method,
              seed,
              evaluation,
              length,
              samples,
              order: cells.length,
            };
            cells.push(cell);
            group.cells.push(cell);
          });
        }
        groups.push(group);
      }
    }
  }
  return { cells, groups };
}

/** A shard `index` of `count` (0 ≤ index < count). */
export interface Shard {
  index: number;
  count: number;
}

/**
 * Parses `i/n` (0-based i, as Slurm's SLURM_ARRAY_TASK_ID and Kubernetes' JOB_COMPLETION_INDEX count).
 * @example parseShard("2/8") // { index: 2, count: 8 }
 */
export function parseShard(text: string): Shard {
  const match = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (match === null) throw new RangeError(`--shard "${text}": expected i/n, e.g. 0/4`);
  const index = Number(match[1]);
  const count = Number(match[2]);
  if (count < 1) throw new RangeError(`--shard "${text}": n must be at least 1`);
  if (index >= count) throw new RangeError(`--shard "${text}": i must lie in 0…${count - 1}`);
  return { index, count };
}

/**
 * The cells of one shard, in suite order: the i-th of n contiguous runs of the cells sorted by
 * (group key, cell key). The shards of one n partition the cells exactly.
 */
export function shardCells(cells: readonly SuiteCell[], shard: Shard): SuiteCell[] {
  const sorted = [...cells].sort((a, b) =>
    a.groupKey < b.groupKey ? -1 : a.groupKey > b.groupKey ? 1 : a.key < b.key ? -1 : a.key > b.key ? 1 : 0
  );
  const from = Math.floor((shard.index * sorted.length) / shard.count);
  const to = Math.floor(((shard.index + 1) * sorted.length) / shard.count);
  return sorted.slice(from, to).sort((a, b) => a.order - b.order);
}

/** The groups of `cells` (each group keeps only those cells), in suite order. */
export function groupsOf(expansion: Expansion, cells: readonly SuiteCell[]): TrainingGroup[] {
  const keep = new Set(cells.map((cell) => cell.order));
  return expansion.groups
    .map((group) => ({
      ...group,
      cells: group.cells.filter((cell) => keep.has(cell.order)),
    }))
    .filter((group) => group.cells.length > 0);
}

/** Tokens one cell's evaluation reads (samples × length × prompts per sample), for guards and the ETA. */
export function cellEvalTokens(cell: SuiteCell): number {
  const evaluation = cell.evaluation;
  switch (evaluation.family) {
    case "ruler":
    case "babilong":
      return cell.samples * cell.length * evaluation.tasks.length;
    case "position-sweep":
      return cell.samples * cell.length * evaluation.depths.length;
    default:
      return Math.ceil(cell.samples * cell.length * evaluation.chunkWindows);
  }
}

/** Tokens a group's training reads. */
export function groupTrainTokens(group: TrainingGroup): number {
  const t = group.method.training;
  return group.trains ? t.steps * t.batch * t.sequenceLength : 0;
}

/**
 * Checks the suite's cost guards against its whole expansion; throws naming the guard, the limit and
 * what the suite needs.
 */
export function checkGuards(suite: ResolvedSuite, expansion: Expansion, file: string): void {
  const g = suite.guards;
  const problems: string[] = [];
  if (g.maxCells !== undefined && expansion.cells.length > g.maxCells) {
    problems.push(`guards.maxCells is ${g.maxCells}, the suite expands to ${expansion.cells.length} cells`);
  }
  const longest = Math.max(...expansion.cells.map((cell) => cell.length));
  if (g.maxLength !== undefined && longest > g.maxLength) {
    problems.push(`guards.maxLength is ${g.maxLength}, the suite evaluates at ${longest} tokens`);
  }
  const evalTokens = expansion.cells.reduce((sum, cell) => sum + cellEvalTokens(cell), 0);
  if (g.maxEvalTokens !== undefined && evalTokens > g.maxEvalTokens) {
    problems.push(`guards.maxEvalTokens is ${g.maxEvalTokens}, the suite evaluates ${evalTokens} tokens`);
  }
  const trainTokens = expansion.groups.reduce((sum, group) => sum + groupTrainTokens(group), 0);
  if (g.maxTrainTokens !== undefined && trainTokens > g.maxTrainTokens) {
    problems.push(`guards.maxTrainTokens is ${g.maxTrainTokens}, the suite trains on ${trainTokens} tokens`);
  }
  if (problems.length > 0) {
    throw new RangeError(`${file}: the suite exceeds its cost guards: ${problems.join("; ")}`);
  }
}
