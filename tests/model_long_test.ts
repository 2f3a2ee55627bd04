/**
 * Whole-model training at T = 32768 tokens (B = 1) on a software adapter: a 2-layer Llama (GQA, RoPE,
 * S²-Attn `shifted-groups` mask with G = T/4, recompute) and a 1-layer GPT-2 (stored activations, 32K
 * learned positions) run forward and backward with graph memory exactly linear in T. A fresh model's loss
 * is ln V, every parameter tensor gets finite, non-zero gradients, the Llama's last tokens agree with a
 * 16K run of the same tokens (the mask and RoPE make them position-independent), and a repeated GPT-2
 * step is bitwise identical. About 80 s on llvmpipe with 2 lightly loaded cores (the Llama step ~36 s, its
 * 16K check ~6 s, each GPT-2 step ~15 s), minutes when other work shares the cores. Short models against
 * the float64 reference: model_test.ts.
 */
import assert from "node:assert/strict";
import type { Gpu } from "../src/gpu/device.ts";
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { readTensors, upload } from "../src/gpu/tensor.ts";
import { dims, parseModelConfig } from "../src/model/config.ts";
import {
  createGraph,
  destroyGraph,
  type Graph,
  type GraphOptions,
  recordBackward,
  recordForward,
} from "../src/model/model.ts";
import { type ParamTable, paramTable } from "../src/model/params.ts";
import { createWeights, initialWeights, type ModelWeights } from "../src/model/weights.ts";
import { bucketTokens } from "../src/ops/encoder.ts";
import { Rng } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";

const T = 32768;
/** S²-Attn's group size: four groups, the shifted heads in half-groups at both ends. */
const G = T / 4;
const mask: GraphOptions["mask"] = { mode: "shifted-groups", groupSize: G };
const MiB = 2 ** 20;

// Byte vocabulary (256 bytes and one special token); maxPositions covers T.
const llama = parseModelConfig({
  family: "llama",
  vocabSize: 257,
  maxPositions: T,
  nLayer: 2,
  nHead: 4,
  nKvHead: 2,
  nEmbd: 64,
  nInner: 128,
});
const gpt2 = parseModelConfig({
  family: "gpt2",
  vocabSize: 257,
  maxPositions: T,
  nLayer: 1,
  nHead: 2,
  nEmbd: 32,
});

/** T + 1 random tokens: tokens are the first T, next-token targets the last T. */
function byteStream(V: number, seed: number): { tokens: Uint32Array; targets: Int32Array } {
  const rng = new Rng(seed, 11);
  const stream = Uint32Array.from({ length: T + 1 }, () => rng.int(V));
  return { tokens: stream.slice(0, T), targets: Int32Array.from(stream.subarray(1)) };
}

// As Trainer's upload: loss weights of 1/count make Σ weights·losses the mean loss; encoder buckets.
function uploadBatch(gpu: Gpu, graph: Graph, tokens: Uint32Array, targets: Int32Array): void {
  const inputs = graph.inputs;
  const buckets = bucketTokens(tokens, graph.weights.dims.V);
  upload(gpu, inputs.tokens, tokens);
  upload(gpu, inputs.targets, targets);
  upload(gpu, inputs.weights, new Float32Array(tokens.length).fill(1 / tokens.length));
  upload(gpu, inputs.bucketIds, buckets.ids);
  upload(gpu, inputs.bucketStart, buckets.start);
  upload(gpu, inputs.bucketPositions, buckets.positions);
}

/**
 * Records every device buffer created until `restore()` (graph, attention scratch, uniforms, readback
 * staging), so an allocation that bypasses graph.bytes still shows.
 */
function watchBuffers(gpu: Gpu): { created: { label: string; size: number }[]; restore: () => void } {
  const created: { label: string; size: number }[] = [];
  const createBuffer = gpu.device.createBuffer.bind(gpu.device);
  gpu.device.createBuffer = (desc: GPUBufferDescriptor) => {
    created.push({ label: desc.label ?? "", size: desc.size });
    return createBuffer(desc);
  };
  return { created, restore: () => gpu.device.createBuffer = createBuffer };
}

const totalSize = (buffers: { size: number }[]) => buffers.reduce((sum, b) => sum + b.size, 0);

/**
 * A fresh model's mean loss: logits are lnf·Wᵀ with N(0, 0.02²) weights and a unit-RMS lnf, so each is
 * ≈ N(0, σ²) with σ = 0.02·√C (0.16 at C = 64), and E[loss] ≈ ln V + σ²/2 (≈ ln V + 0.013) for targets
 * independent of the logits; the mean over 32K tokens varies by ≈ σ/√T ≈ 1e-3. Allowed: 0.03 either way.
 */
