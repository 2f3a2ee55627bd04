/**
 * The tables of a report as plain text cells, computed once from report.json and then written out by
 * `renderMarkdown` and `renderHtml`, so both formats always show the same numbers. Cells hold unescaped
 * text; each renderer escapes for its own format.
 */

import {
  BABILONG_HEADLINE_TASKS,
  babilongQa15,
  type CellGroup,
  distinct,
  formatBytes,
  formatCount,
  formatFixed,
  formatLength,
  groupCellMean,
  groupCells,
  groupOk,
  groupPrimary,
  groupPrimaryAggregate,
  mean,
  RULER_EFFECTIVE_THRESHOLD,
  type RulerSummary,
  rulerSummary,
} from "./aggregate.ts";
import { type Cell, metricDirection, type Report } from "./report_schema.ts";

/** One table column: its header and whether its cells are code (hashes, commits). */
export interface Column {
  label: string;
  align?: "left" | "right";
  mono?: boolean;
}

/** A table of plain-text cells. */
export interface Table {
  caption?: string;
  columns: Column[];
  rows: string[][];
}

/** A titled group of tables with an optional explanatory note. */
export interface Section {
  id: string;
  title: string;
  note?: string;
  tables: Table[];
}

/** The (method, task) view used by several sections: groups per length, in suite order. */
export interface TaskView {
  task: string;
  family: Cell["family"];
  lengths: number[];
  methods: string[];
  /** groups.get(method)?.get(length) */
  groups: Map<string, Map<number, CellGroup>>;
}

/** Organises a report's cells by task, then method, then length. */
export function taskViews(report: Report): TaskView[] {
  const views = new Map<string, TaskView>();
  for (const group of groupCells(report.cells)) {
    let view = views.get(group.task);
    if (view === undefined) {
      view = { task: group.task, family: group.family, lengths: [], methods: [], groups: new Map() };
      views.set(group.task, view);
    }
    if (!view.lengths.includes(group.length)) view.lengths.push(group.length);
    if (!view.groups.has(group.method)) {
      view.methods.push(group.method);
      view.groups.set(group.method, new Map());
    }
    view.groups.get(group.method)!.set(group.length, group);
  }
  for (const view of views.values()) view.lengths.sort((a, b) => a - b);
  return [...views.values()];
}

/** Per-length numbers of one method in one task (null where missing or not ok). */
export function perLength(
  view: TaskView,
  method: string,
  pick: (group: CellGroup) => number | null,
): (number | null)[] {
  return view.lengths.map((length) => {
    const group = view.groups.get(method)?.get(length);
    return group === undefined ? null : pick(group);
  });
}

// Mean accuracy over a BABILong cell's tasks (used where the evaluation does not run all of qa1–qa5).
function babilongTaskMean(cell: Cell): number | null {
  const tasks = Object.values(cell.extras.babilong?.tasks ?? {});
  return tasks.length === 0 ? null : mean(tasks.map((t) => t.accuracy));
}

// The bAbI tasks a BABILong view's cells ran, sorted by number.
function babilongViewTasks(view: TaskView): string[] {
  const names = new Set<string>();
  for (const byLength of view.groups.values()) {
    for (const group of byLength.values()) {
      for (const cell of group.cells) {
        for (const name of Object.keys(cell.extras.babilong?.tasks ?? {})) names.add(name);
      }
    }
  }
  return [...names].sort((a, b) => Number(a.slice(2)) - Number(b.slice(2)));
}

/**
 * The per-length headline number of a group, by family: RULER/custom primary, token PPL, and for BABILong
 * the qa1–qa5 mean — or, for an evaluation that runs only some of qa1–qa5, the mean over its tasks.
 */
export function headlineValue(group: CellGroup): number | null {
  if (group.family === "babilong") {
    return groupCellMean(group, (cell) => babilongQa15(cell) ?? babilongTaskMean(cell));
  }
  if (group.family === "perplexity") {
    return groupCellMean(group, (cell) => cell.extras.perplexity?.tokenPerplexity);
  }
  return groupPrimaryAggregate(group)?.value ?? null;
}

