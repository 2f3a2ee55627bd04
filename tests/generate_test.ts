/**
 * Greedy generation with the KV cache (src/model/decode.ts, src/eval/generate.ts) against full recompute
 * — the argmax of the last row of a whole forward (createGraph/recordForward logitsOnly) over the growing
 * sequence — for a GPT-2 and a Llama (GQA, YaRN-scaled RoPE) tiny model with random weights, with and
 * without LoRA (random nonzero B); stops, budgets and eos; the perplexity scorer against a direct graph
 * run; determinism.
 */
import assert from "node:assert/strict";
import type { Tokenizer } from "../src/data/tokenizer.ts";
import { byteTokenizer } from "../src/data/tokenizers.ts";
import { createGenerator, findStop } from "../src/eval/generate.ts";
import { evaluatePerplexity } from "../src/eval/perplexity.ts";
import { createScorer } from "../src/eval/scorer.ts";
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, readTensors, tensorFrom, upload } from "../src/gpu/tensor.ts";
import type { Adapter, AttachContext } from "../src/model/adapter.ts";
import { dims, type ModelConfig, parseModelConfig } from "../src/model/config.ts";
import { buildTable } from "../src/model/params.ts";
import { axpy } from "../src/ops/elementwise.ts";
import { mergeHeads } from "../src/ops/heads.ts";
import { matmul } from "../src/ops/matmul.ts";
import { createDecoder, type DecodeModel, decodeRopeTables } from "../src/model/decode.ts";
import { createGraph, destroyGraph, recordForward } from "../src/model/model.ts";
import { ropeFrequencies, ropeTables } from "../src/model/rope_scaling.ts";
import { createWeights, initialWeights } from "../src/model/weights.ts";
import { createLoraAdapter, loraConfigSchema } from "../src/methods/lora.ts";
import { createLoradaAdapter, loradaConfigSchema, loradaNames } from "../src/methods/lorada.ts";
import { fillUniform, Rng } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";
import { runGraph } from "./reference/graph_run.ts";

const gpt2 = parseModelConfig({
  family: "gpt2",
  vocabSize: 61,
  maxPositions: 40,
  nLayer: 2,
  nHead: 3,
  nEmbd: 36,
});
const llama = parseModelConfig({
  family: "llama",
  vocabSize: 53,
  maxPositions: 40,
  nLayer: 2,
  nHead: 4,
  nKvHead: 2,
  nEmbd: 48,
  nInner: 44,
  rope: { type: "yarn", factor: 4, originalMaxPositions: 16 },
});

/** Initial weights ×4 so that attention and the logits are far from uniform (the argmax is not degenerate). */
function scaledWeights(gpu: Gpu, config: ModelConfig, seed: number) {
  const w = initialWeights(config, seed);
  for (let i = 0; i < w.length; i++) w[i] *= 4;
  return createWeights(gpu, config, w);
}

function lora(gpu: Gpu, config: ModelConfig, seed: number): Adapter {
  const targets = config.family === "gpt2"
    ? ["q", "v", "o", "fc", "fcProj"] as const
    : ["q", "k", "v", "o", "gate", "up", "down"] as const;
  const adapter = createLoraAdapter(gpu, config, loraConfigSchema.parse({ r: 3, alpha: 7, targets }), seed);
  const values = adapter.values.slice();
  const rng = new Rng(seed, 5);
  for (const m of adapter.matrices) {
    const e = adapter.table.byName.get(m.b)!;
    for (let i = 0; i < e.numel; i++) values[e.offset + i] = (rng.uniform() - 0.5) * 0.8;
  }
  upload(gpu, adapter.params!, values);
  return adapter;
}

/** LoRaDA (r 3) with W drawn away from its zero init, so the map changes the logits. */
function lorada(gpu: Gpu, config: ModelConfig, seed: number): Adapter {
  const adapter = createLoradaAdapter(gpu, config, loradaConfigSchema.parse({ r: 3 }), seed);
  const values = adapter.values.slice();
  const rng = new Rng(seed, 6);
  for (let l = 0; l < config.nLayer; l++) {
    const e = adapter.table.byName.get(loradaNames(l).w)!;
    for (let i = 0; i < e.numel; i++) values[e.offset + i] = (rng.uniform() - 0.5) * 0.6;
  }
  upload(gpu, adapter.params!, values);
  return adapter;
}

/** Host argmax with the kernel's rule: ties to the lowest index. */
function hostArgmax(row: Float32Array): number {
  let best = 0;
  for (let v = 1; v < row.length; v++) if (row[v] > row[best]) best = v;
  return best;
}

