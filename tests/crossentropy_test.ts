import assert from "node:assert/strict";
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readTensors, type Tensor, tensorFrom } from "../src/gpu/tensor.ts";
import {
  checkTargets,
  crossEntropy,
  crossEntropyInPlace,
  crossEntropyLossSum,
  IGNORE_INDEX,
} from "../src/ops/crossentropy.ts";
import { fillNormal, fillUniform, Rng } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";
import { crossEntropyForwardBackward, crossEntropyObjective } from "./reference/train_ops.ts";

const EPS = 2 ** -24; // f32 unit roundoff

/** Seeded logits (N, V) around `shift` (exercises the max subtraction), targets with ~1/8 ignored, weights. */
function makeInputs(N: number, V: number, seed: number, shift: number) {
  const logits = fillNormal(new Float32Array(N * V), seed, 0, shift, 3);
  const rng = new Rng(seed, 1);
  const targets = Int32Array.from({ length: N }, () => rng.int(8) === 0 ? IGNORE_INDEX : rng.int(V));
  const weights = fillUniform(new Float32Array(N), seed, 2, 0, 2);
  const counted = targets.filter((t) => t !== IGNORE_INDEX).length;
  return { logits, targets, weights, gradScale: 1 / Math.max(1, counted) };
}

Deno.test("reference cross-entropy backward is the finite-difference gradient", () => {
  const [N, V] = [4, 5];
  const { logits, targets, weights, gradScale } = makeInputs(N, V, 3, 0);
  targets[1] = IGNORE_INDEX;
  const x = Float64Array.from(logits);
  const losses = new Float64Array(N);
  const dlogits = new Float64Array(N * V);
  crossEntropyForwardBackward(losses, dlogits, x, targets, weights, N, V, gradScale);
  const h = 1e-5;
  for (let i = 0; i < N * V; i++) {
    const xp = x.slice(), xm = x.slice();
    xp[i] += h;
    xm[i] -= h;
    const fd = (crossEntropyObjective(xp, targets, weights, N, V, gradScale) -
      crossEntropyObjective(xm, targets, weights, N, V, gradScale)) / (2 * h);
    // Central differences err by h²·f'''/6 ≈ 1e-11 plus rounding ε·|f|/h ≈ 1e-11.
    assert.ok(Math.abs(fd - dlogits[i]) < 1e-9, `dlogits[${i}]: fd ${fd} vs analytic ${dlogits[i]}`);
  }
});

/**
 * Tolerances from the f32 error analysis, for logits with max |x| = X over V classes:
 * lse = m + log(s) carries the relative error of s (each thread's online sum over V/WG terms ≤ 1, then
 * an 8-level tree: rounding errors of random sign grow as √(V/WG), with 2 for exp's own error) plus
 * ε·|lse|; the loss subtracts x_t (another ε·X). p = exp(x − lse) inherits the absolute error of
 * x − lse as a relative error, plus exp's few ulp.
 */
function tolerances(X: number, V: number, scale: number) {
  const sumRel = (2 * Math.sqrt(V / 256) + 12) * EPS;
  const lseAbs = sumRel + 3 * EPS * (X + Math.log(V));
  return {
    loss: { atol: lseAbs + EPS * X, rtol: 2 * EPS },
    // Off the target, d = p·scale, off by p·(x − lse error + exp's 3 ulp)·scale: relative.
    dlogits: { atol: 2 ** -126, rtol: lseAbs + 2 * EPS * X + 6 * EPS },
    // At the target, d = (p − 1)·scale cancels: p's absolute error (≤ the same δ, as p ≤ 1) remains.
    dlogitsTarget: { atol: (lseAbs + 2 * EPS * X + 6 * EPS) * scale, rtol: 2 * EPS },
  };
}

