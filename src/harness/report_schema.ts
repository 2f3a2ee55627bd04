/**
 * The report.json format (schema version 1): one file per suite run holding the suite, the environment,
 * every seed and content hash, and one cell per (method, evaluation task, context length, seed).
 * Markdown, HTML, comparisons, history and leaderboards are all computed from this data only.
 *
 * Strict by default: unknown keys are errors, so a typo cannot silently drop a field. Extensible where
 * a suite must be free: metrics are a record keyed by metric name, RULER/BABILong task tables are
 * records keyed by task name, attention diagnostics carry their own definitions, and the resolved suite
 * config is kept whole as plain JSON.
 */

import { z } from "zod";
import { hashJson } from "../data/hash.ts";
import { writeFileAtomic } from "../data/layouts.ts";

/** The report format version this module reads and writes. */
export const REPORT_SCHEMA_VERSION = 1;

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/).describe("lowercase hex sha256");
const seedValue = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).describe("a safe integer ≥ 0");
const isoTimestamp = z.iso.datetime({ offset: true }).describe("ISO 8601 timestamp");
const nonEmpty = z.string().min(1);
const count = z.number().int().min(0);
const percent = z.number().min(0).max(100);
/** Any JSON value (suite configs are kept whole, whatever their shape). */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
const jsonValue: z.ZodType<JsonValue> = z.lazy(() =>
  z.union([
    z.string(),
    z.number(),
    z.boolean(),
    z.null(),
    z.array(jsonValue),
    z.record(z.string(), jsonValue),
  ])
).meta({ id: "jsonValue", description: "any JSON value" });

/** What the tree looked like when the numbers were made; "unknown" when git or its permission is missing. */
export const gitStateSchema = z.strictObject({
  commit: z.union([z.string().regex(/^[0-9a-f]{40}([0-9a-f]{24})?$/), z.literal("unknown")])
    .describe("HEAD commit (sha1 or sha256 object name)"),
  branch: nonEmpty.describe('current branch; "HEAD" when detached'),
  dirty: z.union([z.boolean(), z.literal("unknown")])
    .describe("true when `git status --porcelain` listed tracked changes or untracked files"),
});

/** The WebGPU adapter the numbers were measured on (from `getGpu().adapter`). */
export const adapterSchema = z.strictObject({
  description: z.string(),
  vendor: z.string(),
  architecture: z.string(),
  device: z.string(),
  isFallbackAdapter: z.boolean(),
  features: z.array(z.string()),
  limits: z.record(z.string(), z.number()),
  /** [min, max] subgroup size; tells llvmpipe's OpenGL and Vulkan paths apart. Absent in older reports. */
  subgroupSizes: z.tuple([z.number().int(), z.number().int()]).nullable().optional(),
});

/** Runtime, host and repository facts captured at run time by `captureEnvironment`. */
export const environmentSchema = z.strictObject({
  harness: z.strictObject({ name: z.literal("longtune"), version: nonEmpty }),
  deno: nonEmpty,
  v8: nonEmpty,
  typescript: nonEmpty,
  os: nonEmpty.describe("Deno.build.os"),
  arch: nonEmpty.describe("Deno.build.arch"),
  target: nonEmpty.describe("Deno.build.target"),
  cpu: z.strictObject({
    model: nonEmpty.describe('from /proc/cpuinfo; "unknown" when unreadable'),
    logicalCores: z.number().int().min(1),
  }),
  memoryBytes: z.union([count, z.literal("unknown")]).describe("total system memory"),
  adapter: adapterSchema.nullable().describe("null when the run used no GPU adapter"),
  git: gitStateSchema,
  capturedAt: isoTimestamp,
});

/** How a metric is judged: its direction, its unit and which comparison rule applies. */
export const metricKindSchema = z.enum(["accuracy", "perplexity", "bits-per-byte", "loss", "diagnostic"])
  .describe(
    "accuracy: percent 0–100, higher is better, needs a 95% interval; perplexity, bits-per-byte and loss: " +
      "lower is better; diagnostic: recorded, never ranked or compared",
  );

/** A 95% interval for a metric value. */
export const intervalSchema = z.strictObject({
  lo: z.number(),
  hi: z.number(),
  method: z.enum(["wilson", "bootstrap", "t", "normal"]).describe("how the interval was computed"),
});

