/**
 * Hand-written SVG charts for the HTML report: line charts (lines break at missing points), scatter
 * plots (linear or log axes) and heatmaps. Every chart has a title, axis labels, tick labels and a
 * legend; colours come from the Okabe–Ito palette, which stays distinguishable under the common forms of
 * colour blindness, and series also differ by marker shape and dash so nothing depends on colour alone.
 * Output is a standalone `<svg>` string with all text escaped.
 */

/** Okabe–Ito colours, ordered so the first ones contrast best on white (yellow last). */
export const PALETTE = [
  "#0072B2",
  "#E69F00",
  "#009E73",
  "#D55E00",
  "#CC79A7",
  "#56B4E9",
  "#000000",
  "#F0E442",
];

const MARKERS = ["circle", "square", "triangle", "diamond"] as const;
const DASHES = ["", "6 3", "2 3", "8 3 2 3"];

/** One data point; `y: null` marks a missing value (the line breaks there). */
export interface ChartPoint {
  x: number;
  y: number | null;
}

/** A named series of points. */
export interface ChartSeries {
  name: string;
  points: ChartPoint[];
}

/** An axis: its label, scale, optional fixed range and explicit ticks. */
export interface ChartAxis {
  label: string;
  scale?: "linear" | "log";
  min?: number;
  max?: number;
  /** Tick positions to use instead of computed ones (values outside the range are dropped). */
  ticks?: number[];
  format?: (value: number) => string;
}

/** A line or scatter chart. */
export interface XYChartSpec {
  title: string;
  x: ChartAxis;
  y: ChartAxis;
  series: ChartSeries[];
  width?: number;
  height?: number;
}

/** A heatmap: `values[row][column]`, null for a missing cell. */
export interface HeatmapSpec {
  title: string;
  rowLabels: string[];
  columnLabels: string[];
  rowAxisLabel: string;
  columnAxisLabel: string;
  values: (number | null)[][];
  min: number;
  max: number;
  format?: (value: number) => string;
  width?: number;
}

/** Escapes text for SVG/HTML element content and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

function num(value: number): string {
  return Number(value.toFixed(2)).toString();
}

/** Default tick text: up to 4 significant digits, no trailing zeros. */
export function formatTick(value: number): string {
  if (value !== 0 && (Math.abs(value) >= 1e5 || Math.abs(value) < 1e-3)) return value.toExponential(1);
  return Number(value.toPrecision(4)).toString();
}

/** "Nice" linear ticks (steps of 1, 2 or 5 × 10^k) from the step at or below min to the one at or above max. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!(max > min)) return [min];
  const rough = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((candidate) => candidate >= rough) ??
    10 * magnitude;
  const first = Math.floor(min / step + 1e-9);
  const last = Math.ceil(max / step - 1e-9);
  const ticks: number[] = [];
  for (let i = first; i <= last; i++) ticks.push(Number((i * step).toPrecision(12)));
  return ticks;
}

/** Log-axis ticks: powers of 10, with 2× and 5× added when the range spans under three decades. */
export function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  const multipliers = Math.log10(max / min) < 3 ? [1, 2, 5] : [1];
  for (let exponent = Math.floor(Math.log10(min)); exponent <= Math.ceil(Math.log10(max)); exponent++) {
    for (const multiplier of multipliers) {
      const tick = multiplier * 10 ** exponent;
      if (tick >= min * (1 - 1e-9) && tick <= max * (1 + 1e-9)) ticks.push(Number(tick.toPrecision(12)));
    }
  }
  return ticks;
}

interface Scale {
  map(value: number): number;
  ticks: number[];
  accepts(value: number): boolean;
}

