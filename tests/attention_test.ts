import assert from "node:assert/strict";
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, poison, readTensors, type Tensor, tensorFrom } from "../src/gpu/tensor.ts";
import {
  attentionBackward,
  attentionForward,
  type AttentionMode,
  headModes,
  TOKEN_PAD,
  TOKEN_RESPONSE,
} from "../src/ops/attention.ts";
import { mergeHeads, mergeHeadsBackward, splitHeads, splitHeadsBackward } from "../src/ops/heads.ts";
import { fillNormal, fillUniform, Rng } from "../src/random/philox.ts";
import { assertBitwiseEqual, compare, type Tolerance } from "./reference/compare.ts";
import * as ref from "./reference/attention.ts";

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
  /** Forces the launchers' multi-pass path (state carried between dispatches) at short T. */
  rowsPerPass?: number;
}

/** Turn ids and flags of B sequences: random context/response turns, padding at the end of odd rows. */
function makeTurns(B: number, T: number, seed: number): { turn: Uint32Array; flags: Uint32Array } {
  const rng = new Rng(seed, 7);
  const turn = new Uint32Array(B * T);
  const flags = new Uint32Array(B * T);
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
    // Padding carries turn id 0, not a continuation of the real turns: the kernels must not rely on it.
    for (let x = real; x < T; x++) flags[b * T + x] = TOKEN_PAD;
  }
  return { turn, flags };
}

interface Inputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  dO: Float32Array;
  scale: Float32Array;
  sink: Float32Array | null;
  turn?: Uint32Array;
  flags?: Uint32Array;
}

function makeInputs(c: Case): Inputs {
  const { B, H, Hkv, T, D } = c;
  const scale = fillUniform(new Float32Array(H), c.seed, 4, 0.5 / Math.sqrt(D), 2 / Math.sqrt(D));
  const turns = c.modes.includes("turns") ? makeTurns(B, T, c.seed) : {};
  return {
    q: fillNormal(new Float32Array(B * H * T * D), c.seed, 0),
    k: fillNormal(new Float32Array(B * Hkv * T * D), c.seed, 1),
    v: fillNormal(new Float32Array(B * Hkv * T * D), c.seed, 2),
    dO: fillNormal(new Float32Array(B * H * T * D), c.seed, 3),
    scale,
    sink: c.sink ? fillNormal(new Float32Array(H), c.seed, 5, 0, 2) : null,
    ...turns,
  };
}

interface GpuResult {
  o: Float32Array;
  lse: Float32Array;
  dq: Float32Array;
  dk: Float32Array;
  dv: Float32Array;
  dScale: Float32Array;
  dSink: Float32Array;
}

async function runGpu(gpu: Gpu, c: Case, x: Inputs): Promise<GpuResult> {
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
  const q = from([B, H, T, D], x.q, "q");
  const k = from([B, Hkv, T, D], x.k, "k");
  const v = from([B, Hkv, T, D], x.v, "v");
  const dO = from([B, H, T, D], x.dO, "dO");
  const logitScale = from([H], x.scale, "logitScale");
  const sinkLogit = x.sink ? from([H], x.sink, "sinkLogit") : undefined;
  const mask = {
    modes: c.modes,
    groupSize: c.G,
    turn: x.turn ? from([B, T], x.turn, "turn", "u32") : undefined,
    tokenFlags: x.flags ? from([B, T], x.flags, "tokenFlags", "u32") : undefined,
  };
  const o = out([B, H, T, D], "o");
  const lse = out([B, H, T], "lse");
  const dq = out([B, H, T, D], "dq");
  const dk = out([B, Hkv, T, D], "dk");
  const dv = out([B, Hkv, T, D], "dv");
  const dScale = out([H], "dScale");
  const dSink = out([H], "dSink");
  const rec = new Recorder(gpu, c.name);
  const opts = { rowsPerPass: c.rowsPerPass };
  await attentionForward(rec, { o, lse }, { q, k, v, logitScale, sinkLogit }, mask, opts);
  await attentionBackward(
    rec,
    { dq, dk, dv, dScale, dSink },
    { q, k, v, o, lse, dO, logitScale, sinkLogit },
    mask,
    opts,
  );
  await rec.submit();
  const got = await readTensors(gpu, [o, lse, dq, dk, dv, dScale, dSink]) as Float32Array[];
  rec.destroy();
  for (const t of made) t.buffer.destroy();
  const [oR, lseR, dqR, dkR, dvR, dScaleR, dSinkR] = got;
  return { o: oR, lse: lseR, dq: dqR, dk: dkR, dv: dvR, dScale: dScaleR, dSink: dSinkR };
}

