import assert from "node:assert/strict";
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readTensors, type Tensor, tensorFrom } from "../src/gpu/tensor.ts";
import { bucketTokens, encoderBackward, encoderForward } from "../src/ops/encoder.ts";
import { fillNormal, Rng } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";
import * as ref from "./reference/layers.ts";

const f64 = (a: ArrayLike<number>) => Float64Array.from(a);
const normal = (n: number, seed: number, stream: number) => fillNormal(new Float32Array(n), seed, stream);
const NAN_BITS = 0x7fc00000;

function randomTokens(n: number, V: number, seed: number): Uint32Array {
  const rng = new Rng(seed, 9);
  return Uint32Array.from({ length: n }, () => rng.int(V));
}

/**
 * Tokens drawn from a few ids of a vocabulary of V, one of them (V − 1, the last row) on about half
 * the positions, so buckets are long and most rows of dwte are absent.
 */
function repeatedTokens(n: number, V: number, seed: number): Uint32Array {
  const rng = new Rng(seed, 10);
  const few = [0, 3, 17, 42, 150, 151, 298];
  return Uint32Array.from({ length: n }, () => (rng.uniform() < 0.5 ? V - 1 : few[rng.int(few.length)]));
}

Deno.test("bucketTokens groups positions by token id, in position order, padded to N buckets", () => {
  const b = bucketTokens(new Uint32Array([5, 2, 5, 7, 2, 5]), 8);
  assert.equal(b.count, 3);
  assert.deepEqual([...b.ids], [2, 5, 7, 0, 0, 0]);
  assert.deepEqual([...b.start], [0, 2, 5, 6, 6, 6, 6]);
  assert.deepEqual([...b.positions], [1, 4, 0, 2, 5, 3]);
  // A larger random case: every position appears once, under its own token, in ascending order.
  const tokens = repeatedTokens(1000, 300, 1);
  const big = bucketTokens(tokens, 300);
  const seen = new Uint8Array(tokens.length);
  for (let u = 0; u < tokens.length; u++) {
    const first = big.start[u], end = big.start[u + 1];
    if (u >= big.count) {
      assert.equal(first, tokens.length, `padding bucket ${u} is empty`);
      continue;
    }
    assert.ok(end > first, `bucket ${u} is non-empty`);
    if (u > 0) assert.ok(big.ids[u] > big.ids[u - 1], "ids ascend");
    for (let k = first; k < end; k++) {
      assert.equal(tokens[big.positions[k]], big.ids[u]);
      if (k > first) assert.ok(big.positions[k] > big.positions[k - 1], "positions ascend in a bucket");
      seen[big.positions[k]]++;
    }
  }
  assert.ok(seen.every((s) => s === 1));
  assert.equal(big.count, new Set(tokens).size);
});

Deno.test("bucketTokens names the position and id of a token outside the vocabulary", () => {
  assert.throws(
    () => bucketTokens(new Uint32Array([1, 2, 300, 4]), 300),
    (e: Error) =>
      e instanceof RangeError &&
      e.message === "bucketTokens: tokens[2] = 300 is not below the vocabulary size V = 300",
  );
  assert.throws(() => bucketTokens(new Uint32Array(0), 300), RangeError);
});

Deno.test("encoder f64 backward matches central differences", () => {
  const B = 2, T = 3, C = 4, V = 5, maxT = 5, offset = 1;
  const tokens = [1, 4, 1, 0, 1, 3];
  const wte = f64(normal(V * C, 1, 0)), wpe = f64(normal(maxT * C, 1, 1)), g = f64(normal(B * T * C, 1, 2));
  const out = new Float64Array(B * T * C);
  const loss = () => (ref.encoderForward(out, tokens, wte, wpe, B, T, C, offset), ref.dot(out, g));
  const dwte = new Float64Array(V * C), dwpe = new Float64Array(maxT * C);
  ref.encoderBackward(dwte, dwpe, g, tokens, B, T, C, offset);
  // The loss is linear in wte and wpe: central differences are exact up to rounding ε·|L|/h.
  const tol = { atol: 1e-8, rtol: 1e-8 };
  compare("dwte vs central differences", dwte, ref.centralDifferences(loss, wte), tol);
  compare("dwpe vs central differences", dwpe, ref.centralDifferences(loss, wpe), tol);
});

