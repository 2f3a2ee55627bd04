/**
 * Suite files (`benchmarks/suites/*.json`): which base models, which methods with which configs and
 * training settings, which evaluations at which lengths, how many samples and seeds, and the cost
 * guards a run must respect. A suite is checked in two steps:
 *
 * 1. `parseSuite` — the file's shape (zod, strict: an unknown key is an error, so a typo cannot drop a
 *    setting). Task names are checked against the RULER and bAbI lists. Method names are only checked
 *    for form here, so a suite may name a method that is not registered yet.
 * 2. `resolveSuite` — against the method registry: every method must exist and its config must parse
 *    with the method's own schema (defaults filled in); per-method training overrides are merged into
 *    the suite's defaults; each evaluation gets its lengths and per-length sample counts. The resolved
 *    suite is plain JSON and is what a report keeps (`report.suite.config`) and what cell keys hash.
 *
 * Every error names the file and the field path (`methods[2].config.r`, `evaluations[1].tasks[0]`).
 */

import { z } from "zod";
import { BABI_TASK_NAMES } from "../data/babi.ts";
import { canonicalJson, sha256 } from "../data/hash.ts";
import { RULER_TASK_NAMES } from "../data/ruler.ts";
import { MAX_SWEEP_DISTRACTORS } from "../eval/sweeps.ts";
import type { Method } from "../methods/method.ts";
import { METHODS } from "../methods/registry.ts";
import { describeIssues, type JsonValue, readJsonFile, SchemaValidationError } from "./report_schema.ts";

const positiveInt = z.number().int().positive();
const count = z.number().int().min(0);
const seedValue = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** Context lengths the harness accepts: 16 tokens to 4M. */
const lengthValue = z.number().int().min(16).max(1 << 22);
const kebab = /^[a-z0-9][a-z0-9\-]*$/;
const labelPattern = /^[A-Za-z0-9][A-Za-z0-9_.+\-]*$/;

function uniqueList<T extends z.ZodType>(item: T, what: string) {
  return z.array(item).min(1).superRefine((values, ctx) => {
    const seen = new Set<string>();
    values.forEach((value, i) => {
      const key = JSON.stringify(value);
      if (seen.has(key)) {
        ctx.addIssue({ code: "custom", path: [i], message: `${what} ${key} is listed twice` });
      }
      seen.add(key);
    });
  });
}

// Names checked against a known list with a message that lists the known names (zod's enum message
// would print them as a union of literals).
function knownName<T extends string>(known: readonly T[], what: string) {
  return z.string().refine((name) => (known as readonly string[]).includes(name), {
    error: (issue) => `unknown ${what} ${JSON.stringify(issue.input)}; known: ${known.join(", ")}`,
  }) as unknown as z.ZodType<T>;
}

/** Samples per cell: one number for every length, or a number per length (keys are lengths). */
export const samplesSchema = z.union([
  positiveInt,
  z.record(z.string().regex(/^\d+$/, "a length in tokens"), positiveInt),
]).describe("samples per cell, or {length: samples}");

/** A learning-rate schedule over the training steps. */
export const scheduleSchema = z.strictObject({
  kind: z.enum(["constant", "linear", "cosine"]).default("constant"),
  /** Steps of linear warm-up from 0 to the peak rate. */
  warmupSteps: count.default(0),
  /** Where linear and cosine decay end, as a fraction of the peak rate. */
  minLrRatio: z.number().min(0).max(1).default(0),
});

/** What the training windows are made of (see training_data.ts). */
export const trainingDataSchema = z.strictObject({
  /** Fractions of windows drawn from each kind; normalised. */
  mix: z.strictObject({
    prose: z.number().min(0).default(1),
    ruler: z.number().min(0).default(0),
    babilong: z.number().min(0).default(0),
  }).refine((mix) => mix.prose + mix.ruler + mix.babilong > 0, { message: "the mix fractions sum to 0" })
    .default({ prose: 1, ruler: 0, babilong: 0 }),
  /** The generated prose (src/data/corpus.ts) and the layout it is rendered in. */
  corpus: z.strictObject({
    seed: seedValue.default(7001),
    words: positiveInt.default(60_000),
    layout: z.enum(["plain", "pg19", "wikitext"]).default("plain"),
  }).default({ seed: 7001, words: 60_000, layout: "plain" }),
  rulerTasks: uniqueList(knownName(RULER_TASK_NAMES, "RULER task"), "RULER task")
    .default(["niah_single_1", "niah_single_2"]),
  babilongTasks: uniqueList(knownName(BABI_TASK_NAMES, "bAbI task"), "bAbI task")
    .default(["qa1", "qa2", "qa3", "qa4", "qa5"]),
  /** Whether task prompts carry loss (false: only the answer does, as in supervised fine-tuning). */
  promptLoss: z.boolean().default(true),
  /** Seed of the window mix and the task samples; evaluation data never uses it. */
  seed: seedValue.default(7000),
});

