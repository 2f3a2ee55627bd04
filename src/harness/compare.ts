/**
 * Regression check between two reports (A = baseline, B = candidate), built to stay quiet on noise.
 *
 * Cells are matched by (method, task, length, seed set): seeds are averaged first (`seedMean`), and a
 * group whose seed set changed counts as removed-and-added rather than compared, since a different
 * set of replicates is a different measurement.
 *
 * Rules, and why (benchmarks.md §8):
 * - **Accuracy-like metrics** regress only when B's 95% interval lies entirely below A's (hi_B < lo_A),
 *   and by at least `accuracyMinDelta` points. Users cut RULER to 25–100 samples, so scores are noisy
 *   (item 3); greedy scores move with batch size and hardware (item 7); and single-point trackers on shared
 *   runners raise alerts that are close to random (item 11: Jaccard 0.01–0.08 between consecutive alert
 *   sets). Disjoint intervals need a gap of about 2.8 standard errors of the difference for equal widths
 *   (two-sided p ≈ 0.006), where "the difference exceeds both half-widths" needs only about 1.4
 *   (p ≈ 0.16) and would fire on one comparison in six of pure noise. We choose the quiet rule.
 * - **Perplexity, bits per byte and loss** are deterministic given the kernels, data and seeds, so a
 *   relative threshold suffices: regression when B > A·(1 + perplexityRelative), default 2%.
 * - **Timings and memory** depend on the runner; the ratio rules are off by default (null) and, when set,
 *   flag B slower (or bigger) than A by at least the ratio.
 * Warnings (never a failing exit code) flag what makes numbers incomparable: a different suite config,
 * adapter, base model, tokenizer or evaluation set, a dirty tree, and added or removed cells.
 */

import { parseArgs } from "node:util";
import { writeFileAtomic } from "../data/layouts.ts";
import { type CellGroup, formatLength, groupCells, groupOk, mean, seedMean } from "./aggregate.ts";
import { escapeMarkdown, markdownTable } from "./render_md.ts";
import { metricDirection, type MetricKind, parseReport, type Report } from "./report_schema.ts";

/** Thresholds of the regression rules. */
export interface CompareRules {
  /** Minimum drop, in percentage points, for an accuracy regression (on top of disjoint intervals). */
  accuracyMinDelta: number;
  /** Relative increase of perplexity / bits per byte / loss that counts as a regression (0.02 = 2%). */
  perplexityRelative: number;
  /** Slowdown ratio for tokens/s and wall time (e.g. 1.5); null disables timing checks. */
  timingRatio: number | null;
  /** Growth ratio for peak GPU memory; null disables memory checks. */
  memoryRatio: number | null;
}

/** The defaults: disjoint 95% intervals, 2% perplexity, timing and memory off. */
export const DEFAULT_COMPARE_RULES: CompareRules = {
  accuracyMinDelta: 0,
  perplexityRelative: 0.02,
  timingRatio: null,
  memoryRatio: null,
};

/** Verdict of one compared measure. */
export type Verdict = "regression" | "improvement" | "unchanged";

/** One compared measure of one matched group. */
export interface ComparisonRow {
  method: string;
  task: string;
  length: number;
  seeds: number[];
  /** Metric name, or "status", "train tokens/s", "eval tokens/s", "wall time", "peak memory". */
  measure: string;
  a: number | null;
  b: number | null;
  aInterval: [number, number] | null;
  bInterval: [number, number] | null;
  verdict: Verdict;
  /** Why, in words: the rule and the numbers it saw. */
  reason: string;
}

/** A group present in only one report. */
export interface UnmatchedGroup {
  method: string;
  task: string;
  length: number;
  seeds: number[];
}

/** The outcome of comparing two reports. */
export interface Comparison {
  rules: CompareRules;
  rows: ComparisonRow[];
  added: UnmatchedGroup[];
  removed: UnmatchedGroup[];
  warnings: string[];
  regressions: number;
  improvements: number;
  /** 1 when any row regressed, else 0. Warnings alone never fail. */
  exitCode: 0 | 1;
}

function groupKey(group: CellGroup): string {
  return JSON.stringify([group.method, group.task, group.length, group.seeds]);
}

