import assert from "node:assert/strict";
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, numel, poison, readF32, readTensors, type Tensor, upload } from "../src/gpu/tensor.ts";
import { reduceFull, reduceFullScratchSize, rowReduce, rowReduceWorkgroupSize } from "../src/ops/reduce.ts";
import { fillUniform, Rng } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";
import * as ref from "./reference/reduce.ts";

/** Unit roundoff of f32: one rounded add or fma errs by at most u·|result|. */
const u = 2 ** -24;

function input(gpu: Gpu, shape: number[], data: Float32Array, label = "x"): Tensor {
  const t = createTensor(gpu, shape, { label });
  upload(gpu, t, data);
  return t;
}

async function runRowReduce(
  gpu: Gpu,
  x: Tensor,
  outShape: number[],
  op: "sum" | "max" | "mean",
  workgroupSize?: number,
) {
  const out = createTensor(gpu, outShape, { label: "out" });
  poison(gpu, out);
  const rec = new Recorder(gpu, "rowReduce");
  await rowReduce(rec, out, x, op, { workgroupSize });
  await rec.submit();
  const got = await readF32(gpu, out);
  out.buffer.destroy();
  return got;
}

Deno.test("rowReduce sum, max and mean match float64 at awkward (N, C)", async () => {
  const gpu = await getGpu();
  const shapes = [[1, 1], [7, 1], [3, 7], [5, 33], [4, 257], [3, 1000], [2, 100003], [2, 3, 33]];
  for (const [s, shape] of shapes.entries()) {
    const C = shape[shape.length - 1], N = numel(shape) / C;
    const data = fillUniform(new Float32Array(N * C), 100 + s, 0, -1, 1);
    const x = input(gpu, shape, data);
    let rowAbs = 0;
    for (let n = 0; n < N; n++) {
      let a = 0;
      for (let c = 0; c < C; c++) a += Math.abs(data[n * C + c]);
      rowAbs = Math.max(rowAbs, a);
    }
    // The adapter's own choice, then the widest and the narrowest tree.
    for (const WG of new Set([rowReduceWorkgroupSize(gpu, C), 256, 32])) {
      // Each element goes through ≤ ⌈C/WG⌉ − 1 serial adds and log2(WG) tree adds, each rounding by u:
      // |err| ≤ (⌈C/WG⌉ + log2 WG)·u·Σ|x_row| (Higham's γ bound for a summation of that depth).
      const depth = Math.ceil(C / WG) + Math.log2(WG);
      const sumTol = { atol: depth * u * rowAbs, rtol: 0 };
      for (const op of ["sum", "max", "mean"] as const) {
        const got = await runRowReduce(gpu, x, shape.length > 1 ? shape.slice(0, -1) : [1], op, WG);
        const want = ref.rowReduce(new Float64Array(N), data, N, C, op);
        // max picks one input value: exact. mean = rounded sum / C: the sum's bound / C plus 2.5 ulp.
        const tol = op === "max"
          ? { atol: 0, rtol: 0 }
          : op === "sum"
          ? sumTol
          : { atol: sumTol.atol / C, rtol: 3e-7 };
        compare(`rowReduce ${op} [${shape}] WG=${WG}`, got, want, tol);
      }
    }
    x.buffer.destroy();
  }
});

Deno.test("rowReduce sums small integers exactly, so no column is dropped or repeated", async () => {
  const gpu = await getGpu();
  // Integers in [−8, 8]: every partial sum is an integer below 2²⁴, so the f32 sum is exact.
  for (const [N, C] of [[3, 100003], [5, 1000], [4, 257], [2, 33], [3, 1]]) {
    const rng = new Rng(77, C);
    const data = Float32Array.from({ length: N * C }, () => rng.int(17) - 8);
    const x = input(gpu, [N, C], data);
    for (const WG of [32, 64, 256]) {
      compare(
        `rowReduce sum integers [${N}, ${C}] WG=${WG}`,
        await runRowReduce(gpu, x, [N], "sum", WG),
        ref.rowReduce(new Float64Array(N), data, N, C, "sum"),
        { atol: 0, rtol: 0 },
      );
    }
    x.buffer.destroy();
  }
});

