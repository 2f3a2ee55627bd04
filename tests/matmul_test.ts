import assert from "node:assert/strict";
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readTensors, type Tensor, tensorFrom, upload } from "../src/gpu/tensor.ts";
import {
  chooseMatmulPath,
  matmul,
  type MatmulDims,
  type MatmulOptions,
  textureSide,
} from "../src/ops/matmul.ts";
import { fillNormal, fillUniform } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare, type CompareReport } from "./reference/compare.ts";
import { matmulBackward, matmulForward, type MatmulRefDims } from "./reference/matmul.ts";

const paths = ["storage", "texture"] as const;
const EPS = 2 ** -24; // unit roundoff of f32

/**
 * Tolerance of an f32 matmul against the f64 reference. Each of the K running-sum updates rounds by at
 * most EPS·|partial sum|, and partial sums of random-sign products grow like √k·σ (σ ≤ max|a|·max|b|/√3
 * here), so the error is a random walk of K steps of size up to √K·σ·EPS: its spread is ≈ K·σ·EPS/√6
 * and the largest of ~10⁵ outputs sits near 0.6·K·EPS·max|a|·max|b|. atol is 2·K·EPS·max|a|·max|b|
 * (the measured worst case is 0.41 of it); the epilogue (alpha, bias, accumulate) adds a few roundings
 * of values up to max|out|: 4·EPS of that, plus rtol of 4 ULP.
 */
function matmulTolerance(K: number, maxA: number, maxB: number, alpha: number, maxEpilogue: number) {
  return { atol: 2 * K * EPS * maxA * maxB * Math.abs(alpha) + 4 * EPS * maxEpilogue, rtol: 4 * EPS };
}

const maxAbs = (x: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
  return m;
};

/** One matmul case: host inputs, the GPU tensors and the f64 expectation. */
interface Case {
  name: string;
  dims: MatmulRefDims;
  opts: MatmulOptions;
  out: Tensor;
  want: Float64Array;
  tol: { atol: number; rtol: number };
  tensors: Tensor[];
}

function makeCase(gpu: Gpu, dims: MatmulRefDims, variant: number, seed: number, path: string): Case {
  const { Bt, M, N, K, transA, transB, bBatched } = dims;
  const batched = Bt > 1 || bBatched;
  const aHost = fillUniform(new Float32Array(Bt * M * K), seed, 0, -1, 1);
  const bHost = fillUniform(new Float32Array((bBatched ? Bt : 1) * K * N), seed, 1, -2, 2);
  const biasHost = fillUniform(new Float32Array(N), seed, 2, -1, 1);
  const prevHost = fillNormal(new Float32Array(Bt * M * N), seed, 3);
  const lead = batched ? [Bt] : [];
  const a = tensorFrom(gpu, [...lead, ...(transA ? [K, M] : [M, K])], aHost, { label: "a" });
  const bShape = transB ? [N, K] : [K, N];
  const b = tensorFrom(gpu, bBatched ? [Bt, ...bShape] : bShape, bHost, { label: "b" });
  const bias = tensorFrom(gpu, [N], biasHost, { label: "bias" });
  const out = createTensor(gpu, [...lead, M, N], { label: "out" });
  // Every option appears with every layout: variants cycle through none, bias, accumulate, all.
  const opts: MatmulOptions = [
    {},
    { bias },
    { accumulate: true, alpha: -0.75 },
    { bias, accumulate: true, alpha: 1.5 },
  ][variant % 4];
  const want = Float64Array.from(opts.accumulate ? prevHost : new Float32Array(Bt * M * N));
  if (opts.accumulate) upload(gpu, out, prevHost);
  else poison(gpu, out);
  matmulForward(want, Float64Array.from(aHost), Float64Array.from(bHost), dims, {
    bias: opts.bias ? Float64Array.from(biasHost) : undefined,
    accumulate: opts.accumulate,
    alpha: opts.alpha,
  });
  const maxEpilogue = maxAbs(want) + (opts.bias ? 1 : 0) + (opts.accumulate ? maxAbs(prevHost) : 0);
  const tol = matmulTolerance(K, 1, 2, opts.alpha ?? 1, maxEpilogue);
  const layout = `${transA ? "Aᵀ" : "A"}·${transB ? "Bᵀ" : "B"}`;
  const batch = bBatched ? `Bt=${Bt}` : Bt > 1 ? `Bt=${Bt} shared B` : "unbatched";
  const name = `${path} ${layout} M=${M} K=${K} N=${N} ${batch} ${
    JSON.stringify({ ...opts, bias: !!opts.bias })
  }`;
  return { name, dims, opts: { ...opts, transA, transB }, out, want, tol, tensors: [a, b, bias, out] };
}

