import assert from "node:assert/strict";
import { getGpu, type Gpu } from "../../src/gpu/device.ts";
import { Recorder } from "../../src/gpu/recorder.ts";
import {
  createTensor,
  poison,
  readF32,
  readTensors,
  type Tensor,
  tensorFrom,
  upload,
} from "../../src/gpu/tensor.ts";
import { NO_BASE } from "../../src/model/adapter.ts";
import { parameterCount } from "../../src/model/params.ts";
import { createWeights, initialWeights, readWeights } from "../../src/model/weights.ts";
import {
  createDoraAdapter,
  dora,
  doraConfigSchema,
  doraParameterCount,
  mergeDora,
} from "../../src/methods/dora.ts";
import { loraScale } from "../../src/methods/lora.ts";
import { doraForward, doraMagnitudeGrad, doraRowNorm, doraScaleGrad } from "../../src/ops/dora.ts";
import { fillUniform, Rng } from "../../src/random/philox.ts";
import { randomBatch, runGraph, trainOnPattern } from "../reference/graph_run.ts";
import { assertBitwiseEqual, compare } from "../reference/compare.ts";
import * as ref from "../reference/dora.ts";
import { referenceModel } from "../reference/model.ts";
import { scaledWeights, tinyGpt2, tinyLlama } from "../reference/tiny_models.ts";

/** Unit roundoff of f32. */
const u = 2 ** -24;

// Awkward sizes, as in lora_test.ts: GPT-2's k and v blocks start off a bindable offset (copied),
// Llama's on one (bound in place).
const gpt2 = tinyGpt2;
const llama = tinyLlama;

const random = (n: number, seed: number, lo = -1, hi = 1) =>
  fillUniform(new Float32Array(n), seed, 0, lo, hi);
const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, x) => Math.max(m, Math.abs(x)), 0);

Deno.test("DoRA parameter count is Σ r·(d_in + d_out) + d_out and the table holds exactly that", async () => {
  const c = doraConfigSchema.parse({ r: 3, targets: ["q", "k", "v", "o", "fc"] });
  // GPT-2 C=36, q/k/v 36×36, o 36×36, fc 144×36: per layer r·(72·4 + 180) + (36·4 + 144).
  const gpt2Count = 2 * (3 * (72 * 4 + 180) + (36 * 4 + 144));
  assert.equal(doraParameterCount(gpt2, c), gpt2Count);
  assert.equal(dora.parameterCount(gpt2, c), gpt2Count);
  const cl = doraConfigSchema.parse({ r: 5, targets: ["q", "k", "v", "o", "gate", "up", "down"] });
  // Llama C=48: q 48×48, k/v 24×48, o 48×48, gate/up 44×48, down 48×44.
  const dIn = [48, 48, 48, 48, 48, 48, 44], dOut = [48, 24, 24, 48, 44, 44, 48];
  const perLayer = dIn.reduce((n, din, i) => n + 5 * (din + dOut[i]) + dOut[i], 0);
  assert.equal(doraParameterCount(llama, cl), 2 * perLayer);
  const gpu = await getGpu();
  const weights = createWeights(gpu, llama, initialWeights(llama, 1));
  const adapter = await createDoraAdapter(gpu, weights, cl, 1);
  assert.equal(parameterCount(adapter.table), 2 * perLayer);
  assert.equal(adapter.table.byName.get("h.1.k.dora.m")!.numel, 24);
  adapter.params!.buffer.destroy();
  weights.params.buffer.destroy();
});

async function run(gpu: Gpu, label: string, out: Tensor[], record: (rec: Recorder) => Promise<void>) {
  for (const t of out) poison(gpu, t);
  const rec = new Recorder(gpu, label);
  await record(rec);
  await rec.submit();
  rec.destroy();
  return (await readTensors(gpu, out)) as Float32Array[];
}