async function runCase(N: number, V: number, seed: number, shift: number, inPlace: boolean) {
  const gpu = await getGpu();
  const { logits, targets, weights, gradScale } = makeInputs(N, V, seed, shift);
  const logitsT = tensorFrom(gpu, [N, V], logits, { label: "logits" });
  const targetsT = tensorFrom(gpu, [N], targets, { label: "targets", dtype: "i32" });
  const weightsT = tensorFrom(gpu, [N], weights, { label: "weights" });
  const losses = createTensor(gpu, [N], { label: "losses" });
  const dlogits = inPlace ? logitsT : createTensor(gpu, [N, V], { label: "dlogits" });
  poison(gpu, losses);
  if (!inPlace) poison(gpu, dlogits);
  const rec = new Recorder(gpu, "crossEntropy");
  if (inPlace) await crossEntropyInPlace(rec, losses, logitsT, targetsT, weightsT, { gradScale });
  else await crossEntropy(rec, losses, dlogits, logitsT, targetsT, weightsT, { gradScale });
  await rec.submit();
  const [gotLosses, gotD] = await readTensors(gpu, [losses, dlogits]) as Float32Array[];
  const wantLosses = new Float64Array(N);
  const wantD = new Float64Array(N * V);
  crossEntropyForwardBackward(wantLosses, wantD, logits, targets, weights, N, V, gradScale);
  const X = logits.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
  const tol = tolerances(X, V, 2 * gradScale);
  const name = `N=${N} V=${V} shift ${shift}${inPlace ? " in place" : ""}`;
  const l = compare(`losses ${name}`, gotLosses, wantLosses, tol.loss);
  const atTarget = (i: number) => targets[Math.floor(i / V)] === i % V;
  const pick = (a: ArrayLike<number>, target: boolean) =>
    Array.from(a).filter((_, i) => atTarget(i) === target);
  const d = compare(`dlogits ${name}`, pick(gotD, false), pick(wantD, false), tol.dlogits);
  const dt = compare(`dlogits at targets ${name}`, pick(gotD, true), pick(wantD, true), tol.dlogitsTarget);
  if (Deno.env.get("VERBOSE")) {
    console.log(
      `${name}: losses max |err| ${l.maxAbs.toExponential(2)} (atol ${tol.loss.atol.toExponential(2)}), ` +
        `dlogits max rel ${d.maxRel.toExponential(2)} (rtol ${tol.dlogits.rtol.toExponential(2)}), ` +
        `at targets max |err| ${dt.maxAbs.toExponential(2)} (atol ${
          tol.dlogitsTarget.atol.toExponential(2)
        })`,
    );
  }
  for (const t of [logitsT, targetsT, weightsT, losses, dlogits]) t.buffer.destroy();
}

Deno.test("crossEntropy matches float64 for awkward N and V, separate and in place", async () => {
  const sizes: [number, number][] = [[1, 1], [7, 7], [33, 257], [257, 33], [7, 1000], [2, 131071]];
  let seed = 10;
  for (const [N, V] of sizes) {
    for (const inPlace of [false, true]) {
      await runCase(N, V, seed++, inPlace ? 40 : -3, inPlace);
    }
  }
});

Deno.test("crossEntropy spills rows past 65535 workgroups into a 2-D grid", async () => {
  await runCase(65537 + 7, 3, 99, 0, false);
});

Deno.test("the loss, its gradient and the loss sum are bitwise identical across runs; the sum is accurate", async () => {
  const gpu = await getGpu();
  const [N, V] = [1000, 257];
  const { logits, targets, weights, gradScale } = makeInputs(N, V, 5, 1);
  const logitsT = tensorFrom(gpu, [N, V], logits, { label: "logits" });
  const targetsT = tensorFrom(gpu, [N], targets, { label: "targets", dtype: "i32" });
  const weightsT = tensorFrom(gpu, [N], weights, { label: "weights" });
  const runs: Float32Array[][] = [];
  for (let run = 0; run < 2; run++) {
    const losses = createTensor(gpu, [N], { label: "losses" });
    const dlogits = createTensor(gpu, [N, V], { label: "dlogits" });
    const lossSum = createTensor(gpu, [1], { label: "lossSum" });
    for (const t of [losses, dlogits, lossSum]) poison(gpu, t);
    const rec = new Recorder(gpu, `crossEntropy run ${run}`);
    await crossEntropy(rec, losses, dlogits, logitsT, targetsT, weightsT, { gradScale });
    await crossEntropyLossSum(rec, lossSum, losses);
    await rec.submit();
    runs.push(await readTensors(gpu, [losses, dlogits, lossSum]) as Float32Array[]);
  }
  assertBitwiseEqual("losses rerun", runs[0][0], runs[1][0]);
  assertBitwiseEqual("dlogits rerun", runs[0][1], runs[1][1]);
  assertBitwiseEqual("loss sum rerun", runs[0][2], runs[1][2]);
  // The sum of 1000 positive f32 losses, against the same losses summed in f64: 4 vec4 lanes ·
  // 8 elements per thread, then two 256-wide trees: ≲ 20 roundings deep, no cancellation.
  const exactSum = runs[0][0].reduce((a, b) => a + b, 0);
  const sum = compare("loss sum", runs[0][2], [exactSum], { atol: 0, rtol: 20 * EPS });
  if (Deno.env.get("VERBOSE")) {
    console.log(`loss sum rel err ${sum.maxRel.toExponential(2)} (rtol ${20 * EPS})`);
  }
});

