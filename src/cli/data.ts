/**
 * `longtune data ruler|babilong|corpus`: writes datasets to files, deterministically from `--seed`,
 * with lengths counted in the tokenizer given by `--tokenizer`, a manifest of every file's sha256, a
 * progress bar, and resume after Ctrl-C (see `data_run.ts`).
 */

import { type Command, Option } from "commander";
import { basename, join } from "node:path";
import { BABI_TASK_NAMES, type BabiTaskName } from "../data/babi.ts";
import { CORPUS_GENERATOR_VERSION, corpusText, generateCorpus } from "../data/corpus.ts";
import { sha256 } from "../data/hash.ts";
import { writePg19, writeWikiText } from "../data/layouts.ts";
import {
  loadHotpotQa,
  loadRulerTemplates,
  loadSquadQa,
  RULER_TASK_NAMES,
  RULER_TASKS,
  rulerMinimumLength,
  type RulerTaskName,
} from "../data/ruler.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { loadTokenizer } from "../data/tokenizers.ts";
import {
  babilongMinimumTokens,
  type CorpusLayout,
  corpusSplitWords,
  type RulerTextSources,
} from "./data_content.ts";
import {
  type DatasetManifest,
  type DatasetSettings,
  emptyManifest,
  type PlannedFile,
  readManifest,
  runDataset,
  settingsDifferences,
  startGenerator,
  toManifestPath,
  upToDate,
  watchInterrupt,
  writeManifest,
} from "./data_run.ts";
import { InterruptedError, UsageError } from "./errors.ts";
import { parseLengths, parseNames, parseWholeNumber } from "./parse.ts";

/** Options every `data` subcommand shares, plus the global `--quiet`. */
interface CommonOptions {
  out: string;
  seed: number;
  overwrite?: boolean;
  quiet?: boolean;
}

const seedOption = () =>
  new Option("--seed <n>", "seed of every random draw; the same seed gives the same bytes")
    .argParser((text) => parseWholeNumber(text, 0))
    .default(42);
const samplesOption = () =>
  new Option("--samples <n>", "samples per task and length")
    .argParser((text) => parseWholeNumber(text, 1))
    .default(100);
const tokenizerOption = () =>
  new Option(
    "--tokenizer <spec>",
    'tokenizer lengths are counted in: "byte", a tokenizer.json, or a folder with tokenizer.json or ' +
      "vocab.json + merges.txt",
  ).default("byte");
const outOption = () =>
  new Option("--out <dir>", "folder to write (created if missing)").makeOptionMandatory();
const overwriteOption = () =>
  new Option("--overwrite", "replace a dataset made with other settings, or write into a non-empty folder");

/** Registers `data` and its subcommands on the program. */
export function registerData(program: Command): void {
  const data = program
    .command("data")
    .description("write RULER, BABILong or corpus datasets to files, deterministically from --seed")
    .addHelpText(
      "after",
      `
Each dataset folder gets a manifest.json with every file's sha256, the seed, the tokenizer's name and
hash, and the generator settings. Ctrl-C keeps finished files; rerunning the same command skips them.

Examples:
  longtune data ruler --tasks niah_single_1,vt --lengths 4096,8192 --samples 20 --out data/ruler
  longtune data babilong --tasks qa1,qa2 --lengths 0,1k,4k --samples 20 --out data/babilong
  longtune data corpus --layout wikitext --words 200000 --out data/wikitext`,
    );
  registerRuler(data);
  registerBabilong(data);
  registerCorpus(data);
}

// ---------------------------------------------------------------------------------------------
// RULER

interface RulerOptions extends CommonOptions {
  tasks: RulerTaskName[];
  lengths: number[];
  samples: number;
  tokenizer: string;
  essay?: string;
  essayWords: number;
  templates?: string;
  squad?: string;
  hotpotqa?: string;
}

