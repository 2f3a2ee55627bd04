/**
 * report.md: the report's tables as GitHub-flavoured Markdown, rendered from report.json data only.
 */

import type { Report } from "./report_schema.ts";
import { reportHeadline, reportSections, type Table } from "./report_tables.ts";

/**
 * Escapes text for a Markdown table cell: Markdown punctuation is backslash-escaped and `<`, `>`, `&`
 * become entities, because GitHub renders inline HTML and a method named `<b>x</b>` must stay text.
 */
export function escapeMarkdown(text: string): string {
  return text
    .replace(/[\r\n]+/g, " ")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/([\\`*_\[\]|~])/g, "\\$1");
}

/** Renders one table as a GitHub-flavoured Markdown table. */
export function markdownTable(table: Table): string {
  const header = `| ${table.columns.map((column) => escapeMarkdown(column.label)).join(" | ")} |`;
  const rule = `|${table.columns.map((column) => column.align === "right" ? "---:" : "---").join("|")}|`;
  const rows = table.rows.map((row) =>
    `| ${
      row.map((cell, i) =>
        table.columns[i]?.mono && /^[A-Za-z0-9=,. :_\-]+$/.test(cell) ? `\`${cell}\`` : escapeMarkdown(cell)
      )
        .join(" | ")
    } |`
  );
  const lines = table.caption === undefined ? [] : [`**${escapeMarkdown(table.caption)}**`, ""];
  if (table.rows.length === 0) return [...lines, "_(none)_"].join("\n");
  return [...lines, header, rule, ...rows].join("\n");
}

/** Renders a report as Markdown: summary, per-evaluation tables, cost, environment, seeds and hashes. */
export function renderMarkdown(report: Report): string {
  const parts = [
    `# longtune report: ${escapeMarkdown(report.suite.name)}`,
    "",
    escapeMarkdown(reportHeadline(report)),
  ];
  for (const section of reportSections(report)) {
    parts.push("", `## ${escapeMarkdown(section.title)}`);
    if (section.note !== undefined) parts.push("", escapeMarkdown(section.note));
    for (const table of section.tables) parts.push("", markdownTable(table));
  }
  return parts.join("\n") + "\n";
}
