import assert from "node:assert/strict";
import { getGpu } from "../../src/gpu/device.ts";
import { Recorder } from "../../src/gpu/recorder.ts";
import { createTensor, poison, readF32, readTensors, tensorFrom, upload } from "../../src/gpu/tensor.ts";
import { NO_BASE } from "../../src/model/adapter.ts";
import { dims, parseModelConfig } from "../../src/model/config.ts";
import { parameterCount } from "../../src/model/params.ts";
import { createWeights, initialWeights, readWeights } from "../../src/model/weights.ts";
import {
  createHybridAdapter,
  filterNames,
  hybrid,
  type HybridConfig,
  hybridConfigSchema,
  hybridPlan,
  hybridTrainMask,
} from "../../src/methods/hybrid.ts";
import { type BudgetCosts, type BudgetFractions, solveBudget } from "../../src/methods/hybrid_budget.ts";
import type { PrepareContext } from "../../src/methods/method.ts";
import { type CalibrationSequence, mergeNeuronDeltas } from "../../src/methods/sparse_ffn.ts";
import { sinkBackward, temperatureBackward, temperatureForward } from "../../src/ops/attention_filters.ts";
import { Rng } from "../../src/random/philox.ts";
import { patternBatch, randomBatch, runGraph, trainOnPattern } from "../reference/graph_run.ts";
import { assertBitwiseEqual, compare } from "../reference/compare.ts";
import { referenceModel } from "../reference/model.ts";
import { MODE_GROUPS, MODE_GROUPS_SHIFTED } from "../reference/attention.ts";
import * as ref from "../reference/sparse_ffn.ts";
import { scaledWeights, tinyLlama } from "../reference/tiny_models.ts";

// Awkward sizes: widths that are multiples of no tile; D = 12.
const gpt2 = parseModelConfig({
  family: "gpt2",
  vocabSize: 37,
  maxPositions: 32,
  nLayer: 2,
  nHead: 3,
  nEmbd: 36,
});
const llama = tinyLlama;

function calibrationSet(V: number, lengths: number[], seed: number): CalibrationSequence[] {
  return lengths.map((T, s) => {
    const b = randomBatch(V, T, seed + s);
    return { tokens: b.tokens, targets: b.targets };
  });
}

const costs: BudgetCosts = {
  loraPerRank: 1000,
  perNeuron: 100,
  sparseLayers: 4,
  maxNeurons: 50,
  attention: 48,
};

Deno.test("budget solver: exact plans that never exceed P and respect the fractions to rounding", () => {
  const plan = solveBudget(10_000, { lora: 0.6, sparse: 0.3, attention: 0.1 }, costs);
  // Shares 6000, 3000, 1000: r = 6, k = ⌊3000 / (100·4)⌋ = 7, attention 48.
  assert.deepEqual(plan.shares, { lora: 6000, sparse: 3000, attention: 1000 });
  assert.equal(plan.r, 6);
  assert.equal(plan.k, 7);
  assert.deepEqual(plan.spent, { lora: 6000, sparse: 2800, attention: 48, total: 8848 });
  assert.equal(plan.unspent, 1152);
  // f·P a hair below an integer in doubles (0.29·100 = 28.999999999999996) still buys 29.
  const hair = solveBudget(100, { lora: 0.29, sparse: 0, attention: 0.71 }, {
    ...costs,
    loraPerRank: 29,
    attention: 5,
  });
  assert.equal(hair.r, 1);
  assert.equal(hair.spent.total, 34);
  // Components with fraction 0 get nothing, the attention filters included.
  const loraOnly = solveBudget(8000, { lora: 1, sparse: 0, attention: 0 }, costs);
  assert.deepEqual([loraOnly.r, loraOnly.k, loraOnly.attention, loraOnly.unspent], [8, 0, false, 0]);

  // Random budgets, fractions and costs: whenever a plan exists it fits P, each component stays inside its
  // share and leaves less than one of its units unspent.
  const rng = new Rng(99, 1);
  let plans = 0;
  for (let trial = 0; trial < 2000; trial++) {
    const c: BudgetCosts = {
      loraPerRank: 1 + rng.int(5000),
      perNeuron: 1 + rng.int(500),
      sparseLayers: 1 + rng.int(40),
      maxNeurons: 1 + rng.int(20000),
      attention: rng.int(3000),
    };
    const raw = [rng.uniform(), rng.uniform(), rng.uniform()].map((x) => (x < 0.2 ? 0 : x));
    if (raw[0] + raw[1] + raw[2] === 0) raw[0] = 1;
    const sum = raw[0] + raw[1] + raw[2];
    const f: BudgetFractions = { lora: raw[0] / sum, sparse: raw[1] / sum, attention: raw[2] / sum };
    const P = 1 + rng.int(50_000_000);
    let p;
    try {
      p = solveBudget(P, f, c);
    } catch (err) {
      assert.match((err as Error).message, /buys no|cannot pay|neurons per layer, but/);
      continue;
    }
    plans++;
    assert.ok(p.spent.total <= P, `trial ${trial}: spends ${p.spent.total} > P = ${P}`);
    assert.equal(p.spent.total + p.unspent, P);
    assert.ok(p.shares.lora + p.shares.sparse + p.shares.attention <= P);
    assert.ok(p.spent.lora <= p.shares.lora && p.shares.lora - p.spent.lora < c.loraPerRank);
    const round = c.perNeuron * c.sparseLayers;
    assert.ok(p.spent.sparse <= p.shares.sparse);
    if (f.sparse > 0 && p.k < c.maxNeurons) assert.ok(p.shares.sparse - p.spent.sparse < round);
    assert.ok(p.spent.attention <= p.shares.attention);
    assert.ok(Math.abs(p.shares.lora - f.lora * P) <= 1 && Math.abs(p.shares.sparse - f.sparse * P) <= 1);
    assert.equal(p.spent.lora, p.r * c.loraPerRank);
    assert.equal(p.spent.sparse, p.k * round);
    assert.equal(p.spent.attention, f.attention > 0 ? c.attention : 0);
  }
  console.log(`random solver trials: ${plans} of 2000 had a plan`);
});

