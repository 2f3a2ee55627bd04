import assert from "node:assert/strict";
import { hashJson } from "../src/data/hash.ts";
import {
  buildLeaderboard,
  IncomparableReportsError,
  type Leaderboard,
  parseLeaderboard,
  writeLeaderboard,
} from "../src/harness/leaderboard.ts";
import type { Cell, Report } from "../src/harness/report_schema.ts";
import { babilongCell, makeReport, perplexityCell, rulerCell, standardReport } from "./report_fixture.ts";

/** RULER cells whose per-length scores are `scores` (single task, n = 100, one seed). */
function rulerRun(method: string, scores: Record<number, number>): Cell[] {
  return Object.entries(scores).map(([length, score]) =>
    rulerCell(method, Number(length), 0, { t1: score }, 100)
  );
}

/** A second report of the same suite with other methods and another commit and adapter. */
function secondReport(cells: Cell[]): Report {
  return makeReport(cells, {
    environment: {
      git: { commit: "c".repeat(40), branch: "exp", dirty: false },
      adapter: { ...standardReport().environment.adapter!, description: "NVIDIA H100" },
    },
  });
}

function ranking(leaderboard: Leaderboard, task: string, aggregate: string) {
  const found = leaderboard.rankings.find((r) => r.task === task && r.aggregate === aggregate);
  assert.ok(found, `no ranking ${task}/${aggregate}`);
  return found.entries.map((
    entry,
  ) => [
    entry.rank,
    entry.method,
    entry.source,
    entry.value === null ? null : Number(entry.value.toFixed(4)),
  ]);
}

Deno.test("leaderboard ranks RULER by Avg and both weighted averages", () => {
  const lengths = { 4096: 90, 8192: 80, 16384: 40 };
  const first = makeReport([
    ...rulerRun("lora", lengths),
    ...rulerRun("dora", { 4096: 70, 8192: 70, 16384: 70 }),
  ]);
  const second = secondReport(rulerRun("pissa", { 4096: 50, 8192: 60, 16384: 85 }));
  const leaderboard = buildLeaderboard([{ label: "a.json", report: first }, {
    label: "b.json",
    report: second,
  }], new Date(0));
  // Avg: lora 70, dora 70, pissa 65 (ties share rank 1).
  assert.deepEqual(ranking(leaderboard, "ruler", "avg"), [[1, "lora", "r1", 70], [1, "dora", "r1", 70], [
    3,
    "pissa",
    "r2",
    65,
  ]]);
  // wAvg inc = (1·s1 + 2·s2 + 3·s3)/6: lora 370/6, dora 70, pissa 425/6.
  assert.deepEqual(ranking(leaderboard, "ruler", "wavg-inc"), [
    [1, "pissa", "r2", Number((425 / 6).toFixed(4))],
    [2, "dora", "r1", 70],
    [3, "lora", "r1", Number((370 / 6).toFixed(4))],
  ]);
  // wAvg dec = (3·s1 + 2·s2 + 1·s3)/6: lora 470/6, dora 70, pissa 355/6.
  assert.deepEqual(ranking(leaderboard, "ruler", "wavg-dec"), [
    [1, "lora", "r1", Number((470 / 6).toFixed(4))],
    [2, "dora", "r1", 70],
    [3, "pissa", "r2", Number((355 / 6).toFixed(4))],
  ]);
  const avg = leaderboard.rankings.find((r) => r.aggregate === "avg")!;
  assert.deepEqual(avg.lengths, [4096, 8192, 16384]);
  assert.deepEqual(avg.entries[0].perLength, { "4096": 90, "8192": 80, "16384": 40 });
  assert.equal(avg.better, "higher");
  assert.equal(leaderboard.generatedAt, "1970-01-01T00:00:00.000Z");
});

Deno.test("leaderboard ranks BABILong by the qa1–qa5 mean and perplexity lower-is-better", () => {
  const first = makeReport([
    // lora: qa1..qa5 = 100, 50, 50, 50, 50 → 60; qa6 is not part of the headline.
    babilongCell("lora", 4096, 0, { qa1: 20, qa2: 10, qa3: 10, qa4: 10, qa5: 10, qa6: 0 }),
    babilongCell("dora", 4096, 0, { qa1: 14, qa2: 14, qa3: 14, qa4: 14, qa5: 14 }), // 70
    perplexityCell("lora", 4096, 0, 2000), // exp(2)
    perplexityCell("dora", 4096, 0, 1900), // exp(1.9): better
  ]);
  const leaderboard = buildLeaderboard([{ label: "a.json", report: first }]);
  assert.deepEqual(ranking(leaderboard, "babilong", "qa1-qa5-avg"), [[1, "dora", "r1", 70], [
    2,
    "lora",
    "r1",
    60,
  ]]);
  assert.deepEqual(ranking(leaderboard, "wikitext", "token-ppl-mean"), [
    [1, "dora", "r1", Number(Math.exp(1.9).toFixed(4))],
    [2, "lora", "r1", Number(Math.exp(2).toFixed(4))],
  ]);
  assert.equal(leaderboard.rankings.find((r) => r.task === "wikitext")!.better, "lower");
});

