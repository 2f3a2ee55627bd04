import assert from "node:assert/strict";
import type { Gpu } from "../../src/gpu/device.ts";
import { getGpu } from "../../src/gpu/device.ts";
import { readF32, upload } from "../../src/gpu/tensor.ts";
import { type Adapter, ALL_BASE, type BaseTrainable, NO_BASE } from "../../src/model/adapter.ts";
import { dims, type ModelConfig } from "../../src/model/config.ts";
import { parameterCount } from "../../src/model/params.ts";
import { createWeights, initialWeights, type ModelWeights, readWeights } from "../../src/model/weights.ts";
import { composeAdapters, type ComposedAdapter, loraPart } from "../../src/methods/compose.ts";
import { createLoraAdapter, type LoraConfig, loraConfigSchema } from "../../src/methods/lora.ts";
import {
  createLoradaAdapter,
  lorada,
  type LoradaConfig,
  loradaConfigSchema,
  loradaNames,
  loradaParameterCount,
  loradaPart,
  loradaScale,
} from "../../src/methods/lorada.ts";
import { Rng } from "../../src/random/philox.ts";
import { randomBatch, runGraph, type TestBatch, trainOnPattern } from "../reference/graph_run.ts";
import { assertBitwiseEqual, compare } from "../reference/compare.ts";
import { chainRefHooks, loradaRefHooks, loraRefHooks } from "../reference/lorada.ts";
import { referenceModel, type RefHooks } from "../reference/model.ts";
import { scaledWeights, tinyGpt2, tinyLlama } from "../reference/tiny_models.ts";

// Awkward sizes: widths that are multiples of no tile; D = 12; Llama with GQA (H = 4, Hkv = 2).
const gpt2 = tinyGpt2;
const llama = tinyLlama;

Deno.test("LoRaDA parameter count is L·2·H·r·C (+ LoRA's) and the tables hold exactly that", async () => {
  const gpu = await getGpu();
  // GPT-2: L = 2, H = 3, C = 36; r = 3.
  const alone = loradaConfigSchema.parse({ r: 3 });
  assert.equal(loradaParameterCount(gpt2, alone), 2 * 2 * 3 * 3 * 36);
  // Llama: L = 2, H = 4, C = 48; r = 5; LoRA r = 2 on q (48→48), v (48→24), o (48→48).
  const withLora = loradaConfigSchema.parse({ r: 5, withLora: { r: 2, targets: ["q", "v", "o"] } });
  const loraCount = 2 * 2 * ((48 + 48) + (48 + 24) + (48 + 48));
  assert.equal(loradaParameterCount(llama, withLora), 2 * 2 * 4 * 5 * 48 + loraCount);
  for (const [config, cfg] of [[gpt2, alone], [llama, withLora]] as const) {
    const weights = createWeights(gpu, config, initialWeights(config, 1));
    const prepared = await lorada.prepare(
      { gpu, base: weights, baseValues: new Float32Array(0), trainLength: 8, maxLength: 8, seed: 3 },
      cfg,
    );
    assert.equal(prepared.trainableParameters, loradaParameterCount(config, cfg));
    assert.equal(parameterCount(prepared.adapter!.table), prepared.trainableParameters);
    // The map's prefix sums ride in the decoder's state (generate_test checks decoding against recompute).
    assert.notEqual(prepared.adapter!.incremental, false, "LoRaDA decodes with the KV cache");
    assert.equal(prepared.trainable, NO_BASE);
    prepared.destroy();
    weights.params.buffer.destroy();
  }
  // U ~ U(−1/√C, 1/√C), W = 0.
  const part = loradaPart(gpu, llama, loradaConfigSchema.parse({ r: 2 }), 9);
  const u = part.table.byName.get(loradaNames(1).u)!, w = part.table.byName.get(loradaNames(1).w)!;
  const uv = part.values.subarray(u.offset, u.offset + u.numel);
  assert.deepEqual(u.shape, [4 * 2, 48]);
  assert.ok(uv.every((x) => Math.abs(x) <= 1 / Math.sqrt(48)) && uv.some((x) => x !== 0));
  assert.ok(part.values.subarray(w.offset, w.offset + w.numel).every((x) => x === 0));
  // Two parts that both replace the head merge cannot compose.
  const twice = composeAdapters(gpu, "twice", [part, { ...part, name: "again" }]);
  assert.throws(() => twice.attach(fakeContext()), /lorada and again both define mixOutput/);
  twice.destroy();
  // Optimizer groups reach the owning part under its own (unprefixed) names.
  const grouped = {
    ...part,
    name: "map",
    group: (e: { name: string }) => ({ lrScale: e.name.endsWith(".W") ? 3 : 1 }),
  };
  const lp = loraPart(gpu, llama, loraConfigSchema.parse({ r: 2 }), 4);
  const both = composeAdapters(gpu, "grouped", [lp, grouped]);
  assert.equal(both.group!(both.table.byName.get("map.h.1.attn.lorada.W")!).lrScale, 3);
  assert.equal(both.group!(both.table.byName.get("map.h.0.attn.lorada.U")!).lrScale, 1);
  assert.deepEqual(both.group!(both.table.byName.get("lora.h.0.q.lora.A")!), {});
  assert.equal(both.parts[1].offset % 64, 0);
  assert.deepEqual(
    both.values.subarray(both.parts[1].offset, both.parts[1].offset + part.table.size),
    part.values,
  );
  both.destroy();
});

