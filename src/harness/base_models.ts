/**
 * Base checkpoints for the runner: the two tiny models the project trains and ships in
 * `fixtures/models/` (`gpt2-tiny`, `llama-tiny`; rebuilt by `fixtures/models/make.ts`, described by
 * its `manifest.json`), and user checkpoints given as a Hugging Face folder path. Both load into the
 * parameter table's layout with their tokenizer. A shipped file whose sha256 no longer matches the
 * manifest is refused, so a report that names `gpt2-tiny` always means the same weights.
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { sha256 } from "../data/hash.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { byteTokenizer, loadGpt2Tokenizer, loadHfTokenizer } from "../data/tokenizers.ts";
import { type ModelConfig, modelConfigSchema } from "../model/config.ts";
import { loadHfCheckpoint } from "../model/hf.ts";
import { adamwConfigSchema } from "../ops/adamw.ts";

/** The shipped base models, by name. */
export const BASE_MODEL_NAMES = ["gpt2-tiny", "llama-tiny"] as const;
export type BaseModelName = typeof BASE_MODEL_NAMES[number];

/** The folder holding the shipped models and their manifest. */
export const BASE_MODELS_DIR: string = fileURLToPath(new URL("../../fixtures/models", import.meta.url));

const hex64 = z.string().regex(/^[0-9a-f]{64}$/, "expected a lowercase hex sha256");
const count = z.number().int().min(0);
const fileSchema = z.object({ bytes: count, sha256: hex64 }).strict();

/** What a model was trained on: the generators, their seeds, the mix and what it amounted to. */
export const baseModelDataSchema = z.object({
  description: z.string(),
  /** sha256 of every step's (T + 1) token ids as little-endian u32, in step order. */
  sha256: hex64,
  /** Target fraction of steps per kind. */
  mix: z.object({ prose: z.number(), ruler: z.number(), babilong: z.number() }).strict(),
  /** Steps that drew each kind. */
  steps: z.object({ prose: count, ruler: count, babilong: count }).strict(),
  /** Tokens fed to the model by source; `separators` counts the <|endoftext|> after each task sample. */
  tokens: z.object({ total: count, prose: count, ruler: count, babilong: count, separators: count }).strict(),
  corpus: z.object({
    generator: z.literal("src/data/corpus.ts"),
    version: z.number().int().positive(),
    options: z.record(z.string(), z.number()),
    /** Fraction of books rendered as plain prose, as PG-19 book text and as WikiText raw. */
    layouts: z.object({ plain: z.number(), pg19: z.number(), wikitext: z.number() }).strict(),
    layoutSeed: z.number().int(),
    books: count,
    tokens: count,
    /** How many times the prose stream was read through (> 1 means it wrapped). */
    epochs: z.number(),
  }).strict(),
  ruler: z.object({
    generator: z.literal("src/data/ruler.ts"),
    tasks: z.array(z.string()).min(1),
    seed: z.number().int(),
    maxLength: z.number().int().positive(),
    format: z.string(),
  }).strict(),
  babilong: z.object({
    generator: z.literal("src/data/babilong.ts"),
    tasks: z.array(z.string()).min(1),
    seed: z.number().int(),
    haystackSeed: z.number().int(),
    maxFacts: z.number().int().positive(),
    haystackFraction: z.number(),
    targetTokens: z.number().int().positive(),
    answerPrefix: z.string(),
    format: z.string(),
  }).strict(),
  heldOut: z.string(),
}).strict();

