/**
 * Decode attention (kernels/decode_attention.wgsl) and greedy argmax (kernels/argmax.wgsl) against float64
 * references written from their definitions, on awkward sizes with poisoned outputs; cache rows past the
 * query's position hold NaN, so reading one would show.
 */
import assert from "node:assert/strict";
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readTensors, tensorFrom, upload } from "../src/gpu/tensor.ts";
import { argmaxNext, argmaxRows } from "../src/ops/argmax.ts";
import { appendKv, decodeAttention, decodeKeysPerSplit } from "../src/ops/decode_attention.ts";
import { fillNormal, fillUniform, Rng } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";

/** Float64 attention of the token at p over keys 0 … p (plus the sink): o (H, D). */
function referenceDecode(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  scale: Float32Array,
  sink: Float32Array | null,
  s: { H: number; Hkv: number; Tmax: number; D: number; p: number },
): Float64Array {
  const { H, Hkv, Tmax, D, p } = s;
  const o = new Float64Array(H * D);
  for (let h = 0; h < H; h++) {
    const kv = Math.floor(h / (H / Hkv));
    const scores: number[] = [];
    for (let j = 0; j <= p; j++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[h * D + d] * k[(kv * Tmax + j) * D + d];
      scores.push(scale[h] * dot);
    }
    const m = Math.max(...scores, sink ? sink[h] : -Infinity);
    let den = sink ? Math.exp(sink[h] - m) : 0;
    for (const x of scores) den += Math.exp(x - m);
    for (let j = 0; j <= p; j++) {
      const w = Math.exp(scores[j] - m) / den;
      for (let d = 0; d < D; d++) o[h * D + d] += w * v[(kv * Tmax + j) * D + d];
    }
  }
  return o;
}

interface Case {
  name: string;
  H: number;
  Hkv: number;
  D: number;
  Tmax: number;
  p: number;
  sink: boolean;
  keysPerSplit?: number;
  seed: number;
}

const cases: Case[] = [
  { name: "one cached key, D=12", H: 3, Hkv: 3, D: 12, Tmax: 9, p: 0, sink: false, seed: 1 },
  { name: "7 keys, D=20, GQA 4/2, sink", H: 4, Hkv: 2, D: 20, Tmax: 11, p: 6, sink: true, seed: 2 },
  { name: "331 keys, D=12, GQA 6/2, sink", H: 6, Hkv: 2, D: 12, Tmax: 400, p: 330, sink: true, seed: 3 },
  { name: "301 keys, D=20, MQA 5/1", H: 5, Hkv: 1, D: 20, Tmax: 301, p: 300, sink: false, seed: 4 },
  {
    name: "1999 keys in splits of 7, D=16, sink",
    H: 2,
    Hkv: 1,
    D: 16,
    Tmax: 2003,
    p: 1998,
    sink: true,
    keysPerSplit: 7,
    seed: 5,
  },
  { name: "D=128, 513 keys", H: 2, Hkv: 2, D: 128, Tmax: 600, p: 512, sink: true, seed: 6 },
];

async function runDecode(gpu: Gpu, c: Case) {
  const { H, Hkv, D, Tmax, p } = c;
  const q = fillNormal(new Float32Array(H * D), c.seed, 0);
  const k = fillNormal(new Float32Array(Hkv * Tmax * D), c.seed, 1);
  const v = fillNormal(new Float32Array(Hkv * Tmax * D), c.seed, 2);
  // Rows past p are NaN: the kernel must never read them.
  for (let h = 0; h < Hkv; h++) {
    for (let j = p + 1; j < Tmax; j++) {
      k.fill(NaN, (h * Tmax + j) * D, (h * Tmax + j + 1) * D);
      v.fill(NaN, (h * Tmax + j) * D, (h * Tmax + j + 1) * D);
    }
  }
  // Per-head scales around 1/√D, some sharp; sinks spread across the score range.
  const scale = fillUniform(new Float32Array(H), c.seed, 3, 0.3 / Math.sqrt(D), 3 / Math.sqrt(D));
  const sink = c.sink ? fillUniform(new Float32Array(H), c.seed, 4, -2, 3) : null;
  const cache = {
    k: tensorFrom(gpu, [Hkv, Tmax, D], k, { label: "k cache" }),
    v: tensorFrom(gpu, [Hkv, Tmax, D], v, { label: "v cache" }),
  };
  const qT = tensorFrom(gpu, [1, H, 1, D], q, { label: "q" });
  const scaleT = tensorFrom(gpu, [H], scale, { label: "logitScale" });
  const sinkT = sink ? tensorFrom(gpu, [H], sink, { label: "sinkLogit" }) : undefined;
  const position = tensorFrom(gpu, [2], [p, 77], { label: "position", dtype: "u32" });
  const o = createTensor(gpu, [1, H, 1, D], { label: "o" });
  poison(gpu, o);
  const rec = new Recorder(gpu, "decode attention test");
  await decodeAttention(rec, o, { q: qT, cache, logitScale: scaleT, sinkLogit: sinkT, position }, {
    keysPerSplit: c.keysPerSplit,
  });
  await rec.submit();
  const [got] = await readTensors(gpu, [o]);
  const want = referenceDecode(q, k, v, scale, sink, { H, Hkv, Tmax, D, p });
  for (const t of [cache.k, cache.v, qT, scaleT, position, o, ...(sinkT ? [sinkT] : [])]) t.buffer.destroy();
  return { got: got as Float32Array, want };
}

