import assert from "node:assert/strict";
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readTensors, upload } from "../src/gpu/tensor.ts";
import { createSgdTable, destroySgdTable, SGD_CHUNK, sgdClipped, type SgdEntry } from "../src/ops/sgd.ts";
import { fillNormal } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";
import { sgdClippedRef } from "./reference/sgd.ts";

const TOTAL = 5000;
// Awkward sizes around gaps no entry covers: one element, less than a chunk, just over one chunk, two
// chunks and three elements, and a tensor whose gradient holds an Inf (left unchanged). The gradient
// scales put a, b clip-inactive (‖g‖ < 1) and c, d clip-active (‖g‖ > 1) at maxNorm 1.
const entries: SgdEntry[] = [
  { label: "a", offset: 0, size: 1 },
  { label: "b", offset: 5, size: 300 },
  { label: "c", offset: 320, size: SGD_CHUNK + 1 },
  { label: "d", offset: 1400, size: 2 * SGD_CHUNK + 3 },
  { label: "e", offset: 3600, size: 777 },
];
const gradScales = [0.3, 0.02, 0.5, 0.05, 1];

function inputs(): { params: Float32Array; grads: Float32Array } {
  const params = fillNormal(new Float32Array(TOTAL), 3, 0);
  const grads = fillNormal(new Float32Array(TOTAL), 3, 1);
  entries.forEach((e, k) => {
    for (let j = 0; j < e.size; j++) grads[e.offset + j] *= gradScales[k];
  });
  grads[3600 + 500] = Infinity;
  return { params, grads };
}

async function runGpu(lr: number, maxNorm: number): Promise<{ params: Float32Array; sumSq: Float32Array }> {
  const gpu = await getGpu();
  const { params, grads } = inputs();
  const table = createSgdTable(gpu, entries);
  const p = createTensor(gpu, [TOTAL], { label: "params" });
  const g = createTensor(gpu, [TOTAL], { label: "grads" });
  upload(gpu, p, params);
  upload(gpu, g, grads);
  poison(gpu, table.partials);
  poison(gpu, table.sumSq);
  const rec = new Recorder(gpu, "sgd");
  await sgdClipped(rec, p, g, table, { lr, maxNorm });
  await rec.submit();
  const [out, sumSq] = await readTensors(gpu, [p, table.sumSq]) as Float32Array[];
  rec.destroy();
  destroySgdTable(table);
  p.buffer.destroy();
  g.buffer.destroy();
  return { params: out, sumSq };
}

for (const [lr, maxNorm] of [[0.7, 1], [1, 0]] as const) {
  Deno.test(`sgdClipped (lr ${lr}, maxNorm ${maxNorm}) matches the float64 reference per tensor`, async () => {
    const { params, grads } = inputs();
    const want = Float64Array.from(params);
    const sumSq = sgdClippedRef(want, grads, entries, lr, maxNorm);
    const norms = Array.from(sumSq, Math.sqrt);
    console.log(`per-tensor ‖g‖: ${norms.map((x) => x.toFixed(3)).join(", ")}`);
    if (maxNorm > 0) {
      assert.ok(norms[0] < 1 && norms[1] < 1, "a and b must be clip-inactive");
      assert.ok(norms[2] > 1 && norms[3] > 1, "c and d must be clip-active");
    }
    const got = await runGpu(lr, maxNorm);
    // f32 sums of ≤ 2051 squares in a tree: 1e-6 relative (observed ≤ 2e-7).
    const finite = [0, 1, 2, 3];
    const r = compare(
      "Σ g² per tensor",
      finite.map((k) => got.sumSq[k]),
      finite.map((k) => sumSq[k]),
      { atol: 0, rtol: 1e-6 },
    );
    assert.equal(got.sumSq[4], Infinity, "the tensor with an Inf gradient has ‖g‖² = Inf");
    // One f32 rounding of p − lr·g·factor on |p| ≲ 4, plus the factor's relative error (≤ 1e-6).
    const u = compare("params after the step", got.params, want, { atol: 2e-6, rtol: 1e-6 });
    console.log(
      `Σ g² max rel err ${r.maxRel.toExponential(2)}; params max abs err ${u.maxAbs.toExponential(2)}`,
    );
    // Gaps and the non-finite tensor keep their exact bits.
    const untouched = (i: number) => !entries.slice(0, 4).some((e) => i >= e.offset && i < e.offset + e.size);
    const idx = Array.from({ length: TOTAL }, (_, i) => i).filter(untouched);
    assertBitwiseEqual(
      "untouched elements",
      Float32Array.from(idx, (i) => got.params[i]),
      Float32Array.from(idx, (i) => params[i]),
    );
    const again = await runGpu(lr, maxNorm);
    assertBitwiseEqual("a second run", again.params, got.params);
  });
}

Deno.test("createSgdTable refuses overlapping and empty tables; sgdClipped checks its sizes", async () => {
  const gpu = await getGpu();
  assert.throws(() => createSgdTable(gpu, []), /no tensors/);
  assert.throws(
    () => createSgdTable(gpu, [{ label: "x", offset: 0, size: 10 }, { label: "y", offset: 9, size: 2 }]),
    /y overlaps x/,
  );
  const table = createSgdTable(gpu, [{ label: "x", offset: 0, size: 10 }]);
  const small = createTensor(gpu, [8], { label: "small" });
  const rec = new Recorder(gpu, "bad");
  await assert.rejects(() => sgdClipped(rec, small, small, table, { lr: 1, maxNorm: 1 }), /small holds 8/);
  destroySgdTable(table);
  small.buffer.destroy();
});