const optimizerSchema = z.strictObject({
  beta1: z.number().min(0).lt(1).optional(),
  beta2: z.number().min(0).lt(1).optional(),
  eps: z.number().positive().optional(),
  weightDecay: z.number().min(0).optional(),
  maxGradNorm: z.number().positive().optional(),
});

/** Training settings: the suite's defaults, complete. */
export const trainingSettingsSchema = z.strictObject({
  steps: count,
  lr: z.number().positive(),
  /** Sequences per step (B). */
  batch: positiveInt.default(1),
  /** Tokens per training sequence (T). */
  sequenceLength: z.number().int().min(2),
  schedule: scheduleSchema.default({ kind: "constant", warmupSteps: 0, minLrRatio: 0 }),
  optimizer: optimizerSchema.default({}),
  /** Recompute activations in the backward (less memory, one extra forward). */
  recompute: z.boolean().default(false),
  data: trainingDataSchema.default(trainingDataSchema.parse({})),
});

/** A method's changes to the suite's training settings (objects are replaced whole, except optimizer). */
export const trainingOverrideSchema = z.strictObject({
  steps: count.optional(),
  lr: z.number().positive().optional(),
  batch: positiveInt.optional(),
  sequenceLength: z.number().int().min(2).optional(),
  schedule: scheduleSchema.optional(),
  optimizer: optimizerSchema.optional(),
  recompute: z.boolean().optional(),
  data: trainingDataSchema.optional(),
});

const jsonRecord: z.ZodType<Record<string, JsonValue>> = z.record(z.string(), z.json()) as z.ZodType<
  Record<string, JsonValue>
>;

/** One method of the suite: a registry name, its config, and training overrides. */
export const methodEntrySchema = z.strictObject({
  /** Registry name (`longtune list methods`). */
  name: z.string().regex(kebab, "a method's registry name (lower-case kebab)"),
  /** The name reports use; default the registry name. Needed when one method appears twice. */
  label: z.string().regex(labelPattern, "letters, digits, _ . + -").optional(),
  config: jsonRecord.default({}),
  training: trainingOverrideSchema.default({}),
});

const lengthsField = uniqueList(lengthValue, "length").optional()
  .describe("this evaluation's lengths (default: the suite's)");
const samplesField = samplesSchema.optional().describe("samples per cell (default: the suite's)");

/** A perplexity protocol; its window is the cell's length. */
export const suiteProtocolSchema = z.discriminatedUnion("kind", [
  z.strictObject({
    kind: z.literal("sliding"),
    /** Stride as a fraction of the window (1: disjoint windows). */
    strideFraction: z.number().gt(0).max(1).default(0.5),
  }),
  z.strictObject({ kind: z.literal("rolling") }),
  z.strictObject({ kind: z.literal("longlora"), stride: positiveInt.default(256) }),
]);

/** Where perplexity text comes from. */
export const textSourceSchema = z.union([
  z.literal("fixture").describe("the shipped fixtures/corpus/<wikitext|pg19>"),
  z.strictObject({ path: z.string().min(1) }).describe("a WikiText folder or a PG-19 folder"),
  z.strictObject({ generated: z.strictObject({ seed: seedValue, words: positiveInt }) })
    .describe("a corpus generated in the layout (src/data/corpus.ts)"),
]);

const perplexityFields = {
  name: z.string().regex(labelPattern).optional(),
  source: textSourceSchema.default("fixture"),
  split: z.enum(["test", "validation"]).default("test"),
  protocol: suiteProtocolSchema.default({ kind: "sliding", strideFraction: 0.5 }),
  /** Each sample is a slice of chunkWindows × length tokens of the split's concatenated text. */
  chunkWindows: z.number().min(1).max(64).default(2),
  lengths: lengthsField,
  samples: samplesField,
};

const attentionField = z.boolean().default(false)
  .describe("also measure attention diagnostics (sink, context, needle and distractor mass)");

