import assert from "node:assert/strict";
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readTensors, type Tensor, tensorFrom } from "../src/gpu/tensor.ts";
import {
  lowrankAttentionBackward,
  lowrankAttentionForward,
  type LowrankAttentionShape,
} from "../src/ops/lowrank_attention.ts";
import { fillNormal } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";
import { centralDifferences, dot } from "./reference/layers.ts";
import * as ref from "./reference/lowrank_attention.ts";

const f64 = (x: ArrayLike<number>) => Float64Array.from(x);
const normal = (n: number, seed: number, stream: number) => fillNormal(new Float32Array(n), seed, stream);

interface Inputs {
  a: Float32Array;
  w: Float32Array;
  v: Float32Array;
  dout: Float32Array;
  out0: Float32Array;
  dv0: Float32Array;
}

/** Standard normal a, w, v, dout and starting values for the accumulated out and dv. */
function makeInputs(s: LowrankAttentionShape, seed: number): Inputs {
  const { B, H, Hkv, T, R, D } = s;
  return {
    a: normal(B * H * T * R, seed, 1),
    w: normal(B * H * T * R, seed, 2),
    v: normal(B * Hkv * T * D, seed, 3),
    dout: normal(B * H * T * D, seed, 4),
    out0: normal(B * H * T * D, seed, 5),
    dv0: normal(B * Hkv * T * D, seed, 6),
  };
}

interface RunOptions {
  chunkSize: number;
  scale?: number;
  /** Add into out (starting from out0) instead of writing a poisoned out. */
  accumulate: boolean;
}

/** Forward and backward in one recording; returns out, da, dw, dv read back. */
async function runLowrank(
  gpu: Gpu,
  s: LowrankAttentionShape,
  x: Inputs,
  opts: RunOptions,
): Promise<Float32Array[]> {
  const { B, H, Hkv, T, R, D } = s;
  const up = (label: string, shape: number[], data: Float32Array) => tensorFrom(gpu, shape, data, { label });
  const a = up("a", [B, H, T, R], x.a), w = up("w", [B, H, T, R], x.w);
  const v = up("v", [B, Hkv, T, D], x.v), dout = up("dout", [B, H, T, D], x.dout);
  const out = up("out", [B, H, T, D], x.out0), dv = up("dv", [B, Hkv, T, D], x.dv0);
  const da = createTensor(gpu, [B, H, T, R], { label: "da" });
  const dw = createTensor(gpu, [B, H, T, R], { label: "dw" });
  for (const t of [da, dw, ...(opts.accumulate ? [] : [out])]) poison(gpu, t);
  const rec = new Recorder(gpu, "lowrankAttention");
  const common = { chunkSize: opts.chunkSize, scale: opts.scale };
  await lowrankAttentionForward(rec, out, a, w, v, s, { ...common, accumulate: opts.accumulate });
  await lowrankAttentionBackward(rec, da, dw, dv, dout, a, w, v, s, common);
  await rec.submit();
  const got = await readTensors(gpu, [out, da, dw, dv]) as Float32Array[];
  for (const t of [a, w, v, dout, out, dv, da, dw] as Tensor[]) t.buffer.destroy();
  rec.destroy();
  return got;
}

Deno.test("low-rank attention f64 references: backward matches central differences, scan matches map", () => {
  const s = { B: 1, H: 4, Hkv: 2, T: 6, R: 3, D: 4 };
  const x = makeInputs(s, 1);
  const a = f64(x.a), w = f64(x.w), v = f64(x.v), g = f64(x.dout);
  const scale = 0.7;
  const out = new Float64Array(s.B * s.H * s.T * s.D);
  const loss = () => (ref.lowrankAttentionForward(out, a, w, v, s, scale), dot(out, g));
  const da = new Float64Array(a.length), dw = new Float64Array(w.length), dv = new Float64Array(v.length);
  ref.lowrankAttentionBackward(da, dw, dv, g, a, w, v, s, scale);
  // The loss is linear in each of a, w, v separately, so central differences have no truncation error;
  // what is left is rounding, ~ε·|L|/h ≈ 1e-16·10/1e-6 = 1e-9.
  const tol = { atol: 1e-8, rtol: 1e-8 };
  compare("da vs central differences", da, centralDifferences(loss, a), tol);
  compare("dw vs central differences", dw, centralDifferences(loss, w), tol);
  compare("dv vs central differences (summed over the GQA group)", dv, centralDifferences(loss, v), tol);

  // The O(T·R·D) prefix-sum form against the materialised T×T map: the same sums in another order.
  const big = { B: 2, H: 4, Hkv: 2, T: 57, R: 5, D: 6 };
  const y = makeInputs(big, 2);
  const mapOut = new Float64Array(big.B * big.H * big.T * big.D), scanOut = new Float64Array(mapOut.length);
  ref.lowrankAttentionForward(mapOut, f64(y.a), f64(y.w), f64(y.v), big, 0.3);
  ref.lowrankAttentionScan(scanOut, f64(y.a), f64(y.w), f64(y.v), big, 0.3);
  compare("prefix-sum reference vs materialised map", scanOut, mapOut, { atol: 1e-12, rtol: 1e-12 });
});