function registerRuler(data: Command): void {
  data
    .command("ruler")
    .description(
      "write RULER validation.jsonl files: DIR/<length>/<task>/validation.jsonl and DIR/manifest.json",
    )
    .addOption(
      new Option("--tasks <names>", `comma-separated RULER tasks, or "all" (${RULER_TASK_NAMES.join(", ")})`)
        .argParser((text) => parseNames(text, RULER_TASK_NAMES, "RULER task"))
        .default([...RULER_TASK_NAMES], "all"),
    )
    .addOption(
      new Option(
        "--lengths <list>",
        "comma-separated total lengths in tokens (template, answer prefix and generation budget included); " +
          "4k means 4096",
      ).argParser((text) => parseLengths(text, 1024, 1)).makeOptionMandatory(),
    )
    .addOption(samplesOption())
    .addOption(seedOption())
    .addOption(tokenizerOption())
    .addOption(
      new Option("--essay <file>", "text file for the essay haystacks (default: the generated corpus)"),
    )
    .addOption(
      new Option("--essay-words <n>", "words of generated corpus used as the essay when --essay is not given")
        .argParser((text) => parseWholeNumber(text, 1000))
        .default(200_000),
    )
    .addOption(
      new Option("--templates <file>", "JSON file of template wording per family (see loadRulerTemplates)"),
    )
    .addOption(
      new Option(
        "--squad <file>",
        "SQuAD v2.0 dev JSON for qa_1 (default: synthetic questions from the essay)",
      ),
    )
    .addOption(
      new Option(
        "--hotpotqa <file>",
        "HotpotQA dev distractor JSON for qa_2 (default: synthetic two-hop questions)",
      ),
    )
    .addOption(outOption())
    .addOption(overwriteOption())
    .addHelpText(
      "after",
      `
Example:
  longtune data ruler --tasks niah_single_1,vt --lengths 4096,8192 --samples 20 --out data/ruler`,
    )
    .action(async (_options: unknown, command: Command) => {
      await dataRuler(command.optsWithGlobals<RulerOptions>());
    });
}

/** The tokenizer `--tokenizer` names; a failure names the flag. */
async function tokenizerFromFlag(spec: string): Promise<Tokenizer> {
  try {
    return await loadTokenizer(spec);
  } catch (error) {
    throw new Error(`--tokenizer: ${(error as Error).message}`);
  }
}

async function fileSource(path: string): Promise<{ source: "file"; name: string; sha256: string }> {
  return { source: "file", name: basename(path), sha256: sha256(await Deno.readFile(path)) };
}

async function readEssay(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new UsageError(`--essay ${path}: cannot read: ${(error as Error).message}`);
  }
}

async function dataRuler(options: RulerOptions): Promise<void> {
  const tokenizer = await tokenizerFromFlag(options.tokenizer);
  const essay = options.essay !== undefined
    ? await readEssay(options.essay)
    : corpusText(generateCorpus({ seed: options.seed, words: options.essayWords }));
  if (essay.trim() === "") throw new UsageError(`--essay ${options.essay}: the file is empty`);
  const sources: RulerTextSources = { essay };
  const generator: Record<string, unknown> = {
    module: "src/data/ruler.ts",
    haystack: options.essay !== undefined ? await fileSource(options.essay) : {
      source: "generated corpus",
      module: "src/data/corpus.ts",
      corpusGeneratorVersion: CORPUS_GENERATOR_VERSION,
      words: options.essayWords,
      sha256: sha256(essay),
    },
    templates: { source: "project" },
    qa_1: { source: "synthetic" },
    qa_2: { source: "synthetic" },
  };
  if (options.templates !== undefined) {
    sources.templates = await loadRulerTemplates(options.templates);
    generator.templates = await fileSource(options.templates);
  }
  if (options.squad !== undefined && options.tasks.includes("qa_1")) {
    sources.qa1 = await loadSquadQa(options.squad);
    generator.qa_1 = await fileSource(options.squad);
  }
  if (options.hotpotqa !== undefined && options.tasks.includes("qa_2")) {
    sources.qa2 = await loadHotpotQa(options.hotpotqa);
    generator.qa_2 = await fileSource(options.hotpotqa);
  }
  // Check every task against the shortest length before writing anything.
  const shortest = options.lengths[0];
  for (const task of options.tasks) {
    const minimum = rulerMinimumLength({ task, seed: options.seed, tokenizer, sources });
    if (shortest < minimum) {
      throw new UsageError(
        `--lengths ${shortest}: below RULER ${task}'s minimum of ${minimum} tokens with tokenizer ` +
          `${tokenizer.name} (template, answer prefix and ${
            RULER_TASKS[task].tokensToGenerate
          } generated tokens)`,
      );
    }
  }
  const files: PlannedFile[] = [];
  for (const length of options.lengths) {
    for (const task of options.tasks) {
      files.push({
        path: `${length}/${task}/validation.jsonl`,
        about: { task, length, samples: options.samples },
        request: { job: "ruler", task, length, samples: options.samples, seed: options.seed },
        weightPerSample: length,
        samples: options.samples,
      });
    }
  }
  await runAndSummarise(
    options,
    {
      kind: "ruler",
      seed: options.seed,
      tokenizer: { name: tokenizer.name, hash: tokenizer.hash },
      generator: generator as DatasetSettings["generator"],
    },
    files,
    { tokenizer: options.tokenizer, ruler: sources },
  );
}