/** One evaluation of the suite. `name` is the report's task name (default: the family). */
export const evaluationSchema = z.discriminatedUnion("family", [
  z.strictObject({ family: z.literal("wikitext"), ...perplexityFields }),
  z.strictObject({ family: z.literal("pg19"), ...perplexityFields }),
  z.strictObject({
    family: z.literal("ruler"),
    name: z.string().regex(labelPattern).optional(),
    tasks: uniqueList(knownName(RULER_TASK_NAMES, "RULER task"), "RULER task"),
    /** Generation stops at the tokenizer's end-of-text and at these strings (RULER itself has none). */
    stop: z.array(z.string().min(1)).default([]),
    /** Cap on generated tokens below the task's own budget (the length still counts the full budget). */
    maxNewTokens: positiveInt.optional(),
    /** The essay haystack: a generated corpus. */
    essay: z.strictObject({ seed: seedValue, words: positiveInt }).default({ seed: 8001, words: 40_000 }),
    attention: attentionField,
    lengths: lengthsField,
    samples: samplesField,
  }),
  z.strictObject({
    family: z.literal("babilong"),
    name: z.string().regex(labelPattern).optional(),
    tasks: uniqueList(knownName(BABI_TASK_NAMES, "bAbI task"), "bAbI task"),
    /** Prompt parts (upstream's instruction / examples / post_prompt switches). */
    prompt: z.strictObject({
      instruction: z.boolean().default(true),
      examples: z.boolean().default(true),
      postPrompt: z.boolean().default(true),
    }).default({ instruction: true, examples: true, postPrompt: true }),
    /** Appended after the question; the shipped tiny models were trained with "\nAnswer: ". */
    answerPrefix: z.string().default("\nAnswer: "),
    /** Generation budget (upstream max_new_tokens = 20); counted into the length. */
    maxNewTokens: positiveInt.default(20),
    stop: z.array(z.string().min(1)).default(["\n"]),
    attention: attentionField,
    lengths: lengthsField,
    samples: samplesField,
  }),
  z.strictObject({
    family: z.literal("position-sweep"),
    name: z.string().regex(labelPattern).optional(),
    /** Needle depths, fractions of the haystack. */
    depths: uniqueList(z.number().min(0).max(1), "depth").default([0, 0.25, 0.5, 0.75, 1]),
    /** Near-miss needles per sample (distraction). */
    distractors: z.number().int().min(0).max(MAX_SWEEP_DISTRACTORS).default(0),
    tokensToGenerate: positiveInt.default(16),
    stop: z.array(z.string().min(1)).default(["\n"]),
    attention: attentionField,
    lengths: lengthsField,
    /** Samples per depth. */
    samples: samplesField,
  }),
]);

/** Limits a run must stay within; exceeding one refuses the suite before any work starts. */
export const guardsSchema = z.strictObject({
  maxCells: positiveInt.optional(),
  maxLength: positiveInt.optional(),
  /** Σ over cells of samples × length (tokens read by evaluation, generation budget included). */
  maxEvalTokens: positiveInt.optional(),
  /** Σ over training groups of steps × batch × sequence length. */
  maxTrainTokens: positiveInt.optional(),
});

/** A suite file as written. */
export const suiteFileSchema = z.strictObject({
  $schema: z.string().optional(),
  name: z.string().regex(labelPattern, "letters, digits, _ . + -"),
  description: z.string().min(1),
  /** Shipped base model names (`gpt2-tiny`, `llama-tiny`) or Hugging Face checkpoint folders. */
  models: uniqueList(z.string().min(1), "model"),
  /** Replicate seeds: method initialisation and training data order. */
  seeds: uniqueList(seedValue, "seed"),
  /** Seed of every evaluation sample (the same for every method and seed: a paired design). */
  dataSeed: seedValue.default(42),
  lengths: uniqueList(lengthValue, "length"),
  /** The context methods are prepared for (PrepareContext.maxLength); default the longest evaluation length. */
  prepareLength: lengthValue.optional(),
  samples: samplesSchema,
  training: trainingSettingsSchema,
  /** "all": every registered method with its default config; or a list. */
  methods: z.union([z.literal("all"), z.array(methodEntrySchema).min(1)]),
  /** With "all": config and training changes per method name. */
  methodOverrides: z.record(
    z.string().regex(kebab),
    z.strictObject({ config: jsonRecord.optional(), training: trainingOverrideSchema.optional() }),
  ).default({}),
  evaluations: z.array(evaluationSchema).min(1),
  guards: guardsSchema.default({}),
}).superRefine((suite, ctx) => {
  if (Array.isArray(suite.methods)) {
    const labels = new Map<string, number>();
    suite.methods.forEach((method, i) => {
      const label = method.label ?? method.name;
      const first = labels.get(label);
      if (first !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["methods", i, "label"],
          message: `label "${label}" is also methods[${first}]'s; give each entry its own label`,
        });
      } else labels.set(label, i);
    });
  }
  const names = new Map<string, number>();
  suite.evaluations.forEach((evaluation, i) => {
    const name = evaluation.name ?? evaluation.family;
    const first = names.get(name);
    if (first !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["evaluations", i, "name"],
        message: `name "${name}" is also evaluations[${first}]'s; give each evaluation its own name`,
      });
    } else names.set(name, i);
  });
});

