/**
 * The `longtune` command, run as a subprocess in temporary folders: help texts, deterministic and
 * resumable dataset writing, flag validation, exit codes of compare, report rendering, and Ctrl-C.
 * Needs permission to run the Deno binary (`--allow-run`), since each test starts `deno run`.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadBabilong, loadRuler, loadWikiText } from "../src/data/loaders.ts";
import { sha256 } from "../src/data/hash.ts";
import { NoGpuError } from "../src/gpu/device.ts";
import { writeReport } from "../src/harness/report_schema.ts";
import { describeFailure, InterruptedError, UsageError } from "../src/cli/errors.ts";
import { readManifest, removeStaleTemporaries, upToDate } from "../src/cli/data_run.ts";
import { babilongLengthName } from "../src/cli/data.ts";
import { makeReport, perplexityCell, rulerCell, standardReport } from "./report_fixture.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MAIN = join(ROOT, "src/cli/main.ts");

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function longtune(...args: string[]): Promise<Run> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", MAIN, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

function show(run: Run): string {
  return `exit ${run.code}\n--- stdout\n${run.stdout}\n--- stderr\n${run.stderr}`;
}

/** Every file under `folder` (relative paths, sorted) with its sha256. */
async function tree(folder: string, prefix = ""): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for await (const entry of Deno.readDir(join(folder, prefix))) {
    const path = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory) Object.assign(files, await tree(folder, path));
    else files[path] = sha256(await Deno.readFile(join(folder, path)));
  }
  return Object.fromEntries(Object.entries(files).sort(([a], [b]) => (a < b ? -1 : 1)));
}

Deno.test("the tests may run the Deno binary (deno test needs --allow-run)", async () => {
  const status = await Deno.permissions.query({ name: "run", command: Deno.execPath() });
  assert.equal(
    status.state,
    "granted",
    `cli_test.ts starts ${Deno.execPath()}; run deno test with --allow-run`,
  );
});

Deno.test("--help of every command exits 0, names its options and shows an example", async () => {
  const expected: [string[], string[]][] = [
    [[], ["list", "data", "compare", "leaderboard", "report", "--verbose", "--quiet"]],
    [["list"], ["[what]", "--json", "--fixtures"]],
    [["data"], ["ruler", "babilong", "corpus", "manifest.json"]],
    [["data", "ruler"], ["--tasks", "--lengths", "--samples", "--seed", "--tokenizer", "--essay", "--out"]],
    [["data", "babilong"], ["--tasks", "--lengths", "--samples", "--seed", "--tokenizer", "--out"]],
    [["data", "corpus"], ["--layout", "--seed", "--words", "--out", "--overwrite"]],
    [["compare"], ["--timings", "--timing-ratio", "--markdown", "--memory", "--ppl-threshold"]],
    [["leaderboard"], ["--out", "<reports...>"]],
    [["report"], ["--out", "<report.json>"]],
  ];
  const runs = await Promise.all(expected.map(([command]) => longtune(...command, "--help")));
  runs.forEach((run, i) => {
    const [command, options] = expected[i];
    assert.equal(run.code, 0, `${command.join(" ")} --help: ${show(run)}`);
    for (const option of options) {
      assert.ok(run.stdout.includes(option), `${command.join(" ")} --help lacks ${option}`);
    }
    assert.match(run.stdout, /Examples?:\n {2}longtune /, `${command.join(" ")} --help has no example`);
  });
});

