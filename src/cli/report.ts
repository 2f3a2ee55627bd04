/**
 * `longtune report REPORT.json [--out DIR]`: renders report.md and report.html from a report.json
 * (`src/harness/render_report.ts`), each written atomically.
 */

import { type Command, Option } from "commander";
import { renderReportFiles } from "../harness/render_report.ts";

/** Registers `report` on the program. */
export function registerReport(program: Command): void {
  program
    .command("report")
    .description("render report.md and report.html from a report.json")
    .argument("<report.json>", "the report to render (validated against its schema first)")
    .addOption(
      new Option("--out <dir>", "folder for report.md and report.html (default: the report's folder)"),
    )
    .addHelpText(
      "after",
      `
Example:
  longtune report out/report.json --out site/`,
    )
    .action(async (path: string, options: { out?: string }, command: Command) => {
      const written = await renderReportFiles(path, options.out);
      if (!command.optsWithGlobals<{ quiet?: boolean }>().quiet) {
        console.log(`wrote ${written.markdown} and ${written.html}`);
      }
    });
}