/** A suite file after its shape was checked (defaults filled in). */
export type SuiteFile = z.output<typeof suiteFileSchema>;
/** One evaluation as written. */
export type SuiteEvaluation = z.output<typeof evaluationSchema>;
/** Complete training settings. */
export type TrainingSettings = z.output<typeof trainingSettingsSchema>;
/** Training data settings. */
export type TrainingDataSettings = z.output<typeof trainingDataSchema>;
/** A perplexity protocol as a suite states it. */
export type SuiteProtocol = z.output<typeof suiteProtocolSchema>;

/** A parsed suite with the file it came from. */
export interface LoadedSuite {
  path: string;
  /** sha256 of the file's bytes. */
  fileHash: string;
  suite: SuiteFile;
}

/**
 * Checks a suite's shape; `file` names it in errors.
 * @example const suite = parseSuite(JSON.parse(text), "benchmarks/suites/quick.json");
 */
export function parseSuite(value: unknown, file: string): SuiteFile {
  const result = suiteFileSchema.safeParse(value);
  if (!result.success) {
    throw new SchemaValidationError(file, "longtune suite", describeIssues(result.error.issues));
  }
  return result.data;
}

/** Reads and checks a suite file. */
export async function loadSuite(path: string): Promise<LoadedSuite> {
  const bytes = await Deno.readFile(path).catch((error) => {
    throw new Error(`${path}: cannot read the suite: ${(error as Error).message}`);
  });
  return { path, fileHash: sha256(bytes), suite: parseSuite(await readJsonFile(path), path) };
}

// ---------------------------------------------------------------------------------------------
// Resolution against the registry.

