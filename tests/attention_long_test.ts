/**
 * Flash attention at T = 32768 (B = 1, H = 2 query heads sharing Hkv = 1 kv head, D = 32, causal, with a
 * sink): forward and backward finish on a software adapter with memory linear in T, and sampled rows match
 * float64 row-wise references. Slow by design (under a minute on llvmpipe); short cases: attention_test.ts.
 */
import assert from "node:assert/strict";
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readTensors, type Tensor, tensorFrom } from "../src/gpu/tensor.ts";
import { attentionBackward, attentionForward, headModes } from "../src/ops/attention.ts";
import { fillNormal, fillUniform } from "../src/random/philox.ts";
import { compare, type Tolerance } from "./reference/compare.ts";
import * as ref from "./reference/attention.ts";

Deno.test("attention forward and backward at T = 32768 in linear memory match sampled f64 rows", async () => {
  const gpu = await getGpu();
  const B = 1, H = 2, Hkv = 1, T = 32768, D = 32;
  const sizes = { B, H, Hkv, T, D };
  const seed = 32768;

  // Every buffer the test and the launchers create is counted, so a hidden T×T allocation would show.
  const allocated: { label: string; size: number }[] = [];
  const createBuffer = gpu.device.createBuffer.bind(gpu.device);
  gpu.device.createBuffer = (desc: GPUBufferDescriptor) => {
    allocated.push({ label: desc.label ?? "", size: desc.size });
    return createBuffer(desc);
  };
  try {
    const q = fillNormal(new Float32Array(B * H * T * D), seed, 0);
    const k = fillNormal(new Float32Array(B * Hkv * T * D), seed, 1);
    const v = fillNormal(new Float32Array(B * Hkv * T * D), seed, 2);
    const dO = fillNormal(new Float32Array(B * H * T * D), seed, 3);
    // Scales above 1/√D sharpen the softmax so rows are not near-uniform averages of 32k keys.
    const scale = fillUniform(new Float32Array(H), seed, 4, 1.5 / Math.sqrt(D), 2 / Math.sqrt(D));
    const sink = Float32Array.of(1.5, -0.5);
    const made: Tensor[] = [];
    const input = (shape: number[], data: Float32Array, label: string) => {
      const t = tensorFrom(gpu, shape, data, { label });
      made.push(t);
      return t;
    };
    const output = (shape: number[], label: string) => {
      const t = createTensor(gpu, shape, { label });
      poison(gpu, t);
      made.push(t);
      return t;
    };
    const inputs = {
      q: input([B, H, T, D], q, "q"),
      k: input([B, Hkv, T, D], k, "k"),
      v: input([B, Hkv, T, D], v, "v"),
      logitScale: input([H], scale, "logitScale"),
      sinkLogit: input([H], sink, "sinkLogit"),
    };
    const dOTensor = input([B, H, T, D], dO, "dO");
    const o = output([B, H, T, D], "o"), lse = output([B, H, T], "lse");
    const dq = output([B, H, T, D], "dq"),
      dk = output([B, Hkv, T, D], "dk"),
      dv = output([B, Hkv, T, D], "dv");
    const dScale = output([H], "dScale"), dSink = output([H], "dSink");
    const mask = { modes: headModes(H, "causal") };

    const rec = new Recorder(gpu, "attention T=32768");
    await attentionForward(rec, { o, lse }, inputs, mask);
    await attentionBackward(rec, { dq, dk, dv, dScale, dSink }, { ...inputs, o, lse, dO: dOTensor }, mask);
    const t0 = performance.now();
    const timed = await rec.submitTimed();
    const [oGot, lseGot, dqGot, dkGot, dvGot, dScaleGot, dSinkGot] = await readTensors(
      gpu,
      [o, lse, dq, dk, dv, dScale, dSink],
    ) as Float32Array[];
    const seconds = (performance.now() - t0) / 1000;
    console.log(
      `T=${T} H=${H} Hkv=${Hkv} D=${D} causal forward+backward: ${
        (timed.ms / 1000).toFixed(1)
      } s on the GPU (${timed.source}), ` +
        `${seconds.toFixed(1)} s with readback, on ${gpu.adapter.description}`,
    );

    // Memory: every buffer is at most the readback staging of five (B, H, T, D) outputs, the total a few dozen
    // such tensors; a T×T anything would be 4 GiB.
    const rowBytes = B * H * T * D * 4; // the largest tensors: q, o, dq, dO
    const total = allocated.reduce((sum, a) => sum + a.size, 0);
    const largest = allocated.reduce((m, a) => (a.size > m.size ? a : m));
    console.log(
      `${allocated.length} buffers, ${(total / 2 ** 20).toFixed(1)} MiB in all (${
        (total / rowBytes).toFixed(1)
      }× ` +
        `one (B, H, T, D) tensor of ${(rowBytes / 2 ** 20).toFixed(1)} MiB); largest ${largest.label} ` +
        `${(largest.size / 2 ** 20).toFixed(1)} MiB; a T×T score matrix would be ${
          (T * T * 4 / 2 ** 30).toFixed(0)
        } GiB`,
    );
    assert.ok(
      largest.size <= 5 * rowBytes,
      `largest buffer ${largest.label}: ${largest.size} bytes > 5·${rowBytes}`,
    );
    assert.ok(total <= 20 * rowBytes, `${total} bytes allocated, more than 20 (B, H, T, D) tensors`);

    for (
      const [name, got] of [["dScale", dScaleGot], ["dSink", dSinkGot], ["lse", lseGot], ["o", oGot]] as const
    ) {
      assert.ok(got.every(Number.isFinite), `${name} has a non-finite value`);
    }
    const refMask: ref.RefMask = { modes: [ref.MODE_CAUSAL, ref.MODE_CAUSAL], G: 0 };
    const row = (a: Float32Array, i: number) => a.subarray(i * D, (i + 1) * D);
    // Row sums over up to 32k keys in f32: errors grow with √(keys)·ε·|terms| (≈ 1e-5 here); rows of dq, dk,
    // dv add the D-term dot products inside dS and sums over up to 32k rows.
    const tolRow: Tolerance = { atol: 2e-5, rtol: 2e-4 };
    const tolGrad: Tolerance = { atol: 5e-5, rtol: 5e-4 };
    const worst = { o: 0, lse: 0, dq: 0, dk: 0, dv: 0 };
    const track = (name: keyof typeof worst, maxAbs: number) => worst[name] = Math.max(worst[name], maxAbs);
    for (const h of [0, 1]) {
      for (const i of [0, 1, 17, 4095, 16384, 30001, T - 1]) {
        const at = h * T + i;
        const want = ref.attentionRow(q, k, v, scale, sink, refMask, sizes, 0, h, i);
        track("o", compare(`o head ${h} row ${i}`, row(oGot, at), want.o, tolRow).maxAbs);
        track(
          "lse",
          compare(`lse head ${h} row ${i}`, [lseGot[at]], [want.lse], { atol: 2e-5, rtol: 1e-6 }).maxAbs,
        );
        const dqWant = ref.queryGradRow(q, k, v, dO, scale, sink, refMask, sizes, 0, h, i);
        track("dq", compare(`dq head ${h} row ${i}`, row(dqGot, at), dqWant, tolGrad).maxAbs);
      }
    }
    // dk, dv rows near the end see few queries, so their lse and Δ come from the f64 row reference: an
    // independent check. Rows 0 and T/2 see 32k and 16k queries; for those, lse and Δ = dO·o come from the
    // device (checked on sampled rows above), which keeps the reference O(T·D).
    const exact = new Map<number, { lse: number; delta: number }>();
    const rowStats = (h: number, i: number) => {
      const at = h * T + i;
      let hit = exact.get(at);
      if (!hit) {
        const r = ref.attentionRow(q, k, v, scale, sink, refMask, sizes, 0, h, i);
        let delta = 0;
        for (let d = 0; d < D; d++) delta += dO[at * D + d] * r.o[d];
        exact.set(at, hit = { lse: r.lse, delta });
      }
      return hit;
    };
    const deviceDelta = (h: number, i: number) => {
      const at = h * T + i;
      let delta = 0;
      for (let d = 0; d < D; d++) delta += dO[at * D + d] * oGot[at * D + d];
      return delta;
    };
    for (const j of [T - 1, T - 3, T - 40]) {
      const want = ref.keyValueGradRow(
        q,
        k,
        v,
        dO,
        (h, i) => rowStats(h, i).lse,
        (h, i) => rowStats(h, i).delta,
        scale,
        refMask,
        sizes,
        0,
        0,
        j,
      );
      track("dk", compare(`dk row ${j}`, row(dkGot, j), want.dk, tolGrad).maxAbs);
      track("dv", compare(`dv row ${j}`, row(dvGot, j), want.dv, tolGrad).maxAbs);
    }
    for (const j of [0, T / 2]) {
      const want = ref.keyValueGradRow(
        q,
        k,
        v,
        dO,
        (h, i) => lseGot[h * T + i],
        (h, i) => deviceDelta(h, i),
        scale,
        refMask,
        sizes,
        0,
        0,
        j,
      );
      track("dk", compare(`dk row ${j} (device lse, Δ)`, row(dkGot, j), want.dk, tolGrad).maxAbs);
      track("dv", compare(`dv row ${j} (device lse, Δ)`, row(dvGot, j), want.dv, tolGrad).maxAbs);
    }
    console.log(
      "sampled rows, max |err|: " +
        Object.entries(worst).map(([name, e]) => `${name} ${e.toExponential(2)}`).join(", "),
    );
    rec.destroy();
    for (const t of made) t.buffer.destroy();
  } finally {
    gpu.device.createBuffer = createBuffer;
  }
});