Deno.test("encoderForward matches the f64 reference, with and without wpe and a position offset", async () => {
  const gpu = await getGpu();
  const V = 300;
  for (
    const [B, T, C, offset] of [[1, 1, 7, 0], [1, 7, 33, 3], [3, 11, 100, 0], [2, 33, 768, 1], [5, 7, 1, 0]]
  ) {
    const N = B * T, maxT = T + offset + 2;
    const seed = N * 1000 + C;
    const tokens = randomTokens(N, V, seed);
    const wte = normal(V * C, seed, 0), wpe = normal(maxT * C, seed, 1);
    const tokensT = tensorFrom(gpu, [B, T], tokens, { label: "tokens", dtype: "u32" });
    const wteT = tensorFrom(gpu, [V, C], wte, { label: "wte" });
    const wpeT = tensorFrom(gpu, [maxT, C], wpe, { label: "wpe" });
    const outT = createTensor(gpu, [B, T, C], { label: "out" });
    const outTokensT = createTensor(gpu, [B, T, C], { label: "outTokens" });
    poison(gpu, outT);
    poison(gpu, outTokensT);
    const rec = new Recorder(gpu, "encoder");
    await encoderForward(rec, outT, tokensT, wteT, wpeT, B, T, { positionOffset: offset });
    await encoderForward(rec, outTokensT, tokensT, wteT, null, B, T);
    await rec.submit();
    const [out, outTokens] = await readTensors(gpu, [outT, outTokensT]) as Float32Array[];
    const want = new Float64Array(N * C), wantTokens = new Float64Array(N * C);
    ref.encoderForward(want, tokens, f64(wte), f64(wpe), B, T, C, offset);
    ref.encoderForward(wantTokens, tokens, f64(wte), null, B, T, C);
    // One f32 addition of two f32 values: correctly rounded, within ½ ulp = 2⁻²⁴·|sum|.
    compare(`out ${B}x${T}x${C} offset ${offset}`, out, want, { atol: 0, rtol: 2 ** -24 });
    // Without wpe the rows are copied: identical bits.
    assertBitwiseEqual(`out (no wpe) ${B}x${T}x${C}`, outTokens, Float32Array.from(wantTokens));
    for (const t of [tokensT, wteT, wpeT, outT, outTokensT]) t.buffer.destroy();
  }
});

Deno.test("encoderForward writes a NaN row for a token id ≥ V instead of reading another row", async () => {
  const gpu = await getGpu();
  const V = 5, C = 7;
  const tokensT = tensorFrom(gpu, [1, 3], [4, 5, 0], { label: "tokens", dtype: "u32" });
  const wteT = tensorFrom(gpu, [V, C], normal(V * C, 2, 0), { label: "wte" });
  const outT = createTensor(gpu, [1, 3, C], { label: "out" });
  const rec = new Recorder(gpu, "encoder");
  await encoderForward(rec, outT, tokensT, wteT, null, 1, 3);
  await rec.submit();
  const [out] = await readTensors(gpu, [outT]) as Float32Array[];
  assert.ok(out.subarray(C, 2 * C).every(Number.isNaN), "row of token 5 is NaN");
  assert.ok(out.subarray(0, C).every(Number.isFinite) && out.subarray(2 * C).every(Number.isFinite));
});

interface BackwardCase {
  gpu: Gpu;
  tokens: Uint32Array;
  dout: Float32Array;
  dwte0: Float32Array;
  dwpe0: Float32Array | null;
  B: number;
  T: number;
  C: number;
  V: number;
  maxT: number;
  offset: number;
}

async function runBackward(c: BackwardCase): Promise<Float32Array[]> {
  const { gpu, B, T, C, V, maxT } = c;
  assert.equal(c.tokens.length, B * T);
  const buckets = bucketTokens(c.tokens, V);
  const u32 = (label: string, data: Uint32Array): Tensor =>
    tensorFrom(gpu, [data.length], data, { label, dtype: "u32" });
  const idsT = u32("bucketIds", buckets.ids), startT = u32("bucketStart", buckets.start);
  const positionsT = u32("bucketPositions", buckets.positions);
  const doutT = tensorFrom(gpu, [B, T, C], c.dout, { label: "dout" });
  const dwteT = tensorFrom(gpu, [V, C], c.dwte0, { label: "dwte" });
  const dwpeT = c.dwpe0 ? tensorFrom(gpu, [maxT, C], c.dwpe0, { label: "dwpe" }) : null;
  const rec = new Recorder(gpu, "encoderBackward");
  await encoderBackward(rec, dwteT, dwpeT, doutT, idsT, startT, positionsT, B, T, {
    positionOffset: c.offset,
  });
  await rec.submit();
  const got = await readTensors(gpu, dwpeT ? [dwteT, dwpeT] : [dwteT]) as Float32Array[];
  for (const t of [idsT, startT, positionsT, doutT, dwteT, ...(dwpeT ? [dwpeT] : [])]) t.buffer.destroy();
  return got;
}

