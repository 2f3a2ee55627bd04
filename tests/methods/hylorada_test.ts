import assert from "node:assert/strict";
import type { Gpu } from "../../src/gpu/device.ts";
import { getGpu } from "../../src/gpu/device.ts";
import { Recorder } from "../../src/gpu/recorder.ts";
import { createTensor, poison, readF32, readTensors, tensorFrom, upload } from "../../src/gpu/tensor.ts";
import { dims, type ModelConfig, parseModelConfig } from "../../src/model/config.ts";
import { parameterCount } from "../../src/model/params.ts";
import { createWeights, initialWeights, type ModelWeights, readWeights } from "../../src/model/weights.ts";
import { headModes } from "../../src/ops/attention.ts";
import {
  positionBucket,
  positionGradScratch,
  positionScale,
  positionScaleBackward,
} from "../../src/ops/hylorada.ts";
import {
  createHyloradaAdapter,
  hylorada,
  type HyloradaAdapter,
  type HyloradaConfig,
  hyloradaConfigSchema,
  hyloradaParameterCount,
  hyloradaPlan,
} from "../../src/methods/hylorada.ts";
import { loraScale } from "../../src/methods/lora.ts";
import type { PreparedMethod } from "../../src/methods/method.ts";
import { Rng } from "../../src/random/philox.ts";
import { randomBatch, runGraph, trainOnPattern } from "../reference/graph_run.ts";
import { MODE_GROUPS, MODE_GROUPS_SHIFTED } from "../reference/attention.ts";
import { assertBitwiseEqual, compare } from "../reference/compare.ts";
import {
  bucketRef,
  hyloradaRefHooks,
  landmarksBackward,
  landmarksForward,
  positionScaleBackward as positionScaleBackwardRef,
  positionScaleForward,
} from "../reference/hylorada.ts";
import { referenceModel } from "../reference/model.ts";
import { scaledWeights, tinyGpt2, tinyLlama } from "../reference/tiny_models.ts";

// Awkward sizes: widths that are multiples of no tile; D = 12.
const gpt2 = tinyGpt2;
const llama = tinyLlama;

const uniform = (n: number, seed: number, lo = -1, hi = 1) => {
  const rng = new Rng(seed, 5);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * rng.uniform());
};

async function prepare(
  gpu: Gpu,
  config: ModelConfig,
  values: Float32Array,
  raw: Partial<HyloradaConfig>,
  trainLength: number,
  maxLength: number,
): Promise<{ base: ModelWeights; prepared: PreparedMethod; adapter: HyloradaAdapter; cfg: HyloradaConfig }> {
  const base = createWeights(gpu, config, values);
  const cfg = hyloradaConfigSchema.parse(raw);
  const prepared = await hylorada.prepare(
    { gpu, base, baseValues: values, trainLength, maxLength, seed: 3 },
    cfg,
  );
  return { base, prepared, adapter: prepared.adapter as HyloradaAdapter, cfg };
}

