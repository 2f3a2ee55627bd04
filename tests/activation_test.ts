import assert from "node:assert/strict";
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { align, createTensor, poison, readTensors, type Tensor, tensorFrom } from "../src/gpu/tensor.ts";
import { geluBackward, geluForward, swigluBackward, swigluForward } from "../src/ops/activation.ts";
import { fillNormal } from "../src/random/philox.ts";
import { compare, type Tolerance } from "./reference/compare.ts";
import * as ref from "./reference/layers.ts";

// Values where the guards matter: zeros, tiny, the |x| = 10 cut of GELU, saturation, huge. SwiGLU's
// stop at 1e37 so that g·up·dout stays finite in f32.
const GELU_SPECIALS = [0, -0, 1e-30, -1e-30, 1e-4, -1e-4, 9.99, -9.99, 10, -10, 10.01, -10.01, 12, -12]
  .concat([50, -50, 88, -88, 1e20, -1e20, 3e38, -3e38]);
const SWIGLU_SPECIALS = [0, -0, 1e-30, -1e-30, 1e-4, -1e-4, 1.2785, -1.2785, 12, -12, 50, -50, 88, -88]
  .concat([1e20, -1e20, 1e37, -1e37]);

/** n normals (std 3, so the tails reach the GELU cut) followed by the special values, as f32. */
function inputs(n: number, seed: number, stream: number, specials: readonly number[]): Float32Array {
  const x = fillNormal(new Float32Array(n + specials.length), seed, stream, 0, 3);
  x.set(specials, n);
  return x;
}

/**
 * Compares the random part and the special values separately: WGSL's exp may err by 3 + 2|x| ulp,
 * which for σ(−88) is 1.1e-5 relative, far above what the random part (|x| ≲ 15) needs.
 */
function compareParts(
  name: string,
  n: number,
  got: ArrayLike<number>,
  want: Float64Array,
  random: Tolerance,
  specials: Tolerance,
): number {
  const g = Float64Array.from(got);
  const head = compare(`${name} (random)`, g.subarray(0, n), want.subarray(0, n), random);
  compare(`${name} (special values)`, g.subarray(n), want.subarray(n), specials);
  return head.maxAbs;
}

const f64 = (a: ArrayLike<number>) => Float64Array.from(a);

Deno.test("GELU and SwiGLU f64 analytic backwards match central differences", () => {
  const n = 40;
  const x = f64(fillNormal(new Float32Array(n), 3, 0, 0, 3));
  x.set([0, 1e-4, 9.99, -9.99, -1.2785], n - 5);
  const up = f64(fillNormal(new Float32Array(n), 3, 1));
  const g = f64(fillNormal(new Float32Array(n), 3, 2));
  const out = new Float64Array(n);
  const dx = new Float64Array(n), dup = new Float64Array(n);
  // Central differences with h = 1e-6 err ~h²·|f'''| + ε·|f|/h ≈ 1e-10 on these O(10) values.
  const tol = { atol: 1e-8, rtol: 1e-8 };
  ref.geluBackward(dx, g, x, n);
  const geluLoss = () => (ref.geluForward(out, x, n), ref.dot(out, g));
  compare("gelu dx vs central differences", dx, ref.centralDifferences(geluLoss, x), tol);
  ref.swigluBackward(dx, dup, g, x, up, n);
  const swigluLoss = () => (ref.swigluForward(out, x, up, n), ref.dot(out, g));
  compare("swiglu dgate vs central differences", dx, ref.centralDifferences(swigluLoss, x), tol);
  compare("swiglu dup vs central differences", dup, ref.centralDifferences(swigluLoss, up), tol);
});

function upload(gpu: Awaited<ReturnType<typeof getGpu>>, label: string, data: Float32Array): Tensor {
  return tensorFrom(gpu, [data.length], data, { label });
}

Deno.test("geluForward and geluBackward match the f64 reference on awkward sizes", async () => {
  const gpu = await getGpu();
  let maxOut = 0, maxDx = 0;
  for (const [N, C] of [[1, 1], [1, 7], [7, 33], [33, 100], [257, 33], [5, 768]]) {
    const n = N * C;
    const x = inputs(n, n, 0, GELU_SPECIALS);
    const dout = fillNormal(new Float32Array(x.length), n, 1);
    const xT = upload(gpu, "x", x), doutT = upload(gpu, "dout", dout);
    const outT = createTensor(gpu, [x.length], { label: "out" });
    const dxT = createTensor(gpu, [x.length], { label: "dx" });
    poison(gpu, outT);
    poison(gpu, dxT);
    const rec = new Recorder(gpu, "gelu");
    await geluForward(rec, outT, xT);
    await geluBackward(rec, dxT, doutT, xT);
    await rec.submit();
    const [out, dx] = await readTensors(gpu, [outT, dxT]);
    const want = new Float64Array(x.length), wantDx = new Float64Array(x.length);
    ref.geluForward(want, f64(x), x.length);
    ref.geluBackward(wantDx, f64(dout), f64(x), x.length);
    // f32 u, exp and one division: a few ulp of the result, plus ~2e-7 absolute on tanh where
    // 1 − exp(−2|u|) cancels for small u (then scaled by ½|x| forward, by |dout·½| backward).
    // Past the cut the kernel returns the limits x or 0; the true tails there are below 1e-36.
    const tol = { atol: 2e-7, rtol: 5e-7 };
    maxOut = Math.max(maxOut, compareParts(`gelu out ${N}x${C}`, n, out, want, tol, tol));
    maxDx = Math.max(maxDx, compareParts(`gelu dx ${N}x${C}`, n, dx, wantDx, tol, tol));
    for (const t of [xT, doutT, outT, dxT]) t.buffer.destroy();
  }
  console.log(`gelu max |err| (random part): out ${maxOut.toExponential(2)}, dx ${maxDx.toExponential(2)}`);
});

