import assert from "node:assert/strict";
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readTensors, type Tensor, tensorFrom } from "../src/gpu/tensor.ts";
import { attentionForward, type AttentionMode, TOKEN_PAD, TOKEN_RESPONSE } from "../src/ops/attention.ts";
import { attentionMass } from "../src/ops/attention_mass.ts";
import { fillNormal, fillUniform, Rng } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare } from "./reference/compare.ts";
import * as ref from "./reference/attention.ts";
import { attentionMass as attentionMassRef } from "./reference/attention_mass.ts";

interface Case {
  name: string;
  B: number;
  H: number;
  Hkv: number;
  T: number;
  D: number;
  modes: AttentionMode[];
  G?: number;
  sink: boolean;
  seed: number;
}

// Awkward sizes: T = 37 (one partial workgroup of rows) and 130 (three, the last with 2 rows); D = 12, 16.
const CASES: Case[] = [
  { name: "causal GQA", B: 2, H: 4, Hkv: 2, T: 37, D: 12, modes: ["causal"], sink: false, seed: 1 },
  { name: "causal GQA + sink", B: 2, H: 4, Hkv: 2, T: 37, D: 12, modes: ["causal"], sink: true, seed: 2 },
  { name: "full + sink", B: 1, H: 2, Hkv: 1, T: 37, D: 12, modes: ["full"], sink: true, seed: 3 },
  { name: "turns", B: 2, H: 4, Hkv: 1, T: 130, D: 12, modes: ["turns"], sink: false, seed: 4 },
  { name: "turns + sink", B: 2, H: 4, Hkv: 2, T: 130, D: 12, modes: ["turns"], sink: true, seed: 5 },
  {
    name: "S²-Attn groups + sink",
    B: 1,
    H: 4,
    Hkv: 2,
    T: 130,
    D: 16,
    modes: ["groups", "groups", "groups-shifted", "groups-shifted"],
    G: 26,
    sink: true,
    seed: 6,
  },
];

/** Random context/response turns; the odd rows end in padding (which sees nothing). */
function makeTurns(B: number, T: number, seed: number): { turn: Uint32Array; flags: Uint32Array } {
  const rng = new Rng(seed, 7);
  const turn = new Uint32Array(B * T), flags = new Uint32Array(B * T);
  for (let b = 0; b < B; b++) {
    const real = b % 2 === 1 ? T - Math.max(1, Math.floor(T / 5)) : T;
    let t = 0, id = 0, response = rng.int(2) === 1;
    while (t < real) {
      const len = 1 + rng.int(Math.max(1, Math.floor(T / 4)));
      for (let x = t; x < Math.min(real, t + len); x++) {
        turn[b * T + x] = id;
        flags[b * T + x] = response ? TOKEN_RESPONSE : 0;
      }
      t += len;
      id++;
      response = !response;
    }
    for (let x = real; x < T; x++) flags[b * T + x] = TOKEN_PAD;
  }
  return { turn, flags };
}

const CATS = 3;

interface Run {
  lse: Float32Array;
  /** Overlapping random bits (bit 3 set too, outside the counted ones). */
  bits: Float32Array;
  /** One category per key (or none): a partition. */
  partition: Float32Array;
  /** `bits` again with 7 keys per pass, and for rows [5, T − 3) only. */
  passes: Float32Array;
  sub: Float32Array;
}