function makeScale(axis: ChartAxis, values: number[], from: number, to: number): Scale {
  const log = axis.scale === "log";
  const usable = values.filter((value) => Number.isFinite(value) && (!log || value > 0));
  let min = axis.min ?? (usable.length > 0 ? Math.min(...usable) : log ? 1 : 0);
  let max = axis.max ?? (usable.length > 0 ? Math.max(...usable) : log ? 10 : 1);
  if (!(max > min)) {
    // One distinct value: widen around it so the point sits mid-axis instead of dividing by zero.
    if (log) [min, max] = [min / 2, max * 2];
    else {
      const pad = Math.abs(min) > 0 ? Math.abs(min) * 0.1 : 1;
      [min, max] = [min - pad, max + pad];
    }
  }
  if (log) {
    // Pad a log axis on both sides so extreme points do not sit on the frame.
    const pad = 0.08 * (Math.log(max) - Math.log(min));
    const [lo, hi] = [Math.log(min) - pad, Math.log(max) + pad];
    const [shownMin, shownMax] = [Math.exp(lo), Math.exp(hi)];
    return {
      map: (value) => from + ((Math.log(value) - lo) / (hi - lo)) * (to - from),
      ticks: (axis.ticks ?? logTicks(shownMin, shownMax)).filter((tick) =>
        tick >= shownMin && tick <= shownMax
      ),
      accepts: (value) => value > 0,
    };
  }
  const ticks = axis.ticks ?? niceTicks(min, max);
  if (axis.ticks === undefined && axis.min === undefined) min = Math.min(min, ticks[0]);
  if (axis.ticks === undefined && axis.max === undefined) max = Math.max(max, ticks[ticks.length - 1]);
  const pad = axis.ticks !== undefined ? 0.06 * (max - min) : 0;
  const [lo, hi] = [min - pad, max + pad];
  return {
    map: (value) => from + ((value - lo) / (hi - lo)) * (to - from),
    ticks: ticks.filter((tick) => tick >= min - 1e-9 && tick <= max + 1e-9),
    accepts: () => true,
  };
}

function marker(shape: (typeof MARKERS)[number], x: number, y: number, color: string): string {
  const r = 4;
  const common = `fill="${color}" stroke="#ffffff" stroke-width="1"`;
  switch (shape) {
    case "circle":
      return `<circle cx="${num(x)}" cy="${num(y)}" r="${r}" ${common}/>`;
    case "square":
      return `<rect x="${num(x - r)}" y="${num(y - r)}" width="${2 * r}" height="${2 * r}" ${common}/>`;
    case "triangle":
      return `<path d="M${num(x)} ${num(y - r - 1)}L${num(x + r + 1)} ${num(y + r)}L${num(x - r - 1)} ${
        num(y + r)
      }Z" ${common}/>`;
    case "diamond":
      return `<path d="M${num(x)} ${num(y - r - 1)}L${num(x + r + 1)} ${num(y)}L${num(x)} ${num(y + r + 1)}L${
        num(x - r - 1)
      } ${num(y)}Z" ${common}/>`;
  }
}

