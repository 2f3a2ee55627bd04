import assert from "node:assert/strict";
import { generateBabi } from "../../src/data/babi.ts";
import type { Tokenizer } from "../../src/data/tokenizer.ts";
import { createGenerator } from "../../src/eval/generate.ts";
import type { SampleAdaptation } from "../../src/harness/method_hooks.ts";
import { getGpu } from "../../src/gpu/device.ts";
import { readF32, upload } from "../../src/gpu/tensor.ts";
import { NO_BASE } from "../../src/model/adapter.ts";
import { type ModelConfig, parseModelConfig } from "../../src/model/config.ts";
import { parameterCount, type ParamTable } from "../../src/model/params.ts";
import { createWeights, initialWeights, readWeights } from "../../src/model/weights.ts";
import { IGNORE_INDEX } from "../../src/ops/crossentropy.ts";
import {
  createGatedMemoryAdapter,
  gatedMemoryNames,
  gatedMemoryParameterCount,
  HEAD_LORA,
  headLoraMatrix,
} from "../../src/methods/gated_memory.ts";
import {
  babiLocationQa,
  documentIndex,
  lift,
  liftBatch,
  type LiftConfig,
  liftConfigSchema,
  liftDocument,
  liftPlan,
  liftSampleAdaptation,
  liftSchedule,
  qaExample,
  segmentDocument,
  truncateMiddle,
} from "../../src/methods/lift.ts";
import { fillNormal, Rng } from "../../src/random/philox.ts";
import { Trainer } from "../../src/train/trainer.ts";
import { assertBitwiseEqual, compare } from "../reference/compare.ts";
import { gatedMemoryRefHooks } from "../reference/gated_memory.ts";
import { runGraph, type TestBatch } from "../reference/graph_run.ts";
import { chainRefHooks, loraRefHooks } from "../reference/lorada.ts";
import { referenceModel, type RefHooks } from "../reference/model.ts";
import { scaledWeights, tinyGpt2, tinyLlama } from "../reference/tiny_models.ts";

// Awkward sizes: D = 12 (⌊√12⌋ = 3), widths that are multiples of no tile, GQA for Llama.
const gpt2 = tinyGpt2;
const llama = tinyLlama;

// Random tokens and targets (every fifth ignored), loss weights already divided by the counted tokens as
// the Trainer leaves them (the regulariser reads them too, so the graph runs with gradScale 1).
function batchOf(V: number, N: number, seed: number): TestBatch {
  const rng = new Rng(seed, 77);
  const tokens = Uint32Array.from({ length: N }, () => rng.int(V));
  const targets = Int32Array.from({ length: N }, (_, i) => (i % 5 === 3 ? IGNORE_INDEX : rng.int(V)));
  const counted = targets.filter((t) => t !== IGNORE_INDEX).length;
  const weights = Float32Array.from(targets, (t) => (t === IGNORE_INDEX ? 0 : 1 / counted));
  return { tokens, targets, weights };
}

