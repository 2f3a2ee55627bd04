// Gated Memory kernels (src/ops/gated_memory.ts) and one layer's hooks (src/methods/gated_memory.ts)
// against the float64 reference (tests/reference/gated_memory.ts), on fresh random inputs of awkward
// sizes (B·T and H·D multiples of no tile; D = 12 gives ⌊√12⌋ = 3), every output poisoned first.
import assert from "node:assert/strict";
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import {
  createTensor,
  poison,
  readF32,
  readTensors,
  type Tensor,
  tensorFrom,
  upload,
} from "../src/gpu/tensor.ts";
import type { AttachContext } from "../src/model/adapter.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { createWeights, initialWeights } from "../src/model/weights.ts";
import {
  gateBackward,
  gatedMix,
  gatedMixBackward,
  gateForward,
  gateWidth,
  headRows,
  headRowsBackward,
  siluBackward,
  siluForward,
} from "../src/ops/gated_memory.ts";
import {
  createGatedMemoryAdapter,
  gatedMemoryNames,
  gatedMemoryParameterCount,
  gatedMemoryTable,
  initGatedMemory,
  liftParameterCount,
} from "../src/methods/gated_memory.ts";
import { Rng } from "../src/random/philox.ts";
import { compare } from "./reference/compare.ts";
import {
  gateBackwardRef,
  gatedMemoryBackward,
  gatedMemoryForward,
  gatedMixBackwardRef,
  gatedMixRef,
  gateForwardRef,
  headRowsRef,
  siluGradRef,
  siluRef,
} from "./reference/gated_memory.ts";

const uniform = (n: number, seed: number, lo = -1, hi = 1) => {
  const rng = new Rng(seed, 9);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * rng.uniform());
};

Deno.test("gateWidth is ⌊√D⌋ exactly", () => {
  assert.deepEqual([1, 3, 4, 8, 12, 15, 16, 64, 128].map(gateWidth), [1, 1, 2, 2, 3, 3, 4, 8, 11]);
  assert.throws(() => gateWidth(0), /head size/);
});

