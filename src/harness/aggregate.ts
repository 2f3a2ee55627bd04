/**
 * Aggregation shared by the renderers, compare, history and the leaderboard: cells grouped over seeds,
 * the seed mean with a noise-aware interval, RULER's per-length Avg / wAvg (benchmarks.md §1.9) and the
 * BABILong qa1–qa5 average. One implementation, so every view of a report shows the same numbers.
 */

import type { Cell, EvaluationFamily, Metric, MetricKind, Report } from "./report_schema.ts";

/** The cells of one (method, task, length), one per seed. */
export interface CellGroup {
  method: string;
  task: string;
  family: EvaluationFamily;
  length: number;
  /** Replicate seeds, ascending. */
  seeds: number[];
  cells: Cell[];
}

/** A value aggregated over seeds with its 95% interval (null when no interval is known). */
export interface Aggregate {
  value: number;
  lo: number | null;
  hi: number | null;
  /** Total samples over the seeds. */
  n: number;
  seeds: number;
}

/** Groups cells by (method, task, length), in the order each group first appears. */
export function groupCells(cells: readonly Cell[]): CellGroup[] {
  const groups = new Map<string, CellGroup>();
  for (const cell of cells) {
    const key = JSON.stringify([cell.method, cell.task, cell.length]);
    let group = groups.get(key);
    if (group === undefined) {
      group = {
        method: cell.method,
        task: cell.task,
        family: cell.family,
        length: cell.length,
        seeds: [],
        cells: [],
      };
      groups.set(key, group);
    }
    group.cells.push(cell);
    group.seeds.push(cell.seed);
  }
  for (const group of groups.values()) {
    group.seeds.sort((a, b) => a - b);
    group.cells.sort((a, b) => a.seed - b.seed);
  }
  return [...groups.values()];
}

/** Distinct values in first-seen order. */
export function distinct<T>(values: Iterable<T>): T[] {
  return [...new Set(values)];
}

/** The tasks of a report with their family and ascending lengths, in first-seen order. */
export function reportTasks(report: Report): { task: string; family: EvaluationFamily; lengths: number[] }[] {
  const tasks = new Map<string, { task: string; family: EvaluationFamily; lengths: Set<number> }>();
  for (const cell of report.cells) {
    const entry = tasks.get(cell.task) ??
      { task: cell.task, family: cell.family, lengths: new Set<number>() };
    entry.lengths.add(cell.length);
    tasks.set(cell.task, entry);
  }
  return [...tasks.values()].map(({ task, family, lengths }) => ({
    task,
    family,
    lengths: [...lengths].sort((a, b) => a - b),
  }));
}

/** True when every cell of the group finished. */
export function groupOk(group: CellGroup): boolean {
  return group.cells.every((cell) => cell.status.state === "ok");
}

// The standard normal's 97.5% quantile.
const Z975 = 1.959963984540054;

// Two-sided 95% Student-t quantiles t(0.975, df) for df = 1…30.
const T975 = [
  12.706,
  4.303,
  3.182,
  2.776,
  2.571,
  2.447,
  2.365,
  2.306,
  2.262,
  2.228,
  2.201,
  2.179,
  2.16,
  2.145,
  2.131,
  2.12,
  2.11,
  2.101,
  2.093,
  2.086,
  2.08,
  2.074,
  2.069,
  2.064,
  2.06,
  2.056,
  2.052,
  2.048,
  2.045,
  2.042,
];

/** The 97.5% quantile of Student's t with `df` degrees of freedom (table to 30, Cornish–Fisher beyond). */
export function tQuantile975(df: number): number {
  if (!Number.isInteger(df) || df < 1) throw new RangeError(`tQuantile975: df ${df} must be an integer ≥ 1`);
  if (df <= T975.length) return T975[df - 1];
  const z = Z975;
  return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df * df);
}

