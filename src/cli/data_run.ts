/**
 * How `longtune data` writes a dataset so that it can be stopped and resumed: a manifest next to the
 * files (`manifest.json`: seed, tokenizer, generator settings, and each file's size and sha256),
 * rewritten after every finished file; atomic writes (temporary sibling, then rename); generation in a
 * worker that Ctrl-C terminates at once; and on a rerun, files whose manifest entry and bytes still
 * match are skipped.
 */

import cliProgress from "cli-progress";
import process from "node:process";
import { dirname, join, relative } from "node:path";
import { z } from "zod";
import { canonicalJson, hashJson, sha256 } from "../data/hash.ts";
import { writeFileAtomic } from "../data/layouts.ts";
import { readJsonFile, validateWith } from "../harness/report_schema.ts";
import type { CorpusSplits, GeneratorRequest, RulerTextSources } from "./data_content.ts";
import { InterruptedError, UsageError } from "./errors.ts";

/** The worker's first message: which tokenizer to load and the RULER text sources. */
export interface WorkerInit {
  init: { tokenizer: string; ruler?: RulerTextSources };
}

/** What the worker sends back. */
export type WorkerReply =
  | { type: "progress"; samples: number }
  | { type: "result"; text?: string; corpus?: CorpusSplits }
  | { type: "error"; name: string; message: string; stack: string };

/** A failure inside the worker that is not about the user's input; keeps the worker's stack. */
class WorkerCrash extends Error {
  constructor(name: string, message: string, stack: string) {
    super(message);
    this.name = name;
    this.stack = stack;
  }
}

function rebuildError(reply: Extract<WorkerReply, { type: "error" }>): Error {
  if (reply.name === "RangeError") return new RangeError(reply.message);
  // Data-file and plain errors name the file in their message; the user can act on them as they are.
  if (["Error", "DataFileError", "NotFound", "PermissionDenied"].includes(reply.name)) {
    return new Error(reply.message);
  }
  return new WorkerCrash(reply.name, reply.message, reply.stack);
}

/** A running generator worker. */
export interface Generator {
  /** Runs one request; `onProgress` gets the samples finished since the last call. */
  run(
    request: GeneratorRequest,
    onProgress: (samples: number) => void,
  ): Promise<WorkerReply & { type: "result" }>;
  /** Terminates the worker; a pending `run` rejects with `InterruptedError`. */
  stop(reason?: string): void;
}

/** Starts the generator worker (`data_worker.ts`) with the tokenizer and sources of the run. */
export function startGenerator(init: WorkerInit["init"]): Generator {
  const worker = new Worker(new URL("./data_worker.ts", import.meta.url).href, { type: "module" });
  worker.postMessage({ init } satisfies WorkerInit);
  let pending: { resolve: (r: WorkerReply & { type: "result" }) => void; reject: (e: Error) => void } | null =
    null;
  let onProgress: (samples: number) => void = () => {};
  let stopped = false;
  worker.onmessage = (event: MessageEvent<WorkerReply>) => {
    const reply = event.data;
    if (reply.type === "progress") onProgress(reply.samples);
    else if (reply.type === "result") pending?.resolve(reply);
    else pending?.reject(rebuildError(reply));
    if (reply.type !== "progress") pending = null;
  };
  worker.onerror = (event: ErrorEvent) => {
    event.preventDefault();
    pending?.reject(new WorkerCrash("WorkerError", event.message, `${event.filename}:${event.lineno}`));
    pending = null;
  };
  return {
    run(request, progress) {
      if (stopped) return Promise.reject(new InterruptedError("the generator was stopped"));
      onProgress = progress;
      return new Promise((resolve, reject) => {
        pending = { resolve, reject };
        worker.postMessage(request);
      });
    },
    stop(reason = "interrupted") {
      if (stopped) return;
      stopped = true;
      worker.terminate();
      pending?.reject(new InterruptedError(reason));
      pending = null;
    },
  };
}

/** A Ctrl-C watcher: calls `onInterrupt` once and remembers that it happened. */
export interface InterruptWatch {
  readonly requested: boolean;
  dispose(): void;
}