Deno.test("HyLoRADA parameter count: 811,008 for GPT-2 small (paper), the adaptive table, and the allocated table", async () => {
  const small = parseModelConfig({
    family: "gpt2",
    vocabSize: 50257,
    maxPositions: 1024,
    nLayer: 12,
    nHead: 12,
    nEmbd: 768,
  });
  const d = hyloradaConfigSchema.parse({});
  const lora = 12 * 8 * ((768 + 2304) + (768 + 768) + (3072 + 768));
  assert.equal(lora, 811_008);
  assert.equal(hyloradaParameterCount(small, d, { trainLength: 1024, maxLength: 1024 }), 811_008);
  assert.equal(hyloradaParameterCount(small, d), 811_008, "without lengths: the model's own context");
  // 2048: + position bias (64 + 1) + landmarks (2·8·768 + 1) + the whole extended wpe (paper: n_pos·d).
  const at2k = lora + 65 + (2 * 8 * 768 + 1) + 2048 * 768;
  assert.equal(hyloradaParameterCount(small, d, { trainLength: 2048, maxLength: 2048 }), at2k);
  // 4096: + every LayerNorm gain and bias, 2·(2L+1)·d.
  const at4k = lora + 65 + (2 * 8 * 768 + 1) + 4096 * 768 + 2 * 25 * 768;
  assert.equal(hyloradaParameterCount(small, d, { trainLength: 4096, maxLength: 4096 }), at4k);
  // The code's embedding unfreeze adds wte (V·d).
  const all = hyloradaConfigSchema.parse({ embeddingScope: "all" });
  assert.equal(
    hyloradaParameterCount(small, all, { trainLength: 4096, maxLength: 4096 }),
    at4k + 50257 * 768,
  );
  // Per-module w: one per adapted matrix (36 for GPT-2 small).
  const perModule = hyloradaConfigSchema.parse({ positionScale: "per-module" });
  assert.equal(hyloradaParameterCount(small, perModule, { trainLength: 4096, maxLength: 4096 }), at4k + 35);

  // A tiny GPT-2 prepared for 24 tokens (8 new positions), every component on, per-module w:
  // per layer r·[(36+108) + (36+36) + (144+36)] = 3·396; 64 + 6 w; 2·4·36 + 1; 8·36 new rows; 2·5·36 norms.
  const gpu = await getGpu();
  const raw = {
    r: 3,
    positionBias: true,
    positionScale: "per-module" as const,
    landmarks: true,
    numLandmarks: 4,
    trainNorms: true,
    s2Attn: true,
  };
  const want = 2 * 3 * 396 + 70 + 289 + 8 * 36 + 2 * 5 * 36;
  const { base, prepared, adapter, cfg } = await prepare(gpu, gpt2, initialWeights(gpt2, 1), raw, 24, 24);
  assert.equal(hyloradaParameterCount(gpt2, cfg, { trainLength: 24, maxLength: 24 }), want);
  assert.equal(prepared.trainableParameters, want);
  const wpe = prepared.weights.table.byName.get("wpe")!;
  assert.deepEqual(prepared.trainable(wpe), { from: 16 * 36, count: 8 * 36 });
  assert.equal(parameterCount(adapter.table), 2 * 3 * 396 + 70 + 289);
  assert.deepEqual(prepared.trainMask, { mode: "shifted-groups", groupSize: 6 });
  assert.equal(adapter.incremental, false, "the mean-pooled landmarks read the whole sequence");
  prepared.destroy();
  base.params.buffer.destroy();
  console.log(`GPT-2 small: ${lora} (paper 811K); at 2048: ${at2k}; at 4096: ${at4k}; tiny: ${want}`);
});

Deno.test("HyLoRADA adaptive defaults follow the paper's table; RoPE factor = maxLength / context", () => {
  const d = hyloradaConfigSchema.parse({});
  const g = (n: number) => hyloradaPlan(gpt2, d, { trainLength: n, maxLength: n });
  const short = g(1024);
  assert.deepEqual(
    [short.positionBias, short.landmarks, short.s2Attn, short.trainPositions, short.trainNorms],
    [false, false, false, false, false],
  );
  assert.equal(short.lora.alpha, 16);
  assert.equal(loraScale(short.lora), 16 / Math.sqrt(8));
  assert.deepEqual(short.lora.targets, ["qkv", "o", "fcProj"]);
  const mid = g(2048);
  assert.deepEqual([mid.positionBias, mid.landmarks, mid.s2Attn, mid.trainPositions, mid.trainNorms], [
    true,
    true,
    false,
    true,
    false,
  ]);
  assert.equal(mid.newPositionRows, 2048 - 16);
  const long = g(4096);
  assert.deepEqual([long.s2Attn, long.trainNorms, long.trainTokenEmbedding], [true, true, false]);
  // Each switch alone overrides its default.
  const ablated = hyloradaPlan(gpt2, hyloradaConfigSchema.parse({ landmarks: false, s2Attn: false }), {
    trainLength: 4096,
    maxLength: 4096,
  });
  assert.deepEqual([ablated.positionBias, ablated.landmarks, ablated.s2Attn], [true, false, false]);
  // Llama: q, k, v, o; RoPE linear beyond the context, YaRN beyond 8192, factor maxLength/maxPositions.
  const l = (n: number) => hyloradaPlan(llama, d, { trainLength: n, maxLength: n });
  assert.deepEqual(l(32).rope, null);
  assert.deepEqual(l(32).lora.targets, ["q", "k", "v", "o"]);
  assert.deepEqual(l(80).rope, { type: "linear", factor: 2.5, originalMaxPositions: 32 });
  assert.deepEqual(l(16384).rope, { type: "yarn", factor: 512, originalMaxPositions: 32 });
  assert.throws(
    () => hyloradaPlan(gpt2, hyloradaConfigSchema.parse({ ropeScaling: "yarn" })),
    /ropeScaling.*GPT-2/,
  );
  assert.throws(() => hyloradaConfigSchema.parse({ positionScale: "layer" }), /positionScale/);
});