Deno.test("an entry with a failed length is unranked, listed last, with the reason", () => {
  const failed: Cell = {
    ...rulerCell("dora", 8192, 0, { t1: 99 }, 100),
    status: { state: "failed", error: "out of memory" },
    primaryMetric: null,
    metrics: {},
    extras: {},
  };
  const report = makeReport([
    ...rulerRun("lora", { 4096: 60, 8192: 50 }),
    rulerCell("dora", 4096, 0, { t1: 99 }, 100),
    failed,
  ]);
  const avg = buildLeaderboard([{ label: "a.json", report }]).rankings.find((r) => r.aggregate === "avg")!;
  assert.deepEqual(
    avg.entries.map((entry) => [entry.rank, entry.method, entry.value, entry.incompleteReason]),
    [
      [1, "lora", 55, null],
      [null, "dora", null, "failed at length 8192 (seed 0)"],
    ],
  );
  assert.deepEqual(avg.entries[1].perLength, { "4096": 99, "8192": null });
});

Deno.test("provenance names each source's report hash, commit and adapter", () => {
  const first = standardReport();
  const second = secondReport(rulerRun("pissa", { 4096: 50, 8192: 60 }));
  const leaderboard = buildLeaderboard([{ label: "a.json", report: first }, {
    label: "b.json",
    report: second,
  }]);
  assert.deepEqual(
    leaderboard.sources.map((
      source,
    ) => [source.id, source.label, source.reportHash, source.commit, source.adapter?.description]),
    [
      ["r1", "a.json", hashJson(first), "a".repeat(40), "llvmpipe (LLVM 15.0.6, 256 bits)"],
      ["r2", "b.json", hashJson(second), "c".repeat(40), "NVIDIA H100"],
    ],
  );
  assert.equal(leaderboard.comparability.suiteConfigHash, first.suite.configHash);
  assert.equal(leaderboard.comparability.tokenizer.hash, first.hashes.tokenizer.hash);
  // Position sweeps rank by their primary metric; attention diagnostics are never ranked.
  assert.deepEqual(leaderboard.rankings.map((r) => `${r.task}:${r.aggregate}`), [
    "ruler:avg",
    "ruler:wavg-inc",
    "ruler:wavg-dec",
    "babilong:qa1-qa5-avg",
    "wikitext:token-ppl-mean",
    "niah:primary-mean",
  ]);
});

Deno.test("incomparable reports are refused with the differing field and both values", () => {
  const base = makeReport(rulerRun("lora", { 4096: 60 }));
  const refuse = (other: Report, field: RegExp) => {
    assert.throws(
      () => buildLeaderboard([{ label: "a.json", report: base }, { label: "b.json", report: other }]),
      (error: Error) => {
        assert.ok(error instanceof IncomparableReportsError, String(error));
        assert.match(error.message, field);
        assert.match(error.message, /in a\.json, .* in b\.json\)$/);
        return true;
      },
    );
  };
  const suite = makeReport(rulerRun("dora", { 4096: 60 }), { suiteConfig: { name: "other" } });
  refuse(
    suite,
    new RegExp(
      `suite\\.configHash differs \\("${base.suite.configHash}" in a\\.json, "${suite.suite.configHash}" in b\\.json\\)`,
    ),
  );

  const model = makeReport(rulerRun("dora", { 4096: 60 }));
  model.hashes.baseModel.hash = "1".repeat(64);
  refuse(
    model,
    new RegExp(
      `hashes\\.baseModel\\.hash differs \\("${base.hashes.baseModel.hash}" in a\\.json, "${
        "1".repeat(64)
      }" in b\\.json\\)`,
    ),
  );

  const tokenizer = makeReport(rulerRun("dora", { 4096: 60 }));
  tokenizer.hashes.tokenizer.hash = "2".repeat(64);
  refuse(tokenizer, /hashes\.tokenizer\.hash differs/);

  const samples = makeReport(rulerRun("dora", { 4096: 60 }));
  samples.hashes.evaluationSets["ruler@4096"] = "3".repeat(64);
  refuse(
    samples,
    new RegExp(
      `hashes\\.evaluationSets\\["ruler@4096"\\] differs \\("${
        base.hashes.evaluationSets["ruler@4096"]
      }" in a\\.json, "${"3".repeat(64)}"`,
    ),
  );
});

Deno.test("leaderboard.json round trip, and a bad file names the field path", async () => {
  const folder = await Deno.makeTempDir();
  try {
    const path = `${folder}/leaderboard.json`;
    const leaderboard = buildLeaderboard([{ label: "a.json", report: standardReport() }], new Date(0));
    await writeLeaderboard(path, leaderboard);
    assert.deepEqual(await parseLeaderboard(path), leaderboard);
    const raw = JSON.parse(await Deno.readTextFile(path));
    raw.rankings[0].entries[0].rank = 0;
    await Deno.writeTextFile(path, JSON.stringify(raw));
    await assert.rejects(
      parseLeaderboard(path),
      /leaderboard\.json: not a valid leaderboard[\s\S]*rankings\[0\]\.entries\[0\]\.rank/,
    );
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});