function unmatched(group: CellGroup): UnmatchedGroup {
  return { method: group.method, task: group.task, length: group.length, seeds: group.seeds };
}

function fmt(value: number): string {
  return Math.abs(value) >= 1000 ? value.toFixed(0) : Number(value.toPrecision(4)).toString();
}

function environmentWarnings(a: Report, b: Report): string[] {
  const warnings: string[] = [];
  const differs = (field: string, valueA: unknown, valueB: unknown, consequence: string) => {
    const [textA, textB] = [JSON.stringify(valueA), JSON.stringify(valueB)];
    if (textA !== textB) warnings.push(`${field} differs (A ${textA}, B ${textB}): ${consequence}`);
  };
  differs(
    "suite.configHash",
    a.suite.configHash,
    b.suite.configHash,
    "the suites differ, numbers may not compare",
  );
  // Reports written before subgroup sizes were recorded lack them: compare them only when both have them.
  const bothSubgroups = [a, b].every((r) => r.environment.adapter?.subgroupSizes !== undefined);
  const adapterOf = (report: Report) => {
    const adapter = report.environment.adapter;
    return adapter === null ? null : {
      description: adapter.description,
      vendor: adapter.vendor,
      architecture: adapter.architecture,
      device: adapter.device,
      ...(bothSubgroups ? { subgroupSizes: adapter.subgroupSizes } : {}),
    };
  };
  differs("environment.adapter", adapterOf(a), adapterOf(b), "timings and float results may differ");
  differs("hashes.baseModel.hash", a.hashes.baseModel.hash, b.hashes.baseModel.hash, "different base model");
  differs("hashes.tokenizer.hash", a.hashes.tokenizer.hash, b.hashes.tokenizer.hash, "token counts differ");
  for (const key of Object.keys(a.hashes.evaluationSets)) {
    const [hashA, hashB] = [a.hashes.evaluationSets[key], b.hashes.evaluationSets[key]];
    if (hashB !== undefined && hashA !== hashB) {
      warnings.push(`hashes.evaluationSets["${key}"] differs (A ${hashA}, B ${hashB}): different samples`);
    }
  }
  for (const method of Object.keys(a.hashes.methodConfigs)) {
    const [hashA, hashB] = [a.hashes.methodConfigs[method], b.hashes.methodConfigs[method]];
    if (hashB !== undefined && hashA !== hashB) {
      warnings.push(
        `hashes.methodConfigs["${method}"] differs (A ${hashA}, B ${hashB}): method config changed`,
      );
    }
  }
  differs("environment.deno", a.environment.deno, b.environment.deno, "runtime changed");
  if (b.environment.git.dirty !== false) {
    warnings.push(
      `B was measured on a tree whose dirty flag is ${b.environment.git.dirty}: not reproducible from its commit`,
    );
  }
  return warnings;
}

function judgeMetric(
  kind: MetricKind,
  a: { value: number; lo: number | null; hi: number | null },
  b: { value: number; lo: number | null; hi: number | null },
  rules: CompareRules,
): { verdict: Verdict; reason: string } {
  if (kind === "accuracy") {
    if (a.lo === null || a.hi === null || b.lo === null || b.hi === null) {
      return { verdict: "unchanged", reason: "no interval to judge noise" };
    }
    const drop = a.value - b.value;
    if (b.hi < a.lo && drop >= rules.accuracyMinDelta) {
      return {
        verdict: "regression",
        reason: `B's interval [${fmt(b.lo)}, ${fmt(b.hi)}] lies below A's [${fmt(a.lo)}, ${fmt(a.hi)}]`,
      };
    }
    if (b.lo > a.hi && -drop >= rules.accuracyMinDelta) {
      return {
        verdict: "improvement",
        reason: `B's interval [${fmt(b.lo)}, ${fmt(b.hi)}] lies above A's [${fmt(a.lo)}, ${fmt(a.hi)}]`,
      };
    }
    return { verdict: "unchanged", reason: "intervals overlap (within noise)" };
  }
  const relative = a.value === b.value ? 0 : (b.value - a.value) / Math.abs(a.value || Number.MIN_VALUE);
  const percent = `${relative >= 0 ? "+" : ""}${(100 * relative).toFixed(2)}%`;
  const limit = `${(100 * rules.perplexityRelative).toFixed(2)}%`;
  if (relative > rules.perplexityRelative) return { verdict: "regression", reason: `${percent} > +${limit}` };
  if (relative < -rules.perplexityRelative) {
    return { verdict: "improvement", reason: `${percent} < −${limit}` };
  }
  return { verdict: "unchanged", reason: `${percent} within ±${limit}` };
}