Deno.test("data ruler: the same seed gives the same bytes, another seed other bytes; a rerun skips", async () => {
  const dir = await Deno.makeTempDir({ prefix: "longtune-cli-" });
  const args = ["data", "ruler", "--tasks", "niah_single_1,vt", "--lengths", "2k,3000", "--samples", "3"];
  const [a, b, c] = await Promise.all([
    longtune(...args, "--seed", "5", "--out", join(dir, "a")),
    longtune(...args, "--seed", "5", "--out", join(dir, "b")),
    longtune(...args, "--seed", "6", "--out", join(dir, "c")),
  ]);
  for (const run of [a, b, c]) assert.equal(run.code, 0, show(run));
  const [treeA, treeB, treeC] = await Promise.all(["a", "b", "c"].map((name) => tree(join(dir, name))));
  assert.deepEqual(Object.keys(treeA), [
    "2048/niah_single_1/validation.jsonl",
    "2048/vt/validation.jsonl",
    "3000/niah_single_1/validation.jsonl",
    "3000/vt/validation.jsonl",
    "manifest.json",
  ]);
  assert.deepEqual(treeB, treeA, "same seed, same bytes");
  for (const path of Object.keys(treeA)) {
    assert.notEqual(treeC[path], treeA[path], `${path} ignores the seed`);
  }

  // RULER's record layout, readable by the project's own loader, lengths within the budget.
  const records = await loadRuler(join(dir, "a/3000/vt/validation.jsonl"));
  assert.equal(records.length, 3);
  for (const record of records) {
    assert.ok(record.length <= 3000 && record.length > 2800, `length ${record.length}`);
  }
  const manifest = (await readManifest(join(dir, "a")))!;
  assert.equal(manifest.seed, 5);
  assert.equal(manifest.tokenizer?.name, "byte");
  assert.equal(manifest.files["3000/vt/validation.jsonl"].sha256, treeA["3000/vt/validation.jsonl"]);

  // Resume: nothing rewritten (mtimes kept), every file reported as skipped.
  const before = (await Deno.stat(join(dir, "a/2048/vt/validation.jsonl"))).mtime;
  const rerun = await longtune(...args, "--seed", "5", "--out", join(dir, "a"));
  assert.equal(rerun.code, 0, show(rerun));
  assert.equal(rerun.stdout.match(/^skipped /gm)?.length, 4, rerun.stdout);
  assert.deepEqual((await Deno.stat(join(dir, "a/2048/vt/validation.jsonl"))).mtime, before);

  // A file that no longer matches its manifest entry is regenerated, the others are skipped.
  await Deno.writeTextFile(join(dir, "a/2048/vt/validation.jsonl"), "damaged\n");
  const repair = await longtune(...args, "--seed", "5", "--out", join(dir, "a"));
  assert.equal(repair.code, 0, show(repair));
  assert.match(repair.stdout, /^wrote 2048\/vt\/validation\.jsonl/m);
  assert.equal(repair.stdout.match(/^skipped /gm)?.length, 3);
  assert.deepEqual(await tree(join(dir, "a")), treeA);

  // Another seed into the same folder is refused with both values, unless --overwrite.
  const clash = await longtune(...args, "--seed", "6", "--out", join(dir, "a"));
  assert.equal(clash.code, 2, show(clash));
  assert.match(clash.stderr, /^longtune: --out .* other settings \(seed 5 there, 6 now/);
  const replaced = await longtune(...args, "--seed", "6", "--out", join(dir, "a"), "--overwrite", "--quiet");
  assert.equal(replaced.code, 0, show(replaced));
  assert.equal(replaced.stdout, "");
  assert.deepEqual(await tree(join(dir, "a")), treeC);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bad flags exit non-zero with one line naming the flag and the value", async () => {
  const out = join(await Deno.makeTempDir({ prefix: "longtune-cli-" }), "never");
  const cases: [string[], number, RegExp][] = [
    [
      ["data", "ruler", "--lengths", "4096", "--samples", "0", "--out", out],
      2,
      /'--samples <n>' argument '0'.*≥ 1/,
    ],
    [["data", "ruler", "--lengths", "4096", "--seed", "-3", "--out", out], 2, /'--seed <n>' argument '-3'/],
    [
      ["data", "ruler", "--lengths", "4096,lots", "--out", out],
      2,
      /'--lengths <list>'.*"lots" is not a length/,
    ],
    [["data", "ruler", "--lengths", "4096"], 2, /required option '--out <dir>'/],
    [
      ["data", "ruler", "--lengths", "4096", "--out", out, "--frobnicate"],
      2,
      /unknown option '--frobnicate'/,
    ],
    [
      ["data", "ruler", "--tasks", "vt", "--lengths", "512", "--out", out],
      2,
      /--lengths 512: below RULER vt's minimum/,
    ],
    [
      ["data", "babilong", "--tasks", "qa1", "--lengths", "0,1500", "--out", out],
      2,
      /--lengths 1500: .*1000 or 1024/,
    ],
    [
      ["data", "babilong", "--tasks", "qa3", "--lengths", "1k", "--out", out],
      2,
      /--lengths 1000: below the \d+ tokens/,
    ],
    [
      ["data", "corpus", "--layout", "csv", "--out", out],
      2,
      /'--layout <layout>' argument 'csv'.*wikitext, pg19/,
    ],
    [
      ["data", "ruler", "--tasks", "vt", "--lengths", "4k", "--tokenizer", "nowhere", "--out", out],
      1,
      /--tokenizer: /,
    ],
    [["compare", "--timing-ratio", "0.5", "a.json", "b.json"], 2, /'--timing-ratio <ratio>' argument '0.5'/],
    [
      ["list", "models"],
      2,
      /unknown section "models"; known: ruler, babilong, perplexity, tokenizers, fixtures/,
    ],
  ];
  const runs = await Promise.all(cases.map(([args]) => longtune(...args)));
  runs.forEach((run, i) => {
    const [args, code, message] = cases[i];
    assert.equal(run.code, code, `${args.join(" ")}: ${show(run)}`);
    assert.match(run.stderr, /^longtune: /, args.join(" "));
    assert.match(run.stderr, message, `${args.join(" ")}: ${run.stderr}`);
    assert.equal(run.stderr.trim().split("\n").length, 1, `one line expected: ${run.stderr}`);
    assert.ok(!run.stderr.includes("    at "), `no stack trace: ${run.stderr}`);
  });
  assert.equal(await Deno.stat(out).then(() => true, () => false), false, "nothing written");
  await Deno.remove(join(out, ".."));
});

Deno.test("an unknown task lists the known ones", async () => {
  const out = join(await Deno.makeTempDir({ prefix: "longtune-cli-" }), "never");
  const [ruler, babilong] = await Promise.all([
    longtune("data", "ruler", "--tasks", "niah_single_1,needle", "--lengths", "4096", "--out", out),
    longtune("data", "babilong", "--tasks", "qa21", "--lengths", "0", "--out", out),
  ]);
  assert.equal(ruler.code, 2);
  assert.match(ruler.stderr, /unknown RULER task "needle"; known: niah_single_1, niah_single_2, .*, qa_2/);
  assert.equal(babilong.code, 2);
  assert.match(babilong.stderr, /unknown bAbI task "qa21"; known: qa1, qa2, .*, qa20/);
  await Deno.remove(join(out, ".."));
});

Deno.test("data babilong writes <task>/<length>.json that loadBabilong reads; data corpus writes WikiText", async () => {
  const dir = await Deno.makeTempDir({ prefix: "longtune-cli-" });
  const [babilong, corpus] = await Promise.all([
    longtune(
      "data",
      "babilong",
      "--tasks",
      "qa1,qa2",
      "--lengths",
      "0,2k,4096",
      "--samples",
      "2",
      "--out",
      join(dir, "b"),
    ),
    longtune(
      "data",
      "corpus",
      "--layout",
      "wikitext",
      "--words",
      "3000",
      "--seed",
      "3",
      "--out",
      join(dir, "w"),
    ),
  ]);
  assert.equal(babilong.code, 0, show(babilong));
  assert.equal(corpus.code, 0, show(corpus));
  const files = Object.keys(await tree(join(dir, "b")));
  assert.deepEqual(files, [
    "manifest.json",
    "qa1/0k.json",
    "qa1/2k.json",
    "qa1/4k.json",
    "qa2/0k.json",
    "qa2/2k.json",
    "qa2/4k.json",
  ]);
  const records = await loadBabilong(join(dir, "b/qa2"));
  assert.deepEqual(records.map((r) => r.length), ["0k", "0k", "2k", "2k", "4k", "4k"]);
  const raw = JSON.parse(await Deno.readTextFile(join(dir, "b/qa2/4k.json"))) as {
    tokens: number;
    targetTokens: number;
  }[];
  for (const record of raw) {
    assert.ok(record.tokens <= 4096 && record.targetTokens === 4096, JSON.stringify(record.tokens));
  }

  const wikitext = await loadWikiText(join(dir, "w"), "train");
  assert.ok(wikitext.documents.length > 0);
  const again = await longtune(
    "data",
    "corpus",
    "--layout",
    "wikitext",
    "--words",
    "3000",
    "--seed",
    "3",
    "--out",
    join(dir, "w"),
  );
  assert.equal(again.code, 0, show(again));
  assert.match(again.stdout, /^skipped .* \(up to date\)/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("compare exits 0 without regressions and 1 with one; report and leaderboard write their files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "longtune-cli-" });
  const ruler = (method: string, k: number) => rulerCell(method, 4096, 0, { t1: k, t2: k }, 500);
  const baseline = makeReport([ruler("lora", 400), perplexityCell("lora", 4096, 0, 2500)]);
  // 80% → 68% on 1000 items: disjoint Wilson intervals, a regression.
  const worse = makeReport([ruler("lora", 340), perplexityCell("lora", 4096, 0, 2500)]);
  await writeReport(join(dir, "a.json"), baseline);
  await writeReport(join(dir, "b.json"), worse);
  const slower = makeReport([ruler("lora", 400), perplexityCell("lora", 4096, 0, 2500)]);
  slower.cells[0].trainTokensPerSecond = 500; // half the fixture's 1000 tokens/s
  await writeReport(join(dir, "slower.json"), slower);
  await writeReport(join(dir, "standard.json"), standardReport());
  await Deno.writeTextFile(join(dir, "broken.json"), JSON.stringify({ schemaVersion: 1 }));
  const [same, regressed, markdown, broken, report, leaderboard, untimed, timed, tolerant] = await Promise
    .all([
      longtune("compare", join(dir, "a.json"), join(dir, "a.json")),
      longtune("compare", join(dir, "a.json"), join(dir, "b.json")),
      longtune("compare", join(dir, "a.json"), join(dir, "b.json"), "--markdown", "--out", join(dir, "c.md")),
      longtune("compare", join(dir, "a.json"), join(dir, "broken.json")),
      longtune("report", join(dir, "standard.json"), "--out", join(dir, "site")),
      longtune("leaderboard", join(dir, "standard.json"), "--out", join(dir, "leaderboard.json")),
      longtune("compare", join(dir, "a.json"), join(dir, "slower.json")),
      longtune("compare", join(dir, "a.json"), join(dir, "slower.json"), "--timings"),
      longtune("compare", join(dir, "a.json"), join(dir, "slower.json"), "--timing-ratio", "2.5"),
    ]);
  assert.deepEqual([untimed.code, timed.code, tolerant.code], [0, 1, 0], show(timed));
  assert.match(timed.stdout, /train tokens\/s/);
  assert.equal(same.code, 0, show(same));
  assert.match(same.stdout, /^0 regression\(s\)/);
  assert.equal(regressed.code, 1, show(regressed));
  assert.match(regressed.stdout, /^1 regression\(s\)/);
  assert.equal(markdown.code, 1, show(markdown));
  assert.match(markdown.stdout, /^## longtune comparison/);
  assert.equal(await Deno.readTextFile(join(dir, "c.md")), markdown.stdout);
  assert.equal(broken.code, 1, show(broken));
  assert.match(broken.stderr, /^longtune: .*broken\.json: not a valid report/);
  assert.match(broken.stderr, /^ {2}suite: /m, "names the missing field");

  assert.equal(report.code, 0, show(report));
  assert.match(await Deno.readTextFile(join(dir, "site/report.md")), /^# /);
  assert.match(await Deno.readTextFile(join(dir, "site/report.html")), /^<!DOCTYPE html>/i);
  assert.equal(leaderboard.code, 0, show(leaderboard));
  const board = JSON.parse(await Deno.readTextFile(join(dir, "leaderboard.json")));
  assert.equal(board.format, "longtune-leaderboard");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("list prints every section and --json parses", async () => {
  const [text, json] = await Promise.all([longtune("list"), longtune("list", "--json")]);
  assert.equal(text.code, 0, show(text));
  for (
    const heading of [
      "RULER tasks (13)",
      "bAbI / BABILong tasks (20",
      "Perplexity protocols (3)",
      "Tokenizers",
      "Fixtures",
    ]
  ) {
    assert.ok(text.stdout.includes(heading), `no "${heading}"`);
  }
  assert.match(text.stdout, /qa11 +basic-coreference +approximate/);
  assert.match(text.stdout, /fixtures\/corpus\/manifest\.json +sha256 [0-9a-f]{64} +12\/12 files match/);
  const parsed = JSON.parse(json.stdout);
  assert.deepEqual(Object.keys(parsed), ["ruler", "babilong", "perplexity", "tokenizers", "fixtures"]);
  assert.deepEqual(parsed.ruler.find((t: { name: string }) => t.name === "vt"), {
    name: "vt",
    family: "vt",
    metric: "string_match_all",
    tokensToGenerate: 30,
    haystack: "noise",
  });
});

Deno.test("Ctrl-C stops a run at once, leaves whole files only, and a rerun completes the rest", async () => {
  const dir = await Deno.makeTempDir({ prefix: "longtune-cli-" });
  // Large enough that the 128K files take seconds after the first 2K file appears.
  const args = [
    "data",
    "ruler",
    "--tasks",
    "niah_single_2,niah_multikey_1,cwe,fwe,qa_1,qa_2",
    "--lengths",
    "2k,128k",
    "--samples",
    "12",
    "--out",
    dir,
  ];
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", MAIN, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const first = join(dir, "2048/niah_single_2/validation.jsonl");
  for (let waited = 0; !(await Deno.stat(first).then(() => true, () => false)); waited += 20) {
    if (waited > 15_000) {
      child.kill("SIGKILL");
      await child.output();
      assert.fail("no file appeared within 15 s");
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  child.kill("SIGINT");
  const output = await child.output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 130, `exit ${output.code}; the job may have finished before SIGINT: ${stderr}`);
  assert.match(
    stderr,
    /^longtune: interrupted; \d+ of 12 files are complete .*rerun the same command to resume/,
  );

  // No temporary file anywhere, and every file the manifest lists is whole (its hash matches).
  const files = await tree(dir);
  assert.deepEqual(Object.keys(files).filter((path) => /(^|\/)\.[^/]*\.tmp-/.test(path)), []);
  const manifest = (await readManifest(dir))!;
  const listed = Object.keys(manifest.files);
  assert.ok(listed.length >= 1 && listed.length < 12, `${listed.length} files finished`);
  for (const path of listed) assert.equal(files[path], manifest.files[path].sha256, path);
  assert.deepEqual(Object.keys(files).filter((path) => path !== "manifest.json").sort(), listed.sort());

  const rerun = await longtune(...args);
  assert.equal(rerun.code, 0, show(rerun));
  assert.equal(rerun.stdout.match(/^skipped /gm)?.length, listed.length);
  assert.equal(rerun.stdout.match(/^wrote /gm)?.length, 12 - listed.length);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("resume helpers: stale temporaries are removed, a file is up to date only with matching about and bytes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "longtune-cli-" });
  await Deno.writeTextFile(join(dir, ".validation.jsonl.tmp-1a2b3c"), "half a fi");
  await Deno.writeTextFile(join(dir, "keep.txt"), "mine");
  await removeStaleTemporaries([dir, join(dir, "missing")]);
  assert.deepEqual(Object.keys(await tree(dir)), ["keep.txt"]);
  const manifest = {
    format: "longtune-dataset" as const,
    manifestVersion: 1 as const,
    kind: "ruler" as const,
    seed: 0,
    tokenizer: null,
    generator: {},
    settingsHash: "0".repeat(64),
    files: { "keep.txt": { about: { task: "vt", length: 4096 }, bytes: 4, sha256: sha256("mine") } },
  };
  assert.equal(await upToDate(dir, manifest, "keep.txt", { length: 4096, task: "vt" }), true);
  assert.equal(await upToDate(dir, manifest, "keep.txt", { task: "vt", length: 8192 }), false);
  await Deno.writeTextFile(join(dir, "keep.txt"), "yours");
  assert.equal(await upToDate(dir, manifest, "keep.txt", { task: "vt", length: 4096 }), false);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("failures: NoGpuError prints its message, user errors one line, bugs and --verbose a stack", () => {
  const noGpu = describeFailure(new NoGpuError("requestAdapter returned null"), false);
  assert.equal(noGpu.exitCode, 1);
  assert.match(noGpu.text, /^no WebGPU adapter \(requestAdapter returned null\)/);
  assert.ok(!noGpu.text.includes("\n"), noGpu.text);

  const range = describeFailure(new RangeError("RULER vt: sample 3 does not fit in 4096 tokens"), false);
  assert.deepEqual(range, { exitCode: 1, text: "longtune: RULER vt: sample 3 does not fit in 4096 tokens" });
  assert.equal(describeFailure(new UsageError("--lengths 5: too short"), false).exitCode, 2);
  assert.equal(describeFailure(new InterruptedError("interrupted"), false).exitCode, 130);

  const verbose = describeFailure(new RangeError("bad"), true);
  assert.match(verbose.text, /^longtune: bad\nRangeError: bad\n {4}at /);
  const bug = describeFailure(new TypeError("x is undefined"), false);
  assert.match(bug.text, /^longtune: internal error: x is undefined\nTypeError: x is undefined\n {4}at /);
});

Deno.test("BABILong files are named by thousands: 0k, 4k for 4000 and 4096, 1M", () => {
  assert.deepEqual([0, 1000, 1024, 4000, 4096, 131072, 1_000_000].map(babilongLengthName), [
    "0k",
    "1k",
    "1k",
    "4k",
    "4k",
    "128k",
    "1M",
  ]);
  assert.throws(() => babilongLengthName(1500), /--lengths 1500: .*multiple of 1000 or 1024/);
});
