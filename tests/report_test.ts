import assert from "node:assert/strict";
import { rulerSummary, seedMean, tQuantile975 } from "../src/harness/aggregate.ts";
import { captureEnvironment, readGitState } from "../src/harness/environment.ts";
import { renderHtml, reportCharts } from "../src/harness/render_html.ts";
import { renderMarkdown } from "../src/harness/render_md.ts";
import {
  environmentSchema,
  type Metric,
  parseReport,
  type Report,
  SchemaValidationError,
  validateReport,
  writeReport,
} from "../src/harness/report_schema.ts";
import { generateSchemaFiles } from "../src/harness/schemas/make.ts";
import { lineChart, logTicks, niceTicks, scatterChart, viridis } from "../src/harness/svg.ts";
import { makeReport, rulerCell, standardReport, wilson } from "./report_fixture.ts";

/** Runs `mutate` on a copy of the standard report and returns the validation issues' paths and messages. */
function issuesOf(mutate: (report: Report) => void): { path: string; message: string }[] {
  const report = structuredClone(standardReport());
  mutate(report);
  try {
    validateReport(report, "mutated.json");
  } catch (error) {
    assert.ok(error instanceof SchemaValidationError, `expected a SchemaValidationError, got ${error}`);
    assert.match(error.message, /^mutated\.json: not a valid report/);
    return error.issues;
  }
  assert.fail("the mutated report was accepted");
}

function assertIssue(issues: { path: string; message: string }[], path: string, message: RegExp) {
  const found = issues.find((issue) => issue.path === path && message.test(issue.message));
  assert.ok(found, `no issue at ${path} matching ${message}; got ${JSON.stringify(issues, null, 1)}`);
}

Deno.test("fixture Wilson interval matches the textbook value for 8/10", () => {
  const { lo, hi } = wilson(8, 10);
  assert.ok(Math.abs(lo - 49.02) < 0.01 && Math.abs(hi - 94.33) < 0.01, `got [${lo}, ${hi}]`);
});

Deno.test("schema accepts the standard fixture report", () => {
  const report = validateReport(standardReport());
  assert.equal(report.cells.length, 32);
});

Deno.test("schema rejects bad reports with the field path and what was expected", () => {
  assertIssue(
    issuesOf((r) => (r.cells[0].metrics.score as unknown as { value: unknown }).value = "85"),
    "cells[0].metrics.score.value",
    /expected number, received string/,
  );
  assertIssue(
    issuesOf((r) => (r.cells[1].metrics.accuracy as Metric).ci95 = null),
    "cells[1].metrics.accuracy.ci95",
    /expected a 95% interval/,
  );
  assertIssue(
    issuesOf((r) => Object.assign(r.cells[0], { colour: "red" })),
    "cells[0]",
    /Unrecognized key: "colour"/,
  );
  assertIssue(
    issuesOf((r) => r.cells[0].metrics.score.value = 50),
    "cells[0].metrics.score.value",
    /mean of extras\.ruler\.tasks/,
  );
  assertIssue(
    issuesOf((r) => r.cells[2].extras.perplexity!.tokenPerplexity = 12),
    "cells[2].extras.perplexity.tokenPerplexity",
    /expected 12\.18\d* from nllNats/,
  );
  assertIssue(issuesOf((r) => r.cells.push(structuredClone(r.cells[0]))), "cells[32]", /cells\[0\] is also/);
  assertIssue(
    issuesOf((r) => r.cells[0].evaluationSet = "nope"),
    "cells[0].evaluationSet",
    /hashes\.evaluationSets/,
  );
  assertIssue(
    issuesOf((r) => r.suite.config.extra = 1),
    "suite.configHash",
    /expected hashJson\(suite\.config\)/,
  );
  assertIssue(issuesOf((r) => r.hashes.tokenizer.hash = "ABC"), "hashes.tokenizer.hash", /pattern/);
  assertIssue(
    issuesOf((r) => r.cells[3].primaryMetric = "missing"),
    "cells[3].primaryMetric",
    /expected the key of one of metrics/,
  );
  assertIssue(
    issuesOf((r) => delete r.cells[3].extras.positionSweep),
    "cells[3].extras.positionSweep",
    /for an ok position-sweep cell/,
  );
  assertIssue(
    issuesOf((r) => r.environment.git.dirty = "maybe" as never),
    "environment.git.dirty",
    /none of the allowed forms: .*expected boolean.*\| .*expected "unknown"/,
  );
  assertIssue(
    issuesOf((r) => r.cells[0].trainingCurve[2].step = 5),
    "cells[0].trainingCurve[2].step",
    /steps to increase/,
  );
  assertIssue(
    issuesOf((r) => (r as { schemaVersion: number }).schemaVersion = 2),
    "schemaVersion",
    /expected 1/,
  );
});

