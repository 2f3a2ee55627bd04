import assert from "node:assert/strict";
import { dims, parseModelConfig } from "../src/model/config.ts";
import { decays, PARAM_ALIGN, parameterCount, paramTable } from "../src/model/params.ts";

const gpt2Small = { family: "gpt2", vocabSize: 50257, maxPositions: 1024, nLayer: 12, nHead: 12, nEmbd: 768 };

Deno.test("GPT-2 small has the published 124,439,808 parameters", () => {
  const table = paramTable(parseModelConfig(gpt2Small));
  assert.equal(parameterCount(table), 124_439_808);
});

Deno.test("a Llama config counts q/k/v with GQA, SwiGLU and an untied head", () => {
  // SmolLM-135M's shape: V 49152, C 576, L 30, H 9, Hkv 3, F 1536, tied embeddings → 134,515,008.
  const smol = parseModelConfig({
    family: "llama",
    vocabSize: 49152,
    maxPositions: 2048,
    nLayer: 30,
    nHead: 9,
    nKvHead: 3,
    nEmbd: 576,
    nInner: 1536,
    tieEmbeddings: true,
  });
  const { C, H, Hkv, D, F, L, V } = dims(smol);
  const perLayer = C * (H * D) + 2 * C * (Hkv * D) + (H * D) * C + 3 * C * F + 2 * C;
  assert.equal(parameterCount(paramTable(smol)), V * C + L * perLayer + C);
  assert.equal(parameterCount(paramTable(smol)), 134_515_008);
});

Deno.test("q, k, v are consecutive row blocks of the fused qkv tensor", () => {
  const cfg = parseModelConfig({
    family: "llama",
    vocabSize: 300,
    maxPositions: 64,
    nLayer: 2,
    nHead: 4,
    nKvHead: 2,
    nEmbd: 40,
    nInner: 72,
  });
  const t = paramTable(cfg);
  const qkv = t.byName.get("h.1.qkv.w")!, q = t.byName.get("h.1.q.w")!, k = t.byName.get("h.1.k.w")!;
  const v = t.byName.get("h.1.v.w")!;
  assert.deepEqual([q.shape, k.shape, v.shape, qkv.shape], [[40, 40], [20, 40], [20, 40], [80, 40]]);
  assert.equal(q.offset, qkv.offset);
  assert.equal(k.offset, q.offset + q.numel);
  assert.equal(v.offset + v.numel, qkv.offset + qkv.numel);
  for (const e of t.entries) assert.equal(e.offset % PARAM_ALIGN, 0, `${e.name} is aligned`);
  assert.ok(!t.entries.some((e) => e.name === "h.1.q.w"), "views are not separate storage");
  assert.ok(t.byName.has("lmHead.w"));
  assert.equal(decays(t.byName.get("h.0.ln1.w")!), false);
  assert.equal(decays(qkv), true);
});

Deno.test("invalid configs are refused naming the field", () => {
  assert.throws(() => parseModelConfig({ ...gpt2Small, nHead: 7 }), /nEmbd: 768 is not divisible by nHead 7/);
  assert.throws(() => parseModelConfig({ ...gpt2Small, nLayer: 0 }), /nLayer/);
  assert.throws(() => parseModelConfig({ ...gpt2Small, family: "bert" }), /family/);
  assert.throws(() => parseModelConfig({ ...gpt2Small, extra: 1 }), /extra|Unrecognized/);
  const llama = {
    family: "llama",
    vocabSize: 10,
    maxPositions: 8,
    nLayer: 1,
    nHead: 6,
    nKvHead: 4,
    nEmbd: 24,
    nInner: 8,
  };
  assert.throws(() => parseModelConfig(llama), /nKvHead: nHead 6 is not a multiple of nKvHead 4/);
  assert.throws(() => parseModelConfig({ ...llama, nKvHead: 3, headDim: 5 }), /even head size/);
});