/** One shipped model's record: how it was made, how training went, and its files' hashes. */
export const baseModelEntrySchema = z.object({
  name: z.enum(BASE_MODEL_NAMES),
  family: z.enum(["gpt2", "llama"]),
  /** The longtune config and the HF config.json object written next to the weights. */
  config: modelConfigSchema,
  hfConfig: z.record(z.string(), z.unknown()),
  parameters: z.number().int().positive(),
  tokenizer: z.object({ name: z.literal("byte"), hash: hex64, vocabSize: z.number().int().positive() })
    .strict(),
  seed: z.number().int(),
  steps: z.number().int().positive(),
  B: z.number().int().positive(),
  T: z.number().int().positive(),
  optimizer: adamwConfigSchema,
  schedule: z.object({
    kind: z.literal("warmup-cosine"),
    peakLr: z.number().positive(),
    warmupSteps: count,
    minLrRatio: z.number().min(0).max(1),
  }).strict(),
  data: baseModelDataSchema,
  loss: z.object({
    first: z.number(),
    /** Mean per-token loss (nats) of the last `finalWindow` steps. */
    final: z.number(),
    finalWindow: z.number().int().positive(),
    /** Mean loss of the last fifth of the steps, per kind of step. */
    lastFifthByKind: z.object({
      prose: z.number().nullable(),
      ruler: z.number().nullable(),
      babilong: z.number().nullable(),
    })
      .strict(),
    /** Mean loss of consecutive bins of steps. */
    curve: z.array(
      z.object({ fromStep: z.number().int().positive(), toStep: z.number().int(), mean: z.number() }),
    )
      .min(1),
  }).strict(),
  wallSeconds: z.object({ train: z.number().min(0), total: z.number().min(0) }).strict(),
  environment: z.object({
    deno: z.string(),
    adapter: z.string(),
    /** [min, max] subgroup size of the adapter (tells llvmpipe's OpenGL and Vulkan paths apart). */
    subgroupSizes: z.tuple([z.number().int(), z.number().int()]).nullable().optional(),
    software: z.boolean(),
  }).strict(),
  command: z.string(),
  /** Paths relative to the manifest's folder. */
  files: z.record(z.string(), fileSchema),
}).strict().refine((e) => e.family === e.config.family, { message: "family differs from config.family" });

/** `fixtures/models/manifest.json`. `files` repeats every model's files so `longtune list` checks them. */
export const baseModelManifestSchema = z.object({
  format: z.literal("longtune-base-models"),
  generator: z.literal("fixtures/models/make.ts"),
  command: z.string(),
  models: z.partialRecord(z.enum(BASE_MODEL_NAMES), baseModelEntrySchema),
  files: z.record(z.string(), fileSchema),
}).strict().superRefine((m, ctx) => {
  const listed = new Map<string, z.output<typeof fileSchema>>();
  for (const [key, entry] of Object.entries(m.models)) {
    if (entry.name !== key) {
      ctx.addIssue({ code: "custom", path: ["models", key], message: `name is ${entry.name}` });
    }
    for (const [path, file] of Object.entries(entry.files)) listed.set(path, file);
  }
  const top = Object.keys(m.files).sort();
  const union = [...listed.keys()].sort();
  if (top.join("\n") !== union.join("\n") || top.some((p) => m.files[p].sha256 !== listed.get(p)!.sha256)) {
    ctx.addIssue({ code: "custom", path: ["files"], message: "must list exactly the models' files" });
  }
});

export type BaseModelEntry = z.output<typeof baseModelEntrySchema>;
export type BaseModelManifest = z.output<typeof baseModelManifestSchema>;

/** A loaded base model: its config, weights in table layout, tokenizer and, if shipped, its record. */
export interface BaseModel {
  /** The shipped name, or the folder path as given. */
  name: string;
  folder: string;
  config: ModelConfig;
  /** (table.size,) f32, ready for `createWeights`. */
  values: Float32Array;
  tokenizer: Tokenizer;
  /** The manifest entry of a shipped model; null for a user checkpoint. */
  manifest: BaseModelEntry | null;
}

/**
 * Reads and validates `manifest.json` of the shipped models.
 * @example const manifest = await readBaseModelManifest(); manifest.models["gpt2-tiny"]?.loss.final;
 */