/** Initial gradients: random where the kernel adds, NaN (bits 0x7fc00000) where it must not write. */
function initialGradient(rows: number, C: number, touched: (row: number) => boolean, seed: number) {
  const g = normal(rows * C, seed, 20);
  const bits = new Uint32Array(g.buffer);
  for (let r = 0; r < rows; r++) if (!touched(r)) bits.fill(NAN_BITS, r * C, (r + 1) * C);
  return g;
}

/** dwte as the kernel computes it: per row, positions in ascending order summed in f32, then added. */
function replayDwte(dwte0: Float32Array, dout: Float32Array, tokens: Uint32Array, C: number): Float32Array {
  const dwte = dwte0.slice();
  const buckets = bucketTokens(tokens, dwte0.length / C);
  for (let u = 0; u < buckets.count; u++) {
    const row = buckets.ids[u] * C;
    for (let c = 0; c < C; c++) {
      let sum = 0;
      for (let k = buckets.start[u]; k < buckets.start[u + 1]; k++) {
        sum = Math.fround(sum + dout[buckets.positions[k] * C + c]);
      }
      dwte[row + c] = Math.fround(dwte[row + c] + sum);
    }
  }
  return dwte;
}

function assertUntouched(
  name: string,
  got: Float32Array,
  rows: number,
  C: number,
  touched: (r: number) => boolean,
) {
  const bits = new Uint32Array(got.buffer, got.byteOffset, got.length);
  for (let r = 0; r < rows; r++) {
    if (touched(r)) continue;
    for (let c = 0; c < C; c++) {
      if (bits[r * C + c] !== NAN_BITS) {
        throw new Error(`${name}: row ${r} (no occurrences) was written: [${r}, ${c}] = ${got[r * C + c]}`);
      }
    }
  }
}

Deno.test("encoderBackward matches the f64 reference; rows of absent tokens and positions stay untouched", async () => {
  const gpu = await getGpu();
  const V = 300;
  let worstDwte = 0, worstDwpe = 0;
  for (
    const [B, T, C, offset] of [[1, 1, 7, 0], [4, 65, 33, 0], [3, 33, 100, 2], [2, 129, 768, 0], [7, 1, 5, 4]]
  ) {
    const N = B * T, maxT = T + offset + 3, seed = N * 1000 + C;
    const tokens = repeatedTokens(N, V, seed);
    const present = new Set(tokens);
    const isPresent = (row: number) => present.has(row);
    const inWindow = (row: number) => row >= offset && row < offset + T;
    const dout = normal(N * C, seed, 0);
    const dwte0 = initialGradient(V, C, isPresent, seed);
    const dwpe0 = initialGradient(maxT, C, inWindow, seed + 1);
    const [dwte, dwpe] = await runBackward({ gpu, tokens, dout, dwte0, dwpe0, B, T, C, V, maxT, offset });
    const name = `${B}x${T}x${C} offset ${offset}`;
    assertUntouched(`dwte ${name}`, dwte, V, C, isPresent);
    assertUntouched(`dwpe ${name}`, dwpe, maxT, C, inWindow);
    const wDwte = f64(dwte0), wDwpe = f64(dwpe0);
    ref.encoderBackward(wDwte, wDwpe, f64(dout), tokens, B, T, C, offset);
    // Rows with occurrences: f32 running sums of up to k ≈ 130 N(0, 1) terms with partial sums |s| ≲ 30,
    // each add erring ≤ ½ ulp(s) ≤ 1e-6: a random walk of ~√k·1e-6 ≈ 1e-5, 4e-5 at four sigma.
    const keep = (rows: number, ok: (r: number) => boolean, a: ArrayLike<number>) =>
      Float64Array.from({ length: rows * C }, (_, i) => (ok(Math.floor(i / C)) ? a[i] : 0));
    worstDwte = Math.max(
      worstDwte,
      compare(`dwte ${name}`, keep(V, isPresent, dwte), keep(V, isPresent, wDwte), { atol: 4e-5, rtol: 1e-6 })
        .maxAbs,
    );
    // The summation order is fixed (positions ascending, then one add to the old value), and f32
    // addition is correctly rounded in WGSL, so replaying that order in f32 gives the exact bits.
    assertBitwiseEqual(`dwte ${name} vs f32 replay`, dwte, replayDwte(dwte0, dout, tokens, C));
    // dwpe: B-term sums (B ≤ 7).
    worstDwpe = Math.max(
      worstDwpe,
      compare(`dwpe ${name}`, keep(maxT, inWindow, dwpe), keep(maxT, inWindow, wDwpe), {
        atol: 1e-6,
        rtol: 1e-6,
      })
        .maxAbs,
    );
  }
  console.log(
    `encoder backward max |err|: dwte ${worstDwte.toExponential(2)}, dwpe ${worstDwpe.toExponential(2)}`,
  );
});

