/**
 * The suite runner end to end on a tiny random-weight Llama checkpoint (1 layer, C = 32) written to a
 * temporary folder: baseline and LoRA (3 training steps), WikiText perplexity, RULER niah_single_2 and
 * BABILong qa4 at 512 tokens, plus one evaluation that cannot fit (BABILong qa3 at 160 tokens) and so
 * must come out as a failed cell. Checks, per the harness issue:
 * - reproducibility: two runs with separate caches give identical reports except timings, memory and
 *   the capture time;
 * - resume: a run aborted after two cells keeps them in the cache, and the rerun computes only the
 *   rest and ends with the same report; a rerun of a finished run computes nothing;
 * - sharding: shards 0/2 and 1/2, each with its own cache, merge into the unsharded report;
 * - merge refuses mismatched suites and environments, naming the field;
 * - the CLI: `bench`, `train`, `eval`, `merge` have --help with an example; `train` then
 *   `eval --trained` evaluates the trained state without training again.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseModelConfig } from "../src/model/config.ts";
import { writeHfCheckpoint } from "../src/model/hf.ts";
import { createWeights, initialWeights } from "../src/model/weights.ts";
import { paramTable } from "../src/model/params.ts";
import { attentionMasses } from "../src/harness/attention_probe.ts";
import { encoderForward, layernormForward } from "./reference/layers.ts";
import { getGpu } from "../src/gpu/device.ts";
import { MergeMismatchError, mergeReports } from "../src/harness/merge.ts";
import { parseReport, type Report } from "../src/harness/report_schema.ts";
import { runSuite, type RunSummary } from "../src/harness/runner.ts";
import { parseSuite, type ResolvedSuite, resolveSuite } from "../src/harness/suite.ts";
import { makeReport, perplexityCell } from "./report_fixture.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MAIN = join(ROOT, "src/cli/main.ts");

const tmp = await Deno.makeTempDir({ prefix: "longtune-runner-test-" });
const modelDir = join(tmp, "tiny-llama");
const config = parseModelConfig({
  family: "llama",
  vocabSize: 257,
  maxPositions: 1024,
  nLayer: 1,
  nHead: 2,
  nKvHead: 1,
  nEmbd: 32,
  nInner: 64,
});
// ×4 the usual init so the random model's greedy choices are not all ties.
await writeHfCheckpoint(modelDir, config, initialWeights(config, 11).map((v) => 4 * v));

function tinySuite(): ResolvedSuite {
  const raw = {
    name: "tiny",
    description: "runner test",
    models: [modelDir],
    seeds: [0],
    lengths: [512],
    samples: 2,
    training: { steps: 3, lr: 0.01, sequenceLength: 64, data: { corpus: { seed: 5, words: 3000 } } },
    methods: [{ name: "baseline" }, { name: "lora", config: { r: 2 } }],
    evaluations: [
      { family: "wikitext", chunkWindows: 1 },
      { family: "ruler", tasks: ["niah_single_2"], maxNewTokens: 6, samples: 1 },
      {
        family: "babilong",
        tasks: ["qa4"],
        prompt: { instruction: false, examples: false, postPrompt: false },
        maxNewTokens: 4,
      },
      {
        family: "babilong",
        name: "babilong-too-short",
        tasks: ["qa3"],
        lengths: [160],
        samples: 1,
        prompt: { instruction: false, examples: false, postPrompt: false },
      },
    ],
  };
  return resolveSuite(parseSuite(raw, "tiny.json"), "tiny.json");
}

const suite = tinySuite();
const suiteFile = { path: "tiny.json", fileHash: "f".repeat(64) };
const gpu = await getGpu();

async function run(name: string, extra: Partial<Parameters<typeof runSuite>[0]> = {}): Promise<RunSummary> {
  return await runSuite({
    suite,
    suiteFile,
    out: join(tmp, name),
    cache: join(tmp, `${name}-cache`),
    quiet: true,
    gpu,
    ...extra,
  });
}

/** A report without what legitimately varies between runs: timings, memory, the capture time. */
function numbers(report: Report): unknown {
  return {
    ...report,
    environment: { ...report.environment, capturedAt: null },
    cells: report.cells.map((cell) => ({
      ...cell,
      trainTokensPerSecond: null,
      evalTokensPerSecond: null,
      wallTimeSeconds: null,
      peakGpuMemoryBytes: null,
    })),
  };
}

async function reportOf(name: string): Promise<Report> {
  return await parseReport(join(tmp, name, "report.json"));
}

async function cacheFiles(cache: string): Promise<string[]> {
  const files: string[] = [];
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      if (entry.isDirectory) await walk(path);
      else files.push(path);
    }
  };
  await walk(join(cache, "cells")).catch(() => {});
  return files;
}

const TOTAL = 2 * 4; // methods × cells per method (wikitext, ruler, babilong, babilong-too-short)

