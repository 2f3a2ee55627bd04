/**
 * leaderboard.json (format "longtune-leaderboard", schema version 1): several reports of one suite
 * merged into rankings per evaluation, with the provenance of every entry.
 *
 * Format:
 * - `comparability`: what every merged report shares (suite config hash, base model, tokenizer, the
 *   union of evaluation-set hashes). Reports that differ in any of these are refused, not merged: the
 *   error names the field and both values.
 * - `sources`: one per report (`id` "r1", "r2", … in input order): its label, sha256 of its canonical
 *   JSON, commit, branch, dirty flag, adapter and capture time.
 * - `rankings`: one per (task, aggregate). RULER tasks get `avg`, `wavg-inc` and `wavg-dec` (§1.9);
 *   BABILong tasks `qa1-qa5-avg`; perplexity tasks `token-ppl-mean` (lower is better); other tasks
 *   `primary-mean` of their primary metric. Each entry is one (source, method): its value, its per-length
 *   values, the seeds behind them and a rank. Ranks are competition ranks ("1224": ties share a rank);
 *   an entry with a failed or missing length has `rank: null`, `value: null` and a reason, and is
 *   listed after the ranked ones.
 */

import { z } from "zod";
import { writeFileAtomic } from "../data/layouts.ts";
import {
  babilongQa15,
  type CellGroup,
  groupCellMean,
  groupCells,
  groupOk,
  mean,
  rulerSummary,
} from "./aggregate.ts";
import { headlineValue } from "./report_tables.ts";
import {
  evaluationFamilySchema,
  readJsonFile,
  type Report,
  reportHash,
  validateWith,
} from "./report_schema.ts";

/** The leaderboard format version this module reads and writes. */
export const LEADERBOARD_SCHEMA_VERSION = 1;

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);

/** How an entry's value is computed from per-length values. */
export const leaderboardAggregateSchema = z.enum([
  "avg",
  "wavg-inc",
  "wavg-dec",
  "qa1-qa5-avg",
  "token-ppl-mean",
  "primary-mean",
])
  .describe(
    "avg: mean over lengths; wavg-inc / wavg-dec: lengths weighted 1…k / k…1 over k(k+1)/2; qa1-qa5-avg: mean " +
      "over lengths of the qa1–qa5 mean accuracy; token-ppl-mean: mean over lengths of token perplexity; " +
      "primary-mean: mean over lengths of the primary metric",
  );

/** One ranked (source report, method). */
export const leaderboardEntrySchema = z.strictObject({
  rank: z.number().int().min(1).nullable().describe("competition rank; null when incomplete"),
  method: z.string().min(1),
  source: z.string().regex(/^r[0-9]+$/).describe("id of the source report"),
  value: z.number().nullable(),
  perLength: z.record(z.string().regex(/^[0-9]+$/), z.number().nullable()).describe(
    "seed-mean value per length",
  ),
  seeds: z.array(z.number().int().min(0)),
  incompleteReason: z.string().nullable(),
});

/** The ranking of one task under one aggregate. */
export const leaderboardRankingSchema = z.strictObject({
  task: z.string().min(1),
  family: evaluationFamilySchema,
  aggregate: leaderboardAggregateSchema,
  metric: z.string().min(1).describe("what per-length value is averaged"),
  better: z.enum(["higher", "lower"]),
  lengths: z.array(z.number().int().min(1)).describe("every length any merged report ran for this task"),
  entries: z.array(leaderboardEntrySchema),
});

/** Where an entry came from. */
export const leaderboardSourceSchema = z.strictObject({
  id: z.string().regex(/^r[0-9]+$/),
  label: z.string(),
  reportHash: sha256Hex.describe("sha256 of the report's canonical JSON"),
  commit: z.string(),
  branch: z.string(),
  dirty: z.union([z.boolean(), z.literal("unknown")]),
  adapter: z.strictObject({
    description: z.string(),
    vendor: z.string(),
    architecture: z.string(),
    device: z.string(),
  })
    .nullable(),
  capturedAt: z.string(),
});

/** The whole leaderboard.json, version 1. */
export const leaderboardSchema = z.strictObject({
  schemaVersion: z.literal(LEADERBOARD_SCHEMA_VERSION),
  format: z.literal("longtune-leaderboard"),
  generatedAt: z.iso.datetime({ offset: true }),
  comparability: z.strictObject({
    suiteName: z.string().min(1),
    suiteConfigHash: sha256Hex,
    baseModel: z.strictObject({ name: z.string(), hash: sha256Hex }),
    tokenizer: z.strictObject({ name: z.string(), hash: sha256Hex }),
    evaluationSets: z.record(z.string(), sha256Hex),
  }),
  sources: z.array(leaderboardSourceSchema).min(1),
  rankings: z.array(leaderboardRankingSchema),
}).meta({
  title: "longtune leaderboard",
  description: "Rankings of fine-tuning methods per evaluation, merged from comparable longtune reports.",
});