function refMask(c: Case, x: Inputs): ref.RefMask {
  return { modes: c.modes.map((m) => ref.MODE_CODE[m]), G: c.G ?? 0, turn: x.turn, flags: x.flags };
}

function runReference(c: Case, x: Inputs) {
  const { B, H, Hkv, T, D } = c;
  const f64 = (a: Float32Array) => Float64Array.from(a);
  const [q, k, v, dO] = [f64(x.q), f64(x.k), f64(x.v), f64(x.dO)];
  const mask = refMask(c, x);
  const sizes = { B, H, Hkv, T, D };
  const o = new Float64Array(B * H * T * D);
  const lse = new Float64Array(B * H * T);
  ref.attentionForward(o, lse, q, k, v, x.scale, x.sink, mask, sizes);
  const dq = new Float64Array(B * H * T * D);
  const dk = new Float64Array(B * Hkv * T * D);
  const dv = new Float64Array(B * Hkv * T * D);
  const dScale = new Float64Array(H);
  const dSink = new Float64Array(H);
  ref.attentionBackward(dq, dk, dv, dScale, dSink, dO, q, k, v, x.scale, x.sink, mask, sizes);
  return { o, lse, dq, dk, dv, dScale, dSink };
}

// Tolerances, from f32 rounding against f64 (inputs N(0,1), logit scales up to 2/√D so scores have sd ≤ 2):
// a score is a D-term dot product (error ~√D·ε·|q||k|·scale ≈ 1e-6), which exp turns into the same relative
// error of each probability; o is a convex combination of N(0,1) rows, so its error stays ~1e-6, and lse
// (|lse| ≲ 10) carries ~1e-6. Gradients go through dS = P∘(dP − Δ) with dP and Δ D-term dots of size ~√D
// and are sums over up to T visible rows: a few 1e-6 absolute plus 1e-5 relative. dScale and dSink sum
// B·H·T row terms (each ≲ 10, f32 rounding ~1e-6 relative), so their absolute error grows like the count.
const tolO: Tolerance = { atol: 5e-6, rtol: 1e-5 };
const tolLse: Tolerance = { atol: 5e-6, rtol: 1e-6 };
const tolGrad: Tolerance = { atol: 2e-5, rtol: 1e-4 };
const tolHead = (c: Case): Tolerance => ({ atol: 2e-6 * c.B * c.T, rtol: 1e-5 });

async function checkCase(c: Case): Promise<void> {
  const gpu = await getGpu();
  const x = makeInputs(c);
  const got = await runGpu(gpu, c, x);
  const want = runReference(c, x);
  const { B, H, Hkv, T, D } = c;
  const names = ["o", "lse", "dq", "dk", "dv", "dScale", "dSink"] as const;
  const tols = [tolO, tolLse, tolGrad, tolGrad, tolGrad, tolHead(c), tolHead(c)];
  const shapes = [[B, H, T, D], [B, H, T], [B, H, T, D], [B, Hkv, T, D], [B, Hkv, T, D], [H], [H]];
  const reports = names.map((n, i) => compare(`${c.name} ${n}`, got[n], want[n], tols[i], shapes[i]));
  console.log(
    `${c.name}: max |err| ` + reports.map((r, i) => `${names[i]} ${r.maxAbs.toExponential(1)}`).join(", ") +
      `; max |ref| dq ${maxAbs(want.dq).toFixed(2)}, dScale ${maxAbs(want.dScale).toFixed(2)}`,
  );
}

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, x) => Math.max(m, Math.abs(x)), 0);

