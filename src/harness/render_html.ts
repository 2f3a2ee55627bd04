/**
 * report.html: one self-contained file (inline CSS, inline SVG, no scripts, nothing fetched — a
 * Content-Security-Policy forbids it) rendered from report.json data only. Tables come from
 * `reportSections`, the same ones Markdown shows; charts are drawn by `svg.ts`.
 */

import { formatCount, formatLength, groupCells, mean } from "./aggregate.ts";
import type { Report } from "./report_schema.ts";
import {
  headlineLabel,
  headlineValue,
  perLength,
  reportHeadline,
  reportSections,
  sweepGrid,
  type Table,
  type TaskView,
  taskViews,
} from "./report_tables.ts";
import { type ChartSeries, escapeXml, heatmapChart, lineChart, scatterChart } from "./svg.ts";

/** A chart ready to place: which section it belongs to, its caption and its SVG. */
export interface ReportChart {
  section: "by-length" | "perplexity" | "position-sweep" | "training" | "cost";
  caption: string;
  svg: string;
}

function lengthAxis(view: TaskView) {
  return {
    label: "context length (tokens)",
    scale: "log" as const,
    ticks: view.lengths,
    format: formatLength,
  };
}

function headlineSeries(view: TaskView): ChartSeries[] {
  return view.methods.map((method) => {
    const values = perLength(view, method, headlineValue);
    return { name: method, points: view.lengths.map((length, i) => ({ x: length, y: values[i] })) };
  });
}

function scoreVsLength(view: TaskView): ReportChart {
  const label = headlineLabel(view);
  const series = headlineSeries(view);
  return {
    section: "by-length",
    caption: `${view.task}: ${label.name} vs context length, one line per method (seed mean).`,
    svg: lineChart({
      title: `${view.task}: ${label.name} vs length`,
      x: lengthAxis(view),
      y: { label: label.name, min: 0, max: 100 },
      series,
    }),
  };
}

function perplexityVsLength(view: TaskView): ReportChart {
  const series = headlineSeries(view);
  return {
    section: "perplexity",
    caption: `${view.task}: token perplexity vs context length (lower is better).`,
    svg: lineChart({
      title: `${view.task}: token perplexity vs length`,
      x: lengthAxis(view),
      y: { label: "token perplexity" },
      series,
    }),
  };
}

function sweepHeatmaps(view: TaskView): ReportChart[] {
  return view.methods.map((method) => {
    const grid = sweepGrid(view, method);
    return {
      section: "position-sweep",
      caption: `${view.task} · ${method}: score by needle depth (rows) and context length (columns).`,
      svg: heatmapChart({
        title: `${view.task} · ${method}: depth × length`,
        rowLabels: grid.depths.map((depth) => `${depth}%`),
        columnLabels: view.lengths.map(formatLength),
        rowAxisLabel: "needle depth",
        columnAxisLabel: "context length (tokens)",
        values: grid.scores,
        min: 0,
        max: 100,
      }),
    };
  });
}

function scoreVsParameters(view: TaskView): ReportChart {
  const label = headlineLabel(view);
  const series: ChartSeries[] = view.methods.map((method) => {
    const values = perLength(view, method, headlineValue);
    const cells = [...view.groups.get(method)!.values()].flatMap((group) => group.cells);
    const parameters = Math.max(...cells.map((cell) => cell.trainableParameters));
    const complete = values.every((value) => value !== null);
    return { name: method, points: [{ x: parameters, y: complete ? mean(values as number[]) : null }] };
  });
  return {
    section: "cost",
    caption:
      `${view.task}: mean ${label.name} over lengths vs trainable parameters (log scale); methods with ` +
      "a failed length are left out.",
    svg: scatterChart({
      title: `${view.task}: ${label.name} vs trainable parameters`,
      x: { label: "trainable parameters", scale: "log", format: formatCount },
      y: { label: `mean ${label.name}`, min: 0, max: 100 },
      series,
    }),
  };
}

function lossCurves(report: Report): ReportChart[] {
  const charts: ReportChart[] = [];
  const byTaskLength = new Map<string, ReturnType<typeof groupCells>>();
  for (const group of groupCells(report.cells)) {
    const key = JSON.stringify([group.task, group.length]);
    byTaskLength.set(key, [...(byTaskLength.get(key) ?? []), group]);
  }
  for (const groups of byTaskLength.values()) {
    const series: ChartSeries[] = groups.flatMap((group) =>
      group.cells.filter((cell) => cell.trainingCurve.length > 0).map((cell) => ({
        name: group.seeds.length > 1 ? `${cell.method} · seed ${cell.seed}` : cell.method,
        points: cell.trainingCurve.map((point) => ({ x: point.step, y: point.loss })),
      }))
    );
    if (series.length === 0) continue;
    const { task, length } = groups[0];
    charts.push({
      section: "training",
      caption: `${task} at ${formatLength(length)}: training loss per step, one line per method and seed.`,
      svg: lineChart({
        title: `${task} · ${formatLength(length)}: training loss`,
        x: { label: "step" },
        y: { label: "loss (nats/token)" },
        series,
      }),
    });
  }
  return charts;
}