Deno.test("budget solver: errors name the impossible budget or fraction", () => {
  const f = { lora: 0.6, sparse: 0.3, attention: 0.1 };
  assert.throws(() => solveBudget(0, f, costs), /P = 0 must be a positive integer/);
  assert.throws(() => solveBudget(10.5, f, costs), /P = 10.5/);
  assert.throws(
    () => solveBudget(10_000, { ...f, sparse: -0.1, lora: 1 }, costs),
    /fractions\.sparse = -0\.1/,
  );
  assert.throws(() => solveBudget(10_000, { ...f, lora: 0.5 }, costs), /sum to 0\.9, expected 1/);
  assert.throws(() => solveBudget(1000, f, costs), /fractions\.lora·P = 600 buys no LoRA rank/);
  assert.throws(
    () => solveBudget(4000, { lora: 0.5, sparse: 0.05, attention: 0.45 }, costs),
    /buys no neuron/,
  );
  assert.throws(
    () => solveBudget(4000, { lora: 0.5, sparse: 0.49, attention: 0.01 }, costs),
    /cannot pay.*48/,
  );
  assert.throws(
    () => solveBudget(100_000, { lora: 0.5, sparse: 0.45, attention: 0.05 }, costs),
    /112 neurons per layer, but the FFN has 50/,
  );
  assert.throws(() => hybridConfigSchema.parse({ fractions: { lora: -1, sparse: 1, attention: 1 } }), /lora/);
  assert.throws(() => hybridConfigSchema.parse({ neuronScore: "random" }), /neuronScore/);
});

