/**
 * Renders report.md and report.html next to (or away from) a report.json, each written atomically.
 * Usage: `deno run --allow-read --allow-write src/harness/render_report.ts out/report.json [--out-dir DIR]`.
 */

import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { writeFileAtomic } from "../data/layouts.ts";
import { renderHtml } from "./render_html.ts";
import { renderMarkdown } from "./render_md.ts";
import { parseReport } from "./report_schema.ts";

/** Validates `reportPath` and writes report.md and report.html into `outDir` (default: its folder). */
export async function renderReportFiles(
  reportPath: string,
  outDir = dirname(reportPath),
): Promise<{ markdown: string; html: string }> {
  const report = await parseReport(reportPath);
  const paths = { markdown: join(outDir, "report.md"), html: join(outDir, "report.html") };
  await writeFileAtomic(paths.markdown, renderMarkdown(report));
  await writeFileAtomic(paths.html, renderHtml(report));
  return paths;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: { "out-dir": { type: "string" } },
  });
  if (positionals.length !== 1) {
    console.error("usage: render_report.ts REPORT.json [--out-dir DIR]");
    Deno.exit(2);
  }
  const written = await renderReportFiles(positionals[0], values["out-dir"]);
  console.log(`wrote ${written.markdown} and ${written.html}`);
}