Deno.test("rowReduce max handles all-negative rows, −1e30 and −∞", async () => {
  const gpu = await getGpu();
  const C = 37;
  const rows: number[][] = [
    Array.from({ length: C }, (_, c) => -1 - c), // all negative: the max is −1, at c = 0
    Array.from({ length: C }, (_, c) => -50 + c * 0.5 - (c === 29 ? 100 : 0)), // max near the end
    Array.from({ length: C }, (_, c) => (c === 5 ? -1e30 : -3 - c)), // one −1e30 among negatives
    Array.from({ length: C }, () => -1e30), // only −1e30
    Array.from({ length: C }, (_, c) => (c % 3 === 0 ? -1e30 : -2e-3 * c)), // −1e30 and small negatives
    Array.from({ length: C }, (_, c) => (c === C - 1 ? -7 : -Infinity)), // −∞ except the last column
  ];
  const data = new Float32Array(rows.flat());
  const N = rows.length;
  const x = input(gpu, [N, C], data);
  const got = await runRowReduce(gpu, x, [N], "max");
  compare("rowReduce max, negative rows", got, ref.rowReduce(new Float64Array(N), data, N, C, "max"), {
    atol: 0,
    rtol: 0,
  });
  // C = 1 rows: the value itself, whatever it is.
  const single = new Float32Array([-1e30, -Infinity, -0.5, 3]);
  const x1 = input(gpu, [4, 1], single);
  assertBitwiseEqual("rowReduce max, C = 1", await runRowReduce(gpu, x1, [4], "max"), single);
  x.buffer.destroy();
  x1.buffer.destroy();
});

Deno.test("rowReduce spills past 65,535 rows into a 2-D grid", async () => {
  const gpu = await getGpu();
  const N = 65535 + 8, C = 3;
  const data = fillUniform(new Float32Array(N * C), 7, 1, -1, 1);
  const x = input(gpu, [N, C], data);
  const got = await runRowReduce(gpu, x, [N], "sum");
  // Three terms, two rounded adds of values ≤ 3: 2·u·3.
  compare("rowReduce sum N = 65543", got, ref.rowReduce(new Float64Array(N), data, N, C, "sum"), {
    atol: 2 * u * 3,
    rtol: 0,
  });
  const again = await runRowReduce(gpu, x, [N], "sum");
  assertBitwiseEqual("rowReduce rerun", got, again);
  x.buffer.destroy();
});

/**
 * x as a sub-range of a bigger buffer, `slots` offset alignments in, whose other elements are 1e30 so that
 * any stray read shows.
 */
function embedded(gpu: Gpu, data: Float32Array, slots: number, after: number): Tensor {
  const before = slots * gpu.limits.minStorageBufferOffsetAlignment / 4;
  const whole = createTensor(gpu, [before + data.length + after], { label: "table" });
  const all = new Float32Array(before + data.length + after).fill(1e30);
  all.set(data, before);
  upload(gpu, whole, all);
  return { ...whole, offset: before * 4, shape: [data.length], label: "grads" };
}

async function runReduceFull(
  gpu: Gpu,
  x: Tensor,
  op: "sum" | "sumsq",
  maxBindingBytes?: number,
): Promise<Float32Array> {
  const out = createTensor(gpu, [1], { label: "out" });
  poison(gpu, out);
  const rec = new Recorder(gpu, "reduceFull");
  await reduceFull(rec, out, x, op, undefined, { maxBindingBytes });
  await rec.submit();
  const [got] = await readTensors(gpu, [out]);
  out.buffer.destroy();
  return got as Float32Array;
}

Deno.test("reduceFull sum and sumsq match float64 on sub-ranges of a bigger buffer", async () => {
  const gpu = await getGpu();
  for (const n of [1, 7, 33, 257, 1000, 100003]) {
    const data = fillUniform(new Float32Array(n), 200 + n, 0, -1, 1);
    const x = embedded(gpu, data, 1, 37);
    for (const op of ["sum", "sumsq"] as const) {
      const got = await runReduceFull(gpu, x, op);
      const want = new Float64Array(1);
      const { magnitude } = ref.reduceFull(want, data, op);
      // Each term is rounded at most once per level: 32 serial adds per vec4 lane, 2 lane adds, 6 tree
      // levels, ⌈G/64⌉ serial adds of the G partials, 6 tree levels, 3 tail adds, 1 for the square:
      // |err| ≤ depth·u·Σ|x| (or Σx²).
      const depth = 50 + Math.ceil(reduceFullScratchSize(n) / 64);
      compare(`reduceFull ${op} n=${n}`, got, want, { atol: depth * u * magnitude, rtol: 0 });
    }
    x.buffer.destroy();
  }
});