/** One metric value with its sample count and interval. */
export const metricSchema = z.strictObject({
  kind: metricKindSchema,
  value: z.number(),
  n: count.describe("samples behind the value (questions, windows, documents)"),
  ci95: intervalSchema.nullable(),
  unit: z.string().optional().describe("overrides the kind's default unit (diagnostics)"),
}).superRefine((metric, ctx) => {
  if (metric.kind === "accuracy") {
    if (metric.value < 0 || metric.value > 100) {
      ctx.addIssue({
        code: "custom",
        path: ["value"],
        message: `expected a percent in [0, 100], got ${metric.value}`,
      });
    }
    if (metric.ci95 === null) {
      ctx.addIssue({
        code: "custom",
        path: ["ci95"],
        message: "expected a 95% interval for an accuracy metric",
      });
    }
  }
  if (metric.ci95 !== null && !(metric.ci95.lo <= metric.value && metric.value <= metric.ci95.hi)) {
    ctx.addIssue({
      code: "custom",
      path: ["ci95"],
      message:
        `expected lo ≤ value ≤ hi, got lo ${metric.ci95.lo}, value ${metric.value}, hi ${metric.ci95.hi}`,
    });
  }
});

/** How a perplexity number was produced (benchmarks.md §4.5: always record these). */
export const perplexityProtocolSchema = z.strictObject({
  kind: z.enum(["sliding", "rolling", "longlora"]).describe(
    "HF strided window, lm-eval rolling, LongLoRA eval.py",
  ),
  window: z.number().int().min(1).describe("tokens per scored window"),
  stride: z.number().int().min(1).describe("tokens between window starts"),
  contextResetPerWindow: z.boolean(),
  scoring: z.enum(["concatenated", "per-document"]),
  bos: z.string().describe("BOS / prefix-token handling, e.g. 'prefix token 50256' or 'none'"),
});

/** Perplexity under every normaliser, with the totals they come from. */
export const perplexityExtrasSchema = z.strictObject({
  nllNats: z.number().min(0).describe("summed natural-log negative log-likelihood ℒ"),
  targets: z.number().int().min(1).describe("scored tokens T (the token-PPL normaliser)"),
  words: z.number().int().min(1).nullable().describe(
    "W; null when tokens are scored more than once (longlora)",
  ),
  bytes: z.number().int().min(1).nullable().describe(
    "B; null when tokens are scored more than once (longlora)",
  ),
  tokenPerplexity: z.number().min(1).describe("exp(ℒ/T)"),
  wordPerplexity: z.number().min(1).nullable().describe("exp(ℒ/W)"),
  bytePerplexity: z.number().min(1).nullable().describe("exp(ℒ/B)"),
  bitsPerByte: z.number().min(0).nullable().describe("ℒ/(B·ln 2)"),
  protocol: perplexityProtocolSchema,
});

/** One (depth) point of a needle position sweep at the cell's length. */
export const sweepPointSchema = z.strictObject({
  depthPercent: percent,
  score: percent,
  n: count,
});

/** An attention diagnostic and the definition it was measured under. */
export const attentionDiagnosticSchema = z.strictObject({
  value: z.number(),
  definition: nonEmpty.describe("what was averaged over what, e.g. which positions count as sinks"),
});

const taskName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.\-]*$/);

/** Evaluation-specific detail; which key must be present depends on the cell's family. */
export const cellExtrasSchema = z.strictObject({
  ruler: z.strictObject({
    tasks: z.record(taskName, z.strictObject({ score: percent, n: count }))
      .describe("per-task scores (string_match_all / string_match_part × 100)"),
  }).optional(),
  babilong: z.strictObject({
    tasks: z.record(
      z.string().regex(/^qa([1-9]|1[0-9]|20)$/),
      z.strictObject({ accuracy: percent, n: count }),
    ),
  }).optional(),
  perplexity: perplexityExtrasSchema.optional(),
  positionSweep: z.strictObject({
    placement: nonEmpty.describe("the placement rule, e.g. 'token index snapped to sentence start'"),
    points: z.array(sweepPointSchema).min(1),
  }).optional(),
  attention: z.record(z.string().regex(/^[a-z][A-Za-z0-9]*$/), attentionDiagnosticSchema).optional()
    .describe("attention diagnostics such as sinkMass, contextEngagement, distractorMass"),
});

