// Intervals against closed forms and published table values (never against the code's own output).

import assert from "node:assert/strict";
import { fillNormal } from "../src/random/philox.ts";
import {
  bootstrapInterval,
  meanInterval,
  normalQuantile,
  studentTCdf,
  studentTQuantile,
  summarizeMetric,
  summarizeProportion,
  wilsonInterval,
} from "../src/eval/stats.ts";

function near(got: number, want: number, tolerance: number, what: string): void {
  assert.ok(
    Math.abs(got - want) <= tolerance,
    `${what}: got ${got}, want ${want} (|error| ${Math.abs(got - want)} > ${tolerance})`,
  );
}

Deno.test("normalQuantile matches the standard normal table in both tails and the centre", () => {
  const table: [number, number][] = [
    [0.5, 0],
    [0.975, 1.959963984540054],
    [0.9, 1.2815515655446004],
    [0.999, 3.090232306167813],
    [0.3, -0.5244005127080409],
    [1e-6, -4.753424308822899],
    [1e-20, -9.262340089798409],
  ];
  for (const [p, z] of table) near(normalQuantile(p), z, 1e-12 * Math.max(1, Math.abs(z)), `Φ⁻¹(${p})`);
  assert.throws(() => normalQuantile(1), /p = 1 must lie strictly between 0 and 1/);
});

Deno.test("Student t quantiles match closed forms (df 1, 2) and the t table", () => {
  const p = 0.975;
  // df = 1 is the Cauchy distribution: tan(π(p − ½)); df = 2 has t = (2p − 1)/√(2p(1 − p)).
  near(studentTQuantile(p, 1), Math.tan(Math.PI * (p - 0.5)), 1e-9, "t(0.975, 1)");
  near(studentTQuantile(p, 2), (2 * p - 1) / Math.sqrt(2 * p * (1 - p)), 1e-10, "t(0.975, 2)");
  near(studentTQuantile(p, 9), 2.262157162798205, 1e-10, "t(0.975, 9)");
  near(studentTQuantile(p, 4), 2.7764451051977934, 1e-10, "t(0.975, 4)");
  near(studentTQuantile(0.995, 30), 2.7499956535672254, 1e-10, "t(0.995, 30)");
  near(studentTQuantile(0.9, 2.5), 1.7302509288071766, 1e-10, "t(0.9, 2.5)");
  near(studentTQuantile(0.025, 9), -2.262157162798205, 1e-10, "t(0.025, 9), lower tail");
  // Many degrees of freedom approach the normal.
  near(studentTQuantile(p, 1000), 1.9623390808264083, 1e-9, "t(0.975, 1000)");
  // Cauchy CDF: ½ + atan(t)/π.
  near(studentTCdf(-1.5, 1), 0.5 + Math.atan(-1.5) / Math.PI, 1e-13, "Cauchy CDF at −1.5");
  assert.throws(() => studentTQuantile(0.975, 0), /degrees of freedom 0/);
});

Deno.test("Wilson interval: 8/10 = [0.4902, 0.9433]; 0/n and n/n have the closed-form far ends", () => {
  const { lo, hi } = wilsonInterval(8, 10);
  near(lo, 0.4901624715366418, 1e-12, "Wilson 8/10 lo");
  near(hi, 0.9433178485456248, 1e-12, "Wilson 8/10 hi");
  assert.equal(lo.toFixed(4), "0.4902");
  assert.equal(hi.toFixed(4), "0.9433");
  // With 0 successes the interval is [0, z²/(n + z²)]; with n successes [n/(n + z²), 1].
  const z2 = 1.959963984540054 ** 2;
  const none = wilsonInterval(0, 10);
  assert.equal(none.lo, 0);
  near(none.hi, z2 / (10 + z2), 1e-12, "Wilson 0/10 hi");
  const all = wilsonInterval(25, 25);
  assert.equal(all.hi, 1);
  near(all.lo, 25 / (25 + z2), 1e-12, "Wilson 25/25 lo");
  // 90 % interval uses z = 1.6448536269514722.
  const z = 1.6448536269514722, p = 0.5, n = 4;
  const half = (z / (1 + (z * z) / n)) * Math.sqrt(p * (1 - p) / n + (z * z) / (4 * n * n));
  near(wilsonInterval(2, 4, 0.9).hi, 0.5 + half, 1e-12, "Wilson 2/4 at 90 %");
  assert.throws(() => wilsonInterval(11, 10), /successes = 11 must be an integer in \[0, 10\]/);
  assert.throws(() => wilsonInterval(0, 0), /n = 0 must be an integer ≥ 1/);
});

