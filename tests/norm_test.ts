import assert from "node:assert/strict";
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import {
  createTensor,
  poison,
  readTensors,
  type Tensor,
  tensorFrom,
  upload as uploadInto,
} from "../src/gpu/tensor.ts";
import { layernormBackward, layernormForward, rmsnormBackward, rmsnormForward } from "../src/ops/norm.ts";
import { fillNormal, fillUniform } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";
import * as ref from "./reference/layers.ts";

const f64 = (a: ArrayLike<number>) => Float64Array.from(a);
const SIZES = [[1, 7], [7, 33], [33, 100], [257, 7], [257, 768], [1, 768], [70, 1]] as const;

/**
 * Rows of x with their own offset and scale (offsets up to ±4 and scales 0.1…3), so the mean
 * subtraction and the variance both matter.
 */
function rowsOfX(N: number, C: number, seed: number): Float32Array {
  const x = fillNormal(new Float32Array(N * C), seed, 0);
  const shift = fillUniform(new Float64Array(N), seed, 1, -4, 4);
  const scale = fillUniform(new Float64Array(N), seed, 2, 0.1, 3);
  for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) x[n * C + c] = shift[n] + scale[n] * x[n * C + c];
  return x;
}

const normal = (n: number, seed: number, stream: number, mean = 0, std = 1) =>
  fillNormal(new Float32Array(n), seed, stream, mean, std);

function upload(gpu: Gpu, label: string, data: Float32Array): Tensor {
  return tensorFrom(gpu, [data.length], data, { label });
}

Deno.test("LayerNorm and RMSNorm f64 analytic backwards match central differences", () => {
  const N = 3, C = 5;
  const x = f64(rowsOfX(N, C, 1)), w = f64(normal(C, 1, 3, 1, 0.3)), b = f64(normal(C, 1, 4));
  const g = f64(normal(N * C, 1, 5));
  const out = new Float64Array(N * C), mean = new Float64Array(N), rstd = new Float64Array(N);
  const dx = new Float64Array(N * C), dw = new Float64Array(C), db = new Float64Array(C);
  // h = 1e-6 on O(1) values: truncation ~h²·|f'''| and rounding ~ε·|L|/h, both ≲ 1e-9.
  const tol = { atol: 1e-8, rtol: 1e-7 };
  const lnLoss = () => (ref.layernormForward(out, mean, rstd, x, w, b, N, C), ref.dot(out, g));
  lnLoss();
  ref.layernormBackward(dx, dw, db, g, x, w, mean, rstd, N, C);
  compare("layernorm dx vs central differences", dx, ref.centralDifferences(lnLoss, x), tol);
  compare("layernorm dw vs central differences", dw, ref.centralDifferences(lnLoss, w), tol);
  compare("layernorm db vs central differences", db, ref.centralDifferences(lnLoss, b), tol);
  const eps = 1e-6;
  const rmsLoss = () => (ref.rmsnormForward(out, rstd, x, w, N, C, eps), ref.dot(out, g));
  rmsLoss();
  dx.fill(0);
  dw.fill(0);
  ref.rmsnormBackward(dx, dw, g, x, w, rstd, N, C);
  compare("rmsnorm dx vs central differences", dx, ref.centralDifferences(rmsLoss, x), tol);
  compare("rmsnorm dw vs central differences", dw, ref.centralDifferences(rmsLoss, w), tol);
});

/** Runs forward and backward on the device; returns every output read back. */
async function runLayernorm(
  gpu: Gpu,
  x: Float32Array,
  w: Float32Array,
  b: Float32Array,
  dout: Float32Array,
  dx0: Float32Array | null,
  dw0: Float32Array,
  db0: Float32Array,
  N: number,
  C: number,
): Promise<Float32Array[]> {
  const xT = upload(gpu, "x", x), wT = upload(gpu, "w", w), bT = upload(gpu, "b", b);
  const doutT = upload(gpu, "dout", dout);
  const outT = createTensor(gpu, [N, C], { label: "out" });
  const meanT = createTensor(gpu, [N], { label: "mean" }), rstdT = createTensor(gpu, [N], { label: "rstd" });
  const dxT = createTensor(gpu, [N, C], { label: "dx" });
  const dwT = upload(gpu, "dw", dw0), dbT = upload(gpu, "db", db0);
  for (const t of [outT, meanT, rstdT]) poison(gpu, t);
  if (dx0) uploadInto(gpu, dxT, dx0);
  else poison(gpu, dxT);
  const rec = new Recorder(gpu, "layernorm");
  await layernormForward(rec, outT, meanT, rstdT, xT, wT, bT, N, C);
  await layernormBackward(rec, dxT, dwT, dbT, doutT, xT, wT, meanT, rstdT, N, C, { accumulate: !!dx0 });
  await rec.submit();
  const got = await readTensors(gpu, [outT, meanT, rstdT, dxT, dwT, dbT]) as Float32Array[];
  for (const t of [xT, wT, bT, doutT, outT, meanT, rstdT, dxT, dwT, dbT]) t.buffer.destroy();
  return got;
}