/**
 * Catches SIGINT for the duration of a run, instead of letting it kill the process mid-write.
 * @example const watch = watchInterrupt(() => generator.stop()); try { … } finally { watch.dispose(); }
 */
export function watchInterrupt(onInterrupt: () => void): InterruptWatch {
  let requested = false;
  const listener = () => {
    requested = true;
    onInterrupt();
  };
  Deno.addSignalListener("SIGINT", listener);
  return {
    get requested() {
      return requested;
    },
    dispose: () => Deno.removeSignalListener("SIGINT", listener),
  };
}

/** How a run reports what it does. */
export interface Reporter {
  /** One line for a file written or skipped (hidden under --quiet and while a progress bar is drawn). */
  line(text: string): void;
  /** Starts the bar over `total` work units. */
  start(total: number, files: number): void;
  advance(units: number): void;
  fileDone(): void;
  stop(): void;
}

/**
 * Prints per-file lines to stdout, or, when stderr is a terminal, a progress bar with an ETA there
 * (cli-progress). `quiet` silences both.
 */
export function makeReporter(quiet: boolean): Reporter {
  const useBar = !quiet && Deno.stderr.isTerminal();
  let bar: cliProgress.SingleBar | null = null;
  let filesDone = 0;
  let filesTotal = 0;
  return {
    line(text) {
      if (!quiet && bar === null) console.log(text);
    },
    start(total, files) {
      filesTotal = files;
      if (!useBar) return;
      bar = new cliProgress.SingleBar({
        stream: process.stderr,
        format: "{bar} {percentage}% | files {filesDone}/{filesTotal} | {duration_formatted} elapsed | " +
          "ETA {eta_formatted}",
        hideCursor: true,
        etaBuffer: 50,
      }, cliProgress.Presets.shades_classic);
      bar.start(Math.max(1, total), 0, { filesDone, filesTotal });
    },
    advance(units) {
      bar?.increment(units, { filesDone, filesTotal });
    },
    fileDone() {
      filesDone++;
      bar?.update({ filesDone, filesTotal });
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The manifest.

const jsonValue: z.ZodType<unknown> = z.json();

const fileEntrySchema = z.strictObject({
  /** What the file holds (task, length, samples; or the split), compared on resume. */
  about: z.record(z.string(), jsonValue),
  bytes: z.number().int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});

/**
 * Schema of the `manifest.json` that `longtune data` writes next to a dataset.
 * @example datasetManifestSchema.parse(JSON.parse(await Deno.readTextFile("data/ruler/manifest.json")));
 */
export const datasetManifestSchema = z.strictObject({
  format: z.literal("longtune-dataset"),
  manifestVersion: z.literal(1),
  kind: z.enum(["ruler", "babilong", "corpus"]),
  seed: z.number().int().min(0),
  tokenizer: z.strictObject({ name: z.string(), hash: z.string() }).nullable(),
  /** Everything else the bytes depend on: generator module, haystack source and its hash, options. */
  generator: z.record(z.string(), jsonValue),
  /** sha256 of the canonical JSON of kind, seed, tokenizer and generator. */
  settingsHash: z.string().regex(/^[0-9a-f]{64}$/),
  /** Paths relative to the manifest's folder, "/"-separated. */
  files: z.record(z.string(), fileEntrySchema),
});

/** A parsed dataset manifest. */
export type DatasetManifest = z.infer<typeof datasetManifestSchema>;

/** The settings part of a manifest: what every file of the dataset shares. */
export type DatasetSettings = Pick<DatasetManifest, "kind" | "seed" | "tokenizer" | "generator">;

/** The manifest of `settings` with no files yet. */
export function emptyManifest(settings: DatasetSettings): DatasetManifest {
  return {
    format: "longtune-dataset",
    manifestVersion: 1,
    ...settings,
    settingsHash: hashJson(settings),
    files: {},
  };
}

/**
 * Reads `DIR/manifest.json`, or undefined when there is none; a malformed one is an error naming it.
 * @example const manifest = await readManifest("data/ruler"); manifest?.files["4096/vt/validation.jsonl"].sha256;
 */
export async function readManifest(folder: string): Promise<DatasetManifest | undefined> {
  const path = join(folder, "manifest.json");
  const exists = await Deno.stat(path).then(() => true, () => false);
  if (!exists) return undefined;
  return validateWith(datasetManifestSchema, await readJsonFile(path), path, "longtune dataset manifest");
}

/** Writes the manifest atomically with its files sorted by path, so equal datasets give equal bytes. */
export async function writeManifest(folder: string, manifest: DatasetManifest): Promise<void> {
  const files = Object.fromEntries(Object.entries(manifest.files).sort(([a], [b]) => (a < b ? -1 : 1)));
  await writeFileAtomic(
    join(folder, "manifest.json"),
    JSON.stringify({ ...manifest, files }, null, 2) + "\n",
  );
}

// Hashes are shown by their first 12 hex digits in messages, enough to tell two apart.
function shortJson(value: unknown): string {
  return JSON.stringify(value ?? null).replace(/\b([0-9a-f]{12})[0-9a-f]{52}\b/g, "$1…");
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The settings that differ between an existing manifest and this run, as "field old there, new now"
 * phrases for the error message; nested objects are compared field by field.
 */
export function settingsDifferences(old: DatasetSettings, now: DatasetSettings): string[] {
  const differences: string[] = [];
  const compare = (field: string, a: unknown, b: unknown) => {
    if (canonicalJson(a ?? null) === canonicalJson(b ?? null)) return;
    if (isRecord(a) && isRecord(b)) {
      for (const key of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
        compare(`${field}.${key}`, a[key], b[key]);
      }
    } else differences.push(`${field} ${shortJson(a)} there, ${shortJson(b)} now`);
  };
  compare("kind", old.kind, now.kind);
  compare("seed", old.seed, now.seed);
  compare("tokenizer", old.tokenizer, now.tokenizer);
  compare("generator", old.generator, now.generator);
  return differences;
}

/** sha256 of a file on disk, or undefined if it cannot be read. */
async function fileHash(path: string): Promise<string | undefined> {
  try {
    return sha256(await Deno.readFile(path));
  } catch {
    return undefined;
  }
}

/** True when the file at `relativePath` is what the manifest entry says, for the same `about`. */
export async function upToDate(
  folder: string,
  manifest: DatasetManifest,
  relativePath: string,
  about: Record<string, unknown>,
): Promise<boolean> {
  const entry = manifest.files[relativePath];
  if (entry === undefined || canonicalJson(entry.about) !== canonicalJson(about)) return false;
  return (await fileHash(join(folder, relativePath))) === entry.sha256;
}

// writeFileAtomic's temporaries are `.<name>.tmp-<random>`; a process killed with SIGKILL can leave one.
const TEMPORARY = /^\..+\.tmp-[^/]*$/;

/** Removes temporaries left by a killed run from the given folders (not recursively). */
export async function removeStaleTemporaries(folders: Iterable<string>): Promise<void> {
  for (const folder of new Set(folders)) {
    try {
      for await (const entry of Deno.readDir(folder)) {
        if (entry.isFile && TEMPORARY.test(entry.name)) await Deno.remove(join(folder, entry.name));
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
}

async function isEmptyFolder(folder: string): Promise<boolean> {
  try {
    for await (const _ of Deno.readDir(folder)) return false;
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return true;
    throw error;
  }
}

/**
 * The manifest a run continues from: the existing one when its settings match, a fresh one otherwise.
 * Refuses (unless `overwrite`) a folder that holds something else: other settings, or files and no
 * manifest. With `overwrite`, files the old manifest lists are removed.
 */
export async function openDataset(
  folder: string,
  settings: DatasetSettings,
  overwrite: boolean,
): Promise<DatasetManifest> {
  const fresh = emptyManifest(settings);
  let old: DatasetManifest | undefined;
  try {
    old = await readManifest(folder);
  } catch (error) {
    if (!overwrite) throw new Error(`${(error as Error).message}\npass --overwrite to replace ${folder}`);
  }
  if (old !== undefined && old.settingsHash === fresh.settingsHash) return old;
  if (!overwrite) {
    if (old !== undefined) {
      throw new UsageError(
        `--out ${folder} holds a ${old.kind} dataset made with other settings (${
          settingsDifferences(old, settings).join("; ")
        }); choose another --out or pass --overwrite to replace it`,
      );
    }
    if (!(await isEmptyFolder(folder))) {
      throw new UsageError(
        `--out ${folder} is not empty and has no manifest.json; choose a new or empty folder, or pass ` +
          `--overwrite to write into it`,
      );
    }
  }
  for (const path of Object.keys(old?.files ?? {})) {
    await Deno.remove(join(folder, path)).catch(() => {});
  }
  return fresh;
}

/** One file of a dataset plan. */
export interface PlannedFile {
  /** Path relative to the dataset folder, "/"-separated. */
  path: string;
  about: Record<string, string | number>;
  request: GeneratorRequest;
  /** Relative cost, for the progress bar's ETA (samples × tokens). */
  weightPerSample: number;
  samples: number;
}

/** What a finished run did. */
export interface DatasetSummary {
  written: string[];
  skipped: string[];
  manifestPath: string;
}

/**
 * Writes the planned files that are not already up to date, each atomically and each followed by the
 * manifest, in plan order. Ctrl-C stops at once: the worker is terminated, the file being generated is
 * dropped, and `InterruptedError` is thrown (exit 130); a rerun skips what was finished.
 */
export async function runDataset(options: {
  folder: string;
  settings: DatasetSettings;
  files: readonly PlannedFile[];
  init: WorkerInit["init"];
  overwrite: boolean;
  quiet: boolean;
}): Promise<DatasetSummary> {
  const { folder, files } = options;
  const manifest = await openDataset(folder, options.settings, options.overwrite);
  await removeStaleTemporaries([folder, ...files.map((file) => dirname(join(folder, file.path)))]);
  await Deno.mkdir(folder, { recursive: true });
  await writeManifest(folder, manifest);
  const reporter = makeReporter(options.quiet);
  const summary: DatasetSummary = { written: [], skipped: [], manifestPath: join(folder, "manifest.json") };
  const pending: PlannedFile[] = [];
  for (const file of files) {
    if (await upToDate(folder, manifest, file.path, file.about)) {
      summary.skipped.push(file.path);
      reporter.line(`skipped ${file.path} (up to date)`);
    } else pending.push(file);
  }
  if (pending.length === 0) return summary;

  const generator = startGenerator(options.init);
  const watch = watchInterrupt(() => generator.stop("interrupted"));
  reporter.start(pending.reduce((sum, f) => sum + f.samples * f.weightPerSample, 0), pending.length);
  let current: PlannedFile | undefined;
  try {
    for (const file of pending) {
      if (watch.requested) throw new InterruptedError("interrupted");
      current = file;
      const result = await generator.run(
        file.request,
        (samples) => reporter.advance(samples * file.weightPerSample),
      );
      const text = result.text!;
      const bytes = new TextEncoder().encode(text);
      const path = join(folder, file.path);
      await writeFileAtomic(path, bytes);
      manifest.files[file.path] = { about: file.about, bytes: bytes.length, sha256: sha256(bytes) };
      await writeManifest(folder, manifest);
      summary.written.push(file.path);
      reporter.fileDone();
      reporter.line(`wrote ${file.path} (${file.samples} samples, ${bytes.length} bytes)`);
    }
  } catch (error) {
    if (error instanceof InterruptedError) {
      throw new InterruptedError(
        `interrupted; ${summary.written.length + summary.skipped.length} of ${files.length} files are ` +
          `complete in ${folder} (rerun the same command to resume)`,
      );
    }
    // Generator errors about the input (a length a sample cannot fit) get the file they stopped.
    if (error instanceof RangeError && current !== undefined) {
      throw new RangeError(`${join(folder, current.path)}: ${error.message}`);
    }
    throw error;
  } finally {
    reporter.stop();
    watch.dispose();
    generator.stop("finished");
  }
  return summary;
}

/** A path relative to `folder`, "/"-separated, for manifests. */
export function toManifestPath(folder: string, path: string): string {
  return relative(folder, path).replaceAll("\\", "/");
}