// An attach context good enough for attach() to run (no graph behind it).
function fakeContext() {
  const d = dims(llama);
  return {
    B: 1,
    T: 4,
    dims: d,
    family: "llama" as const,
    training: false,
    weights: null as never,
    grads: null,
    positions: null as never,
    lossWeights: null as never,
  };
}

/** The table offsets of U_l, W_l of the LoRaDA part in a composed adapter. */
function loradaOffsets(adapter: ComposedAdapter) {
  const placed = adapter.parts.find((p) => p.part.name === "lorada")!;
  return (l: number) => {
    const n = loradaNames(l);
    return {
      u: placed.offset + placed.part.table.byName.get(n.u)!.offset,
      w: placed.offset + placed.part.table.byName.get(n.w)!.offset,
    };
  };
}

/** The reference hooks of a composed adapter's parts (LoRA and/or LoRaDA) on host values `av`. */
function refHooksOf(
  adapter: ComposedAdapter,
  config: ModelConfig,
  cfg: LoradaConfig,
  av: Float32Array,
  grads: Float64Array,
  B: number,
  T: number,
): RefHooks {
  const { C, H, Hkv, D } = dims(config);
  const parts: RefHooks[] = [];
  for (const placed of adapter.parts) {
    if (placed.part.name === "lora") {
      const lp = placed.part as ReturnType<typeof loraPart>;
      const matrices = lp.matrices.map((m) => ({
        layer: m.layer,
        site: m.site,
        offset: m.offset,
        out: m.out,
        in: m.in,
        a: placed.offset + lp.table.byName.get(m.a)!.offset,
        b: placed.offset + lp.table.byName.get(m.b)!.offset,
      }));
      parts.push(loraRefHooks(av, grads, matrices, B * T, cfg.withLora!.r, lp.scale));
    } else {
      const sizes = { B, T, C, H, Hkv, D, R: cfg.r };
      parts.push(loradaRefHooks(av, grads, loradaOffsets(adapter), sizes, loradaScale(cfg)));
    }
  }
  return chainRefHooks(parts);
}

/** Values of the adapter with W (and LoRA's B) random, so every path carries signal. */
function randomised(adapter: ComposedAdapter, seed: number, which: { w: boolean; b: boolean }): Float32Array {
  const av = adapter.values.slice();
  const rng = new Rng(seed, 0);
  for (const e of adapter.table.entries) {
    const isW = /lorada\.W$/.test(e.name), isB = /lora\.B$/.test(e.name);
    if ((isW && which.w) || (isB && which.b)) {
      for (let i = 0; i < e.numel; i++) av[e.offset + i] = (rng.uniform() - 0.5) * (isW ? 0.01 : 0.6);
    }
  }
  return av;
}

/** Each adapter tensor's gradient within 1e-4 of its largest reference value; returns the worst ratio. */
function compareGrads(
  label: string,
  adapter: ComposedAdapter,
  got: Float32Array,
  want: Float64Array,
): number {
  let worst = 0;
  for (const e of adapter.table.entries) {
    const w = want.subarray(e.offset, e.offset + e.numel);
    const g = got.subarray(e.offset, e.offset + e.numel);
    const max = Math.max(...Array.from(w, Math.abs));
    assert.ok(max > 0, `${label} ${e.name}: the reference gradient is all zero`);
    compare(`${label} ${e.name}`, g, w, { atol: 1e-4 * max, rtol: 1e-4 });
    for (let i = 0; i < e.numel; i++) worst = Math.max(worst, Math.abs(g[i] - w[i]) / max);
  }
  return worst;
}

