/**
 * A benchmark history: one JSON file holding, per git commit, the report's numbers flattened into
 * named points (seed means with their 95% interval), so trends can be plotted without keeping every
 * report. Recording the same commit again replaces its entry; every write is atomic.
 *
 * The points export to the two regression trackers of benchmarks.md §7:
 * - github-action-benchmark, `tool: customBiggerIsBetter` / `customSmallerIsBetter`: a JSON array of
 *   `{name, unit, value, range?, extra?}` per direction (one file per action step, since the tool is
 *   chosen per step); `range` is a display string ("±1.23") and `extra` is tooltip text carrying n and
 *   the interval (§7.1).
 * - Bencher Metric Format: `{benchmark: {measure: {value, lower_value?, upper_value?}}}` (§7.3), one
 *   benchmark per (task, method, length) and one measure slug per metric.
 */

import { parseArgs } from "node:util";
import { z } from "zod";
import { writeFileAtomic } from "../data/layouts.ts";
import { groupCells, groupOk, mean, seedMean } from "./aggregate.ts";
import {
  metricDirection,
  metricUnit,
  parseReport,
  readJsonFile,
  type Report,
  reportHash,
  validateWith,
} from "./report_schema.ts";

/** The history format version this module reads and writes. */
export const HISTORY_SCHEMA_VERSION = 1;

/** One tracked number: a seed mean of one measure of one (task, method, length). */
export const benchPointSchema = z.strictObject({
  benchmark: z.string().min(1).describe("task/method/length"),
  measure: z.string().regex(/^[a-z0-9]+(-[a-z0-9]+)*$/).describe("kebab-case measure slug"),
  unit: z.string(),
  better: z.enum(["higher", "lower"]),
  value: z.number(),
  lo: z.number().nullable(),
  hi: z.number().nullable(),
  n: z.number().int().min(0).nullable(),
  seeds: z.array(z.number().int().min(0)),
});

/** One recorded run. */
export const historyEntrySchema = z.strictObject({
  commit: z.string().min(1),
  branch: z.string().min(1),
  dirty: z.union([z.boolean(), z.literal("unknown")]),
  recordedAt: z.iso.datetime({ offset: true }),
  reportHash: z.string().regex(/^[0-9a-f]{64}$/),
  suiteName: z.string().min(1),
  suiteConfigHash: z.string().regex(/^[0-9a-f]{64}$/),
  adapter: z.string(),
  points: z.array(benchPointSchema),
});

/** The history file. */
export const historySchema = z.strictObject({
  schemaVersion: z.literal(HISTORY_SCHEMA_VERSION),
  entries: z.array(historyEntrySchema),
}).superRefine((history, ctx) => {
  const seen = new Map<string, number>();
  history.entries.forEach((entry, i) => {
    const first = seen.get(entry.commit);
    if (first !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["entries", i, "commit"],
        message: `expected one entry per commit; entries[${first}] is also ${entry.commit}`,
      });
    } else seen.set(entry.commit, i);
  });
});

/** A tracked number. */
export type BenchPoint = z.infer<typeof benchPointSchema>;
/** One history entry. */
export type HistoryEntry = z.infer<typeof historyEntrySchema>;
/** A whole history file. */
export type History = z.infer<typeof historySchema>;

/** Lowercase kebab-case slug of a name: "token_ppl" → "token-ppl". */
export function measureSlug(name: string): string {
  const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
  if (slug === "") throw new RangeError(`measureSlug: "${name}" has no letters or digits`);
  return slug;
}

/**
 * Flattens a report into points: every non-diagnostic metric of every all-ok (task, method, length)
 * group, plus cost measures (tokens/s, wall time, peak memory). Failed groups produce no points, so a
 * tracker shows a gap rather than a zero.
 */