Deno.test("LIFT parameter count is L·H·(4D² + D·⌊√D⌋ + ⌊√D⌋) + 2·(C + V): Llama-3-8B ≈ 68.6M + 0.26M, and the table holds it", async () => {
  const llama3 = parseModelConfig({
    family: "llama",
    vocabSize: 128256,
    maxPositions: 8192,
    nLayer: 32,
    nHead: 32,
    nKvHead: 8,
    nEmbd: 4096,
    nInner: 14336,
  });
  // D = 128, ⌊√128⌋ = 11: 32·32·(65,536 + 1,408 + 11) = 68,561,920 (spec: ≈ 68.6M), plus the lm_head LoRA
  // r·(C + V) = 2·(4,096 + 128,256) = 264,704 (spec: 0.26M).
  assert.equal(gatedMemoryParameterCount(llama3), 68_561_920);
  assert.equal(lift.parameterCount(llama3, liftConfigSchema.parse({})), 68_561_920 + 264_704);
  // GPT-2 small: D = 64, ⌊√64⌋ = 8.
  const small = parseModelConfig({
    family: "gpt2",
    vocabSize: 50257,
    maxPositions: 1024,
    nLayer: 12,
    nHead: 12,
    nEmbd: 768,
  });
  assert.equal(
    lift.parameterCount(small, liftConfigSchema.parse({})),
    144 * (16384 + 512 + 8) + 2 * (768 + 50257),
  );
  const gpu = await getGpu();
  for (const config of [gpt2, llama]) {
    const values = initialWeights(config, 1);
    const base = createWeights(gpu, config, values);
    const prepared = await lift.prepare(
      { gpu, base, baseValues: values, trainLength: 16, maxLength: 16, seed: 3 },
      liftConfigSchema.parse({}),
    );
    // Both tiny models: L = 2, D = 12, S = 3: H·(576 + 36 + 3); then 2·(C + V).
    const want = 2 * (config === gpt2 ? 3 : 4) * 615 + 2 * (config.nEmbd + config.vocabSize);
    assert.equal(lift.parameterCount(config, liftConfigSchema.parse({})), want);
    assert.equal(prepared.trainableParameters, want);
    assert.equal(parameterCount(prepared.adapter!.table), want);
    assert.equal(prepared.trainable, NO_BASE);
    assert.equal(prepared.weights, base, "LIFT runs the base weights, never a copy it could modify");
    assert.equal(prepared.details.testTime, true);
    assert.equal(prepared.details.perSample, "lift");
    const contextLength = config.maxPositions;
    assert.deepEqual(prepared.details.plan, { segment: 16, stride: 6, contextLength, qaLength: 16 });
    prepared.destroy();
    base.params.buffer.destroy();
  }
});