for (const [B, H, T, D] of [[2, 3, 7, 12], [1, 5, 13, 8], [3, 2, 5, 16]]) {
  Deno.test(`gated memory kernels vs float64: B=${B} H=${H} T=${T} D=${D}`, async () => {
    const gpu = await getGpu();
    const S = gateWidth(D), N = B * T, R = 2 * D;
    const seed = B * 1000 + H * 100 + T * 10 + D;
    const made: Tensor[] = [];
    const from = (shape: number[], data: Float32Array, label: string) => {
      const t = tensorFrom(gpu, shape, data, { label });
      made.push(t);
      return t;
    };
    const out = (shape: number[], label: string) => {
      const t = createTensor(gpu, shape, { label });
      poison(gpu, t);
      made.push(t);
      return t;
    };
    const x = uniform(B * H * T * D, seed);
    const hPre = uniform(H * N * R, seed + 1, -4, 4);
    const dout = uniform(H * N * R, seed + 2);
    const zPre = uniform(H * N * S, seed + 3, -3, 3);
    const w = uniform(H * S, seed + 4, -2, 2);
    const o = uniform(B * H * T * D, seed + 5);
    const mem = uniform(H * N * D, seed + 6);
    const gIn = uniform(H * N, seed + 7, 0.01, 0.99);
    const datt = uniform(N * H * D, seed + 8);
    const dgIn = uniform(H * N, seed + 9);
    const lw = uniform(N, seed + 10, 0, 0.2);

    const tx = from([B, H, T, D], x, "x");
    const rows = out([H, N, D], "rows");
    const back = out([B, H, T, D], "back");
    const th = from([H, N, R], hPre, "h"), tdout = from([H, N, R], dout, "dout");
    const a1 = out([H, N, R], "a1"), dh = out([H, N, R], "dh");
    const tz = from([H, N, S], zPre, "z"), tw = from([H, S], w, "w");
    const a2 = out([H, N, S], "a2"), g = out([H, N], "g");
    const to = from([B, H, T, D], o, "o"), tmem = from([H, N, D], mem, "mem"), tg = from([H, N], gIn, "gIn");
    const att = out([B, T, H * D], "att");
    const tdatt = from([B, T, H * D], datt, "datt");
    const dO = out([B, H, T, D], "dO"), dmem = out([H, N, D], "dmem"), dg = out([H, N], "dg");
    const tdg = from([H, N], dgIn, "dgIn"), tlw = from([N], lw, "lossWeights");
    const du = out([H, N], "du"), dz = out([H, N, S], "dz");

    const rec = new Recorder(gpu, "gated memory kernels");
    await headRows(rec, rows, tx);
    await headRowsBackward(rec, back, rows);
    await siluForward(rec, a1, th);
    await siluBackward(rec, dh, tdout, th);
    await gateForward(rec, a2, g, tz, tw);
    await gatedMix(rec, att, to, tmem, tg);
    await gatedMixBackward(rec, dO, dmem, dg, tdatt, to, tmem, tg);
    const reg = 0.37;
    await gateBackward(rec, du, dz, tdg, tg, tz, tw, tlw, reg);
    await rec.submit();
    const got = await readTensors(gpu, [
      rows,
      back,
      a1,
      dh,
      a2,
      g,
      att,
      dO,
      dmem,
      dg,
      du,
      dz,
    ]) as Float32Array[];
    const [gRows, gBack, gA1, gDh, gA2, gG, gAtt, gDo, gDmem, gDg, gDu, gDz] = got;

    // Permutations are exact.
    compare("headRows", gRows, headRowsRef(x, B, H, T, D), { atol: 0, rtol: 0 }, [H, N, D]);
    compare("headRowsBackward (inverse)", gBack, x, { atol: 0, rtol: 0 }, [B, H, T, D]);
    // exp in f32: a few ulps; tolerances leave ~10× margin over what was observed (≤ 3e-7 relative).
    const tol = { atol: 1e-6, rtol: 4e-6 };
    compare("silu", gA1, Float64Array.from(hPre, siluRef), tol, [H, N, R]);
    compare("siluBackward", gDh, Float64Array.from(hPre, (v, i) => dout[i] * siluGradRef(v)), tol, [H, N, R]);
    const gate = gateForwardRef(zPre, w, H, N, S);
    compare("gateForward a2", gA2, gate.a, tol, [H, N, S]);
    compare("gateForward g", gG, gate.g, tol, [H, N]);
    compare("gatedMix", gAtt, gatedMixRef(o, mem, gIn, B, H, T, D), tol, [B, T, H * D]);
    const mb = gatedMixBackwardRef(datt, o, mem, gIn, B, H, T, D);
    compare("gatedMixBackward dO", gDo, mb.dO, tol, [B, H, T, D]);
    compare("gatedMixBackward dmem", gDmem, mb.dmem, tol, [H, N, D]);
    compare("gatedMixBackward dg", gDg, mb.dg, { atol: 4e-6, rtol: 4e-6 }, [H, N]);
    const gb = gateBackwardRef(dgIn, gIn, zPre, w, lw, reg, H, N, S);
    compare("gateBackward du", gDu, gb.du, tol, [H, N]);
    compare("gateBackward dz", gDz, gb.dz, tol, [H, N, S]);
    for (const t of made) t.buffer.destroy();
  });
}

Deno.test("gated memory kernels: a repeated run is bitwise identical", async () => {
  const gpu = await getGpu();
  const B = 2, H = 3, T = 9, D = 12, S = 3, N = B * T;
  const made: Tensor[] = [];
  const from = (shape: number[], data: Float32Array) => {
    const t = tensorFrom(gpu, shape, data);
    made.push(t);
    return t;
  };
  const datt = from([B, T, H * D], uniform(N * H * D, 1));
  const o = from([B, H, T, D], uniform(B * H * T * D, 2));
  const mem = from([H, N, D], uniform(H * N * D, 3));
  const g = from([H, N], uniform(H * N, 4, 0, 1));
  const z = from([H, N, S], uniform(H * N * S, 5));
  const w = from([H, S], uniform(H * S, 6));
  const lw = from([N], uniform(N, 7, 0, 1));
  const run = async () => {
    const dO = createTensor(gpu, [B, H, T, D]),
      dmem = createTensor(gpu, [H, N, D]),
      dg = createTensor(gpu, [H, N]);
    const du = createTensor(gpu, [H, N]), dz = createTensor(gpu, [H, N, S]);
    const rec = new Recorder(gpu, "repeat");
    await gatedMixBackward(rec, dO, dmem, dg, datt, o, mem, g);
    await gateBackward(rec, du, dz, dg, g, z, w, lw, 0.5);
    await rec.submit();
    const read = await readTensors(gpu, [dO, dmem, dg, du, dz]);
    for (const t of [dO, dmem, dg, du, dz]) t.buffer.destroy();
    return read.map((a) => new Uint32Array((a as Float32Array).buffer));
  };
  const first = await run();
  const second = await run();
  first.forEach((a, i) => assert.deepEqual(a, second[i], `output ${i} differs between runs`));
  for (const t of made) t.buffer.destroy();
});