/** The headline's name and direction for a task, as shown in headers. */
export function headlineLabel(view: TaskView): { name: string; better: "higher" | "lower" | "none" } {
  if (view.family === "babilong") {
    const tasks = babilongViewTasks(view);
    const headline = BABILONG_HEADLINE_TASKS.every((task) => tasks.includes(task));
    return { name: headline ? "qa1–qa5 accuracy" : `${tasks.join(", ")} accuracy`, better: "higher" };
  }
  if (view.family === "perplexity") return { name: "token PPL", better: "lower" };
  if (view.family === "ruler") return { name: "RULER score", better: "higher" };
  for (const byLength of view.groups.values()) {
    for (const group of byLength.values()) {
      const primary = groupPrimary(group);
      if (primary !== undefined) return { name: primary.name, better: metricDirection(primary.kind) };
    }
  }
  return { name: "score", better: "none" };
}

/** RULER summary of one method in one RULER task. */
export function rulerMethodSummary(view: TaskView, method: string): RulerSummary {
  return rulerSummary(view.lengths, perLength(view, method, headlineValue));
}

function arrow(better: "higher" | "lower" | "none"): string {
  return better === "higher" ? " ↑" : better === "lower" ? " ↓" : "";
}

function allMethods(report: Report): string[] {
  return distinct(report.cells.map((cell) => cell.method));
}

function summarySection(views: TaskView[], report: Report): Section {
  const columns: Column[] = [{ label: "method" }];
  for (const view of views) {
    const label = headlineLabel(view);
    columns.push({ label: `${view.task} (${label.name}${arrow(label.better)})`, align: "right" });
  }
  const rows = allMethods(report).map((method) => [
    method,
    ...views.map((view) => {
      if (!view.groups.has(method)) return "–";
      const values = perLength(view, method, headlineValue);
      if (values.some((value) => value === null)) return "incomplete";
      return formatFixed(mean(values as number[]));
    }),
  ]);
  return {
    id: "summary",
    title: "Summary",
    note:
      "Each entry is the mean over the task's lengths of the seed-mean headline metric. RULER's entry is " +
      "its Avg; a method with any failed or missing length shows “incomplete” instead of a partial mean.",
    tables: [{ columns, rows }],
  };
}

function resultsByLengthSection(views: TaskView[]): Section {
  const tables = views.map((view): Table => {
    const label = headlineLabel(view);
    return {
      caption: `${view.task}: ${label.name}${arrow(label.better)} by length (seed mean [95% interval] and n)`,
      columns: [
        { label: "method" },
        { label: "seeds" },
        ...view.lengths.map((length): Column => ({ label: formatLength(length), align: "right" })),
      ],
      rows: view.methods.map((method) => {
        const byLength = view.groups.get(method)!;
        const seeds = distinct([...byLength.values()].flatMap((group) => group.seeds)).sort((a, b) => a - b);
        return [method, seeds.join(", "), ...view.lengths.map((length) => groupText(byLength.get(length)))];
      }),
    };
  });
  return {
    id: "by-length",
    title: "Results by length",
    note: "Across seeds the interval combines the per-seed sampling intervals and widens by the Particle " +
      "Data Group scale factor √(χ²/(k−1)) when seeds disagree by more than sampling noise explains.",
    tables,
  };
}

function groupText(group: CellGroup | undefined): string {
  if (group === undefined) return "–";
  if (!groupOk(group)) {
    const bad = group.cells.find((cell) => cell.status.state !== "ok")!;
    return bad.status.state;
  }
  if (group.family === "babilong" || group.family === "perplexity") return formatFixed(headlineValue(group));
  const aggregate = groupPrimaryAggregate(group);
  if (aggregate === undefined) return "–";
  const interval = aggregate.lo === null
    ? ""
    : ` [${formatFixed(aggregate.lo)}, ${formatFixed(aggregate.hi)}]`;
  return `${formatFixed(aggregate.value)}${interval} n=${aggregate.n}`;
}