Deno.test("segments, truncation, QA examples, schedule and plan follow spec §4.1, §4.2", () => {
  // 2100 tokens, 2048 every 768: starts 0, 768, 1536 (lengths 2048, 1332, 564).
  const doc = Array.from({ length: 2100 }, (_, i) => i % 50);
  const segs = segmentDocument(doc, 2048, 768);
  assert.deepEqual(segs.map((s) => s.tokens.length), [2048, 1332, 564]);
  assert.deepEqual(segs[1].tokens.slice(0, 3), [768 % 50, 769 % 50, 770 % 50]);
  assert.deepEqual(
    segs[2].targets.slice(-2),
    [2099 % 50, IGNORE_INDEX],
    "LM loss on all tokens; the last has no target",
  );
  // A start whose window holds one token gives no example.
  assert.equal(segmentDocument([1, 2, 3, 4, 5, 6, 7], 4, 3).length, 2);
  assert.deepEqual(liftPlan(llama, liftConfigSchema.parse({}), { trainLength: 1024, maxLength: 4096 }), {
    segment: 1024,
    stride: 384,
    contextLength: 32,
    qaLength: 32,
  });
  assert.equal(
    liftPlan(llama, liftConfigSchema.parse({}), { trainLength: 8192, maxLength: 8192 }).stride,
    768,
  );

  assert.deepEqual(truncateMiddle([1, 2, 3, 4, 5, 6, 7, 8], 6, [0]), [1, 2, 0, 6, 7, 8]);
  assert.deepEqual(truncateMiddle([1, 2, 3, 4, 5, 6, 7, 8], 5, [0, 0]), [0, 0, 6, 7, 8]);
  assert.deepEqual(truncateMiddle([1, 2, 3], 5, [0]), [1, 2, 3]);
  assert.throws(() => truncateMiddle([1, 2, 3, 4], 2, [0, 0]), /ellipsis/);

  // Loss on the answer tokens only, wherever truncation puts them.
  const ex = qaExample({ prompt: [1, 2, 3], answer: [7, 8] }, 16, [0]);
  assert.deepEqual(ex.tokens, [1, 2, 3, 7, 8]);
  assert.deepEqual(ex.targets, [IGNORE_INDEX, IGNORE_INDEX, 7, 8, IGNORE_INDEX]);
  const cut = qaExample({ prompt: Array.from({ length: 20 }, (_, i) => 10 + i), answer: [7, 8] }, 10, [0]);
  assert.deepEqual(cut.tokens, [10, 11, 12, 13, 0, 27, 28, 29, 7, 8]);
  assert.deepEqual(cut.targets.filter((t) => t !== IGNORE_INDEX), [7, 8]);

  // 3 segments, 2 QA: 2 epochs of 3 single-example steps, then 1 epoch of 5; deterministic per (seed, document).
  const config = liftConfigSchema.parse({ epochs: 2, qaEpochs: 1 });
  const s = liftSchedule(config, 3, 2, 7, 4);
  assert.equal(s.length, 2 * 3 + 5);
  assert.deepEqual(s.slice(0, 3).flat().sort(), [0, 1, 2]);
  assert.deepEqual(s.slice(6).flat().sort(), [0, 1, 2, 3, 4]);
  assert.deepEqual(liftSchedule(config, 3, 2, 7, 4), s);
  assert.notDeepEqual(
    [5, 6, 7].map((d) => liftSchedule(config, 3, 2, 7, d).slice(6).flat().join()),
    [5, 6, 7].map(() => s.slice(6).flat().join()),
    "documents shuffle differently",
  );
  assert.equal(liftSchedule(config, 3, 0, 7, 4).length, 6, "no QA: the QA epochs are skipped");
  const gathered = liftSchedule(
    liftConfigSchema.parse({ epochs: 2, qaEpochs: 1, gatherBatches: true }),
    3,
    2,
    7,
    4,
  );
  assert.deepEqual(gathered.map((b) => b.length), [3, 3, 5], "gather_batches: one step per epoch");
  assert.deepEqual(
    liftSchedule(liftConfigSchema.parse({ epochs: 1, qaEpochs: 0, batchSize: 2 }), 5, 0, 1, 0).map((b) =>
      b.length
    ),
    [2, 2, 1],
  );

  // Batches pad to (B, T) with ignored targets; gathered, every example weighs 1/examples in the end.
  const all = [segmentDocument([1, 2, 3, 4, 5], 5, 5)[0], qaExample({ prompt: [1, 2], answer: [3] }, 8, [0])];
  const plain = liftBatch(all, [1, 0], 2, 6, false);
  assert.deepEqual([...plain.tokens], [1, 2, 3, 0, 0, 0, 1, 2, 3, 4, 5, 0]);
  assert.deepEqual([...plain.targets], [-100, 3, -100, -100, -100, -100, 2, 3, 4, 5, -100, -100]);
  assert.deepEqual([...plain.weights], [0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0]);
  const gw = liftBatch(all, [1, 0], 2, 6, true).weights;
  const counted = 5; // the Trainer divides by the batch's counted tokens
  assert.equal(gw[1] / counted, 1 / 2, "the one-token QA example weighs 1/2");
  assert.ok(
    Math.abs(gw.slice(6).reduce((a, b) => a + b, 0) / counted - 1 / 2) < 1e-7,
    "the 4-token segment too",
  );
});

Deno.test("auxiliary QA from bAbI facts: latest location of every other actor", () => {
  const facts = [
    "Mary went to the kitchen.",
    "John moved to the park.",
    "Sandra and Daniel journeyed to the office.",
    "John went back to the garden.",
    "Mary picked up the apple.",
  ];
  assert.deepEqual(babiLocationQa(facts, "Where is Mary?"), [
    { question: "Where is John?", answer: "garden" },
    { question: "Where is Sandra?", answer: "office" },
    { question: "Where is Daniel?", answer: "office" },
  ]);
  // On generated qa1 samples: every pair's answer is the actor's last location in the facts.
  for (const sample of generateBabi("qa1", { seed: 3, count: 5 })) {
    const pairs = babiLocationQa(sample.facts, sample.question);
    assert.ok(pairs.length > 0, "a qa1 story names several actors");
    for (const p of pairs) {
      const actor = p.question.slice("Where is ".length, -1);
      assert.ok(!sample.question.includes(actor), "the asked actor is left out");
      const last = sample.facts.filter((f) => f.startsWith(`${actor} `)).at(-1)!;
      assert.ok(last.endsWith(`the ${p.answer}.`), `${actor}: ${last} vs ${p.answer}`);
    }
  }
});

