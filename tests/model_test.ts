import assert from "node:assert/strict";
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { readTensors, upload } from "../src/gpu/tensor.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { createGraph, destroyGraph, recordBackward, recordForward } from "../src/model/model.ts";
import { bucketTokens } from "../src/ops/encoder.ts";
import { createWeights, initialWeights } from "../src/model/weights.ts";
import { Rng } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";
import { referenceModel } from "./reference/model.ts";
import { randomBatch } from "./reference/graph_run.ts";
import { adamwUpdate } from "./reference/train_ops.ts";
import { type HostBatch, Trainer } from "../src/train/trainer.ts";
import { decays, paramTable } from "../src/model/params.ts";

const gpt2Tiny = parseModelConfig({
  family: "gpt2",
  vocabSize: 53,
  maxPositions: 16,
  nLayer: 2,
  nHead: 2,
  nEmbd: 24,
});
const llamaTiny = parseModelConfig({
  family: "llama",
  vocabSize: 61,
  maxPositions: 32,
  nLayer: 2,
  nHead: 4,
  nKvHead: 2,
  nEmbd: 32,
  nInner: 40,
  rope: { type: "yarn", factor: 2, originalMaxPositions: 8, base: 10000 },
});

// Larger-than-init weights make every gradient path matter (GPT-2's 0.02 leaves attention nearly uniform).
function scaledWeights(config: typeof gpt2Tiny, seed: number): Float32Array {
  const w = initialWeights(config, seed);
  const rng = new Rng(seed, 5);
  for (let i = 0; i < w.length; i++) w[i] = w[i] * 10 + (rng.uniform() - 0.5) * 0.1;
  return w;
}

for (const [name, config] of [["GPT-2", gpt2Tiny], ["Llama (GQA, YaRN)", llamaTiny]] as const) {
  Deno.test(`${name}: loss and every parameter gradient match the float64 reference model`, async () => {
    const gpu = await getGpu();
    const B = 2, T = 11, N = B * T;
    const values = scaledWeights(config, 3);
    const weights = createWeights(gpu, config, values);
    for (const recompute of [false, true]) {
      const graph = createGraph(gpu, weights, { B, T, training: true, recompute });
      const batch = randomBatch(weights.dims.V, N, 9);
      const buckets = bucketTokens(batch.tokens, weights.dims.V);
      upload(gpu, graph.inputs.tokens, batch.tokens);
      upload(gpu, graph.inputs.targets, batch.targets);
      upload(gpu, graph.inputs.weights, batch.weights);
      upload(gpu, graph.inputs.bucketIds, buckets.ids);
      upload(gpu, graph.inputs.bucketStart, buckets.start);
      upload(gpu, graph.inputs.bucketPositions, buckets.positions);
      const gradScale = 1 / 17;
      const rec = new Recorder(gpu, "fwd+bwd");
      await recordForward(rec, graph, { gradScale });
      await recordBackward(rec, graph);
      await rec.submit();
      const [losses, lossSum, grads] = await readTensors(gpu, [graph.losses, graph.lossSum, graph.grads!]);
      const ref = referenceModel(config, values, batch, B, T, gradScale);
      // Per-token losses: f32 forward through 2 blocks of width ≤ 40 and a log-sum-exp; 2e-5 absolute
      // on losses of ~4–20 (relative 1e-5 of a value built from ~100-term dot products).
      compare(`${name} losses`, losses, ref.losses, { atol: 2e-5, rtol: 1e-5 });
      compare(`${name} loss sum`, lossSum, [ref.lossSum], { atol: 1e-4, rtol: 1e-5 });
      let worst = 0;
      for (const e of weights.table.entries) {
        const got = grads.subarray(e.offset, e.offset + e.numel);
        const want = ref.grads.subarray(e.offset, e.offset + e.numel);
        const scale = want.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
        // Each gradient is a chain of f32 matmuls and reductions; errors scale with the tensor's largest
        // gradient: 1e-4 of it absolute plus 1e-3 relative.
        const r = compare(`${name} grad ${e.name} (recompute ${recompute})`, got, want, {
          atol: 1e-4 * scale + 1e-9,
          rtol: 1e-3,
        });
        worst = Math.max(worst, scale > 0 ? r.maxAbs / scale : 0);
      }
      console.log(`${name} recompute=${recompute}: max grad error / tensor max = ${worst.toExponential(2)}`);
      destroyGraph(graph);
    }
    weights.params.buffer.destroy();
  });
}