const cases: Case[] = [
  {
    name: "causal GQA B=2 H=4 Hkv=2 T=257 D=16 sink",
    ...{ B: 2, H: 4, Hkv: 2, T: 257, D: 16, modes: headModes(4, "causal"), sink: true, seed: 1 },
  },
  {
    name: "causal T=1 D=8",
    ...{ B: 2, H: 2, Hkv: 2, T: 1, D: 8, modes: headModes(2, "causal"), sink: false, seed: 2 },
  },
  {
    name: "full T=33 D=24 H=4 Hkv=1 sink",
    ...{ B: 2, H: 4, Hkv: 1, T: 33, D: 24, modes: headModes(4, "full"), sink: true, seed: 3 },
  },
  {
    name: "shifted-groups T=98 G=14 (half-groups of 7) D=32 GQA sink",
    ...{
      B: 2,
      H: 4,
      Hkv: 2,
      T: 98,
      G: 14,
      D: 32,
      modes: headModes(4, "shifted-groups"),
      sink: true,
      seed: 4,
    },
  },
  {
    name: "shifted-groups T=100 G=20 D=64 H=Hkv=2",
    ...{
      B: 2,
      H: 2,
      Hkv: 2,
      T: 100,
      G: 20,
      D: 64,
      modes: headModes(2, "shifted-groups"),
      sink: false,
      seed: 5,
    },
  },
  {
    name: "turns T=100 D=32 GQA sink, multi-turn with padding",
    ...{ B: 2, H: 4, Hkv: 2, T: 100, D: 32, modes: headModes(4, "turns"), sink: true, seed: 6 },
  },
  {
    name: "turns T=257 D=16 no sink (padded rows see nothing)",
    ...{ B: 2, H: 2, Hkv: 1, T: 257, D: 16, modes: headModes(2, "turns"), sink: false, seed: 7 },
  },
  {
    name: "mixed per-head modes T=120 G=24 D=16 H=6 Hkv=3 sink",
    ...{
      B: 2,
      H: 6,
      Hkv: 3,
      T: 120,
      G: 24,
      D: 16,
      modes: ["turns", "causal", "groups", "groups-shifted", "full", "turns"] as AttentionMode[],
      sink: true,
      seed: 8,
    },
  },
  {
    name: "mixed per-head modes in passes of 37 keys (T=120 G=24 D=16 H=6 Hkv=3 sink)",
    ...{
      B: 2,
      H: 6,
      Hkv: 3,
      T: 120,
      G: 24,
      D: 16,
      modes: ["turns", "causal", "groups", "groups-shifted", "full", "turns"] as AttentionMode[],
      sink: true,
      seed: 13,
      rowsPerPass: 37,
    },
  },
  {
    name: "causal GQA in passes of 64 keys (T=257 D=32, H=4 Hkv=1 sink)",
    ...{
      B: 1,
      H: 4,
      Hkv: 1,
      T: 257,
      D: 32,
      modes: headModes(4, "causal"),
      sink: true,
      seed: 14,
      rowsPerPass: 64,
    },
  },
  {
    name: "causal T=7 D=128 GQA sink",
    ...{ B: 2, H: 2, Hkv: 1, T: 7, D: 128, modes: headModes(2, "causal"), sink: true, seed: 9 },
  },
  {
    name: "shifted-groups T=1024 G=256 D=32 GQA sink",
    ...{
      B: 2,
      H: 2,
      Hkv: 1,
      T: 1024,
      G: 256,
      D: 32,
      modes: headModes(2, "shifted-groups"),
      sink: true,
      seed: 10,
    },
  },
];

for (const c of cases) {
  Deno.test(`attention matches the f64 reference: ${c.name}`, () => checkCase(c));
}

