import assert from "node:assert/strict";
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import { grid1d } from "../src/gpu/grid.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readTensors, type Tensor, upload } from "../src/gpu/tensor.ts";
import { add, axpy, fill, mul, scale } from "../src/ops/elementwise.ts";
import { fillUniform } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";
import * as ref from "./reference/elementwise.ts";

/** Unit roundoff of f32: a correctly rounded result errs by at most u·|exact|. */
const u = 2 ** -24;

/**
 * A tensor of n elements inside a bigger buffer, one offset alignment in, surrounded by `guard`, so stray
 * reads change results and stray writes show in `guards`.
 */
function embedded(gpu: Gpu, n: number, label: string, guard: number) {
  const pad = gpu.limits.minStorageBufferOffsetAlignment / 4;
  const whole = createTensor(gpu, [pad + n + 5], { label: `${label} buffer` });
  upload(gpu, whole, new Float32Array(pad + n + 5).fill(guard));
  const t: Tensor = { ...whole, offset: pad * 4, shape: [n], label };
  return {
    t,
    whole,
    guards: (all: Float32Array) => [...all.subarray(0, pad), ...all.subarray(pad + n)],
  };
}

Deno.test("add, mul, scale, axpy and fill match float64 at awkward sizes, on sub-ranges", async () => {
  const gpu = await getGpu();
  const alpha = Math.fround(-0.3712); // the kernel receives α as an f32 uniform
  for (const n of [1, 7, 33, 257, 1000, 100003]) {
    const aData = fillUniform(new Float32Array(n), n, 0, -2, 2);
    const bData = fillUniform(new Float32Array(n), n, 1, -2, 2);
    const start = fillUniform(new Float32Array(n), n, 2, -2, 2);
    const a = embedded(gpu, n, "a", 1e30);
    const b = embedded(gpu, n, "b", 1e30);
    upload(gpu, a.t, aData);
    upload(gpu, b.t, bData);
    const outs = ["sum", "product", "scaled", "accumulated", "filled"].map((l) =>
      embedded(gpu, n, l, 1234.5)
    );
    const [sum, product, scaled, accumulated, filled] = outs.map((o) => o.t);
    for (const o of [sum, product, scaled, filled]) poison(gpu, o);
    upload(gpu, accumulated, start);
    const rec = new Recorder(gpu, "elementwise");
    await add(rec, sum, a.t, b.t);
    await mul(rec, product, a.t, b.t);
    await scale(rec, scaled, a.t, alpha);
    await axpy(rec, accumulated, a.t, alpha);
    await fill(rec, filled, -0.1);
    await rec.submit();
    const got = await readTensors(gpu, outs.map((o) => o.whole)) as Float32Array[];
    const body = (all: Float32Array) =>
      all.subarray(gpu.limits.minStorageBufferOffsetAlignment / 4).subarray(0, n);
    // add, mul, scale: one correctly rounded f32 operation on f32 inputs.
    const once = { atol: 0, rtol: u };
    compare(`add n=${n}`, body(got[0]), ref.add(new Float64Array(n), aData, bData), once);
    compare(`mul n=${n}`, body(got[1]), ref.mul(new Float64Array(n), aData, bData), once);
    compare(`scale n=${n}`, body(got[2]), ref.scale(new Float64Array(n), aData, alpha), once);
    // WGSL lets fma round twice (α·a, then the add): u·|α·a| ≤ u·|α|·2 more than one rounding.
    compare(`axpy n=${n}`, body(got[3]), ref.axpy(Float64Array.from(start), aData, alpha), {
      atol: u * Math.abs(alpha) * 2,
      rtol: u,
    });
    assertBitwiseEqual(`fill n=${n}`, body(got[4]), new Float32Array(n).fill(-0.1));
    for (const [i, o] of outs.entries()) {
      assert.ok(o.guards(got[i]).every((v) => v === 1234.5), `${o.t.label} n=${n}: a write left its range`);
    }
    for (const o of [a, b, ...outs]) o.whole.buffer.destroy();
  }
});

Deno.test("more than 65,535 workgroups spill into a 2-D grid and every element is written", async () => {
  const gpu = await getGpu();
  // Two threads per workgroup: 8·65,537 + 7 elements need 65,537 vec4 workgroups (the same kernel code
  // path a 256-wide launch takes past 2²⁶ elements on devices that can bind that much). Not 1 thread:
  // the flat index's ·WG term would then go untested.
  const n = 8 * 65537 + 7, WG = 2;
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  const [x, y] = grid1d(gpu, Math.floor(n / 4), WG);
  assert.ok(y > 1 && x <= max && x * y * WG >= Math.floor(n / 4), `grid [${x}, ${y}] for 65,537 groups`);
  const aData = fillUniform(new Float32Array(n), 5, 0, -1, 1);
  const bData = fillUniform(new Float32Array(n), 5, 1, -1, 1);
  const a = createTensor(gpu, [n], { label: "a" });
  const b = createTensor(gpu, [n], { label: "b" });
  const sum = createTensor(gpu, [n], { label: "sum" });
  const filled = createTensor(gpu, [n], { label: "filled" });
  upload(gpu, a, aData);
  upload(gpu, b, bData);
  poison(gpu, sum);
  poison(gpu, filled);
  const rec = new Recorder(gpu, "spill");
  await add(rec, sum, a, b, { workgroupSize: WG });
  await fill(rec, filled, 3, { workgroupSize: WG });
  await rec.submit();
  const [gotSum, gotFill] = await readTensors(gpu, [sum, filled]) as Float32Array[];
  compare("add 2-D grid", gotSum, ref.add(new Float64Array(n), aData, bData), { atol: 0, rtol: u });
  assertBitwiseEqual("fill 2-D grid", gotFill, new Float32Array(n).fill(3));
  for (const t of [a, b, sum, filled]) t.buffer.destroy();
});

Deno.test("elementwise launchers refuse mismatched shapes, dtypes and aliasing, naming the tensors", async () => {
  const gpu = await getGpu();
  const rec = new Recorder(gpu, "errors");
  const x = createTensor(gpu, [3, 7], { label: "x" });
  const y = createTensor(gpu, [7, 3], { label: "y" });
  const out = createTensor(gpu, [3, 7], { label: "out" });
  const ids = createTensor(gpu, [3, 7], { label: "ids", dtype: "i32" });
  await assert.rejects(
    () => add(rec, out, x, y),
    (e: Error) =>
      e instanceof RangeError && /y \[7, 3\] and out \[3, 7\] must have the same shape/.test(e.message),
  );
  await assert.rejects(
    () => axpy(rec, out, y, 2),
    (e: Error) => e instanceof RangeError && /axpy: y \[7, 3\]/.test(e.message),
  );
  await assert.rejects(
    () => mul(rec, out, x, ids),
    (e: Error) => e instanceof TypeError && /mul: ids is i32, expected f32/.test(e.message),
  );
  await assert.rejects(
    () => fill(rec, ids, 0),
    (e: Error) => e instanceof TypeError && /fill: ids is i32/.test(e.message),
  );
  await assert.rejects(
    () => scale(rec, out, x, 2, { workgroupSize: 0 }),
    (e: Error) => e instanceof RangeError && /workgroupSize 0/.test(e.message),
  );
  assert.equal(rec.dispatchCount, 0);
  // In place through an input is refused by WebGPU (read-only and read-write views of one buffer).
  await assert.rejects(
    () => add(rec, x, x, out),
    (e: Error) => /input x and output x share one GPU buffer/.test(e.message),
  );
  for (const t of [x, y, out, ids]) t.buffer.destroy();
});