for (const c of cases) {
  Deno.test(`decodeAttention vs float64: ${c.name}`, async () => {
    const gpu = await getGpu();
    const { got, want } = await runDecode(gpu, c);
    // o is a convex combination of N(0, 1) rows; f32 exp and sums over ≤ 2000 keys measured ≤ 5e-7.
    const r = compare(c.name, got, want, { atol: 2e-6, rtol: 2e-6 }, [c.H, c.D]);
    console.log(`  ${c.name}: max |err| ${r.maxAbs.toExponential(2)} over ${r.n} values`);
  });
}

Deno.test("decodeAttention repeats bit for bit and its default split depends on Tmax only", async () => {
  const gpu = await getGpu();
  const c = cases[2];
  const a = await runDecode(gpu, c);
  const b = await runDecode(gpu, c);
  assertBitwiseEqual("two runs", a.got, b.got);
  assert.equal(decodeKeysPerSplit(400), 64);
  assert.equal(decodeKeysPerSplit(65536), 64);
  assert.equal(decodeKeysPerSplit(65537), 128);
  assert.equal(decodeKeysPerSplit(1 << 20), 1024);
});

Deno.test("appendKv writes cache row p of every kv head and nothing else", async () => {
  const gpu = await getGpu();
  const Hkv = 3, Tmax = 13, D = 20, p = 11;
  const k0 = fillNormal(new Float32Array(Hkv * Tmax * D), 9, 0);
  const v0 = fillNormal(new Float32Array(Hkv * Tmax * D), 9, 1);
  const kNew = fillNormal(new Float32Array(Hkv * D), 9, 2);
  const vNew = fillNormal(new Float32Array(Hkv * D), 9, 3);
  const cache = {
    k: tensorFrom(gpu, [Hkv, Tmax, D], k0, { label: "k cache" }),
    v: tensorFrom(gpu, [Hkv, Tmax, D], v0, { label: "v cache" }),
  };
  const kT = tensorFrom(gpu, [1, Hkv, 1, D], kNew, { label: "k" });
  const vT = tensorFrom(gpu, [1, Hkv, 1, D], vNew, { label: "v" });
  const position = tensorFrom(gpu, [1], [p], { label: "p", dtype: "u32" });
  const rec = new Recorder(gpu, "append test");
  await appendKv(rec, cache, kT, vT, position);
  await rec.submit();
  const [k, v] = await readTensors(gpu, [cache.k, cache.v]) as Float32Array[];
  const wantK = k0.slice(), wantV = v0.slice();
  for (let h = 0; h < Hkv; h++) {
    wantK.set(kNew.subarray(h * D, (h + 1) * D), (h * Tmax + p) * D);
    wantV.set(vNew.subarray(h * D, (h + 1) * D), (h * Tmax + p) * D);
  }
  assertBitwiseEqual("k cache", k, wantK);
  assertBitwiseEqual("v cache", v, wantV);
  for (const t of [cache.k, cache.v, kT, vT, position]) t.buffer.destroy();
});

/** Float64 argmax: NaN above everything, then the largest value, ties to the lowest index. */
function referenceArgmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let v = 1; v < row.length; v++) {
    const x = row[v], b = row[best];
    if (Number.isNaN(b)) continue;
    if (Number.isNaN(x) || x > b) best = v;
  }
  return best;
}