/** How a cell ended. */
export const cellStatusSchema = z.discriminatedUnion("state", [
  z.strictObject({ state: z.literal("ok") }),
  z.strictObject({ state: z.literal("failed"), error: nonEmpty }),
  z.strictObject({ state: z.literal("skipped"), reason: nonEmpty }),
]);

/** Which evaluation family a task belongs to; decides the extras it carries and how it is aggregated. */
export const evaluationFamilySchema = z.enum(["ruler", "babilong", "perplexity", "position-sweep", "custom"]);

/** One training step's record. */
export const curvePointSchema = z.strictObject({
  step: count,
  loss: z.number(),
  lr: z.number().min(0),
});

const metricName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.\-]*$/);

/** One (method, evaluation task, context length, seed) run. */
export const cellSchema = z.strictObject({
  method: nonEmpty,
  task: nonEmpty.describe("evaluation task name as named in the suite"),
  family: evaluationFamilySchema,
  length: z.number().int().min(1).describe("context length in tokens"),
  seed: seedValue.describe("the replicate seed that distinguishes this cell"),
  seeds: z.record(nonEmpty, seedValue).describe("every seed the cell used, by role (data, init, shuffle…)"),
  evaluationSet: nonEmpty.describe("key into hashes.evaluationSets"),
  trainingSet: nonEmpty.nullable().describe("key into hashes.trainingSets; null when nothing was trained"),
  status: cellStatusSchema,
  primaryMetric: metricName.nullable().describe("the headline metric's key; null only when not ok"),
  metrics: z.record(metricName, metricSchema),
  trainingCurve: z.array(curvePointSchema),
  trainTokensPerSecond: z.number().min(0).nullable(),
  evalTokensPerSecond: z.number().min(0).nullable(),
  peakGpuMemoryBytes: count.nullable().describe("null when the adapter cannot report it"),
  trainableParameters: count,
  wallTimeSeconds: z.number().min(0),
  extras: cellExtrasSchema,
}).superRefine((cell, ctx) => {
  for (let i = 1; i < cell.trainingCurve.length; i++) {
    if (cell.trainingCurve[i].step <= cell.trainingCurve[i - 1].step) {
      ctx.addIssue({
        code: "custom",
        path: ["trainingCurve", i, "step"],
        message: `expected steps to increase, got ${cell.trainingCurve[i].step} after ${
          cell.trainingCurve[i - 1].step
        }`,
      });
    }
  }
  if (cell.status.state !== "ok") return;
  if (cell.primaryMetric === null || !(cell.primaryMetric in cell.metrics)) {
    ctx.addIssue({
      code: "custom",
      path: ["primaryMetric"],
      message:
        `expected the key of one of metrics {${Object.keys(cell.metrics).join(", ")}} for an ok cell, ` +
        `got ${JSON.stringify(cell.primaryMetric)}`,
    });
  }
  const requiredExtras = {
    ruler: "ruler",
    babilong: "babilong",
    perplexity: "perplexity",
    "position-sweep": "positionSweep",
    custom: null,
  } as const;
  const extraKey = requiredExtras[cell.family];
  if (extraKey !== null && cell.extras[extraKey] === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["extras", extraKey],
      message: `expected extras.${extraKey} for an ok ${cell.family} cell`,
    });
  }
  const ruler = cell.extras.ruler;
  if (cell.family === "ruler" && ruler !== undefined && cell.primaryMetric !== null) {
    const scores = Object.values(ruler.tasks).map((task) => task.score);
    const primary = cell.metrics[cell.primaryMetric];
    // RULER's per-length number is by definition the unweighted mean of its task scores (§1.9).
    const mean = scores.reduce((sum, score) => sum + score, 0) / scores.length;
    if (scores.length === 0 || primary === undefined || Math.abs(primary.value - mean) > 0.01) {
      ctx.addIssue({
        code: "custom",
        path: ["metrics", cell.primaryMetric, "value"],
        message:
          `expected the RULER primary metric to be the mean of extras.ruler.tasks (${mean}), got ${primary?.value}`,
      });
    }
  }
  const ppl = cell.extras.perplexity;
  if (ppl !== undefined) checkPerplexityConsistency(ppl, ctx);
});