function rulerSection(views: TaskView[]): Section | undefined {
  const rulerViews = views.filter((view) => view.family === "ruler");
  if (rulerViews.length === 0) return undefined;
  const tables: Table[] = [];
  for (const view of rulerViews) {
    tables.push({
      caption: `${view.task}: score per length, averages and effective length`,
      columns: [
        { label: "method" },
        ...view.lengths.map((length): Column => ({ label: formatLength(length), align: "right" })),
        { label: "Avg", align: "right" },
        { label: "wAvg (inc)", align: "right" },
        { label: "wAvg (dec)", align: "right" },
        { label: `effective length (> ${RULER_EFFECTIVE_THRESHOLD})`, align: "right" },
      ],
      rows: view.methods.map((method) => {
        const summary = rulerMethodSummary(view, method);
        return [
          method,
          ...summary.perLength.map((score) => formatFixed(score)),
          formatFixed(summary.avg),
          formatFixed(summary.wAvgInc),
          formatFixed(summary.wAvgDec),
          summary.effectiveLength === null ? "none" : formatLength(summary.effectiveLength),
        ];
      }),
    });
    const subtasks = distinct(
      [...view.groups.values()].flatMap((byLength) =>
        [...byLength.values()].flatMap((group) =>
          group.cells.flatMap((cell) => Object.keys(cell.extras.ruler?.tasks ?? {}))
        )
      ),
    );
    tables.push({
      caption: `${view.task}: per-task scores (mean over lengths and seeds)`,
      columns: [{ label: "method" }, ...subtasks.map((name): Column => ({ label: name, align: "right" }))],
      rows: view.methods.map((method) => [
        method,
        ...subtasks.map((name) => {
          const values = perLength(
            view,
            method,
            (group) => groupCellMean(group, (cell) => cell.extras.ruler?.tasks[name]?.score),
          );
          return values.some((value) => value === null) ? "–" : formatFixed(mean(values as number[]));
        }),
      ]),
    });
  }
  return {
    id: "ruler",
    title: "RULER",
    note: "Per length: the unweighted mean of the task scores. Avg: the mean over lengths; wAvg (inc/dec): " +
      "lengths weighted 1…k or k…1, divided by k(k+1)/2 (21 for six lengths). Effective length: the longest " +
      `length reached, from the shortest up, while every score exceeds ${RULER_EFFECTIVE_THRESHOLD}.`,
    tables,
  };
}

function babilongSection(views: TaskView[]): Section | undefined {
  const babilongViews = views.filter((view) => view.family === "babilong");
  if (babilongViews.length === 0) return undefined;
  const tables: Table[] = [];
  for (const view of babilongViews) {
    tables.push({
      caption: `${view.task}: qa1–qa5 average accuracy per length`,
      columns: [
        { label: "method" },
        ...view.lengths.map((length): Column => ({ label: formatLength(length), align: "right" })),
        { label: "mean", align: "right" },
      ],
      rows: view.methods.map((method) => {
        const values = perLength(view, method, headlineValue);
        const complete = values.every((value) => value !== null);
        return [
          method,
          ...values.map((value) => formatFixed(value)),
          complete ? formatFixed(mean(values as number[])) : "–",
        ];
      }),
    });
    const qaNames = distinct([
      ...BABILONG_HEADLINE_TASKS,
      ...[...view.groups.values()].flatMap((byLength) =>
        [...byLength.values()].flatMap((group) =>
          group.cells.flatMap((cell) => Object.keys(cell.extras.babilong?.tasks ?? {}))
        )
      ),
    ]).sort((a, b) => Number(a.slice(2)) - Number(b.slice(2)));
    tables.push({
      caption: `${view.task}: accuracy per bAbI task (mean over lengths and seeds)`,
      columns: [{ label: "method" }, ...qaNames.map((name): Column => ({ label: name, align: "right" }))],
      rows: view.methods.map((method) => [
        method,
        ...qaNames.map((name) => {
          const values = perLength(
            view,
            method,
            (group) => groupCellMean(group, (cell) => cell.extras.babilong?.tasks[name]?.accuracy),
          );
          return values.some((value) => value === null) ? "–" : formatFixed(mean(values as number[]));
        }),
      ]),
    });
  }
  return {
    id: "babilong",
    title: "BABILong",
    note: "The headline is the mean accuracy over qa1–qa5; a cell missing any of the five counts as missing.",
    tables,
  };
}