Deno.test("encoderBackward gives identical bits when run twice, with and without dwpe", async () => {
  const gpu = await getGpu();
  const B = 4, T = 65, C = 33, V = 300, maxT = T;
  const tokens = repeatedTokens(B * T, V, 5);
  const dout = normal(B * T * C, 5, 0), dwte0 = normal(V * C, 5, 1), dwpe0 = normal(maxT * C, 5, 2);
  const run = (dwpe: Float32Array | null) =>
    runBackward({ gpu, tokens, dout, dwte0, dwpe0: dwpe, B, T, C, V, maxT, offset: 0 });
  const [a, aPos] = await run(dwpe0);
  const [b, bPos] = await run(dwpe0);
  const [c] = await run(null);
  assertBitwiseEqual("dwte rerun", a, b);
  assertBitwiseEqual("dwpe rerun", aPos, bPos);
  assertBitwiseEqual("dwte without dwpe", a, c);
});

Deno.test("encoderBackward covers more buckets than one grid dimension holds (65537 distinct ids)", async () => {
  const gpu = await getGpu();
  const N = gpu.limits.maxComputeWorkgroupsPerDimension + 2, C = 2, V = N + 5;
  // Every id once, in reverse, so the buckets past the first grid row are all non-empty.
  const tokens = Uint32Array.from({ length: N }, (_, n) => V - 1 - n);
  const dout = normal(N * C, 6, 0), dwte0 = normal(V * C, 6, 1);
  const [dwte] = await runBackward({
    gpu,
    tokens,
    dout,
    dwte0,
    dwpe0: null,
    B: 1,
    T: N,
    C,
    V,
    maxT: N,
    offset: 0,
  });
  assertBitwiseEqual("dwte N=65537 vs f32 replay", dwte, replayDwte(dwte0, dout, tokens, C));
});

Deno.test("encoder launchers refuse wrong shapes, dtypes and position ranges, naming the tensors", async () => {
  const gpu = await getGpu();
  const rec = new Recorder(gpu, "errors");
  const B = 2, T = 7, C = 33, V = 300;
  const out = createTensor(gpu, [B, T, C], { label: "out" });
  const tokens = createTensor(gpu, [B, T], { label: "tokens", dtype: "u32" });
  const tokensF = createTensor(gpu, [B, T], { label: "tokensF" });
  const wte = createTensor(gpu, [V, C], { label: "wte" }), wpe = createTensor(gpu, [8, C], { label: "wpe" });
  const wteWide = createTensor(gpu, [V, C + 1], { label: "wteWide" });
  await assert.rejects(
    () => encoderForward(rec, out, tokensF, wte, wpe, B, T),
    (e: Error) => e instanceof TypeError && e.message === "encoderForward: tokensF is f32, expected u32",
  );
  await assert.rejects(
    () => encoderForward(rec, out, tokens, wte, wpe, B, T, { positionOffset: 2 }),
    (e: Error) =>
      e instanceof RangeError &&
      e.message.includes("positions 2..8 exceed wpe [8, 33], which holds maxT = 8 positions"),
  );
  await assert.rejects(
    () => encoderForward(rec, out, tokens, wteWide, null, B, T),
    (e: Error) =>
      e instanceof RangeError && e.message.includes("wteWide has shape [300, 34], expected rows of C = 33"),
  );
  await assert.rejects(
    () => encoderForward(rec, out, tokens, wte, null, B, T + 1),
    (e: Error) => e instanceof RangeError && e.message.includes("out has shape [2, 7, 33] (462 elements)"),
  );
  const ids = createTensor(gpu, [B * T], { label: "bucketIds", dtype: "u32" });
  const start = createTensor(gpu, [B * T], { label: "bucketStart", dtype: "u32" });
  await assert.rejects(
    () => encoderBackward(rec, wte, null, out, ids, start, ids, B, T),
    (e: Error) =>
      e instanceof RangeError &&
      e.message.includes("bucketStart has shape [14] (14 elements), expected (N + 1,) = (15,)"),
  );
  assert.equal(rec.dispatchCount, 0);
});