Deno.test("position-bias kernel: s(p)·rows and its bucket/w gradients match float64 (N=203, R=5, W=3)", async () => {
  const gpu = await getGpu();
  const N = 203, R = 5, W = 3, slot = 2;
  const rng = new Rng(31, 1);
  // p = 0 several times, small positions (buckets 0–6), and far ones (up to bucket 26).
  const far = [0, 65535, 65536, 1 << 20, 123_456_789, 3];
  const positions = Uint32Array.from(
    { length: N },
    (_, n) => n < 80 ? n : n < 150 ? rng.int(5000) : far[n % 6],
  );
  for (let p = 0; p < 300_000; p += 997) assert.equal(positionBucket(p), bucketRef(p), `bucket(${p})`);
  for (const p of [0, 1, 2, 3, 7, 8, 65535, 65536, 4294967294]) assert.equal(positionBucket(p), bucketRef(p));
  const bw = uniform(64 + W, 32, -2, 2);
  bw[bucketRef(5000)] = 20; // saturated tanh: the kernel clamps its argument, the gradient is ~0
  bw[64 + slot] = -0.7;
  const x = uniform(N * R, 33), du = uniform(N * R, 34);
  const t = (data: ArrayLike<number>, label: string, dtype: "f32" | "u32" = "f32") =>
    tensorFrom(gpu, [data.length], data, { label, dtype });
  const xT = { ...t(x, "x"), shape: [N, R] }, duT = { ...t(du, "du"), shape: [N, R] };
  const posT = t(positions, "positions", "u32"), bwT = t(bw, "bw");
  const out = createTensor(gpu, [N, R], { label: "out" });
  const dz = createTensor(gpu, [N, R], { label: "dz" });
  const partial = positionGradScratch(gpu, N);
  const dbw0 = uniform(64 + W, 35);
  const dbw = t(dbw0, "dbw");
  for (const p of [out, dz, partial]) poison(gpu, p);
  const rec = new Recorder(gpu, "position bias");
  await positionScale(rec, out, xT, posT, bwT, slot);
  await positionScaleBackward(rec, dbw, partial, duT, xT, posT, bwT, slot);
  await positionScale(rec, dz, duT, posT, bwT, slot);
  await rec.submit();
  const [gotOut, gotDbw, gotDz] = await readTensors(gpu, [out, dbw, dz]) as Float32Array[];
  const want = positionScaleForward(new Float64Array(N * R), x, positions, bw, slot, N, R);
  const wantDbw = Float64Array.from(dbw0), wantDz = new Float64Array(N * R);
  positionScaleBackwardRef(wantDbw, wantDz, du, x, positions, bw, slot, N, R);
  const f = compare("s(p)·x", gotOut, want, { atol: 1e-6, rtol: 2e-6 }, [N, R]);
  const b = compare("d[b; w]", gotDbw, wantDbw, { atol: 2e-6, rtol: 2e-6 });
  const g = compare("dz = s(p)·du", gotDz, wantDz, { atol: 1e-6, rtol: 2e-6 }, [N, R]);
  // Buckets no position reaches keep their old gradient exactly; p = 0's bucket moved.
  assert.equal(gotDbw[40], dbw0[40]);
  assert.notEqual(gotDbw[0], dbw0[0]);
  console.log(
    `position bias: fwd max|err| ${f.maxAbs.toExponential(2)}, d[b;w] ${b.maxAbs.toExponential(2)}, ` +
      `dz ${g.maxAbs.toExponential(2)} (buckets hit: ${new Set(Array.from(positions, bucketRef)).size})`,
  );
  // b = 0: s(p) = 1 exactly, whatever w is.
  upload(gpu, bwT, Float32Array.from({ length: 64 + W }, (_, i) => (i < 64 ? 0 : 1.3)));
  poison(gpu, out);
  const rec2 = new Recorder(gpu, "position bias at init");
  await positionScale(rec2, out, xT, posT, bwT, 1);
  await rec2.submit();
  assertBitwiseEqual("s(p)·x with b = 0", await readF32(gpu, out), x);
  for (const tensor of [xT, duT, posT, bwT, out, dz, partial, dbw]) tensor.buffer.destroy();
});