function checkPerplexityConsistency(ppl: z.infer<typeof perplexityExtrasSchema>, ctx: z.RefinementCtx): void {
  const { nllNats, targets, words, bytes } = ppl;
  const expected: [keyof typeof ppl, number | null][] = [
    ["tokenPerplexity", Math.exp(nllNats / targets)],
    ["wordPerplexity", words === null ? null : Math.exp(nllNats / words)],
    ["bytePerplexity", bytes === null ? null : Math.exp(nllNats / bytes)],
    ["bitsPerByte", bytes === null ? null : nllNats / (bytes * Math.LN2)],
  ];
  for (const [field, want] of expected) {
    const got = ppl[field] as number | null;
    const agrees = want === null || got === null
      ? want === got
      : Math.abs(got - want) <= 1e-6 * Math.max(1, Math.abs(want));
    if (!agrees) {
      ctx.addIssue({
        code: "custom",
        path: ["extras", "perplexity", field],
        message: `expected ${want} from nllNats, targets, words and bytes (§4.5), got ${got}`,
      });
    }
  }
}

/** Content hashes of everything that shapes the numbers. */
export const reportHashesSchema = z.strictObject({
  baseModel: z.strictObject({ name: nonEmpty, hash: sha256Hex, dtype: nonEmpty }),
  tokenizer: z.strictObject({ name: nonEmpty, hash: sha256Hex }),
  evaluationSets: z.record(nonEmpty, sha256Hex).describe("hash of each evaluation's samples, by key"),
  trainingSets: z.record(nonEmpty, sha256Hex).describe("hash of each training set's samples, by key"),
  methodConfigs: z.record(nonEmpty, sha256Hex).describe("canonical-JSON hash of each method's config"),
});

/** The whole report.json, version 1. */
export const reportSchema = z.strictObject({
  schemaVersion: z.literal(REPORT_SCHEMA_VERSION),
  suite: z.strictObject({
    name: nonEmpty,
    fileHash: sha256Hex.describe("sha256 of the suite file's bytes"),
    configHash: sha256Hex.describe("hashJson(config): equal for suites that resolve to the same config"),
    config: z.record(z.string(), jsonValue).describe("the whole resolved suite config"),
  }),
  environment: environmentSchema,
  hashes: reportHashesSchema,
  cells: z.array(cellSchema),
}).superRefine((report, ctx) => {
  const configHash = hashJson(report.suite.config);
  if (configHash !== report.suite.configHash) {
    ctx.addIssue({
      code: "custom",
      path: ["suite", "configHash"],
      message: `expected hashJson(suite.config) = ${configHash}, got ${report.suite.configHash}`,
    });
  }
  const seen = new Map<string, number>();
  report.cells.forEach((cell, i) => {
    const key = JSON.stringify([cell.method, cell.task, cell.length, cell.seed]);
    const first = seen.get(key);
    if (first !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["cells", i],
        message: `expected one cell per (method, task, length, seed); cells[${first}] is also ${key}`,
      });
    } else seen.set(key, i);
    const crossReferences: [string, string | null, Record<string, string>][] = [
      ["evaluationSet", cell.evaluationSet, report.hashes.evaluationSets],
      ["trainingSet", cell.trainingSet, report.hashes.trainingSets],
      ["method", cell.method, report.hashes.methodConfigs],
    ];
    for (const [field, key, table] of crossReferences) {
      if (key !== null && !Object.hasOwn(table, key)) {
        const tableName = field === "method" ? "methodConfigs" : `${field}s`;
        ctx.addIssue({
          code: "custom",
          path: ["cells", i, field],
          message: `expected a key of hashes.${tableName}, got ${JSON.stringify(key)}`,
        });
      }
    }
  });
}).meta({
  title: "longtune report",
  description: "One suite run: suite, environment, seeds, content hashes and one cell per " +
    "(method, evaluation task, context length, seed). Schema version 1.",
});

/** A validated report. */
export type Report = z.infer<typeof reportSchema>;
/** One (method, task, length, seed) cell of a report. */
export type Cell = z.infer<typeof cellSchema>;
/** One metric value of a cell. */
export type Metric = z.infer<typeof metricSchema>;
/** A metric kind: accuracy, perplexity, bits-per-byte, loss or diagnostic. */
export type MetricKind = z.infer<typeof metricKindSchema>;
/** The captured environment. */
export type Environment = z.infer<typeof environmentSchema>;
/** The adapter description stored in a report. */
export type AdapterInfo = z.infer<typeof adapterSchema>;
/** Evaluation family of a cell. */
export type EvaluationFamily = z.infer<typeof evaluationFamilySchema>;