Deno.test("swigluForward and swigluBackward match the f64 reference on awkward sizes", async () => {
  const gpu = await getGpu();
  let maxOut = 0, maxDgate = 0, maxDup = 0;
  for (const [N, F] of [[1, 1], [1, 7], [7, 33], [33, 100], [257, 33], [5, 768]]) {
    const n = N * F;
    const gate = inputs(n, n, 2, SWIGLU_SPECIALS);
    const m = gate.length;
    const up = fillNormal(new Float32Array(m), n, 3);
    const dout = fillNormal(new Float32Array(m), n, 4);
    const gateT = upload(gpu, "gate", gate), upT = upload(gpu, "up", up), doutT = upload(gpu, "dout", dout);
    const outT = createTensor(gpu, [m], { label: "out" });
    // dgate and dup share one buffer, as in a caller's gradient arena.
    const upOffset = align(m * 4, gpu.limits.minStorageBufferOffsetAlignment);
    const gradBuffer = createTensor(gpu, [upOffset / 4 + m], { label: "grads" }).buffer;
    const dgateT: Tensor = { buffer: gradBuffer, offset: 0, shape: [m], dtype: "f32", label: "dgate" };
    const dupT: Tensor = { buffer: gradBuffer, offset: upOffset, shape: [m], dtype: "f32", label: "dup" };
    for (const t of [outT, dgateT, dupT]) poison(gpu, t);
    const rec = new Recorder(gpu, "swiglu");
    await swigluForward(rec, outT, gateT, upT);
    await swigluBackward(rec, dgateT, dupT, doutT, gateT, upT);
    await rec.submit();
    const [out, dgate, dup] = await readTensors(gpu, [outT, dgateT, dupT]);
    const want = new Float64Array(m), wantDgate = new Float64Array(m), wantDup = new Float64Array(m);
    ref.swigluForward(want, f64(gate), f64(up), m);
    ref.swigluBackward(wantDgate, wantDup, f64(dout), f64(gate), f64(up), m);
    // σ(g) carries exp's error, ≤ 3 + 2|g| ulp: 1.8e-6 relative at |g| = 15, 1.1e-5 at |g| = 88;
    // three or four f32 products add < 3e-7. A σ below 1.2e-38 may be flushed to zero (WGSL allows
    // it): ≤ 88·1.2e-38·|up·dout| < 1e-34 absolute. dgate's 1 + g·(1 − σ) cancels near g = −1.28,
    // leaving ~1e-7·|dout·up| absolute there.
    const random = { atol: 1e-34, rtol: 2e-6 }, specials = { atol: 1e-34, rtol: 2e-5 };
    maxOut = Math.max(maxOut, compareParts(`swiglu out ${N}x${F}`, n, out, want, random, specials));
    maxDup = Math.max(maxDup, compareParts(`swiglu dup ${N}x${F}`, n, dup, wantDup, random, specials));
    const dgateTol = { atol: 1e-6, rtol: 2e-6 };
    maxDgate = Math.max(
      maxDgate,
      compareParts(`swiglu dgate ${N}x${F}`, n, dgate, wantDgate, dgateTol, { ...dgateTol, rtol: 2e-5 }),
    );
    for (const t of [gateT, upT, doutT, outT]) t.buffer.destroy();
    gradBuffer.destroy();
  }
  console.log(
    `swiglu max |err| (random part): out ${maxOut.toExponential(2)}, dgate ${maxDgate.toExponential(2)}, ` +
      `dup ${maxDup.toExponential(2)}`,
  );
});

Deno.test("activation launchers refuse mismatched shapes and dtypes, naming the tensors", async () => {
  const gpu = await getGpu();
  const rec = new Recorder(gpu, "errors");
  const a = createTensor(gpu, [7, 33], { label: "gate" });
  const b = createTensor(gpu, [33, 7], { label: "up" });
  const c = createTensor(gpu, [7, 33], { label: "out" });
  const ids = createTensor(gpu, [7, 33], { label: "ids", dtype: "u32" });
  await assert.rejects(
    () => swigluForward(rec, c, a, b),
    (e: Error) => e instanceof RangeError && /up has shape \[33, 7\].*out \[7, 33\]/.test(e.message),
  );
  await assert.rejects(
    () => geluForward(rec, c, ids),
    (e: Error) => e instanceof TypeError && /ids is u32, expected f32/.test(e.message),
  );
  await assert.rejects(
    () => geluBackward(rec, c, a, createTensor(gpu, [231], { label: "x" })),
    (e: Error) => e instanceof RangeError && /x has shape \[231\]/.test(e.message),
  );
  assert.equal(rec.dispatchCount, 0);
});
