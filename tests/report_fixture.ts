/**
 * Builds small, valid, fabricated reports for the harness tests. Every number is derived from counts a
 * reader can check by hand (k correct of n, a summed NLL), so tests can assert known answers.
 */

import { hashJson, sha256 } from "../src/data/hash.ts";
import type { Cell, Environment, Metric, Report } from "../src/harness/report_schema.ts";

/** Wilson 95% interval of k successes in n, in percent. */
export function wilson(k: number, n: number): { lo: number; hi: number } {
  const z = 1.959963984540054;
  const p = k / n;
  const denominator = 1 + (z * z) / n;
  const centre = (p + (z * z) / (2 * n)) / denominator;
  const half = (z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / denominator;
  return { lo: Math.max(0, centre - half) * 100, hi: Math.min(1, centre + half) * 100 };
}

/** An accuracy metric from k correct out of n, with its Wilson interval. */
export function accuracy(k: number, n: number): Metric {
  return { kind: "accuracy", value: (100 * k) / n, n, ci95: { ...wilson(k, n), method: "wilson" } };
}

/** A fixed environment (commit, adapter) so hashes and renders are stable. */
export function fixtureEnvironment(overrides: Partial<Environment> = {}): Environment {
  return {
    harness: { name: "longtune", version: "0.1.0" },
    deno: "2.9.6",
    v8: "15.0.245.2-rusty",
    typescript: "6.0.3",
    os: "linux",
    arch: "x86_64",
    target: "x86_64-unknown-linux-gnu",
    cpu: { model: "Test CPU @ 2.0GHz", logicalCores: 2 },
    memoryBytes: 8 * 2 ** 30,
    adapter: {
      description: "llvmpipe (LLVM 15.0.6, 256 bits)",
      vendor: "mesa",
      architecture: "",
      device: "",
      isFallbackAdapter: false,
      features: ["timestamp-query"],
      limits: { maxBufferSize: 2147483648, maxComputeInvocationsPerWorkgroup: 256 },
    },
    git: { commit: "a".repeat(40), branch: "main", dirty: false },
    capturedAt: "2026-01-02T03:04:05.000Z",
    ...overrides,
  };
}

/** Base fields of a cell; the family helpers fill metrics and extras. */
function baseCell(
  method: string,
  task: string,
  length: number,
  seed: number,
): Omit<Cell, "family" | "metrics" | "extras" | "primaryMetric"> {
  return {
    method,
    task,
    length,
    seed,
    seeds: { replicate: seed, data: 1000 + seed, init: 2000 + seed },
    evaluationSet: `${task}@${length}`,
    trainingSet: "train@4096",
    status: { state: "ok" },
    trainingCurve: [
      { step: 0, loss: 4, lr: 0 },
      { step: 10, loss: 3 - seed * 0.1, lr: 1e-3 },
      { step: 20, loss: 2.5 - seed * 0.1, lr: 5e-4 },
    ],
    trainTokensPerSecond: 1000,
    evalTokensPerSecond: 4000,
    peakGpuMemoryBytes: 256 * 2 ** 20,
    trainableParameters: method === "dora" ? 20_000 : 10_000,
    wallTimeSeconds: 12,
  };
}

/** A RULER cell from per-task correct counts out of `n` each. */
export function rulerCell(
  method: string,
  length: number,
  seed: number,
  correct: Record<string, number>,
  n = 50,
): Cell {
  const tasks = Object.fromEntries(
    Object.entries(correct).map(([name, k]) => [name, { score: (100 * k) / n, n }]),
  );
  const totalCorrect = Object.values(correct).reduce((sum, k) => sum + k, 0);
  const totalN = n * Object.keys(correct).length;
  return {
    ...baseCell(method, "ruler", length, seed),
    family: "ruler",
    primaryMetric: "score",
    metrics: { score: accuracy(totalCorrect, totalN) },
    extras: { ruler: { tasks } },
  };
}

/** A BABILong cell from correct counts per qa task out of `n` each. */
export function babilongCell(
  method: string,
  length: number,
  seed: number,
  correct: Record<string, number>,
  n = 20,
): Cell {
  const totalCorrect = Object.values(correct).reduce((sum, k) => sum + k, 0);
  return {
    ...baseCell(method, "babilong", length, seed),
    family: "babilong",
    primaryMetric: "accuracy",
    metrics: { accuracy: accuracy(totalCorrect, n * Object.keys(correct).length) },
    extras: {
      babilong: {
        tasks: Object.fromEntries(
          Object.entries(correct).map(([name, k]) => [name, { accuracy: (100 * k) / n, n }]),
        ),
      },
    },
  };
}

/** A perplexity cell from a summed NLL over fixed token/word/byte counts. */
export function perplexityCell(method: string, length: number, seed: number, nllNats: number): Cell {
  const targets = 1000;
  const words = 750;
  const bytes = 4000;
  const tokenPerplexity = Math.exp(nllNats / targets);
  return {
    ...baseCell(method, "wikitext", length, seed),
    family: "perplexity",
    primaryMetric: "token_ppl",
    metrics: {
      token_ppl: { kind: "perplexity", value: tokenPerplexity, n: targets, ci95: null },
      bpb: { kind: "bits-per-byte", value: nllNats / (bytes * Math.LN2), n: bytes, ci95: null },
    },
    extras: {
      perplexity: {
        nllNats,
        targets,
        words,
        bytes,
        tokenPerplexity,
        wordPerplexity: Math.exp(nllNats / words),
        bytePerplexity: Math.exp(nllNats / bytes),
        bitsPerByte: nllNats / (bytes * Math.LN2),
        protocol: {
          kind: "sliding",
          window: length,
          stride: length / 2,
          contextResetPerWindow: false,
          scoring: "concatenated",
          bos: "none",
        },
      },
    },
  };
}

/** A position-sweep cell: correct counts out of `n` at each depth percent. */
export function sweepCell(
  method: string,
  length: number,
  seed: number,
  correctByDepth: Record<number, number>,
  n = 10,
): Cell {
  const points = Object.entries(correctByDepth).map(([depth, k]) => ({
    depthPercent: Number(depth),
    score: (100 * k) / n,
    n,
  }));
  const totalCorrect = Object.values(correctByDepth).reduce((sum, k) => sum + k, 0);
  return {
    ...baseCell(method, "niah", length, seed),
    family: "position-sweep",
    primaryMetric: "depth_avg",
    metrics: { depth_avg: accuracy(totalCorrect, n * points.length) },
    extras: {
      positionSweep: { placement: "token index snapped to the previous sentence boundary", points },
      attention: {
        sinkMass: {
          value: 0.25 + seed / 100,
          definition: "mean softmax mass on the first 4 positions over layers, heads and answer queries",
        },
      },
    },
  };
}

/** Wraps cells in a valid report, deriving the hash tables from the cells. */
export function makeReport(
  cells: Cell[],
  overrides: { suiteConfig?: Record<string, unknown>; environment?: Partial<Environment> } = {},
): Report {
  const config = overrides.suiteConfig ?? { name: "fixture", lengths: [4096, 8192], seeds: [0, 1] };
  const evaluationSets: Record<string, string> = {};
  for (const cell of cells) evaluationSets[cell.evaluationSet] = sha256(`samples of ${cell.evaluationSet}`);
  const trainingSets: Record<string, string> = {};
  for (const cell of cells) {
    if (cell.trainingSet !== null) trainingSets[cell.trainingSet] = sha256(`training ${cell.trainingSet}`);
  }
  const methodConfigs: Record<string, string> = {};
  for (const cell of cells) methodConfigs[cell.method] = hashJson({ method: cell.method, rank: 8 });
  return {
    schemaVersion: 1,
    suite: {
      name: "fixture",
      fileHash: sha256("suite file"),
      configHash: hashJson(config),
      config: config as Report["suite"]["config"],
    },
    environment: fixtureEnvironment(overrides.environment),
    hashes: {
      baseModel: { name: "gpt2-tiny", hash: sha256("checkpoint"), dtype: "f32" },
      tokenizer: { name: "byte", hash: sha256("tokenizer") },
      evaluationSets,
      trainingSets,
      methodConfigs,
    },
    cells,
  };
}

const RULER_TASKS = ["niah_single_1", "niah_multikey_1", "vt", "cwe"];

/** The standard fixture: lora and dora × ruler, babilong, wikitext, niah × 4K, 8K × seeds 0, 1. */
export function standardReport(): Report {
  const cells: Cell[] = [];
  for (const method of ["lora", "dora"]) {
    const bonus = method === "dora" ? 5 : 0;
    for (const length of [4096, 8192]) {
      const drop = length === 8192 ? 10 : 0;
      for (const seed of [0, 1]) {
        cells.push(
          rulerCell(
            method,
            length,
            seed,
            Object.fromEntries(RULER_TASKS.map((name, i) => [name, 45 - i * 2 - drop + bonus / 5 + seed])),
          ),
        );
        cells.push(
          babilongCell(method, length, seed, {
            qa1: 18 - seed,
            qa2: 14,
            qa3: 10,
            qa4: 16,
            qa5: 12 + bonus / 5 - drop / 10,
          }),
        );
        cells.push(perplexityCell(method, length, seed, 2500 - bonus * 10 + drop * 5 + seed));
        cells.push(sweepCell(method, length, seed, { 0: 9, 50: 6 - drop / 10 + seed, 100: 8 }));
      }
    }
  }
  return makeReport(cells);
}
