import assert from "node:assert/strict";
import { getGpu } from "../../src/gpu/device.ts";
import { upload } from "../../src/gpu/tensor.ts";
import { parseModelConfig } from "../../src/model/config.ts";
import { parameterCount, type ParamTable, paramTable } from "../../src/model/params.ts";
import { createWeights, initialWeights, readWeights } from "../../src/model/weights.ts";
import {
  createFocusftSetup,
  createFocusftTrainer,
  fastLayers,
  fastParameterCount,
  focusft,
  type FocusftConfig,
  focusftConfigSchema,
  focusftParameterCount,
  isFocusftPrepared,
} from "../../src/methods/focusft.ts";
import { type LoraMatrix, loraParameterCount } from "../../src/methods/lora.ts";
import { TOKEN_PAD, TOKEN_RESPONSE } from "../../src/ops/attention.ts";
import { IGNORE_INDEX } from "../../src/ops/crossentropy.ts";
import { fillUniform, Rng } from "../../src/random/philox.ts";
import {
  fastStream,
  FocusftTrainer,
  lossMaskFromTargets,
  turnsFromLossMask,
} from "../../src/train/focusft_trainer.ts";
import { type HostBatch, Trainer } from "../../src/train/trainer.ts";
import { assertBitwiseEqual, compare } from "../reference/compare.ts";
import { MODE_TURNS, visible } from "../reference/attention.ts";
import { runGraph } from "../reference/graph_run.ts";
import { referenceModel } from "../reference/model.ts";
import { adamwUpdate } from "../reference/train_ops.ts";
import { scaledWeights } from "../reference/tiny_models.ts";

// Awkward sizes; three layers, so the top 35% are layers ⌊3·0.65⌋ = 1 and 2.
const llama = parseModelConfig({
  family: "llama",
  vocabSize: 29,
  maxPositions: 32,
  nLayer: 3,
  nHead: 2,
  nKvHead: 1,
  nEmbd: 24,
  nInner: 20,
});
const gpt2 = parseModelConfig({
  family: "gpt2",
  vocabSize: 31,
  maxPositions: 16,
  nLayer: 3,
  nHead: 2,
  nEmbd: 24,
});

/** An SFT batch: random tokens, targets only where the next token is a response token. */
function sftBatch(V: number, B: number, T: number, lossMask: readonly number[], seed: number): HostBatch {
  const rng = new Rng(seed, 5);
  const tokens = Uint32Array.from({ length: B * T }, () => rng.int(V));
  const targets = Int32Array.from(
    { length: B * T },
    (_, i) => (i % T < T - 1 && lossMask[i + 1] ? tokens[i + 1] : IGNORE_INDEX),
  );
  return { tokens, targets };
}

Deno.test("turn ids and flags follow the loss mask's runs (glm_bidir), and the mask they give is §5.4's", () => {
  // Row 0: context, response, context, response; row 1 starts with a response run; row 2 has padding.
  const lm = [
    [0, 0, 1, 1, 1, 0, 0, 1],
    [1, 1, 0, 1, 0, 0, 0, 0],
    [0, 1, 1, 0, 0, 0, 0, 0],
  ];
  const pad = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
  const { turn, tokenFlags } = turnsFromLossMask(lm.flat(), 3, 8, pad);
  assert.deepEqual(Array.from(turn), [
    0,
    0,
    1,
    1,
    1,
    2,
    2,
    3,
    0,
    0,
    1,
    2,
    3,
    3,
    3,
    3,
    0,
    1,
    1,
    2,
    2,
    2,
    2,
    2,
  ]);
  const R = TOKEN_RESPONSE, P = TOKEN_PAD;
  assert.deepEqual(
    Array.from(tokenFlags),
    [0, 0, R, R, R, 0, 0, R, R, R, 0, R, 0, 0, 0, 0, 0, R, R, 0, 0, 0, P, P],
  );
  // The kernels' turn rule (reference `visible`) equals §5.4 read off the loss mask directly.
  const mask = { modes: [MODE_TURNS], G: 0, turn, flags: tokenFlags };
  for (let b = 0; b < 3; b++) {
    const m = lm[b];
    // Run index of each token and whether it is a response token.
    const run = m.map((_, t) =>
      m.slice(0, t + 1).reduce((n, x, j) => n + (j > 0 && x !== m[j - 1] ? 1 : 0), 0)
    );
    for (let i = 0; i < 8; i++) {
      for (let j = 0; j < 8; j++) {
        const real = !pad[b * 8 + i] && !pad[b * 8 + j];
        const sameContext = run[i] === run[j] && !m[i];
        const sameResponse = run[i] === run[j] && !!m[i] && j <= i;
        const want = real && (sameContext || sameResponse || run[j] < run[i]);
        assert.equal(visible(mask, 8, 0, b, i, j), want, `row ${b}: query ${i}, key ${j}`);
      }
    }
  }
  // From next-token targets: token t is a response token when target t − 1 counts.
  const targets = [5, -100, -100, 7, 8, -100, -100, 9];
  assert.deepEqual(Array.from(lossMaskFromTargets(targets, 2, 4)), [0, 1, 0, 0, 0, 1, 0, 0]);
  assert.throws(() => turnsFromLossMask([0, 1], 1, 3), /expected B·T = 3/);
});