// A token stream the tiny models can learn: a repeating pattern with a little noise.
function streamBatches(V: number, B: number, T: number, steps: number, seed: number): HostBatch[] {
  const rng = new Rng(seed, 3);
  const pattern = Array.from({ length: 7 }, () => rng.int(V));
  const batches: HostBatch[] = [];
  for (let s = 0; s < steps; s++) {
    const stream = Array.from(
      { length: B * T + 1 },
      (_, i) => (rng.uniform() < 0.1 ? rng.int(V) : pattern[(i + s) % 7]),
    );
    batches.push({
      tokens: Uint32Array.from(stream.slice(0, B * T)),
      targets: Int32Array.from(stream.slice(1, B * T + 1), (t, i) => (i % 9 === 8 ? -100 : t)),
    });
  }
  return batches;
}

Deno.test("10 AdamW steps with clipping reproduce the float64 reference losses", async () => {
  const gpu = await getGpu();
  const config = gpt2Tiny;
  const B = 2, T = 9;
  const values = initialWeights(config, 21);
  const weights = createWeights(gpu, config, values);
  const optimizer = { lr: 3e-3, weightDecay: 0.1, maxGradNorm: 1.0 };
  const trainer = await Trainer.create(gpu, weights, { B, T, optimizer, lossReadEvery: 4 });
  const batches = streamBatches(config.vocabSize, B, T, 10, 5);
  for (const batch of batches) await trainer.step(batch);
  const got = await trainer.losses();

  const table = paramTable(config);
  const entries = table.entries.map((e) => ({
    label: e.name,
    offset: e.offset,
    size: e.numel,
    lrScale: 1,
    weightDecay: decays(e) ? optimizer.weightDecay : 0,
  }));
  const params = Float64Array.from(values);
  const m = new Float64Array(table.size), v = new Float64Array(table.size);
  const want: number[] = [];
  batches.forEach((batch, s) => {
    const counted = batch.targets.filter((t) => t !== -100).length;
    const w = Float64Array.from(batch.targets, (t) => (t === -100 ? 0 : 1));
    const ref = referenceModel(config, params, { ...batch, weights: w }, B, T, 1 / counted);
    want.push(ref.lossSum / counted);
    adamwUpdate(params, m, v, ref.grads, entries, {
      lr: optimizer.lr,
      beta1: 0.9,
      beta2: 0.999,
      eps: 1e-8,
      step: s + 1,
      maxNorm: optimizer.maxGradNorm,
    });
  });
  console.log(`losses gpu ${got.map((x) => x.toFixed(5)).join(" ")}`);
  // f32 training drifts from f64 over steps; 10 steps at lr 3e-3 stay within 2e-4 of losses near 4.
  compare("10-step losses", got, want, { atol: 2e-4, rtol: 1e-5 });
  assert.ok(got[9] < got[0], `the loss falls: ${got[0]} → ${got[9]}`);
});

Deno.test("20 training steps are bitwise identical when repeated and when resumed from step 10", async () => {
  const gpu = await getGpu();
  const config = llamaTiny;
  const B = 1, T = 13;
  const batches = streamBatches(config.vocabSize, B, T, 20, 8);
  const opts = { B, T, optimizer: { lr: 1e-3, maxGradNorm: 0.5 }, lossReadEvery: 3 };
  const run = async () => {
    const trainer = await Trainer.create(gpu, createWeights(gpu, config, initialWeights(config, 6)), opts);
    for (const b of batches) await trainer.step(b);
    return trainer.lossSums();
  };
  const first = await run();
  const second = await run();
  assertBitwiseEqual("repeated run", first, second);

  const dir = await Deno.makeTempDir();
  const a = await Trainer.create(gpu, createWeights(gpu, config, initialWeights(config, 6)), opts);
  for (const b of batches.slice(0, 10)) await a.step(b);
  await a.save(`${dir}/step10.safetensors`);
  const resumed = await Trainer.create(gpu, createWeights(gpu, config, initialWeights(config, 99)), opts);
  await resumed.load(`${dir}/step10.safetensors`);
  assert.equal(resumed.stepCount, 10);
  for (const b of batches.slice(10)) await resumed.step(b);
  assertBitwiseEqual("resumed at step 10", await resumed.lossSums(), first);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("partial passes: fromLayer and toLayer must be block indices; toLayer refuses a graph with base gradients", async () => {
  const gpu = await getGpu();
  const weights = createWeights(gpu, gpt2Tiny, initialWeights(gpt2Tiny, 2));
  const g = createGraph(gpu, weights, { B: 1, T: 4, training: true });
  const rec = new Recorder(gpu, "partial passes");
  for (const bad of [-1, 1.5, gpt2Tiny.nLayer]) {
    await assert.rejects(
      recordForward(rec, g, { fromLayer: bad }),
      /fromLayer .* must be an integer block index/,
    );
    await assert.rejects(
      recordBackward(rec, g, { toLayer: bad }),
      /toLayer .* must be an integer block index/,
    );
  }
  await assert.rejects(recordBackward(rec, g, { toLayer: 1 }), /base gradients below it unwritten/);
  destroyGraph(g);
  weights.params.buffer.destroy();
});