export async function readBaseModelManifest(root: string = BASE_MODELS_DIR): Promise<BaseModelManifest> {
  const path = join(root, "manifest.json");
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(path));
  } catch (error) {
    throw new Error(`${path}: cannot read the base model manifest: ${(error as Error).message}`);
  }
  const parsed = baseModelManifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`);
    throw new Error(`${path} is invalid: ${issues.slice(0, 5).join("; ")}`);
  }
  return parsed.data;
}

/** Throws, naming the file, when a shipped file is missing or its sha256 differs from the manifest's. */
export async function verifyBaseModelFiles(
  entry: BaseModelEntry,
  root: string = BASE_MODELS_DIR,
): Promise<void> {
  for (const [relative, want] of Object.entries(entry.files)) {
    const path = join(root, relative);
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (error) {
      throw new Error(`${path}: cannot read ${entry.name}'s file: ${(error as Error).message}`);
    }
    const got = sha256(bytes);
    if (got !== want.sha256) {
      throw new Error(
        `${path}: sha256 ${got} does not match the manifest's ${want.sha256}; the file changed since it was ` +
          `built (rebuild with: ${entry.command})`,
      );
    }
  }
}

async function isFile(path: string): Promise<boolean> {
  return await Deno.stat(path).then((s) => s.isFile, () => false);
}

// The folder's tokenizer: tokenizer.json, else GPT-2's vocab.json + merges.txt, else raw bytes.
async function folderTokenizer(folder: string, config: ModelConfig): Promise<Tokenizer> {
  const tokenizer = await isFile(join(folder, "tokenizer.json"))
    ? await loadHfTokenizer(folder)
    : await isFile(join(folder, "vocab.json")) && await isFile(join(folder, "merges.txt"))
    ? await loadGpt2Tokenizer(folder)
    : byteTokenizer();
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new Error(
      `${folder}: tokenizer ${tokenizer.name} has ${tokenizer.vocabSize} ids but the model's vocabulary holds ` +
        `${config.vocabSize}`,
    );
  }
  return tokenizer;
}

/**
 * A shipped model by name (its files checked against the manifest first), or a user checkpoint by
 * folder path: an HF folder with config.json and model.safetensors (or shards), and optionally
 * tokenizer.json (or vocab.json + merges.txt); without one the byte tokenizer is used.
 * @example const { config, values, tokenizer } = await loadBaseModel("gpt2-tiny"); createWeights(gpu, config, values);
 */
export async function loadBaseModel(nameOrPath: string, options: { root?: string } = {}): Promise<BaseModel> {
  if ((BASE_MODEL_NAMES as readonly string[]).includes(nameOrPath)) {
    const root = options.root ?? BASE_MODELS_DIR;
    const manifest = await readBaseModelManifest(root);
    const entry = manifest.models[nameOrPath as BaseModelName];
    if (!entry) {
      throw new Error(
        `${join(root, "manifest.json")}: has no entry for "${nameOrPath}"; rebuild with: ${manifest.command}`,
      );
    }
    await verifyBaseModelFiles(entry, root);
    const folder = join(root, nameOrPath);
    const { config, values } = await loadHfCheckpoint(folder);
    return { name: nameOrPath, folder, config, values, tokenizer: byteTokenizer(), manifest: entry };
  }
  const stat = await Deno.stat(nameOrPath).catch(() => null);
  if (!stat) {
    throw new Error(
      `${nameOrPath}: no such base model (shipped: ${BASE_MODEL_NAMES.join(", ")}) or checkpoint folder`,
    );
  }
  if (!stat.isDirectory) throw new Error(`${nameOrPath}: a checkpoint must be a folder with config.json`);
  if (!(await isFile(join(nameOrPath, "config.json")))) {
    throw new Error(`${nameOrPath}: not a Hugging Face checkpoint folder (it has no config.json)`);
  }
  const { config, values } = await loadHfCheckpoint(nameOrPath);
  const tokenizer = await folderTokenizer(nameOrPath, config);
  return { name: nameOrPath, folder: nameOrPath, config, values, tokenizer, manifest: null };
}