function perplexitySection(views: TaskView[]): Section | undefined {
  const pplViews = views.filter((view) => view.family === "perplexity");
  if (pplViews.length === 0) return undefined;
  const tables = pplViews.map((view): Table => ({
    caption: `${view.task}: perplexity (seed mean) per length`,
    columns: [
      { label: "method" },
      { label: "length", align: "right" },
      { label: "token PPL ↓", align: "right" },
      { label: "word PPL ↓", align: "right" },
      { label: "byte PPL ↓", align: "right" },
      { label: "bits/byte ↓", align: "right" },
      { label: "window / stride", align: "right" },
      { label: "protocol" },
    ],
    rows: view.methods.flatMap((method) =>
      view.lengths.map((length) => {
        const group = view.groups.get(method)?.get(length);
        if (group === undefined || !groupOk(group)) {
          return [
            method,
            formatLength(length),
            group === undefined ? "–" : "failed",
            "–",
            "–",
            "–",
            "–",
            "–",
          ];
        }
        const pick = (field: "tokenPerplexity" | "wordPerplexity" | "bytePerplexity" | "bitsPerByte") =>
          formatFixed(
            groupCellMean(group, (cell) => cell.extras.perplexity?.[field]),
            field === "bitsPerByte" ? 4 : 3,
          );
        const protocol = group.cells[0].extras.perplexity?.protocol;
        return [
          method,
          formatLength(length),
          pick("tokenPerplexity"),
          pick("wordPerplexity"),
          pick("bytePerplexity"),
          pick("bitsPerByte"),
          protocol ? `${protocol.window} / ${protocol.stride}` : "–",
          protocol
            ? `${protocol.kind}, ${protocol.scoring}${
              protocol.contextResetPerWindow ? ", context reset per window" : ""
            }, BOS ${protocol.bos}`
            : "–",
        ];
      })
    ),
  }));
  return {
    id: "perplexity",
    title: "Perplexity",
    note:
      "Token PPL compares only under the same tokenizer and windowing; bits per byte does not depend on the " +
      "tokenizer (benchmarks.md §4.5).",
    tables,
  };
}

/** Depth × length grid of one method's position sweep: mean score over seeds, null where missing. */
export function sweepGrid(view: TaskView, method: string): { depths: number[]; scores: (number | null)[][] } {
  const byLength = view.groups.get(method) ?? new Map<number, CellGroup>();
  const depths = distinct(
    [...byLength.values()].flatMap((group) =>
      group.cells.flatMap((cell) =>
        cell.extras.positionSweep?.points.map((point) => point.depthPercent) ?? []
      )
    ),
  ).sort((a, b) => a - b);
  const scores = depths.map((depth) =>
    view.lengths.map((length) => {
      const group = byLength.get(length);
      if (group === undefined) return null;
      return groupCellMean(group, (cell) =>
        cell.extras.positionSweep?.points.find((p) => p.depthPercent === depth)?.score);
    })
  );
  return { depths, scores };
}

function positionSweepSection(views: TaskView[]): Section | undefined {
  const sweepViews = views.filter((view) => view.family === "position-sweep");
  if (sweepViews.length === 0) return undefined;
  const tables = sweepViews.flatMap((view) =>
    view.methods.map((method): Table => {
      const grid = sweepGrid(view, method);
      return {
        caption: `${view.task} · ${method}: score by needle depth × length`,
        columns: [
          { label: "depth" },
          ...view.lengths.map((length): Column => ({ label: formatLength(length), align: "right" })),
        ],
        rows: grid.depths.map((depth, i) => [
          `${depth}%`,
          ...grid.scores[i].map((score) => formatFixed(score, 1)),
        ]),
      };
    })
  );
  return { id: "position-sweep", title: "Position sweeps", tables };
}