/**
 * Mean over seeds with a 95% interval that counts both noise sources users report (benchmarks.md §8
 * items 3 and 7). With per-seed intervals (sampling noise), their half-widths are combined in quadrature
 * and divided by k (the error of a mean of independent estimates), then scaled by the Particle Data
 * Group's factor √max(1, χ²/(k−1)), χ² = Σ((vᵢ − mean)/seᵢ)², which widens the interval exactly when
 * seeds disagree by more than their sampling noise explains (run-to-run noise). Seeds that agree keep
 * the sampling interval; a Student-t interval over only two seeds would be ±12.7 s and hide everything.
 * Without per-seed intervals, k ≥ 2 seeds give the Student-t interval and one seed gives none.
 * Accuracy intervals are clipped to [0, 100]; asymmetric (Wilson) sides are combined side by side.
 */
export function seedMean(values: readonly Pick<Metric, "value" | "n" | "ci95" | "kind">[]): Aggregate {
  if (values.length === 0) throw new RangeError("seedMean: no values");
  const k = values.length;
  const mean = values.reduce((sum, metric) => sum + metric.value, 0) / k;
  const n = values.reduce((sum, metric) => sum + metric.n, 0);
  let lowerHalf: number;
  let upperHalf: number;
  if (values.every((metric) => metric.ci95 !== null)) {
    lowerHalf = Math.sqrt(values.reduce((sum, m) => sum + (m.value - m.ci95!.lo) ** 2, 0)) / k;
    upperHalf = Math.sqrt(values.reduce((sum, m) => sum + (m.ci95!.hi - m.value) ** 2, 0)) / k;
    if (k >= 2) {
      const chiSquare = values.reduce((sum, m) => {
        const standardError = (m.ci95!.hi - m.ci95!.lo) / (2 * Z975);
        const deviation = m.value - mean;
        if (deviation === 0) return sum;
        return sum + (standardError > 0 ? (deviation / standardError) ** 2 : Infinity);
      }, 0);
      const scale = Math.sqrt(Math.max(1, chiSquare / (k - 1)));
      lowerHalf *= scale;
      upperHalf *= scale;
    }
  } else if (k >= 2) {
    const variance = values.reduce((sum, metric) => sum + (metric.value - mean) ** 2, 0) / (k - 1);
    lowerHalf = upperHalf = tQuantile975(k - 1) * Math.sqrt(variance / k);
  } else {
    return { value: mean, lo: null, hi: null, n, seeds: k };
  }
  let lo = mean - lowerHalf;
  let hi = mean + upperHalf;
  if (values[0].kind === "accuracy") {
    lo = Math.max(0, lo);
    hi = Math.min(100, hi);
  }
  return { value: mean, lo, hi, n, seeds: k };
}

/** Plain mean of numbers (NaN for none). */
export function mean(values: readonly number[]): number {
  return values.reduce((sum, value) => sum + value, 0) / values.length;
}

/** The metric `name` of every cell in an all-ok group, or undefined if any cell lacks it. */
export function groupMetric(group: CellGroup, name: string): Metric[] | undefined {
  if (!groupOk(group)) return undefined;
  const metrics = group.cells.map((cell) => cell.metrics[name]);
  return metrics.every((metric) => metric !== undefined) ? metrics : undefined;
}

/** The primary metric's name and kind for a group, when all its cells finished and agree on it. */
export function groupPrimary(group: CellGroup): { name: string; kind: MetricKind } | undefined {
  if (!groupOk(group)) return undefined;
  const name = group.cells[0].primaryMetric;
  if (name === null || group.cells.some((cell) => cell.primaryMetric !== name)) return undefined;
  const metrics = groupMetric(group, name);
  return metrics === undefined ? undefined : { name, kind: metrics[0].kind };
}

/** Seed mean of a group's primary metric; undefined when the group did not finish. */
export function groupPrimaryAggregate(group: CellGroup): Aggregate | undefined {
  const primary = groupPrimary(group);
  return primary === undefined ? undefined : seedMean(groupMetric(group, primary.name)!);
}

