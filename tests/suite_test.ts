/**
 * Suite files and their expansion, without a GPU: shape errors name the file and the field, unknown
 * methods and tasks are refused naming the known ones, method configs are parsed by the method's own
 * schema; cells and keys are stable (key order, labels and descriptions do not move them, anything
 * that changes a number does); shards partition the cells exactly; cost guards refuse oversized grids;
 * and every shipped suite parses.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseModelConfig } from "../src/model/config.ts";
import { checkGuards, expandSuite, type ModelFacts, parseShard, shardCells } from "../src/harness/cells.ts";
import { SchemaValidationError } from "../src/harness/report_schema.ts";
import { loadSuite, parseSuite, resolveSuite, type SuiteFile } from "../src/harness/suite.ts";

const SUITES = fileURLToPath(new URL("../benchmarks/suites", import.meta.url));

/** A small valid suite; `patch` edits a copy. */
function rawSuite(patch: (s: Record<string, unknown>) => void = () => {}): Record<string, unknown> {
  const suite: Record<string, unknown> = {
    name: "tiny",
    description: "test suite",
    models: ["llama-tiny"],
    seeds: [0, 1],
    lengths: [512, 1024],
    samples: { "512": 2, "1024": 1 },
    training: { steps: 3, lr: 0.001, sequenceLength: 64 },
    methods: [{ name: "baseline" }, { name: "lora", config: { r: 4 } }],
    evaluations: [
      { family: "wikitext" },
      { family: "ruler", tasks: ["niah_single_2"] },
      { family: "babilong", tasks: ["qa1"], lengths: [1024], samples: 3 },
    ],
  };
  patch(suite);
  return JSON.parse(JSON.stringify(suite));
}

function errorOf(run: () => unknown): SchemaValidationError {
  try {
    run();
  } catch (error) {
    if (error instanceof SchemaValidationError) return error;
    throw error;
  }
  assert.fail("expected a SchemaValidationError");
}

const MODEL: ModelFacts = {
  name: "llama-tiny",
  config: parseModelConfig({
    family: "llama",
    vocabSize: 257,
    maxPositions: 2048,
    nLayer: 2,
    nHead: 4,
    nKvHead: 2,
    nEmbd: 128,
    nInner: 352,
  }),
  hash: "a".repeat(64),
  tokenizerHash: "b".repeat(64),
};

function expand(raw: Record<string, unknown>, file = "tiny.json") {
  const suite = resolveSuite(parseSuite(raw, file), file);
  return { suite, expansion: expandSuite(suite, [MODEL]) };
}