/**
 * The float64 Gated Memory hooks chained with the head LoRA's (s = α/r = 2), both writing into `ref.grads`
 * (the adapter table's layout), as gated_memory.ts chains them.
 */
function withHeadLora(
  ref: { hooks: RefHooks; grads: Float64Array },
  config: ModelConfig,
  table: ParamTable,
  values: Float32Array,
  N: number,
): RefHooks {
  const m = headLoraMatrix(config);
  const head = loraRefHooks(
    values,
    ref.grads,
    [{
      layer: m.layer,
      site: m.site,
      offset: 0,
      out: m.out,
      in: m.in,
      a: table.byName.get(m.a)!.offset,
      b: table.byName.get(m.b)!.offset,
    }],
    N,
    HEAD_LORA.r,
    HEAD_LORA.alpha / HEAD_LORA.r,
  );
  return chainRefHooks([ref.hooks, head]);
}

for (const [family, config] of [["GPT-2", gpt2], ["Llama", llama]] as const) {
  Deno.test(`${family}: LIFT at init gives the float64 gated mix's logits (not the base's); whole-model gradients match float64`, async () => {
    const gpu = await getGpu();
    const B = 2, T = 9, N = B * T;
    const { L, H, D } = { L: 2, H: config.nHead, D: 12 };
    const S = 3;
    const values = scaledWeights(config, 5);
    const weights = createWeights(gpu, config, values);
    const regularization = 0.5;
    const adapter = createGatedMemoryAdapter(gpu, config, { seed: 7, document: 1, regularization });
    const batch = batchOf(config.vocabSize, N, 3);
    const sz = { B, T, H, D, S };

    // Init: the kaiming-uniform values as they are (g ≈ 0.05, mem ≠ 0).
    const base = await runGraph(gpu, weights, { B, T, training: false }, batch, { readLogits: true });
    const init = await runGraph(gpu, weights, { B, T, training: false, adapter }, batch, {
      readLogits: true,
    });
    const refInit = gatedMemoryRefHooks(
      adapter.table,
      adapter.values,
      gatedMemoryNames,
      sz,
      batch.weights,
      0,
    );
    const ref0 = referenceModel(
      config,
      values,
      batch,
      B,
      T,
      1,
      withHeadLora(refInit, config, adapter.table, adapter.values, N),
    );
    const li = compare(`${family} init logits vs float64 gated mix`, init.logits!, ref0.logits, {
      atol: 2e-5,
      rtol: 1e-5,
    });
    let moved = 0;
    for (let i = 0; i < base.logits!.length; i++) {
      moved = Math.max(moved, Math.abs(base.logits![i] - init.logits![i]));
    }
    assert.ok(
      moved > 100 * li.maxAbs,
      `the gated memory must perturb the base at init (max change ${moved})`,
    );

    // Gradients: weights larger than the init (so gates spread and memory matters), regulariser on, and
    // the head LoRA's B away from its zero init (else A's gradient is zero).
    const av = Float32Array.from(adapter.values, (v) => 3 * v);
    const headB = adapter.table.byName.get(headLoraMatrix(config).b)!;
    assert.ok(adapter.values.subarray(headB.offset, headB.offset + headB.numel).every((v) => v === 0));
    fillNormal(av.subarray(headB.offset, headB.offset + headB.numel), 11, 0, 0, 0.5);
    upload(gpu, adapter.params, av);
    const run = await runGraph(gpu, weights, { B, T, training: true, adapter, trainable: NO_BASE }, batch);
    // Recomputing each block in the backward re-runs the mix forward: the same gradients, bit for bit.
    const again = await runGraph(gpu, weights, {
      B,
      T,
      training: true,
      recompute: true,
      adapter,
      trainable: NO_BASE,
    }, batch);
    assertBitwiseEqual(`${family} adapter gradients with recompute`, again.adapterGrads!, run.adapterGrads!);
    const refG = gatedMemoryRefHooks(
      adapter.table,
      av,
      gatedMemoryNames,
      sz,
      batch.weights,
      regularization / (H * L),
    );
    const ref = referenceModel(
      config,
      values,
      batch,
      B,
      T,
      1,
      withHeadLora(refG, config, adapter.table, av, N),
    );
    compare(`${family} losses`, run.losses, ref.losses, { atol: 2e-5, rtol: 1e-5 });
    const worst: string[] = [];
    for (const e of adapter.table.entries) {
      const want = refG.grads.subarray(e.offset, e.offset + e.numel);
      const got = run.adapterGrads!.subarray(e.offset, e.offset + e.numel);
      const max = Math.max(...Array.from(want, Math.abs));
      assert.ok(max > 0, `${e.name}: the reference gradient is all zero`);
      // Within 1e-4 of the tensor's largest value, as the LoRA check (the base attention's f32 error).
      const r = compare(`${family} ${e.name}`, got, want, { atol: 1e-4 * max, rtol: 1e-4 });
      worst.push((r.maxAbs / max).toExponential(1));
    }
    console.log(
      `${family}: init logits max |err| ${li.maxAbs.toExponential(2)} (base moved by ${
        moved.toFixed(3)
      }); grad max err/max per tensor: ${worst.join(" ")}`,
    );
    adapter.params.buffer.destroy();
    weights.params.buffer.destroy();
  });
}