Deno.test("parameter count: r·Σ(d_in + d_out) + n·Σk + 2·H·L exactly, in the formula, the table and prepare", async () => {
  const gpu = await getGpu();
  // GPT-2: C = 36, H·D = 36; q, k, v, o cost (36 + 36) each per rank in each of 2 layers: Σ = 576.
  // A neuron: fc row 36 + fc bias 1 + fcProj column 36 = 73. Filters: 2·3 heads·2 layers = 12.
  const g = hybridConfigSchema.parse({ budget: 5000, fractions: { lora: 0.5, sparse: 0.4, attention: 0.1 } });
  // r = ⌊2500/576⌋ = 4; k = ⌊2000/(73·2)⌋ = 13.
  assert.equal(hybrid.parameterCount(gpt2, g), 4 * 576 + 13 * 73 * 2 + 12);
  // Llama: C = 48, q and o 48 + 48, k and v 48 + 24: Σ = 2·336 = 672. Neuron 3·48 = 144. Filters 2·4·2 = 16.
  const l = hybridConfigSchema.parse({
    budget: 9000,
    fractions: { lora: 0.45, sparse: 0.45, attention: 0.1 },
  });
  // r = ⌊4050/672⌋ = 6; k = ⌊4050/(144·2)⌋ = 14.
  assert.equal(hybrid.parameterCount(llama, l), 6 * 672 + 14 * 144 * 2 + 16);
  // Without a budget: LoRA rank 8 on the same targets, 8·672.
  assert.equal(hybridPlan(llama, hybridConfigSchema.parse({})).budget, 8 * 672);
  assert.equal(
    hybridPlan(llama, hybridConfigSchema.parse({ fractions: { lora: 1, sparse: 0, attention: 0 } })).r,
    8,
  );
  // Fewer neuron layers and other LoRA targets change the units.
  const some = hybridConfigSchema.parse({
    budget: 3000,
    targets: ["o", "up"],
    neuronLayers: [1],
    fractions: { lora: 0.5, sparse: 0.5, attention: 0 },
  });
  // Σ = 2·((48 + 48) + (48 + 44)) = 376, r = ⌊1500/376⌋ = 3; k = ⌊1500/144⌋ = 10 in one layer.
  assert.equal(hybrid.parameterCount(llama, some), 3 * 376 + 10 * 144);
  assert.throws(
    () => hybrid.parameterCount(llama, { ...some, neuronLayers: [2] }),
    /neuronLayers names layer 2/,
  );

  for (const [config, cfg] of [[gpt2, g], [llama, l], [llama, some]] as const) {
    const values = initialWeights(config, 2);
    const weights = createWeights(gpu, config, values);
    const prepared = await hybrid.prepare(
      {
        gpu,
        base: weights,
        baseValues: values,
        trainLength: 16,
        maxLength: 16,
        seed: 1,
        calibration: calibrationSet(config.vocabSize, [16, 16], 5),
      },
      cfg,
    );
    const want = hybrid.parameterCount(config, cfg);
    assert.equal(prepared.trainableParameters, want);
    assert.equal(parameterCount(prepared.adapter!.table), want);
    const spent = prepared.details.spent as { total: number };
    assert.equal(spent.total, want);
    console.log(`${config.family} ${JSON.stringify(prepared.details.spent)} of ${prepared.details.budget}`);
    prepared.destroy();
    weights.params.buffer.destroy();
  }
});

Deno.test("attention filter kernels: exp(τ)/√D and the chain rule match float64; τ = 0 gives 1/√D bitwise", async () => {
  const gpu = await getGpu();
  for (const [H, D] of [[3, 12], [67, 16]]) {
    const rng = new Rng(H, 2);
    const tauData = Float32Array.from({ length: H }, (_, h) => (h === 0 ? 0 : (rng.uniform() - 0.5) * 3));
    const dScaleData = Float32Array.from({ length: H }, () => rng.uniform() - 0.5);
    const dSinkData = Float32Array.from({ length: H }, () => rng.uniform() - 0.5);
    const start = Float32Array.from({ length: H }, () => rng.uniform() - 0.5);
    const tau = tensorFrom(gpu, [H], tauData, { label: "tau" });
    const dScale = tensorFrom(gpu, [H], dScaleData, { label: "dScale" });
    const dSink = tensorFrom(gpu, [H], dSinkData, { label: "dSink" });
    const scale = createTensor(gpu, [H], { label: "scale" });
    const dTau = tensorFrom(gpu, [H], start, { label: "dTau" });
    const dSigma = tensorFrom(gpu, [H], start, { label: "dSigma" });
    poison(gpu, scale);
    const rec = new Recorder(gpu, "filters");
    await temperatureForward(rec, scale, tau, D);
    await temperatureBackward(rec, dTau, dScale, scale);
    await sinkBackward(rec, dSigma, dSink);
    await rec.submit();
    const [s, dt, ds] = await readTensors(gpu, [scale, dTau, dSigma]) as Float32Array[];
    // exp is accurate to a few ulp in WGSL (3 + 2|x| ulp); the product adds one rounding.
    compare(`scale H=${H}`, s, ref.temperatureScale(tauData, D), { atol: 0, rtol: 8 * 2 ** -23 });
    assert.equal(s[0], Math.fround(1 / Math.sqrt(D)), "τ = 0 must give the graph's default scale exactly");
    const grad = ref.temperatureGrad(dScaleData, tauData, D).map((g, h) => g + start[h]);
    compare(`dτ H=${H}`, dt, grad, { atol: 1e-7, rtol: 1e-5 });
    assertBitwiseEqual(`dσ H=${H}`, ds, Float32Array.from(dSinkData, (g, h) => g + start[h]));
    for (const t of [tau, dScale, dSink, scale, dTau, dSigma]) t.buffer.destroy();
  }
});