/** Every chart of a report, in the order the HTML shows them. */
export function reportCharts(report: Report): ReportChart[] {
  const views = taskViews(report);
  const charts: ReportChart[] = [];
  for (const view of views) {
    if (view.family !== "perplexity" && headlineLabel(view).better === "higher") {
      charts.push(scoreVsLength(view));
    }
  }
  for (const view of views) if (view.family === "perplexity") charts.push(perplexityVsLength(view));
  for (const view of views) if (view.family === "position-sweep") charts.push(...sweepHeatmaps(view));
  charts.push(...lossCurves(report));
  for (const view of views) {
    if (view.family !== "perplexity" && headlineLabel(view).better === "higher") {
      charts.push(scoreVsParameters(view));
    }
  }
  return charts;
}

function htmlTable(table: Table): string {
  const caption = table.caption === undefined ? "" : `<caption>${escapeXml(table.caption)}</caption>`;
  if (table.rows.length === 0) return `<table>${caption}<tbody><tr><td>(none)</td></tr></tbody></table>`;
  const head = table.columns.map((column) =>
    `<th${column.align === "right" ? ' class="num"' : ""}>${escapeXml(column.label)}</th>`
  ).join("");
  const body = table.rows.map((row) =>
    `<tr>${
      row.map((cell, i) => {
        const column = table.columns[i];
        const classes = [column?.align === "right" ? "num" : "", column?.mono ? "mono" : ""].filter(Boolean);
        return `<td${classes.length ? ` class="${classes.join(" ")}"` : ""}>${escapeXml(cell)}</td>`;
      }).join("")
    }</tr>`
  ).join("\n");
  return `<table>${caption}<thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

function figure(chart: ReportChart): string {
  return `<figure>${chart.svg}<figcaption>${escapeXml(chart.caption)}</figcaption></figure>`;
}

const STYLE = `
body { font: 14px/1.45 system-ui, sans-serif; color: #1a1a1a; margin: 0; background: #fafafa; }
main { max-width: 1160px; margin: 0 auto; padding: 24px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.headline { color: #555; margin: 0 0 16px; }
p.note { color: #444; max-width: 900px; }
nav a { margin-right: 12px; color: #0050a0; }
table { border-collapse: collapse; margin: 12px 0 20px; font-size: 13px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; white-space: nowrap; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tbody tr:nth-child(even) { background: #fafafa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.mono { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; border: 1px solid #e5e5e5; padding: 8px; background: #fff; }
figcaption { font-size: 12px; color: #555; max-width: 540px; }
svg.chart { display: block; max-width: 100%; height: auto; }
`;

/** Renders a report as one self-contained HTML page: the Markdown tables plus SVG charts. */
export function renderHtml(report: Report): string {
  const sections = reportSections(report);
  const charts = reportCharts(report);
  const trainingCharts = charts.filter((chart) => chart.section === "training");
  const chartsFor = (id: string) => {
    const placed = charts.filter((chart) => chart.section === id);
    return placed.length === 0 ? "" : `<div class="charts">${placed.map(figure).join("\n")}</div>`;
  };
  const body: string[] = [];
  const toc: [string, string][] = [];
  for (const section of sections) {
    if (section.id === "cost" && trainingCharts.length > 0) {
      toc.push(["training", "Training loss"]);
      body.push(`<section id="training"><h2>Training loss</h2>${chartsFor("training")}</section>`);
    }
    toc.push([section.id, section.title]);
    body.push(
      `<section id="${escapeXml(section.id)}"><h2>${escapeXml(section.title)}</h2>` +
        (section.note === undefined ? "" : `<p class="note">${escapeXml(section.note)}</p>`) +
        chartsFor(section.id) + section.tables.map(htmlTable).join("\n") + "</section>",
    );
  }
  const title = `longtune report: ${report.suite.name}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>${escapeXml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
<h1>${escapeXml(title)}</h1>
<p class="headline">${escapeXml(reportHeadline(report))}</p>
<nav>${toc.map(([id, label]) => `<a href="#${escapeXml(id)}">${escapeXml(label)}</a>`).join("")}</nav>
${body.join("\n")}
</main>
</body>
</html>
`;
}