/** The last row of a full forward over `sequence`. */
async function lastRowLogits(gpu: Gpu, model: DecodeModel, sequence: number[]): Promise<Float32Array> {
  const T = sequence.length;
  const g = createGraph(gpu, model.weights, {
    B: 1,
    T,
    training: false,
    adapter: model.adapter ?? undefined,
    mask: model.evalMask,
  });
  try {
    upload(gpu, g.inputs.tokens, sequence);
    const rec = new Recorder(gpu, "full forward");
    await recordForward(rec, g, { logitsOnly: true });
    await rec.submit();
    rec.destroy();
    const V = model.weights.dims.V;
    const all = (await readTensors(gpu, [g.logits]))[0] as Float32Array;
    return all.slice((T - 1) * V, T * V);
  } finally {
    destroyGraph(g);
  }
}

/** Greedy tokens by full recompute, with the logits that chose each one and its top-2 margin. */
async function recomputeGreedy(gpu: Gpu, model: DecodeModel, prompt: number[], n: number) {
  const sequence = [...prompt];
  const tokens: number[] = [], logits: Float32Array[] = [];
  let margin = Infinity;
  for (let i = 0; i < n; i++) {
    const row = await lastRowLogits(gpu, model, sequence);
    const t = hostArgmax(row);
    const second = Math.max(...row.filter((_, v) => v !== t));
    margin = Math.min(margin, row[t] - second);
    tokens.push(t);
    logits.push(row);
    sequence.push(t);
  }
  return { tokens, logits, margin };
}

function randomPrompt(V: number, T: number, seed: number): number[] {
  const rng = new Rng(seed, 9);
  return Array.from({ length: T }, () => rng.int(V));
}

const PROMPT = 9, NEW = 14;

for (const [name, config] of [["GPT-2", gpt2], ["Llama GQA + YaRN", llama]] as const) {
  for (const kind of ["", "LoRA", "LoRaDA"] as const) {
    const label = `${name}${kind ? ` + ${kind}` : ""}`;
    Deno.test(`${label}: KV-cache greedy tokens and logits match full recompute`, async () => {
      const gpu = await getGpu();
      const weights = scaledWeights(gpu, config, 3);
      const adapter = kind === "LoRA"
        ? lora(gpu, config, 17)
        : kind === "LoRaDA"
        ? lorada(gpu, config, 19)
        : null;
      const model: DecodeModel = { weights, adapter };
      const prompt = randomPrompt(config.vocabSize, PROMPT, 4);
      const want = await recomputeGreedy(gpu, model, prompt, NEW);
      // keysPerSplit 4 on Llama: the sequence spans several splits, so the ordered merge is exercised.
      const decoder = createDecoder(gpu, model, {
        maxLength: PROMPT + NEW + 3,
        keysPerSplit: config.family === "llama" ? 4 : undefined,
      });
      assert.equal(decoder.incremental, true, "every adapter here decodes with the KV cache");
      await decoder.start(prompt, NEW);
      let maxErr = 0;
      for (let i = 0; i < NEW; i++) {
        if (i > 0) await decoder.step(1);
        const got = await decoder.logits();
        // f32 attention in another order (flash forward vs split decode) and one-row matmuls: measured
        // ≤ 7e-6; the smallest top-2 margin of these trajectories is ~0.04.
        const r = compare(`${label} logits of token ${i}`, got, want.logits[i], { atol: 2e-5, rtol: 2e-5 });
        maxErr = Math.max(maxErr, r.maxAbs);
      }
      const tokens = await decoder.tokens();
      assert.deepEqual(tokens, want.tokens, "greedy tokens");
      assert.ok(new Set(tokens).size >= 4, `tokens are not degenerate: ${tokens}`);
      console.log(
        `  ${label}: ${NEW} tokens equal; max |Δlogit| ${maxErr.toExponential(2)}, smallest top-2 margin ` +
          `${want.margin.toFixed(3)}; tokens ${tokens.join(" ")}`,
      );
      decoder.destroy();
      weights.params.buffer.destroy();
      adapter?.params?.buffer.destroy();
    });
  }
}

/**
 * An adapter that uses the other hooks: per-head logit scales and sinks, an attention-output mix that
 * reads the pre-RoPE query, a final-norm change and a term on the LM head's logits (lnf·Mᵀ). It keeps the
 * contexts it was attached with.
 */
