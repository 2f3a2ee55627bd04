import assert from "node:assert/strict";
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readTensors, type Tensor, tensorFrom } from "../src/gpu/tensor.ts";
import { ropeFrequencies, type RopeScalingInput, ropeTables } from "../src/model/rope_scaling.ts";
import { ropeBackward, ropeForward, uploadRopeTables } from "../src/ops/rope.ts";
import { fillNormal, Rng } from "../src/random/philox.ts";
import { compare } from "./reference/compare.ts";
import { ropeRotate, ropeScalingReference } from "./reference/train_ops.ts";

const scalings: RopeScalingInput[] = [
  { type: "none", base: 10000 },
  { type: "linear", factor: 4, base: 10000 },
  { type: "dynamic", factor: 4, originalMaxPositions: 64, base: 500000 },
  { type: "yarn", factor: 8, originalMaxPositions: 64, base: 10000 },
];

Deno.test("RoPE scalings follow HF's formulas and hand-computed values", () => {
  for (const D of [2, 6, 32, 64, 128]) {
    for (const config of scalings) {
      for (const seqLen of [16, 64, 1000]) {
        const got = ropeFrequencies(config, D, seqLen);
        const [invFreq, attentionFactor] = ropeScalingReference({
          type: config.type!,
          base: config.base!,
          dim: D,
          factor: config.factor ?? 1,
          originalMaxPositions: config.originalMaxPositions ?? 1,
          seqLen,
          betaFast: 32,
          betaSlow: 1,
        });
        // Both are f64 transcriptions of one formula; they differ only by pow/log rounding.
        compare(`inv_freq ${config.type} D=${D} N=${seqLen}`, got.invFreq, invFreq, { atol: 0, rtol: 1e-14 });
        assert.ok(Math.abs(got.attentionFactor - attentionFactor) < 1e-15, `${config.type} attention factor`);
      }
    }
  }
  // Values computed independently with mpmath (30 digits).
  const close = (got: number, want: number, what: string) =>
    assert.ok(Math.abs(got - want) <= 1e-14 * Math.abs(want), `${what}: ${got} vs ${want}`);
  const plain = ropeFrequencies({ type: "none" }, 64).invFreq;
  close(plain[1], 0.749894209332455827, "10000^(−1/32)");
  close(
    ropeFrequencies({ type: "linear", factor: 4 }, 64).invFreq[1],
    0.749894209332455827 / 4,
    "linear f=4",
  );
  // YaRN D=64, L=4096, f=8: dim(32) = 10.47 → low 10, dim(1) = 22.51 → high 23; γ₁₆ = 6/13.
  const yarn = ropeFrequencies({ type: "yarn", factor: 8, originalMaxPositions: 4096 }, 64);
  close(yarn.invFreq[16], 0.00596153846153846154, "yarn i=16");
  close(yarn.invFreq[20], 0.00103382154274735478, "yarn i=20");
  close(yarn.invFreq[3], plain[3], "yarn keeps high frequencies");
  close(yarn.invFreq[31], plain[31] / 8, "yarn interpolates low frequencies");
  close(yarn.attentionFactor, 1.20794415416798360, "yarn m = 0.1·ln 8 + 1");
  // Dynamic NTK D=64, f=4, L=2048 at N=8192: base' = 10000·13^(64/62) = 141213.757…
  const dynamic = ropeFrequencies({ type: "dynamic", factor: 4, originalMaxPositions: 2048 }, 64, 8192);
  close(dynamic.base, 141213.757397867300, "dynamic base");
  close(dynamic.invFreq[1], 0.690345253958178135, "dynamic i=1");
  const short = ropeFrequencies({ type: "dynamic", factor: 4, originalMaxPositions: 2048 }, 64, 2048);
  compare("dynamic at N ≤ L_orig is plain RoPE", short.invFreq, plain, { atol: 0, rtol: 0 });

  assert.throws(() => ropeFrequencies({ type: "yarn", factor: 8 }, 64), /originalMaxPositions/);
  assert.throws(() => ropeFrequencies({ type: "none" }, 7), /even integer/);
  assert.throws(() => ropeFrequencies({ type: "linear", factor: 0.5 }, 8), /factor/);
});