function ratioRow(
  base: Omit<ComparisonRow, "measure" | "a" | "b" | "aInterval" | "bInterval" | "verdict" | "reason">,
  measure: string,
  a: number | null,
  b: number | null,
  ratio: number,
  better: "higher" | "lower",
): ComparisonRow | undefined {
  if (a === null || b === null || a <= 0 || b <= 0) return undefined;
  const worsening = better === "higher" ? a / b : b / a;
  const verdict: Verdict = worsening >= ratio
    ? "regression"
    : 1 / worsening >= ratio
    ? "improvement"
    : "unchanged";
  return {
    ...base,
    measure,
    a,
    b,
    aInterval: null,
    bInterval: null,
    verdict,
    reason: `worse by ×${worsening.toFixed(3)} (threshold ×${ratio})`,
  };
}

function meanOrNull(values: (number | null)[]): number | null {
  return values.some((value) => value === null) ? null : mean(values as number[]);
}

/** Compares candidate B against baseline A under `rules` (defaults: `DEFAULT_COMPARE_RULES`). */
export function compareReports(a: Report, b: Report, rules: Partial<CompareRules> = {}): Comparison {
  const resolved: CompareRules = { ...DEFAULT_COMPARE_RULES, ...rules };
  const groupsA = new Map(groupCells(a.cells).map((group) => [groupKey(group), group]));
  const groupsB = new Map(groupCells(b.cells).map((group) => [groupKey(group), group]));
  const rows: ComparisonRow[] = [];
  const warnings = environmentWarnings(a, b);
  const removed = [...groupsA].filter(([key]) => !groupsB.has(key)).map(([, group]) => unmatched(group));
  const added = [...groupsB].filter(([key]) => !groupsA.has(key)).map(([, group]) => unmatched(group));

  for (const [key, groupA] of groupsA) {
    const groupB = groupsB.get(key);
    if (groupB === undefined) continue;
    const base = { method: groupA.method, task: groupA.task, length: groupA.length, seeds: groupA.seeds };
    const [okA, okB] = [groupOk(groupA), groupOk(groupB)];
    if (!okA || !okB) {
      const describe = (group: CellGroup) => {
        const bad = group.cells.find((cell) => cell.status.state !== "ok");
        if (bad === undefined) return "ok";
        return bad.status.state === "failed"
          ? `failed: ${bad.status.error}`
          : `skipped: ${bad.status.state === "skipped" ? bad.status.reason : ""}`;
      };
      const verdict: Verdict = okA && !okB ? "regression" : !okA && okB ? "improvement" : "unchanged";
      rows.push({
        ...base,
        measure: "status",
        a: null,
        b: null,
        aInterval: null,
        bInterval: null,
        verdict,
        reason: `A ${describe(groupA)}; B ${describe(groupB)}`,
      });
      continue;
    }
    const metricNames = Object.keys(groupA.cells[0].metrics).filter((name) =>
      groupA.cells.every((cell) => cell.metrics[name] !== undefined)
    );
    for (const name of metricNames) {
      const metricsA = groupA.cells.map((cell) => cell.metrics[name]);
      const kind = metricsA[0].kind;
      if (metricDirection(kind) === "none") continue;
      const metricsB = groupB.cells.map((cell) => cell.metrics[name]);
      if (metricsB.some((metric) => metric === undefined)) {
        warnings.push(`${groupA.task}/${groupA.method}/${groupA.length}: metric ${name} is missing from B`);
        continue;
      }
      if (metricsB.some((metric) => metric.kind !== kind)) {
        warnings.push(`${groupA.task}/${groupA.method}/${groupA.length}: metric ${name} changed kind`);
        continue;
      }
      const [aggA, aggB] = [seedMean(metricsA), seedMean(metricsB)];
      rows.push({
        ...base,
        measure: name,
        a: aggA.value,
        b: aggB.value,
        aInterval: aggA.lo === null ? null : [aggA.lo, aggA.hi!],
        bInterval: aggB.lo === null ? null : [aggB.lo, aggB.hi!],
        ...judgeMetric(kind, aggA, aggB, resolved),
      });
    }
    const costRows: (ComparisonRow | undefined)[] = [];
    if (resolved.timingRatio !== null) {
      const ratio = resolved.timingRatio;
      const rate = (group: CellGroup, field: "trainTokensPerSecond" | "evalTokensPerSecond") =>
        meanOrNull(group.cells.map((cell) => cell[field]));
      costRows.push(
        ratioRow(
          base,
          "train tokens/s",
          rate(groupA, "trainTokensPerSecond"),
          rate(groupB, "trainTokensPerSecond"),
          ratio,
          "higher",
        ),
        ratioRow(
          base,
          "eval tokens/s",
          rate(groupA, "evalTokensPerSecond"),
          rate(groupB, "evalTokensPerSecond"),
          ratio,
          "higher",
        ),
        ratioRow(
          base,
          "wall time",
          mean(groupA.cells.map((cell) => cell.wallTimeSeconds)),
          mean(groupB.cells.map((cell) => cell.wallTimeSeconds)),
          ratio,
          "lower",
        ),
      );
    }
    if (resolved.memoryRatio !== null) {
      const peak = (group: CellGroup) => {
        const values = group.cells.map((cell) => cell.peakGpuMemoryBytes);
        return values.some((value) => value === null) ? null : Math.max(...(values as number[]));
      };
      costRows.push(ratioRow(base, "peak memory", peak(groupA), peak(groupB), resolved.memoryRatio, "lower"));
    }
    rows.push(...costRows.filter((row): row is ComparisonRow => row !== undefined));
  }
  if (removed.length > 0) warnings.push(`${removed.length} cell group(s) of A are missing from B`);
  if (added.length > 0) warnings.push(`${added.length} cell group(s) of B are new`);
  const regressions = rows.filter((row) => row.verdict === "regression").length;
  const improvements = rows.filter((row) => row.verdict === "improvement").length;
  return {
    rules: resolved,
    rows,
    added,
    removed,
    warnings,
    regressions,
    improvements,
    exitCode: regressions > 0 ? 1 : 0,
  };
}