Deno.test("bad targets give NaN on the device and errors on the host; bad tensors are refused by name", async () => {
  const gpu = await getGpu();
  const [N, V] = [3, 5];
  const logits = tensorFrom(gpu, [N, V], new Float32Array(N * V), { label: "logits" });
  const targets = tensorFrom(gpu, [N], [2, 5, -1], { label: "targets", dtype: "i32" });
  const weights = tensorFrom(gpu, [N], [1, 1, 1], { label: "weights" });
  const losses = createTensor(gpu, [N], { label: "losses" });
  const dlogits = createTensor(gpu, [N, V], { label: "dlogits" });
  const rec = new Recorder(gpu, "bad targets");
  await crossEntropy(rec, losses, dlogits, logits, targets, weights);
  await rec.submit();
  const [gotLosses, gotD] = await readTensors(gpu, [losses, dlogits]) as Float32Array[];
  assert.ok(Math.abs(gotLosses[0] - Math.log(5)) < 1e-6, `uniform logits: loss ln 5, got ${gotLosses[0]}`);
  assert.ok(Number.isNaN(gotLosses[1]) && Number.isNaN(gotLosses[2]), "targets 5 and −1 give NaN losses");
  assert.ok(gotD.slice(V).every(Number.isNaN), "and NaN gradients");

  assert.throws(
    () => checkTargets("batch.targets", [0, 4, -100, 5], 5),
    /batch.targets\[3\] = 5 is outside .* 0 … 4/,
  );
  assert.throws(() => checkTargets("t", [-1], 5), /t\[0\] = -1/);
  checkTargets("t", [0, 4, -100], 5);

  const r = new Recorder(gpu, "errors");
  const floatTargets = createTensor(gpu, [N], { label: "targetsF" });
  await assert.rejects(
    () => crossEntropy(r, losses, dlogits, logits, floatTargets, weights),
    /targetsF is f32, expected i32/,
  );
  const intLogits = createTensor(gpu, [N, V], { label: "logitsI", dtype: "i32" });
  await assert.rejects(
    () => crossEntropy(r, losses, dlogits, intLogits, targets, weights),
    /logitsI is i32, expected f32/,
  );
  const short = createTensor(gpu, [N - 1], { label: "weights2" });
  await assert.rejects(
    () => crossEntropy(r, losses, dlogits, logits, targets, short),
    /weights2 \(2\) must be \(N,\) with N = 3 rows of logits \(3, 5\)/,
  );
  const wide = createTensor(gpu, [N, V + 1], { label: "dlogits6" });
  await assert.rejects(
    () => crossEntropy(r, losses, wide, logits, targets, weights),
    /dlogits6 \(3, 6\) must have the shape of logits \(3, 5\)/,
  );
  await assert.rejects(
    () => crossEntropy(r, losses, dlogits, logits, targets, weights, { ignoreIndex: 2 }),
    /ignoreIndex 2 must be an integer outside 0 … 4/,
  );
  const flat: Tensor = createTensor(gpu, [N * V], { label: "logitsFlat" });
  await assert.rejects(
    () => crossEntropyInPlace(r, losses, flat, targets, weights),
    /logitsFlat \(15\) must be \(N, V\)/,
  );
  assert.equal(r.dispatchCount, 0);
});