function hookAdapter(gpu: Gpu, config: ModelConfig, seed: number): Adapter & { contexts: AttachContext[] } {
  const { H, D, C, V } = dims(config);
  const headTerm = tensorFrom(gpu, [V, C], fillUniform(new Float32Array(V * C), seed, 2, -0.3, 0.3));
  const logitScale = tensorFrom(
    gpu,
    [H],
    fillUniform(new Float32Array(H), seed, 0, 0.5 / Math.sqrt(D), 2 / Math.sqrt(D)),
  );
  const sinkLogit = tensorFrom(gpu, [H], fillUniform(new Float32Array(H), seed, 1, -1, 2));
  const contexts: AttachContext[] = [];
  return {
    name: "test-hooks",
    table: buildTable([]),
    params: null,
    contexts,
    attach(ctx) {
      contexts.push(ctx);
      const merged = createTensor(gpu, [ctx.B, ctx.T, H * D], { label: "test.qMerged" });
      const lnCopy = createTensor(gpu, [ctx.B * ctx.T, C], { label: "test.lnf" });
      return {
        attention: () => Promise.resolve({ logitScale, sinkLogit }),
        async linearForward(rec, site, y, x) {
          if (site.name === "lmHead") await matmul(rec, y, x, headTerm, { transB: true, accumulate: true });
        },
        async mixOutput(rec, _layer, t) {
          await mergeHeads(rec, t.att, t.o);
          await mergeHeads(rec, merged, t.qPre);
          await axpy(rec, t.att, merged, 0.25);
        },
        async finalNorm(rec, lnf) {
          rec.copy(lnCopy, lnf);
          await axpy(rec, lnf, lnCopy, 0.3);
        },
        destroy() {
          merged.buffer.destroy();
          lnCopy.buffer.destroy();
        },
      };
    },
  };
}

for (const [name, config] of [["GPT-2", gpt2], ["Llama", llama]] as const) {
  Deno.test(`${name}: attention, mix, final-norm and LM-head hooks run in decode as in the graph; positions hold p`, async () => {
    const gpu = await getGpu();
    const weights = scaledWeights(gpu, config, 13);
    const adapter = hookAdapter(gpu, config, 2);
    const model: DecodeModel = { weights, adapter };
    const prompt = randomPrompt(config.vocabSize, 6, 14);
    const want = await recomputeGreedy(gpu, model, prompt, 10);
    const decoder = createDecoder(gpu, model, { maxLength: 20 });
    await decoder.start(prompt, 10);
    let maxErr = 0;
    for (let i = 0; i < 10; i++) {
      if (i > 0) await decoder.step(1);
      const r = compare(`${name} hooks: logits of token ${i}`, await decoder.logits(), want.logits[i], {
        atol: 2e-5,
        rtol: 2e-5,
      });
      maxErr = Math.max(maxErr, r.maxAbs);
    }
    assert.deepEqual(await decoder.tokens(), want.tokens);
    // The decode step's context (T = 1) reads p from the device; after the last step it holds the position
    // of the latest token (generated token 9 sits at 6 + 9), which the next step would decode.
    const stepContext = adapter.contexts.find((c) => c.T === 1)!;
    assert.deepEqual([...(await readTensors(gpu, [stepContext.positions]))[0]], [6 + 9]);
    console.log(`  ${name} with hooks: 10 tokens equal, max |Δlogit| ${maxErr.toExponential(2)}`);
    decoder.destroy();
    weights.params.buffer.destroy();
  });
}

Deno.test("generator tokens do not depend on readEvery, repeat bit for bit, and the recompute fallback agrees", async () => {
  const gpu = await getGpu();
  const weights = scaledWeights(gpu, llama, 8);
  const adapter = lora(gpu, llama, 23);
  const model = { weights, adapter };
  const tokenizer = letterTokenizer(llama.vocabSize);
  const prompt = randomPrompt(llama.vocabSize, 11, 6);
  const want = await recomputeGreedy(gpu, model, prompt, NEW);
  const results = [];
  for (const readEvery of [1, 3, 8, 100]) {
    const gen = createGenerator(gpu, model, { maxLength: 32, readEvery });
    results.push(await gen.generate(prompt, { maxNewTokens: NEW, tokenizer }));
    gen.destroy();
  }
  for (const r of results) {
    assert.deepEqual(r.tokens, want.tokens);
    assert.equal(r.stoppedBy, "budget");
    assert.equal(r.promptTokens, 11);
    assert.equal(r.text, tokenizer.decode(want.tokens));
  }
  // Determinism: one generator, two runs, the logits of the last step bit for bit.
  const decoder = createDecoder(gpu, model, { maxLength: 32 });
  const runs: { tokens: number[]; logits: Float32Array }[] = [];
  for (let run = 0; run < 2; run++) {
    await decoder.start(prompt, NEW);
    await decoder.step(NEW - 1);
    runs.push({ tokens: await decoder.tokens(), logits: await decoder.logits() });
  }
  assert.deepEqual(runs[0].tokens, runs[1].tokens);
  assertBitwiseEqual("last-step logits of two runs", runs[0].logits, runs[1].logits);
  decoder.destroy();
  // A non-incremental adapter recomputes every token; it must give the same tokens.
  const slow = createGenerator(gpu, { weights, adapter: { ...adapter, incremental: false } }, {
    maxLength: 32,
  });
  assert.equal(slow.incremental, false);
  const fallback = await slow.generate(prompt, { maxNewTokens: NEW, tokenizer });
  assert.deepEqual(fallback.tokens, want.tokens);
  slow.destroy();
  weights.params.buffer.destroy();
  adapter.params?.buffer.destroy();
});