Deno.test("the regulariser's gradient alone matches float64 (CE weights zero, gate weights only)", async () => {
  const gpu = await getGpu();
  const B = 1, T = 11, N = B * T;
  const values = scaledWeights(llama, 2);
  const weights = createWeights(gpu, llama, values);
  const adapter = createGatedMemoryAdapter(gpu, llama, { seed: 1, regularization: 1 });
  const batch = batchOf(llama.vocabSize, N, 8);
  // Loss weights drive only the regulariser: the CE gradient is scaled to zero.
  const run = await runGraph(gpu, weights, { B, T, training: true, adapter, trainable: NO_BASE }, batch, {
    gradScale: 0,
  });
  const refG = gatedMemoryRefHooks(
    adapter.table,
    adapter.values,
    gatedMemoryNames,
    { B, T, H: 4, D: 12, S: 3 },
    batch.weights,
    1 / 8,
  );
  referenceModel(llama, values, batch, B, T, 0, refG.hooks);
  for (const e of adapter.table.entries) {
    const want = refG.grads.subarray(e.offset, e.offset + e.numel);
    const got = run.adapterGrads!.subarray(e.offset, e.offset + e.numel);
    const max = Math.max(...Array.from(want, Math.abs));
    // The last layer's memory feels nothing (its gate's gradient reaches only earlier layers' inputs).
    if (e.name.startsWith("h.1.self_attn.mem_proj")) {
      assert.ok(got.every((x) => x === 0), `${e.name} got a gradient`);
    } else compare(`regulariser ${e.name}`, got, want, { atol: 1e-5 * max, rtol: 1e-4 });
  }
  adapter.params.buffer.destroy();
  weights.params.buffer.destroy();
});

// A tiny tokenizer over the test vocabulary (generation decodes through one).
function letters(V: number): Tokenizer {
  return {
    name: "letters",
    hash: "letters",
    vocabSize: V,
    encode: (text) => [...text].map((c) => c.charCodeAt(0) - 48),
    decode: (ids) => ids.map((i) => String.fromCharCode(48 + i)).join(""),
    special: () => undefined,
  };
}

// A document the frozen random model cannot predict: a cycle through 13 distinct tokens, so each token
// fixes the next one (what per-token memory of the pre-RoPE query can store).
const CYCLE = [5, 17, 2, 30, 11, 23, 8, 36, 14, 27, 3, 20, 33];
const cycleDoc = (n: number) => Array.from({ length: n }, (_, i) => CYCLE[i % CYCLE.length]);

