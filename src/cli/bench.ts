/**
 * `longtune bench`: runs a benchmark suite (default `quick`) through the runner (src/harness/runner.ts)
 * and writes report.json, report.md and report.html. Finished cells go to a content-addressed cache at
 * once, so Ctrl-C (exit 130) loses only the cell in progress and the same command resumes; `--shard
 * i/n` runs one slice of the grid for a cluster (join the slices with `longtune merge`).
 */

import { type Command, InvalidArgumentError, Option } from "commander";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseShard, type Shard } from "../harness/cells.ts";
import { runSuite, type RunSummary } from "../harness/runner.ts";
import { loadSuite, resolveSuite } from "../harness/suite.ts";
import { watchInterrupt } from "./data_run.ts";
import { InterruptedError, UsageError } from "./errors.ts";
import { parseList } from "./parse.ts";

/** The folder of the shipped suites. */
export const SUITES_DIR: string = fileURLToPath(new URL("../../benchmarks/suites", import.meta.url));

/** Names of the shipped suites (their file names without `.json`), sorted. */
export async function shippedSuites(): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(SUITES_DIR)) {
      if (entry.isFile && entry.name.endsWith(".json")) names.push(entry.name.slice(0, -5));
    }
  } catch {
    // No suites folder: only paths work.
  }
  return names.sort();
}

/** The file `--suite` names: a path to a file, or the name of a shipped suite. */
export async function suitePath(spec: string): Promise<string> {
  const isFile = (path: string) => Deno.stat(path).then((s) => s.isFile, () => false);
  if (await isFile(spec)) return spec;
  if (!spec.includes("/") && !spec.endsWith(".json")) {
    const shipped = join(SUITES_DIR, `${spec}.json`);
    if (await isFile(shipped)) return shipped;
  }
  throw new UsageError(
    `--suite ${spec}: no such file or shipped suite (shipped: ${(await shippedSuites()).join(", ")})`,
  );
}

/** `--shard` values as commander parses them. */
export function shardOption(text: string): Shard {
  try {
    return parseShard(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message.replace(/^--shard "[^"]*": /, ""));
  }
}

/** Runs the suite with Ctrl-C turned into an orderly stop (InterruptedError, exit 130). */
export async function runWithInterrupt(
  run: (signal: AbortSignal) => Promise<RunSummary>,
  cache: string,
): Promise<RunSummary> {
  const controller = new AbortController();
  const watch = watchInterrupt(() =>
    controller.abort(
      new InterruptedError(
        `interrupted; finished cells are cached in ${cache} (rerun the same command to resume)`,
      ),
    )
  );
  try {
    return await run(controller.signal);
  } finally {
    watch.dispose();
  }
}

/** Prints the run's summary line and sets exit status 1 when cells failed. */
export function reportSummary(summary: RunSummary, quiet: boolean): void {
  const line = `wrote ${summary.reports.join(", ")} (${summary.cells} cells: ${summary.computed} computed, ` +
    `${summary.cached} cached, ${summary.failed} failed) in ${summary.seconds.toFixed(1)} s`;
  if (!quiet) console.log(line);
  if (summary.failed > 0) {
    console.error(`longtune: ${summary.failed} cell(s) failed; the report lists their errors`);
    Deno.exitCode = 1;
  }
}

interface BenchOptions {
  suite: string;
  out?: string;
  shard?: Shard;
  cache: string;
  model?: string[];
  methods?: string[];
  quiet?: boolean;
}

/** Registers `bench` on the program. */
export function registerBench(program: Command): void {
  program
    .command("bench")
    .description("run a benchmark suite (train each method once, evaluate every cell) and write its report")
    .addOption(
      new Option("--suite <name|file>", "a shipped suite (benchmarks/suites/<name>.json) or a suite file")
        .default("quick"),
    )
    .addOption(
      new Option(
        "--out <dir>",
        "folder for report.json/.md/.html (default out/<suite>, or out/<suite>/shard-i-of-n)",
      ),
    )
    .addOption(
      new Option(
        "--shard <i/n>",
        "run only slice i of n (0-based) of the cells; join slices with `longtune merge`",
      )
        .argParser(shardOption),
    )
    .addOption(
      new Option("--cache <dir>", "content-addressed cache of finished cells and trained methods").default(
        "out/cache",
      ),
    )
    .addOption(
      new Option("--model <names>", "only these of the suite's models (comma-separated)").argParser(
        parseList,
      ),
    )
    .addOption(
      new Option("--methods <names>", "only these of the suite's methods (labels or registry names)")
        .argParser(parseList),
    )
    .addHelpText(
      "after",
      `
Cells already in the cache are not recomputed (a cell's key is the sha256 of everything that decides its
numbers), so Ctrl-C keeps finished cells and rerunning the same command resumes. A cell that fails is
recorded as failed in the report and the command exits 1.

Examples:
  longtune bench
  longtune bench --suite standard --methods baseline,lora --out out/standard-lora
  longtune bench --suite full --shard 3/16 --cache /shared/longtune-cache
  longtune merge out/full/shard-*-of-16 --out out/full`,
    )
    .action(async (_options: unknown, command: Command) => {
      const options = command.optsWithGlobals<BenchOptions>();
      const path = await suitePath(options.suite);
      const loaded = await loadSuite(path);
      const suite = resolveSuite(loaded.suite, path, { models: options.model, methods: options.methods });
      const shard = options.shard;
      const out = options.out ??
        join("out", suite.name, ...(shard ? [`shard-${shard.index}-of-${shard.count}`] : []));
      const summary = await runWithInterrupt(
        (signal) =>
          runSuite({
            suite,
            suiteFile: { path, fileHash: loaded.fileHash },
            out,
            cache: options.cache,
            shard,
            signal,
            quiet: options.quiet,
          }),
        options.cache,
      );
      reportSummary(summary, options.quiet ?? false);
    });
}