Deno.test("landmark hooks: forward h + α·gᵀL and backward (dh, dL, dW_g, dα) match float64 (B=3, T=300, K=5)", async () => {
  const gpu = await getGpu();
  const B = 3, T = 300, C = 36, K = 5, N = B * T;
  const cfg = hyloradaConfigSchema.parse({ landmarks: true, numLandmarks: K, positionBias: false });
  const plan = hyloradaPlan(gpt2, cfg);
  const adapter = createHyloradaAdapter(gpu, gpt2, cfg, plan, 4);
  const e = (name: string) => adapter.table.byName.get(name)!;
  // Gates far from uniform: W_g ~ U(±1), and per-sequence offsets so the means are O(1).
  const values = adapter.values.slice();
  values.set(uniform(K * C, 40), e("landmarks.Wg").offset);
  values.set(uniform(K * C, 41), e("landmarks.L").offset);
  values[e("landmarks.alpha").offset] = 0.7;
  upload(gpu, adapter.params!, values);
  const offsets = uniform(B * C, 42, -1, 1);
  const h = uniform(N * C, 43).map((v, i) => v + offsets[Math.floor(i / (T * C)) * C + (i % C)]);
  const dh = uniform(N * C, 44);
  const grads0 = uniform(adapter.table.size, 45);
  const grads = tensorFrom(gpu, [adapter.table.size], grads0, { label: "grads" });
  const positions = tensorFrom(gpu, [N], Uint32Array.from({ length: N }, (_, n) => n % T), {
    label: "positions",
    dtype: "u32",
  });
  const hooks = adapter.attach({
    B,
    T,
    dims: dims(gpt2),
    family: "gpt2",
    training: true,
    weights: null as unknown as ModelWeights,
    grads,
    positions,
    lossWeights: positions,
  });
  const lnf = tensorFrom(gpu, [N, C], h, { label: "lnf" });
  const dlnf = tensorFrom(gpu, [N, C], dh, { label: "dlnf" });
  const rec = new Recorder(gpu, "landmarks");
  await hooks.finalNorm!(rec, lnf);
  await hooks.finalNormBackward!(rec, dlnf);
  await rec.submit();
  const [gotH, gotDh, gotGrads] = await readTensors(gpu, [lnf, dlnf, grads]) as Float32Array[];
  const slice = (name: string) => values.subarray(e(name).offset, e(name).offset + e(name).numel);
  const h64 = Float64Array.from(h), dh64 = Float64Array.from(dh);
  const L = slice("landmarks.L"), Wg = slice("landmarks.Wg");
  const saved = landmarksForward(h64, L, Wg, 0.7, B, T, C, K);
  const ref = { dL: new Float64Array(K * C), dWg: new Float64Array(K * C), dAlpha: 0 };
  landmarksBackward(dh64, ref, saved, L, Wg, 0.7, B, T, C, K);
  const gates = Array.from(saved.g).map((x) => x.toFixed(3)).join(" ");
  const fwd = compare("h'", gotH, h64, { atol: 2e-6, rtol: 2e-6 }, [N, C]);
  const bwd = compare("dh", gotDh, dh64, { atol: 2e-6, rtol: 2e-6 }, [N, C]);
  const part = (name: string) => gotGrads.subarray(e(name).offset, e(name).offset + e(name).numel);
  const plus = (base: Float32Array, d: ArrayLike<number>) => Float64Array.from(d, (x, i) => x + base[i]);
  const max = (a: ArrayLike<number>) => Math.max(...Array.from(a, Math.abs));
  const cL = compare("dL", part("landmarks.L"), plus(grads0.subarray(e("landmarks.L").offset), ref.dL), {
    atol: 1e-5 * max(ref.dL),
    rtol: 1e-5,
  });
  const cW = compare("dW_g", part("landmarks.Wg"), plus(grads0.subarray(e("landmarks.Wg").offset), ref.dWg), {
    atol: 1e-5 * max(ref.dWg),
    rtol: 1e-5,
  });
  const cA = compare("dα", part("landmarks.alpha"), [grads0[e("landmarks.alpha").offset] + ref.dAlpha], {
    atol: 1e-5 * Math.abs(ref.dAlpha),
    rtol: 1e-5,
  });
  console.log(
    `landmarks: gates ${gates}; h' ${fwd.maxAbs.toExponential(2)}, dh ${bwd.maxAbs.toExponential(2)}, ` +
      `dL rel ${(cL.maxAbs / max(ref.dL)).toExponential(2)}, dW_g rel ${
        (cW.maxAbs / max(ref.dWg)).toExponential(2)
      }, ` +
      `dα ${cA.maxAbs.toExponential(2)} of ${ref.dAlpha.toFixed(3)}`,
  );
  hooks.destroy?.();
  for (const t of [grads, positions, lnf, dlnf, adapter.params!]) t.buffer.destroy();
});