Deno.test("matmul f64 reference: analytic backward matches central differences", () => {
  for (
    const [transA, transB, bBatched] of [[false, false, true], [true, false, false], [false, true, false]]
  ) {
    const d: MatmulRefDims = { Bt: 2, M: 3, N: 4, K: 5, transA, transB, bBatched };
    const alpha = 0.7;
    const a = fillUniform(new Float64Array(d.Bt * d.M * d.K), 11, 0, -1, 1);
    const b = fillUniform(new Float64Array((bBatched ? d.Bt : 1) * d.K * d.N), 11, 1, -1, 1);
    const bias = fillUniform(new Float64Array(d.N), 11, 2, -1, 1);
    const dOut = fillUniform(new Float64Array(d.Bt * d.M * d.N), 11, 3, -1, 1);
    // loss = Σ dOut ⊙ out, so ∂loss/∂x is the backward of dOut.
    const loss = () => {
      const out = matmulForward(new Float64Array(dOut.length), a, b, d, { bias, alpha });
      return out.reduce((s, v, i) => s + v * dOut[i], 0);
    };
    const dA = new Float64Array(a.length), dB = new Float64Array(b.length), dBias = new Float64Array(d.N);
    matmulBackward(dA, dB, dBias, dOut, a, b, d, alpha);
    const h = 1e-6;
    for (const [x, g, name] of [[a, dA, "dA"], [b, dB, "dB"], [bias, dBias, "dBias"]] as const) {
      const fd = new Float64Array(x.length);
      for (let i = 0; i < x.length; i++) {
        const keep = x[i];
        x[i] = keep + h;
        const up = loss();
        x[i] = keep - h;
        fd[i] = (up - loss()) / (2 * h);
        x[i] = keep;
      }
      // The loss is linear in each input, so central differences are exact up to f64 cancellation
      // (|loss| ≲ 10, h = 1e-6: ~1e-16·10/1e-6 = 1e-9).
      compare(`${name} transA=${transA} transB=${transB} bBatched=${bBatched}`, g, fd, {
        atol: 1e-8,
        rtol: 1e-8,
      });
    }
  }
});

Deno.test("matmul path chooser: texture on software adapters, storage on GPUs and past limits", () => {
  const soft = { software: true, limits: { maxTextureDimension2D: 8192 } };
  const hard = { software: false, limits: { maxTextureDimension2D: 8192 } };
  const dims = (M: number, N: number, K: number): MatmulDims => ({ Bt: 1, M, N, K, bBatched: false });
  assert.equal(chooseMatmulPath(soft, dims(4096, 1024, 256)), "texture");
  assert.equal(chooseMatmulPath(hard, dims(4096, 1024, 256)), "storage");
  assert.equal(chooseMatmulPath(soft, dims(8192, 8192, 4 * 8192)), "texture");
  assert.equal(chooseMatmulPath(soft, dims(50257, 64, 64)), "texture", "M over the texture height is split");
  assert.equal(chooseMatmulPath(soft, dims(64, 50257, 64)), "texture", "N over the texture height is split");
  assert.equal(chooseMatmulPath(soft, dims(64, 64, 4 * 8192 + 1)), "storage", "⌈K/4⌉ over the texture width");
  assert.equal(chooseMatmulPath(soft, dims(64, 64, 64), "storage"), "storage");
  assert.equal(chooseMatmulPath(hard, dims(64, 64, 64), "texture"), "texture");
  assert.throws(
    () => chooseMatmulPath(soft, dims(64, 64, 4 * 8192 + 1), "texture"),
    /⌈K\/4⌉ = 8193 exceeds maxTextureDimension2D 8192/,
  );
});

Deno.test("matmul auto path records the adapter's kernel", async () => {
  const gpu = await getGpu();
  const x = createTensor(gpu, [7, 33], { label: "x" });
  const w = createTensor(gpu, [5, 33], { label: "w" });
  const y = createTensor(gpu, [7, 5], { label: "y" });
  const rec = new Recorder(gpu, "auto");
  await matmul(rec, y, x, w, { transB: true });
  const want = gpu.software
    ? ["matmul.packTexture", "matmul.packTexture", "matmul.matmulTexture<WGX=8,WGY=8>"]
    : ["matmul.matmulStorage"];
  assert.deepEqual(rec.kernelNames, want);
  for (const t of [x, w, y]) t.buffer.destroy();
});