for (const [family, config] of [["GPT-2", gpt2], ["Llama", llama]] as const) {
  Deno.test(`${family}: hybrid at init gives the base logits; all its gradients match the float64 model`, async () => {
    const gpu = await getGpu();
    const { L, H, D, F, C } = dims(config);
    const B = 2, T = 8, N = B * T;
    const values = scaledWeights(config, 5);
    const weights = createWeights(gpu, config, values);
    const cfg: HybridConfig = hybridConfigSchema.parse({
      budget: 6000,
      fractions: { lora: 0.5, sparse: 0.4, attention: 0.1 },
      alpha: 7,
      targets: config.family === "gpt2" ? ["q", "v", "o", "fc"] : ["q", "k", "o", "down"],
      s2MinLength: 8,
    });
    const plan = hybridPlan(config, cfg);
    assert.ok(plan.r > 0 && plan.k > 0 && plan.attention, JSON.stringify(plan));
    const rng = new Rng(8, 4);
    const pick = (seed: number) => {
      const all = Array.from({ length: F }, (_, j) => j);
      const r = new Rng(seed, 9);
      for (let i = F - 1; i > 0; i--) {
        const j = r.int(i + 1);
        [all[i], all[j]] = [all[j], all[i]];
      }
      return Uint32Array.from(all.slice(0, plan.k)).sort();
    };
    const selection = new Map(Array.from({ length: L }, (_, l) => [l, pick(l + 1)] as [number, Uint32Array]));
    const adapter = createHybridAdapter(gpu, config, cfg, plan, selection, 11);
    assert.throws(
      () => createHybridAdapter(gpu, config, cfg, plan, new Map([[0, selection.get(0)!]]), 11),
      /must hold \d+ neurons in each of layers \[0, 1\]/,
    );
    const batch = randomBatch(config.vocabSize, N, 3);

    // (1) At init: LoRA B = 0, neuron deltas 0, τ = 0, σ = −30. Causal and S²-Attn masks.
    for (const mask of [undefined, hybridTrainMask(cfg, T)]) {
      const base = await runGraph(gpu, weights, { B, T, training: false, mask }, batch, { readLogits: true });
      const init = await runGraph(gpu, weights, { B, T, training: false, mask, adapter }, batch, {
        readLogits: true,
      });
      let diff = 0;
      for (let i = 0; i < base.logits!.length; i++) {
        diff = Math.max(diff, Math.abs(init.logits![i] - base.logits![i]));
      }
      console.log(`${family} ${mask ? "S²-Attn" : "causal"}: max |logit − base logit| at init = ${diff}`);
      // A sink at −30 adds exp(−30 − max score) ≈ 1e-13 to a softmax sum that starts at 1: lost in rounding.
      assertBitwiseEqual(
        `${family} ${mask ? "S²-Attn" : "causal"} logits at init`,
        init.logits!,
        base.logits!,
      );
    }

    // (2) Random values everywhere, then the float64 model on W0 + s·B·A + scatter(Δ) with the same
    // per-head scales and sinks.
    const v = adapter.values.slice();
    for (const m of adapter.matrices) {
      const e = adapter.table.byName.get(m.b)!;
      for (let i = 0; i < e.numel; i++) v[e.offset + i] = (rng.uniform() - 0.5) * 0.6;
    }
    for (const n of adapter.neurons) {
      for (const name of [...n.rows.map((r) => r.name), n.cols.name, ...(n.bias ? [n.bias] : [])]) {
        const e = adapter.table.byName.get(name)!;
        for (let i = 0; i < e.numel; i++) v[e.offset + i] = (rng.uniform() - 0.5) * 0.5;
      }
    }
    const tau: Float32Array[] = [], sink: Float32Array[] = [];
    for (let l = 0; l < L; l++) {
      const names = filterNames(l);
      const t = adapter.table.byName.get(names.tau)!, s = adapter.table.byName.get(names.sink)!;
      for (let h = 0; h < H; h++) {
        v[t.offset + h] = (rng.uniform() - 0.5) * 0.6;
        v[s.offset + h] = -1 + rng.uniform() * 3;
      }
      tau.push(v.slice(t.offset, t.offset + H));
      sink.push(v.slice(s.offset, s.offset + H));
    }
    upload(gpu, adapter.params!, v);
    const gradScale = 1 / 13;
    for (const masked of [false, true]) {
      const mask = masked ? hybridTrainMask(cfg, T) : undefined;
      const run = await runGraph(
        gpu,
        weights,
        { B, T, training: true, adapter, trainable: NO_BASE, mask },
        batch,
        {
          gradScale,
        },
      );
      // The merge in float64: LoRA products and neuron deltas.
      const merged64 = Float64Array.from(values);
      for (const m of adapter.matrices) {
        const w = weights.table.byName.get(`h.${m.layer}.${m.site}.w`)!;
        const a = adapter.table.byName.get(m.a)!, b = adapter.table.byName.get(m.b)!;
        for (let i = 0; i < m.out; i++) {
          for (let j = 0; j < m.in; j++) {
            let sum = 0;
            for (let k = 0; k < plan.r; k++) sum += v[b.offset + i * plan.r + k] * v[a.offset + k * m.in + j];
            merged64[w.offset + (m.offset + i) * w.shape[1] + j] += adapter.scale * sum;
          }
        }
      }
      const merged = mergeNeuronDeltas(weights.table, merged64, adapter.table, v, adapter.neurons);
      const dScales: Float64Array[] = [], dSinks: Float64Array[] = [];
      const refMask = masked
        ? {
          modes: Array.from(
            { length: H },
            (_, h) => (h < Math.floor(H / 2) ? MODE_GROUPS : MODE_GROUPS_SHIFTED),
          ),
          G: T / 4,
        }
        : undefined;
      const refRun = referenceModel(config, merged, batch, B, T, gradScale, {
        mask: refMask,
        attention: (l) => ({ scale: ref.temperatureScale(tau[l], D), sink: sink[l] }),
        attentionBackward: (l, dScale, dSink) => {
          dScales[l] = dScale.slice();
          dSinks[l] = dSink.slice();
        },
      });
      const what = `${family}${masked ? " S²-Attn" : ""}`;
      // Recomputing activations in the backward re-runs every hook's forward: the same bits.
      const again = await runGraph(
        gpu,
        weights,
        { B, T, training: true, recompute: true, adapter, trainable: NO_BASE, mask },
        batch,
        { gradScale },
      );
      assertBitwiseEqual(`${what} gradients with recompute`, again.adapterGrads!, run.adapterGrads!);
      compare(`${what} losses (hybrid vs float64)`, run.losses, refRun.losses, { atol: 2e-5, rtol: 1e-5 });
      // Expected gradients of every adapter tensor from the merged model's.
      const want = new Float64Array(adapter.table.size);
      const dW = (name: string) => weights.table.byName.get(name)!;
      for (const m of adapter.matrices) {
        const w = dW(`h.${m.layer}.${m.site}.w`);
        const a = adapter.table.byName.get(m.a)!, b = adapter.table.byName.get(m.b)!;
        const g = (i: number, j: number) => refRun.grads[w.offset + (m.offset + i) * w.shape[1] + j];
        for (let i = 0; i < m.out; i++) {
          for (let k = 0; k < plan.r; k++) {
            let sum = 0;
            for (let j = 0; j < m.in; j++) sum += g(i, j) * v[a.offset + k * m.in + j];
            want[b.offset + i * plan.r + k] = adapter.scale * sum;
          }
        }
        for (let k = 0; k < plan.r; k++) {
          for (let j = 0; j < m.in; j++) {
            let sum = 0;
            for (let i = 0; i < m.out; i++) sum += v[b.offset + i * plan.r + k] * g(i, j);
            want[a.offset + k * m.in + j] = adapter.scale * sum;
          }
        }
      }
      for (const n of adapter.neurons) {
        const k = n.index.length;
        for (const r of n.rows) {
          const w = dW(`h.${n.layer}.${r.site}.w`), e = adapter.table.byName.get(r.name)!;
          for (let i = 0; i < k; i++) {
            for (let c = 0; c < C; c++) {
              want[e.offset + i * C + c] = refRun.grads[w.offset + n.index[i] * C + c];
            }
          }
        }
        if (n.bias) {
          const b = dW(`h.${n.layer}.fc.b`), e = adapter.table.byName.get(n.bias)!;
          for (let i = 0; i < k; i++) want[e.offset + i] = refRun.grads[b.offset + n.index[i]];
        }
        const w = dW(`h.${n.layer}.${n.cols.site}.w`), e = adapter.table.byName.get(n.cols.name)!;
        for (let c = 0; c < C; c++) {
          for (let i = 0; i < k; i++) {
            want[e.offset + c * k + i] = refRun.grads[w.offset + c * F + n.index[i]];
          }
        }
      }
      for (let l = 0; l < L; l++) {
        const names = filterNames(l);
        const t = adapter.table.byName.get(names.tau)!, s = adapter.table.byName.get(names.sink)!;
        // τ → scale = exp(τ)/√D: dτ = dScale·scale.
        want.set(ref.temperatureGrad(dScales[l], tau[l], D), t.offset);
        want.set(dSinks[l], s.offset);
      }
      let worst = 0, worstName = "";
      for (const e of adapter.table.entries) {
        const w = want.subarray(e.offset, e.offset + e.numel);
        const got = run.adapterGrads!.subarray(e.offset, e.offset + e.numel);
        const max = Math.max(...Array.from(w, Math.abs));
        assert.ok(max > 0, `${what} ${e.name}: the reference gradient is all zero`);
        assert.ok(got.every(Number.isFinite), `${what} ${e.name}: non-finite gradient`);
        compare(`${what} ${e.name}`, got, w, { atol: 1e-4 * max, rtol: 1e-4 });
        for (let i = 0; i < e.numel; i++) {
          const err = Math.abs(got[i] - w[i]) / max;
          if (err > worst) [worst, worstName] = [err, e.name];
        }
      }
      console.log(`${what}: max hybrid grad error / tensor max = ${worst.toExponential(2)} (${worstName})`);
    }
    adapter.destroy();
    weights.params.buffer.destroy();
  });
}