interface GradCase {
  label: string;
  config: ModelConfig;
  T: number;
  cfg: Record<string, unknown>;
  trainable: BaseTrainable;
}

const GRAD_CASES: GradCase[] = [
  // chunkSize 4 with T = 13: three full chunks and a partial one.
  { label: "GPT-2", config: gpt2, T: 13, cfg: { r: 3, chunkSize: 4 }, trainable: NO_BASE },
  // GQA, the default chunk of 16 with T = 21, base gradients too (checks dv and dx into the base).
  { label: "Llama GQA", config: llama, T: 21, cfg: { r: 3 }, trainable: ALL_BASE },
  {
    label: "Llama GQA + LoRA",
    config: llama,
    T: 21,
    cfg: { r: 2, chunkSize: 5, withLora: { r: 3, alpha: 5, targets: ["q", "k", "v", "o", "up"] } },
    trainable: NO_BASE,
  },
];

for (const c of GRAD_CASES) {
  Deno.test(`${c.label}: LoRaDA at init gives the base logits bitwise; gradients match the float64 model`, async () => {
    const gpu = await getGpu();
    const B = 2, T = c.T, N = B * T;
    const values = scaledWeights(c.config, 5);
    const weights = createWeights(gpu, c.config, values);
    const cfg = loradaConfigSchema.parse(c.cfg);
    const adapter = createLoradaAdapter(gpu, c.config, cfg, 11);
    const batch = randomBatch(c.config.vocabSize, N, 3);
    const base = await runGraph(gpu, weights, { B, T, training: false }, batch, { readLogits: true });
    const init = await runGraph(gpu, weights, { B, T, training: false, adapter }, batch, {
      readLogits: true,
    });
    assertBitwiseEqual(`${c.label} logits at init`, init.logits!, base.logits!);

    const av = randomised(adapter, 21, { w: true, b: true });
    upload(gpu, adapter.params, av);
    const gradScale = 1 / 13;
    const run = await runGraph(
      gpu,
      weights,
      { B, T, training: true, adapter, trainable: c.trainable },
      batch,
      {
        gradScale,
      },
    );
    const want = new Float64Array(adapter.table.size);
    const hooks = refHooksOf(adapter, c.config, cfg, av, want, B, T);
    const ref = referenceModel(c.config, values, batch, B, T, gradScale, hooks);
    const losses = compare(`${c.label} losses`, run.losses, ref.losses, { atol: 2e-5, rtol: 1e-5 });
    // The map must matter: the losses differ from the base model's.
    const plain = referenceModel(c.config, values, batch, B, T, gradScale);
    const moved = ref.losses.reduce((m, x, i) => Math.max(m, Math.abs(x - plain.losses[i])), 0);
    assert.ok(moved > 1e-2, `${c.label}: the adapter changes the losses by only ${moved}`);
    const worst = compareGrads(c.label, adapter, run.adapterGrads!, want);
    // Recomputing each block in the backward re-runs the qkv hook and the map: the same bits.
    const again = await runGraph(
      gpu,
      weights,
      { B, T, training: true, recompute: true, adapter, trainable: c.trainable },
      batch,
      { gradScale },
    );
    assertBitwiseEqual(`${c.label} adapter gradients with recompute`, again.adapterGrads!, run.adapterGrads!);
    let baseWorst = 0;
    if (c.trainable === ALL_BASE) {
      for (const e of weights.table.entries) {
        const w = ref.grads.subarray(e.offset, e.offset + e.numel);
        const max = Math.max(...Array.from(w, Math.abs));
        if (max === 0) continue;
        const g = run.grads!.subarray(e.offset, e.offset + e.numel);
        compare(`${c.label} base ${e.name}`, g, w, { atol: 1e-4 * max, rtol: 1e-4 });
        for (let i = 0; i < e.numel; i++) baseWorst = Math.max(baseWorst, Math.abs(g[i] - w[i]) / max);
      }
    }
    console.log(
      `${c.label}: loss max |err| ${losses.maxAbs.toExponential(2)}, loss change from the map ${
        moved.toFixed(3)
      }, ` +
        `adapter grad error / tensor max ${worst.toExponential(2)}` +
        (c.trainable === ALL_BASE ? `, base grads ${baseWorst.toExponential(2)}` : ""),
    );
    adapter.destroy();
    weights.params.buffer.destroy();
  });
}

/** One training run's losses and adapter gradients for `adapter` with host values `av`. */
async function gradsOf(
  gpu: Gpu,
  weights: ModelWeights,
  adapter: Adapter,
  av: Float32Array,
  batch: TestBatch,
  B: number,
  T: number,
) {
  upload(gpu, adapter.params!, av);
  return await runGraph(gpu, weights, { B, T, training: true, adapter, trainable: NO_BASE }, batch, {
    gradScale: 0.1,
  });
}