/** Colour, marker and dash of the i-th series. */
export function seriesStyle(
  index: number,
): { color: string; marker: (typeof MARKERS)[number]; dash: string } {
  return {
    color: PALETTE[index % PALETTE.length],
    marker: MARKERS[Math.floor(index / PALETTE.length) % MARKERS.length],
    dash: DASHES[Math.floor(index / PALETTE.length) % DASHES.length],
  };
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function svgOpen(width: number, height: number, title: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 ${width} ${height}" width="${width}" ` +
    `height="${height}" role="img" aria-label="${escapeXml(title)}" font-family="system-ui, sans-serif" ` +
    `font-size="12"><title>${escapeXml(title)}</title>` +
    `<rect width="${width}" height="${height}" fill="#ffffff"/>` +
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="600">${
      escapeXml(truncate(title, 72))
    }</text>`;
}

function xyChart(spec: XYChartSpec, connect: boolean): string {
  const width = spec.width ?? 540;
  // Grow with the legend so every series keeps its row.
  const height = Math.max(spec.height ?? 320, 36 + 18 * spec.series.length + 48);
  const plot = { left: 64, right: width - 150, top: 36, bottom: height - 56 };
  const allPoints = spec.series.flatMap((series) => series.points);
  const xScale = makeScale(spec.x, allPoints.map((point) => point.x), plot.left, plot.right);
  const yScale = makeScale(
    spec.y,
    allPoints.flatMap((point) => point.y === null ? [] : [point.y]),
    plot.bottom,
    plot.top,
  );
  const formatX = spec.x.format ?? formatTick;
  const formatY = spec.y.format ?? formatTick;
  const parts = [svgOpen(width, height, spec.title)];

  for (const tick of yScale.ticks) {
    const y = yScale.map(tick);
    parts.push(
      `<line x1="${plot.left}" x2="${plot.right}" y1="${num(y)}" y2="${num(y)}" stroke="#e5e5e5"/>`,
      `<text x="${plot.left - 6}" y="${num(y + 4)}" text-anchor="end" fill="#333">${
        escapeXml(formatY(tick))
      }</text>`,
    );
  }
  for (const tick of xScale.ticks) {
    const x = xScale.map(tick);
    parts.push(
      `<line x1="${num(x)}" x2="${num(x)}" y1="${plot.top}" y2="${plot.bottom}" stroke="#f0f0f0"/>`,
      `<line x1="${num(x)}" x2="${num(x)}" y1="${plot.bottom}" y2="${plot.bottom + 5}" stroke="#333"/>`,
      `<text x="${num(x)}" y="${plot.bottom + 18}" text-anchor="middle" fill="#333">${
        escapeXml(formatX(tick))
      }</text>`,
    );
  }
  parts.push(
    `<path d="M${plot.left} ${plot.top}V${plot.bottom}H${plot.right}" fill="none" stroke="#333"/>`,
    `<text x="${(plot.left + plot.right) / 2}" y="${height - 14}" text-anchor="middle">${
      escapeXml(spec.x.label)
    }</text>`,
    `<text transform="translate(16 ${(plot.top + plot.bottom) / 2}) rotate(-90)" text-anchor="middle">${
      escapeXml(spec.y.label)
    }</text>`,
  );

  let hidden = 0;
  spec.series.forEach((series, index) => {
    const style = seriesStyle(index);
    const visible = series.points
      .filter((point) => {
        const shown = point.y !== null && xScale.accepts(point.x) && yScale.accepts(point.y);
        if (!shown && point.y !== null) hidden++;
        return shown || point.y === null;
      })
      .sort((a, b) => a.x - b.x);
    const markers: string[] = [];
    if (connect) {
      const segments: string[] = [];
      let current: string[] = [];
      for (const point of visible) {
        if (point.y === null) {
          if (current.length > 1) segments.push(current.join(""));
          current = [];
          continue;
        }
        current.push(
          `${current.length === 0 ? "M" : "L"}${num(xScale.map(point.x))} ${num(yScale.map(point.y))}`,
        );
      }
      if (current.length > 1) segments.push(current.join(""));
      if (segments.length > 0) {
        parts.push(
          `<path d="${segments.join("")}" fill="none" stroke="${style.color}" stroke-width="2"${
            style.dash ? ` stroke-dasharray="${style.dash}"` : ""
          }/>`,
        );
      }
    }
    for (const point of visible) {
      if (point.y === null) continue;
      markers.push(marker(style.marker, xScale.map(point.x), yScale.map(point.y), style.color));
    }
    parts.push(`<g><title>${escapeXml(series.name)}</title>${markers.join("")}</g>`);
  });

  if (!allPoints.some((point) => point.y !== null)) {
    parts.push(
      `<text x="${(plot.left + plot.right) / 2}" y="${(plot.top + plot.bottom) / 2}" text-anchor="middle" ` +
        `fill="#666">no data</text>`,
    );
  }
  if (hidden > 0) {
    parts.push(
      `<text x="${plot.left}" y="${
        height - 2
      }" fill="#666" font-size="11">${hidden} point(s) with values ≤ 0 ` +
        `not shown on the log axis</text>`,
    );
  }
  parts.push(legend(spec.series.map((series) => series.name), plot.right + 16, plot.top, connect));
  parts.push("</svg>");
  return parts.join("");
}

function legend(names: string[], x: number, y: number, withLines: boolean): string {
  const rows = names.map((name, index) => {
    const style = seriesStyle(index);
    const rowY = y + 8 + index * 18;
    const line = withLines
      ? `<line x1="${x}" x2="${x + 22}" y1="${rowY}" y2="${rowY}" stroke="${style.color}" stroke-width="2"${
        style.dash ? ` stroke-dasharray="${style.dash}"` : ""
      }/>`
      : "";
    return `<g>${line}${marker(style.marker, x + 11, rowY, style.color)}<text x="${x + 28}" y="${rowY + 4}">${
      escapeXml(truncate(name, 16))
    }</text><title>${escapeXml(name)}</title></g>`;
  });
  return `<g class="legend">${rows.join("")}</g>`;
}

/** A line chart: one line per series, broken at missing points, every point marked (so single points show). */
export function lineChart(spec: XYChartSpec): string {
  return xyChart(spec, true);
}

/** A scatter plot: markers only, one colour and shape per series. */
export function scatterChart(spec: XYChartSpec): string {
  return xyChart(spec, false);
}

// Viridis at ten evenly spaced stops: perceptually uniform and readable with colour-vision deficiencies.
const VIRIDIS = [
  [68, 1, 84],
  [72, 40, 120],
  [62, 73, 137],
  [49, 104, 142],
  [38, 130, 142],
  [31, 158, 137],
  [53, 183, 121],
  [110, 206, 88],
  [181, 222, 43],
  [253, 231, 37],
];