// Random values in every adapter tensor so that each path carries gradient.
function randomizeAdapter(gpu: Gpu, adapter: HyloradaAdapter, seed: number): Float32Array {
  const values = adapter.values.slice();
  const rng = new Rng(seed, 0);
  for (const e of adapter.table.entries) {
    if (e.name.endsWith(".A")) continue;
    const spread = e.name === "posbias.b" ? 3 : e.name.startsWith("landmarks.") ? 1 : 0.3;
    for (let i = 0; i < e.numel; i++) values[e.offset + i] = (rng.uniform() - 0.5) * spread;
  }
  upload(gpu, adapter.params!, values);
  return values;
}

function refSpec(adapter: HyloradaAdapter, values: Float32Array, B: number, T: number, C: number) {
  const plan = adapter.plan;
  return {
    offsets: new Map(adapter.table.entries.map((e) => [e.name, e.offset])),
    values,
    matrices: adapter.matrices.map((m, i) => ({ ...m, slot: plan.positionScales === 1 ? 0 : i })),
    r: plan.lora.r,
    scale: loraScale(plan.lora),
    positionBias: plan.positionBias,
    landmarks: plan.landmarks,
    K: plan.K,
    B,
    T,
    C,
  };
}

for (
  const [family, config, raw, T, maxLength] of [
    // Extended positions (8 new rows train), per-module w, landmarks, norms and S²-Attn (G = 6).
    [
      "GPT-2",
      gpt2,
      {
        r: 3,
        positionBias: true,
        positionScale: "per-module",
        landmarks: true,
        numLandmarks: 4,
        trainNorms: true,
        s2Attn: true,
      },
      24,
      24,
    ],
    // RoPE linear ×1.5 (maxLength 48 > 32), global w, landmarks.
    [
      "Llama",
      llama,
      { r: 4, positionBias: true, landmarks: true, numLandmarks: 3, trainNorms: true },
      16,
      48,
    ],
  ] as const
) {
  Deno.test(`${family}: HyLoRADA whole-model gradients (adapter and trainable base tensors) match float64`, async () => {
    const gpu = await getGpu();
    const B = 2, N = B * T;
    const { base, prepared, adapter } = await prepare(
      gpu,
      config,
      scaledWeights(config, 5),
      raw,
      T,
      maxLength,
    );
    const weights = prepared.weights;
    const values = randomizeAdapter(gpu, adapter, 21);
    const batch = randomBatch(config.vocabSize, N, 3);
    const gradScale = 1 / 13;
    const run = await runGraph(
      gpu,
      weights,
      {
        B,
        T,
        training: true,
        adapter,
        trainable: prepared.trainable,
        mask: prepared.trainMask,
      },
      batch,
      { gradScale },
    );
    const baseValues = await readWeights(gpu, weights);
    const refGrads = new Float64Array(adapter.table.size);
    const hooks = hyloradaRefHooks(refSpec(adapter, values, B, T, dims(config).C), refGrads);
    const { H } = dims(config);
    if (prepared.trainMask) {
      const G = prepared.trainMask.groupSize!;
      const modes = headModes(H, "shifted-groups").map((m) =>
        m === "groups" ? MODE_GROUPS : MODE_GROUPS_SHIFTED
      );
      hooks.mask = { modes, G };
    }
    const ref = referenceModel(weights.config, baseValues, batch, B, T, gradScale, hooks);
    // B in ±0.15 (±0.3 doubles the largest errors: rsLoRA's s = 2√r and s(p) up to 1.5 sharpen the logits).
    const lossErr = compare(`${family} losses`, run.losses, ref.losses, { atol: 2e-5, rtol: 1e-5 });
    let worst = 0;
    const check = (name: string, got: Float32Array, want: Float64Array) => {
      const max = Math.max(...Array.from(want, Math.abs));
      assert.ok(max > 0, `${name}: the reference gradient is all zero`);
      // Within 1e-4 of the tensor's largest value (observed ≤ 2.1e-5, in layer 0 and the position bias).
      compare(`${family} ${name}`, got, want, { atol: 1e-4 * max, rtol: 1e-4 });
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / max);
    };
    for (const e of adapter.table.entries) {
      check(
        e.name,
        run.adapterGrads!.subarray(e.offset, e.offset + e.numel),
        refGrads.subarray(e.offset, e.offset + e.numel),
      );
    }
    let baseChecked = 0;
    for (const e of weights.table.entries) {
      const t = prepared.trainable(e);
      if (t === false) continue;
      const [from, count] = t === true ? [0, e.numel] : [t.from, t.count];
      const at = e.offset + from;
      check(e.name, run.grads!.subarray(at, at + count), ref.grads.subarray(at, at + count));
      baseChecked += count;
    }
    console.log(
      `${family}: ${adapter.table.entries.length} adapter tensors and ${baseChecked} base elements; ` +
        `max grad error / tensor max = ${worst.toExponential(2)}; loss error ${
          lossErr.maxAbs.toExponential(2)
        }; rope ${JSON.stringify(weights.config.family === "llama" ? weights.config.rope.type : "none")}`,
    );
    prepared.destroy();
    base.params.buffer.destroy();
  });
}

