import assert from "node:assert/strict";
import type { Gpu } from "../../src/gpu/device.ts";
import { getGpu } from "../../src/gpu/device.ts";
import { readF32, upload } from "../../src/gpu/tensor.ts";
import {
  dims,
  type Gpt2Config,
  type LlamaConfig,
  type ModelConfig,
  parseModelConfig,
} from "../../src/model/config.ts";
import { parameterCount } from "../../src/model/params.ts";
import { createWeights, initialWeights, type ModelWeights, readWeights } from "../../src/model/weights.ts";
import { headModes } from "../../src/ops/attention.ts";
import { extendedValues, WPE_STREAM } from "../../src/methods/extend.ts";
import type { LoraMatrix } from "../../src/methods/lora.ts";
import {
  interpolationFactor,
  longlora,
  type LongloraConfig,
  longloraConfigSchema,
  longloraParameterCount,
  shiftedGroupsMask,
} from "../../src/methods/longlora.ts";
import type { PreparedMethod } from "../../src/methods/method.ts";
import { fillNormal, Rng } from "../../src/random/philox.ts";
import { randomBatch, runGraph, trainOnPattern } from "../reference/graph_run.ts";
import { MODE_GROUPS, MODE_GROUPS_SHIFTED } from "../reference/attention.ts";
import { assertBitwiseEqual, compare } from "../reference/compare.ts";
import { hyloradaRefHooks } from "../reference/hylorada.ts";
import { referenceModel } from "../reference/model.ts";
import { scaledWeights } from "../reference/tiny_models.ts";

// Awkward sizes: widths that are multiples of no tile; D = 12.
const gpt2 = parseModelConfig({
  family: "gpt2",
  vocabSize: 37,
  maxPositions: 16,
  nLayer: 2,
  nHead: 3,
  nEmbd: 36,
}) as Gpt2Config;
const llama = parseModelConfig({
  family: "llama",
  vocabSize: 41,
  maxPositions: 32,
  nLayer: 2,
  nHead: 4,
  nKvHead: 2,
  nEmbd: 48,
  nInner: 44,
}) as LlamaConfig;

type Prepared = PreparedMethod & { adapter: { matrices: LoraMatrix[]; values: Float32Array } };

async function prepare(
  gpu: Gpu,
  config: ModelConfig,
  values: Float32Array,
  raw: Partial<LongloraConfig>,
  trainLength: number,
  maxLength: number,
): Promise<{ base: ModelWeights; prepared: Prepared; cfg: LongloraConfig }> {
  const base = createWeights(gpu, config, values);
  const cfg = longloraConfigSchema.parse(raw);
  const prepared = await longlora.prepare(
    { gpu, base, baseValues: values, trainLength, maxLength, seed: 3 },
    cfg,
  );
  return { base, prepared: prepared as Prepared, cfg };
}