Deno.test("gated memory table: per layer H·(4D² + D·⌊√D⌋ + ⌊√D⌋), names keep self_attn., then the head LoRA", () => {
  const config = parseModelConfig({
    family: "llama",
    vocabSize: 41,
    maxPositions: 32,
    nLayer: 3,
    nHead: 4,
    nKvHead: 2,
    nEmbd: 48,
    nInner: 44,
  });
  // D = 12, S = 3: 4·144 + 36 + 3 = 615 per head.
  assert.equal(gatedMemoryParameterCount(config), 3 * 4 * 615);
  const table = gatedMemoryTable(config);
  // The lm_head LoRA (r = 2) adds A (2, C) and B (V, 2) last: 2·(48 + 41).
  assert.equal(liftParameterCount(config), 3 * 4 * 615 + 2 * (48 + 41));
  assert.equal(table.entries.reduce((n, e) => n + e.numel, 0), liftParameterCount(config));
  assert.deepEqual(table.entries.slice(-2).map((e) => [e.name, e.shape]), [
    ["lm_head.lora_A", [2, 48]],
    ["lm_head.lora_B", [41, 2]],
  ]);
  // Kaiming-uniform A within ±1/√C and B zero (PEFT's init).
  const values = new Float32Array(table.size);
  initGatedMemory(values, table, 5);
  const [a, b] = table.entries.slice(-2);
  const av = values.subarray(a.offset, a.offset + a.numel);
  assert.ok(av.every((v) => Math.abs(v) <= 1 / Math.sqrt(48)) && av.some((v) => v !== 0));
  assert.ok(values.subarray(b.offset, b.offset + b.numel).every((v) => v === 0));
  assert.deepEqual(gatedMemoryNames(2), {
    W1: "h.2.self_attn.mem_proj.W1",
    W2: "h.2.self_attn.mem_proj.W2",
    V: "h.2.self_attn.gate_proj.V",
    w: "h.2.self_attn.gate_proj.w",
  });
  assert.deepEqual(table.byName.get("h.1.self_attn.gate_proj.V")!.shape, [4, 3, 12]);
});