async function runGpu(gpu: Gpu, c: Case, x: Record<string, Float32Array | Uint32Array | null>): Promise<Run> {
  const { B, H, Hkv, T, D } = c;
  const made: Tensor[] = [];
  const from = (shape: number[], data: ArrayLike<number>, label: string, dtype: "f32" | "u32" = "f32") => {
    const t = tensorFrom(gpu, shape, data, { label, dtype });
    made.push(t);
    return t;
  };
  const out = (shape: number[], label: string) => {
    const t = createTensor(gpu, shape, { label });
    poison(gpu, t);
    made.push(t);
    return t;
  };
  const q = from([B, H, T, D], x.q!, "q"), k = from([B, Hkv, T, D], x.k!, "k");
  const v = from([B, Hkv, T, D], x.v!, "v");
  const logitScale = from([H], x.scale!, "logitScale");
  const sinkLogit = x.sink ? from([H], x.sink, "sinkLogit") : undefined;
  const mask = {
    modes: c.modes,
    groupSize: c.G,
    turn: x.turn ? from([B, T], x.turn, "turn", "u32") : undefined,
    tokenFlags: x.flags ? from([B, T], x.flags, "tokenFlags", "u32") : undefined,
  };
  const o = out([B, H, T, D], "o"), lse = out([B, H, T], "lse");
  const bitsCat = from([B, T], x.bits!, "bits", "u32"),
    partCat = from([B, T], x.partition!, "partition", "u32");
  const bits = out([B, H, T, CATS + 2], "mass bits"), partition = out([B, H, T, CATS + 2], "mass partition");
  const passes = out([B, H, T, CATS + 2], "mass passes"), sub = out([B, H, T - 8, CATS + 2], "mass rows");
  const rec = new Recorder(gpu, c.name);
  await attentionForward(rec, { o, lse }, { q, k, v, logitScale, sinkLogit }, mask);
  const base = { q, k, lse, logitScale, sinkLogit };
  const cats = { categoryCount: CATS };
  await attentionMass(rec, bits, { ...base, categories: bitsCat }, mask, { ...cats, keysPerPass: T });
  await attentionMass(rec, partition, { ...base, categories: partCat }, mask, cats);
  await attentionMass(rec, passes, { ...base, categories: bitsCat }, mask, { ...cats, keysPerPass: 7 });
  await attentionMass(rec, sub, { ...base, categories: bitsCat }, mask, {
    ...cats,
    rows: { from: 5, to: T - 3 },
  });
  await rec.submit();
  const [l, b, p, ps, s] = await readTensors(gpu, [lse, bits, partition, passes, sub]) as Float32Array[];
  rec.destroy();
  for (const t of made) t.buffer.destroy();
  return { lse: l, bits: b, partition: p, passes: ps, sub: s };
}

