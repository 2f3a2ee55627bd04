import assert from "node:assert/strict";
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readTensors, upload } from "../src/gpu/tensor.ts";
import {
  adamw,
  type AdamWEntry,
  createAdamWStep,
  createAdamWTable,
  writeAdamWStep,
} from "../src/ops/adamw.ts";
import { reduceFull } from "../src/ops/reduce.ts";
import { fillNormal } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";
import { type AdamWEntryRef, adamwUpdate } from "./reference/train_ops.ts";

const EPS = 2 ** -24;
const TOTAL = 2400;
// Four tensors of awkward sizes (one spans three 1024-element chunks) around a frozen range [7, 40)
// and a gap [2092, 2100) that no entry covers.
const entries: AdamWEntry[] = [
  { label: "A", offset: 0, size: 7, lrScale: 1, weightDecay: 0.1 },
  { label: "B", offset: 40, size: 1, lrScale: 2, weightDecay: 0 },
  { label: "C", offset: 41, size: 2051, lrScale: 0.5 },
  { label: "D", offset: 2100, size: 257, lrScale: 16, weightDecay: 0.05 },
];
const DEFAULT_DECAY = 0.01;
const refTable: AdamWEntryRef[] = entries.map((e) => ({
  offset: e.offset,
  size: e.size,
  lrScale: e.lrScale ?? 1,
  weightDecay: e.weightDecay ?? DEFAULT_DECAY,
}));
const STEPS = 10;
const baseLr = 1e-2;
const lrAt = (t: number) => baseLr * (1 - t / 20); // a schedule, so each step's write matters
const gradsAt = (t: number) => fillNormal(new Float32Array(TOTAL), 77, t, 0, 0.5);

/** Runs STEPS replays of one recorded step (sumsq + AdamW); returns final params, m, v. */
async function runGpu(maxGradNorm: number | undefined): Promise<Float32Array[]> {
  const gpu = await getGpu();
  const config = { lr: baseLr, weightDecay: DEFAULT_DECAY, maxGradNorm };
  const table = createAdamWTable(gpu, entries, config);
  const params = createTensor(gpu, [TOTAL], { label: "params" });
  const m = createTensor(gpu, [TOTAL], { label: "m" });
  const v = createTensor(gpu, [TOTAL], { label: "v" });
  const grads = createTensor(gpu, [TOTAL], { label: "grads" });
  const gradSumSq = createTensor(gpu, [1], { label: "gradSumSq" });
  const stepValues = createAdamWStep(gpu);
  upload(gpu, params, fillNormal(new Float32Array(TOTAL), 77, 1000));
  upload(gpu, m, new Float32Array(TOTAL));
  upload(gpu, v, new Float32Array(TOTAL));
  poison(gpu, gradSumSq);
  const rec = new Recorder(gpu, "adamw step");
  if (maxGradNorm !== undefined) {
    await reduceFull(rec, gradSumSq, grads, "sumsq");
    await adamw(rec, params, m, v, grads, table, stepValues, gradSumSq);
  } else {
    await adamw(rec, params, m, v, grads, table, stepValues);
  }
  for (let t = 1; t <= STEPS; t++) {
    upload(gpu, grads, gradsAt(t));
    writeAdamWStep(gpu, stepValues, table, { step: t, lr: lrAt(t) });
    await rec.submit();
  }
  const out = await readTensors(gpu, [params, m, v]) as Float32Array[];
  rec.destroy();
  for (const t of [params, m, v, grads, gradSumSq, stepValues, table.table, table.chunks]) t.buffer.destroy();
  return out;
}

function runReference(maxGradNorm: number | undefined): Float64Array[] {
  const params = Float64Array.from(fillNormal(new Float32Array(TOTAL), 77, 1000));
  const m = new Float64Array(TOTAL);
  const v = new Float64Array(TOTAL);
  for (let t = 1; t <= STEPS; t++) {
    adamwUpdate(params, m, v, gradsAt(t), refTable, {
      lr: lrAt(t),
      beta1: 0.9,
      beta2: 0.999,
      eps: 1e-8,
      step: t,
      maxNorm: maxGradNorm,
    });
  }
  return [params, m, v];
}

/**
 * Tolerances after 10 steps. Each step moves p by at most lr·|m̂|/(√v̂ + ε) ≲ 3·lr (β1 = 0.9, β2 = 0.999:
 * |m̂|/√v̂ ≤ (1 − β1)/√(1 − β2) at worst); that update carries ~8 roundings (m, v, √, two divisions, the
 * products) and p·(1 − lr·wd) one more: per step ≤ 3·lr·8ε + 2ε·|p|, summed over 10 steps. Clipping
 * multiplies g by a coefficient from a 2400-term f32 sum of squares (≲ 12ε relative): m and v move
 * with it (rtol; v twice), while Adam's update is invariant to it. m ← m + (1 − β1)(g − m) rounds at
 * ≲ 2ε·max|m| per step whatever the signs (absolute); v sums positive terms, ≲ 3ε relative per step.
 */
function tolerancesFor(entry: AdamWEntryRef, mRef: ArrayLike<number>) {
  const lr = baseLr * entry.lrScale;
  const maxM = Array.from(mRef).reduce((a, x) => Math.max(a, Math.abs(x)), 0);
  return {
    params: { atol: STEPS * (3 * lr * 8 * EPS), rtol: STEPS * 2 * EPS },
    m: { atol: STEPS * 2 * EPS * maxM, rtol: 12 * EPS },
    v: { atol: 0, rtol: 24 * EPS + STEPS * 3 * EPS },
  };
}