Deno.test("hybrid training (S²-Attn, calibration-selected neurons) lowers the loss and leaves the base untouched", async () => {
  const gpu = await getGpu();
  const T = 24;
  const values = initialWeights(llama, 8);
  const weights = createWeights(gpu, llama, values);
  const batch = patternBatch(T);
  const ctx: PrepareContext = {
    gpu,
    base: weights,
    baseValues: values,
    trainLength: T,
    maxLength: T,
    seed: 2,
    calibration: [batch, ...calibrationSet(llama.vocabSize, [T, T, 16], 9)],
  };
  const cfg = hybridConfigSchema.parse({ neuronScore: "snip", s2MinLength: 16, calibrationSequences: 3 });
  await assert.rejects(
    () => hybrid.prepare({ ...ctx, calibration: undefined }, cfg),
    /needs calibration sequences/,
  );
  await assert.rejects(
    () => hybrid.prepare({ ...ctx, trainLength: 20 }, cfg),
    /divisible by 8.*trainLength = 20/,
  );
  const prepared = await hybrid.prepare(ctx, cfg);
  assert.deepEqual(prepared.trainMask, { mode: "shifted-groups", groupSize: 6 });
  assert.equal(prepared.evalMask, undefined);
  assert.equal(prepared.details.calibrationSequences, 3);
  console.log(`details: ${JSON.stringify(prepared.details)}`);
  const again = await hybrid.prepare(ctx, cfg);
  assert.equal(
    again.details.neuronSelectionHash,
    prepared.details.neuronSelectionHash,
    "selection must repeat",
  );
  again.destroy();
  assert.equal(prepared.weights, weights);
  const losses = await trainOnPattern(gpu, prepared, T);
  console.log(`hybrid losses: ${losses[0].toFixed(4)} → ${losses[39].toFixed(4)}`);
  assert.ok(losses[39] < losses[0] - 0.5, `loss ${losses[0]} → ${losses[39]} did not drop by 0.5`);
  assertBitwiseEqual("base weights after hybrid training", await readWeights(gpu, weights), values);
  const adapter = prepared.adapter as ReturnType<typeof createHybridAdapter>;
  const moved = await readF32(gpu, adapter.params!);
  const change = (pattern: RegExp) => {
    let max = 0;
    for (const e of adapter.table.entries) {
      if (!pattern.test(e.name)) continue;
      for (let i = e.offset; i < e.offset + e.numel; i++) {
        max = Math.max(max, Math.abs(moved[i] - adapter.values[i]));
      }
    }
    return max;
  };
  const report = {
    loraB: change(/lora\.B$/),
    neurons: change(/neurons/),
    tau: change(/attn\.tau$/),
    sink: change(/attn\.sink$/),
  };
  console.log(`largest parameter change per component: ${JSON.stringify(report)}`);
  for (const [k, v] of Object.entries(report)) {
    if (k !== "sink") assert.ok(v > 1e-3, `${k} did not train (${v})`);
  }
  prepared.destroy();
  weights.params.buffer.destroy();
});