Deno.test("matmul scratch texture sides are never powers of two (one llvmpipe shader variant)", () => {
  const max = 16384;
  for (let d = 1; d <= max - 16; d++) {
    const side = textureSide(d, max);
    assert.ok(side >= d && side <= max && (side & (side - 1)) !== 0, `side ${side} for ${d}`);
  }
  assert.equal(textureSide(max, max), max, "a side at the limit is kept as it is");
});

Deno.test("matmul matches the f64 reference: all layouts, batching, bias, accumulate, alpha", async () => {
  const gpu = await getGpu();
  // Every size of {1, 7, 33, 100, 257} appears as M, K and N; none is a multiple of a tile. The last
  // two have sides that are multiples of 4 (not of a tile), which the storage path loads as vec4.
  const triples = [[1, 1, 1], [7, 33, 1], [1, 257, 7], [33, 7, 100], [100, 257, 33], [257, 1, 7]];
  triples.push([33, 100, 257], [36, 20, 68], [4, 132, 7]);
  const reports: [string, CompareReport, number][] = [];
  for (const path of paths) {
    const cases: Case[] = [];
    const rec = new Recorder(gpu, `matmul ${path}`);
    let seed = 100;
    for (const [ti, [M, K, N]] of triples.entries()) {
      for (const [bi, [Bt, bBatched]] of ([[1, false], [3, true], [3, false]] as const).entries()) {
        for (
          const [li, [transA, transB]] of [[false, false], [false, true], [true, false], [true, true]]
            .entries()
        ) {
          const c = makeCase(gpu, { Bt, M, N, K, transA, transB, bBatched }, ti + bi + li, seed++, path);
          await matmul(rec, c.out, c.tensors[0], c.tensors[1], { ...c.opts, path });
          cases.push(c);
        }
      }
    }
    if (path === "storage") {
      const vec4 = rec.kernelNames.filter((name) => name.endsWith("Vec4")).length;
      assert.ok(vec4 > 0 && vec4 < cases.length, `${vec4} of ${cases.length} storage cases load vec4`);
    }
    await rec.submit();
    const got = await readTensors(gpu, cases.map((c) => c.out));
    cases.forEach((c, i) => {
      const { Bt, M, N } = c.dims;
      reports.push([c.name, compare(c.name, got[i], c.want, c.tol, [Bt, M, N]), c.tol.atol]);
    });
    for (const c of cases) for (const t of c.tensors) t.buffer.destroy();
    rec.destroy();
  }
  const worst = reports.reduce((w, r) => (r[1].maxAbs / r[2] > w[1].maxAbs / w[2] ? r : w));
  console.log(
    `${reports.length} cases; worst |err|/atol ${(worst[1].maxAbs / worst[2]).toFixed(3)} in ${worst[0]}`,
  );
});

Deno.test("matmul texture path splits operands taller than a texture into blocks", async () => {
  const gpu = await getGpu();
  const tallBatches = Math.floor(gpu.limits.maxTextureDimension2D / 257) * 2 + 3;
  // [dims, textureRows, dispatches]: batches over the device's texture height (three batch blocks
  // of pack B, pack A, multiply); M and N over a 50-row cap (per batch and column block: pack B, then
  // pack A and multiply per row block); three batches sharing one texture.
  const configs: [MatmulRefDims, number | undefined, number][] = [
    [{ Bt: tallBatches, M: 257, N: 33, K: 7, transA: false, transB: true, bBatched: true }, undefined, 9],
    [{ Bt: 3, M: 257, N: 100, K: 33, transA: true, transB: false, bBatched: true }, 50, 3 * 2 * (1 + 6 * 2)],
    [{ Bt: 3, M: 257, N: 100, K: 33, transA: false, transB: true, bBatched: false }, 50, 3 * 2 * (1 + 6 * 2)],
    [{ Bt: 3, M: 7, N: 33, K: 100, transA: false, transB: false, bBatched: true }, 100, 3],
  ];
  for (const [i, [dims, textureRows, dispatches]] of configs.entries()) {
    const c = makeCase(gpu, dims, i, 7 + i, `texture rows≤${textureRows ?? "device"}`);
    const rec = new Recorder(gpu, "matmul blocks");
    await matmul(rec, c.out, c.tensors[0], c.tensors[1], { ...c.opts, path: "texture", textureRows });
    assert.equal(rec.dispatchCount, dispatches, c.name);
    await rec.submit();
    const [got] = await readTensors(gpu, [c.out]);
    compare(c.name, got, c.want, c.tol, [dims.Bt, dims.M, dims.N]);
    for (const t of c.tensors) t.buffer.destroy();
    rec.destroy();
  }
});