Deno.test("reference RoPE backward is the finite-difference gradient and the exact transpose", () => {
  const [B, H, T, D] = [1, 2, 3, 6];
  const n = B * H * T * D;
  const x = fillNormal(new Float64Array(n), 1, 0);
  const y = fillNormal(new Float64Array(n), 1, 1);
  const { invFreq, attentionFactor } = ropeFrequencies(scalings[3], D);
  const positions = [5, 0, 40];
  const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
    let s = 0;
    for (let i = 0; i < a.length; i++) s += a[i] * b[i];
    return s;
  };
  const rotated = (input: Float64Array, transpose = false) => {
    const out = new Float64Array(n);
    ropeRotate(out, input, invFreq, attentionFactor, positions, B, H, T, D, transpose);
    return out;
  };
  // f(x) = ⟨R x, y⟩ has gradient Rᵀ y.
  const grad = rotated(y, true);
  const h = 1e-6;
  for (let i = 0; i < n; i++) {
    const xp = x.slice(), xm = x.slice();
    xp[i] += h;
    xm[i] -= h;
    const fd = (dot(rotated(xp), y) - dot(rotated(xm), y)) / (2 * h);
    // f is linear, so the central difference errs only by rounding: ~ε·|f|/h ≈ 1e-9.
    assert.ok(Math.abs(fd - grad[i]) < 1e-8, `d/dx[${i}]: fd ${fd} vs analytic ${grad[i]}`);
  }
  assert.ok(Math.abs(dot(rotated(x), y) - dot(x, rotated(y, true))) < 1e-13);
});

// out = x1·c − x2·s with f32-rounded c, s (≤ m·2⁻²⁴ off each), two rounded products and a rounded
// sum: |err| ≤ 3·2⁻²⁴·m·(|x1| + |x2|) ≤ 6·2⁻²⁴·m·max|x|.
const rotationTol = (x: Float32Array, m: number) => ({
  atol: 6 * 2 ** -24 * m * x.reduce((a, v) => Math.max(a, Math.abs(v)), 0),
  rtol: 0,
});

interface Case {
  B: number;
  H: number;
  T: number;
  D: number;
  P: number;
  /** A (T,) list of positions, or the position of t = 0. */
  positions: number[] | number;
  scaling: RopeScalingInput;
}

async function runCase(c: Case, seed: number): Promise<void> {
  const gpu = await getGpu();
  const { B, H, T, D, P } = c;
  const n = B * H * T * D;
  const x = fillNormal(new Float32Array(n), seed, 0);
  const dout = fillNormal(new Float32Array(n), seed, 1);
  const positions = typeof c.positions === "number"
    ? Array.from({ length: T }, (_, t) => (c.positions as number) + t)
    : c.positions;
  const { invFreq, attentionFactor } = ropeFrequencies(c.scaling, D, P);
  const tables = uploadRopeTables(gpu, ropeTables(c.scaling, D, P));
  const xT = tensorFrom(gpu, [B, H, T, D], x, { label: "x" });
  const doutT = tensorFrom(gpu, [B, H, T, D], dout, { label: "dout" });
  const out = createTensor(gpu, [B, H, T, D], { label: "out" });
  const dx = createTensor(gpu, [B, H, T, D], { label: "dx" });
  poison(gpu, out);
  poison(gpu, dx);
  const where: Tensor | number = typeof c.positions === "number"
    ? c.positions
    : tensorFrom(gpu, [T], c.positions, { label: "positions", dtype: "u32" });
  const rec = new Recorder(gpu, "rope");
  await ropeForward(rec, out, xT, tables, where);
  await ropeBackward(rec, dx, doutT, tables, where);
  await rec.submit();
  const [gotOut, gotDx] = await readTensors(gpu, [out, dx]) as Float32Array[];
  const wantOut = new Float64Array(n);
  const wantDx = new Float64Array(n);
  ropeRotate(wantOut, x, invFreq, attentionFactor, positions, B, H, T, D);
  ropeRotate(wantDx, dout, invFreq, attentionFactor, positions, B, H, T, D, true);
  const name = `${c.scaling.type} B=${B} H=${H} T=${T} D=${D} positions ${
    typeof c.positions === "number" ? `from ${c.positions}` : "tensor"
  }`;
  const shape = [B, H, T, D];
  const fwd = compare(`forward ${name}`, gotOut, wantOut, rotationTol(x, attentionFactor), shape);
  const bwd = compare(`backward ${name}`, gotDx, wantDx, rotationTol(dout, attentionFactor), shape);
  // The GPU pair is a transpose pair too: ⟨R x, d⟩ = ⟨x, Rᵀ d⟩ up to the elementwise errors above.
  let lhs = 0, rhs = 0, scale = 0;
  for (let i = 0; i < n; i++) {
    lhs += gotOut[i] * dout[i];
    rhs += x[i] * gotDx[i];
    scale += Math.abs(x[i] * dout[i]);
  }
  assert.ok(
    Math.abs(lhs - rhs) <= 4 * 6 * 2 ** -24 * attentionFactor * scale,
    `${name}: ⟨Rx, d⟩ = ${lhs} but ⟨x, Rᵀd⟩ = ${rhs}`,
  );
  if (Deno.env.get("VERBOSE")) {
    console.log(
      `${name}: max |err| forward ${fwd.maxAbs.toExponential(2)} backward ${bwd.maxAbs.toExponential(2)}`,
    );
  }
  for (const t of [xT, doutT, out, dx, tables.cos, tables.sin]) t.buffer.destroy();
  if (typeof where !== "number") where.buffer.destroy();
}