Deno.test("LIFT per document: the document's loss drops, answers come from the adapted model, bitwise reproducible, base untouched", async () => {
  const gpu = await getGpu();
  const values = scaledWeights(llama, 8);
  const base = createWeights(gpu, llama, values);
  const tokenizer = letters(llama.vocabSize);
  const trainLength = 16;
  const config: LiftConfig = liftConfigSchema.parse({ epochs: 6, qaEpochs: 1, lr: 2e-2 });
  const doc = { tokens: cycleDoc(40), qa: [{ prompt: [CYCLE[3], CYCLE[4]], answer: [CYCLE[5]] }] };
  // Segments of 16 every 6 tokens; the question is the document's start, far longer than the context.
  const question = { prompt: cycleDoc(45).slice(0, 40).concat(CYCLE.slice(1, 4)) };
  const plan = liftPlan(llama, config, { trainLength, maxLength: trainLength });
  const docLoss = async (
    model: { weights: typeof base; adapter: Parameters<typeof runGraph>[2]["adapter"] },
  ) => {
    const segs = segmentDocument(doc.tokens, plan.segment, plan.stride).filter((s) => s.tokens.length === 16);
    const tokens = Uint32Array.from(segs.flatMap((s) => s.tokens));
    const targets = Int32Array.from(segs.flatMap((s) => s.targets));
    const w = Float32Array.from(targets, (t) => (t === IGNORE_INDEX ? 0 : 1));
    const r = await runGraph(gpu, model.weights, {
      B: segs.length,
      T: 16,
      training: false,
      adapter: model.adapter,
    }, {
      tokens,
      targets,
      weights: w,
    });
    return r.lossSum / w.reduce((a, b) => a + b, 0);
  };
  const generated = async (model: Parameters<Parameters<typeof liftDocument>[5]>[0], prompt: number[]) => {
    const gen = createGenerator(gpu, model, { maxLength: llama.maxPositions });
    try {
      const out = await gen.generate(prompt, { maxNewTokens: 6, tokenizer });
      return {
        tokens: out.tokens,
        loss: await docLoss(model),
        params: await readF32(gpu, model.adapter.params!),
      };
    } finally {
      gen.destroy();
    }
  };
  const options = { seed: 4, document: 2, trainLength, ellipsis: [0], answerRoom: 6 };
  const untrained = await liftDocument(
    gpu,
    base,
    { ...config, epochs: 0, qaEpochs: 0 },
    doc,
    [question],
    generated,
    options,
  );
  assert.equal(untrained.steps, 0);
  const t0 = performance.now();
  const first = await liftDocument(gpu, base, config, doc, [question], generated, options);
  const seconds = (performance.now() - t0) / 1000;
  // 40 tokens, starts 0, 6, …, 36: 7 segments; 6 epochs of 7 steps, then 1 epoch of 7 + 1 QA.
  assert.equal(first.segments, 7);
  assert.equal(first.qaExamples, 1);
  assert.equal(first.steps, 6 * 7 + 8);
  assert.equal(first.T, 16);
  // The prompt was head/tail-truncated to contextLength − answerRoom = 26 tokens around "...".
  assert.equal(first.prompts[0].length, 26);
  assert.equal(first.prompts[0][12], 0, "the ellipsis token");
  assert.deepEqual(first.prompts[0].slice(-3), CYCLE.slice(1, 4));
  const before = untrained.answers[0].loss, after = first.answers[0].loss;
  const want = CYCLE.slice(4, 10);
  const hits = (a: number[]) => a.filter((t, i) => t === want[i]).length;
  console.log(
    `LIFT document loss ${before.toFixed(3)} → ${after.toFixed(3)}; step losses ${
      first.losses[0].toFixed(3)
    } → ` +
      `${first.losses.at(-1)!.toFixed(3)}; answer ${first.answers[0].tokens} (want ${want}, untrained ` +
      `${untrained.answers[0].tokens}); ${first.steps} steps in ${seconds.toFixed(1)} s`,
  );
  assert.ok(after < before - 1, `the document's loss must drop by a nat: ${before} → ${after}`);
  assert.ok(
    hits(first.answers[0].tokens) >= 5,
    `the adapted model continues the document: ${first.answers[0].tokens}`,
  );
  assert.ok(
    hits(untrained.answers[0].tokens) <= 2,
    `the untrained model should not: ${untrained.answers[0].tokens}`,
  );

  // The same seed and document give the same run bit for bit; the base is never written.
  const second = await liftDocument(gpu, base, config, doc, [question], generated, options);
  assertBitwiseEqual("LIFT step losses", Float32Array.from(first.losses), Float32Array.from(second.losses));
  assertBitwiseEqual("LIFT adapted weights", first.answers[0].params, second.answers[0].params);
  assert.deepEqual(second.answers[0].tokens, first.answers[0].tokens);
  assertBitwiseEqual("base weights after LIFT", await readWeights(gpu, base), values);
  // gather_batches: one step per epoch over every example (B = 8 rows: 7 segments + 1 QA).
  const gathered = await liftDocument(
    gpu,
    base,
    { ...config, gatherBatches: true },
    doc,
    [question],
    generated,
    options,
  );
  assert.equal(gathered.steps, 6 + 1);
  assert.equal(gathered.B, 8);
  console.log(
    `gather_batches: document loss ${before.toFixed(3)} → ${gathered.answers[0].loss.toFixed(3)} in 7 steps`,
  );
  assert.ok(gathered.answers[0].loss < before - 0.5, `gathered: ${before} → ${gathered.answers[0].loss}`);
  // Another document index starts from other values (a fresh adapter per document).
  const other = await liftDocument(
    gpu,
    base,
    { ...config, epochs: 0, qaEpochs: 0 },
    doc,
    [question],
    generated,
    {
      ...options,
      document: 3,
    },
  );
  assert.ok(other.answers[0].params.some((v, i) => v !== untrained.answers[0].params[i]));
  base.params.buffer.destroy();
});