async function runAndSummarise(
  options: CommonOptions,
  settings: DatasetSettings,
  files: PlannedFile[],
  init: { tokenizer: string; ruler?: RulerTextSources },
): Promise<void> {
  const summary = await runDataset({
    folder: options.out,
    settings,
    files,
    init,
    overwrite: options.overwrite === true,
    quiet: options.quiet === true,
  });
  if (!options.quiet) {
    console.log(
      `${options.out}: ${summary.written.length} written, ${summary.skipped.length} skipped (up to date); ` +
        `manifest ${summary.manifestPath}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// BABILong

interface BabilongOptions extends CommonOptions {
  tasks: BabiTaskName[];
  lengths: number[];
  samples: number;
  tokenizer: string;
}

/**
 * BABILong's file name for a length: `0k`, `1k`, `4k`, `1M`, … (what `loadBabilong` reads). A multiple
 * of 1000 or of 1024 is named by its thousands, so 4000 and 4096 are both "4k"; the exact target is in
 * each record and in the manifest.
 */
export function babilongLengthName(length: number): string {
  for (const [unit, suffix] of [[1_000_000, "M"], [1_048_576, "M"], [1000, "k"], [1024, "k"]] as const) {
    if (length >= unit && length % unit === 0) return `${length / unit}${suffix}`;
  }
  if (length === 0) return "0k";
  throw new UsageError(
    `--lengths ${length}: BABILong files are named by thousands of tokens (0k, 1k, 4k, …); ` +
      `give a multiple of 1000 or 1024, e.g. ${Math.max(1, Math.round(length / 1000))}k`,
  );
}

function registerBabilong(data: Command): void {
  data
    .command("babilong")
    .description(
      "write BABILong files: DIR/<task>/<length>.json (as loadBabilong reads) and DIR/manifest.json",
    )
    .addOption(
      new Option("--tasks <names>", 'comma-separated bAbI tasks qa1…qa20, or "all"')
        .argParser((text) => parseNames(text, BABI_TASK_NAMES, "bAbI task"))
        .default(["qa1", "qa2", "qa3", "qa4", "qa5"], "qa1,qa2,qa3,qa4,qa5"),
    )
    .addOption(
      new Option(
        "--lengths <list>",
        "comma-separated whole-input lengths in tokens; 0 means the facts alone; 4k means 4000 " +
          "(BABILong's names); files are named 0k, 1k, 4k, …",
      ).argParser((text) => parseLengths(text, 1000, 0)).makeOptionMandatory(),
    )
    .addOption(samplesOption())
    .addOption(seedOption())
    .addOption(tokenizerOption())
    .addOption(outOption())
    .addOption(overwriteOption())
    .addHelpText(
      "after",
      `
Example:
  longtune data babilong --tasks qa1,qa2 --lengths 0,1024,4096 --samples 20 --out data/babilong`,
    )
    .action(async (_options: unknown, command: Command) => {
      await dataBabilong(command.optsWithGlobals<BabilongOptions>());
    });
}

async function dataBabilong(options: BabilongOptions): Promise<void> {
  const names = options.lengths.map(babilongLengthName);
  const clash = names.findIndex((name, i) => names.indexOf(name) !== i);
  if (clash >= 0) {
    const first = options.lengths[names.indexOf(names[clash])];
    throw new UsageError(
      `--lengths: ${first} and ${options.lengths[clash]} would both be written as ${names[clash]}.json`,
    );
  }
  const tokenizer = await tokenizerFromFlag(options.tokenizer);
  const shortest = options.lengths.find((length) => length > 0);
  if (shortest !== undefined) {
    for (const task of options.tasks) {
      for (let index = 0; index < options.samples; index++) {
        const minimum = babilongMinimumTokens(task, options.seed, index, tokenizer);
        if (shortest < minimum) {
          throw new UsageError(
            `--lengths ${shortest}: below the ${minimum} tokens BABILong ${task} sample ${index} needs ` +
              `(facts, prompt and question) with tokenizer ${tokenizer.name}; use 0 for facts alone or ` +
              `a length ≥ ${minimum}`,
          );
        }
      }
    }
  }
  const files: PlannedFile[] = [];
  for (const task of options.tasks) {
    options.lengths.forEach((length, i) => {
      files.push({
        path: `${task}/${names[i]}.json`,
        about: { task, length, samples: options.samples },
        request: { job: "babilong", task, length, samples: options.samples, seed: options.seed },
        weightPerSample: Math.max(length, 256),
        samples: options.samples,
      });
    });
  }
  await runAndSummarise(
    options,
    {
      kind: "babilong",
      seed: options.seed,
      tokenizer: { name: tokenizer.name, hash: tokenizer.hash },
      generator: {
        module: "src/data/babilong.ts",
        facts: "src/data/babi.ts",
        haystack: {
          source: "generated haystack sentences",
          module: "src/data/corpus.ts",
          corpusGeneratorVersion: CORPUS_GENERATOR_VERSION,
        },
        prompt: { instruction: true, examples: true, postPrompt: true },
      },
    },
    files,
    { tokenizer: options.tokenizer },
  );
}

// ---------------------------------------------------------------------------------------------
// Corpus

interface CorpusCommandOptions extends CommonOptions {
  layout: CorpusLayout;
  words: number;
  minCount: number;
}

function registerCorpus(data: Command): void {
  data
    .command("corpus")
    .description("write a generated corpus in the WikiText-2 or PG-19 folder layout, plus DIR/manifest.json")
    .addOption(
      new Option(
        "--layout <layout>",
        "wikitext: wiki.{train,valid,test}.{raw,tokens}; pg19: split folders + " +
          "metadata.csv",
      )
        .choices(["wikitext", "pg19"])
        .makeOptionMandatory(),
    )
    .addOption(seedOption())
    .addOption(
      new Option("--words <n>", "words in all; a tenth each go to validation and test")
        .argParser((text) => parseWholeNumber(text, 30))
        .default(100_000),
    )
    .addOption(
      new Option("--min-count <n>", "wikitext: train-split count below which a token becomes <unk>")
        .argParser((text) => parseWholeNumber(text, 1))
        .default(3),
    )
    .addOption(outOption())
    .addOption(overwriteOption())
    .addHelpText(
      "after",
      `
Example:
  longtune data corpus --layout pg19 --seed 7 --words 500000 --out data/pg19`,
    )
    .action(async (_options: unknown, command: Command) => {
      await dataCorpus(command.optsWithGlobals<CorpusCommandOptions>());
    });
}

async function listFiles(folder: string, root = folder): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(folder)) {
    const path = join(folder, entry.name);
    if (entry.isDirectory) files.push(...(await listFiles(path, root)));
    else if (entry.isFile) files.push(toManifestPath(root, path));
  }
  return files.sort();
}

async function corpusUpToDate(folder: string, manifest: DatasetManifest): Promise<boolean> {
  for (const path of Object.keys(manifest.files)) {
    if (!(await upToDate(folder, manifest, path, manifest.files[path].about))) return false;
  }
  return Object.keys(manifest.files).length > 0;
}

async function dataCorpus(options: CorpusCommandOptions): Promise<void> {
  const { out } = options;
  const settings: DatasetSettings = {
    kind: "corpus",
    seed: options.seed,
    tokenizer: null,
    generator: {
      module: "src/data/corpus.ts",
      corpusGeneratorVersion: CORPUS_GENERATOR_VERSION,
      layout: options.layout,
      words: options.words,
      splitWords: corpusSplitWords(options.words),
      ...(options.layout === "wikitext" ? { minCount: options.minCount } : {}),
    },
  };
  const fresh = emptyManifest(settings);
  const old = await readManifest(out).catch(() => undefined);
  if (old?.settingsHash === fresh.settingsHash && await corpusUpToDate(out, old)) {
    if (!options.quiet) console.log(`skipped ${out} (up to date); manifest ${join(out, "manifest.json")}`);
    return;
  }
  const exists = await Deno.stat(out).then(() => true, () => false);
  if (exists && !options.overwrite) {
    const differences = old === undefined ? [] : settingsDifferences(old, settings);
    const detail = old === undefined
      ? "already exists and has no manifest.json"
      : differences.length > 0
      ? `holds a ${old.kind} dataset made with other settings (${differences.join("; ")})`
      : "holds this corpus, but its files no longer match manifest.json";
    throw new UsageError(`--out ${out} ${detail}; choose another --out or pass --overwrite to replace it`);
  }

  const generator = startGenerator({ tokenizer: "byte" });
  const watch = watchInterrupt(() => generator.stop("interrupted; nothing was written"));
  try {
    const result = await generator.run({
      job: "corpus",
      layout: options.layout,
      seed: options.seed,
      words: options.words,
    }, () => {});
    const corpus = result.corpus!;
    // The folder is written into a temporary sibling and renamed, so an interrupt here changes nothing.
    if (corpus.layout === "wikitext") {
      await writeWikiText(out, corpus.splits, { overwrite: true, minCount: options.minCount });
    } else await writePg19(out, corpus.splits, { overwrite: true });
    for (const path of await listFiles(out)) {
      const bytes = await Deno.readFile(join(out, path));
      fresh.files[path] = { about: {}, bytes: bytes.length, sha256: sha256(bytes) };
    }
    await writeManifest(out, fresh);
  } finally {
    watch.dispose();
    generator.stop("finished");
  }
  if (watch.requested) throw new InterruptedError(`interrupted after ${out} was complete`);
  if (!options.quiet) {
    console.log(
      `wrote ${out} (${options.layout}, ${options.words} words); manifest ${join(out, "manifest.json")}`,
    );
  }
}