Deno.test("LongLoRA parameter count: r·L·Σ(d_in+d_out) + V·d + norms + new wpe rows, formula and table", async () => {
  // LLaMA-2-7B at r = 8 (spec §10): 8.4M + 131M + 0.27M.
  const llama7b = parseModelConfig({
    family: "llama",
    vocabSize: 32000,
    maxPositions: 4096,
    nLayer: 32,
    nHead: 32,
    nKvHead: 32,
    nEmbd: 4096,
    nInner: 11008,
  });
  const d = longloraConfigSchema.parse({});
  assert.equal(longloraParameterCount(llama7b, d), 8 * 32 * 4 * 8192 + 32000 * 4096 + 65 * 4096);
  assert.equal(8 * 32 * 4 * 8192, 8_388_608);
  assert.equal(65 * 4096, 266_240);
  // Tiny GPT-2 for 24 tokens: q, k, v, o 36→36: 8·2·4·72; wte 37·36; LayerNorm 2·5·36; 8 new rows·36.
  const gpu = await getGpu();
  const wantGpt2 = 8 * 2 * 4 * 72 + 37 * 36 + 2 * 5 * 36 + 8 * 36;
  const g = await prepare(gpu, gpt2, initialWeights(gpt2, 1), {}, 24, 24);
  assert.equal(longloraParameterCount(gpt2, g.cfg, { trainLength: 24, maxLength: 24 }), wantGpt2);
  assert.equal(g.prepared.trainableParameters, wantGpt2);
  const table = g.prepared.weights.table;
  assert.equal(parameterCount(g.prepared.adapter!.table), 8 * 2 * 4 * 72);
  assert.deepEqual(g.prepared.trainable(table.byName.get("wpe")!), { from: 16 * 36, count: 8 * 36 });
  assert.equal(g.prepared.trainable(table.byName.get("wte")!), true);
  assert.equal(g.prepared.trainable(table.byName.get("h.1.ln2.b")!), true);
  assert.equal(g.prepared.trainable(table.byName.get("h.0.qkv.w")!), false);
  assert.equal(g.prepared.details.lmHeadTrains, true, "GPT-2's head is tied to wte");
  g.prepared.destroy();
  g.base.params.buffer.destroy();
  // Tiny Llama: q 48→48, k and v 48→24, o 48→48: 8·2·(96+72+72+96); wte 41·48; RMSNorm 5·48; lm head frozen.
  const wantLlama = 8 * 2 * 336 + 41 * 48 + 5 * 48;
  const l = await prepare(gpu, llama, initialWeights(llama, 1), {}, 32, 80);
  assert.equal(longloraParameterCount(llama, l.cfg, { trainLength: 32, maxLength: 80 }), wantLlama);
  assert.equal(l.prepared.trainableParameters, wantLlama);
  assert.equal(l.prepared.trainable(l.prepared.weights.table.byName.get("lmHead.w")!), false);
  l.prepared.destroy();
  l.base.params.buffer.destroy();
  console.log(
    `LongLoRA counts: LLaMA-2-7B ${
      longloraParameterCount(llama7b, d)
    }; GPT-2 ${wantGpt2}; Llama ${wantLlama}`,
  );
});

Deno.test("LongLoRA S²-Attn group size G = N/4 with errors naming the field; evaluation is causal", () => {
  assert.deepEqual(shiftedGroupsMask(32), { mode: "shifted-groups", groupSize: 8 });
  assert.deepEqual(shiftedGroupsMask(8192), { mode: "shifted-groups", groupSize: 2048 });
  assert.throws(() => shiftedGroupsMask(18), /trainLength 18 must be a positive multiple of 4/);
  assert.throws(() => shiftedGroupsMask(20), /G = N\/4 = 5, which must be even/);
});

Deno.test("LongLoRA position interpolation: Llama gets rope linear ⌈maxLength/context⌉; GPT-2 gets new wpe rows", async () => {
  const gpu = await getGpu();
  assert.equal(interpolationFactor(llama, 32), null);
  assert.equal(interpolationFactor(llama, 80), 3);
  assert.equal(interpolationFactor(llama, 64), 2);
  assert.equal(interpolationFactor(gpt2, 4096), null);
  const values = scaledWeights(llama, 2);
  const l = await prepare(gpu, llama, values, {}, 32, 80);
  const rope = l.prepared.weights.config.family === "llama" ? l.prepared.weights.config.rope : null;
  assert.equal(rope?.type, "linear");
  assert.equal(rope?.factor, 3);
  assert.equal(llama.rope.type, "none", "the base config is not modified");
  assert.notEqual(l.prepared.weights.params.buffer, l.base.params.buffer, "a copy: wte and norms train");
  assertBitwiseEqual(
    "PI weights = base values (RoPE has no parameters)",
    await readWeights(gpu, l.prepared.weights),
    values,
  );
  // The scaled rotation changes the logits (positions are divided by 3).
  const B = 1, T = 16;
  const batch = randomBatch(41, T, 4);
  const base = await runGraph(gpu, l.base, { B, T, training: false }, batch, { readLogits: true });
  const pi = await runGraph(
    gpu,
    l.prepared.weights,
    { B, T, training: false, adapter: l.prepared.adapter! },
    batch,
    {
      readLogits: true,
    },
  );
  const ref = referenceModel(l.prepared.weights.config, values, { ...batch }, B, T, 1);
  compare("PI logits vs float64 (rope linear ×3)", pi.logits!, ref.logits, { atol: 1e-4, rtol: 1e-4 });
  assert.ok(pi.logits!.some((x, i) => Math.abs(x - base.logits![i]) > 1e-3), "PI must change the logits");
  l.prepared.destroy();
  l.base.params.buffer.destroy();
  // A base that is already scaled is refused.
  const yarnBase = parseModelConfig({
    ...llama,
    rope: { type: "yarn", factor: 2, originalMaxPositions: 16 },
  });
  const w = createWeights(gpu, yarnBase, initialWeights(yarnBase, 1));
  await assert.rejects(
    () =>
      longlora.prepare(
        { gpu, base: w, baseValues: initialWeights(yarnBase, 1), trainLength: 32, maxLength: 80, seed: 1 },
        longloraConfigSchema.parse({}),
      ),
    /already uses rope.type "yarn"/,
  );
  w.params.buffer.destroy();
  // GPT-2: rows 0–15 copied, rows 16–23 N(0, 0.02²) from Philox (seed, WPE_STREAM).
  const gv = initialWeights(gpt2, 3);
  const g = await prepare(gpu, gpt2, gv, {}, 24, 24);
  const ext = await readWeights(gpu, g.prepared.weights);
  const wpe = g.prepared.weights.table.byName.get("wpe")!;
  const baseWpe = g.base.table.byName.get("wpe")!;
  assertBitwiseEqual(
    "copied wpe rows",
    ext.subarray(wpe.offset, wpe.offset + 16 * 36),
    gv.subarray(baseWpe.offset, baseWpe.offset + 16 * 36),
  );
  const fresh = fillNormal(new Float32Array(8 * 36), 3, WPE_STREAM, 0, 0.02, 16 * 36);
  assertBitwiseEqual("new wpe rows", ext.subarray(wpe.offset + 16 * 36, wpe.offset + wpe.numel), fresh);
  const ev = extendedValues(gpt2, { ...gpt2, maxPositions: 24 }, gv, 3);
  assertBitwiseEqual("extendedValues = the device copy", ext, ev);
  const std = Math.sqrt(fresh.reduce((a, x) => a + x * x, 0) / fresh.length);
  assert.ok(std > 0.015 && std < 0.025, `new rows' std ${std} should be about 0.02`);
  g.prepared.destroy();
  g.base.params.buffer.destroy();
});