Deno.test("parameter counts: outer = all base (or the outer LoRA), fast = 3·r·(d+d_ff) per layer (Llama), 2·r·(d+4d) (GPT-2)", async () => {
  assert.deepEqual(fastLayers(28, 0.35), [18, 19, 20, 21, 22, 23, 24, 25, 26, 27]);
  assert.deepEqual(fastLayers(3, 0.35), [1, 2]);
  assert.deepEqual(fastLayers(20, 0.35), [13, 14, 15, 16, 17, 18, 19]); // int(20·0.65) = 13 in Python too
  assert.deepEqual(fastLayers(1, 0.35), [0]);
  assert.throws(() => fastLayers(2, 0), /leaves no fast layer/);
  // Qwen2.5-7B: d = 3584, d_ff = 18944, 28 layers → 10 fast layers, ≈ 21.6M fast parameters (spec §5.1).
  const qwen = parseModelConfig({
    family: "llama",
    vocabSize: 152064,
    maxPositions: 32768,
    nLayer: 28,
    nHead: 28,
    nKvHead: 4,
    nEmbd: 3584,
    nInner: 18944,
  });
  const paper = focusftConfigSchema.parse({});
  assert.equal(fastParameterCount(qwen, paper), 3 * 32 * (3584 + 18944) * 10);
  assert.equal(fastParameterCount(qwen, paper), 21_626_880);
  const cfg = focusftConfigSchema.parse({ rank: 3, alpha: 7 });
  assert.equal(fastParameterCount(llama, cfg), 3 * 3 * (24 + 20) * 2);
  assert.equal(fastParameterCount(gpt2, cfg), 3 * (24 + 4 * 24) * 2 * 2);
  assert.equal(focusftParameterCount(llama, cfg), parameterCount(paramTable(llama)));
  const loraCfg = focusftConfigSchema.parse({
    rank: 3,
    outer: "lora",
    outerLora: { r: 2, targets: ["q", "v"] },
  });
  // q: 24 → 24, v: 24 → 12 (one KV head of 12), every layer.
  assert.equal(focusftParameterCount(llama, loraCfg), 3 * 2 * ((24 + 24) + (24 + 12)));
  assert.equal(focusftParameterCount(llama, loraCfg), loraParameterCount(llama, loraCfg.outerLora));
  // The allocated tables hold exactly these counts.
  const gpu = await getGpu();
  const { setup, evalAdapter } = createFocusftSetup(gpu, llama, loraCfg, 1);
  const fastNumel = [...setup.fastA.map((a) => a.entry), ...setup.fastB].reduce((n, e) => n + e.numel, 0);
  assert.equal(fastNumel, fastParameterCount(llama, loraCfg));
  assert.equal(parameterCount(evalAdapter!.table), focusftParameterCount(llama, loraCfg));
  assert.equal(parameterCount(setup.adapter.table), fastNumel + parameterCount(evalAdapter!.table));
  setup.adapter.params!.buffer.destroy();
});

