import assert from "node:assert/strict";
import {
  compareReports,
  type Comparison,
  formatComparisonMarkdown,
  formatComparisonText,
} from "../src/harness/compare.ts";
import {
  listHistory,
  loadHistory,
  recordHistory,
  reportBenchPoints,
  toBencherMetricFormat,
  toGithubActionBenchmark,
} from "../src/harness/history.ts";
import type { Cell, Report } from "../src/harness/report_schema.ts";
import { makeReport, perplexityCell, rulerCell } from "./report_fixture.ts";

/** A single-seed RULER cell with two tasks of k correct out of 500 each (n = 1000 overall). */
function ruler(method: string, k: number, length = 4096, seed = 0): Cell {
  return rulerCell(method, length, seed, { t1: k, t2: k }, 500);
}

function rows(comparison: Comparison, verdict: string) {
  return comparison.rows.filter((row) => row.verdict === verdict).map((row) =>
    `${row.task}/${row.method}/${row.length}/${row.measure}`
  );
}

const baseline = () =>
  makeReport([ruler("lora", 400), ruler("dora", 400), perplexityCell("lora", 4096, 0, 2500)]);

Deno.test("compare flags exactly the constructed regressions and improvements", () => {
  // lora 80% → 68%: Wilson intervals [77.4, 82.3] and [65.0, 70.8] are disjoint → regression.
  // dora 80% → 88%: disjoint above → improvement.
  // token PPL exp(2.5) → exp(2.53): +3.05% > 2% → regression; bits/byte is linear in the NLL: +1.2% → unchanged.
  const candidate = makeReport([
    ruler("lora", 340),
    ruler("dora", 440),
    perplexityCell("lora", 4096, 0, 2530),
  ]);
  const comparison = compareReports(baseline(), candidate);
  assert.deepEqual(rows(comparison, "regression"), ["ruler/lora/4096/score", "wikitext/lora/4096/token_ppl"]);
  assert.deepEqual(rows(comparison, "improvement"), ["ruler/dora/4096/score"]);
  assert.deepEqual(rows(comparison, "unchanged"), ["wikitext/lora/4096/bpb"]);
  assert.equal(comparison.exitCode, 1);
  assert.deepEqual(comparison.warnings, []);
  const pplRow = comparison.rows.find((row) => row.measure === "token_ppl")!;
  assert.match(pplRow.reason, /^\+3\.05% > \+2\.00%$/);
});

Deno.test("noise within the intervals is never flagged, even when the drop exceeds one half-width", () => {
  // 80% → 76%: the drop (4 points) exceeds both half-widths (~2.5) but the intervals overlap
  // ([77.4, 82.3] vs [73.3, 78.5]); the disjoint-interval rule stays quiet.
  // The perplexity NLL moves by at most ±10 nats of 2500 (±1%), inside the 2% threshold.
  for (let k = 380; k <= 420; k++) {
    const comparison = compareReports(
      baseline(),
      makeReport([
        ruler("lora", k),
        ruler("dora", 400),
        perplexityCell("lora", 4096, 0, 2500 + (k - 400) / 2),
      ]),
    );
    assert.equal(comparison.regressions, 0, `k=${k}: ${formatComparisonText(comparison)}`);
    assert.equal(comparison.exitCode, 0);
  }
  const edge = compareReports(baseline(), makeReport([ruler("lora", 380)])).rows[0];
  const [lo, hi] = edge.bInterval!;
  assert.ok(edge.a! - edge.b! > Math.max(edge.b! - lo, hi - edge.b!, edge.a! - edge.aInterval![0]));
  assert.equal(edge.verdict, "unchanged");
  // A 1.9% perplexity rise is under the 2% threshold; 2.1% is over it.
  const rise = (relative: number) => 1000 * Math.log(Math.exp(2.5) * (1 + relative));
  assert.equal(
    compareReports(
      baseline(),
      makeReport([ruler("lora", 400), ruler("dora", 400), perplexityCell("lora", 4096, 0, rise(0.019))]),
    ).regressions,
    0,
  );
  assert.equal(
    compareReports(
      baseline(),
      makeReport([ruler("lora", 400), ruler("dora", 400), perplexityCell("lora", 4096, 0, rise(0.021))]),
    ).regressions,
    1,
  );
});

Deno.test("two agreeing seeds keep their sampling interval, so a shared drop is caught", () => {
  const a = makeReport([ruler("lora", 400, 4096, 0), ruler("lora", 402, 4096, 1)]);
  const b = makeReport([ruler("lora", 340, 4096, 0), ruler("lora", 342, 4096, 1)]);
  const comparison = compareReports(a, b);
  assert.deepEqual(rows(comparison, "regression"), ["ruler/lora/4096/score"]);
  assert.deepEqual(comparison.rows[0].seeds, [0, 1]);
  // 80.1% over n = 2000: about ±1.75 points, not the ±25 a two-seed Student-t interval would give.
  const [lo, hi] = comparison.rows[0].aInterval!;
  assert.ok(hi - lo < 4, `A interval [${lo}, ${hi}]`);
});

