/**
 * `longtune leaderboard REPORT.json... --out leaderboard.json`: merges reports of one suite into the
 * leaderboard JSON of `src/harness/leaderboard.ts`, refusing reports that cannot be compared.
 */

import { type Command, Option } from "commander";
import { buildLeaderboard, writeLeaderboard } from "../harness/leaderboard.ts";
import { parseReport } from "../harness/report_schema.ts";

/** Registers `leaderboard` on the program. */
export function registerLeaderboard(program: Command): void {
  program
    .command("leaderboard")
    .description("merge reports of one suite into leaderboard.json (ranked per task and aggregate)")
    .argument("<reports...>", "report.json files; each is labelled by its path")
    .addOption(new Option("--out <file>", "leaderboard file to write").makeOptionMandatory())
    .addHelpText(
      "after",
      `
Reports must share the suite config, base model, tokenizer and evaluation sets; otherwise the command
names the field that differs and writes nothing.

Example:
  longtune leaderboard runs/lora/report.json runs/dora/report.json --out leaderboard.json`,
    )
    .action(async (paths: string[], options: { out: string; quiet?: boolean }, command: Command) => {
      const inputs = [];
      for (const path of paths) inputs.push({ label: path, report: await parseReport(path) });
      const leaderboard = buildLeaderboard(inputs);
      await writeLeaderboard(options.out, leaderboard);
      if (!command.optsWithGlobals<{ quiet?: boolean }>().quiet) {
        console.log(
          `wrote ${options.out}: ${leaderboard.rankings.length} ranking(s) from ${paths.length} report(s)`,
        );
        for (const ranking of leaderboard.rankings) {
          const leader = ranking.entries.find((entry) => entry.rank === 1);
          const value = leader?.value == null ? "" : ` ${Number(leader.value.toPrecision(4))}`;
          console.log(
            `  ${ranking.task} ${ranking.aggregate}: ${
              leader ? `${leader.method}${value}` : "no complete entry"
            }`,
          );
        }
      }
    });
}