// ---- the float64 reference of one FocuSFT step (fast weights merged into W: W + s·B·A)

interface RefLora {
  matrices: readonly LoraMatrix[];
  r: number;
  scale: number;
}

function mergeInto(
  merged: Float64Array,
  baseTable: ParamTable,
  values: ArrayLike<number>,
  table: ParamTable,
  lora: RefLora,
): void {
  for (const m of lora.matrices) {
    const w = baseTable.byName.get(`h.${m.layer}.${m.site}.w`)!;
    const a = table.byName.get(m.a)!.offset, b = table.byName.get(m.b)!.offset;
    for (let i = 0; i < m.out; i++) {
      for (let j = 0; j < m.in; j++) {
        let sum = 0;
        for (let k = 0; k < lora.r; k++) sum += values[b + i * lora.r + k] * values[a + k * m.in + j];
        merged[w.offset + (m.offset + i) * w.shape[1] + j] += lora.scale * sum;
      }
    }
  }
}

// dB = s·dW·Aᵀ and dA = s·Bᵀ·dW from the merged model's weight gradient dW.
function loraGrads(
  out: Float64Array,
  dW: Float64Array,
  baseTable: ParamTable,
  values: ArrayLike<number>,
  table: ParamTable,
  lora: RefLora,
): void {
  for (const m of lora.matrices) {
    const w = baseTable.byName.get(`h.${m.layer}.${m.site}.w`)!;
    const a = table.byName.get(m.a)!.offset, b = table.byName.get(m.b)!.offset;
    const g = (i: number, j: number) => dW[w.offset + (m.offset + i) * w.shape[1] + j];
    for (let i = 0; i < m.out; i++) {
      for (let k = 0; k < lora.r; k++) {
        let sum = 0;
        for (let j = 0; j < m.in; j++) sum += g(i, j) * values[a + k * m.in + j];
        out[b + i * lora.r + k] = lora.scale * sum;
      }
    }
    for (let k = 0; k < lora.r; k++) {
      for (let j = 0; j < m.in; j++) {
        let sum = 0;
        for (let i = 0; i < m.out; i++) sum += values[b + i * lora.r + k] * g(i, j);
        out[a + k * m.in + j] = lora.scale * sum;
      }
    }
  }
}

interface RefStep {
  innerLosses: number[];
  outerLoss: number;
  /** The adapter's values after the inner steps (outer LoRA unchanged, fast weights φ*). */
  phi: Float64Array;
  baseGrads: Float64Array;
  adapterGrads: Float64Array;
}