Deno.test("HyLoRADA at init: without landmarks the base logits bitwise; with them base + α_s·c (float64)", async () => {
  const gpu = await getGpu();
  const B = 2, T = 16, N = B * T;
  const batch = randomBatch(gpt2.vocabSize, N, 7);
  // Position bias (b = 0 ⇒ s ≡ 1) on an extended table: positions < 16 are the base's rows.
  const a = await prepare(
    gpu,
    gpt2,
    scaledWeights(gpt2, 6),
    { r: 4, positionBias: true, landmarks: false },
    24,
    24,
  );
  const baseRun = await runGraph(gpu, a.base, { B, T, training: false }, batch, { readLogits: true });
  const initRun = await runGraph(
    gpu,
    a.prepared.weights,
    { B, T, training: false, adapter: a.adapter },
    batch,
    {
      readLogits: true,
    },
  );
  assertBitwiseEqual("GPT-2 logits at init (rsLoRA + position bias)", initRun.logits!, baseRun.logits!);
  a.prepared.destroy();
  a.base.params.buffer.destroy();
  const l = await prepare(
    gpu,
    llama,
    scaledWeights(llama, 6),
    { positionBias: true, landmarks: false },
    16,
    32,
  );
  const lb = await runGraph(gpu, l.base, { B, T, training: false }, randomBatch(41, N, 8), {
    readLogits: true,
  });
  const li = await runGraph(
    gpu,
    l.prepared.weights,
    { B, T, training: false, adapter: l.adapter },
    randomBatch(41, N, 8),
    {
      readLogits: true,
    },
  );
  assertBitwiseEqual("Llama logits at init (rsLoRA + position bias)", li.logits!, lb.logits!);
  l.prepared.destroy();
  l.base.params.buffer.destroy();

  // Landmarks perturb at init: the float64 reference with the same mix gives the logits.
  const values = scaledWeights(gpt2, 6);
  const m = await prepare(gpu, gpt2, values, { r: 4, positionBias: true, landmarks: true }, 16, 16);
  const run = await runGraph(gpu, m.prepared.weights, { B, T, training: false, adapter: m.adapter }, batch, {
    readLogits: true,
  });
  const hooks = hyloradaRefHooks(
    refSpec(m.adapter, m.adapter.values, B, T, 36),
    new Float64Array(m.adapter.table.size),
  );
  const ref = referenceModel(gpt2, values, batch, B, T, 1, hooks);
  const plain = referenceModel(gpt2, values, batch, B, T, 1);
  const max = Math.max(...Array.from(ref.logits, Math.abs));
  const c = compare("logits at init with landmarks", run.logits!, ref.logits, {
    atol: 5e-6 * max,
    rtol: 1e-5,
  });
  let moved = 0;
  for (let i = 0; i < ref.logits.length; i++) {
    moved = Math.max(moved, Math.abs(ref.logits[i] - plain.logits[i]));
  }
  // α_s = 0.1 and L ~ N(0, 0.02²) make a small but real change (observed ~200× the f32 error).
  assert.ok(moved > 2e-4, `the landmark mix should move the logits at init (moved ${moved})`);
  assert.ok(c.maxAbs < moved / 50, `GPU error ${c.maxAbs} is not small next to the landmark change ${moved}`);
  console.log(
    `landmarks at init: logits move by up to ${moved.toExponential(2)}; GPU vs float64 ${
      c.maxAbs.toExponential(2)
    }`,
  );
  m.prepared.destroy();
  m.base.params.buffer.destroy();
});

Deno.test("HyLoRADA training (all components, S²-Attn, extended positions) lowers the loss; base untouched", async () => {
  const gpu = await getGpu();
  const T = 24;
  const values = initialWeights(gpt2, 8);
  const { base, prepared, adapter } = await prepare(
    gpu,
    gpt2,
    values,
    {
      r: 4,
      positionBias: true,
      landmarks: true,
      trainNorms: true,
      s2Attn: true,
    },
    T,
    T,
  );
  const losses = await trainOnPattern(gpu, prepared, T);
  console.log(`HyLoRADA losses: ${losses[0].toFixed(4)} → ${losses[39].toFixed(4)}`);
  assert.ok(losses[39] < losses[0] - 0.5, `loss ${losses[0]} → ${losses[39]} did not drop by 0.5`);
  assertBitwiseEqual("caller's base weights after training", await readWeights(gpu, base), values);
  const trained = await readF32(gpu, adapter.params!);
  const bias = adapter.table.byName.get("posbias.b")!;
  assert.ok(trained.subarray(bias.offset, bias.offset + 5).some((x) => x !== 0), "the position bias trained");
  prepared.destroy();
  base.params.buffer.destroy();
});