function assertFreshLoss(name: string, lossSum: number, V: number): void {
  const loss = lossSum / T;
  console.log(`${name}: mean loss ${loss.toFixed(5)}, ln V = ${Math.log(V).toFixed(5)}`);
  assert.ok(Math.abs(loss - Math.log(V)) < 0.03, `${name}: mean loss ${loss} is not within 0.03 of ln ${V}`);
}

/** Every tensor of the table: all gradients finite, some non-zero (every base tensor trains). */
function assertGradients(name: string, table: ParamTable, grads: Float32Array): void {
  let sparsest = { name: "", fraction: Infinity };
  for (const e of table.entries) {
    const g = grads.subarray(e.offset, e.offset + e.numel);
    const bad = g.findIndex((x) => !Number.isFinite(x));
    assert.equal(bad, -1, `${name}: grad ${e.name}[${bad}] = ${g[bad]} is not finite`);
    const fraction = g.reduce((n, x) => n + (x !== 0 ? 1 : 0), 0) / e.numel;
    assert.ok(fraction > 0, `${name}: grad ${e.name} (${e.numel} values) is all zero`);
    if (fraction < sparsest.fraction) sparsest = { name: e.name, fraction };
  }
  console.log(
    `${name}: ${table.entries.length} gradient tensors finite and non-zero; sparsest ${sparsest.name} ` +
      `(${(100 * sparsest.fraction).toFixed(1)}% non-zero)`,
  );
}

/**
 * graph.bytes and every buffer createGraph makes, at T = 4096 … 32768; both must be a + b·T exactly
 * (every buffer is (B·T) × a width, plus T-free tables; a T×T buffer would break the line).
 */
function graphBytes(gpu: Gpu, weights: ModelWeights, opts: Omit<GraphOptions, "B" | "T">) {
  const Ts = [4096, 8192, 16384, 32768];
  const rows = Ts.map((t) => {
    const watch = watchBuffers(gpu);
    let graph: Graph;
    try {
      graph = createGraph(gpu, weights, { B: 1, T: t, ...opts });
    } finally {
      watch.restore();
    }
    const bytes = graph.bytes;
    destroyGraph(graph);
    return { T: t, bytes, buffers: totalSize(watch.created) };
  });
  const line = (key: "bytes" | "buffers") => {
    const b = (rows[1][key] - rows[0][key]) / (rows[1].T - rows[0].T);
    const a = rows[0][key] - b * rows[0].T;
    for (const r of rows) {
      assert.equal(r[key], a + b * r.T, `${key} at T = ${r.T}: ${r[key]} ≠ a + b·T = ${a} + ${b}·${r.T}`);
    }
    return { a, b };
  };
  return { rows, bytes: line("bytes"), buffers: line("buffers") };
}

Deno.test("graph memory is exactly a + b·T for T = 4096 … 32768, and recompute keeps only C per layer", async () => {
  const gpu = await getGpu();
  const llama3 = parseModelConfig({ ...llama, nLayer: 3 });
  const cases = [
    { name: "Llama L=2 recompute", config: llama, opts: { training: true, recompute: true, mask } },
    { name: "Llama L=3 recompute", config: llama3, opts: { training: true, recompute: true, mask } },
    { name: "Llama L=2 stored", config: llama, opts: { training: true, recompute: false, mask } },
    { name: "GPT-2 L=1 stored", config: gpt2, opts: { training: true, recompute: false, mask } },
  ];
  const fits: Record<string, { a: number; b: number; at32k: number }> = {};
  for (const { name, config, opts } of cases) {
    const weights = createWeights(gpu, config, new Float32Array(paramTable(config).size));
    const m = graphBytes(gpu, weights, opts);
    weights.params.buffer.destroy();
    const last = m.rows[m.rows.length - 1];
    fits[name] = { ...m.bytes, at32k: last.bytes };
    console.log(
      `${name}: graph.bytes ${m.rows.map((r) => `${r.T}: ${r.bytes}`).join(", ")} = ${m.bytes.a} + ` +
        `${m.bytes.b}·T (${(m.bytes.b / 4).toFixed(0)} floats per token); all buffers ${m.buffers.a} + ` +
        `${m.buffers.b}·T; at T = ${T}: ${(last.bytes / MiB).toFixed(1)} MiB (buffers ` +
        `${(last.buffers / MiB).toFixed(1)} MiB)`,
    );
    // Outside graph.bytes, createGraph only makes the loss-bias ones (1 float a token) and the RoPE
    // tables (D a token): nothing per token hides from graph.bytes.
    const { D } = dims(config);
    assert.ok(
      m.buffers.b - m.bytes.b <= 4 * (D + 1),
      `${name}: buffers grow ${m.buffers.b - m.bytes.b} bytes a token faster than graph.bytes`,
    );
  }
  const { V, C } = dims(llama);
  // One more layer with recompute adds one residual stream (C floats a token) and nothing else per token.
  assert.equal(fits["Llama L=3 recompute"].b - fits["Llama L=2 recompute"].b, 4 * C);
  assert.ok(fits["Llama L=2 recompute"].b < fits["Llama L=2 stored"].b, "recompute saves activation memory");
  // Bound: the (T, V) logits, the L + 1 = 3 residual streams, one block's saved activations with the
  // pre-RoPE q, k and its backward scratch, each under 20·C floats a token (about 16.6·C and 15.5·C here,
  // F = 2C), and the T-free gradient table: 4·(V + 3·C + 40·C)·T + 1 MiB ≈ 377 MiB at T = 32768.
  const bound = 4 * (V + 3 * C + 40 * C) * T + MiB;
  const { at32k } = fits["Llama L=2 recompute"];
  console.log(
    `Llama L=2 recompute at T = ${T}: ${(at32k / MiB).toFixed(1)} MiB of a ${(bound / MiB).toFixed(0)} MiB ` +
      `bound (one T×T f32 score matrix alone: ${(T * T * 4 / 2 ** 30).toFixed(0)} GiB)`,
  );
  assert.ok(at32k < bound, `${at32k} bytes > bound ${bound}`);
});