/** One FocuSFT step in float64: reset φ, inner SGD steps with per-tensor clipping, the outer gradients. */
function referenceStep(
  config: typeof llama,
  base: Float32Array,
  adapterValues: Float32Array,
  table: ParamTable,
  fast: RefLora,
  outer: RefLora | null,
  cfg: FocusftConfig,
  batch: HostBatch,
  B: number,
  T: number,
  seed: number,
  step: number,
  outerPhi?: ArrayLike<number>,
): RefStep {
  const baseTable = paramTable(config);
  const count = batch.targets.filter((t) => t !== IGNORE_INDEX).length;
  const weights = Float64Array.from(batch.targets, (t) => (t === IGNORE_INDEX ? 0 : 1 / count));
  const refBatch = { tokens: batch.tokens, targets: batch.targets, weights };
  const { turn, tokenFlags } = turnsFromLossMask(lossMaskFromTargets(batch.targets, B, T), B, T);
  const H = config.nHead;
  const mask = { modes: new Array(H).fill(MODE_TURNS), G: 0, turn, flags: tokenFlags };
  const phi = Float64Array.from(adapterValues);
  // Reset: A from Philox (seed, stream of (step, matrix)), B = 0.
  fast.matrices.forEach((m, i) => {
    const a = table.byName.get(m.a)!, b = table.byName.get(m.b)!;
    const bound = 1 / Math.sqrt(m.in);
    phi.set(
      fillUniform(new Float32Array(a.numel), seed, fastStream(step, i, fast.matrices.length), -bound, bound),
      a.offset,
    );
    phi.fill(0, b.offset, b.offset + b.numel);
  });
  const run = (values: ArrayLike<number> = phi) => {
    const merged = Float64Array.from(base);
    mergeInto(merged, baseTable, values, table, fast);
    if (outer) mergeInto(merged, baseTable, values, table, outer);
    return referenceModel(config, merged, refBatch, B, T, 1, { mask });
  };
  const innerLosses: number[] = [];
  for (let k = 0; k < cfg.innerSteps; k++) {
    const ref = run();
    innerLosses.push(ref.lossSum / count);
    const g = new Float64Array(table.size);
    loraGrads(g, ref.grads, baseTable, phi, table, fast);
    for (const m of fast.matrices) {
      for (const e of [table.byName.get(m.a)!, table.byName.get(m.b)!]) {
        let s = 0;
        for (let i = e.offset; i < e.offset + e.numel; i++) s += g[i] * g[i];
        const norm = Math.sqrt(s);
        const factor = cfg.innerClip > 0 && norm > cfg.innerClip ? cfg.innerClip / (norm + 1e-12) : 1;
        for (let i = e.offset; i < e.offset + e.numel; i++) phi[i] -= cfg.innerLr * g[i] * factor;
      }
    }
  }
  // The outer pass with the given φ* (the device's, to check the outer pass on its own), else ours.
  const used = outerPhi ?? phi;
  const ref = run(used);
  const adapterGrads = new Float64Array(table.size);
  loraGrads(adapterGrads, ref.grads, baseTable, used, table, fast);
  if (outer) loraGrads(adapterGrads, ref.grads, baseTable, used, table, outer);
  return { innerLosses, outerLoss: ref.lossSum / count, phi, baseGrads: ref.grads, adapterGrads };
}

/** Compares tensor by tensor within `rel` of each tensor's largest reference value; returns the worst. */
function compareTensors(
  what: string,
  got: Float32Array,
  want: Float64Array,
  entries: readonly { name: string; offset: number; numel: number }[],
  rel: number,
): number {
  let worst = 0;
  for (const e of entries) {
    const w = want.subarray(e.offset, e.offset + e.numel);
    const g = got.subarray(e.offset, e.offset + e.numel);
    const max = Math.max(...Array.from(w, Math.abs));
    assert.ok(max > 0, `${what} ${e.name}: the reference is all zero`);
    compare(`${what} ${e.name}`, g, w, { atol: rel * max, rtol: rel });
    for (let i = 0; i < e.numel; i++) worst = Math.max(worst, Math.abs(g[i] - w[i]) / max);
  }
  return worst;
}