Deno.test("the f64 reference backward matches central finite differences in every mode", () => {
  const c: Case = {
    name: "fd",
    ...{ B: 2, H: 5, Hkv: 1, T: 6, G: 2, D: 4, sink: true, seed: 11 },
    modes: ["causal", "groups", "groups-shifted", "turns", "full"],
  };
  const x = makeInputs(c);
  const { B, H, Hkv, T, D } = c;
  const sizes = { B, H, Hkv, T, D };
  const mask = refMask(c, x);
  const q = Float64Array.from(x.q), k = Float64Array.from(x.k), v = Float64Array.from(x.v);
  const dO = Float64Array.from(x.dO), scale = Float64Array.from(x.scale), sink = Float64Array.from(x.sink!);
  const loss = () => {
    const o = new Float64Array(B * H * T * D);
    ref.attentionForward(o, new Float64Array(B * H * T), q, k, v, scale, sink, mask, sizes);
    return o.reduce((sum, oi, n) => sum + oi * dO[n], 0);
  };
  const grads = {
    q: new Float64Array(q.length),
    k: new Float64Array(k.length),
    v: new Float64Array(v.length),
    scale: new Float64Array(H),
    sink: new Float64Array(H),
  };
  ref.attentionBackward(
    grads.q,
    grads.k,
    grads.v,
    grads.scale,
    grads.sink,
    dO,
    q,
    k,
    v,
    scale,
    sink,
    mask,
    sizes,
  );
  const eps = 1e-6;
  for (const [name, param] of [["q", q], ["k", k], ["v", v], ["scale", scale], ["sink", sink]] as const) {
    const numeric = new Float64Array(param.length);
    for (let n = 0; n < param.length; n++) {
      const keep = param[n];
      param[n] = keep + eps;
      const up = loss();
      param[n] = keep - eps;
      const down = loss();
      param[n] = keep;
      numeric[n] = (up - down) / (2 * eps);
    }
    // Central differences: truncation ~eps²·|f'''| ≈ 1e-12, cancellation ~1e-16·|L|/eps ≈ 1e-9.
    compare(`finite differences d${name}`, grads[name], numeric, { atol: 1e-7, rtol: 1e-6 });
  }
  // The mask is not trivial: every mode hides some pairs of this tiny case and shows others.
  for (let h = 0; h < H - 1; h++) {
    let seen = 0;
    for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) seen += ref.visible(mask, T, h, 1, i, j) ? 1 : 0;
    assert.ok(seen > 0 && seen < T * T, `head ${h} (${c.modes[h]}) sees ${seen} of ${T * T} pairs`);
  }
});

Deno.test("attention forward and backward repeat bit for bit", async () => {
  const gpu = await getGpu();
  const c: Case = {
    name: "rerun",
    ...{ B: 2, H: 4, Hkv: 2, T: 200, G: 40, D: 16, sink: true, seed: 12, rowsPerPass: 50 },
    modes: ["turns", "causal", "groups-shifted", "groups"],
  };
  const x = makeInputs(c);
  const first = await runGpu(gpu, c, x);
  const second = await runGpu(gpu, c, x);
  for (const name of ["o", "lse", "dq", "dk", "dv", "dScale", "dSink"] as const) {
    assertBitwiseEqual(`rerun ${name}`, first[name], second[name]);
  }
});

