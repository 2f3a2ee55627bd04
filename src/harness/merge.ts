/**
 * Joins the reports of a sharded run (`longtune bench --shard i/n`) into the report of the whole grid.
 * Shards must come from the same suite file and resolved config, the same base model and tokenizer,
 * and comparable environments (harness, Deno, V8, TypeScript, OS, architecture, GPU adapter, git
 * commit and dirty flag); the first difference found is named with both values. Hosts may differ in
 * CPU and memory (a cluster's nodes do). Cells are ordered as the suite orders them, so a merge of
 * all shards equals the unsharded run's report except for timings and the capture timestamp, which is
 * the earliest shard's.
 */

import { canonicalJson } from "../data/hash.ts";
import { type Cell, type Environment, type Report, validateReport } from "./report_schema.ts";
import type { ResolvedSuite } from "./suite.ts";

/** A report with the label (its path) that errors name. */
export interface LabelledShard {
  label: string;
  report: Report;
}

/** Thrown when shards cannot be merged; says which field differs and where. */
export class MergeMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MergeMismatchError";
  }
}

function environmentIdentity(environment: Environment): Record<string, unknown> {
  const adapter = environment.adapter;
  return {
    "environment.harness": environment.harness,
    "environment.deno": environment.deno,
    "environment.v8": environment.v8,
    "environment.typescript": environment.typescript,
    "environment.os": environment.os,
    "environment.arch": environment.arch,
    "environment.adapter": adapter === null ? null : {
      description: adapter.description,
      vendor: adapter.vendor,
      architecture: adapter.architecture,
      device: adapter.device,
    },
    "environment.git.commit": environment.git.commit,
    "environment.git.dirty": environment.git.dirty,
  };
}

/**
 * The order cells of a suite run appear in: method, then seed, then evaluation, then length, as the
 * runner writes them; unknown names go last.
 */
export function cellOrder(config: Record<string, unknown>): (a: Cell, b: Cell) => number {
  const suite = config as unknown as Partial<ResolvedSuite>;
  const methods = (suite.methods ?? []).map((m) => m.label);
  const evaluations = (suite.evaluations ?? []).map((e) => e.name);
  const seeds = suite.seeds ?? [];
  const rank = (list: readonly unknown[], value: unknown) => {
    const at = list.indexOf(value);
    return at < 0 ? list.length : at;
  };
  return (a, b) =>
    rank(methods, a.method) - rank(methods, b.method) || rank(seeds, a.seed) - rank(seeds, b.seed) ||
    rank(evaluations, a.task) - rank(evaluations, b.task) || a.length - b.length;
}

/**
 * Merges shard reports of one suite run into one report (validated). Refuses mismatched suites,
 * models, tokenizers or environments, and one cell reported twice with different numbers.
 * @example const merged = mergeReports([{ label: "shard0/report.json", report: a }, { label: "shard1/report.json", report: b }]);
 */
export function mergeReports(shards: readonly LabelledShard[]): Report {
  if (shards.length === 0) throw new RangeError("merge: no reports given");
  const [first] = shards;
  const mismatch = (label: string, field: string, a: unknown, b: unknown) =>
    new MergeMismatchError(
      `cannot merge ${label} with ${first.label}: ${field} differs (${
        JSON.stringify(a)
      } in ${first.label}, ` +
        `${JSON.stringify(b)} in ${label})`,
    );
  const firstEnvironment = environmentIdentity(first.report.environment);
  const evaluationSets: Record<string, string> = {};
  const trainingSets: Record<string, string> = {};
  const methodConfigs: Record<string, string> = {};
  const cells = new Map<string, { cell: Cell; label: string }>();
  for (const { label, report } of shards) {
    const fields: [string, unknown, unknown][] = [
      ["suite.name", first.report.suite.name, report.suite.name],
      ["suite.fileHash (the suite file's bytes)", first.report.suite.fileHash, report.suite.fileHash],
      ["suite.configHash (the resolved suite)", first.report.suite.configHash, report.suite.configHash],
      ["hashes.baseModel", first.report.hashes.baseModel, report.hashes.baseModel],
      ["hashes.tokenizer", first.report.hashes.tokenizer, report.hashes.tokenizer],
    ];
    const environment = environmentIdentity(report.environment);
    for (const field of Object.keys(firstEnvironment)) {
      fields.push([field, firstEnvironment[field], environment[field]]);
    }
    for (const [field, a, b] of fields) {
      if (canonicalJson(a) !== canonicalJson(b)) throw mismatch(label, field, a, b);
    }
    const tables: [string, Record<string, string>, Record<string, string>][] = [
      ["hashes.evaluationSets", evaluationSets, report.hashes.evaluationSets],
      ["hashes.trainingSets", trainingSets, report.hashes.trainingSets],
      ["hashes.methodConfigs", methodConfigs, report.hashes.methodConfigs],
    ];
    for (const [name, merged, own] of tables) {
      for (const [key, hash] of Object.entries(own)) {
        if (merged[key] !== undefined && merged[key] !== hash) {
          throw new MergeMismatchError(
            `cannot merge ${label}: ${name}["${key}"] is ${hash} there but ${
              merged[key]
            } in an earlier shard`,
          );
        }
        merged[key] = hash;
      }
    }
    for (const cell of report.cells) {
      const key = JSON.stringify([cell.method, cell.task, cell.length, cell.seed]);
      const seen = cells.get(key);
      if (seen !== undefined) {
        const numbers = (c: Cell) => canonicalJson([c.status, c.metrics, c.extras]);
        if (numbers(seen.cell) !== numbers(cell)) {
          throw new MergeMismatchError(
            `cannot merge ${label}: cell ${key} is also in ${seen.label} with different results`,
          );
        }
        continue;
      }
      cells.set(key, { cell, label });
    }
  }
  const earliest = shards.map((s) => s.report.environment).reduce((a, b) =>
    a.capturedAt <= b.capturedAt ? a : b
  );
  const merged: Report = {
    ...first.report,
    environment: earliest,
    hashes: {
      ...first.report.hashes,
      evaluationSets: sortKeys(evaluationSets),
      trainingSets: sortKeys(trainingSets),
      methodConfigs: sortKeys(methodConfigs),
    },
    cells: [...cells.values()].map((c) => c.cell).sort(cellOrder(first.report.suite.config)),
  };
  return validateReport(merged, `merge of ${shards.map((s) => s.label).join(", ")}`);
}

function sortKeys(record: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