Deno.test("a suite run twice with separate caches gives identical numbers; a rerun computes nothing", async () => {
  const t0 = performance.now();
  const first = await run("a");
  const second = await run("b");
  const a = await reportOf("a");
  assert.equal(first.cells, TOTAL);
  assert.equal(first.computed, TOTAL - 2, JSON.stringify(first));
  assert.equal(first.failed, 2, "babilong-too-short fails for both methods");
  assert.deepEqual(numbers(await reportOf("b")), numbers(a));
  assert.equal(second.computed, TOTAL - 2);

  const ok = a.cells.filter((c) => c.status.state === "ok");
  assert.equal(ok.length, 6);
  for (const cell of ok) {
    const metric = cell.metrics[cell.primaryMetric!];
    assert.ok(Number.isFinite(metric.value), `${cell.method} ${cell.task}: ${metric.value}`);
  }
  const failed = a.cells.filter((c) => c.status.state === "failed");
  assert.deepEqual(failed.map((c) => [c.method, c.task]), [["baseline", "babilong-too-short"], [
    "lora",
    "babilong-too-short",
  ]]);
  assert.match(
    (failed[0].status as { error: string }).error,
    /qa3: fewer than 1 of the first 20 samples fit/,
  );
  const lora = a.cells.find((c) => c.method === "lora" && c.task === "wikitext")!;
  assert.deepEqual(lora.trainingCurve.map((p) => p.step), [1, 2, 3]);
  assert.ok(lora.trainableParameters > 0 && lora.trainingSet !== null);
  assert.equal(a.cells.find((c) => c.method === "baseline")!.trainingSet, null);
  // LoRA's B starts at zero, so its numbers differ from the base only through training.
  const base = a.cells.find((c) => c.method === "baseline" && c.task === "wikitext")!;
  assert.notEqual(lora.metrics.token_ppl.value, base.metrics.token_ppl.value);
  for (const file of ["report.json", "report.md", "report.html"]) {
    assert.ok((await Deno.stat(join(tmp, "a", file))).size > 0, file);
  }

  const rerun = await run("a");
  assert.equal(rerun.computed, 0);
  assert.equal(rerun.cached, TOTAL - 2);
  assert.deepEqual(numbers(await reportOf("a")), numbers(a));
  console.log(`two runs and a cached rerun: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
});

Deno.test("a run interrupted after two cells resumes from the cache and ends with the same report", async () => {
  const controller = new AbortController();
  let done = 0;
  const reason = new Error("test interrupt");
  await assert.rejects(
    run("c", {
      signal: controller.signal,
      onCellDone: (_cell, cached) => {
        if (!cached && ++done === 2) controller.abort(reason);
      },
    }),
    (error) => error === reason,
  );
  // The two finished cells (one of which may be a failure, which is never cached) are kept.
  const kept = await cacheFiles(join(tmp, "c-cache"));
  assert.ok(kept.length >= 1 && kept.length <= 2, `cached after the interrupt: ${kept.length}`);
  assert.ok(kept.every((path) => !/\.tmp-/.test(path)), "no temporary files left");
  const resumed = await run("c");
  assert.equal(resumed.computed, TOTAL - 2 - kept.length);
  assert.equal(resumed.cached, kept.length);
  assert.deepEqual(numbers(await reportOf("c")), numbers(await reportOf("a")));
});

Deno.test("shards 0/2 and 1/2 with their own caches merge into the unsharded report", async () => {
  const s0 = await run("s0", { shard: { index: 0, count: 2 } });
  const s1 = await run("s1", { shard: { index: 1, count: 2 } });
  assert.equal(s0.cells + s1.cells, TOTAL);
  assert.ok(s0.cells > 0 && s1.cells > 0);
  const shards = [await reportOf("s0"), await reportOf("s1")];
  assert.equal(shards[0].cells.length + shards[1].cells.length, TOTAL);
  const merged = mergeReports(shards.map((report, i) => ({ label: `s${i}`, report })));
  const whole = await reportOf("a");
  const strip = (r: Report) => ({ ...(numbers(r) as Report), environment: null });
  assert.deepEqual(strip(merged), strip(whole));
  assert.equal(
    merged.environment.capturedAt,
    [shards[0], shards[1]].map((r) => r.environment.capturedAt).sort()[0],
  );
});

Deno.test("merge refuses mismatched suites and environments, naming the field", () => {
  const a = makeReport([perplexityCell("lora", 4096, 0, 2500)]);
  const b = makeReport([perplexityCell("lora", 4096, 1, 2400)]);
  assert.equal(mergeReports([{ label: "a", report: a }, { label: "b", report: b }]).cells.length, 2);
  const otherSuite = makeReport([perplexityCell("lora", 4096, 1, 2400)], { suiteConfig: { name: "other" } });
  assert.throws(
    () => mergeReports([{ label: "a.json", report: a }, { label: "b.json", report: otherSuite }]),
    (error: Error) =>
      error instanceof MergeMismatchError &&
      /cannot merge b\.json with a\.json: suite\.configHash/.test(error.message),
  );
  const otherGpu = makeReport([perplexityCell("lora", 4096, 1, 2400)], {
    environment: { adapter: { ...a.environment.adapter!, description: "NVIDIA H100" } },
  });
  assert.throws(
    () => mergeReports([{ label: "a.json", report: a }, { label: "b.json", report: otherGpu }]),
    /environment\.adapter differs \(.*llvmpipe.* in a\.json, .*NVIDIA H100.* in b\.json\)/,
  );
  const otherCommit = makeReport([perplexityCell("lora", 4096, 1, 2400)], {
    environment: { git: { commit: "b".repeat(40), branch: "main", dirty: false } },
  });
  assert.throws(
    () => mergeReports([{ label: "a", report: a }, { label: "b", report: otherCommit }]),
    /environment\.git\.commit/,
  );
  const clash = makeReport([perplexityCell("lora", 4096, 0, 2600)]);
  assert.throws(
    () => mergeReports([{ label: "a", report: a }, { label: "c", report: clash }]),
    /cell \["lora","wikitext",4096,0\] is also in a with different results/,
  );
});

Deno.test("attention diagnostics match a float64 computation of the last query's softmax (GPT-2, 1 layer)", async () => {
  const cfg = parseModelConfig({
    family: "gpt2",
    vocabSize: 257,
    maxPositions: 64,
    nLayer: 1,
    nHead: 2,
    nEmbd: 24,
  });
  const values = initialWeights(cfg, 5).map((v) => 4 * v);
  const table = paramTable(cfg);
  // Non-trivial norm gains and biases, so the check covers them.
  for (const name of ["h.0.ln1.w", "h.0.ln1.b", "h.0.qkv.b"]) {
    const e = table.byName.get(name)!;
    for (let i = 0; i < e.numel; i++) values[e.offset + i] += 0.3 * Math.sin(7 * i + e.offset);
  }
  const weights = createWeights(gpu, cfg, values);
  const T = 37, C = 24, H = 2, D = 12;
  const tokens = Array.from({ length: T }, (_, t) => (t * 37 + 11) % 256);
  const regions = {
    sinks: 4,
    context: [{ start: 4, end: T }],
    needle: [{ start: 10, end: 15 }],
    distractors: [{ start: 20, end: 22 }, { start: 30, end: 33 }],
  };
  const got = await attentionMasses(gpu, { weights, adapter: null }, tokens, regions);
  weights.params.buffer.destroy();

  // float64: x = wte + wpe; LayerNorm; q, k of the last row and every row; softmax of the last row.
  const P = (name: string) => {
    const e = table.byName.get(name)!;
    return Float64Array.from(values.subarray(e.offset, e.offset + e.numel));
  };
  const x = new Float64Array(T * C);
  encoderForward(x, tokens, P("wte"), P("wpe"), 1, T, C);
  const ln = new Float64Array(T * C);
  layernormForward(ln, new Float64Array(T), new Float64Array(T), x, P("h.0.ln1.w"), P("h.0.ln1.b"), T, C);
  const w = P("h.0.qkv.w"), b = P("h.0.qkv.b");
  const row = (t: number, r: number) => {
    let sum = b[r];
    for (let c = 0; c < C; c++) sum += ln[t * C + c] * w[r * C + c];
    return sum;
  };
  const want = { sink: 0, context: 0, needle: 0, distractors: 0 };
  const inside = (spans: { start: number; end: number }[], j: number) =>
    spans.some((s) => j >= s.start && j < s.end);
  for (let h = 0; h < H; h++) {
    const q = Array.from({ length: D }, (_, d) => row(T - 1, h * D + d));
    const scores = Array.from({ length: T }, (_, j) => {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[d] * row(j, H * D + h * D + d);
      return dot / Math.sqrt(D);
    });
    const max = Math.max(...scores);
    const total = scores.reduce((sum, v) => sum + Math.exp(v - max), 0);
    scores.forEach((v, j) => {
      const p = Math.exp(v - max) / total;
      if (j < regions.sinks) want.sink += p / H;
      else want.context += p / H;
      if (inside(regions.needle, j)) want.needle += p / H;
      if (inside(regions.distractors, j)) want.distractors += p / H;
    });
  }
  let worst = 0;
  for (const key of ["sink", "context", "needle", "distractors"] as const) {
    const error = Math.abs((got[key] as number) - want[key]);
    worst = Math.max(worst, error);
    assert.ok(error < 2e-6, `${key}: got ${got[key]}, float64 ${want[key]}, |error| ${error} ≥ 2e-6`);
  }
  console.log(
    `attention masses ${JSON.stringify(got)}; max |error| vs float64 ${
      worst.toExponential(2)
    } (tolerance 2e-6)`,
  );
  assert.ok(Math.abs(got.sink + got.context! - 1) < 2e-6, "sinks and context cover every key");
});

async function longtune(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", MAIN, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

Deno.test("CLI: bench, train, eval and merge have --help with an example; train then eval --trained", async () => {
  const helps = await Promise.all([
    longtune("bench", "--help"),
    longtune("train", "--help"),
    longtune("eval", "--help"),
    longtune("merge", "--help"),
  ]);
  const wanted = [
    ["--suite", "--shard", "--cache", "--model", "--methods", "Examples:"],
    ["--method", "--config", "--steps", "--length", "--out", "Example:"],
    ["--trained", "--ruler", "--babilong", "--lengths", "--samples", "Examples:"],
    ["<shards...>", "--out", "Example:"],
  ];
  helps.forEach((result, i) => {
    assert.equal(result.code, 0, result.stderr);
    for (const text of wanted[i]) {
      assert.ok(result.stdout.includes(text), `help lacks ${text}:\n${result.stdout}`);
    }
  });

  const trained = join(tmp, "trained");
  const cache = join(tmp, "cli-cache");
  const train = await longtune(
    "train",
    "--model",
    modelDir,
    "--method",
    "lora",
    "--config",
    '{"r": 2}',
    "--steps",
    "2",
    "--length",
    "64",
    "--out",
    trained,
    "--cache",
    cache,
  );
  assert.equal(train.code, 0, train.stderr + train.stdout);
  assert.match(train.stdout, /wrote .*trained\.safetensors and train\.json \(\d+ trainable parameters/);
  const evaluated = await longtune(
    "eval",
    "--trained",
    trained,
    "--wikitext",
    "--lengths",
    "128",
    "--samples",
    "1",
    "--out",
    join(tmp, "cli-eval"),
    "--cache",
    join(tmp, "cli-eval-cache"),
  );
  assert.equal(evaluated.code, 0, evaluated.stderr + evaluated.stdout);
  assert.match(evaluated.stdout, /loaded trained lora seed 0/, "eval reuses the trained state");
  const report = await parseReport(join(tmp, "cli-eval", "report.json"));
  assert.equal(report.cells.length, 1);
  assert.equal(report.cells[0].trainingCurve.length, 2);

  // Ctrl-C: exit 130 with finished cells kept; the same command then resumes.
  const suitePath = join(tmp, "cli-suite.json");
  await Deno.writeTextFile(
    suitePath,
    JSON.stringify({
      name: "cli",
      description: "interrupted from the command line",
      models: [modelDir],
      seeds: [0],
      lengths: [256, 512],
      samples: 3,
      training: { steps: 2, lr: 0.01, sequenceLength: 64, data: { corpus: { seed: 5, words: 3000 } } },
      methods: [{ name: "baseline" }],
      evaluations: [
        { family: "wikitext", chunkWindows: 1 },
        { family: "pg19", chunkWindows: 1 },
        { family: "position-sweep", depths: [0, 0.5, 1], tokensToGenerate: 12, lengths: [512, 640] },
      ],
    }),
  );
  const args = [
    "run",
    "--allow-all",
    MAIN,
    "bench",
    "--suite",
    suitePath,
    "--out",
    join(tmp, "cli-bench"),
    "--cache",
    join(tmp, "cli-bench-cache"),
  ];
  const child = new Deno.Command(Deno.execPath(), { args, cwd: ROOT, stdout: "piped", stderr: "piped" })
    .spawn();
  const stderr = new Response(child.stderr).text();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!/: token_ppl/.test(seen)) {
    const { value, done } = await lines.read();
    if (done) break;
    seen += value;
  }
  child.kill("SIGINT");
  while (!(await lines.read()).done);
  const status = await child.status;
  assert.equal(status.code, 130, `${seen}\n${await stderr}`);
  assert.match(
    await stderr,
    /interrupted; finished cells are cached in .*cli-bench-cache \(rerun the same command to resume\)/,
  );
  const resumed = await longtune(...args.slice(3));
  assert.equal(resumed.code, 0, resumed.stderr + resumed.stdout);
  assert.match(resumed.stdout, /\(6 cells: [0-5] computed, [1-6] cached, 0 failed\)/);

  const refused = await longtune("bench", "--suite", "nonexistent");
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /--suite nonexistent: no such file or shipped suite \(shipped: .*quick/);
  const badShard = await longtune("bench", "--shard", "4/4");
  assert.equal(badShard.code, 2);
  assert.match(badShard.stderr, /--shard/);
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(tmp, { recursive: true });
  } catch {
    // Best effort.
  }
});