Deno.test("layernormForward and layernormBackward match the f64 reference on awkward sizes", async () => {
  const gpu = await getGpu();
  const worst = { out: 0, rstd: 0, dx: 0, dw: 0, db: 0 };
  for (const [i, [N, C]] of SIZES.entries()) {
    const seed = 100 + i;
    const x = rowsOfX(N, C, seed), w = normal(C, seed, 3, 1, 0.3), b = normal(C, seed, 4);
    const dout = normal(N * C, seed, 5);
    // Odd cases accumulate into dx, as a residual stream's gradient does; dw, db always accumulate.
    const dx0 = i % 2 === 1 ? normal(N * C, seed, 6) : null;
    const dw0 = normal(C, seed, 7), db0 = normal(C, seed, 8);
    const [out, mean, rstd, dx, dw, db] = await runLayernorm(gpu, x, w, b, dout, dx0, dw0, db0, N, C);
    const wOut = new Float64Array(N * C), wMean = new Float64Array(N), wRstd = new Float64Array(N);
    ref.layernormForward(wOut, wMean, wRstd, f64(x), f64(w), f64(b), N, C);
    const wDx = dx0 ? f64(dx0) : new Float64Array(N * C), wDw = f64(dw0), wDb = f64(db0);
    // The backward reference is fed the device's mean and rstd so that it checks the backward
    // alone; the forward's mean and rstd are compared above.
    ref.layernormBackward(wDx, wDw, wDb, f64(dout), f64(x), f64(w), f64(mean), f64(rstd), N, C);
    const name = `${N}x${C}${dx0 ? " (dx +=)" : ""}`;
    // mean and variance are C-term f32 sums (32 strided lanes, then a 5-level tree) of |x| ≲ 12: a few
    // ulp of the partial sums, then ÷C. out = norm·w + b with |out| ≲ 10 adds four roundings; 4e-6 is
    // ~30 ulp of 1. rstd: the variance sum's error plus inverseSqrt's 2 ulp.
    worst.out = Math.max(
      worst.out,
      compare(`layernorm out ${name}`, out, wOut, { atol: 4e-6, rtol: 4e-6 }).maxAbs,
    );
    compare(`layernorm mean ${name}`, mean, wMean, { atol: 3e-7, rtol: 3e-7 });
    worst.rstd = Math.max(
      worst.rstd,
      compare(`layernorm rstd ${name}`, rstd, wRstd, { atol: 0, rtol: 5e-7 }).maxRel,
    );
    // dx = (dnorm − mean(dnorm) − norm·mean(dnorm·norm))·rstd: the two row means of O(3) products carry
    // ~1e-7 relative error; with rstd ≤ 10 that is ≲ 1e-6 on O(1) values.
    worst.dx = Math.max(
      worst.dx,
      compare(`layernorm dx ${name}`, dx, wDx, { atol: 1e-6, rtol: 1e-6 }).maxAbs,
    );
    // dw, db: N-term f32 sums of O(3) products (64-row blocks, then the blocks in order); |dw| ≲ 50, and
    // the errors random-walk to ~√N·½ ulp of the partial sums.
    worst.dw = Math.max(
      worst.dw,
      compare(`layernorm dw ${name}`, dw, wDw, { atol: 2e-5, rtol: 1e-5 }).maxAbs,
    );
    worst.db = Math.max(
      worst.db,
      compare(`layernorm db ${name}`, db, wDb, { atol: 1e-5, rtol: 1e-5 }).maxAbs,
    );
  }
  console.log(
    `layernorm max |err|: out ${worst.out.toExponential(2)}, rstd (rel) ${worst.rstd.toExponential(2)}, ` +
      `dx ${worst.dx.toExponential(2)}, dw ${worst.dw.toExponential(2)}, db ${worst.db.toExponential(2)}`,
  );
});