Deno.test("DoRA kernels match float64: row norms of W0 + s·B·A, forward, scaled dy, magnitude gradient", async () => {
  const gpu = await getGpu();
  // A block of 37 rows at row 11 of a 53-row weight, in = 75, R = 3, N = 29 rows of a 61-wide output.
  const Wrows = 53, rows = 37, cols = 75, R = 3, rowOffset = 11, s = 1.7;
  const N = 29, W = 61, off = 13;
  const w = random(Wrows * cols, 1), a = random(R * cols, 2), b = random(rows * R, 3, -0.5, 0.5);
  const wT = tensorFrom(gpu, [Wrows, cols], w, { label: "W" });
  const aT = tensorFrom(gpu, [R, cols], a, { label: "A" });
  const bT = tensorFrom(gpu, [rows, R], b, { label: "B" });
  const normsT = createTensor(gpu, [rows], { label: "norms" });
  const [norms] = await run(
    gpu,
    "rowNorm",
    [normsT],
    (rec) => doraRowNorm(rec, normsT, wT, aT, bT, rowOffset, s),
  );
  const wantNorms = ref.doraRowNorm(w, rowOffset, a, b, rows, cols, R, s);
  // Each v = w + s·Σ_k B·A errs by (R + 2)·u·(|w| + s·Σ|B||A|); the sum of squares by (⌈cols/64⌉ + 6 + 2)·u
  // relative (serial adds, the 64-wide tree, fma) and sqrt by a few ulp more.
  const mags = ref.doraRowNorm(
    w.map(Math.abs),
    rowOffset,
    a.map(Math.abs),
    b.map(Math.abs),
    rows,
    cols,
    R,
    s,
  );
  const normTol = (Math.ceil(cols / 64) + 6 + 8) * u * maxAbs(wantNorms) + (R + 2) * u * maxAbs(mags);
  const rn = compare("rowNorm", norms, wantNorms, { atol: normTol, rtol: 0 });

  // m around the norms, one column exactly equal (g = 1 exactly).
  const m = Float32Array.from(norms, (n, j) => (j === 5 ? n : n * (0.6 + 0.8 * ((j * 7) % 11) / 11)));
  const y = random(N * W, 4), base = random(N * rows, 5), lora = random(N * rows, 6);
  const mT = tensorFrom(gpu, [rows], m, { label: "m" });
  const baseT = tensorFrom(gpu, [N, rows], base, { label: "base" });
  const loraT = tensorFrom(gpu, [N, rows], lora, { label: "lora" });
  const yT = createTensor(gpu, [N, W], { label: "y" });
  const [yGot] = await run(gpu, "forward", [yT], async (rec) => {
    upload(gpu, yT, y);
    await doraForward(rec, yT, baseT, loraT, mT, normsT, off);
  });
  const yWant = ref.doraForward(y, base, lora, m, norms, N, W, rows, off);
  // g = m/n errs by 2.5 ulp (WGSL division); the sum of three rounded terms by a few u of the largest term.
  const yTol = 8 * u * (maxAbs(y) + 2 * maxAbs(base) + 2 * maxAbs(lora));
  const fw = compare("forward", yGot, yWant, { atol: yTol, rtol: 0 });
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < W; c++) {
      if (c >= off && c < off + rows) continue;
      assert.equal(yGot[n * W + c], y[n * W + c], `forward wrote column ${c} outside the block`);
    }
    const at = n * W + off + 5; // g == 1 exactly: y + (0·base + lora), rounded once
    assert.equal(
      yGot[at],
      Math.fround(y[at] + lora[n * rows + 5]),
      `row ${n}: m == n must give g = 1 exactly`,
    );
  }

  const dy = random(N * W, 7);
  const dyT = tensorFrom(gpu, [N, W], dy, { label: "dy" });
  const dyGT = createTensor(gpu, [N, rows], { label: "dyG" });
  const dyG1T = createTensor(gpu, [N, rows], { label: "dyG1" });
  const [dyG, dyG1] = await run(
    gpu,
    "scaleGrad",
    [dyGT, dyG1T],
    (rec) => doraScaleGrad(rec, dyGT, dyG1T, dyT, mT, normsT, off),
  );
  const sg = ref.doraScaleGrad(dy, m, norms, N, W, rows, off);
  const gMax = maxAbs(Float64Array.from(m, (x, j) => x / norms[j]));
  const sTol = 4 * u * gMax * maxAbs(dy);
  const s1 = compare("scaleGrad g·dy", dyG, sg.dyG, { atol: sTol, rtol: 0 });
  const s2 = compare("scaleGrad (g − 1)·dy", dyG1, sg.dyG1, { atol: sTol, rtol: 0 });

  const v = random(N * rows, 8), dm0 = random(rows, 9);
  const vT = tensorFrom(gpu, [N, rows], v, { label: "v" });
  const dmT = createTensor(gpu, [rows], { label: "dm" });
  const [dm] = await run(gpu, "magnitudeGrad", [dmT], async (rec) => {
    upload(gpu, dmT, dm0);
    await doraMagnitudeGrad(rec, dmT, dyT, vT, normsT, off);
  });
  const dmWant = ref.doraMagnitudeGrad(dm0, dy, v, norms, N, W, rows, off);
  // ⌈N/16⌉ serial fmas and a 16-lane tree over Σ|dy·v| ≤ N, then a division and the accumulate.
  const minNorm = Math.min(...norms);
  const dmTol = ((Math.ceil(N / 16) + 4 + 4) * u * N) / minNorm + 2 * u * maxAbs(dmWant);
  const mg = compare("magnitudeGrad", dm, dmWant, { atol: dmTol, rtol: 0 });
  console.log(
    `DoRA kernels max |err| (tolerance): rowNorm ${rn.maxAbs.toExponential(2)} (${
      normTol.toExponential(2)
    }), ` +
      `forward ${fw.maxAbs.toExponential(2)} (${yTol.toExponential(2)}), scaleGrad ${
        Math.max(s1.maxAbs, s2.maxAbs).toExponential(2)
      } (${sTol.toExponential(2)}), magnitudeGrad ${mg.maxAbs.toExponential(2)} (${dmTol.toExponential(2)})`,
  );
  await assert.rejects(
    () => doraRowNorm(new Recorder(gpu), normsT, wT, aT, bT, 20, s),
    /rows \[20, 57\) do not fit/,
  );
  for (const t of [wT, aT, bT, normsT, mT, baseT, loraT, yT, dyT, dyGT, dyG1T, vT, dmT]) t.buffer.destroy();
});