/** Token i decodes to two characters, so stop strings can start and end inside tokens. */
function letterTokenizer(V: number): Tokenizer {
  const piece = (id: number) =>
    "abcdefghijklmnopqrstuvwxyz"[id % 26] + "0123456789"[Math.floor(id / 26) % 10];
  return {
    name: "letters",
    hash: "letters",
    vocabSize: V,
    encode: () => {
      throw new Error("not used");
    },
    decode: (ids) => ids.map(piece).join(""),
    special: () => undefined,
  };
}

Deno.test("generate: stop strings cut exactly across token boundaries, budgets and eos", async () => {
  const gpu = await getGpu();
  const weights = scaledWeights(gpu, gpt2, 11);
  const tokenizer = letterTokenizer(gpt2.vocabSize);
  const gen = createGenerator(gpu, { weights, adapter: null }, { maxLength: 40, readEvery: 3 });
  const prompt = randomPrompt(gpt2.vocabSize, 7, 12);
  const full = await gen.generate(prompt, { maxNewTokens: 20, tokenizer });
  assert.equal(full.stoppedBy, "budget");
  assert.equal(full.tokens.length, 20);
  assert.ok(full.prefillMs > 0 && full.decodeMs > 0);
  const text = full.text;
  // A stop string from the middle of token 5 to the middle of token 8: the earliest occurrence decides.
  const stop = text.slice(11, 17);
  const first = text.indexOf(stop);
  const endToken = Math.floor((first + stop.length - 1) / 2);
  const cut = await gen.generate(prompt, { maxNewTokens: 20, tokenizer, stop: ["zz9zz9", stop] });
  assert.equal(cut.stoppedBy, "stop");
  assert.equal(cut.text, text.slice(0, first));
  assert.deepEqual(cut.tokens, full.tokens.slice(0, endToken + 1));
  // Budgets: fewer tokens, and zero.
  const short = await gen.generate(prompt, { maxNewTokens: 5, tokenizer });
  assert.deepEqual(short.tokens, full.tokens.slice(0, 5));
  assert.equal(short.stoppedBy, "budget");
  const none = await gen.generate(prompt, { maxNewTokens: 0, tokenizer });
  assert.deepEqual([none.tokens, none.text, none.stoppedBy], [[], "", "budget"]);
  // eos: the first occurrence of the token generated at index 6 ends generation before it.
  const eosId = full.tokens[6];
  const eosAt = full.tokens.indexOf(eosId);
  const eos = await gen.generate(prompt, { maxNewTokens: 20, tokenizer, eosId });
  assert.equal(eos.stoppedBy, "eos");
  assert.deepEqual(eos.tokens, full.tokens.slice(0, eosAt));
  assert.equal(eos.text, tokenizer.decode(full.tokens.slice(0, eosAt)));
  // Limits name what is wrong.
  await assert.rejects(gen.generate(prompt, { maxNewTokens: 34, tokenizer }), /exceeds maxLength 40/);
  await assert.rejects(gen.generate([1, 99], { maxNewTokens: 3, tokenizer }), /prompt\[1\] = 99/);
  await assert.rejects(gen.generate(prompt, { maxNewTokens: 3, tokenizer, stop: [""] }), /must not be empty/);
  assert.throws(
    () => createGenerator(gpu, { weights, adapter: null }, { maxLength: 41 }),
    /40 learned positions/,
  );
  gen.destroy();
  weights.params.buffer.destroy();
});