Deno.test("matmul layouts give a linear layer's backward: matches the f64 backward", async () => {
  const gpu = await getGpu();
  // y = x·Wᵀ + bias; dx = dy·W, dW = dyᵀ·x over all Bt·T rows, dbias = 1ᵀ·dy.
  const Bt = 3, T = 33, C = 100, N = 7;
  const dims: MatmulRefDims = { Bt, M: T, N, K: C, transA: false, transB: true, bBatched: false };
  const xHost = fillUniform(new Float32Array(Bt * T * C), 5, 0, -1, 1);
  const wHost = fillUniform(new Float32Array(N * C), 5, 1, -1, 1);
  const dyHost = fillUniform(new Float32Array(Bt * T * N), 5, 2, -1, 1);
  const dx = new Float64Array(xHost.length), dW = new Float64Array(wHost.length), dBias = new Float64Array(N);
  const x64 = Float64Array.from(xHost), w64 = Float64Array.from(wHost);
  matmulBackward(dx, dW, dBias, Float64Array.from(dyHost), x64, w64, dims);
  for (const path of paths) {
    const x = tensorFrom(gpu, [Bt * T, C], xHost, { label: "x" });
    const w = tensorFrom(gpu, [N, C], wHost, { label: "W" });
    const dy = tensorFrom(gpu, [Bt, T, N], dyHost, { label: "dy" });
    const dyRows: Tensor = { ...dy, shape: [Bt * T, N], label: "dy as rows" };
    const ones = tensorFrom(gpu, [1, Bt * T], new Float32Array(Bt * T).fill(1), { label: "ones" });
    const dxGpu = createTensor(gpu, [Bt, T, C], { label: "dx" });
    const dWGpu = createTensor(gpu, [N, C], { label: "dW" });
    const dBiasGpu = createTensor(gpu, [1, N], { label: "dbias" });
    for (const t of [dxGpu, dWGpu, dBiasGpu]) poison(gpu, t);
    const rec = new Recorder(gpu, `linear backward ${path}`);
    await matmul(rec, dxGpu, dy, w, { path });
    await matmul(rec, dWGpu, dyRows, x, { transA: true, path });
    await matmul(rec, dBiasGpu, ones, dyRows, { path });
    await rec.submit();
    const [gdx, gdW, gdBias] = await readTensors(gpu, [dxGpu, dWGpu, dBiasGpu]);
    const rows = Bt * T;
    compare(`${path} dx`, gdx, dx, matmulTolerance(N, 1, 1, 1, 0), [Bt, T, C]);
    compare(`${path} dW`, gdW, dW, matmulTolerance(rows, 1, 1, 1, 0), [N, C]);
    compare(`${path} dbias`, gdBias, dBias, matmulTolerance(rows, 1, 1, 1, 0), [N]);
    for (const t of [x, w, dy, ones, dxGpu, dWGpu, dBiasGpu]) t.buffer.destroy();
    rec.destroy();
  }
});

Deno.test("matmul reruns give identical bits on both paths", async () => {
  const gpu = await getGpu();
  // N = 33 runs the scalar-load storage kernel, N = 36 the vec4 one; variant 1 (bias, no accumulate)
  // makes a rerun's result independent of the previous one.
  for (const N of [33, 36]) {
    const dims: MatmulRefDims = { Bt: 3, M: 100, N, K: 257, transA: true, transB: false, bBatched: true };
    for (const path of paths) {
      const c = makeCase(gpu, dims, 1, 21, path);
      const rec = new Recorder(gpu, `rerun ${path}`);
      await matmul(rec, c.out, c.tensors[0], c.tensors[1], { ...c.opts, path });
      await rec.submit();
      const [first] = await readTensors(gpu, [c.out]);
      poison(gpu, c.out);
      await rec.submit(); // the replay reuses the bind groups and the scratch textures
      const [second] = await readTensors(gpu, [c.out]);
      assertBitwiseEqual(`${c.name} replay`, first as Float32Array, second as Float32Array);
      poison(gpu, c.out);
      const fresh = new Recorder(gpu, `rerun ${path} fresh`);
      await matmul(fresh, c.out, c.tensors[0], c.tensors[1], { ...c.opts, path });
      await fresh.submit();
      const [third] = await readTensors(gpu, [c.out]);
      assertBitwiseEqual(`${c.name} new recording`, first as Float32Array, third as Float32Array);
      for (const t of c.tensors) t.buffer.destroy();
    }
  }
});