Deno.test("LongLoRA at init (B = 0, eval mask) gives the base logits bitwise, also on an extended table", async () => {
  const gpu = await getGpu();
  const B = 2, T = 16, N = B * T;
  for (const [config, maxLength] of [[gpt2, 24], [llama, 32]] as const) {
    const { base, prepared } = await prepare(gpu, config, scaledWeights(config, 5), {}, 16, maxLength);
    assert.deepEqual(prepared.evalMask, { mode: "causal" });
    const batch = randomBatch(config.vocabSize, N, 9);
    const b = await runGraph(gpu, base, { B, T, training: false }, batch, { readLogits: true });
    const i = await runGraph(
      gpu,
      prepared.weights,
      {
        B,
        T,
        training: false,
        adapter: prepared.adapter!,
        mask: prepared.evalMask,
      },
      batch,
      { readLogits: true },
    );
    assertBitwiseEqual(`${config.family} logits at init`, i.logits!, b.logits!);
    prepared.destroy();
    base.params.buffer.destroy();
  }
});

for (const [family, config, T] of [["GPT-2", gpt2, 24], ["Llama", llama, 16]] as const) {
  Deno.test(`${family}: LongLoRA's training graph runs S²-Attn; LoRA, embedding and norm gradients match float64`, async () => {
    const gpu = await getGpu();
    const B = 2, N = B * T;
    const values = scaledWeights(config, 7);
    const { base, prepared, cfg } = await prepare(gpu, config, values, { r: 3, alpha: 7 }, T, T);
    const G = T / 4;
    assert.deepEqual(prepared.trainMask, { mode: "shifted-groups", groupSize: G });
    const adapter = prepared.adapter!;
    // Random B so every path carries signal.
    const av = adapter.values.slice();
    const rng = new Rng(21, 0);
    for (const m of adapter.matrices) {
      const e = adapter.table.byName.get(m.b)!;
      for (let i = 0; i < e.numel; i++) av[e.offset + i] = (rng.uniform() - 0.5) * 0.6;
    }
    upload(gpu, adapter.params!, av);
    const batch = randomBatch(config.vocabSize, N, 3);
    const gradScale = 1 / 13;
    const opts = { B, T, training: true, adapter, trainable: prepared.trainable };
    const run = await runGraph(gpu, prepared.weights, { ...opts, mask: prepared.trainMask }, batch, {
      gradScale,
    });
    const causal = await runGraph(gpu, prepared.weights, opts, batch, { gradScale });
    // Float64: the same LoRA (y += (α/r)·B·A·x) under the same per-head shifted-group mask.
    const weightsNow = await readWeights(gpu, prepared.weights);
    const refGrads = new Float64Array(adapter.table.size);
    const hooks = hyloradaRefHooks({
      offsets: new Map(adapter.table.entries.map((e) => [e.name, e.offset])),
      values: av,
      matrices: adapter.matrices.map((m) => ({ ...m, slot: 0 })),
      r: cfg.r,
      scale: cfg.alpha / cfg.r,
      positionBias: false,
      landmarks: false,
      K: 0,
      B,
      T,
      C: dims(config).C,
    }, refGrads);
    const modes = headModes(dims(config).H, "shifted-groups").map((m) =>
      m === "groups" ? MODE_GROUPS : MODE_GROUPS_SHIFTED
    );
    hooks.mask = { modes, G };
    const ref = referenceModel(prepared.weights.config, weightsNow, batch, B, T, gradScale, hooks);
    const lossErr = compare(`${family} S²-Attn losses`, run.losses, ref.losses, { atol: 2e-5, rtol: 1e-5 });
    // Rows t < G/2 see the same keys under both masks (both halves start at 0); later rows do not.
    let early = 0, late = 0;
    for (let n = 0; n < N; n++) {
      const d = Math.abs(run.losses[n] - causal.losses[n]);
      if (n % T < G / 2) early = Math.max(early, d);
      else if (n % T >= G && batch.targets[n] !== -100) late = Math.max(late, d);
    }
    assert.ok(early < 1e-5, `rows before G/2 should not see the mask (differ by ${early})`);
    assert.ok(late > 1e-3, `rows after G should (differ by at most ${late})`);
    let worst = 0;
    const check = (name: string, got: Float32Array, want: Float64Array) => {
      const max = Math.max(...Array.from(want, Math.abs));
      assert.ok(max > 0, `${name}: the reference gradient is all zero`);
      // Within 1e-4 of the tensor's largest value (observed ≤ 8e-6).
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
    let baseElements = 0;
    for (const e of prepared.weights.table.entries) {
      const t = prepared.trainable(e);
      if (t === false) {
        const frozen = run.grads!.subarray(e.offset, e.offset + e.numel);
        assert.ok(frozen.every((x) => x === 0), `${e.name} is frozen: its gradient must stay 0`);
        continue;
      }
      const [from, count] = t === true ? [0, e.numel] : [t.from, t.count];
      check(
        e.name,
        run.grads!.subarray(e.offset + from, e.offset + from + count),
        ref.grads.subarray(e.offset + from, e.offset + from + count),
      );
      baseElements += count;
    }
    console.log(
      `${family}: S²-Attn (G = ${G}) loss error ${
        lossErr.maxAbs.toExponential(2)
      }; causal differs after G by ` +
        `${late.toExponential(2)}, before G/2 by ${early.toExponential(2)}; ${baseElements} base elements; ` +
        `max grad error / tensor max = ${worst.toExponential(2)}`,
    );
    prepared.destroy();
    base.params.buffer.destroy();
  });
}

Deno.test("LongLoRA training (S²-Attn, PI ×2) lowers the loss; the caller's weights stay untouched", async () => {
  const gpu = await getGpu();
  const T = 32;
  const values = initialWeights(llama, 8);
  const { base, prepared } = await prepare(gpu, llama, values, {}, T, 64);
  const losses = await trainOnPattern(gpu, prepared, T, { steps: 30, lr: 2e-2 });
  console.log(`LongLoRA losses: ${losses[0].toFixed(4)} → ${losses[29].toFixed(4)}`);
  assert.ok(losses[29] < losses[0] - 0.5, `loss ${losses[0]} → ${losses[29]} did not drop by 0.5`);
  assertBitwiseEqual("caller's base weights", await readWeights(gpu, base), values);
  const trained = await readF32(gpu, prepared.weights.params);
  const wte = prepared.weights.table.byName.get("wte")!;
  const head = prepared.weights.table.byName.get("lmHead.w")!;
  assert.ok(
    trained.subarray(wte.offset, wte.offset + wte.numel).some((x, i) => x !== values[wte.offset + i]),
  );
  assertBitwiseEqual(
    "frozen LM head",
    trained.subarray(head.offset, head.offset + head.numel),
    values.subarray(head.offset, head.offset + head.numel),
  );
  prepared.destroy();
  base.params.buffer.destroy();
});