async function runRmsnorm(
  gpu: Gpu,
  x: Float32Array,
  w: Float32Array,
  dout: Float32Array,
  dx0: Float32Array | null,
  dw0: Float32Array,
  N: number,
  C: number,
  eps: number,
): Promise<Float32Array[]> {
  const xT = upload(gpu, "x", x), wT = upload(gpu, "w", w), doutT = upload(gpu, "dout", dout);
  const outT = createTensor(gpu, [N, C], { label: "out" }), rstdT = createTensor(gpu, [N], { label: "rstd" });
  const dxT = createTensor(gpu, [N, C], { label: "dx" }), dwT = upload(gpu, "dw", dw0);
  for (const t of [outT, rstdT]) poison(gpu, t);
  if (dx0) uploadInto(gpu, dxT, dx0);
  else poison(gpu, dxT);
  const rec = new Recorder(gpu, "rmsnorm");
  await rmsnormForward(rec, outT, rstdT, xT, wT, N, C, { eps });
  await rmsnormBackward(rec, dxT, dwT, doutT, xT, wT, rstdT, N, C, { accumulate: !!dx0 });
  await rec.submit();
  const got = await readTensors(gpu, [outT, rstdT, dxT, dwT]) as Float32Array[];
  for (const t of [xT, wT, doutT, outT, rstdT, dxT, dwT]) t.buffer.destroy();
  return got;
}

Deno.test("rmsnormForward and rmsnormBackward match the f64 reference on awkward sizes", async () => {
  const gpu = await getGpu();
  const worst = { out: 0, rstd: 0, dx: 0, dw: 0 };
  for (const [i, [N, C]] of SIZES.entries()) {
    const seed = 200 + i;
    const eps = i % 2 ? 1e-5 : 1e-6;
    const x = rowsOfX(N, C, seed), w = normal(C, seed, 3, 1, 0.3), dout = normal(N * C, seed, 5);
    const dx0 = i % 2 === 0 ? normal(N * C, seed, 6) : null;
    const dw0 = normal(C, seed, 7);
    const [out, rstd, dx, dw] = await runRmsnorm(gpu, x, w, dout, dx0, dw0, N, C, eps);
    const wOut = new Float64Array(N * C), wRstd = new Float64Array(N);
    ref.rmsnormForward(wOut, wRstd, f64(x), f64(w), N, C, eps);
    const wDx = dx0 ? f64(dx0) : new Float64Array(N * C), wDw = f64(dw0);
    ref.rmsnormBackward(wDx, wDw, f64(dout), f64(x), f64(w), f64(rstd), N, C);
    const name = `${N}x${C}${dx0 ? " (dx +=)" : ""}`;
    // rstd: one C-term sum of squares (positive terms: a few ulp relative) then inverseSqrt (2 ulp);
    // out = x·rstd·w adds two roundings to rstd's error, all relative.
    worst.rstd = Math.max(
      worst.rstd,
      compare(`rmsnorm rstd ${name}`, rstd, wRstd, { atol: 0, rtol: 5e-7 }).maxRel,
    );
    worst.out = Math.max(
      worst.out,
      compare(`rmsnorm out ${name}`, out, wOut, { atol: 0, rtol: 6e-7 }).maxAbs,
    );
    // dx: one row mean of O(3) products, ~1e-7 relative, scaled by rstd ≤ 10; dw as for LayerNorm.
    worst.dx = Math.max(worst.dx, compare(`rmsnorm dx ${name}`, dx, wDx, { atol: 1e-6, rtol: 1e-6 }).maxAbs);
    worst.dw = Math.max(worst.dw, compare(`rmsnorm dw ${name}`, dw, wDw, { atol: 2e-5, rtol: 1e-5 }).maxAbs);
  }
  console.log(
    `rmsnorm max |err|: out ${worst.out.toExponential(2)}, rstd (rel) ${worst.rstd.toExponential(2)}, ` +
      `dx ${worst.dx.toExponential(2)}, dw ${worst.dw.toExponential(2)}`,
  );
});

Deno.test("norm backwards give identical bits when run twice (dw, db reductions included)", async () => {
  const gpu = await getGpu();
  const N = 257, C = 100;
  const x = rowsOfX(N, C, 7), w = normal(C, 7, 3, 1, 0.3), b = normal(C, 7, 4), dout = normal(N * C, 7, 5);
  const dx0 = normal(N * C, 7, 6), dw0 = normal(C, 7, 7), db0 = normal(C, 7, 8);
  const first = await runLayernorm(gpu, x, w, b, dout, dx0, dw0, db0, N, C);
  const second = await runLayernorm(gpu, x, w, b, dout, dx0, dw0, db0, N, C);
  ["out", "mean", "rstd", "dx", "dw", "db"].forEach((name, i) =>
    assertBitwiseEqual(`layernorm ${name} rerun`, first[i], second[i])
  );
  const rmsFirst = await runRmsnorm(gpu, x, w, dout, null, dw0, N, C, 1e-6);
  const rmsSecond = await runRmsnorm(gpu, x, w, dout, null, dw0, N, C, 1e-6);
  ["out", "rstd", "dx", "dw"].forEach((name, i) =>
    assertBitwiseEqual(`rmsnorm ${name} rerun`, rmsFirst[i], rmsSecond[i])
  );
});