Deno.test("attention launchers refuse bad shapes, modes and sizes before dispatch", async () => {
  const gpu = await getGpu();
  const rec = new Recorder(gpu, "errors");
  const t = (shape: number[], label: string, dtype: "f32" | "u32" = "f32") =>
    createTensor(gpu, shape, { label, dtype });
  const B = 1, T = 12, D = 8;
  const io = (H: number, Hkv: number, d = D) => ({
    outputs: { o: t([B, H, T, d], "o"), lse: t([B, H, T], "lse") },
    inputs: {
      q: t([B, H, T, d], "q"),
      k: t([B, Hkv, T, d], "k"),
      v: t([B, Hkv, T, d], "v"),
      logitScale: t([H], "scale"),
    },
  });
  const expectError = async (
    run: () => Promise<void>,
    kind: typeof RangeError | typeof TypeError,
    text: RegExp,
  ) => {
    await assert.rejects(run, (err: Error) => {
      assert.ok(err instanceof kind, `${err.name}: ${err.message}`);
      assert.match(err.message, text);
      return true;
    });
  };
  const a = io(3, 2);
  await expectError(
    () => attentionForward(rec, a.outputs, a.inputs, { modes: headModes(3, "causal") }),
    RangeError,
    /H = 3 query heads, not a multiple of Hkv = 2 in k \(1, 2, 12, 8\)/,
  );
  const b = io(2, 1);
  for (const G of [5, 8, 0, undefined]) {
    await expectError(
      () =>
        attentionForward(rec, b.outputs, b.inputs, { modes: headModes(2, "shifted-groups"), groupSize: G }),
      RangeError,
      new RegExp(`group size G = ${G} must be an even integer ≥ 2 dividing T = 12`),
    );
  }
  for (const d of [6, 132]) {
    const c = io(2, 1, d);
    await expectError(
      () => attentionForward(rec, c.outputs, c.inputs, { modes: headModes(2, "causal") }),
      RangeError,
      new RegExp(`head size D = ${d} of q \\(1, 2, 12, ${d}\\) is unsupported`),
    );
  }
  await expectError(
    () => attentionForward(rec, b.outputs, b.inputs, { modes: headModes(2, "turns") }),
    RangeError,
    /mode "turns" needs mask.turn, a \(B, T\) = \(1, 12\) u32 tensor/,
  );
  await expectError(
    () =>
      attentionForward(rec, b.outputs, b.inputs, {
        modes: headModes(2, "turns"),
        turn: t([B, T], "turn"),
        tokenFlags: t([B, T], "flags", "u32"),
      }),
    TypeError,
    /turn is f32, expected u32/,
  );
  await expectError(
    () => attentionForward(rec, b.outputs, b.inputs, { modes: headModes(3, "causal") }),
    RangeError,
    /mask.modes has 3 entries, one per query head \(H = 2\)/,
  );
  await expectError(
    () =>
      attentionForward(rec, { ...b.outputs, lse: t([B, 2, T + 1], "lse") }, b.inputs, {
        modes: headModes(2, "causal"),
      }),
    RangeError,
    /lse \(1, 2, 13\) must be \(B, H, T\) = \(1, 2, 12\)/,
  );
  await expectError(
    () =>
      attentionBackward(
        rec,
        {
          dq: t([B, 2, T, D], "dq"),
          dk: t([B, 2, T, D], "dk"),
          dv: t([B, 1, T, D], "dv"),
          dScale: t([2], "dScale"),
        },
        { ...b.inputs, o: b.outputs.o, lse: b.outputs.lse, dO: t([B, 2, T, D], "dO") },
        { modes: headModes(2, "causal") },
      ),
    RangeError,
    /dk \(1, 2, 12, 8\) must be \(B, Hkv, T, D\) = \(1, 1, 12, 8\)/,
  );
  assert.equal(rec.dispatchCount, 0);
});

