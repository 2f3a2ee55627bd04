import assert from "node:assert/strict";
import type { Tokenizer } from "../src/data/tokenizer.ts";
import {
  aggregateRuler,
  generateRuler,
  loadHotpotQa,
  loadSquadQa,
  RULER_TASK_NAMES,
  type RulerSources,
  scoreRulerTask,
  singularNiahPrefix,
  stringMatchAll,
  stringMatchPart,
} from "../src/data/ruler.ts";
import { Rng } from "../src/random/philox.ts";

// UTF-8 bytes: lengths in this test are byte counts, which makes expected lengths easy to reason about.
const bytes: Tokenizer = {
  name: "test-bytes",
  hash: "test",
  vocabSize: 256,
  encode: (text) => [...new TextEncoder().encode(text)],
  decode: (ids) => new TextDecoder().decode(new Uint8Array(ids)),
  special: () => undefined,
};

// A deterministic essay of plain sentences (the real default is the generated corpus).
function essay(words: number): string {
  const rng = new Rng(5);
  const vocab = "the a river town walked slowly into old green market baker sang quietly over bridge morning"
    .split(" ");
  const out: string[] = [];
  for (let i = 0; i < words; i++) {
    const w = rng.pick(vocab);
    out.push(i % 12 === 11 ? `${w}.` : w);
  }
  return out.join(" ");
}

const sources: RulerSources = { essay: essay(4000) };

Deno.test("every RULER task fits its budget, lands close to it, and contains its answers", () => {
  for (const task of RULER_TASK_NAMES) {
    const maxLength = 4096;
    const samples = generateRuler({ task, maxLength, samples: 2, seed: 11, tokenizer: bytes, sources });
    assert.equal(samples.length, 2);
    for (const s of samples) {
      const len = bytes.encode(s.input + s.answer_prefix).length + s.tokens_to_generate;
      assert.equal(s.length, len, `${task}: recorded length`);
      assert.ok(s.length <= maxLength, `${task}: ${s.length} > ${maxLength}`);
      // FWE grows in steps of maxLength/32 words; the rest search unit by unit.
      const slack = task === "fwe" ? 0.75 : task === "qa_1" || task === "qa_2" ? 0.8 : 0.95;
      assert.ok(s.length >= slack * maxLength, `${task}: ${s.length} tokens is far below ${maxLength}`);
      assert.ok(s.outputs.length > 0, `${task}: has answers`);
      if (task !== "cwe" && task !== "fwe") {
        for (const o of s.outputs) assert.ok(s.input.includes(o), `${task}: answer ${o} is in the input`);
      }
    }
  }
});

Deno.test("NIAH answers: single tasks have one value, multivalue four, multiquery four keys", () => {
  const gen = (task: typeof RULER_TASK_NAMES[number]) =>
    generateRuler({ task, maxLength: 2048, samples: 1, seed: 3, tokenizer: bytes, sources })[0];
  const single = gen("niah_single_2");
  assert.equal(single.outputs.length, 1);
  assert.match(single.outputs[0], /^\d{7}$/);
  assert.match(
    single.answer_prefix,
    /A special magic number for [a-z]+-[a-z]+ mentioned in the provided text is$/,
  );
  assert.equal(gen("niah_single_3").outputs[0].length, 36);
  assert.equal(gen("niah_multivalue").outputs.length, 4);
  const mq = gen("niah_multiquery");
  assert.equal(mq.outputs.length, 4);
  assert.match(mq.answer_prefix, /numbers for .+, .+, .+, and .+ mentioned in the provided text are$/);
  // multikey_2: every filler line is a distractor needle of the same form.
  const mk2 = gen("niah_multikey_2");
  assert.ok(
    mk2.input.split("\n").filter((l) => l.startsWith("One of the special magic numbers for")).length > 10,
  );
});

