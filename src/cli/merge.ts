/**
 * `longtune merge SHARD... --out DIR`: joins the reports of a sharded `longtune bench` run into the
 * report of the whole grid (src/harness/merge.ts) and renders it. Each argument is a report.json or a
 * shard's output folder; a multi-model suite's per-model reports (`<shard>/<model>/report.json`) are
 * merged model by model. Mismatched suites, models or environments are refused, naming the field.
 */

import { type Command, Option } from "commander";
import { basename, dirname, join, relative } from "node:path";
import { MergeMismatchError, mergeReports } from "../harness/merge.ts";
import { parseReport } from "../harness/report_schema.ts";
import { writeReportFiles } from "../harness/runner.ts";
import { UsageError } from "./errors.ts";

async function isFile(path: string): Promise<boolean> {
  return await Deno.stat(path).then((s) => s.isFile, () => false);
}

/** The report.json files of one argument, keyed by their path relative to it ("report.json", "m/report.json"). */
async function reportsOf(argument: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  if (await isFile(argument)) {
    found.set("report.json", argument);
    return found;
  }
  const stat = await Deno.stat(argument).catch(() => null);
  if (stat === null || !stat.isDirectory) {
    throw new UsageError(`${argument}: no such report.json or shard folder`);
  }
  if (await isFile(join(argument, "report.json"))) found.set("report.json", join(argument, "report.json"));
  for await (const entry of Deno.readDir(argument)) {
    const inner = join(argument, entry.name, "report.json");
    if (entry.isDirectory && entry.name !== "cache" && await isFile(inner)) {
      found.set(relative(argument, inner), inner);
    }
  }
  if (found.size === 0) throw new UsageError(`${argument}: holds no report.json (nor <model>/report.json)`);
  return found;
}

/** Registers `merge` on the program. */
export function registerMerge(program: Command): void {
  program
    .command("merge")
    .description("join the reports of `longtune bench --shard i/n` runs into one report")
    .argument("<shards...>", "shard output folders or their report.json files")
    .addOption(new Option("--out <dir>", "folder for the merged report.json/.md/.html").makeOptionMandatory())
    .addHelpText(
      "after",
      `
Shards must come from the same suite file, base model and tokenizer, and the same harness, Deno, GPU
adapter and git commit; the first difference is named. A cell present in two shards must agree.

Example:
  longtune bench --suite standard --shard 0/2 --out out/s0
  longtune bench --suite standard --shard 1/2 --out out/s1
  longtune merge out/s0 out/s1 --out out/standard`,
    )
    .action(async (shards: string[], options: { out: string }, command: Command) => {
      const quiet = command.optsWithGlobals<{ quiet?: boolean }>().quiet ?? false;
      const perShard = await Promise.all(shards.map(reportsOf));
      const names = [...perShard[0].keys()].sort();
      perShard.forEach((reports, i) => {
        const own = [...reports.keys()].sort();
        if (own.join("\n") !== names.join("\n")) {
          throw new UsageError(
            `${shards[i]} holds ${own.join(", ")} but ${shards[0]} holds ${
              names.join(", ")
            }; shards of one run ` +
              `have the same reports`,
          );
        }
      });
      for (const name of names) {
        const inputs = await Promise.all(
          perShard.map(async (reports) => {
            const path = reports.get(name)!;
            return { label: path, report: await parseReport(path) };
          }),
        );
        let merged;
        try {
          merged = mergeReports(inputs);
        } catch (error) {
          // A mismatch is the user's to resolve: one line, exit 1.
          if (error instanceof MergeMismatchError) throw new Error(error.message);
          throw error;
        }
        const folder = name === "report.json" ? options.out : join(options.out, dirname(name));
        const written = await writeReportFiles(folder, merged);
        if (!quiet) {
          console.log(
            `wrote ${written} (${merged.cells.length} cells from ${inputs.length} shards of ${
              basename(dirname(written)) || written
            })`,
          );
        }
      }
    });
}