/** RULER's numbers for one method: per-length scores, Avg, wAvg (inc/dec) and effective length. */
export interface RulerSummary {
  lengths: number[];
  perLength: (number | null)[];
  /** Null when any length is missing: an average over fewer lengths is a different number. */
  avg: number | null;
  wAvgInc: number | null;
  wAvgDec: number | null;
  /** Largest length reached before the first score ≤ threshold; null when the shortest fails. */
  effectiveLength: number | null;
}

/** RULER's effective-length threshold: Llama-2-7B-chat's 4K score (§1.9). */
export const RULER_EFFECTIVE_THRESHOLD = 85.6;

/**
 * RULER aggregation over ascending lengths (§1.9): Avg is the plain mean; wAvg (inc) weights the i-th
 * length by i and wAvg (dec) by k+1−i, both divided by k(k+1)/2 (= 21 for RULER's six lengths).
 */
export function rulerSummary(
  lengths: readonly number[],
  perLength: readonly (number | null)[],
): RulerSummary {
  const k = lengths.length;
  const complete = k > 0 && perLength.every((score) => score !== null);
  const scores = perLength as number[];
  const weightSum = (k * (k + 1)) / 2;
  let effectiveLength: number | null = null;
  for (let i = 0; i < k; i++) {
    const score = perLength[i];
    if (score === null || score <= RULER_EFFECTIVE_THRESHOLD) break;
    effectiveLength = lengths[i];
  }
  return {
    lengths: [...lengths],
    perLength: [...perLength],
    avg: complete ? mean(scores) : null,
    wAvgInc: complete ? scores.reduce((sum, score, i) => sum + (i + 1) * score, 0) / weightSum : null,
    wAvgDec: complete ? scores.reduce((sum, score, i) => sum + (k - i) * score, 0) / weightSum : null,
    effectiveLength,
  };
}

/** The five bAbI tasks BABILong's headline number averages. */
export const BABILONG_HEADLINE_TASKS = ["qa1", "qa2", "qa3", "qa4", "qa5"] as const;

/** Mean accuracy over qa1–qa5 of one BABILong cell; null unless all five are present. */
export function babilongQa15(cell: Cell): number | null {
  const tasks = cell.extras.babilong?.tasks;
  if (tasks === undefined) return null;
  const scores = BABILONG_HEADLINE_TASKS.map((name) => tasks[name]?.accuracy);
  return scores.every((score) => score !== undefined) ? mean(scores as number[]) : null;
}

/** Seed mean of a per-cell number for an all-ok group; null when any cell has none. */
export function groupCellMean(
  group: CellGroup,
  pick: (cell: Cell) => number | null | undefined,
): number | null {
  if (!groupOk(group)) return null;
  const values = group.cells.map(pick);
  if (values.some((value) => value === null || value === undefined)) return null;
  return mean(values as number[]);
}

/** Formats a context length the way papers do: 4096 → "4K", 131072 → "128K", 1048576 → "1M". */
export function formatLength(tokens: number): string {
  if (tokens >= 1 << 20 && tokens % (1 << 20) === 0) return `${tokens / (1 << 20)}M`;
  if (tokens >= 1024 && tokens % 1024 === 0) return `${tokens / 1024}K`;
  return String(tokens);
}

/** Formats a count with an SI suffix and 3 significant digits: 1234567 → "1.23M". */
export function formatCount(value: number): string {
  const units: [number, string][] = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [scale, suffix] of units) {
    if (Math.abs(value) >= scale) return `${Number((value / scale).toPrecision(3))}${suffix}`;
  }
  return String(Number(value.toPrecision(3)));
}

/** Formats bytes in binary units: 1610612736 → "1.5 GiB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number(value.toPrecision(3))} ${units[unit]}`;
}

/** Fixed-decimals number, or an en dash for a missing one. */
export function formatFixed(value: number | null | undefined, digits = 2): string {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}
