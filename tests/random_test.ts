import assert from "node:assert/strict";
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readF32 } from "../src/gpu/tensor.ts";
import { fillNormal as fillNormalGpu, fillUniform as fillUniformGpu } from "../src/ops/random.ts";
import { fillNormal, fillUniform, mulhi32, philox4x32, randomU32, Rng } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";

const hex = (w: Uint32Array) => [...w].map((x) => x.toString(16).padStart(8, "0")).join(" ");

Deno.test("philox4x32-10 matches the Random123 known-answer vectors", () => {
  assert.equal(hex(philox4x32(0, 0, 0, 0, 0, 0)), "6627e8d5 e169c58d bc57ac4c 9b00dbd8");
  const f = 0xffffffff;
  assert.equal(hex(philox4x32(f, f, f, f, f, f)), "408f276d 41c83b0e a20bc7c6 6d5451fd");
  assert.equal(
    hex(philox4x32(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0)),
    "d16cfe09 94fdcceb 5001e420 24126ea1",
  );
});

Deno.test("mulhi32 is exact against BigInt", () => {
  const rng = new Rng(1, 99);
  for (let i = 0; i < 2000; i++) {
    const a = rng.u32(), b = rng.u32();
    assert.equal(mulhi32(a, b), Number((BigInt(a) * BigInt(b)) >> 32n), `mulhi32(${a}, ${b})`);
  }
  assert.equal(mulhi32(0xffffffff, 0xffffffff), 0xfffffffe);
});

Deno.test("same seed gives the same bits; another seed or stream does not", () => {
  const a = fillUniform(new Float32Array(1001), 1234, 5);
  const b = fillUniform(new Float32Array(1001), 1234, 5);
  assertBitwiseEqual("uniform rerun", a, b);
  const c = fillUniform(new Float32Array(1001), 1235, 5);
  const d = fillUniform(new Float32Array(1001), 1234, 6);
  assert.ok(a.some((x, i) => x !== c[i]), "seed changes the numbers");
  assert.ok(a.some((x, i) => x !== d[i]), "stream changes the numbers");
  // Starting mid-stream gives the same elements as the full fill (counter-based, order-free).
  const tail = fillUniform(new Float32Array(500), 1234, 5, 0, 1, 501);
  assertBitwiseEqual("offset fill", tail, a.subarray(501));
  assert.equal(new Rng(1234, 5, 7).u32(), randomU32(1234, 5, 7));
});

Deno.test("uniform and normal moments are right over 200k draws", () => {
  const u = fillUniform(new Float64Array(200_000), 7, 0);
  const n = fillNormal(new Float64Array(200_000), 7, 1);
  const mean = (x: Float64Array) => x.reduce((s, v) => s + v, 0) / x.length;
  const varOf = (x: Float64Array, m: number) => x.reduce((s, v) => s + (v - m) ** 2, 0) / x.length;
  assert.ok(u.every((x) => x >= 0 && x < 1));
  // 5-sigma bounds: sd of a uniform mean = 0.2887/√n ≈ 6.5e-4; of a normal mean 2.2e-3; of its variance ≈ 3.2e-3.
  assert.ok(Math.abs(mean(u) - 0.5) < 3.3e-3, `uniform mean ${mean(u)}`);
  assert.ok(Math.abs(mean(n)) < 1.2e-2, `normal mean ${mean(n)}`);
  assert.ok(Math.abs(varOf(n, mean(n)) - 1) < 1.6e-2, `normal variance ${varOf(n, mean(n))}`);
});

Deno.test("Rng.int is unbiased and shuffle is a permutation", () => {
  const rng = new Rng(3);
  const counts = new Array(7).fill(0);
  for (let i = 0; i < 70_000; i++) counts[rng.int(7)]++;
  for (const c of counts) assert.ok(Math.abs(c - 10_000) < 500, `bucket count ${c}`);
  const items = Array.from({ length: 33 }, (_, i) => i);
  const shuffled = new Rng(3).shuffle([...items]);
  assert.deepEqual([...shuffled].sort((a, b) => a - b), items);
  assert.notDeepEqual(shuffled, items);
});

Deno.test("WGSL Philox gives the host's uniform bits and normals within f32 builtin error", async () => {
  const gpu = await getGpu();
  for (const [n, start, seed] of [[1, 0, 0], [7, 3, 42], [1027, 0, 2 ** 40 + 17], [70_001, 9, 5]] as const) {
    const unit = createTensor(gpu, [n], { label: "unit" });
    const out = createTensor(gpu, [n], { label: "out" });
    const outN = createTensor(gpu, [n], { label: "outN" });
    for (const t of [unit, out, outN]) poison(gpu, t);
    const rec = new Recorder(gpu, "random");
    await fillUniformGpu(rec, unit, 0, 1, { seed, stream: 11, start });
    await fillUniformGpu(rec, out, -0.5, 2, { seed, stream: 11, start });
    await fillNormalGpu(rec, outN, 0.25, 3, { seed, stream: 12, start });
    await rec.submit();
    // The integer path and the u32→f32 conversion are exact: identical bits expected.
    assertBitwiseEqual(
      `fillUniform [0,1) n=${n}`,
      await readF32(gpu, unit),
      fillUniform(new Float32Array(n), seed, 11, 0, 1, start),
    );
    // lo + (hi − lo)·u in f32: the product's rounding is ≤ ½ ulp of 2.5 (1.2e-7) whatever the
    // sum's size, plus ½ ulp of the result.
    compare(
      `fillUniform [-0.5,2) n=${n}`,
      await readF32(gpu, out),
      fillUniform(new Float64Array(n), seed, 11, -0.5, 2, start),
      {
        atol: 1.2e-7,
        rtol: 6e-8,
      },
    );
    const gotN = await readF32(gpu, outN);
    const wantN = fillNormal(new Float64Array(n), seed, 12, 0.25, 3, start);
    // f32 log/cos/sin (a few ULP) on |z| ≤ ~16: 5e-5 absolute after ×3.
    compare(`fillNormal n=${n}`, gotN, wantN, { atol: 5e-5, rtol: 1e-5 });
    for (const t of [unit, out, outN]) t.buffer.destroy();
  }
});