interface Case {
  T: number;
  R: number;
  D: number;
  Hkv: number;
  chunkSize: number;
  scale?: number;
  accumulate: boolean;
}

// B = 2, H = 4. Chunk sizes never divide T (except T = 1), so every case has a partial last chunk. TC = 32
// is the largest used: on llvmpipe the first compile of a chunk size grows like TC² (TC = 64 takes ~40 s).
const CASES: Case[] = [
  { T: 1, R: 1, D: 8, Hkv: 4, chunkSize: 16, accumulate: false },
  { T: 7, R: 4, D: 24, Hkv: 2, chunkSize: 4, accumulate: true },
  { T: 33, R: 7, D: 32, Hkv: 4, chunkSize: 16, scale: 0.37, accumulate: false },
  { T: 33, R: 1, D: 24, Hkv: 2, chunkSize: 5, accumulate: true },
  { T: 100, R: 4, D: 8, Hkv: 2, chunkSize: 16, accumulate: false },
  { T: 100, R: 7, D: 8, Hkv: 4, chunkSize: 7, accumulate: true },
  { T: 257, R: 7, D: 24, Hkv: 2, chunkSize: 16, accumulate: false },
  { T: 257, R: 1, D: 32, Hkv: 4, chunkSize: 32, accumulate: true },
  { T: 257, R: 4, D: 32, Hkv: 2, chunkSize: 12, scale: 1.3, accumulate: false },
];

/** f32 unit roundoff: one rounding changes a value by at most this fraction of it. */
const EPS = 2 ** -24;
const abs = (x: ArrayLike<number>) => Float64Array.from(x, Math.abs);

/** Largest |got − want| / (ε·mag) over all elements (mag > 0): the error in roundings of Σ|terms|. */
function roundings(got: Float32Array, want: Float64Array, mag: Float64Array): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    if (mag[i] > 0) worst = Math.max(worst, Math.abs(got[i] - want[i]) / (EPS * mag[i]));
  }
  return worst;
}

function maxOf(x: Float64Array): number {
  let m = 0;
  for (const y of x) m = Math.max(m, y);
  return m;
}

