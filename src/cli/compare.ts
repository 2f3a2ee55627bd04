/**
 * `longtune compare A.json B.json`: the regression check of `src/harness/compare.ts` (A = baseline,
 * B = candidate) as a command; exit 1 when anything regressed, so CI can gate on it.
 */

import { type Command, Option } from "commander";
import { writeFileAtomic } from "../data/layouts.ts";
import {
  compareReportFiles,
  type CompareRules,
  DEFAULT_COMPARE_RULES,
  formatComparisonMarkdown,
  formatComparisonText,
} from "../harness/compare.ts";
import { parseNumber } from "./parse.ts";

/** Slowdown ratio `--timings` uses unless `--timing-ratio` is given. */
export const DEFAULT_TIMING_RATIO = 1.5;
/** Growth ratio `--memory` uses unless `--memory-ratio` is given. */
export const DEFAULT_MEMORY_RATIO = 1.2;

interface CompareOptions {
  timings?: boolean;
  timingRatio?: number;
  memory?: boolean;
  memoryRatio?: number;
  markdown?: boolean;
  all?: boolean;
  pplThreshold: number;
  minDelta: number;
  out?: string;
}

/** Registers `compare` on the program; its action sets the exit code (0 or 1) from the comparison. */
export function registerCompare(program: Command): void {
  program
    .command("compare")
    .description("compare two reports (A = baseline, B = candidate); exit 1 when B regressed")
    .argument("<A.json>", "baseline report")
    .argument("<B.json>", "candidate report")
    .addOption(new Option("--timings", "also compare train/eval tokens/s and wall time"))
    .addOption(
      new Option("--timing-ratio <ratio>", "slowdown that counts as a timing regression (implies --timings)")
        .argParser((text) => parseNumber(text, 1)),
    )
    .addOption(new Option("--memory", "also compare peak GPU memory"))
    .addOption(
      new Option("--memory-ratio <ratio>", "growth that counts as a memory regression (implies --memory)")
        .argParser((text) => parseNumber(text, 1)),
    )
    .addOption(
      new Option(
        "--ppl-threshold <fraction>",
        "relative perplexity/bits-per-byte/loss increase that regresses",
      )
        .argParser((text) => parseNumber(text, 0))
        .default(DEFAULT_COMPARE_RULES.perplexityRelative),
    )
    .addOption(
      new Option(
        "--min-delta <points>",
        "smallest accuracy drop (on top of disjoint 95% intervals) that regresses",
      )
        .argParser((text) => parseNumber(text, 0))
        .default(DEFAULT_COMPARE_RULES.accuracyMinDelta),
    )
    .addOption(
      new Option("--markdown", "print Markdown (for a PR comment) instead of a text table"),
    )
    .addOption(new Option("--all", "include rows within noise"))
    .addOption(new Option("--out <file>", "also write the printed comparison to this file"))
    .addHelpText(
      "after",
      `
Accuracy regresses only when B's 95% interval lies wholly below A's; perplexity when it rises by more
than --ppl-threshold. Timing and memory checks are off unless asked for (--timings: ${DEFAULT_TIMING_RATIO}× slower,
--memory: ${DEFAULT_MEMORY_RATIO}× larger). Warnings never fail.

Examples:
  longtune compare baseline/report.json out/report.json
  longtune compare main.json pr.json --timing-ratio 1.3 --markdown --out comparison.md`,
    )
    .action(async (a: string, b: string, options: CompareOptions) => {
      const rules: Partial<CompareRules> = {
        perplexityRelative: options.pplThreshold,
        accuracyMinDelta: options.minDelta,
      };
      if (options.timings || options.timingRatio !== undefined) {
        rules.timingRatio = options.timingRatio ?? DEFAULT_TIMING_RATIO;
      }
      if (options.memory || options.memoryRatio !== undefined) {
        rules.memoryRatio = options.memoryRatio ?? DEFAULT_MEMORY_RATIO;
      }
      const comparison = await compareReportFiles(a, b, rules);
      const text = options.markdown
        ? formatComparisonMarkdown(comparison, options.all)
        : formatComparisonText(comparison, options.all);
      console.log(text.trimEnd());
      if (options.out !== undefined) await writeFileAtomic(options.out, text);
      Deno.exitCode = comparison.exitCode;
    });
}