Deno.test("Llama (2 layers, GQA, S²-Attn, recompute): forward + backward at T = 32768 in linear memory, twice bit for bit", async () => {
  const gpu = await getGpu();
  const weights = createWeights(gpu, llama, initialWeights(llama, 7));
  const { V, H, D } = weights.dims;
  const { tokens, targets } = byteStream(V, 7);
  const watch = watchBuffers(gpu);
  let run;
  try {
    const graph = createGraph(gpu, weights, { B: 1, T, training: true, recompute: true, mask });
    uploadBatch(gpu, graph, tokens, targets);
    const rec = new Recorder(gpu, `llama T=${T}`);
    await recordForward(rec, graph, { gradScale: 1 });
    await recordBackward(rec, graph);
    const t0 = performance.now();
    const timed = await rec.submitTimed();
    // blocks[0] holds layer 0's activations after the backward (with recompute, block 0 is recomputed last).
    const [lossSum, losses, grads, lse, o] = await readTensors(
      gpu,
      [graph.lossSum, graph.losses, graph.grads!, graph.blocks[0].lse, graph.blocks[0].o],
    ) as Float32Array[];
    console.log(
      `Llama T=${T}: forward + backward ${(timed.ms / 1000).toFixed(1)} s on the GPU (${timed.source}), ` +
        `${((performance.now() - t0) / 1000).toFixed(1)} s with readback, on ${gpu.adapter.description}`,
    );
    // The same recording again (the backward zeroes the gradients first): identical bits.
    await rec.submit();
    const [lossSum2, grads2] = await readTensors(gpu, [graph.lossSum, graph.grads!]) as Float32Array[];
    assertBitwiseEqual("Llama loss, second run", lossSum2, lossSum);
    assertBitwiseEqual("Llama gradients, second run", grads2, grads);
    run = { lossSum: lossSum[0], losses, grads, lse, o, bytes: graph.bytes };
    rec.destroy();
    destroyGraph(graph);
  } finally {
    watch.restore();
  }
  const { lossSum, losses, grads, lse, o, bytes } = run;
  // Everything the run created: the graph, attention scratch, uniforms and the readback staging; the
  // largest must be the (T, V) logits, 32 MiB.
  const total = totalSize(watch.created);
  const largest = watch.created.reduce((m, b) => (b.size > m.size ? b : m));
  console.log(
    `created ${(total / MiB).toFixed(1)} MiB in all (graph.bytes ${(bytes / MiB).toFixed(1)} MiB), ` +
      `largest ${largest.label} ${(largest.size / MiB).toFixed(1)} MiB`,
  );
  assert.ok(largest.size <= T * V * 4, `largest buffer ${largest.label}: ${largest.size} bytes`);
  assert.ok(total < 1.25 * bytes, `${total} bytes created, more than 1.25 × graph.bytes ${bytes}`);

  assertFreshLoss("Llama", lossSum, V);
  assert.ok(losses.every(Number.isFinite), "every per-token loss is finite");
  assertGradients("Llama", weights.table, grads);

  // The last G tokens again in a 2G-token graph: its groups and half-groups line up with the 32K ones
  // (2G is a multiple of G) and RoPE only sees relative positions, so layer 0 agrees on its last 3G/2
  // rows and the whole model (2 layers) on its last G. Only RoPE tables of other positions (f32 cos, sin
  // of other angles) differ, ~1e-7 relative in q·k.
  const S = 2 * G;
  const short = createGraph(gpu, weights, { B: 1, T: S, training: false, mask });
  uploadBatch(gpu, short, tokens.slice(T - S), targets.slice(T - S));
  const rec = new Recorder(gpu, `llama T=${S}`);
  await recordForward(rec, short);
  await rec.submit();
  const [shortLosses, shortLse, shortO] = await readTensors(
    gpu,
    [short.losses, short.blocks[0].lse, short.blocks[0].o],
  ) as Float32Array[];
  rec.destroy();
  destroyGraph(short);
  weights.params.buffer.destroy();
  // Rows [start, len) of every head of a (1, H, len, width) tensor, heads concatenated.
  const tail = (a: Float32Array, len: number, start: number, width: number) => {
    const out = new Float32Array(H * (len - start) * width);
    for (let h = 0; h < H; h++) {
      out.set(a.subarray((h * len + start) * width, (h + 1) * len * width), h * (len - start) * width);
    }
    return out;
  };
  // lse ≈ ln(visible keys) ≤ 9 sums up to 8192 terms in the same pass order in both graphs (≈ 1e-6 is one
  // ulp at 8); o is a mean of up to 8192 v rows (|o| ≲ 0.2); per-token losses ≈ 5.6 after two layers. The
  // tolerances sit 10× above the measured worst cases (~1 ulp), far below what a wrong window changes.
  const from32 = T - 3 * G / 2, from16 = G / 2;
  const tol = { atol: 1e-5, rtol: 1e-6 };
  const lseWant = tail(shortLse, S, from16, 1);
  const lseErr = compare("layer 0 lse, last 3G/2 rows", tail(lse, T, from32, 1), lseWant, tol);
  const oErr = compare("layer 0 o, last 3G/2 rows", tail(o, T, from32, D), tail(shortO, S, from16, D), {
    atol: 1e-6,
    rtol: 1e-4,
  });
  const lossErr = compare("losses, last G tokens", losses.subarray(T - G), shortLosses.subarray(G), tol);
  const span = (a: Float32Array) => (a.reduce((m, x) => Math.max(m, x)) - a.reduce((m, x) => Math.min(m, x)));
  const lossSpan = span(shortLosses.subarray(G)).toFixed(2);
  console.log(
    `32K vs 16K on shared rows, max |err|: lse ${lseErr.maxAbs.toExponential(2)} (values span ` +
      `${span(lseWant).toFixed(2)}), o ${oErr.maxAbs.toExponential(2)}, loss ` +
      `${lossErr.maxAbs.toExponential(2)} (span ${lossSpan})`,
  );
});