Deno.test("shape errors name the file and the field path", () => {
  const cases: [(s: Record<string, unknown>) => void, string, RegExp][] = [
    [(s) => delete (s.training as Record<string, unknown>).lr, "training.lr", /expected number/i],
    [(s) => (s.trainig = {}), "(root)", /unrecognized key.*trainig/i],
    [
      (s) => ((s.evaluations as unknown[])[1] = { family: "ruler", tasks: ["niah_single_9"] }),
      "evaluations[1].tasks[0]",
      /unknown RULER task "niah_single_9"; known: niah_single_1, .*qa_2/,
    ],
    [
      (s) => ((s.evaluations as unknown[])[2] = { family: "babilong", tasks: ["qa21"] }),
      "evaluations[2].tasks[0]",
      /unknown bAbI task "qa21"; known: qa1, .*qa20/,
    ],
    [
      (
        s,
      ) => ((s.evaluations as unknown[])[0] = {
        family: "wikitext",
        protocol: { kind: "sliding", strideFraction: 2 },
      }),
      "evaluations[0].protocol.strideFraction",
      /<=1|≤ ?1|too big/i,
    ],
    [(s) => (s.seeds = [1, 1]), "seeds[1]", /listed twice/],
    [(s) => (s.methods = [{ name: "lora" }, { name: "lora" }]), "methods[1].label", /also methods\[0\]'s/],
    [(s) => (s.methods = [{ name: "LoRA" }]), "methods[0].name", /kebab/],
    [
      (s) => ((s.evaluations as unknown[]).push({ family: "wikitext" })),
      "evaluations[3].name",
      /also evaluations\[0\]'s/,
    ],
    [(s) => ((s.evaluations as unknown[])[0] = { family: "perplexity" }), "evaluations[0].family", /./],
  ];
  for (const [patch, path, message] of cases) {
    const error = errorOf(() => parseSuite(rawSuite(patch), "suites/tiny.json"));
    assert.ok(error.message.startsWith("suites/tiny.json: not a valid longtune suite"), error.message);
    const issue = error.issues.find((i) => i.path === path);
    assert.ok(issue !== undefined, `expected an issue at ${path}, got ${JSON.stringify(error.issues)}`);
    assert.match(issue.message, message, `${path}: ${issue.message}`);
  }
});

Deno.test("resolution refuses unknown methods naming the known ones and parses configs with the method's schema", () => {
  const unknown = errorOf(() =>
    resolveSuite(parseSuite(rawSuite((s) => (s.methods = [{ name: "qlora" }])), "x.json"), "x.json")
  );
  assert.equal(unknown.issues[0].path, "methods[0].name");
  assert.match(unknown.issues[0].message, /unknown method "qlora"; known: baseline, full, lora, rslora/);

  const badConfig = errorOf(() =>
    resolveSuite(
      parseSuite(
        rawSuite((s) => (s.methods = [{ name: "baseline" }, { name: "lora", config: { r: -2 } }])),
        "x.json",
      ),
      "x.json",
    )
  );
  assert.equal(badConfig.issues[0].path, "methods[1].config.r");
  const typo = errorOf(() =>
    resolveSuite(
      parseSuite(rawSuite((s) => (s.methods = [{ name: "lora", config: { rank: 4 } }])), "x.json"),
      "x.json",
    )
  );
  assert.equal(typo.issues[0].path, "methods[0].config");
  assert.match(typo.issues[0].message, /rank/);

  const missing = errorOf(() =>
    resolveSuite(parseSuite(rawSuite((s) => (s.samples = { "512": 2 })), "x.json"), "x.json")
  );
  assert.equal(missing.issues[0].path, "samples");
  assert.match(missing.issues[0].message, /no sample count for length 1024/);

  const overrides = errorOf(() =>
    resolveSuite(
      parseSuite(
        rawSuite((s) => {
          s.methods = "all";
          s.methodOverrides = { qlora: {} };
        }),
        "x.json",
      ),
      "x.json",
    )
  );
  assert.equal(overrides.issues[0].path, "methodOverrides.qlora");

  // Defaults are filled in and overrides merged.
  const resolved = resolveSuite(
    parseSuite(
      rawSuite((s) => {
        s.methods = [{
          name: "lora",
          config: { r: 4 },
          training: { steps: 7, optimizer: { maxGradNorm: 2 } },
        }];
      }),
      "x.json",
    ),
    "x.json",
  );
  assert.deepEqual(resolved.methods[0].config, {
    alpha: 16,
    init: "kaiming",
    r: 4,
    rslora: false,
    targets: ["q", "k", "v", "o"],
  });
  assert.equal(resolved.methods[0].training.steps, 7);
  assert.equal(resolved.methods[0].training.lr, 0.001);
  assert.deepEqual(resolved.methods[0].training.optimizer, { maxGradNorm: 2 });
  assert.deepEqual(resolved.evaluations[2].samples, [3]);
  assert.deepEqual(resolved.evaluations[0].samples, [2, 1]);
  assert.equal(resolved.prepareLength, 1024);

  assert.throws(
    () => resolveSuite(parseSuite(rawSuite(), "x.json"), "x.json", { methods: ["dora"] }),
    /--methods: "dora" is not in suite tiny \(its methods: baseline, lora\)/,
  );
});

Deno.test("expansion: one cell per model, method, seed, evaluation and length, with stable content keys", () => {
  const { suite, expansion } = expand(rawSuite());
  // 2 methods × 2 seeds × (wikitext 2 + ruler 2 + babilong 1 lengths).
  assert.equal(expansion.cells.length, 2 * 2 * 5);
  assert.equal(expansion.groups.length, 4);
  assert.deepEqual(expansion.groups.map((g) => [g.method.label, g.seed, g.trains]), [
    ["baseline", 0, false],
    ["baseline", 1, false],
    ["lora", 0, true],
    ["lora", 1, true],
  ]);
  for (const cell of expansion.cells) assert.match(cell.key, /^[0-9a-f]{64}$/);
  // A method that trains nothing has the same keys for every seed (its cells are computed once).
  const baseline = expansion.cells.filter((c) => c.method.label === "baseline");
  assert.deepEqual(
    baseline.filter((c) => c.seed === 0).map((c) => c.key),
    baseline.filter((c) => c.seed === 1).map((c) => c.key),
  );
  const lora = expansion.cells.filter((c) => c.method.label === "lora");
  assert.notDeepEqual(
    lora.filter((c) => c.seed === 0).map((c) => c.key),
    lora.filter((c) => c.seed === 1).map((c) => c.key),
  );
  assert.equal(new Set(lora.map((c) => c.key)).size, lora.length);
  assert.equal(suite.evaluations[1].name, "ruler");

  const keys = expansion.cells.map((c) => c.key);
  // Same input, different key order, labels and descriptions: the same keys.
  const reordered = rawSuite((s) => {
    s.description = "another description";
    s.methods = [{ config: { r: 4 }, name: "lora", label: "lora-r4" }, { label: "base", name: "baseline" }];
    (s.evaluations as Record<string, unknown>[])[1] = {
      tasks: ["niah_single_2"],
      name: "needles",
      family: "ruler",
    };
  });
  const again = expand(reordered).expansion.cells;
  const byIdentity = (cells: typeof again) =>
    Object.fromEntries(
      cells.map((c) => [`${c.method.name}/${c.seed}/${c.evaluation.family}/${c.length}`, c.key]),
    );
  assert.deepEqual(byIdentity(again), byIdentity(expansion.cells));
  assert.deepEqual(expand(rawSuite()).expansion.cells.map((c) => c.key), keys, "expansion is deterministic");

  // Anything that can change a number changes the keys it touches.
  const changed = (patch: (s: Record<string, unknown>) => void, count: number, what: string) => {
    const other = expand(rawSuite(patch)).expansion.cells.map((c) => c.key);
    const differing = other.filter((key, i) => key !== keys[i]).length;
    assert.equal(differing, count, `${what}: ${differing} keys changed`);
  };
  changed((s) => (s.dataSeed = 7), 20, "data seed");
  changed((s) => ((s.methods as Record<string, unknown>[])[1].config = { r: 8 }), 10, "lora rank");
  changed(
    (s) => ((s.training as Record<string, unknown>).steps = 4),
    10,
    "training steps (baseline trains nothing)",
  );
  changed(
    (s) => ((s.evaluations as Record<string, unknown>[])[1].maxNewTokens = 5),
    8,
    "RULER generation cap",
  );
  changed(
    (s) => ((s.samples as Record<string, number>)["512"] = 3),
    8,
    "samples at 512 (babilong has its own)",
  );
  changed((s) => (s.prepareLength = 2048), 20, "the length methods are prepared for");
  const otherModel = expandSuite(resolveSuite(parseSuite(rawSuite(), "x.json"), "x.json"), [{
    ...MODEL,
    hash: "c".repeat(64),
  }]);
  assert.ok(otherModel.cells.every((c, i) => c.key !== keys[i]), "another model's weights change every key");
});

Deno.test("shards partition the cells exactly, are contiguous runs of the key order, and parse i/n", () => {
  const { expansion } = expand(rawSuite((s) => (s.seeds = [0, 1, 2, 3])));
  const all = expansion.cells;
  for (const n of [1, 2, 3, 5, 7, all.length, all.length + 3]) {
    const shards = Array.from({ length: n }, (_, i) => shardCells(all, { index: i, count: n }));
    const orders = shards.flat().map((c) => c.order).sort((a, b) => a - b);
    assert.deepEqual(orders, all.map((c) => c.order), `n = ${n}: every cell exactly once`);
    const sizes = shards.map((s) => s.length);
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `n = ${n}: sizes ${sizes}`);
    for (const shard of shards) {
      for (let i = 1; i < shard.length; i++) {
        assert.ok(shard[i - 1].order < shard[i].order, "suite order within a shard");
      }
    }
    assert.deepEqual(shardCells(all, { index: 0, count: n }), shards[0], "deterministic");
  }
  // Contiguous in (group key, cell key) order: a group is split across at most two neighbouring shards.
  const two = [0, 1].map((i) => shardCells(all, { index: i, count: 2 }));
  const groupsIn = (cells: typeof all) => new Set(cells.map((c) => c.groupKey));
  const shared = [...groupsIn(two[0])].filter((g) => groupsIn(two[1]).has(g));
  assert.ok(shared.length <= 1, `groups split across shards: ${shared.length}`);

  assert.deepEqual(parseShard("2/8"), { index: 2, count: 8 });
  assert.deepEqual(parseShard(" 0 / 1 "), { index: 0, count: 1 });
  assert.throws(() => parseShard("8/8"), /i must lie in 0…7/);
  assert.throws(() => parseShard("1/0"), /n must be at least 1/);
  assert.throws(() => parseShard("a/b"), /expected i\/n/);
});