export function reportBenchPoints(report: Report): BenchPoint[] {
  const points: BenchPoint[] = [];
  for (const group of groupCells(report.cells)) {
    if (!groupOk(group)) continue;
    const benchmark = `${group.task}/${group.method}/${group.length}`;
    const seen = new Map<string, string>();
    const push = (point: Omit<BenchPoint, "benchmark" | "seeds">, name: string) => {
      const other = seen.get(point.measure);
      if (other !== undefined) {
        throw new RangeError(
          `${benchmark}: metrics "${other}" and "${name}" share the measure slug "${point.measure}"`,
        );
      }
      seen.set(point.measure, name);
      points.push({ benchmark, ...point, seeds: group.seeds });
    };
    for (const name of Object.keys(group.cells[0].metrics)) {
      const metrics = group.cells.map((cell) => cell.metrics[name]);
      if (metrics.some((metric) => metric === undefined)) continue;
      const better = metricDirection(metrics[0].kind);
      if (better === "none") continue;
      const aggregate = seedMean(metrics);
      push({
        measure: measureSlug(name),
        unit: metricUnit(metrics[0]),
        better,
        value: aggregate.value,
        lo: aggregate.lo,
        hi: aggregate.hi,
        n: aggregate.n,
      }, name);
    }
    const cost = (
      measure: string,
      unit: string,
      better: "higher" | "lower",
      values: (number | null)[],
      pick = mean,
    ) => {
      if (values.some((value) => value === null)) return;
      push({ measure, unit, better, value: pick(values as number[]), lo: null, hi: null, n: null }, measure);
    };
    cost(
      "train-tokens-per-second",
      "tokens/s",
      "higher",
      group.cells.map((cell) => cell.trainTokensPerSecond),
    );
    cost("eval-tokens-per-second", "tokens/s", "higher", group.cells.map((cell) => cell.evalTokensPerSecond));
    cost("wall-time", "s", "lower", group.cells.map((cell) => cell.wallTimeSeconds));
    cost(
      "peak-gpu-memory",
      "bytes",
      "lower",
      group.cells.map((cell) => cell.peakGpuMemoryBytes),
      (values) => Math.max(...values),
    );
  }
  return points;
}

/** A history entry for a report (its commit, adapter, hash and points). */
export function historyEntryFromReport(report: Report, recordedAt = new Date()): HistoryEntry {
  return {
    commit: report.environment.git.commit,
    branch: report.environment.git.branch,
    dirty: report.environment.git.dirty,
    recordedAt: recordedAt.toISOString(),
    reportHash: reportHash(report),
    suiteName: report.suite.name,
    suiteConfigHash: report.suite.configHash,
    adapter: report.environment.adapter?.description ?? "none",
    points: reportBenchPoints(report),
  };
}

/** Loads a history file; a missing file is an empty history. Errors name the file and field path. */
export async function loadHistory(path: string): Promise<History> {
  try {
    await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { schemaVersion: HISTORY_SCHEMA_VERSION, entries: [] };
    throw error;
  }
  return validateWith(
    historySchema,
    await readJsonFile(path),
    path,
    `history (schema version ${HISTORY_SCHEMA_VERSION})`,
  );
}

/** Returns the history with `entry` added, or replacing the entry of the same commit in place. */
export function upsertHistoryEntry(history: History, entry: HistoryEntry): History {
  const index = history.entries.findIndex((existing) => existing.commit === entry.commit);
  const entries = [...history.entries];
  if (index >= 0) entries[index] = entry;
  else entries.push(entry);
  return { schemaVersion: HISTORY_SCHEMA_VERSION, entries };
}

/**
 * Adds a report to the history file (replacing its commit's entry) and writes it atomically. Two
 * processes recording at the same moment can still lose one update (read, then write); CI runs one job
 * per branch, which is the case this serves.
 */
export async function recordHistory(path: string, report: Report, recordedAt = new Date()): Promise<History> {
  const history = upsertHistoryEntry(await loadHistory(path), historyEntryFromReport(report, recordedAt));
  const valid = validateWith(historySchema, history, path, "history");
  await writeFileAtomic(path, JSON.stringify(valid, null, 2) + "\n");
  return valid;
}