/** A method entry made concrete: its report label, registry name, parsed config and training. */
export interface ResolvedMethod {
  label: string;
  name: string;
  config: Record<string, JsonValue>;
  training: TrainingSettings;
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** An evaluation made concrete: its name, lengths and the sample count at each length. */
export type ResolvedEvaluation = DistributiveOmit<SuiteEvaluation, "samples" | "lengths" | "name"> & {
  name: string;
  lengths: number[];
  /** samples[i] belongs to lengths[i]. */
  samples: number[];
};

/** A suite made concrete; plain JSON, kept whole in reports. */
export interface ResolvedSuite {
  name: string;
  description: string;
  models: string[];
  seeds: number[];
  dataSeed: number;
  lengths: number[];
  /** PrepareContext.maxLength of every method. */
  prepareLength: number;
  methods: ResolvedMethod[];
  evaluations: ResolvedEvaluation[];
  guards: z.output<typeof guardsSchema>;
  /** Filters a run applied (--model, --methods), so a filtered report says it is partial. */
  filters: { models: string[] | null; methods: string[] | null };
}

/** Filters applied while resolving. */
export interface ResolveOptions {
  /** Keep only these models (as named in the suite). */
  models?: readonly string[];
  /** Keep only these methods (labels or registry names). */
  methods?: readonly string[];
  /** The registry to resolve against (default: `METHODS`). */
  registry?: readonly Method[];
}

function mergeTraining(
  base: TrainingSettings,
  override: z.output<typeof trainingOverrideSchema> | undefined,
): TrainingSettings {
  if (override === undefined) return base;
  const { optimizer, ...rest } = override;
  const merged = { ...base, optimizer: { ...base.optimizer, ...optimizer } } as TrainingSettings;
  for (const [key, value] of Object.entries(rest)) {
    if (value !== undefined) (merged as Record<string, unknown>)[key] = value;
  }
  return merged;
}

function samplesAt(spec: z.output<typeof samplesSchema>, length: number, path: string, file: string): number {
  if (typeof spec === "number") return spec;
  const value = spec[String(length)];
  if (value === undefined) {
    throw new SchemaValidationError(file, "longtune suite", [{
      path,
      message: `no sample count for length ${length}; lengths given: ${Object.keys(spec).join(", ")}`,
    }]);
  }
  return value;
}

/**
 * Resolves a checked suite against the method registry: unknown methods are refused naming the known
 * ones, configs are parsed with each method's schema, training overrides merged, and each evaluation
 * gets its lengths and sample counts. `file` names the suite in errors.
 * @example const resolved = resolveSuite((await loadSuite("benchmarks/suites/quick.json")).suite, "quick.json");
 */
export function resolveSuite(suite: SuiteFile, file: string, options: ResolveOptions = {}): ResolvedSuite {
  const registry = options.registry ?? METHODS;
  const fail = (path: string, message: string): never => {
    throw new SchemaValidationError(file, "longtune suite", [{ path, message }]);
  };
  const known = () => registry.map((m) => m.name).join(", ");
  type Entry = { name: string; label?: string; config?: Record<string, JsonValue>; training?: unknown };
  const entries: { entry: Entry; path: string }[] = suite.methods === "all"
    ? registry.map((method) => {
      const override = suite.methodOverrides[method.name];
      return {
        entry: { name: method.name, config: override?.config, training: override?.training },
        path: `methodOverrides.${method.name}`,
      };
    })
    : suite.methods.map((entry, i) => ({ entry, path: `methods[${i}]` }));
  if (suite.methods === "all") {
    for (const name of Object.keys(suite.methodOverrides)) {
      if (!registry.some((m) => m.name === name)) {
        fail(`methodOverrides.${name}`, `unknown method "${name}"; known: ${known()}`);
      }
    }
  }
  let methods: ResolvedMethod[] = entries.map(({ entry, path }) => {
    const method = registry.find((m) => m.name === entry.name);
    if (method === undefined) fail(`${path}.name`, `unknown method "${entry.name}"; known: ${known()}`);
    const parsed = method!.config.safeParse(entry.config ?? {});
    if (!parsed.success) {
      throw new SchemaValidationError(
        file,
        "longtune suite",
        describeIssues(parsed.error.issues, [...pathKeys(path), "config"]),
      );
    }
    return {
      label: entry.label ?? entry.name,
      name: entry.name,
      config: JSON.parse(canonicalJson(parsed.data)) as Record<string, JsonValue>,
      training: mergeTraining(suite.training, entry.training as z.output<typeof trainingOverrideSchema>),
    };
  });
  if (options.methods !== undefined) {
    for (const wanted of options.methods) {
      if (!methods.some((m) => m.label === wanted || m.name === wanted)) {
        throw new RangeError(
          `--methods: "${wanted}" is not in suite ${suite.name} (its methods: ${
            methods.map((m) => m.label).join(", ")
          })`,
        );
      }
    }
    methods = methods.filter((m) => options.methods!.includes(m.label) || options.methods!.includes(m.name));
  }
  let models = [...suite.models];
  if (options.models !== undefined) {
    for (const wanted of options.models) {
      if (!models.includes(wanted)) {
        throw new RangeError(
          `--model: "${wanted}" is not in suite ${suite.name} (its models: ${models.join(", ")})`,
        );
      }
    }
    models = models.filter((m) => options.models!.includes(m));
  }
  const evaluations = suite.evaluations.map((evaluation, i): ResolvedEvaluation => {
    const lengths = [...(evaluation.lengths ?? suite.lengths)].sort((a, b) => a - b);
    const spec = evaluation.samples ?? suite.samples;
    const where = evaluation.samples !== undefined ? `evaluations[${i}].samples` : "samples";
    return {
      ...evaluation,
      name: evaluation.name ?? evaluation.family,
      lengths,
      samples: lengths.map((length) => samplesAt(spec, length, where, file)),
    };
  });
  const resolved: ResolvedSuite = {
    name: suite.name,
    description: suite.description,
    models,
    seeds: [...suite.seeds],
    dataSeed: suite.dataSeed,
    lengths: [...suite.lengths].sort((a, b) => a - b),
    prepareLength: suite.prepareLength ?? Math.max(...evaluations.flatMap((e) => e.lengths)),
    methods,
    evaluations,
    guards: suite.guards,
    filters: {
      models: options.models ? [...options.models] : null,
      methods: options.methods ? [...options.methods] : null,
    },
  };
  // Through canonical JSON once: what reports store and keys hash is exactly this plain data.
  return JSON.parse(canonicalJson(resolved)) as ResolvedSuite;
}

function pathKeys(path: string): PropertyKey[] {
  const keys: PropertyKey[] = [];
  for (const part of path.split(".")) {
    const match = /^([^\[]+)(?:\[(\d+)\])?$/.exec(part);
    if (match === null) keys.push(part);
    else {
      keys.push(match[1]);
      if (match[2] !== undefined) keys.push(Number(match[2]));
    }
  }
  return keys;
}