Deno.test("matmul refuses bad shapes, dtypes, empty and oversized tensors before dispatch", async () => {
  const gpu = await getGpu();
  const rec = new Recorder(gpu, "matmul errors");
  // Shapes are checked before anything touches the buffer, so these views need no real storage.
  const buffer = gpu.device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE });
  const t = (label: string, shape: number[], dtype: "f32" | "i32" = "f32"): Tensor => ({
    buffer,
    offset: 0,
    shape,
    dtype,
    label,
  });
  await assert.rejects(
    matmul(rec, t("y", [4, 5]), t("x", [4, 3]), t("w", [6, 5])),
    /a x \[4, 3\] as \(Bt, M, K\) and b w \[6, 5\] as \(Bt, K, N\) disagree on K: 3 vs 6/,
  );
  await assert.rejects(
    matmul(rec, t("y", [4, 5]), t("x", [4, 3]), t("w", [3, 5]), { transB: true }),
    /b w \[3, 5\] as \(Bt, N, K\) disagree on K: 3 vs 5/,
  );
  await assert.rejects(
    matmul(rec, t("y", [4, 6]), t("x", [4, 3]), t("w", [3, 5])),
    /out y \[4, 6\] must be \[4, 5\] for a x \[4, 3\] and b w \[3, 5\]/,
  );
  await assert.rejects(
    matmul(rec, t("y", [2, 4, 5]), t("x", [2, 4, 3]), t("w", [3, 3, 5])),
    /a x \[2, 4, 3\] and b w \[3, 3, 5\] disagree on Bt: 2 vs 3/,
  );
  await assert.rejects(
    matmul(rec, t("y", [4, 5]), t("x", [4, 3]), t("w", [3, 5]), { bias: t("b", [4]) }),
    /bias b \[4\] must be \[5\]/,
  );
  await assert.rejects(
    matmul(rec, t("y", [4, 0]), t("x", [4, 3]), t("w", [3, 0])),
    /empty tensors are refused/,
  );
  await assert.rejects(matmul(rec, t("y", [4, 5]), t("x", [4, 3], "i32"), t("w", [3, 5])), TypeError);
  await assert.rejects(
    matmul(rec, t("y", [1, 5]), t("x", [1, 3]), t("w", [3, 5]), { alpha: NaN }),
    /alpha NaN must be a finite number/,
  );
  await assert.rejects(
    matmul(rec, t("y", [1, 5]), t("x", [1, 3]), t("w", [3, 5]), { path: "texture", textureRows: 0 }),
    /textureRows 0 must be a positive integer/,
  );
  // 40000 × 1000 f32 = 160 MB, over the 128 MiB binding limit of common adapters.
  const max = gpu.limits.maxStorageBufferBindingSize;
  const rows = Math.ceil(max / 4000) + 1;
  await assert.rejects(
    matmul(rec, t("y", [rows, 1000]), t("x", [rows, 1]), t("w", [1, 1000])),
    new RegExp(`out y \\[${rows}, 1000\\].*exceeds this device's maxStorageBufferBindingSize`),
  );
  // N = 64·maxGroups + 1 needs one column tile of 64 more than the grid allows on the storage path.
  const maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;
  const wide = 64 * maxGroups + 1;
  await assert.rejects(
    matmul(rec, t("y", [1, wide]), t("x", [1, 1]), t("w", [1, wide]), { path: "storage" }),
    new RegExp(`out y \\[1, ${wide}\\] needs \\[${maxGroups + 1}, 1, 1\\] workgroups, over .*PerDimension`),
  );
  assert.equal(rec.dispatchCount, 0);
  buffer.destroy();
});