Deno.test("lowrankAttentionForward and Backward match the f64 reference on awkward sizes", async () => {
  const gpu = await getGpu();
  const worst = { out: 0, da: 0, dw: 0, dv: 0 };
  for (const [n, c] of CASES.entries()) {
    const s = { B: 2, H: 4, Hkv: c.Hkv, T: c.T, R: c.R, D: c.D };
    const x = makeInputs(s, 300 + n);
    const [out, da, dw, dv] = await runLowrank(gpu, s, x, c);
    const scale = c.scale ?? 1 / Math.sqrt(c.R);
    const wOut = c.accumulate ? f64(x.out0) : new Float64Array(out.length);
    ref.lowrankAttentionForward(wOut, f64(x.a), f64(x.w), f64(x.v), s, scale, c.accumulate);
    const wDa = new Float64Array(da.length), wDw = new Float64Array(dw.length), wDv = f64(x.dv0);
    ref.lowrankAttentionBackward(wDa, wDw, wDv, f64(x.dout), f64(x.a), f64(x.w), f64(x.v), s, scale);
    // The same maps on |inputs| give each output's Σ|terms|, which bounds its f32 rounding error.
    const mOut = c.accumulate ? abs(x.out0) : new Float64Array(out.length);
    ref.lowrankAttentionForward(mOut, abs(x.a), abs(x.w), abs(x.v), s, Math.abs(scale), c.accumulate);
    const mDa = new Float64Array(da.length), mDw = new Float64Array(dw.length), mDv = abs(x.dv0);
    const absScale = Math.abs(scale);
    ref.lowrankAttentionBackward(mDa, mDw, mDv, abs(x.dout), abs(x.a), abs(x.w), abs(x.v), s, absScale);
    const mode = c.accumulate ? " (out +=)" : "";
    const name = `T=${c.T} R=${c.R} D=${c.D} Hkv=${c.Hkv} TC=${c.chunkSize}${mode}`;
    // Each output is an f32 sum of products in a fixed tree: an R- or D-term dot product, ≤ TC tile
    // terms, ≤ TC chunk-sum terms, ≤ ⌈T/TC⌉ scan steps and ≤ 3 final adds, so its error is at most
    // ~(R + D + 2·TC + T/TC)·ε·Σ|terms| in the worst case and far less typically (measured ≤ 3.5·ε·Σ|terms|,
    // printed below). The tolerance is 8·ε·Σ|terms| of the tensor's largest element.
    const tolFor = (mag: Float64Array) => ({ atol: 8 * EPS * maxOf(mag), rtol: 0 });
    const shapeRR = [2, 4, c.T, c.R], shapeKV = [2, c.Hkv, c.T, c.D];
    compare(`out ${name}`, out, wOut, tolFor(mOut), [2, 4, c.T, c.D]);
    compare(`da ${name}`, da, wDa, tolFor(mDa), shapeRR);
    compare(`dw ${name}`, dw, wDw, tolFor(mDw), shapeRR);
    compare(`dv ${name}`, dv, wDv, tolFor(mDv), shapeKV);
    // And element by element, against each one's own Σ|terms|.
    const checks: [keyof typeof worst, Float32Array, Float64Array, Float64Array][] = [
      ["out", out, wOut, mOut],
      ["da", da, wDa, mDa],
      ["dw", dw, wDw, mDw],
      ["dv", dv, wDv, mDv],
    ];
    for (const [key, got, want, mag] of checks) {
      const r = roundings(got, want, mag);
      assert.ok(r <= 8, `${key} ${name}: an element is off by ${r.toFixed(2)}·ε·Σ|terms| (> 8)`);
      worst[key] = Math.max(worst[key], r);
    }
  }
  console.log(
    `low-rank attention max |err| / (ε·Σ|terms|): out ${worst.out.toFixed(2)}, da ${worst.da.toFixed(2)}, ` +
      `dw ${worst.dw.toFixed(2)}, dv ${worst.dv.toFixed(2)}`,
  );
});

Deno.test("low-rank attention gives identical bits when run twice (GQA dv sum included)", async () => {
  const gpu = await getGpu();
  const s = { B: 2, H: 4, Hkv: 2, T: 100, R: 4, D: 24 };
  const x = makeInputs(s, 11);
  const opts = { chunkSize: 16, accumulate: true };
  const first = await runLowrank(gpu, s, x, opts);
  const second = await runLowrank(gpu, s, x, opts);
  ["out", "da", "dw", "dv"].forEach((name, i) => assertBitwiseEqual(`${name} rerun`, first[i], second[i]));
});

Deno.test("lowrankAttentionForward at T = 8192 matches the O(T·R·D) f64 prefix-sum reference", async () => {
  const gpu = await getGpu();
  const s = { B: 1, H: 2, Hkv: 1, T: 8192, R: 8, D: 64 };
  const x = makeInputs(s, 21);
  const { B, H, Hkv, T, R, D } = s;
  const a = tensorFrom(gpu, [B, H, T, R], x.a, { label: "a" });
  const w = tensorFrom(gpu, [B, H, T, R], x.w, { label: "w" });
  const v = tensorFrom(gpu, [B, Hkv, T, D], x.v, { label: "v" });
  const out = createTensor(gpu, [B, H, T, D], { label: "out" });
  poison(gpu, out);
  const rec = new Recorder(gpu, "lowrankAttention T=8192");
  await lowrankAttentionForward(rec, out, a, w, v, s);
  await rec.submit();
  await gpu.device.queue.onSubmittedWorkDone();
  const timed = await rec.submitTimed();
  const [got] = await readTensors(gpu, [out]) as Float32Array[];
  const want = new Float64Array(got.length);
  ref.lowrankAttentionScan(want, f64(x.a), f64(x.w), f64(x.v), s, 1 / Math.sqrt(R));
  const mag = new Float64Array(got.length);
  ref.lowrankAttentionScan(mag, abs(x.a), abs(x.w), abs(x.v), s, 1 / Math.sqrt(R));
  // As for the small cases: an f32 sum's error is a few roundings of its Σ|terms| (here 8192 terms per
  // late row, through 16-token chunk sums and a 512-step scan). A few rows through compare() so a failure
  // prints them (the first, a chunk's last and next, the middle, the last); then every element.
  for (const i of [0, 15, 16, 4097, T - 1]) {
    const row = (H - 1) * T + i;
    const at = [row * D, row * D + D] as const;
    compare(`out row ${i} of head ${H - 1}`, got.subarray(...at), want.subarray(...at), {
      atol: 8 * EPS * maxOf(mag.subarray(...at)),
      rtol: 0,
    });
  }
  const r = roundings(got, want, mag);
  assert.ok(r <= 8, `an element is off by ${r.toFixed(2)}·ε·Σ|terms| (> 8)`);
  console.log(
    `lowrankAttentionForward B=1 H=2 Hkv=1 T=8192 R=8 D=64 TC=16: ${timed.ms.toFixed(1)} ms ` +
      `(${timed.source}); max |err| / (ε·Σ|terms|) ${r.toFixed(2)}`,
  );
  for (const t of [a, w, v, out]) t.buffer.destroy();
  rec.destroy();
});