Deno.test("CWE's common words appear 30 times (6 below 4K) and FWE's gold are the most frequent words", () => {
  for (const maxLength of [2048, 8192]) {
    const s = generateRuler({ task: "cwe", maxLength, samples: 1, seed: 8, tokenizer: bytes, sources })[0];
    const list = s.input.slice(s.input.lastIndexOf("Below is a numbered list"));
    const counts = new Map<string, number>();
    for (const m of list.matchAll(/\d+\. ([a-z]+)/g)) counts.set(m[1], (counts.get(m[1]) ?? 0) + 1);
    assert.equal(s.variant, maxLength < 4096 ? "small" : "standard");
    const expected = maxLength < 4096 ? 6 : 30;
    for (const w of s.outputs) assert.equal(counts.get(w), expected, `${w} at ${maxLength}`);
    const rare = [...counts.entries()].filter(([w]) => !s.outputs.includes(w));
    assert.ok(rare.length > 0 && rare.every(([, c]) => c === (maxLength < 4096 ? 1 : 3)));
  }
  const f =
    generateRuler({ task: "fwe", maxLength: 4096, samples: 1, seed: 8, tokenizer: bytes, sources })[0];
  const counts = new Map<string, number>();
  for (const w of f.input.split(/\s+/)) if (/^[a-z]{6}$/.test(w)) counts.set(w, (counts.get(w) ?? 0) + 1);
  const top = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([w]) => w);
  assert.deepEqual(top, f.outputs);
});

Deno.test("CWE steps down to smaller repeat counts when a byte-level budget cannot hold them", () => {
  const s =
    generateRuler({ task: "cwe", maxLength: 4096, samples: 1, seed: 8, tokenizer: bytes, sources })[0];
  assert.equal(s.variant, "small", "standard does not fit 4096 bytes");
  const t =
    generateRuler({ task: "cwe", maxLength: 1024, samples: 1, seed: 8, tokenizer: bytes, sources })[0];
  assert.equal(t.variant, "tiny");
  assert.ok(t.length <= 1024);
});

Deno.test("VT's answer is the whole chain holding the queried value", () => {
  const s = generateRuler({ task: "vt", maxLength: 2048, samples: 1, seed: 2, tokenizer: bytes, sources })[0];
  assert.equal(s.outputs.length, 5);
  const value = s.answer_prefix.match(/value (\d{5})/)![1];
  const body = s.input.slice(s.input.lastIndexOf("Memorise and follow"));
  assert.ok(body.includes(`VAR ${s.outputs[0]} = ${value}`));
  for (let i = 1; i < 5; i++) assert.ok(body.includes(`VAR ${s.outputs[i]} = VAR ${s.outputs[i - 1]}`));
});

Deno.test("RULER data is byte-identical for the same seed and differs for another", () => {
  for (const task of ["niah_multikey_3", "cwe", "qa_2"] as const) {
    const a = generateRuler({ task, maxLength: 2500, samples: 3, seed: 21, tokenizer: bytes, sources });
    const b = generateRuler({ task, maxLength: 2500, samples: 3, seed: 21, tokenizer: bytes, sources });
    const c = generateRuler({ task, maxLength: 2500, samples: 3, seed: 22, tokenizer: bytes, sources });
    assert.equal(JSON.stringify(a), JSON.stringify(b));
    assert.notEqual(JSON.stringify(a), JSON.stringify(c));
  }
});

Deno.test("metrics follow upstream: substring match all/any, case-insensitive, control chars", () => {
  assert.equal(stringMatchAll(" The numbers are 123 and 456\x00", ["123", "456", "789"]), 2 / 3);
  assert.equal(stringMatchPart("answer: PARIS", ["paris", "rome"]), 1);
  assert.equal(stringMatchPart("", ["x"]), 0);
  assert.equal(
    singularNiahPrefix(" Some special magic {type} for {query} are"),
    " A special magic {type} for {query} is",
  );
  const samples = generateRuler({
    task: "niah_single_1",
    maxLength: 1024,
    samples: 2,
    seed: 1,
    tokenizer: bytes,
    sources,
  });
  assert.equal(scoreRulerTask("niah_single_1", [samples[0].outputs[0], "nothing"], samples), 50);
});