for (
  const [family, config, targets] of [
    ["GPT-2", gpt2, ["q", "v", "k", "o", "fcProj", "fc"]],
    ["GPT-2 fused", gpt2, ["qkv", "o"]],
    ["Llama", llama, ["q", "k", "v", "o", "gate", "up", "down"]],
  ] as const
) {
  Deno.test(`${family}: DoRA at init gives the base logits bitwise; losses and A, B, m gradients match the merged float64 model`, async () => {
    const gpu = await getGpu();
    const B = 2, T = 9, N = B * T;
    const values = scaledWeights(config, 5);
    const weights = createWeights(gpu, config, values);
    const cfg = doraConfigSchema.parse({ r: 3, alpha: 7, targets: [...targets] });
    const adapter = await createDoraAdapter(gpu, weights, cfg, 11);
    const batch = randomBatch(config.vocabSize, N, 3);
    const base = await runGraph(gpu, weights, { B, T, training: false }, batch, { readLogits: true });
    const init = await runGraph(gpu, weights, { B, T, training: false, adapter }, batch, {
      readLogits: true,
    });
    assertBitwiseEqual(`${family} logits at init`, init.logits!, base.logits!);
    // m starts at the row norms of W0 (float64 check of the device's values).
    for (const m of adapter.matrices) {
      const w = weights.table.byName.get(`h.${m.layer}.${m.site}.w`)!;
      const want = ref.doraRowNorm(values.subarray(w.offset), m.offset, [], [], m.out, m.in, 0, 0);
      const e = adapter.table.byName.get(m.m)!;
      compare(`${family} ${m.m} at init`, adapter.values.subarray(e.offset, e.offset + e.numel), want, {
        atol: 0,
        rtol: 16 * u,
      });
    }

    // Random B and m off the norms, so every path (g⊙dy, (g − 1)⊙dy, dm) carries signal.
    const rng = new Rng(21, 0);
    const av = adapter.values.slice();
    for (const m of adapter.matrices) {
      const eb = adapter.table.byName.get(m.b)!;
      for (let i = 0; i < eb.numel; i++) av[eb.offset + i] = (rng.uniform() - 0.5) * 0.6;
      const em = adapter.table.byName.get(m.m)!;
      for (let i = 0; i < em.numel; i++) av[em.offset + i] *= 0.7 + 0.6 * rng.uniform();
    }
    upload(gpu, adapter.params!, av);
    const s = loraScale(cfg);
    const gradScale = 1 / 13;
    const t0 = performance.now();
    const runOnce = (recompute: boolean) =>
      runGraph(gpu, weights, { B, T, training: true, recompute, adapter, trainable: NO_BASE }, batch, {
        gradScale,
      });
    const got = await runOnce(false);
    const ms = performance.now() - t0;
    assert.equal(got.grads, null, "no base gradient table without trainable base tensors");
    // Recomputing blocks in the backward recomputes n too: the same bits.
    const again = await runOnce(true);
    assertBitwiseEqual(`${family} adapter grads with recompute`, again.adapterGrads!, got.adapterGrads!);

    // The float64 merged model W' = diag(m/n)(W0 + s·B·A); mergeDora (float64, rounded once) is the same.
    const merged64 = Float64Array.from(values);
    const lin = new Map<string, ref.DoraLinearRef>();
    for (const m of adapter.matrices) {
      const w = weights.table.byName.get(`h.${m.layer}.${m.site}.w`)!;
      const blockAt = w.offset + m.offset * m.in;
      const ea = adapter.table.byName.get(m.a)!, eb = adapter.table.byName.get(m.b)!;
      const em = adapter.table.byName.get(m.m)!;
      const p: ref.DoraLinearRef = {
        w0: values.subarray(blockAt, blockAt + m.out * m.in),
        a: av.subarray(ea.offset, ea.offset + ea.numel),
        b: av.subarray(eb.offset, eb.offset + eb.numel),
        m: av.subarray(em.offset, em.offset + em.numel),
        out: m.out,
        in: m.in,
        R: cfg.r,
        scale: s,
      };
      lin.set(m.m, p);
      merged64.set(ref.doraMerged(p), blockAt);
    }
    const merged = mergeDora(weights.table, values, adapter.table, av, adapter.matrices, cfg.r, s);
    compare(`${family} mergeDora`, merged, merged64, { atol: 0, rtol: u });
    const want = referenceModel(config, merged64, batch, B, T, gradScale);
    const losses = compare(`${family} losses (DoRA vs merged reference)`, got.losses, want.losses, {
      atol: 2e-5,
      rtol: 1e-5,
    });
    let worst = 0;
    for (const m of adapter.matrices) {
      const w = weights.table.byName.get(`h.${m.layer}.${m.site}.w`)!;
      const dMerged = (i: number, j: number) => want.grads[w.offset + (m.offset + i) * w.shape[1] + j];
      const g = ref.doraGradsFromMerged(lin.get(m.m)!, dMerged);
      for (const [name, wantGrad] of [[m.a, g.dA], [m.b, g.dB], [m.m, g.dm]] as const) {
        const e = adapter.table.byName.get(name)!;
        const gotGrad = got.adapterGrads!.subarray(e.offset, e.offset + e.numel);
        const max = maxAbs(wantGrad);
        assert.ok(max > 0, `${name}: the reference gradient is all zero`);
        // Within 1e-4 of the tensor's largest value, LoRA's tolerance (lora_test.ts).
        compare(`${family} ${name}`, gotGrad, wantGrad, { atol: 1e-4 * max, rtol: 1e-4 });
        for (let i = 0; i < e.numel; i++) worst = Math.max(worst, Math.abs(gotGrad[i] - wantGrad[i]) / max);
      }
    }
    console.log(
      `${family}: DoRA loss max |err| ${losses.maxAbs.toExponential(2)}, max grad error / tensor max ` +
        `${worst.toExponential(2)}, forward + backward ${ms.toFixed(0)} ms`,
    );
    adapter.params!.buffer.destroy();
    weights.params.buffer.destroy();
  });
}