Deno.test("cost guards refuse a grid beyond them, naming the guard and the need", () => {
  const { suite, expansion } = expand(
    rawSuite((s) => (s.guards = { maxCells: 19, maxLength: 512, maxTrainTokens: 100 })),
  );
  assert.throws(
    () => checkGuards(suite, expansion, "tiny.json"),
    (error: Error) => {
      assert.match(error.message, /^tiny\.json: the suite exceeds its cost guards/);
      assert.match(error.message, /guards\.maxCells is 19, the suite expands to 20 cells/);
      assert.match(error.message, /guards\.maxLength is 512, the suite evaluates at 1024 tokens/);
      assert.match(error.message, /guards\.maxTrainTokens is 100, the suite trains on 384 tokens/);
      return true;
    },
  );
  const fine = expand(
    rawSuite((s) => (s.guards = { maxCells: 20, maxLength: 1024, maxEvalTokens: 10_000_000 })),
  );
  checkGuards(fine.suite, fine.expansion, "tiny.json");
});

Deno.test("every shipped suite parses; resolution fails at most on methods not registered yet", async () => {
  const names: string[] = [];
  for await (const entry of Deno.readDir(SUITES)) if (entry.name.endsWith(".json")) names.push(entry.name);
  for (
    const required of [
      "quick.json",
      "standard.json",
      "full.json",
      "hylorada-ablation.json",
      "hylorada-vs-longlora.json",
      "hybrid-rq1.json",
      "hybrid-rq2.json",
      "hybrid-rq3.json",
      "focusft-sinks.json",
      "lift-vs-icl.json",
    ]
  ) {
    assert.ok(names.includes(required), `benchmarks/suites/${required} is missing`);
  }
  for (const name of names.sort()) {
    const path = join(SUITES, name);
    const { suite } = await loadSuite(path);
    assert.equal(`${suite.name}.json`, name, "a suite's name is its file name");
    try {
      const resolved = resolveSuite(suite, path);
      const expansion = expandSuite(
        resolved,
        [MODEL, { ...MODEL, name: "gpt2-tiny" }].filter((m) => resolved.models.includes(m.name)).map((m) =>
          m.name === "gpt2-tiny"
            ? {
              ...m,
              config: parseModelConfig({
                family: "gpt2",
                vocabSize: 257,
                maxPositions: 1024,
                nLayer: 2,
                nHead: 4,
                nEmbd: 128,
              }),
            }
            : m
        ),
      );
      checkGuards(resolved, expansion, path);
    } catch (error) {
      assert.ok(error instanceof SchemaValidationError, `${name}: ${error}`);
      for (const issue of error.issues) {
        assert.match(
          issue.message,
          /^unknown method "[a-z\-]+"; known:/,
          `${name}: ${issue.path}: ${issue.message}`,
        );
      }
    }
  }
  const quick: SuiteFile = (await loadSuite(join(SUITES, "quick.json"))).suite;
  assert.equal(quick.methods, "all", "the quick suite runs every registered method");
  assert.deepEqual(quick.lengths, [512, 2048, 8192]);
  assert.deepEqual(
    [...new Set(quick.evaluations.map((e) => e.family))].sort(),
    ["babilong", "pg19", "ruler", "wikitext"],
  );
});