Deno.test("accuracyMinDelta adds a minimum effect size on top of disjoint intervals", () => {
  const candidate = makeReport([
    ruler("lora", 340),
    ruler("dora", 400),
    perplexityCell("lora", 4096, 0, 2500),
  ]);
  assert.equal(compareReports(baseline(), candidate).regressions, 1);
  assert.equal(compareReports(baseline(), candidate, { accuracyMinDelta: 15 }).regressions, 0);
});

Deno.test("timing and memory rules are off by default and ratio-based when on", () => {
  const candidate = makeReport([
    ruler("lora", 400),
    ruler("dora", 400),
    perplexityCell("lora", 4096, 0, 2500),
  ]);
  candidate.cells[0].trainTokensPerSecond = 500; // 2× slower than 1000
  candidate.cells[1].peakGpuMemoryBytes = 3 * 256 * 2 ** 20; // 3× bigger
  assert.equal(compareReports(baseline(), candidate).regressions, 0);
  const timed = compareReports(baseline(), candidate, { timingRatio: 1.5 });
  assert.deepEqual(rows(timed, "regression"), ["ruler/lora/4096/train tokens/s"]);
  assert.equal(compareReports(baseline(), candidate, { timingRatio: 2.5 }).regressions, 0);
  const memory = compareReports(baseline(), candidate, { memoryRatio: 2 });
  assert.deepEqual(rows(memory, "regression"), ["ruler/dora/4096/peak memory"]);
});

Deno.test("a cell that fails in B regresses; added, removed and re-seeded groups are listed", () => {
  const a = makeReport([
    ruler("lora", 400),
    ruler("dora", 400),
    ruler("pissa", 400, 8192, 0),
    ruler("pissa", 400, 8192, 1),
  ]);
  const failed: Cell = {
    ...ruler("lora", 400),
    status: { state: "failed", error: "device lost" },
    primaryMetric: null,
    metrics: {},
    extras: {},
  };
  const b = makeReport([failed, ruler("dora", 400), ruler("pissa", 400, 8192, 0), ruler("rslora", 400)]);
  const comparison = compareReports(a, b);
  assert.deepEqual(rows(comparison, "regression"), ["ruler/lora/4096/status"]);
  assert.match(
    comparison.rows.find((row) => row.measure === "status")!.reason,
    /A ok; B failed: device lost/,
  );
  // pissa ran seeds {0, 1} in A and {0} in B: a different measurement, not a comparison.
  assert.deepEqual(comparison.removed, [{ method: "pissa", task: "ruler", length: 8192, seeds: [0, 1] }]);
  assert.deepEqual(comparison.added, [
    { method: "pissa", task: "ruler", length: 8192, seeds: [0] },
    { method: "rslora", task: "ruler", length: 4096, seeds: [0] },
  ]);
  assert.equal(comparison.exitCode, 1);
  const text = formatComparisonText(comparison);
  assert.match(text, /^1 regression\(s\), 0 improvement\(s\), 1 within noise; exit code 1\n/);
  assert.match(text, /REGRESSION {2}ruler {2}lora {4}4K {6}0 {6}status/);
  assert.match(text, /removed: ruler\/pissa\/8K seeds 0,1/);
  assert.match(text, /added: ruler\/rslora\/4K seeds 0/);
});