Deno.test("meanInterval: [1..5] gives 3 ± t(0.975, 4)·√2.5/√5 and 3 ± 1.96·√0.5", () => {
  const t = meanInterval([1, 2, 3, 4, 5]);
  assert.equal(t.n, 5);
  assert.equal(t.mean, 3);
  // s² = (4 + 1 + 0 + 1 + 4)/4 = 2.5, so s/√n = √0.5.
  near(t.lo, 3 - 2.7764451051977934 * Math.sqrt(0.5), 1e-10, "t lo");
  near(t.hi, 3 + 2.7764451051977934 * Math.sqrt(0.5), 1e-10, "t hi");
  const normal = meanInterval([1, 2, 3, 4, 5], { method: "normal" });
  near(normal.lo, 1.614096175650322, 1e-12, "normal lo");
  near(normal.hi, 4.385903824349678, 1e-12, "normal hi");
  const constant = meanInterval([2, 2, 2]);
  assert.deepEqual([constant.lo, constant.hi], [2, 2]);
  assert.throws(() => meanInterval([1]), /needs at least 2 values, got 1/);
  assert.throws(() => meanInterval([1, NaN]), /value 1 is NaN/);
});

Deno.test("bootstrap: exact answers on degenerate data, agreement with the normal interval, determinism", () => {
  const mean = (xs: Float64Array) => xs.reduce((s, x) => s + x, 0) / xs.length;
  // One value: every resample is that value.
  const single = bootstrapInterval([4.5], mean, { seed: 1 });
  assert.deepEqual([single.lo, single.hi, single.estimate], [4.5, 4.5, 4.5]);
  // Two values {0, 1}: resample means are 0, ½, 1 with probabilities ¼, ½, ¼, so the 2.5 % and 97.5 %
  // points of 2000 resamples are 0 and 1 unless fewer than 51 of them are all-zero (or all-one).
  const pair = bootstrapInterval([0, 1], mean, { seed: 9, resamples: 2000 });
  assert.deepEqual([pair.lo, pair.hi], [0, 1]);
  // For a large normal sample the percentile interval of the mean approaches mean ± 1.96 s/√n.
  const values = fillNormal(new Float64Array(400), 123, 0, 10, 2);
  const boot = bootstrapInterval(values, mean, { seed: 5, resamples: 4000 });
  const normal = meanInterval(values, { method: "normal" });
  const width = normal.hi - normal.lo;
  near(boot.lo, normal.lo, 0.05 * width, "bootstrap lo vs normal lo");
  near(boot.hi, normal.hi, 0.05 * width, "bootstrap hi vs normal hi");
  const again = bootstrapInterval(values, mean, { seed: 5, resamples: 4000 });
  assert.deepEqual(again, boot, "same seed, same interval");
  const other = bootstrapInterval(values, mean, { seed: 6, resamples: 4000 });
  assert.notEqual(other.lo, boot.lo, "another seed draws other resamples");
  assert.throws(() => bootstrapInterval(values, mean, { resamples: 10 }), /resamples/);
});

Deno.test("summaries attach n, mean and the interval of the chosen method", () => {
  const proportion = summarizeProportion(8, 10);
  assert.equal(proportion.n, 10);
  assert.equal(proportion.mean, 0.8);
  assert.equal(proportion.method, "wilson");
  near(proportion.lo, 0.4901624715366418, 1e-12, "summarizeProportion lo");
  const t = summarizeMetric([1, 2, 3, 4, 5]);
  assert.equal(t.method, "t");
  near(t.hi, 4.963243161477557, 1e-10, "summarizeMetric t hi");
  const boot = summarizeMetric([0, 1], { method: "bootstrap", seed: 9 });
  assert.deepEqual([boot.n, boot.mean, boot.lo, boot.hi, boot.method], [2, 0.5, 0, 1, "bootstrap"]);
  assert.throws(() => summarizeMetric([1, 2], { confidence: 1.5 }), /summarizeMetric: confidence/);
});