Deno.test("norms cover more rows than one grid dimension holds (N = 65537)", async () => {
  const gpu = await getGpu();
  const N = gpu.limits.maxComputeWorkgroupsPerDimension + 2, C = 7;
  const x = rowsOfX(N, C, 9), w = normal(C, 9, 3, 1, 0.3), b = normal(C, 9, 4), dout = normal(N * C, 9, 5);
  const dw0 = new Float32Array(C), db0 = new Float32Array(C);
  const [out, mean, rstd, dx, dw, db] = await runLayernorm(gpu, x, w, b, dout, null, dw0, db0, N, C);
  const wOut = new Float64Array(N * C), wMean = new Float64Array(N), wRstd = new Float64Array(N);
  ref.layernormForward(wOut, wMean, wRstd, f64(x), f64(w), f64(b), N, C);
  const wDx = new Float64Array(N * C), wDw = new Float64Array(C), wDb = new Float64Array(C);
  ref.layernormBackward(wDx, wDw, wDb, f64(dout), f64(x), f64(w), f64(mean), f64(rstd), N, C);
  // Seven values per row: a few of 65537 rows have a small spread (rstd up to ~30), where out's
  // error ε·|x|·rstd reaches ~1e-5.
  compare("out N=65537", out, wOut, { atol: 1e-5, rtol: 1e-5 });
  compare("rstd N=65537", rstd, wRstd, { atol: 0, rtol: 5e-7 });
  compare("dx N=65537", dx, wDx, { atol: 4e-6, rtol: 4e-6 });
  // dw, db: 65537 terms in 1025 blocks of 64; the block sums' running total (|s| ≲ 300, ½ ulp 1.5e-5)
  // random-walks over ~1025 adds to ~5e-5 typical; 2e-4 at four sigma.
  compare("dw N=65537", dw, wDw, { atol: 2e-4, rtol: 1e-6 });
  compare("db N=65537", db, wDb, { atol: 2e-4, rtol: 1e-6 });
});

Deno.test("norm launchers refuse wrong shapes, dtypes and eps, naming the tensors", async () => {
  const gpu = await getGpu();
  const rec = new Recorder(gpu, "errors");
  const N = 7, C = 33;
  const x = createTensor(gpu, [N, C], { label: "x" }), out = createTensor(gpu, [N, C], { label: "out" });
  const w = createTensor(gpu, [C], { label: "w" }), b = createTensor(gpu, [C + 1], { label: "b" });
  const mean = createTensor(gpu, [N], { label: "mean" }), rstd = createTensor(gpu, [N], { label: "rstd" });
  const ids = createTensor(gpu, [N], { label: "ids", dtype: "u32" });
  await assert.rejects(
    () => layernormForward(rec, out, mean, rstd, x, w, b, N, C),
    (e: Error) =>
      e instanceof RangeError && e.message.includes("b has shape [34] (34 elements), expected (C,)"),
  );
  await assert.rejects(
    () => rmsnormForward(rec, out, ids, x, w, N, C, { eps: 1e-6 }),
    (e: Error) => e instanceof TypeError && e.message.includes("rmsnormForward: ids is u32, expected f32"),
  );
  await assert.rejects(
    () => rmsnormForward(rec, out, rstd, x, w, N, C, { eps: 0 }),
    (e: Error) => e instanceof RangeError && e.message.includes("eps = 0 must be finite and > 0"),
  );
  await assert.rejects(
    () => layernormBackward(rec, x, w, w, out, x, w, mean, rstd, N, 34),
    (e: Error) =>
      e instanceof RangeError && e.message.includes("x has shape [7, 33] (231 elements), expected (N, C)"),
  );
  await assert.rejects(
    () => rmsnormBackward(rec, x, w, out, x, w, rstd, 0, C),
    (e: Error) => e instanceof RangeError && e.message.includes("N = 0 must be a positive integer"),
  );
  assert.equal(rec.dispatchCount, 0);
});