function value(value: number | null, interval: [number, number] | null): string {
  if (value === null) return "–";
  return interval === null ? fmt(value) : `${fmt(value)} [${fmt(interval[0])}, ${fmt(interval[1])}]`;
}

function comparisonTableRows(comparison: Comparison, all: boolean): string[][] {
  return comparison.rows
    .filter((row) => all || row.verdict !== "unchanged")
    .map((row) => [
      row.verdict === "regression" ? "REGRESSION" : row.verdict === "improvement" ? "improved" : "same",
      row.task,
      row.method,
      formatLength(row.length),
      row.seeds.join(","),
      row.measure,
      value(row.a, row.aInterval),
      value(row.b, row.bInterval),
      row.reason,
    ]);
}

const HEADERS = ["verdict", "task", "method", "length", "seeds", "measure", "A", "B", "why"];

function summaryLine(comparison: Comparison): string {
  const unchanged = comparison.rows.length - comparison.regressions - comparison.improvements;
  return `${comparison.regressions} regression(s), ${comparison.improvements} improvement(s), ${unchanged} within noise; ` +
    `exit code ${comparison.exitCode}`;
}

function unmatchedLines(label: string, groups: UnmatchedGroup[]): string[] {
  return groups.map((group) =>
    `${label}: ${group.task}/${group.method}/${formatLength(group.length)} seeds ${group.seeds.join(",")}`
  );
}