for (const [family, training] of [["llama", true], ["gpt2", false]] as const) {
  Deno.test(`one layer's Gated Memory hooks vs float64 (${family}, ${training ? "training" : "eval graph"})`, async () => {
    const gpu = await getGpu();
    const config = family === "llama"
      ? parseModelConfig({
        family,
        vocabSize: 11,
        maxPositions: 16,
        nLayer: 2,
        nHead: 3,
        nKvHead: 1,
        nEmbd: 36,
        nInner: 20,
      })
      : parseModelConfig({ family, vocabSize: 11, maxPositions: 16, nLayer: 2, nHead: 3, nEmbd: 36 });
    const B = 2, T = 7, H = 3, D = 12, S = 3, N = B * T, L = 2;
    const weights = createWeights(gpu, config, initialWeights(config, 1));
    const regularization = 0.3;
    const adapter = createGatedMemoryAdapter(gpu, config, { seed: 5, document: 2, regularization });
    // Larger weights than the init so the gate and memory move far from their starting values.
    const values = uniform(adapter.table.size, 11, -0.6, 0.6);
    for (let l = 0; l < L; l++) {
      const e = adapter.table.byName.get(gatedMemoryNames(l).w)!;
      for (let i = e.offset; i < e.offset + e.numel; i++) values[i] *= 4;
    }
    upload(gpu, adapter.params, values);
    const grads = training ? createTensor(gpu, [adapter.table.size], { label: "grads" }) : null;
    const lossWeights = uniform(N, 12, 0, 0.1);
    const ctx: AttachContext = {
      B,
      T,
      dims: weights.dims,
      family,
      training,
      weights,
      grads,
      positions: tensorFrom(gpu, [N], Uint32Array.from({ length: N }, (_, n) => n % T), { dtype: "u32" }),
      lossWeights: tensorFrom(gpu, [N], lossWeights),
    };
    const hooks = adapter.attach(ctx);
    const layer = 1;
    const o = uniform(B * H * T * D, 13), qPre = uniform(B * H * T * D, 14, -2, 2);
    const v = uniform(B * 1 * T * D, 15), datt = uniform(N * H * D, 16);
    const to = tensorFrom(gpu, [B, H, T, D], o), tq = tensorFrom(gpu, [B, H, T, D], qPre);
    const tv = tensorFrom(gpu, [B, 1, T, D], v);
    const att = createTensor(gpu, [B, T, H * D]);
    poison(gpu, att);
    const rec = new Recorder(gpu, "layer forward");
    await hooks.mixOutput!(rec, layer, { o: to, qPre: tq, v: tv, att });
    await rec.submit();
    const p = (name: string) => {
      const e = adapter.table.byName.get(name)!;
      return values.subarray(e.offset, e.offset + e.numel);
    };
    const n = gatedMemoryNames(layer);
    const P = { W1: p(n.W1), W2: p(n.W2), V: p(n.V), w: p(n.w) };
    const sz = { B, T, H, D, S };
    const ref = gatedMemoryForward(o, qPre, P, sz);
    const gatesSpread = Math.max(...ref.g) - Math.min(...ref.g);
    assert.ok(gatesSpread > 0.3, `test weights leave the gate nearly constant (spread ${gatesSpread})`);
    const tol = { atol: 3e-6, rtol: 1e-5 };
    const f = compare("layer att", await readF32(gpu, att), ref.att, tol, [B, T, H * D]);
    let report = `forward max |err| ${f.maxAbs.toExponential(2)}`;

    if (training) {
      // Garbage in the query buffer between forward and backward: the hook must use what it kept.
      upload(gpu, tq, uniform(B * H * T * D, 99));
      const dO = createTensor(gpu, [B, H, T, D]), dqPre = createTensor(gpu, [B, H, T, D]);
      const dv = createTensor(gpu, [B, 1, T, D]);
      for (const t of [dO, dqPre]) poison(gpu, t);
      upload(gpu, grads!, new Float32Array(adapter.table.size));
      const tdatt = tensorFrom(gpu, [B, T, H * D], datt);
      const brec = new Recorder(gpu, "layer backward");
      const written = await hooks.mixOutputBackward!(brec, layer, {
        o: to,
        v: tv,
        att,
        datt: tdatt,
        dO,
        dqPre,
        dv,
      });
      await brec.submit();
      assert.deepEqual(written, { dq: true, dv: false });
      const [gDo, gDq, gGrads] = await readTensors(gpu, [dO, dqPre, grads!]) as Float32Array[];
      const refDo = new Float64Array(B * H * T * D), refDq = new Float64Array(B * H * T * D);
      const refGrads = {
        W1: new Float64Array(H * 2 * D * D),
        W2: new Float64Array(H * D * 2 * D),
        V: new Float64Array(H * S * D),
        w: new Float64Array(H * S),
      };
      gatedMemoryBackward(
        refDo,
        refDq,
        refGrads,
        datt,
        o,
        qPre,
        P,
        lossWeights,
        regularization / (H * L),
        sz,
      );
      const worst: string[] = [];
      for (
        const [name, gotArr, want] of [
          ["dO", gDo, refDo],
          ["dqPre", gDq, refDq],
          ...(["W1", "W2", "V", "w"] as const).map((k) => {
            const e = adapter.table.byName.get(n[k])!;
            return [k, gGrads.subarray(e.offset, e.offset + e.numel), refGrads[k]] as const;
          }),
        ] as const
      ) {
        const max = Math.max(...Array.from(want, Math.abs));
        assert.ok(max > 0, `${name}: the reference gradient is all zero`);
        // Sums over B·T = 14 tokens of products of O(1) values: relative to the tensor's largest entry.
        const r = compare(`layer ${name}`, gotArr, want, { atol: 2e-6 * max, rtol: 1e-5 });
        worst.push(`${name} ${(r.maxAbs / max).toExponential(2)}`);
      }
      // Layer 0's gradients are untouched (the hook writes only its layer).
      const e0 = adapter.table.byName.get(gatedMemoryNames(0).W1)!;
      assert.ok(gGrads.subarray(e0.offset, e0.offset + e0.numel).every((x) => x === 0));
      report += `; backward max |err|/max: ${worst.join(", ")}`;
      for (const t of [dO, dqPre, dv, tdatt]) t.buffer.destroy();
    }
    console.log(`${family} ${training ? "training" : "eval"}: ${report}`);
    hooks.destroy?.();
    for (const t of [to, tq, tv, att, ctx.positions, ctx.lossWeights]) t.buffer.destroy();
    grads?.buffer.destroy();
    adapter.params.buffer.destroy();
    weights.params.buffer.destroy();
  });
}