Deno.test("low-rank attention launchers refuse wrong shapes, dtypes and options, naming them", async () => {
  const gpu = await getGpu();
  const rec = new Recorder(gpu, "errors");
  const s = { B: 2, H: 4, Hkv: 2, T: 7, R: 3, D: 8 };
  const t = (label: string, shape: number[], dtype: "f32" | "u32" = "f32") =>
    createTensor(gpu, shape, { label, dtype });
  const a = t("a", [2, 4, 7, 3]), w = t("w", [2, 4, 7, 3]), v = t("v", [2, 2, 7, 8]);
  const out = t("out", [2, 4, 7, 8]), dout = t("dout", [2, 4, 7, 8]);
  const da = t("da", [2, 4, 7, 3]), dw = t("dw", [2, 4, 7, 3]), dv = t("dv", [2, 2, 7, 8]);
  const vFull = t("vFull", [2, 4, 7, 8]), ids = t("ids", [2, 4, 7, 3], "u32");
  const rejects = (body: () => Promise<void>, type: ErrorConstructor, text: string) =>
    assert.rejects(body, (e: Error) => {
      assert.ok(e instanceof type, `${e.name}: ${e.message}`);
      assert.ok(e.message.includes(text), `"${e.message}" lacks "${text}"`);
      return true;
    });
  await rejects(
    () => lowrankAttentionForward(rec, out, a, w, vFull, s),
    RangeError,
    "lowrankAttentionForward: vFull has shape [2, 4, 7, 8] (448 elements), expected (B, Hkv, T, D) = " +
      "(2, 2, 7, 8) (224 elements)",
  );
  await rejects(
    () => lowrankAttentionForward(rec, out, ids, w, v, s),
    TypeError,
    "lowrankAttentionForward: ids is u32, expected f32",
  );
  await rejects(
    () => lowrankAttentionForward(rec, out, a, w, v, { ...s, Hkv: 3 }),
    RangeError,
    "H = 4 query heads is not a multiple of Hkv = 3 kv heads",
  );
  await rejects(
    () => lowrankAttentionForward(rec, out, a, w, v, { ...s, T: 0 }),
    RangeError,
    "T = 0 must be a positive integer",
  );
  await rejects(
    () => lowrankAttentionBackward(rec, da, dw, dv, dout, a, w, v, s, { chunkSize: 65 }),
    RangeError,
    "chunkSize = 65 must be a positive integer whose 2 TC×TC f32 tile(s) fit",
  );
  await rejects(
    () => lowrankAttentionBackward(rec, da, dw, dv, dout, a, w, v, { ...s, T: 65536 * 2 }, { chunkSize: 2 }),
    RangeError,
    "T = 131072 makes 65536 chunks of 2 tokens",
  );
  await rejects(
    () => lowrankAttentionForward(rec, out, a, w, v, s, { scale: NaN }),
    RangeError,
    "scale = NaN must be finite",
  );
  await rejects(
    () => lowrankAttentionBackward(rec, da, a, dv, dout, a, w, v, s),
    RangeError,
    "lowrankAttentionBackward: output a and input a share one GPU buffer",
  );
  await rejects(
    () => lowrankAttentionBackward(rec, da, dw, dv, out, a, w, v, { ...s, D: 4 }),
    RangeError,
    "lowrankAttentionBackward: dv has shape [2, 2, 7, 8] (224 elements), expected (B, Hkv, T, D)",
  );
  assert.equal(rec.dispatchCount, 0);
  for (const x of [a, w, v, out, dout, da, dw, dv, vFull, ids]) x.buffer.destroy();
});