Deno.test("aggregation reproduces the README's Gemini-1.5-pro weighted averages", () => {
  const lengths = [4096, 8192, 16384, 32768, 65536, 131072];
  const perLength = [96.7, 95.8, 96.0, 95.9, 95.9, 94.4];
  const scores = Object.fromEntries(lengths.map((l, i) => [l, { niah_single_1: perLength[i] }]));
  const agg = aggregateRuler(scores);
  assert.equal(agg.weightedIncreasing.toFixed(2), "95.51");
  assert.equal(agg.weightedDecreasing.toFixed(2), "96.05");
  assert.equal(agg.effectiveLength, 131072);
  const low = aggregateRuler({ 4096: { vt: 90 }, 8192: { vt: 80, cwe: 95 }, 16384: { vt: 50 } });
  assert.equal(low.effectiveLength, 8192);
  assert.equal(aggregateRuler({ 4096: { vt: 10 } }).effectiveLength, null);
});

Deno.test("bad requests are refused with the reason", () => {
  assert.throws(
    () =>
      generateRuler({ task: "nope" as "vt", maxLength: 100, samples: 1, seed: 1, tokenizer: bytes, sources }),
    /unknown RULER task "nope"; known tasks: niah_single_1/,
  );
  assert.throws(
    () =>
      generateRuler({
        task: "niah_single_1",
        maxLength: 200,
        samples: 1,
        seed: 1,
        tokenizer: bytes,
        sources,
      }),
    /200 tokens is below the task's minimum of \d+/,
  );
});

Deno.test("a 32K-token sample of each task is generated quickly", () => {
  const big = { essay: essay(40000) };
  for (const task of RULER_TASK_NAMES) {
    const t0 = performance.now();
    const [s] = generateRuler({
      task,
      maxLength: 32768,
      samples: 1,
      seed: 4,
      tokenizer: bytes,
      sources: big,
    });
    const ms = performance.now() - t0;
    console.log(`ruler ${task} 32K: ${s.length} tokens in ${ms.toFixed(0)} ms`);
  }
});

Deno.test("SQuAD and HotpotQA files replace the synthetic QA pools", async () => {
  const dir = await Deno.makeTempDir();
  const squad = {
    data: [{
      title: "Rivers",
      paragraphs: [
        {
          context: "The Loire is the longest river in France.",
          qas: [{
            question: "Which is the longest river in France?",
            answers: [{ text: "The Loire" }, { text: "Loire" }],
          }],
        },
        {
          context: "It flows into the Atlantic.",
          qas: [{ question: "Unanswerable?", answers: [], is_impossible: true }],
        },
      ],
    }],
  };
  await Deno.writeTextFile(`${dir}/squad.json`, JSON.stringify(squad));
  const qa1 = await loadSquadQa(`${dir}/squad.json`);
  assert.equal(qa1.items.length, 1);
  assert.deepEqual(qa1.items[0].related, ["It flows into the Atlantic."]);
  const hotpot = [{
    question: "Where?",
    answer: "Paris",
    context: [["A", ["Alice lives in Paris."]], ["B", ["Bob."]]],
  }];
  await Deno.writeTextFile(`${dir}/hotpot.json`, JSON.stringify(hotpot));
  const qa2 = await loadHotpotQa(`${dir}/hotpot.json`);
  assert.deepEqual(qa2.items[0].gold, ["A\nAlice lives in Paris.", "B\nBob."]);
  const [s] = generateRuler({
    task: "qa_1",
    maxLength: 600,
    samples: 1,
    seed: 1,
    tokenizer: bytes,
    sources: { ...sources, qa1 },
  });
  assert.ok(s.input.includes("The Loire is the longest river in France."));
  assert.deepEqual(s.outputs, ["The Loire", "Loire"]);
  await Deno.writeTextFile(`${dir}/bad.json`, JSON.stringify([{ question: "q", context: [] }]));
  await assert.rejects(loadHotpotQa(`${dir}/bad.json`), /bad.json: field 0.answer/);
  await Deno.remove(dir, { recursive: true });
});