Deno.test("DoRA training lowers the loss and leaves the base weights untouched", async () => {
  const gpu = await getGpu();
  const T = 24;
  const values = initialWeights(llama, 8);
  const weights = createWeights(gpu, llama, values);
  const prepared = await dora.prepare(
    { gpu, base: weights, baseValues: values, trainLength: T, maxLength: T, seed: 2 },
    dora.config.parse({ r: 4, alpha: 8, targets: ["q", "v", "o", "up"] }),
  );
  assert.equal(prepared.weights, weights);
  assert.equal(prepared.trainableParameters, parameterCount(prepared.adapter!.table));
  const before = await readF32(gpu, prepared.adapter!.params!);
  const losses = await trainOnPattern(gpu, prepared, T);
  console.log(`DoRA losses: ${losses[0].toFixed(4)} → ${losses[39].toFixed(4)}`);
  assert.ok(losses[39] < losses[0] - 0.5, `loss ${losses[0]} → ${losses[39]} did not drop by 0.5`);
  assertBitwiseEqual("base weights after DoRA training", await readWeights(gpu, weights), values);
  const after = await readF32(gpu, prepared.adapter!.params!);
  const table = prepared.adapter!.table;
  for (const suffix of [".A", ".B", ".m"]) {
    const moved = table.entries.filter((e) => e.name.endsWith(suffix)).some((e) =>
      after.subarray(e.offset, e.offset + e.numel).some((x, i) => x !== before[e.offset + i])
    );
    assert.ok(moved, `no ${suffix} tensor moved in training`);
  }
  prepared.destroy();
  weights.params.buffer.destroy();
});