function attentionSection(report: Report): Section | undefined {
  const rows: string[][] = [];
  const definitions = new Map<string, string>();
  for (const group of groupCells(report.cells)) {
    if (!groupOk(group)) continue;
    const names = distinct(group.cells.flatMap((cell) => Object.keys(cell.extras.attention ?? {})));
    for (const name of names) {
      const value = groupCellMean(group, (cell) => cell.extras.attention?.[name]?.value);
      rows.push([group.method, group.task, formatLength(group.length), name, formatFixed(value, 4)]);
      const definition = group.cells.find((cell) =>
        cell.extras.attention?.[name]
      )!.extras.attention![name].definition;
      definitions.set(name, definition);
    }
  }
  if (rows.length === 0) return undefined;
  return {
    id: "attention",
    title: "Attention diagnostics",
    tables: [
      {
        columns: [
          { label: "method" },
          { label: "task" },
          { label: "length", align: "right" },
          { label: "diagnostic" },
          { label: "seed mean", align: "right" },
        ],
        rows,
      },
      {
        caption: "Definitions, as measured",
        columns: [{ label: "diagnostic" }, { label: "definition" }],
        rows: [...definitions].map(([name, definition]) => [name, definition]),
      },
    ],
  };
}

function costSection(report: Report): Section {
  const rows = allMethods(report).map((method) => {
    const cells = report.cells.filter((cell) => cell.method === method);
    const ok = cells.filter((cell) => cell.status.state === "ok");
    const average = (values: (number | null)[]) => {
      const known = values.filter((value): value is number => value !== null);
      return known.length === 0 ? null : mean(known);
    };
    const params = distinct(cells.map((cell) => cell.trainableParameters)).sort((a, b) => a - b);
    const memory = ok.map((cell) => cell.peakGpuMemoryBytes).filter((value): value is number =>
      value !== null
    );
    const trainRate = average(ok.map((cell) => cell.trainTokensPerSecond));
    const evalRate = average(ok.map((cell) => cell.evalTokensPerSecond));
    const failed = cells.filter((cell) => cell.status.state === "failed").length;
    const skipped = cells.filter((cell) => cell.status.state === "skipped").length;
    return [
      method,
      params.map((count) => `${formatCount(count)} (${count})`).join(", "),
      trainRate === null ? "–" : formatCount(trainRate),
      evalRate === null ? "–" : formatCount(evalRate),
      memory.length === 0 ? "–" : formatBytes(Math.max(...memory)),
      `${formatFixed(cells.reduce((sum, cell) => sum + cell.wallTimeSeconds, 0), 1)} s`,
      `${ok.length} / ${failed} / ${skipped}`,
    ];
  });
  return {
    id: "cost",
    title: "Cost",
    note: "Tokens/s are means over finished cells; peak memory is the maximum; wall time is the total.",
    tables: [{
      columns: [
        { label: "method" },
        { label: "trainable params", align: "right" },
        { label: "train tokens/s", align: "right" },
        { label: "eval tokens/s", align: "right" },
        { label: "peak GPU memory", align: "right" },
        { label: "wall time", align: "right" },
        { label: "ok / failed / skipped", align: "right" },
      ],
      rows,
    }],
  };
}

function problemsSection(report: Report): Section | undefined {
  const rows = report.cells.filter((cell) => cell.status.state !== "ok").map((cell) => [
    cell.method,
    cell.task,
    formatLength(cell.length),
    String(cell.seed),
    cell.status.state,
    cell.status.state === "failed"
      ? cell.status.error
      : cell.status.state === "skipped"
      ? cell.status.reason
      : "",
  ]);
  if (rows.length === 0) return undefined;
  return {
    id: "problems",
    title: "Failed and skipped cells",
    tables: [{
      columns: [
        { label: "method" },
        { label: "task" },
        { label: "length", align: "right" },
        { label: "seed", align: "right" },
        { label: "state" },
        { label: "message" },
      ],
      rows,
    }],
  };
}