// Row 0: context 0–2, response 3–5, context 6–7, response 8–10; row 1: context 0–5, response 6–10.
const T = 11;
const twoRows = [
  [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1],
  [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
].flat();

for (const [family, config, outerKind] of [["Llama", llama, "full"], ["GPT-2", gpt2, "lora"]] as const) {
  Deno.test(`${family}, outer ${outerKind}: one FocuSFT step equals the float64 reference (turn mask, 2 inner steps)`, async () => {
    const gpu = await getGpu();
    const B = 2, seed = 9;
    const values = scaledWeights(config, 4);
    const weights = createWeights(gpu, config, values);
    const cfg = focusftConfigSchema.parse({
      rank: 3,
      alpha: 7,
      outer: outerKind,
      outerLora: { r: 2, alpha: 5, targets: ["q", "v", "o"] },
    });
    const prepared = await focusft.prepare(
      { gpu, base: weights, baseValues: values, trainLength: T, maxLength: T, seed },
      cfg,
    );
    assert.ok(isFocusftPrepared(prepared));
    assert.equal(prepared.details.trainer, "focusft");
    const { focusft: setup } = prepared;
    const table = setup.adapter.table;
    const adapter0 = new Float32Array(table.size);
    // Random outer LoRA values (B ≠ 0, so its A receives gradient too).
    if (outerKind === "lora") {
      const rng = new Rng(31, 0);
      const host = new Float32Array(table.size);
      for (const e of setup.outerEntries) {
        for (let i = 0; i < e.numel; i++) {
          host[e.offset + i] = (rng.uniform() - 0.5) * (e.name.endsWith(".B") ? 0.6 : 0.8);
        }
      }
      upload(gpu, setup.adapter.params!, host);
      adapter0.set(host);
    }
    const trainer = await createFocusftTrainer(gpu, prepared, {
      B,
      T,
      optimizer: { lr: 1e-3, maxGradNorm: 1, weightDecay: 0.01 },
    });
    const batch = sftBatch(config.vocabSize, B, T, twoRows, 3);
    const t0 = performance.now();
    await trainer.step(batch);
    const [outerLoss] = await trainer.losses();
    const [inner] = await trainer.innerLosses();
    const ms = performance.now() - t0;
    const s = { matrices: [] as LoraMatrix[], r: cfg.rank, scale: cfg.alpha / cfg.rank };
    const { setup: again, fast, outer } = createFocusftSetup(gpu, config, cfg, seed);
    again.adapter.params!.buffer.destroy();
    s.matrices = fast;
    const outerRef = outerKind === "lora"
      ? { matrices: outer, r: cfg.outerLora.r, scale: cfg.outerLora.alpha / cfg.outerLora.r }
      : null;
    const fastEntries = [...setup.fastA.map((a) => a.entry), ...setup.fastB];
    const phi = await trainer.adapterValues();
    // Two references: all in float64 (inner losses, φ*, and the outer loss the chain gives), and the outer
    // pass alone on the device's φ* (its loss and gradients), since two SGD steps of lr 1 amplify
    // f32 rounding in φ* into the outer gradients (≈ 1e-4 of their max when all in float64).
    const own = referenceStep(config, values, adapter0, table, s, outerRef, cfg, batch, B, T, seed, 1);
    // (The device's outer LoRA has taken its AdamW step since; the outer pass saw its initial values.)
    const phiOuter = phi.slice();
    phiOuter.set(adapter0.subarray(0, setup.outerSize));
    const ref = referenceStep(
      config,
      values,
      adapter0,
      table,
      s,
      outerRef,
      cfg,
      batch,
      B,
      T,
      seed,
      1,
      phiOuter,
    );
    console.log(
      `${family}: inner losses ${inner.map((x) => x.toFixed(6)).join(", ")} → outer ${
        outerLoss.toFixed(6)
      } ` +
        `(float64 ${own.innerLosses.map((x) => x.toFixed(6)).join(", ")} → ${own.outerLoss.toFixed(6)}; ` +
        `outer on the device's φ* ${ref.outerLoss.toFixed(6)}); ${ms.toFixed(0)} ms`,
    );
    compare(`${family} inner losses`, inner, own.innerLosses, { atol: 0, rtol: 2e-6 });
    compare(`${family} outer loss (float64 chain)`, [outerLoss], [own.outerLoss], { atol: 0, rtol: 3e-5 });
    compare(`${family} outer loss (on the device's φ*)`, [outerLoss], [ref.outerLoss], {
      atol: 0,
      rtol: 2e-6,
    });
    // The inner steps do adapt: the loss with φ* is below the loss at the reset.
    assert.ok(outerLoss < inner[0], `outer loss ${outerLoss} not below the first inner loss ${inner[0]}`);
    const phiErr = compareTensors(`${family} φ*`, phi, own.phi, fastEntries, 2e-5);
    let gradErr: number;
    if (outerKind === "full") {
      const grads = await trainer.grads();
      gradErr = compareTensors(`${family} base gradient`, grads, ref.baseGrads, weights.table.entries, 1e-4);
      // AdamW on every base tensor with the device's own gradients (float64 AdamW on them).
      const want = Float64Array.from(values);
      const config0 = trainer.config;
      adamwUpdate(
        want,
        new Float64Array(want.length),
        new Float64Array(want.length),
        grads,
        trainer.outer.table.entries.map((e) => ({
          ...e,
          lrScale: e.lrScale,
          weightDecay: e.weightDecay ?? 0.01,
        })),
        { ...config0, step: 1, maxNorm: config0.maxGradNorm },
      );
      assert.equal(
        trainer.outer.table.entries.length,
        weights.table.entries.length,
        "every base tensor trains",
      );
      compare(`${family} base after AdamW`, await readWeights(gpu, weights), want, {
        atol: 2e-7,
        rtol: 1e-6,
      });
    } else {
      // The fast weights' gradients in the outer pass are computed too (and discarded); the outer
      // LoRA's are what AdamW reads.
      const grads = await trainer.grads();
      gradErr = compareTensors(
        `${family} outer LoRA gradient`,
        grads,
        ref.adapterGrads,
        setup.outerEntries,
        1e-4,
      );
      const want = Float64Array.from(adapter0);
      adamwUpdate(
        want,
        new Float64Array(want.length),
        new Float64Array(want.length),
        Float64Array.from(grads, (g, i) => (i < setup.outerSize ? g : 0)),
        trainer.outer.table.entries.map((e) => ({ ...e, lrScale: 1, weightDecay: e.weightDecay ?? 0.01 })),
        { ...trainer.config, step: 1, maxNorm: trainer.config.maxGradNorm },
      );
      const got = phi.subarray(0, setup.outerSize);
      compare(`${family} outer LoRA after AdamW`, got, want.subarray(0, setup.outerSize), {
        atol: 2e-7,
        rtol: 1e-6,
      });
      assertBitwiseEqual(`${family} base weights (frozen)`, await readWeights(gpu, weights), values);
    }
    console.log(
      `${family}: max φ* error / tensor max ${phiErr.toExponential(2)}, gradient ${gradErr.toExponential(2)}`,
    );
    trainer.destroy();
    prepared.destroy();
    weights.params.buffer.destroy();
  });
}

Deno.test("with 0 inner steps the step is exactly full fine-tuning (bitwise), and the reset follows Philox (seed, step)", async () => {
  const gpu = await getGpu();
  const B = 2, seed = 5;
  const values = scaledWeights(llama, 6);
  const cfg = focusftConfigSchema.parse({ rank: 3, alpha: 7, innerSteps: 0 });
  const wF = createWeights(gpu, llama, values);
  const wT = createWeights(gpu, llama, values);
  const prepared = await focusft.prepare(
    { gpu, base: wF, baseValues: values, trainLength: T, maxLength: T, seed },
    cfg,
  );
  assert.ok(isFocusftPrepared(prepared));
  const optimizer = { lr: 1e-2, maxGradNorm: 1 };
  const ft = await createFocusftTrainer(gpu, prepared, { B, T, optimizer });
  const plain = await Trainer.create(gpu, wT, { B, T, optimizer, mask: { mode: "turns" } });
  for (let step = 0; step < 2; step++) {
    const batch = sftBatch(llama.vocabSize, B, T, twoRows, 10 + step);
    await ft.step(batch);
    await plain.step({ ...batch, ...turnsFromLossMask(lossMaskFromTargets(batch.targets, B, T), B, T) });
  }
  assertBitwiseEqual("loss sums", await ft.lossSums(), await plain.lossSums());
  assertBitwiseEqual("weights after 2 steps", await readWeights(gpu, wF), await readWeights(gpu, wT));
  // The fast weights now hold step 2's reset: A from stream (step 2, matrix), B = 0.
  const phi = await ft.adapterValues();
  const setup = prepared.focusft;
  setup.fastA.forEach(({ entry, bound }, m) => {
    const want = fillUniform(
      new Float32Array(entry.numel),
      seed,
      fastStream(2, m, setup.fastA.length),
      -bound,
      bound,
    );
    // The device rounds (hi − lo)·u and then the sum in f32 (the host rounds once): within two
    // roundings at the scale of hi − lo.
    compare(`reset ${entry.name}`, phi.subarray(entry.offset, entry.offset + entry.numel), want, {
      atol: 2 * bound * 2 ** -23,
      rtol: 0,
    });
    const step1 = fillUniform(
      new Float32Array(entry.numel),
      seed,
      fastStream(1, m, setup.fastA.length),
      -bound,
      bound,
    );
    assert.notDeepEqual(Array.from(step1), Array.from(want), "a fresh A every step");
  });
  for (const e of setup.fastB) assert.ok(phi.subarray(e.offset, e.offset + e.numel).every((x) => x === 0));
  ft.destroy();
  prepared.destroy();
  for (const w of [wF, wT]) w.params.buffer.destroy();
});

Deno.test("three FocuSFT steps repeat bitwise; evaluation at init is the base model; 20 steps lower the response loss", async () => {
  const gpu = await getGpu();
  const B = 1, seed = 3;
  const values = initialWeights(llama, 8);
  const cfg = focusftConfigSchema.parse({ rank: 4, alpha: 8 });
  // Every row: a context of 8 random tokens, then the response copies it (T = 17).
  const T2 = 17;
  const lm = Array.from({ length: T2 }, (_, t) => (t >= 9 ? 1 : 0));
  const copyBatch = (s: number): HostBatch => {
    const rng = new Rng(s, 9);
    const ctx = Array.from({ length: 8 }, () => 3 + rng.int(llama.vocabSize - 3));
    const tokens = Uint32Array.from([...ctx, 1, ...ctx]);
    const targets = Int32Array.from(
      { length: T2 },
      (_, i) => (i < T2 - 1 && lm[i + 1] ? tokens[i + 1] : IGNORE_INDEX),
    );
    return { tokens, targets };
  };
  const run = async (
    steps: number,
    batches: (s: number) => HostBatch,
    lr: number,
    recompute = false,
    innerFromFastLayers = true,
  ) => {
    const weights = createWeights(gpu, llama, values);
    const prepared = await focusft.prepare(
      { gpu, base: weights, baseValues: values, trainLength: T2, maxLength: T2, seed },
      cfg,
    );
    const trainer = await createFocusftTrainer(gpu, prepared, {
      B,
      T: T2,
      optimizer: { lr, maxGradNorm: 1 },
      recompute,
      innerFromFastLayers,
    });
    const t0 = performance.now();
    for (let s = 0; s < steps; s++) await trainer.step(batches(s));
    const out = {
      sums: await trainer.lossSums(),
      losses: await trainer.losses(),
      inner: await trainer.innerLosses(),
      weights: await readWeights(gpu, weights),
      phi: await trainer.adapterValues(),
      ms: (performance.now() - t0) / steps,
    };
    trainer.destroy();
    prepared.destroy();
    weights.params.buffer.destroy();
    return out;
  };
  const a = await run(3, (s) => copyBatch(100 + s), 3e-3);
  const b = await run(3, (s) => copyBatch(100 + s), 3e-3);
  assertBitwiseEqual("loss sums of 3 steps", a.sums, b.sums);
  assertBitwiseEqual("inner losses", Float32Array.from(a.inner.flat()), Float32Array.from(b.inner.flat()));
  assertBitwiseEqual("weights after 3 steps", a.weights, b.weights);
  assertBitwiseEqual("fast weights after 3 steps", a.phi, b.phi);
  // Recomputing activations in the backward changes nothing either.
  const c = await run(3, (s) => copyBatch(100 + s), 3e-3, true);
  assertBitwiseEqual("loss sums with recompute", c.sums, a.sums);
  assertBitwiseEqual("weights with recompute", c.weights, a.weights);
  // The spec's no_grad trick (inner passes and the outer forward skip block 0, below the fast layers)
  // gives what full passes give, with and without recompute.
  assert.deepEqual(fastLayers(llama.nLayer, cfg.layerFraction), [1, 2]);
  for (const recompute of [false, true]) {
    const d = await run(3, (s) => copyBatch(100 + s), 3e-3, recompute, false);
    const what = `full inner passes${recompute ? " with recompute" : ""}`;
    assertBitwiseEqual(`loss sums, ${what}`, d.sums, a.sums);
    assertBitwiseEqual(
      `inner losses, ${what}`,
      Float32Array.from(d.inner.flat()),
      Float32Array.from(a.inner.flat()),
    );
    assertBitwiseEqual(`weights, ${what}`, d.weights, a.weights);
    assertBitwiseEqual(`fast weights, ${what}`, d.phi, a.phi);
  }
  console.log(`3 steps: ${a.ms.toFixed(0)} ms per step (B 1, T ${T2})`);

  // Evaluation: the fast weights are gone; the base (or base + the zero-initialised outer LoRA) runs
  // causally and reproduces the base logits bitwise.
  const weights = createWeights(gpu, llama, values);
  const loraPrepared = await focusft.prepare(
    { gpu, base: weights, baseValues: values, trainLength: T2, maxLength: T2, seed },
    focusftConfigSchema.parse({
      rank: 4,
      outer: "lora",
      outerLora: { r: 3, targets: ["q", "v", "o", "up"] },
    }),
  );
  assert.deepEqual(loraPrepared.evalMask, { mode: "causal" });
  assert.deepEqual(loraPrepared.trainMask, { mode: "turns" });
  const probe = { ...copyBatch(1), weights: new Float32Array(T2).fill(1) };
  const base = await runGraph(gpu, weights, { B, T: T2, training: false }, probe, { readLogits: true });
  const evald = await runGraph(
    gpu,
    loraPrepared.weights,
    { B, T: T2, training: false, adapter: loraPrepared.adapter!, mask: loraPrepared.evalMask },
    probe,
    { readLogits: true },
  );
  assertBitwiseEqual("eval logits at init (outer LoRA)", evald.logits!, base.logits!);
  const fullPrepared = await focusft.prepare(
    { gpu, base: weights, baseValues: values, trainLength: T2, maxLength: T2, seed },
    cfg,
  );
  assert.equal(fullPrepared.adapter, null, "no adapter at evaluation with a full outer step");
  assert.equal(fullPrepared.weights, weights);
  loraPrepared.destroy();
  fullPrepared.destroy();
  weights.params.buffer.destroy();

  // Training: 20 steps on copy tasks lower the outer (response) loss.
  const t = await run(20, (s) => copyBatch(200 + (s % 4)), 3e-3);
  const first = t.losses.slice(0, 4).reduce((x, y) => x + y) / 4;
  const last = t.losses.slice(16).reduce((x, y) => x + y) / 4;
  console.log(
    `20 steps: outer loss ${first.toFixed(4)} → ${
      last.toFixed(4)
    } (mean of the first and last 4); inner at ` +
      `step 1 ${t.inner[0].map((x) => x.toFixed(4)).join(" → ")}; ${t.ms.toFixed(0)} ms per step`,
  );
  assert.ok(last < first - 0.3, `response loss ${first} → ${last} did not drop by 0.3`);
});

Deno.test("FocusftTrainer refuses bad setups and batches", async () => {
  const gpu = await getGpu();
  const values = initialWeights(llama, 1);
  const weights = createWeights(gpu, llama, values);
  const prepared = await focusft.prepare(
    { gpu, base: weights, baseValues: values, trainLength: 8, maxLength: 8, seed: 1 },
    focusftConfigSchema.parse({ rank: 2 }),
  );
  assert.ok(isFocusftPrepared(prepared));
  await assert.rejects(
    () =>
      FocusftTrainer.create(gpu, weights, { ...prepared.focusft, innerSteps: -1 }, {
        B: 1,
        T: 8,
        optimizer: { lr: 1 },
      }),
    /innerSteps = -1/,
  );
  await assert.rejects(
    () =>
      createFocusftTrainer(gpu, { ...prepared, focusft: undefined } as never, {
        B: 1,
        T: 8,
        optimizer: { lr: 1 },
      }),
    /not FocuSFT's/,
  );
  const trainer = await createFocusftTrainer(gpu, prepared, { B: 1, T: 8, optimizer: { lr: 1 } });
  await assert.rejects(
    () => trainer.step({ tokens: new Uint32Array(8), targets: new Int32Array(8).fill(IGNORE_INDEX) }),
    /nothing to train on/,
  );
  assert.throws(() => fastStream(2 ** 31, 0, 2), /no fast-weight stream/);
  trainer.destroy();
  prepared.destroy();
  weights.params.buffer.destroy();
});