Deno.test("ropeForward and ropeBackward match float64 on awkward shapes and every scaling", async () => {
  const rng = new Rng(7, 0);
  // (B, H, T, D)
  const shapes = [[1, 1, 1, 2], [2, 3, 7, 6], [1, 2, 100, 32], [3, 1, 7, 64]] as const;
  let seed = 100;
  for (const [B, H, T, D] of shapes) {
    for (const scaling of scalings) {
      const P = 257;
      const positions = Array.from({ length: T }, () => rng.int(P));
      await runCase({ B, H, T, D, P, positions, scaling }, seed++);
      await runCase({ B, H, T, D, P, positions: P - T, scaling }, seed++);
    }
  }
});

Deno.test("RoPE stays accurate at positions near 32767", async () => {
  const P = 32768;
  const rng = new Rng(8, 0);
  const nearEnd = Array.from({ length: 100 }, (_, t) => t < 50 ? P - 1 - t : 16384 + rng.int(P - 16384));
  const yarn: RopeScalingInput = { type: "yarn", factor: 8, originalMaxPositions: 4096, base: 10000 };
  await runCase({ B: 1, H: 2, T: 100, D: 64, P, positions: nearEnd, scaling: yarn }, 1);
  await runCase({ B: 1, H: 1, T: 7, D: 64, P, positions: P - 7, scaling: { type: "none" } }, 2);
  // Why tables: cos of an f32 angle pos·inv_freq (both rounded to f32) is off by ~1e-3 here, some
  // 1000× the rotation tolerance above.
  const { invFreq } = ropeFrequencies({ type: "none" }, 64);
  let worst = 0;
  for (let pos = P - 100; pos < P; pos++) {
    const f32Angle = Math.fround(pos * Math.fround(invFreq[1]));
    worst = Math.max(worst, Math.abs(Math.cos(f32Angle) - Math.cos(pos * invFreq[1])));
  }
  assert.ok(worst > 5e-4, `an f32 angle errs by ${worst} near position ${P - 1}`);
});

Deno.test("positions beyond the tables give NaN, and bad shapes and dtypes are refused by name", async () => {
  const gpu = await getGpu();
  const tables = uploadRopeTables(gpu, ropeTables({ type: "none" }, 6, 10));
  const x = tensorFrom(gpu, [1, 1, 2, 6], new Float32Array(12).fill(1), { label: "q" });
  const out = createTensor(gpu, [1, 1, 2, 6], { label: "qRot" });
  const rec = new Recorder(gpu, "rope beyond");
  await ropeForward(rec, out, x, tables, tensorFrom(gpu, [2], [3, 10], { label: "pos", dtype: "u32" }));
  await rec.submit();
  const [got] = await readTensors(gpu, [out]) as Float32Array[];
  assert.ok(got.slice(0, 6).every(Number.isFinite), "position 3 is inside the table");
  assert.ok(got.slice(6).every(Number.isNaN), "position 10 is outside a 10-row table");

  const r = new Recorder(gpu, "errors");
  const odd = createTensor(gpu, [1, 1, 2, 5], { label: "kOdd" });
  await assert.rejects(
    () => ropeForward(r, odd, odd, tables, 0),
    /kOdd \(1, 1, 2, 5\) has an odd head size D = 5/,
  );
  const ints = createTensor(gpu, [1, 1, 2, 6], { label: "qInt", dtype: "i32" });
  await assert.rejects(() => ropeForward(r, out, ints, tables, 0), /qInt is i32, expected f32/);
  const floatPos = createTensor(gpu, [2], { label: "posF" });
  await assert.rejects(() => ropeBackward(r, out, x, tables, floatPos), /posF is f32, expected u32/);
  const wrongT = createTensor(gpu, [3], { label: "pos3", dtype: "u32" });
  await assert.rejects(() => ropeForward(r, out, x, tables, wrongT), /pos3 \(3\) must be \(T,\) with T = 2/);
  await assert.rejects(
    () => ropeForward(r, out, x, tables, 9),
    /offset 9 … 10 for T = 2 must lie in .* 0 … 9/,
  );
  const small = createTensor(gpu, [1, 1, 2, 4], { label: "qSmall" });
  await assert.rejects(
    () => ropeForward(r, small, x, tables, 0),
    /qSmall \(1, 1, 2, 4\) must have the shape of q/,
  );
  const wide = uploadRopeTables(gpu, ropeTables({ type: "none" }, 8, 10), "wide");
  await assert.rejects(
    () => ropeForward(r, out, x, wide, 0),
    /wide.cos \(10, 4\) must be \(P, D\/2\) with D\/2 = 3/,
  );
  const flat = createTensor(gpu, [12], { label: "qFlat" });
  await assert.rejects(() => ropeForward(r, flat, flat, tables, 0), /qFlat \(12\) must be \(B, H, T, D\)/);
  assert.equal(r.dispatchCount, 0);
});