Deno.test("environment changes that make numbers incomparable are warnings, not failures", () => {
  const a = baseline();
  const b: Report = makeReport([
    ruler("lora", 400),
    ruler("dora", 400),
    perplexityCell("lora", 4096, 0, 2500),
  ], {
    suiteConfig: { name: "fixture", lengths: [4096] },
    environment: {
      adapter: { ...a.environment.adapter!, description: "NVIDIA H100" },
      git: { commit: "b".repeat(40), branch: "main", dirty: true },
    },
  });
  b.hashes.evaluationSets["ruler@4096"] = "f".repeat(64);
  const comparison = compareReports(a, b);
  assert.equal(comparison.exitCode, 0);
  const warnings = comparison.warnings.join("\n");
  assert.match(
    warnings,
    new RegExp(`suite\\.configHash differs \\(A "${a.suite.configHash}", B "${b.suite.configHash}"\\)`),
  );
  assert.match(warnings, /environment\.adapter differs .*llvmpipe.*NVIDIA H100/);
  assert.match(warnings, /hashes\.evaluationSets\["ruler@4096"\] differs/);
  assert.match(warnings, /dirty flag is true/);
  const markdown = formatComparisonMarkdown(comparison, true);
  assert.match(markdown, /^## longtune comparison\n/);
  assert.match(markdown, /\| verdict \| task \| method \| length \| seeds \| measure \| A \| B \| why \|/);
  assert.match(markdown, /### Warnings/);
});

Deno.test("llvmpipe's OpenGL and Vulkan paths (one description) differ by subgroup range; older reports lack it", () => {
  const a = baseline();
  const withSizes = (sizes: [number, number] | undefined): Report => {
    const r = structuredClone(a);
    const adapter = { ...r.environment.adapter! };
    if (sizes) adapter.subgroupSizes = sizes;
    else delete adapter.subgroupSizes;
    r.environment.adapter = adapter;
    return r;
  };
  const warned = (x: Report, y: Report) =>
    compareReports(x, y).warnings.some((w) => w.startsWith("environment.adapter differs"));
  assert.equal(warned(withSizes([4, 128]), withSizes([8, 8])), true);
  assert.equal(warned(withSizes([4, 128]), withSizes([4, 128])), false);
  assert.equal(warned(withSizes(undefined), withSizes([8, 8])), false, "an older report is not flagged");
});

Deno.test("history records per commit, replaces on re-record, and names bad fields", async () => {
  const folder = await Deno.makeTempDir();
  try {
    const path = `${folder}/history.json`;
    assert.deepEqual(await loadHistory(path), { schemaVersion: 1, entries: [] });
    const first = baseline();
    const second = makeReport(first.cells, {
      environment: { git: { commit: "b".repeat(40), branch: "main", dirty: false } },
    });
    await recordHistory(path, first, new Date("2026-01-01T00:00:00Z"));
    await recordHistory(path, second, new Date("2026-01-02T00:00:00Z"));
    const rerun = makeReport([ruler("lora", 390)], {
      environment: { git: { commit: "a".repeat(40), branch: "main", dirty: false } },
    });
    await recordHistory(path, rerun, new Date("2026-01-03T00:00:00Z"));
    const history = await loadHistory(path);
    // Commit a was replaced in place by the re-run: one RULER group = 1 metric + 4 cost measures.
    // Commit b: 2 RULER groups × 5 + the perplexity group × (2 metrics + 4 cost measures) = 16.
    assert.deepEqual(listHistory(history).map((entry) => [entry.commit[0], entry.recordedAt, entry.points]), [
      ["a", "2026-01-03T00:00:00.000Z", 5],
      ["b", "2026-01-02T00:00:00.000Z", 16],
    ]);
    assert.equal(history.entries[0].points[0].value, 78);

    const raw = JSON.parse(await Deno.readTextFile(path));
    raw.entries[1].commit = raw.entries[0].commit;
    await Deno.writeTextFile(path, JSON.stringify(raw));
    await assert.rejects(
      loadHistory(path),
      new RegExp(
        `${path}: not a valid history[\\s\\S]*entries\\[1\\]\\.commit: expected one entry per commit`,
      ),
    );
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

/** One RULER cell with a hand-written interval, so every exported number is known exactly. */
function exportReport(): Report {
  const cell = ruler("lora", 400);
  cell.metrics.score.ci95 = { lo: 77.5, hi: 82.25, method: "wilson" };
  return makeReport([cell]);
}

Deno.test("github-action-benchmark export is exactly the customBiggerIsBetter / customSmallerIsBetter arrays", () => {
  const gab = toGithubActionBenchmark(reportBenchPoints(exportReport()));
  assert.equal(
    JSON.stringify(gab),
    JSON.stringify({
      customBiggerIsBetter: [
        {
          name: "ruler/lora/4096/score",
          unit: "%",
          value: 80,
          range: "±2.5",
          extra: "n=1000; 95% CI [77.5, 82.25]; seeds 0",
        },
        { name: "ruler/lora/4096/train-tokens-per-second", unit: "tokens/s", value: 1000, extra: "seeds 0" },
        { name: "ruler/lora/4096/eval-tokens-per-second", unit: "tokens/s", value: 4000, extra: "seeds 0" },
      ],
      customSmallerIsBetter: [
        { name: "ruler/lora/4096/wall-time", unit: "s", value: 12, extra: "seeds 0" },
        { name: "ruler/lora/4096/peak-gpu-memory", unit: "bytes", value: 268435456, extra: "seeds 0" },
      ],
    }),
  );
  // Every entry has exactly the fields §7.1 allows.
  for (const entry of [...gab.customBiggerIsBetter, ...gab.customSmallerIsBetter]) {
    assert.deepEqual(
      Object.keys(entry).filter((key) => !["name", "unit", "value", "range", "extra"].includes(key)),
      [],
    );
  }
});

Deno.test("Bencher Metric Format export is exactly {benchmark: {measure: {value, lower_value, upper_value}}}", () => {
  const bmf = toBencherMetricFormat(reportBenchPoints(exportReport()));
  assert.equal(
    JSON.stringify(bmf),
    JSON.stringify({
      "ruler/lora/4096": {
        score: { value: 80, lower_value: 77.5, upper_value: 82.25 },
        "train-tokens-per-second": { value: 1000 },
        "eval-tokens-per-second": { value: 4000 },
        "wall-time": { value: 12 },
        "peak-gpu-memory": { value: 268435456 },
      },
    }),
  );
  const ppl = toBencherMetricFormat(reportBenchPoints(makeReport([perplexityCell("lora", 8192, 0, 2000)])));
  assert.deepEqual(ppl["wikitext/lora/8192"]["token-ppl"], { value: Math.exp(2) });
  assert.deepEqual(ppl["wikitext/lora/8192"].bpb, { value: 2000 / (4000 * Math.LN2) });
});