Deno.test("findStop: UTF-8 across byte tokens, earliest of several stops, eos before a stop", () => {
  const tok = byteTokenizer();
  const ids = tok.encode("Answer: héllo wörld\nQuestion");
  // "ö" is two bytes; the stop "wö" completes on the second of them.
  const s = findStop(ids, 0, { tokenizer: tok, stop: ["\n", "wö"] })!;
  assert.equal(s.stoppedBy, "stop");
  assert.equal(s.text, "Answer: héllo ");
  assert.equal(tok.decode(s.tokens), "Answer: héllo wö");
  const e = findStop([...tok.encode("ab"), 256, ...tok.encode("\n")], 0, {
    tokenizer: tok,
    stop: ["\n"],
    eosId: 256,
  })!;
  assert.deepEqual([e.stoppedBy, e.text, e.tokens.length], ["eos", "ab", 2]);
  assert.equal(findStop(ids, 0, { tokenizer: tok }), null);
});

Deno.test("decode RoPE tables: row p of dynamic NTK uses the base for p + 1 tokens; other scalings are the plain tables", () => {
  const yarn = { type: "yarn", factor: 4, originalMaxPositions: 16 } as const;
  assertBitwiseEqual("yarn", decodeRopeTables(yarn, 12, 40).cos, ropeTables(yarn, 12, 40).cos);
  const dynamic = { type: "dynamic", factor: 4, originalMaxPositions: 16 } as const;
  const t = decodeRopeTables(dynamic, 12, 40);
  for (const pos of [0, 15, 16, 39]) {
    const { invFreq } = ropeFrequencies(dynamic, 12, pos + 1);
    const want = Array.from(invFreq, (f) => Math.cos(pos * f));
    compare(`dynamic row ${pos}`, t.cos.subarray(pos * 6, pos * 6 + 6), want, { atol: 1e-7, rtol: 0 });
  }
});

Deno.test("scorer: log-probabilities are minus the loss kernel's per-token losses of a direct graph run", async () => {
  const gpu = await getGpu();
  for (const [config, withLora] of [[gpt2, false], [llama, true]] as const) {
    const weights = scaledWeights(gpu, config, 21);
    const adapter = withLora ? lora(gpu, config, 5) : null;
    const scorer = createScorer(gpu, { weights, adapter });
    assert.equal(scorer.maxContext, 41);
    const tokens = randomPrompt(config.vocabSize, 23, 31);
    for (const firstTarget of [1, 6, 23]) {
      const got = await scorer.score(tokens, firstTarget);
      const T = tokens.length - 1;
      const targets = Int32Array.from({ length: T }, (_, i) => (i + 1 >= firstTarget ? tokens[i + 1] : -100));
      const direct = await runGraph(
        gpu,
        weights,
        { B: 1, T, training: false, adapter: adapter ?? undefined },
        {
          tokens: Uint32Array.from(tokens.slice(0, T)),
          targets,
          weights: new Float32Array(T).fill(1),
        },
      );
      const want = Float64Array.from(direct.losses.slice(firstTarget - 1), (l) => -l);
      assert.equal(got.length, tokens.length - firstTarget);
      compare(`${config.family} firstTarget ${firstTarget}`, got, want, { atol: 0, rtol: 0 });
      // The same number from a full forward's logits: log softmax in float64.
      if (firstTarget === 6) {
        const row = await lastRowLogits(gpu, { weights, adapter }, tokens.slice(0, T));
        const max = Math.max(...row);
        const lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
        compare("last target vs float64 log-softmax", [got[got.length - 1]], [row[tokens[T]] - lse], {
          atol: 2e-5,
          rtol: 1e-5,
        });
      }
    }
    // A second length, then the first again (graph reuse), and repeatability.
    const again = await scorer.score(tokens.slice(0, 12), 2);
    assertBitwiseEqual(
      "repeat after another length",
      Float32Array.from(await scorer.score(tokens.slice(0, 12), 2)),
      Float32Array.from(again),
    );
    const report = await evaluatePerplexity(scorer, letterDocs(config.vocabSize), [{ text: "x" }], {
      kind: "sliding",
      window: 16,
      stride: 8,
    });
    assert.ok(Number.isFinite(report.tokenPerplexity) && report.tokenPerplexity > 1);
    await assert.rejects(scorer.score(tokens, 0), /firstTarget/);
    scorer.destroy();
    weights.params.buffer.destroy();
    adapter?.params?.buffer.destroy();
  }
  assert.throws(
    () => createScorer(gpu, { weights: scaledWeights(gpu, gpt2, 1), adapter: null }, { maxContext: 42 }),
    /40/,
  );
});

/** A tokenizer whose "x" encodes to 30 pseudo-random ids, for evaluatePerplexity. */
function letterDocs(V: number): Tokenizer {
  return { ...letterTokenizer(V), encode: () => randomPrompt(V, 30, 77) };
}
