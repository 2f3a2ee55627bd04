/**
 * The `longtune` command. Run it as
 *
 *   deno run --allow-read --allow-write --allow-env src/cli/main.ts <command> [options]
 *
 * Commands: `list`, `data` (ruler, babilong, corpus), `compare`, `leaderboard`, `report`, `bench`,
 * `train`, `eval`, `merge`; each has
 * `--help` with an example. Failures print one line on stderr (`--verbose` adds the stack) and exit
 * with 1, or 2 for usage errors, or 130 after Ctrl-C.
 */

import { Command, Option } from "commander";
import denoConfig from "../../deno.json" with { type: "json" };
import { registerBench } from "./bench.ts";
import { registerCompare } from "./compare.ts";
import { registerData } from "./data.ts";
import { describeFailure } from "./errors.ts";
import { registerLeaderboard } from "./leaderboard.ts";
import { registerList } from "./list.ts";
import { registerMerge } from "./merge.ts";
import { registerReport } from "./report.ts";
import { registerTrainEval } from "./train_eval.ts";

/**
 * The command tree. Errors are thrown (never `process.exit`) so `main` decides the exit status.
 * @example await buildProgram().parseAsync(["list", "ruler"], { from: "user" });
 */
export function buildProgram(): Command {
  const program = new Command("longtune")
    .description(
      "Benchmark harness for parameter-efficient and long-context fine-tuning: datasets, reports, " +
        "comparisons and leaderboards.",
    )
    .version(denoConfig.version, "--version", "print the version")
    .addOption(new Option("--verbose", "show stack traces on errors"))
    .addOption(
      new Option("--quiet", "print nothing but errors (no progress bar, no per-file lines)"),
    )
    .exitOverride()
    .configureOutput({
      // Commander prefixes its messages with "error: "; every longtune failure starts with "longtune: ".
      outputError: (text, write) => write(text.replace(/^error: /, "longtune: ")),
    })
    .addHelpText(
      "after",
      `
Examples:
  longtune list ruler
  longtune data ruler --tasks niah_single_1,vt --lengths 4096,8192 --samples 20 --out data/ruler
  longtune compare baseline.json candidate.json --markdown
  longtune report out/report.json
  longtune bench --suite quick
  longtune merge out/quick/shard-0-of-2 out/quick/shard-1-of-2 --out out/quick`,
    );
  registerList(program);
  registerData(program);
  registerCompare(program);
  registerLeaderboard(program);
  registerReport(program);
  registerBench(program);
  registerTrainEval(program);
  registerMerge(program);
  return program;
}

/**
 * Runs the command line `args` and returns the exit status; failures are printed on stderr.
 * @example Deno.exit(await main(["data", "corpus", "--layout", "pg19", "--out", "data/pg19"]));
 */
export async function main(args: readonly string[]): Promise<number> {
  Deno.exitCode = 0;
  try {
    await buildProgram().parseAsync([...args], { from: "user" });
    return Deno.exitCode;
  } catch (error) {
    const failure = describeFailure(error, args.includes("--verbose"));
    if (failure.text !== "") console.error(failure.text);
    return failure.exitCode;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