Deno.test("argmaxRows: ties to the lowest index, NaN wins, V not a multiple of the workgroup", async () => {
  const gpu = await getGpu();
  for (const V of [1, 37, 257, 1000, 50257]) {
    const rows = 7;
    const logits = fillNormal(new Float32Array(rows * V), V, 0);
    const rng = new Rng(V, 1);
    // Row 1: a tie of the maximum at three indices; row 2: all equal; row 3: a NaN after the maximum;
    // row 4: huge negative values with a tie; row 5: the maximum at the last index; row 6: at index 0.
    const at = (r: number, v: number, x: number) => (logits[r * V + Math.min(v, V - 1)] = x);
    const tie = [rng.int(V), rng.int(V), rng.int(V)];
    for (const v of tie) at(1, v, 9);
    logits.fill(0.25, 2 * V, 3 * V);
    at(3, 0, 50);
    at(3, V - 1, NaN);
    logits.fill(-3e38, 4 * V, 5 * V);
    at(4, Math.floor(V / 2), -1e30);
    at(4, V - 1, -1e30);
    at(5, V - 1, 1e6);
    at(6, 0, 1e6);
    const logitsT = tensorFrom(
      gpu,
      [rows + 2, V],
      new Float32Array([...logits, ...new Float32Array(2 * V)]),
      {
        label: "logits",
      },
    );
    const out = createTensor(gpu, [rows], { label: "argmax", dtype: "u32" });
    const shifted = createTensor(gpu, [rows - 1], { label: "argmax from row 1", dtype: "u32" });
    poison(gpu, out);
    poison(gpu, shifted);
    const rec = new Recorder(gpu, "argmax test");
    await argmaxRows(rec, out, logitsT);
    await argmaxRows(rec, shifted, logitsT, { firstRow: 1 });
    await rec.submit();
    const [got, gotShifted] = await readTensors(gpu, [out, shifted]);
    const want = Array.from({ length: rows }, (_, r) => referenceArgmax(logits.subarray(r * V, (r + 1) * V)));
    assert.deepEqual([...got], want, `V = ${V}`);
    assert.deepEqual([...gotShifted], want.slice(1), `V = ${V}, firstRow 1`);
    if (V > 1) assert.equal(want[1], Math.min(...tie.map((v) => Math.min(v, V - 1))), "tie → lowest index");
    assert.equal(want[2], 0, "all equal → index 0");
    for (const t of [logitsT, out, shifted]) t.buffer.destroy();
  }
});

Deno.test("argmaxNext records the token, writes its embedding at p + 1 and advances the state", async () => {
  const gpu = await getGpu();
  const V = 301, C = 20, P = 9, K = 3;
  const logits = fillNormal(new Float32Array(2 * V), 3, 0);
  const wte = fillNormal(new Float32Array(V * C), 3, 1);
  const wpe = fillNormal(new Float32Array(P * C), 3, 2);
  const logitsT = tensorFrom(gpu, [2, V], logits, { label: "logits" });
  const wteT = tensorFrom(gpu, [V, C], wte, { label: "wte" });
  const wpeT = tensorFrom(gpu, [P, C], wpe, { label: "wpe" });
  const greedy = {
    x: createTensor(gpu, [1, C], { label: "x" }),
    history: createTensor(gpu, [K], { label: "history", dtype: "u32" }),
    state: createTensor(gpu, [2], { label: "state", dtype: "u32" }),
  };
  const wantToken = referenceArgmax(logits.subarray(V, 2 * V));
  const read = async () => await readTensors(gpu, [greedy.x, greedy.history, greedy.state]);
  // With wpe, from p = 4 at step 1: history[1] = token, x = wte[token] + wpe[5], state = [5, 2].
  for (const [withWpe, p, step] of [[true, 4, 1], [false, 4, 2], [true, P - 1, 0], [true, 2, K]] as const) {
    poison(gpu, greedy.x);
    upload(gpu, greedy.history, [7, 7, 7]);
    upload(gpu, greedy.state, [p, step]);
    const rec = new Recorder(gpu, "argmaxNext test");
    await argmaxNext(rec, greedy, logitsT, wteT, withWpe ? wpeT : null, { row: 1 });
    await rec.submit();
    const [x, history, state] = await read();
    assert.deepEqual([...state], [p + 1, step + 1], "state");
    const wantHistory = [7, 7, 7];
    if (step < K) wantHistory[step] = wantToken;
    assert.deepEqual([...history], wantHistory, "history (dropped past K)");
    const want = Float32Array.from(
      { length: C },
      (_, c) => wte[wantToken * C + c] + (withWpe ? (p + 1 < P ? wpe[(p + 1) * C + c] : NaN) : 0),
    );
    if (withWpe && p + 1 >= P) {
      assert.ok([...x].every(Number.isNaN), "a position past wpe gives a NaN row");
    } else {
      assertBitwiseEqual(`x (wpe ${withWpe}, p ${p})`, x as Float32Array, want);
    }
  }
  for (const t of [logitsT, wteT, wpeT, greedy.x, greedy.history, greedy.state]) t.buffer.destroy();
});