/** Direction of a metric kind: which way is better, or "none" for diagnostics. */
export function metricDirection(kind: MetricKind): "higher" | "lower" | "none" {
  if (kind === "accuracy") return "higher";
  if (kind === "diagnostic") return "none";
  return "lower";
}

/** Unit of a metric: its explicit unit, else the kind's default. */
export function metricUnit(metric: Pick<Metric, "kind" | "unit">): string {
  if (metric.unit !== undefined) return metric.unit;
  const units: Record<MetricKind, string> = {
    accuracy: "%",
    perplexity: "ppl",
    "bits-per-byte": "bits/byte",
    loss: "nats/token",
    diagnostic: "",
  };
  return units[metric.kind];
}

/** A schema violation in a named file, with every issue's field path. */
export class SchemaValidationError extends Error {
  /** Each issue as a field path (`cells[2].metrics.score.ci95`) and what was expected there. */
  readonly issues: { path: string; message: string }[];

  constructor(readonly file: string, what: string, issues: { path: string; message: string }[]) {
    const lines = issues.slice(0, 20).map((issue) => `  ${issue.path}: ${issue.message}`);
    if (issues.length > 20) lines.push(`  … and ${issues.length - 20} more`);
    super(`${file}: not a valid ${what}:\n${lines.join("\n")}`);
    this.name = "SchemaValidationError";
    this.issues = issues;
  }
}

/** Writes a zod issue path the way a reader would type it: `cells[2].metrics["ruler score"].value`. */
export function formatIssuePath(path: readonly PropertyKey[]): string {
  let text = "";
  for (const key of path) {
    if (typeof key === "number") text += `[${key}]`;
    else if (typeof key === "string" && /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key)) {
      text += text ? `.${key}` : key;
    } else text += `[${JSON.stringify(String(key))}]`;
  }
  return text || "(root)";
}

/** Flattens zod issues (unions and record keys included) into path + message pairs. */
export function describeIssues(issues: readonly z.core.$ZodIssue[], prefix: PropertyKey[] = []) {
  const described: { path: string; message: string }[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    if (issue.code === "invalid_union" && issue.errors.length > 0) {
      const options = issue.errors.map((branch) =>
        branch.map((inner) => {
          const innerPath = formatIssuePath(inner.path);
          return inner.path.length > 0 ? `${innerPath}: ${inner.message}` : inner.message;
        }).join("; ")
      );
      described.push({
        path: formatIssuePath(path),
        message: `none of the allowed forms: ${options.join(" | ")}`,
      });
    } else if (issue.code === "invalid_key") {
      const reasons = issue.issues.map((inner) => inner.message).join("; ");
      described.push({ path: formatIssuePath(path), message: `invalid key: ${reasons}` });
    } else {
      described.push({ path: formatIssuePath(path), message: issue.message });
    }
  }
  return described;
}

/** Validates a value against a schema or throws `SchemaValidationError` naming `file` and field paths. */
export function validateWith<T>(schema: z.ZodType<T>, value: unknown, file: string, what: string): T {
  const result = schema.safeParse(value);
  if (!result.success) throw new SchemaValidationError(file, what, describeIssues(result.error.issues));
  return result.data;
}

/** Reads and parses a JSON file, naming the file in every error. */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new Error(`${path}: cannot read: ${error instanceof Error ? error.message : error}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${path}: not JSON: ${error instanceof Error ? error.message : error}`);
  }
}

/** Validates an in-memory report; `source` names it in errors. */
export function validateReport(value: unknown, source = "report"): Report {
  return validateWith(reportSchema, value, source, `report (schema version ${REPORT_SCHEMA_VERSION})`);
}

/** Reads report.json and validates it; errors name the file and each field path. */
export async function parseReport(path: string): Promise<Report> {
  return validateReport(await readJsonFile(path), path);
}

/** Validates a report and writes it atomically (temp file, then rename) as pretty JSON. */
export async function writeReport(path: string, report: Report): Promise<void> {
  const valid = validateReport(report, path);
  await writeFileAtomic(path, JSON.stringify(valid, null, 2) + "\n");
}

/** Content hash of a report: sha256 of its canonical JSON. */
export function reportHash(report: Report): string {
  return hashJson(report);
}