Deno.test("LoRaDA on LoRA: each part's gradients equal its own alone where the other is inert", async () => {
  const gpu = await getGpu();
  const B = 2, T = 21, N = B * T;
  const values = scaledWeights(llama, 6);
  const weights = createWeights(gpu, llama, values);
  const loraCfg: LoraConfig = loraConfigSchema.parse({ r: 3, alpha: 5, targets: ["q", "v", "o", "down"] });
  const cfg = loradaConfigSchema.parse({ r: 2, withLora: loraCfg });
  const both = createLoradaAdapter(gpu, llama, cfg, 11);
  const batch = randomBatch(llama.vocabSize, N, 4);
  const [loraAt, mapAt] = [0, 1].map((k) => both.parts[k]);
  assert.equal(loraAt.part.name, "lora");
  assert.equal(mapAt.part.name, "lorada");
  const slice = (x: Float32Array, at: { offset: number; part: { table: { size: number } } }) =>
    x.slice(at.offset, at.offset + at.part.table.size);

  // (1) W = 0 (the map is zero and passes no gradient to LoRA's paths), LoRA's B random: LoRA's gradients
  // and the losses equal LoRA alone's, bit for bit (LoRA alone: the same A, from the same seed).
  const loraAlone = createLoraAdapter(gpu, llama, loraCfg, 12);
  const withB = randomised(both, 31, { w: false, b: true });
  const composed1 = await gradsOf(gpu, weights, both, withB, batch, B, T);
  const alone1 = await gradsOf(gpu, weights, loraAlone, slice(withB, loraAt), batch, B, T);
  assertBitwiseEqual("losses, LoRA + (W = 0) vs LoRA alone", composed1.losses, alone1.losses);
  assertBitwiseEqual(
    "LoRA gradients, composed vs alone",
    slice(composed1.adapterGrads!, loraAt),
    alone1.adapterGrads!,
  );

  // (2) LoRA's B = 0 (LoRA adds nothing and passes nothing back), W random: the map's gradients equal
  // LoRaDA alone's, bit for bit.
  const mapAlone = createLoradaAdapter(gpu, llama, { ...cfg, withLora: null }, 11);
  const withW = randomised(both, 32, { w: true, b: false });
  const composed2 = await gradsOf(gpu, weights, both, withW, batch, B, T);
  const alone2 = await gradsOf(gpu, weights, mapAlone, slice(withW, mapAt), batch, B, T);
  assertBitwiseEqual("losses, (B = 0) + LoRaDA vs LoRaDA alone", composed2.losses, alone2.losses);
  assertBitwiseEqual(
    "LoRaDA gradients, composed vs alone",
    slice(composed2.adapterGrads!, mapAt),
    alone2.adapterGrads!,
  );
  // And LoRA's B still gets its gradient from the composed run (A's is 0 while B = 0).
  assert.ok(slice(composed2.adapterGrads!, loraAt).some((x) => x !== 0));
  for (const a of [both, mapAlone]) a.destroy();
  loraAlone.params!.buffer.destroy();
  weights.params.buffer.destroy();
});

Deno.test("LoRaDA training lowers the loss and leaves the base weights untouched", async () => {
  const gpu = await getGpu();
  const T = 24;
  const values = initialWeights(llama, 8);
  const weights = createWeights(gpu, llama, values);
  const prepared = await lorada.prepare(
    { gpu, base: weights, baseValues: values, trainLength: T, maxLength: T, seed: 2 },
    lorada.config.parse({ r: 4 }),
  );
  assert.equal(prepared.weights, weights);
  const steps = 40;
  const losses = await trainOnPattern(gpu, prepared, T, { steps });
  console.log(`LoRaDA losses: ${losses[0].toFixed(4)} → ${losses[steps - 1].toFixed(4)}`);
  assert.ok(
    losses[steps - 1] < losses[0] - 0.3,
    `loss ${losses[0]} → ${losses[steps - 1]} did not drop by 0.3`,
  );
  assertBitwiseEqual("base weights after LoRaDA training", await readWeights(gpu, weights), values);
  const after = await readF32(gpu, prepared.adapter!.params!);
  const start = (prepared.adapter as ComposedAdapter).values;
  assert.ok(after.some((x, i) => x !== start[i]), "the adapter did not move");
  prepared.destroy();
  weights.params.buffer.destroy();
});