Deno.test("perplexity under longlora has no word or byte figures, and they must then be null", () => {
  const report = standardReport();
  const ppl = report.cells[2].extras.perplexity!;
  Object.assign(ppl, {
    words: null,
    bytes: null,
    wordPerplexity: null,
    bytePerplexity: null,
    bitsPerByte: null,
  });
  ppl.protocol = { ...ppl.protocol, kind: "longlora", stride: 256 };
  validateReport(report);
  assertIssue(
    issuesOf((r) => Object.assign(r.cells[2].extras.perplexity!, { bytes: null, bytePerplexity: null })),
    "cells[2].extras.perplexity.bitsPerByte",
    /expected null from nllNats, targets, words and bytes/,
  );
});

Deno.test("a failed cell needs no metrics or extras", () => {
  const report = standardReport();
  report.cells[0] = {
    ...report.cells[0],
    status: { state: "failed", error: "device lost" },
    primaryMetric: null,
    metrics: {},
    extras: {},
  };
  validateReport(report);
});

Deno.test("writeReport validates then writes atomically; parseReport names the file and field path", async () => {
  const folder = await Deno.makeTempDir();
  try {
    const path = `${folder}/out/report.json`;
    const report = standardReport();
    await writeReport(path, report);
    assert.deepEqual(await parseReport(path), report);
    assert.deepEqual([...Deno.readDirSync(`${folder}/out`)].map((entry) => entry.name), ["report.json"]);

    const broken = structuredClone(report);
    broken.cells[5].wallTimeSeconds = -1;
    await assert.rejects(
      writeReport(`${folder}/bad.json`, broken),
      /bad\.json: not a valid report[\s\S]*cells\[5\]\.wallTimeSeconds/,
    );
    await assert.rejects(Deno.stat(`${folder}/bad.json`), Deno.errors.NotFound);

    const onDisk = JSON.parse(await Deno.readTextFile(path));
    onDisk.cells[7].metrics.depth_avg.n = 1.5;
    await Deno.writeTextFile(path, JSON.stringify(onDisk));
    await assert.rejects(parseReport(path), (error: Error) => {
      assert.ok(error.message.startsWith(`${path}: not a valid report`), error.message);
      assert.match(error.message, /cells\[7\]\.metrics\.depth_avg\.n: .*expected int/);
      return true;
    });
    await Deno.writeTextFile(path, "{not json");
    await assert.rejects(parseReport(path), new RegExp(`${path}: not JSON`));
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("RULER aggregation reproduces the README's Gemini-1.5-pro row (§1.9)", () => {
  const lengths = [4096, 8192, 16384, 32768, 65536, 131072];
  const summary = rulerSummary(lengths, [96.7, 95.8, 96.0, 95.9, 95.9, 94.4]);
  assert.ok(Math.abs(summary.wAvgInc! - 2005.8 / 21) < 1e-9, `wAvg inc ${summary.wAvgInc}`);
  assert.ok(Math.abs(summary.wAvgDec! - 2017.1 / 21) < 1e-9, `wAvg dec ${summary.wAvgDec}`);
  assert.equal(summary.wAvgInc!.toFixed(2), "95.51");
  assert.equal(summary.wAvgDec!.toFixed(2), "96.05");
  assert.equal(summary.avg!.toFixed(2), "95.78");
  assert.equal(summary.effectiveLength, 131072);
  const failing = rulerSummary(lengths, [90, 86, 85.6, 95, null, 10]);
  assert.equal(failing.effectiveLength, 8192);
  assert.equal(failing.avg, null);
});

Deno.test("seed mean: sampling interval, widened by the PDG scale factor when seeds disagree", () => {
  const metric = (value: number, half: number): Metric => ({
    kind: "accuracy",
    value,
    n: 100,
    ci95: { lo: value - half, hi: value + half, method: "wilson" },
  });
  // One seed: its own interval.
  assert.deepEqual(seedMean([metric(60, 3)]), { value: 60, lo: 57, hi: 63, n: 100, seeds: 1 });
  // Identical seeds: halves in quadrature over k, √(3·3²)/3 = √3, no scaling (χ² = 0).
  const same = seedMean([metric(60, 3), metric(60, 3), metric(60, 3)]);
  assert.ok(
    Math.abs(same.lo! - (60 - Math.sqrt(3))) < 1e-12 && Math.abs(same.hi! - (60 + Math.sqrt(3))) < 1e-12,
  );
  // Seeds 60 and 61 with ±3 (se 3/1.96): χ² = 2·(0.5·1.96/3)² < 1, so the sampling half √2·3/2 stands.
  const agree = seedMean([metric(60, 3), metric(61, 3)]);
  assert.ok(
    Math.abs(agree.hi! - agree.value - (3 * Math.SQRT2) / 2) < 1e-12,
    `agree ${JSON.stringify(agree)}`,
  );
  // Seeds 60 and 62 with ±1: χ² = 2·(1.96)², scale = 1.96·√2, half = (√2/2)·1.96·√2 = 1.96.
  const spread = seedMean([metric(60, 1), metric(62, 1)]);
  assert.equal(spread.value, 61);
  assert.ok(Math.abs(spread.lo! - (61 - 1.959963984540054)) < 1e-9, `lo ${spread.lo}`);
  assert.ok(Math.abs(spread.hi! - (61 + 1.959963984540054)) < 1e-9, `hi ${spread.hi}`);
  // Without intervals: Student-t over seeds; values 10 and 12 → 11 ± 12.706·√2/√2.
  const plain = seedMean([{ kind: "perplexity", value: 10, n: 1, ci95: null }, {
    kind: "perplexity",
    value: 12,
    n: 1,
    ci95: null,
  }]);
  assert.ok(Math.abs(plain.hi! - (11 + 12.706)) < 1e-9, `t interval ${JSON.stringify(plain)}`);
  assert.deepEqual(seedMean([{ kind: "perplexity", value: 10, n: 1, ci95: null }]), {
    value: 10,
    lo: null,
    hi: null,
    n: 1,
    seeds: 1,
  });
  assert.ok(Math.abs(tQuantile975(40) - 2.0211) < 1e-3, `t(40) ${tQuantile975(40)}`);
  assert.ok(Math.abs(tQuantile975(120) - 1.9799) < 1e-3, `t(120) ${tQuantile975(120)}`);
});

Deno.test("Markdown shows the expected summary, RULER, BABILong, perplexity and cost rows", () => {
  const markdown = renderMarkdown(standardReport());
  const expectedLines = [
    "| method | ruler (RULER score ↑) | babilong (qa1–qa5 accuracy ↑) | wikitext (token PPL ↓) | niah (depth\\_avg ↑) |",
    // lora RULER: 4K seeds score 84, 86 → 85; 8K 64, 66 → 65; Avg 75. BABILong 69.5 and 68.5 → 69.
    // Token PPL: mean of exp(2.5), exp(2.501), exp(2.55), exp(2.551) = 12.50.
    "| lora | 75.00 | 69.00 | 12.50 | 76.67 |",
    "| dora | 77.00 | 70.00 | 11.89 | 76.67 |",
    // wAvg inc = (85 + 2·65)/3, dec = (2·85 + 65)/3; 85 ≤ 85.6 so no effective length for lora.
    "| lora | 85.00 | 65.00 | 75.00 | 71.67 | 78.33 | none |",
    "| dora | 87.00 | 67.00 | 77.00 | 73.67 | 80.33 | 4K |",
    "| lora | 69.50 | 68.50 | 69.00 |",
    "| lora | 87.50 | 70.00 | 50.00 | 80.00 | 57.50 |",
    `| lora | 4K | ${((Math.exp(2.5) + Math.exp(2.501)) / 2).toFixed(3)} |`,
    "| lora | 10k (10000) | 1k | 4k | 256 MiB | 192.0 s | 16 / 0 / 0 |",
    "| 0% | 90.0 | 90.0 |",
    "| sinkMass | mean softmax mass on the first 4 positions over layers, heads and answer queries |",
  ];
  for (const line of expectedLines) assert.ok(markdown.includes(line), `missing line ${line}\n${markdown}`);
  assert.match(markdown, /\| git \| a{40} on main \|/);
  assert.match(
    markdown,
    /\| lora \| ruler \| 4K \| 0 \| `replicate=0, data=1000, init=2000` \| ruler@4096 \| train@4096 \|/,
  );
  assert.match(markdown, /\| tokenizer \| byte \| `[0-9a-f]{64}` \|/);
});

Deno.test("Markdown and HTML escape a hostile method name and suite name", () => {
  const report = makeReport([
    rulerCell("<b>x</b>", 4096, 0, { t1: 40 }),
    rulerCell("a|b", 4096, 0, { t1: 30 }),
  ]);
  report.suite.name = "<script>alert(1)</script>";
  const markdown = renderMarkdown(report);
  assert.ok(!markdown.includes("<b>") && !markdown.includes("<script>"), markdown);
  assert.ok(markdown.includes("| &lt;b&gt;x&lt;/b&gt; | 80.00 |"));
  assert.ok(markdown.includes("| a\\|b | 60.00 |"));
  const html = renderHtml(report);
  assert.ok(!html.includes("<b>x") && !html.includes("<script"), "markup injected");
  assert.ok(html.includes("&lt;b&gt;x&lt;/b&gt;") && html.includes("&lt;script&gt;alert(1)&lt;/script&gt;"));
});

Deno.test("HTML is self-contained and has one <svg> per chart", () => {
  const report = standardReport();
  const html = renderHtml(report);
  assert.ok(!/(?:src|href)\s*=\s*["']?\s*(?:https?:)?\/\//i.test(html), "found a network URL in src/href");
  assert.ok(!/<script|<link|<img|<iframe|@import|url\(/i.test(html), "found an external resource");
  assert.match(html, /Content-Security-Policy" content="default-src 'none'/);
  // 3 score-vs-length (ruler, babilong, niah) + 1 perplexity + 2 heatmaps (lora, dora) + 8 loss charts
  // (4 tasks × 2 lengths) + 3 score-vs-parameters.
  const svgCount = html.match(/<svg\b/g)?.length ?? 0;
  assert.equal(svgCount, 17);
  assert.equal(reportCharts(report).length, 17);
  const figures = html.match(/<figure>[\s\S]*?<\/figure>/g) ?? [];
  assert.equal(figures.length, 17);
  for (const figure of figures) assert.equal(figure.match(/<svg\b/g)?.length, 1);
  for (
    const title of [
      "ruler: RULER score vs length",
      "niah · dora: depth × length",
      "wikitext: token perplexity vs length",
    ]
  ) {
    assert.ok(html.includes(`<title>${title}</title>`), `missing chart ${title}`);
  }
  assert.ok(html.includes("ruler: RULER score vs trainable parameters"));
});

Deno.test("line charts break at missing points and mark single points", () => {
  const svg = lineChart({
    title: "t",
    x: { label: "x" },
    y: { label: "y" },
    series: [
      {
        name: "gappy",
        points: [{ x: 1, y: 1 }, { x: 2, y: 2 }, { x: 3, y: null }, { x: 4, y: 3 }, { x: 5, y: 4 }],
      },
      { name: "single", points: [{ x: 3, y: 2.5 }] },
    ],
  });
  const paths = [...svg.matchAll(/<path d="([^"]*)" fill="none" stroke="(#[0-9A-Fa-f]{6})"/g)];
  assert.equal(paths.length, 1, "only the gappy series draws a line");
  assert.equal(paths[0][1].match(/M/g)?.length, 2, "two segments around the missing point");
  assert.equal(paths[0][2], "#0072B2");
  // Four markers for the gappy series, one for the single point, plus one per legend row.
  assert.equal(svg.match(/<circle /g)?.length, 5 + 2);
  assert.ok(svg.includes(">gappy</text>") && svg.includes(">single</text>"));
  const empty = lineChart({ title: "none", x: { label: "x" }, y: { label: "y" }, series: [] });
  assert.ok(empty.includes(">no data</text>"));
});

Deno.test("log scatter drops non-positive x with a note; ticks and colours are known", () => {
  const svg = scatterChart({
    title: "s",
    x: { label: "params", scale: "log" },
    y: { label: "score", min: 0, max: 100 },
    series: [{ name: "zero", points: [{ x: 0, y: 50 }] }, { name: "pos", points: [{ x: 1000, y: 60 }] }],
  });
  assert.ok(svg.includes("1 point(s) with values ≤ 0 not shown on the log axis"));
  assert.deepEqual(niceTicks(0, 100), [0, 20, 40, 60, 80, 100]);
  assert.deepEqual(niceTicks(11.59, 12.81), [11.5, 12, 12.5, 13]);
  assert.deepEqual(logTicks(1000, 100000), [1000, 2000, 5000, 10000, 20000, 50000, 100000]);
  assert.equal(viridis(0), "#440154");
  assert.equal(viridis(1), "#fde725");
});

Deno.test("captureEnvironment fills every field and validates", async () => {
  const env = await captureEnvironment(undefined, { now: new Date("2026-01-01T00:00:00Z") });
  environmentSchema.parse(env);
  assert.equal(env.deno, Deno.version.deno);
  assert.equal(env.arch, Deno.build.arch);
  assert.equal(env.capturedAt, "2026-01-01T00:00:00.000Z");
  assert.equal(env.adapter, null);
  assert.equal(env.cpu.logicalCores, navigator.hardwareConcurrency);
  const withAdapter = await captureEnvironment({
    vendor: "v",
    architecture: "a",
    device: "d",
    description: "desc",
    isFallbackAdapter: false,
    features: ["z", "a"],
    limits: { b: 2, a: 1 },
    subgroupSizes: [8, 8],
  });
  assert.deepEqual(withAdapter.adapter?.features, ["a", "z"]);
  assert.deepEqual(Object.keys(withAdapter.adapter!.limits), ["a", "b"]);
});

Deno.test("git state: a fresh repository, a dirty tree, and no repository", async () => {
  const folder = await Deno.makeTempDir();
  try {
    assert.deepEqual(await readGitState(folder), { commit: "unknown", branch: "unknown", dirty: "unknown" });
    const git = (...args: string[]) =>
      new Deno.Command("git", {
        args: ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", ...args],
        cwd: folder,
        stdout: "null",
        stderr: "null",
      }).output();
    await git("init", "-q", "-b", "bench");
    await Deno.writeTextFile(`${folder}/a.txt`, "a");
    await git("add", "a.txt");
    await git("commit", "-q", "-m", "one");
    const clean = await readGitState(folder);
    assert.match(clean.commit, /^[0-9a-f]{40}$/);
    assert.equal(clean.branch, "bench");
    assert.equal(clean.dirty, false);
    await Deno.writeTextFile(`${folder}/a.txt`, "b");
    assert.equal((await readGitState(folder)).dirty, true);
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test({
  name: "git state without run permission is unknown, not an error",
  permissions: { read: true, env: true, run: false },
  fn: async () => {
    assert.deepEqual(await readGitState(), { commit: "unknown", branch: "unknown", dirty: "unknown" });
  },
});

Deno.test("committed JSON Schemas equal the generated ones", async () => {
  for (const [name, text] of Object.entries(generateSchemaFiles())) {
    const committed = await Deno.readTextFile(new URL(`../src/harness/schemas/${name}`, import.meta.url));
    assert.equal(
      committed,
      text,
      `src/harness/schemas/${name} is stale: run deno run --allow-read --allow-write=src/harness/schemas src/harness/schemas/make.ts`,
    );
  }
  const schema = JSON.parse(generateSchemaFiles()["report.schema.json"]);
  assert.equal(schema.properties.schemaVersion.const, 1);
  assert.equal(schema.additionalProperties, false);
});