Deno.test("splitHeads, mergeHeads and their backwards are the reference permutations", async () => {
  const gpu = await getGpu();
  for (const [B, H, Hkv, T, D] of [[2, 4, 2, 7, 6], [1, 3, 3, 33, 5]]) {
    const sizes = { B, H, Hkv, T, D };
    const W = (H + 2 * Hkv) * D;
    const qkvHost = fillNormal(new Float32Array(B * T * W), 20 + H, 0);
    const dyHost = fillNormal(new Float32Array(B * T * H * D), 20 + H, 1);
    const gq = fillNormal(new Float32Array(B * H * T * D), 20 + H, 2);
    const gk = fillNormal(new Float32Array(B * Hkv * T * D), 20 + H, 3);
    const gv = fillNormal(new Float32Array(B * Hkv * T * D), 20 + H, 4);
    const qkv = tensorFrom(gpu, [B, T, W], qkvHost, { label: "qkv" });
    const dy = tensorFrom(gpu, [B, T, H * D], dyHost, { label: "dy" });
    const dq = tensorFrom(gpu, [B, H, T, D], gq, { label: "dq" });
    const dk = tensorFrom(gpu, [B, Hkv, T, D], gk, { label: "dk" });
    const dv = tensorFrom(gpu, [B, Hkv, T, D], gv, { label: "dv" });
    const outs = {
      q: createTensor(gpu, [B, H, T, D], { label: "q" }),
      k: createTensor(gpu, [B, Hkv, T, D], { label: "k" }),
      v: createTensor(gpu, [B, Hkv, T, D], { label: "v" }),
      dqkv: createTensor(gpu, [B, T, W], { label: "dqkv" }),
      y: createTensor(gpu, [B, T, H * D], { label: "y" }),
      dO: createTensor(gpu, [B, H, T, D], { label: "dO" }),
    };
    for (const o of Object.values(outs)) poison(gpu, o);
    const rec = new Recorder(gpu, "heads");
    await splitHeads(rec, outs.q, outs.k, outs.v, qkv);
    await splitHeadsBackward(rec, outs.dqkv, dq, dk, dv);
    await mergeHeads(rec, outs.y, outs.q);
    await mergeHeadsBackward(rec, outs.dO, dy);
    await rec.submit();
    const [q, k, v, dqkv, y, dO] = await readTensors(gpu, Object.values(outs)) as Float32Array[];
    const want = {
      q: new Float64Array(B * H * T * D),
      k: new Float64Array(B * Hkv * T * D),
      v: new Float64Array(B * Hkv * T * D),
      dqkv: new Float64Array(B * T * W),
      y: new Float64Array(B * T * H * D),
      dO: new Float64Array(B * H * T * D),
    };
    ref.splitHeads(want.q, want.k, want.v, qkvHost, sizes);
    ref.splitHeadsBackward(want.dqkv, gq, gk, gv, sizes);
    ref.mergeHeads(want.y, want.q, B, H, T, D);
    ref.mergeHeadsBackward(want.dO, dyHost, B, H, T, D);
    // Pure copies of f32 values: exact.
    const f32 = (a: Float64Array) => Float32Array.from(a);
    assertBitwiseEqual(`splitHeads q ${sizes}`, q, f32(want.q));
    assertBitwiseEqual("splitHeads k", k, f32(want.k));
    assertBitwiseEqual("splitHeads v", v, f32(want.v));
    assertBitwiseEqual("splitHeadsBackward dqkv", dqkv, f32(want.dqkv));
    assertBitwiseEqual("mergeHeads y", y, f32(want.y));
    assertBitwiseEqual("mergeHeadsBackward dO", dO, f32(want.dO));
    for (const tensor of [qkv, dy, dq, dk, dv, ...Object.values(outs)]) tensor.buffer.destroy();
  }
  const gpu2 = gpu;
  const rec = new Recorder(gpu2, "heads errors");
  const t = (shape: number[], label: string) => createTensor(gpu2, shape, { label });
  await assert.rejects(
    () =>
      splitHeads(rec, t([1, 4, 5, 8], "q"), t([1, 2, 5, 8], "k"), t([1, 2, 5, 8], "v"), t([1, 5, 60], "qkv")),
    /qkv \(1, 5, 60\) must be \(B, T, \(H \+ 2·Hkv\)·D\) = \(1, 5, 64\)/,
  );
  await assert.rejects(
    () => mergeHeads(rec, t([1, 5, 30], "y"), t([1, 4, 5, 8], "o")),
    /y \(1, 5, 30\) must be \(B, T, H·D\) = \(1, 5, 32\)/,
  );
});