/** One line per entry, oldest first: commit, branch, time, adapter, point count. */
export function listHistory(
  history: History,
): { commit: string; branch: string; recordedAt: string; adapter: string; points: number }[] {
  return history.entries.map((entry) => ({
    commit: entry.commit,
    branch: entry.branch,
    recordedAt: entry.recordedAt,
    adapter: entry.adapter,
    points: entry.points.length,
  }));
}

/** One github-action-benchmark entry (§7.1). */
export interface GithubBenchEntry {
  name: string;
  unit: string;
  value: number;
  range?: string;
  extra?: string;
}

function shortNumber(value: number): string {
  return Number(value.toPrecision(4)).toString();
}

/**
 * github-action-benchmark input: `customBiggerIsBetter` and `customSmallerIsBetter` arrays. The name is
 * `task/method/length/measure`; `range` is "±" the larger side of the interval; `extra` states n, the
 * interval and the seeds.
 */
export function toGithubActionBenchmark(
  points: readonly BenchPoint[],
): { customBiggerIsBetter: GithubBenchEntry[]; customSmallerIsBetter: GithubBenchEntry[] } {
  const convert = (point: BenchPoint): GithubBenchEntry => {
    const entry: GithubBenchEntry = {
      name: `${point.benchmark}/${point.measure}`,
      unit: point.unit,
      value: point.value,
    };
    if (point.lo !== null && point.hi !== null) {
      entry.range = `±${shortNumber(Math.max(point.value - point.lo, point.hi - point.value))}`;
    }
    const facts = [
      ...(point.n === null ? [] : [`n=${point.n}`]),
      ...(point.lo === null || point.hi === null
        ? []
        : [`95% CI [${shortNumber(point.lo)}, ${shortNumber(point.hi)}]`]),
      `seeds ${point.seeds.join(",")}`,
    ];
    entry.extra = facts.join("; ");
    return entry;
  };
  return {
    customBiggerIsBetter: points.filter((point) => point.better === "higher").map(convert),
    customSmallerIsBetter: points.filter((point) => point.better === "lower").map(convert),
  };
}

/** One Bencher measure value (§7.3). */
export interface BencherMetric {
  value: number;
  lower_value?: number;
  upper_value?: number;
}

/** Bencher Metric Format: `{ "task/method/length": { "measure-slug": { value, lower_value?, upper_value? } } }`. */
export function toBencherMetricFormat(
  points: readonly BenchPoint[],
): Record<string, Record<string, BencherMetric>> {
  const bmf: Record<string, Record<string, BencherMetric>> = {};
  for (const point of points) {
    const metric: BencherMetric = { value: point.value };
    if (point.lo !== null && point.hi !== null) {
      metric.lower_value = point.lo;
      metric.upper_value = point.hi;
    }
    (bmf[point.benchmark] ??= {})[point.measure] = metric;
  }
  return bmf;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      "gab-bigger": { type: "string" },
      "gab-smaller": { type: "string" },
      bmf: { type: "string" },
    },
  });
  if (positionals.length !== 2) {
    console.error(
      "usage: history.ts HISTORY.json REPORT.json [--gab-bigger OUT.json] [--gab-smaller OUT.json] [--bmf OUT.json]",
    );
    Deno.exit(2);
  }
  const report = await parseReport(positionals[1]);
  const history = await recordHistory(positionals[0], report);
  const points = reportBenchPoints(report);
  const gab = toGithubActionBenchmark(points);
  if (values["gab-bigger"]) {
    await writeFileAtomic(values["gab-bigger"], JSON.stringify(gab.customBiggerIsBetter, null, 2) + "\n");
  }
  if (values["gab-smaller"]) {
    await writeFileAtomic(values["gab-smaller"], JSON.stringify(gab.customSmallerIsBetter, null, 2) + "\n");
  }
  if (values.bmf) {
    await writeFileAtomic(values.bmf, JSON.stringify(toBencherMetricFormat(points), null, 2) + "\n");
  }
  for (const line of listHistory(history)) {
    console.log(
      `${
        line.commit.slice(0, 12)
      }  ${line.branch}  ${line.recordedAt}  ${line.points} points  ${line.adapter}`,
    );
  }
}