/** A plain-text table for terminals and CI logs; `all` includes rows within noise. */
export function formatComparisonText(comparison: Comparison, all = false): string {
  const rows = [HEADERS, ...comparisonTableRows(comparison, all)];
  const widths = HEADERS.map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  const lines = rows.map((row) =>
    row.map((cell, column) => cell.padEnd(widths[column])).join("  ").trimEnd()
  );
  lines.splice(1, 0, widths.map((width) => "-".repeat(width)).join("  "));
  const out = [summaryLine(comparison), ""];
  if (rows.length > 1) out.push(...lines, "");
  else out.push("(no rows outside noise)", "");
  for (const warning of comparison.warnings) out.push(`warning: ${warning}`);
  out.push(...unmatchedLines("removed", comparison.removed), ...unmatchedLines("added", comparison.added));
  return out.join("\n").trimEnd() + "\n";
}

/** The comparison as Markdown (for a PR comment or job summary); `all` includes rows within noise. */
export function formatComparisonMarkdown(comparison: Comparison, all = false): string {
  const out = ["## longtune comparison", "", escapeMarkdown(summaryLine(comparison)), ""];
  const rows = comparisonTableRows(comparison, all);
  out.push(
    rows.length > 0
      ? markdownTable({ columns: HEADERS.map((label) => ({ label })), rows })
      : "_No changes outside noise._",
  );
  if (comparison.warnings.length > 0) {
    out.push("", "### Warnings", "", ...comparison.warnings.map((warning) => `- ${escapeMarkdown(warning)}`));
  }
  const unmatched = [
    ...unmatchedLines("removed", comparison.removed),
    ...unmatchedLines("added", comparison.added),
  ];
  if (unmatched.length > 0) {
    out.push(
      "",
      "### Added and removed cells",
      "",
      ...unmatched.map((line) => `- ${escapeMarkdown(line)}`),
    );
  }
  out.push(
    "",
    `Rules: accuracy regresses when B's 95% interval lies below A's (min drop ${comparison.rules.accuracyMinDelta} points); ` +
      `perplexity, bits/byte and loss beyond ${
        (100 * comparison.rules.perplexityRelative).toFixed(2)
      }%; timing ratio ${comparison.rules.timingRatio ?? "off"}; memory ratio ${
        comparison.rules.memoryRatio ?? "off"
      }.`,
  );
  return out.join("\n") + "\n";
}

/** Reads two report files and compares them. */
export async function compareReportFiles(
  baseline: string,
  candidate: string,
  rules: Partial<CompareRules> = {},
) {
  return compareReports(await parseReport(baseline), await parseReport(candidate), rules);
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      markdown: { type: "string" },
      all: { type: "boolean", default: false },
      "timing-ratio": { type: "string" },
      "memory-ratio": { type: "string" },
      "ppl-threshold": { type: "string" },
      "min-delta": { type: "string" },
    },
  });
  if (positionals.length !== 2) {
    console.error(
      "usage: compare.ts BASELINE.json CANDIDATE.json [--markdown OUT.md] [--all] [--timing-ratio 1.5] " +
        "[--memory-ratio 1.2] [--ppl-threshold 0.02] [--min-delta 0]",
    );
    Deno.exit(2);
  }
  const number = (option: string) => {
    const parsed = Number(values[option as keyof typeof values]);
    if (!Number.isFinite(parsed) || parsed < 0) {
      console.error(`--${option} must be a number ≥ 0, got ${values[option as keyof typeof values]}`);
      Deno.exit(2);
    }
    return parsed;
  };
  const rules: Partial<CompareRules> = {};
  if (values["timing-ratio"] !== undefined) rules.timingRatio = number("timing-ratio");
  if (values["memory-ratio"] !== undefined) rules.memoryRatio = number("memory-ratio");
  if (values["ppl-threshold"] !== undefined) rules.perplexityRelative = number("ppl-threshold");
  if (values["min-delta"] !== undefined) rules.accuracyMinDelta = number("min-delta");
  const comparison = await compareReportFiles(positionals[0], positionals[1], rules);
  console.log(formatComparisonText(comparison, values.all));
  if (values.markdown !== undefined) {
    await writeFileAtomic(values.markdown, formatComparisonMarkdown(comparison, values.all));
  }
  Deno.exit(comparison.exitCode);
}