/** A leaderboard. */
export type Leaderboard = z.infer<typeof leaderboardSchema>;
/** One ranking. */
export type LeaderboardRanking = z.infer<typeof leaderboardRankingSchema>;
/** One entry of a ranking. */
export type LeaderboardEntry = z.infer<typeof leaderboardEntrySchema>;

/** Thrown when reports cannot share a leaderboard; names the differing field and both values. */
export class IncomparableReportsError extends Error {
  constructor(
    readonly field: string,
    readonly first: { label: string; value: unknown },
    readonly second: { label: string; value: unknown },
  ) {
    super(
      `cannot merge ${second.label} into a leaderboard with ${first.label}: ${field} differs ` +
        `(${JSON.stringify(first.value)} in ${first.label}, ${
          JSON.stringify(second.value)
        } in ${second.label})`,
    );
    this.name = "IncomparableReportsError";
  }
}

/** A report with the label (usually its path) that errors and provenance use. */
export interface LabelledReport {
  label: string;
  report: Report;
}

function checkComparable(inputs: readonly LabelledReport[]): Leaderboard["comparability"] {
  const [first] = inputs;
  const evaluationSets: Record<string, { hash: string; label: string }> = {};
  for (const input of inputs) {
    const fields: [string, unknown, unknown][] = [
      ["suite.configHash", first.report.suite.configHash, input.report.suite.configHash],
      ["hashes.baseModel.hash", first.report.hashes.baseModel.hash, input.report.hashes.baseModel.hash],
      ["hashes.tokenizer.hash", first.report.hashes.tokenizer.hash, input.report.hashes.tokenizer.hash],
    ];
    for (const [field, a, b] of fields) {
      if (a !== b) {
        throw new IncomparableReportsError(field, { label: first.label, value: a }, {
          label: input.label,
          value: b,
        });
      }
    }
    for (const [key, hash] of Object.entries(input.report.hashes.evaluationSets)) {
      const known = evaluationSets[key];
      if (known !== undefined && known.hash !== hash) {
        throw new IncomparableReportsError(
          `hashes.evaluationSets["${key}"]`,
          { label: known.label, value: known.hash },
          { label: input.label, value: hash },
        );
      }
      evaluationSets[key] ??= { hash, label: input.label };
    }
  }
  return {
    suiteName: first.report.suite.name,
    suiteConfigHash: first.report.suite.configHash,
    baseModel: { name: first.report.hashes.baseModel.name, hash: first.report.hashes.baseModel.hash },
    tokenizer: { name: first.report.hashes.tokenizer.name, hash: first.report.hashes.tokenizer.hash },
    evaluationSets: Object.fromEntries(
      Object.entries(evaluationSets).map(([key, { hash }]) => [key, hash]).sort(),
    ),
  };
}

interface Candidate {
  method: string;
  source: string;
  groups: Map<number, CellGroup>;
}

/** Competition ranks ("1224") for entries sorted best first; equal values share a rank. */
function assignRanks(entries: LeaderboardEntry[], better: "higher" | "lower"): LeaderboardEntry[] {
  const ranked = entries.filter((entry) => entry.value !== null)
    .sort((a, b) => better === "higher" ? b.value! - a.value! : a.value! - b.value!);
  ranked.forEach((entry, i) => {
    // Equal up to float rounding: averages of the same scores in another order must tie.
    const tied = i > 0 &&
      Math.abs(ranked[i - 1].value! - entry.value!) <= 1e-9 * Math.max(1, Math.abs(entry.value!));
    entry.rank = tied ? ranked[i - 1].rank : i + 1;
  });
  const unranked = entries.filter((entry) => entry.value === null);
  return [...ranked, ...unranked];
}

function perLengthValues(
  candidate: Candidate,
  lengths: number[],
  pick: (group: CellGroup) => number | null,
): { values: (number | null)[]; reason: string | null; seeds: number[] } {
  let reason: string | null = null;
  const seeds = new Set<number>();
  const values = lengths.map((length) => {
    const group = candidate.groups.get(length);
    if (group === undefined) {
      reason ??= `no cells at length ${length}`;
      return null;
    }
    group.seeds.forEach((seed) => seeds.add(seed));
    if (!groupOk(group)) {
      const bad = group.cells.find((cell) => cell.status.state !== "ok")!;
      reason ??= `${bad.status.state} at length ${length} (seed ${bad.seed})`;
      return null;
    }
    const value = pick(group);
    if (value === null) reason ??= `no value at length ${length}`;
    return value;
  });
  return { values, reason, seeds: [...seeds].sort((a, b) => a - b) };
}

/**
 * Merges reports of one suite into a leaderboard, refusing (with `IncomparableReportsError`) reports that
 * differ in suite config, base model, tokenizer or any shared evaluation set.
 */