Deno.test("GPT-2 (1 layer, S²-Attn, 32K positions): forward + backward at T = 32768 twice, bit for bit", async () => {
  const gpu = await getGpu();
  const weights = createWeights(gpu, gpt2, initialWeights(gpt2, 8));
  const { V, C } = weights.dims;
  const { tokens, targets } = byteStream(V, 8);
  const graph = createGraph(gpu, weights, { B: 1, T, training: true, recompute: false, mask });
  uploadBatch(gpu, graph, tokens, targets);
  const rec = new Recorder(gpu, `gpt2 T=${T}`);
  await recordForward(rec, graph, { gradScale: 1 });
  await recordBackward(rec, graph);
  const step = async () => {
    const timed = await rec.submitTimed();
    const [lossSum, grads] = await readTensors(gpu, [graph.lossSum, graph.grads!]) as Float32Array[];
    console.log(`GPT-2 T=${T}: forward + backward ${(timed.ms / 1000).toFixed(1)} s (${timed.source})`);
    return { lossSum, grads };
  };
  const first = await step();
  const second = await step();
  rec.destroy();
  destroyGraph(graph);
  weights.params.buffer.destroy();

  assertFreshLoss("GPT-2", first.lossSum[0], V);
  assertGradients("GPT-2", weights.table, first.grads);
  // The last learned position gets its gradient (the encoder backward reaches row T − 1).
  const wpe = weights.table.byName.get("wpe")!;
  const lastRow = first.grads.subarray(wpe.offset + (T - 1) * C, wpe.offset + T * C);
  assert.ok(lastRow.some((x) => x !== 0), "wpe row T − 1 has a zero gradient");
  assertBitwiseEqual("GPT-2 loss, second run", first.lossSum, second.lossSum);
  assertBitwiseEqual("GPT-2 gradients, second run", first.grads, second.grads);
});