function environmentSection(report: Report): Section {
  const env = report.environment;
  const adapter = env.adapter;
  const rows: string[][] = [
    ["harness", `${env.harness.name} ${env.harness.version}`],
    ["Deno / V8 / TypeScript", `${env.deno} / ${env.v8} / ${env.typescript}`],
    ["OS / arch", `${env.os} / ${env.arch} (${env.target})`],
    ["CPU", `${env.cpu.model} × ${env.cpu.logicalCores} logical cores`],
    ["memory", env.memoryBytes === "unknown" ? "unknown" : formatBytes(env.memoryBytes)],
    [
      "adapter",
      adapter === null
        ? "none"
        : `${adapter.description || "(no description)"}; vendor ${adapter.vendor || "?"}, architecture ${
          adapter.architecture || "?"
        }, device ${adapter.device || "?"}${
          adapter.subgroupSizes ? `, subgroups ${adapter.subgroupSizes[0]}–${adapter.subgroupSizes[1]}` : ""
        }${adapter.isFallbackAdapter ? " (fallback adapter)" : ""}`,
    ],
    [
      "git",
      `${env.git.commit} on ${env.git.branch}${
        env.git.dirty === true ? " (dirty tree)" : env.git.dirty === "unknown" ? " (dirty: unknown)" : ""
      }`,
    ],
    ["captured", env.capturedAt],
  ];
  const tables: Table[] = [{ columns: [{ label: "field" }, { label: "value" }], rows }];
  if (adapter !== null) {
    tables.push({
      caption: "Adapter limits",
      columns: [{ label: "limit" }, { label: "value", align: "right" }],
      rows: Object.entries(adapter.limits).map(([name, value]) => [name, String(value)]),
    });
    tables.push({
      caption: "Adapter features",
      columns: [{ label: "feature" }],
      rows: adapter.features.map((feature) => [feature]),
    });
  }
  return { id: "environment", title: "Environment", tables };
}

function provenanceSection(report: Report): Section {
  const hashRows: string[][] = [
    ["suite file", report.suite.name, report.suite.fileHash],
    ["suite config", report.suite.name, report.suite.configHash],
    [
      "base model",
      `${report.hashes.baseModel.name} (${report.hashes.baseModel.dtype})`,
      report.hashes.baseModel.hash,
    ],
    ["tokenizer", report.hashes.tokenizer.name, report.hashes.tokenizer.hash],
    ...Object.entries(report.hashes.methodConfigs).map(([name, hash]) => ["method config", name, hash]),
    ...Object.entries(report.hashes.evaluationSets).map(([name, hash]) => ["evaluation set", name, hash]),
    ...Object.entries(report.hashes.trainingSets).map(([name, hash]) => ["training set", name, hash]),
  ];
  const seedRows = report.cells.map((cell) => [
    cell.method,
    cell.task,
    formatLength(cell.length),
    String(cell.seed),
    Object.entries(cell.seeds).map(([role, seed]) => `${role}=${seed}`).join(", "),
    cell.evaluationSet,
    cell.trainingSet ?? "none",
  ]);
  return {
    id: "provenance",
    title: "Seeds and hashes",
    tables: [
      {
        caption: "Content hashes (sha256)",
        columns: [{ label: "what" }, { label: "name" }, { label: "sha256", mono: true }],
        rows: hashRows,
      },
      {
        caption: "Every seed, per cell",
        columns: [
          { label: "method" },
          { label: "task" },
          { label: "length", align: "right" },
          { label: "seed", align: "right" },
          { label: "seeds by role", mono: true },
          { label: "evaluation set" },
          { label: "training set" },
        ],
        rows: seedRows,
      },
    ],
  };
}

/** Every section of a report, in reading order. */
export function reportSections(report: Report): Section[] {
  const views = taskViews(report);
  const sections: (Section | undefined)[] = [
    summarySection(views, report),
    resultsByLengthSection(views),
    rulerSection(views),
    babilongSection(views),
    perplexitySection(views),
    positionSweepSection(views),
    attentionSection(report),
    costSection(report),
    problemsSection(report),
    environmentSection(report),
    provenanceSection(report),
  ];
  return sections.filter((section): section is Section => section !== undefined);
}

/** One-line headline of a report: suite, cell counts, commit and adapter. */
export function reportHeadline(report: Report): string {
  const ok = report.cells.filter((cell) => cell.status.state === "ok").length;
  const adapter = report.environment.adapter?.description || "no adapter";
  const commit = report.environment.git.commit === "unknown"
    ? "unknown commit"
    : report.environment.git.commit.slice(0, 12);
  return `${report.cells.length} cells (${ok} ok) · commit ${commit}${
    report.environment.git.dirty === true ? " (dirty)" : ""
  } · ${adapter} · ${report.environment.capturedAt}`;
}