/** Viridis colour at t ∈ [0, 1] (clamped), as #rrggbb. */
export function viridis(t: number): string {
  const clamped = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0));
  const position = clamped * (VIRIDIS.length - 1);
  const index = Math.min(VIRIDIS.length - 2, Math.floor(position));
  const fraction = position - index;
  const channel = (c: number) =>
    Math.round(VIRIDIS[index][c] + (VIRIDIS[index + 1][c] - VIRIDIS[index][c]) * fraction).toString(16)
      .padStart(2, "0");
  return `#${channel(0)}${channel(1)}${channel(2)}`;
}

/** A heatmap with value labels, hatched-grey missing cells and a colour bar. */
export function heatmapChart(spec: HeatmapSpec): string {
  const columns = Math.max(1, spec.columnLabels.length);
  const rows = Math.max(1, spec.rowLabels.length);
  const cellWidth = Math.max(44, Math.min(90, 480 / columns));
  const cellHeight = 24;
  const left = 80;
  const top = 40;
  const width = spec.width ?? Math.max(420, left + columns * cellWidth + 110);
  const barHeight = Math.max(60, rows * cellHeight);
  const height = top + Math.max(rows * cellHeight, barHeight) + 56;
  const format = spec.format ?? ((value: number) => value.toFixed(1));
  const span = spec.max - spec.min || 1;
  const parts = [svgOpen(width, height, spec.title)];
  spec.values.forEach((row, r) => {
    const y = top + r * cellHeight;
    parts.push(
      `<text x="${left - 6}" y="${y + cellHeight / 2 + 4}" text-anchor="end" fill="#333">${
        escapeXml(spec.rowLabels[r] ?? "")
      }</text>`,
    );
    row.forEach((value, c) => {
      const x = left + c * cellWidth;
      if (value === null) {
        parts.push(
          `<rect x="${num(x)}" y="${y}" width="${num(cellWidth - 1)}" height="${
            cellHeight - 1
          }" fill="#eeeeee"/>`,
          `<text x="${num(x + cellWidth / 2)}" y="${
            y + cellHeight / 2 + 4
          }" text-anchor="middle" fill="#888">–</text>`,
        );
        return;
      }
      const t = (value - spec.min) / span;
      parts.push(
        `<rect x="${num(x)}" y="${y}" width="${num(cellWidth - 1)}" height="${cellHeight - 1}" fill="${
          viridis(t)
        }">` +
          `<title>${
            escapeXml(`${spec.rowLabels[r]} × ${spec.columnLabels[c]}: ${format(value)}`)
          }</title></rect>`,
        `<text x="${num(x + cellWidth / 2)}" y="${y + cellHeight / 2 + 4}" text-anchor="middle" fill="${
          t > 0.55 ? "#000000" : "#ffffff"
        }">${escapeXml(format(value))}</text>`,
      );
    });
  });
  const bottom = top + rows * cellHeight;
  spec.columnLabels.forEach((label, c) => {
    parts.push(
      `<text x="${num(left + c * cellWidth + cellWidth / 2)}" y="${
        bottom + 16
      }" text-anchor="middle" fill="#333">${escapeXml(label)}</text>`,
    );
  });
  parts.push(
    `<text x="${num(left + (columns * cellWidth) / 2)}" y="${bottom + 38}" text-anchor="middle">${
      escapeXml(spec.columnAxisLabel)
    }</text>`,
    `<text transform="translate(16 ${top + (rows * cellHeight) / 2}) rotate(-90)" text-anchor="middle">${
      escapeXml(spec.rowAxisLabel)
    }</text>`,
  );
  // Colour bar: ten bands from min (bottom) to max (top).
  const barX = left + columns * cellWidth + 24;
  for (let band = 0; band < 10; band++) {
    parts.push(
      `<rect x="${barX}" y="${num(top + barHeight - (band + 1) * barHeight / 10)}" width="14" height="${
        num(barHeight / 10 + 0.5)
      }" fill="${viridis((band + 0.5) / 10)}"/>`,
    );
  }
  parts.push(
    `<text x="${barX + 20}" y="${top + 10}" fill="#333">${escapeXml(format(spec.max))}</text>`,
    `<text x="${barX + 20}" y="${top + barHeight}" fill="#333">${escapeXml(format(spec.min))}</text>`,
    "</svg>",
  );
  return parts.join("");
}