Deno.test("reduceFull is exact on small integers, chunked or not", async () => {
  const gpu = await getGpu();
  // Integers in [−8, 8]: every partial sum stays an integer below 2²⁴, so the f32 sum is exact and a
  // dropped, repeated or stray element shows as a nonzero error.
  for (const n of [5, 8193, 100003]) {
    const rng = new Rng(31, n);
    const data = Float32Array.from({ length: n }, () => rng.int(17) - 8);
    const x = embedded(gpu, data, 2, 3);
    for (const op of ["sum", "sumsq"] as const) {
      const want = new Float64Array(1);
      ref.reduceFull(want, data, op);
      compare(`reduceFull ${op} integers n=${n}`, await runReduceFull(gpu, x, op), want, {
        atol: 0,
        rtol: 0,
      });
      // One 8192-element workgroup per binding: the same partials, so the same bits.
      const chunked = await runReduceFull(gpu, x, op, 8192 * 4);
      compare(`reduceFull ${op} integers n=${n} chunked`, chunked, want, { atol: 0, rtol: 0 });
    }
    x.buffer.destroy();
  }
});

Deno.test("reduceFull gives identical bits on reruns and whatever the binding size", async () => {
  const gpu = await getGpu();
  const n = 100003;
  const data = fillUniform(new Float32Array(n), 9, 3, -1, 1);
  const x = embedded(gpu, data, 3, 5);
  for (const op of ["sum", "sumsq"] as const) {
    const first = await runReduceFull(gpu, x, op);
    assertBitwiseEqual(`reduceFull ${op} rerun`, first, await runReduceFull(gpu, x, op));
    assertBitwiseEqual(`reduceFull ${op} chunked`, first, await runReduceFull(gpu, x, op, 3 * 8192 * 4));
  }
  // A replayed recording (how a training step runs) gives the same bits too.
  const out = createTensor(gpu, [1], { label: "out" });
  const rec = new Recorder(gpu, "replay");
  await reduceFull(rec, out, x, "sumsq");
  await rec.submit();
  const a = await readF32(gpu, out);
  poison(gpu, out);
  await rec.submit();
  assertBitwiseEqual("reduceFull replay", a, await readF32(gpu, out));
  x.buffer.destroy();
  out.buffer.destroy();
});

Deno.test("reduce launchers refuse wrong shapes and dtypes, naming the tensors", async () => {
  const gpu = await getGpu();
  const rec = new Recorder(gpu, "errors");
  const x = createTensor(gpu, [4, 33], { label: "logits" });
  const wrong = createTensor(gpu, [5], { label: "rowMax" });
  const ints = createTensor(gpu, [4, 33], { label: "tokens", dtype: "u32" });
  const out = createTensor(gpu, [4], { label: "rowSum" });
  const norm = createTensor(gpu, [2], { label: "norm" });
  const tiny = createTensor(gpu, [1], { label: "partials" });
  const big = createTensor(gpu, [20000], { label: "grads" });
  await assert.rejects(
    () => rowReduce(rec, wrong, x, "max"),
    (e: Error) =>
      e instanceof RangeError &&
      /rowMax \[5\] must hold one value per row; logits \[4, 33\] has 4 rows/.test(e.message),
  );
  await assert.rejects(
    () => rowReduce(rec, out, ints, "sum"),
    (e: Error) => e instanceof TypeError && /tokens is u32, expected f32/.test(e.message),
  );
  await assert.rejects(
    () => reduceFull(rec, norm, x, "sum"),
    (e: Error) => e instanceof RangeError && /norm \[2\] must hold exactly one element/.test(e.message),
  );
  await assert.rejects(
    () => reduceFull(rec, tiny, ints, "sumsq"),
    (e: Error) => e instanceof TypeError && /tokens is u32/.test(e.message),
  );
  await assert.rejects(() => reduceFull(rec, tiny, big, "sumsq", createTensor(gpu, [2], { label: "p" })), (
    e: Error,
  ) =>
    e instanceof RangeError && /scratch p \[2\] holds 2 partials; grads \[20000\] needs 3/.test(e.message));
  await assert.rejects(
    () => rowReduce(rec, out, x, "sum", { workgroupSize: 48 }),
    (e: Error) => e instanceof RangeError && /workgroupSize 48 is not a power of two/.test(e.message),
  );
  await assert.rejects(
    () => rowReduce(rec, out, x, "min" as "max"),
    (e: Error) => e instanceof RangeError && /op must be/.test(e.message),
  );
  assert.equal(rec.dispatchCount, 0);
  for (const t of [x, wrong, ints, out, norm, tiny, big]) t.buffer.destroy();
});