Deno.test("attentionMass matches the float64 materialised reference; partitions sum to 1; passes and row ranges repeat bit for bit", async () => {
  const gpu = await getGpu();
  for (const one of CASES) {
    // One mode stands for every head.
    const c = {
      ...one,
      modes: one.modes.length === 1 ? new Array<AttentionMode>(one.H).fill(one.modes[0]) : one.modes,
    };
    const { B, H, Hkv, T, D } = c;
    const rng = new Rng(c.seed, 9);
    const turns = c.modes.includes("turns") ? makeTurns(B, T, c.seed) : null;
    const x = {
      q: fillNormal(new Float32Array(B * H * T * D), c.seed, 0),
      k: fillNormal(new Float32Array(B * Hkv * T * D), c.seed, 1),
      v: fillNormal(new Float32Array(B * Hkv * T * D), c.seed, 2),
      scale: fillUniform(new Float32Array(H), c.seed, 4, 0.5 / Math.sqrt(D), 2 / Math.sqrt(D)),
      sink: c.sink ? fillNormal(new Float32Array(H), c.seed, 5, 0, 2) : null,
      bits: Uint32Array.from({ length: B * T }, () => rng.int(16)),
      // 0 … CATS − 1 one-hot, CATS: no category.
      partition: Uint32Array.from({ length: B * T }, () => {
        const cat = rng.int(CATS + 1);
        return cat === CATS ? 0 : 1 << cat;
      }),
      turn: turns?.turn ?? null,
      flags: turns?.flags ?? null,
    };
    const got = await runGpu(gpu, c, x);
    const mask = {
      modes: c.modes.map((m) => ref.MODE_CODE[m]),
      G: c.G ?? 0,
      turn: x.turn ?? undefined,
      flags: x.flags ?? undefined,
    };
    const s = { B, H, Hkv, T, D };
    const want = new Float64Array(B * H * T * (CATS + 2));
    // The reference uses the kernel's lse, so this measures the mass kernel's own arithmetic.
    attentionMassRef(want, x.q, x.k, got.lse, x.scale, x.sink, x.bits, CATS, mask, s);
    const tol = { atol: 2e-6, rtol: 2e-5 };
    const r = compare(`${c.name}: mass`, got.bits, want, tol, [B, H, T, CATS + 2]);
    assert.ok(want.some((m) => m > 0.01), `${c.name}: the reference masses are all tiny`);
    assertBitwiseEqual(`${c.name}: 7 keys per pass vs one pass`, got.passes, got.bits);
    const subWant = new Float32Array(got.sub.length);
    for (let bh = 0; bh < B * H; bh++) {
      subWant.set(
        got.bits.subarray((bh * T + 5) * (CATS + 2), (bh * T + T - 3) * (CATS + 2)),
        bh * (T - 8) * (CATS + 2),
      );
    }
    assertBitwiseEqual(`${c.name}: rows [5, T − 3) vs all rows`, got.sub, subWant);
    // Over a partition (+ the sink logit) every row that sees anything sums to 1; a row that sees
    // nothing (padding without a sink) is all 0.
    let worstSum = 0, empty = 0;
    for (let row = 0; row < B * H * T; row++) {
      let sum = 0;
      for (let col = 0; col < CATS + 2; col++) sum += got.partition[row * (CATS + 2) + col];
      if (got.lse[row] <= ref.EMPTY_ROW_LSE) {
        assert.equal(sum, 0, `${c.name}: row ${row} sees nothing but has mass ${sum}`);
        empty++;
      } else worstSum = Math.max(worstSum, Math.abs(sum - 1));
    }
    assert.ok(worstSum < 2e-5, `${c.name}: a partition's masses sum to 1 ± ${worstSum}`);
    if (c.modes.includes("turns") && !c.sink) assert.ok(empty > 0, `${c.name}: no padded row was checked`);
    console.log(
      `${c.name} (T = ${T}): max |err| ${r.maxAbs.toExponential(2)} (tol ${tol.atol} + ${tol.rtol}·|ref|), ` +
        `|Σ partition − 1| ≤ ${worstSum.toExponential(2)}, empty rows ${empty}`,
    );
  }
});

Deno.test("attentionMass refuses bad shapes and ranges, naming them", async () => {
  const gpu = await getGpu();
  const t = (shape: number[], label: string, dtype: "f32" | "u32" = "f32") =>
    createTensor(gpu, shape, { label, dtype });
  const q = t([1, 2, 5, 8], "q"),
    k = t([1, 1, 5, 8], "k"),
    lse = t([1, 2, 5], "lse"),
    scale = t([2], "scale");
  const cats = t([1, 5], "cats", "u32");
  const rec = new Recorder(gpu, "bad");
  const mask = { modes: ["causal", "causal"] as AttentionMode[] };
  const inputs = { q, k, lse, logitScale: scale, categories: cats };
  await assert.rejects(
    () => attentionMass(rec, t([1, 2, 5, 5], "mass"), inputs, mask),
    /mass.*rows, categoryCount \+ 2/,
  );
  await assert.rejects(
    () => attentionMass(rec, t([1, 2, 5, 6], "mass"), inputs, mask, { rows: { from: 3, to: 9 } }),
    /rows \[3, 9\)/,
  );
  await assert.rejects(
    () => attentionMass(rec, t([1, 2, 5, 11], "mass"), inputs, mask, { categoryCount: 9 }),
    /categoryCount = 9/,
  );
  await assert.rejects(
    () => attentionMass(rec, t([1, 2, 5, 6], "mass"), { ...inputs, categories: t([1, 5], "f", "f32") }, mask),
    /f is f32, expected u32/,
  );
  rec.destroy();
});