function compareRun(name: string, got: Float32Array[], want: Float64Array[]): void {
  const [p, m, v] = got;
  for (const entry of refTable) {
    const range = (a: ArrayLike<number>) => Array.from(a).slice(entry.offset, entry.offset + entry.size);
    const tol = tolerancesFor(entry, range(want[1]));
    const what = `${name} tensor at ${entry.offset} (lrScale ${entry.lrScale})`;
    const rp = compare(`${what} params`, range(p), range(want[0]), tol.params);
    const rm = compare(`${what} m`, range(m), range(want[1]), tol.m);
    const rv = compare(`${what} v`, range(v), range(want[2]), tol.v);
    if (Deno.env.get("VERBOSE")) {
      console.log(
        `${what}: params max |err| ${rp.maxAbs.toExponential(2)} (atol ${
          tol.params.atol.toExponential(2)
        }), ` +
          `m ${rm.maxAbs.toExponential(2)} (atol ${tol.m.atol.toExponential(2)}), v max rel ${
            rv.maxRel.toExponential(2)
          } (rtol ${tol.v.rtol.toExponential(2)})`,
      );
    }
  }
  // Frozen and uncovered elements: parameters bit-identical to their start, moments untouched.
  const start = fillNormal(new Float32Array(TOTAL), 77, 1000);
  for (const [lo, hi] of [[7, 40], [2092, 2100], [2357, TOTAL]]) {
    assertBitwiseEqual(`${name} untouched params [${lo}, ${hi})`, p.slice(lo, hi), start.slice(lo, hi));
    assert.ok(m.slice(lo, hi).every((x) => x === 0) && v.slice(lo, hi).every((x) => x === 0));
  }
}

Deno.test("AdamW over a 4-tensor table matches torch.optim.AdamW in float64 for 10 steps", async () => {
  const noClip = await runGpu(undefined);
  compareRun("no clipping", noClip, runReference(undefined));
  // ‖g‖ ≈ 0.5·√2400 ≈ 24.5 each step: maxNorm 1 clips by ~0.04, maxNorm 100 never clips.
  compareRun("clipping active", await runGpu(1), runReference(1));
  const inactive = await runGpu(100);
  compareRun("clipping inactive", inactive, runReference(100));
  // With the clip coefficient exactly 1, the clipped kernel is the unclipped one.
  assertBitwiseEqual("inactive clipping = no clipping", inactive[0], noClip[0]);
  // Sanity: clipping changes the moments (a test of the clip path that cannot pass by accident).
  const clipped = runReference(1);
  assert.ok(Math.abs(clipped[1][45] - runReference(undefined)[1][45]) > 1e-3);
});

Deno.test("AdamW with clipping is bitwise identical across runs", async () => {
  const a = await runGpu(1);
  const b = await runGpu(1);
  for (let k = 0; k < 3; k++) assertBitwiseEqual(`rerun ${["params", "m", "v"][k]}`, a[k], b[k]);
});

Deno.test("AdamW refuses bad tables, layouts, dtypes and steps by name", async () => {
  const gpu = await getGpu();
  assert.throws(
    () =>
      createAdamWTable(gpu, [{ label: "q", offset: 0, size: 10 }, { label: "k", offset: 9, size: 2 }], {
        lr: 1,
      }),
    /k at \[9, 11\) overlaps q at \[0, 10\)/,
  );
  assert.throws(() => createAdamWTable(gpu, [], { lr: 1 }), /no trainable tensors/);
  const table = createAdamWTable(gpu, [{ label: "w", offset: 0, size: 10 }], { lr: 1 });
  const clippedTable = createAdamWTable(gpu, [{ label: "w", offset: 0, size: 10 }], {
    lr: 1,
    maxGradNorm: 1,
  });
  const t = (shape: number[], label: string, dtype: "f32" | "i32" = "f32") =>
    createTensor(gpu, shape, { label, dtype });
  const [params, m, v, grads, stepValues] = [
    t([10], "params"),
    t([10], "m"),
    t([10], "v"),
    t([10], "grads"),
    createAdamWStep(gpu),
  ];
  const r = new Recorder(gpu, "errors");
  await assert.rejects(
    () => adamw(r, params, t([9], "m9"), v, grads, table, stepValues),
    /m9 \(9\) must have the layout of params \(10\)/,
  );
  await assert.rejects(
    () => adamw(r, params, m, v, t([10], "gradsI", "i32"), table, stepValues),
    /gradsI is i32, expected f32/,
  );
  const big = createAdamWTable(gpu, [{ label: "w", offset: 5, size: 10 }], { lr: 1 });
  await assert.rejects(
    () => adamw(r, params, m, v, grads, big, stepValues),
    /params \(10\) holds 10 elements; the table reaches element 15/,
  );
  await assert.rejects(() => adamw(r, params, m, v, grads, clippedTable, stepValues), /clipping needs both/);
  await assert.rejects(
    () => adamw(r, params, m, v, grads, table, stepValues, t([1], "s")),
    /clipping needs both/,
  );
  assert.throws(() => writeAdamWStep(gpu, stepValues, table, { step: 0 }), /step 0 must be an integer ≥ 1/);
  assert.equal(r.dispatchCount, 0);
});