Deno.test("LIFT as a per-sample adaptation: trains the prepared adapter in place, the undo restores it; the Trainer lowers the loss", async () => {
  const gpu = await getGpu();
  const values = scaledWeights(llama, 8);
  const base = createWeights(gpu, llama, values);
  const prepared = await lift.prepare(
    { gpu, base, baseValues: values, trainLength: 16, maxLength: 32, seed: 1 },
    liftConfigSchema.parse({ epochs: 2, lr: 2e-2 }),
  );
  const adapter = prepared.adapter!;
  const start = await readF32(gpu, adapter.params!);
  const tokens = cycleDoc(30);
  // The harness's per-sample hook type takes it as it is (SAMPLE_ADAPTATIONS.lift).
  const adaptation: SampleAdaptation = liftSampleAdaptation;
  const undo = await adaptation(gpu, prepared, {
    prompt: "",
    tokens,
    tokenizer: letters(41),
    length: 30,
    seed: 5,
  });
  const adapted = await readF32(gpu, adapter.params!);
  assert.ok(adapted.some((v, i) => v !== start[i]), "the adapter trained");
  await undo();
  assertBitwiseEqual("adapter after the undo", await readF32(gpu, adapter.params!), start);
  assertBitwiseEqual("base after the adaptation", await readWeights(gpu, base), values);
  assert.equal(documentIndex(tokens), documentIndex([...tokens]));
  assert.notEqual(documentIndex(tokens), documentIndex(cycleDoc(31)));

  // The plain Trainer on the method's adapter (what a harness training stage would run) lowers the loss.
  const T = 24;
  const trainer = await Trainer.create(gpu, base, {
    B: 1,
    T,
    optimizer: { lr: 2e-2, maxGradNorm: 1 },
    adapter,
    trainable: prepared.trainable,
  });
  const doc = cycleDoc(T + 1);
  const batch = { tokens: Uint32Array.from(doc.slice(0, T)), targets: Int32Array.from(doc.slice(1)) };
  for (let i = 0; i < 30; i++) await trainer.step(batch);
  const losses = await trainer.losses();
  console.log(`Trainer with the Gated Memory adapter: ${losses[0].toFixed(3)} → ${losses[29].toFixed(3)}`);
  assert.ok(losses[29] < losses[0] - 1, `loss ${losses[0]} → ${losses[29]} did not drop by a nat`);
  prepared.destroy();
  base.params.buffer.destroy();
});