export function buildLeaderboard(inputs: readonly LabelledReport[], generatedAt = new Date()): Leaderboard {
  if (inputs.length === 0) throw new RangeError("buildLeaderboard: no reports");
  const comparability = checkComparable(inputs);
  const sources = inputs.map((input, i): Leaderboard["sources"][number] => {
    const env = input.report.environment;
    return {
      id: `r${i + 1}`,
      label: input.label,
      reportHash: reportHash(input.report),
      commit: env.git.commit,
      branch: env.git.branch,
      dirty: env.git.dirty,
      adapter: env.adapter === null ? null : {
        description: env.adapter.description,
        vendor: env.adapter.vendor,
        architecture: env.adapter.architecture,
        device: env.adapter.device,
      },
      capturedAt: env.capturedAt,
    };
  });

  const tasks = new Map<
    string,
    { family: CellGroup["family"]; lengths: Set<number>; candidates: Candidate[] }
  >();
  inputs.forEach((input, i) => {
    for (const group of groupCells(input.report.cells)) {
      const task = tasks.get(group.task) ??
        { family: group.family, lengths: new Set<number>(), candidates: [] };
      tasks.set(group.task, task);
      task.lengths.add(group.length);
      let candidate = task.candidates.find((c) => c.method === group.method && c.source === sources[i].id);
      if (candidate === undefined) {
        candidate = { method: group.method, source: sources[i].id, groups: new Map() };
        task.candidates.push(candidate);
      }
      candidate.groups.set(group.length, group);
    }
  });

  const rankings: LeaderboardRanking[] = [];
  for (const [taskName, task] of tasks) {
    const lengths = [...task.lengths].sort((a, b) => a - b);
    const plans: {
      aggregate: LeaderboardRanking["aggregate"];
      metric: string;
      better: "higher" | "lower";
      combine: (values: number[]) => number;
    }[] = [];
    let pick: (group: CellGroup) => number | null = headlineValue;
    if (task.family === "ruler") {
      const summary = (values: number[]) => rulerSummary(lengths, values);
      plans.push(
        {
          aggregate: "avg",
          metric: "RULER score",
          better: "higher",
          combine: (values) => summary(values).avg!,
        },
        {
          aggregate: "wavg-inc",
          metric: "RULER score",
          better: "higher",
          combine: (values) => summary(values).wAvgInc!,
        },
        {
          aggregate: "wavg-dec",
          metric: "RULER score",
          better: "higher",
          combine: (values) => summary(values).wAvgDec!,
        },
      );
    } else if (task.family === "babilong") {
      pick = (group) => groupCellMean(group, babilongQa15);
      plans.push({
        aggregate: "qa1-qa5-avg",
        metric: "qa1–qa5 mean accuracy",
        better: "higher",
        combine: mean,
      });
    } else if (task.family === "perplexity") {
      pick = (group) => groupCellMean(group, (cell) => cell.extras.perplexity?.tokenPerplexity);
      plans.push({ aggregate: "token-ppl-mean", metric: "token perplexity", better: "lower", combine: mean });
    } else {
      const primary = task.candidates.flatMap((c) => [...c.groups.values()]).flatMap((group) => group.cells)
        .find((cell) => cell.status.state === "ok" && cell.primaryMetric !== null);
      const kind = primary === undefined ? undefined : primary.metrics[primary.primaryMetric!].kind;
      if (kind === undefined || kind === "diagnostic") continue;
      plans.push({
        aggregate: "primary-mean",
        metric: primary!.primaryMetric!,
        better: kind === "accuracy" ? "higher" : "lower",
        combine: mean,
      });
    }
    for (const plan of plans) {
      const entries = task.candidates.map((candidate): LeaderboardEntry => {
        const { values, reason, seeds } = perLengthValues(candidate, lengths, pick);
        return {
          rank: null,
          method: candidate.method,
          source: candidate.source,
          value: reason === null ? plan.combine(values as number[]) : null,
          perLength: Object.fromEntries(lengths.map((length, i) => [String(length), values[i]])),
          seeds,
          incompleteReason: reason,
        };
      });
      rankings.push({
        task: taskName,
        family: task.family,
        aggregate: plan.aggregate,
        metric: plan.metric,
        better: plan.better,
        lengths,
        entries: assignRanks(entries, plan.better),
      });
    }
  }
  return {
    schemaVersion: LEADERBOARD_SCHEMA_VERSION,
    format: "longtune-leaderboard",
    generatedAt: generatedAt.toISOString(),
    comparability,
    sources,
    rankings,
  };
}

/** Validates a leaderboard and writes it atomically. */
export async function writeLeaderboard(path: string, leaderboard: Leaderboard): Promise<void> {
  const valid = validateWith(leaderboardSchema, leaderboard, path, "leaderboard");
  await writeFileAtomic(path, JSON.stringify(valid, null, 2) + "\n");
}

/** Reads and validates leaderboard.json; errors name the file and field path. */
export async function parseLeaderboard(path: string): Promise<Leaderboard> {
  return validateWith(
    leaderboardSchema,
    await readJsonFile(path),
    path,
    `leaderboard (schema version ${LEADERBOARD_SCHEMA_VERSION})`,
  );
}
