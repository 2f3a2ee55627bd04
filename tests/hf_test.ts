import assert from "node:assert/strict";
import { join } from "node:path";
import { parseModelConfig } from "../src/model/config.ts";
import { bf16ArrayToF32, f32ArrayToBf16 } from "../src/model/dtypes.ts";
import { configFromHf, loadHfCheckpoint, writeHfCheckpoint } from "../src/model/hf.ts";
import { paramTable } from "../src/model/params.ts";
import { writeSafetensors } from "../src/model/safetensors.ts";
import { initialWeights } from "../src/model/weights.ts";

const gpt2 = parseModelConfig({
  family: "gpt2",
  vocabSize: 11,
  maxPositions: 6,
  nLayer: 2,
  nHead: 2,
  nEmbd: 4,
});
const llama = parseModelConfig({
  family: "llama",
  vocabSize: 13,
  maxPositions: 16,
  nLayer: 1,
  nHead: 4,
  nKvHead: 2,
  nEmbd: 8,
  nInner: 12,
  rope: { type: "linear", factor: 2, base: 500000 },
});

Deno.test("GPT-2 Conv1D weights written by hand are transposed into the table's (out, in) layout", async () => {
  const dir = await Deno.makeTempDir();
  const C = 4, V = 11;
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  const put = (key: string, shape: number[], f: (i: number) => number) =>
    tensors[`transformer.${key}`] = {
      shape,
      data: Float32Array.from({ length: shape.reduce((a, b) => a * b) }, (_, i) => f(i)),
    };
  put("wte.weight", [V, C], (i) => i);
  put("wpe.weight", [6, C], (i) => -i);
  for (let l = 0; l < 2; l++) {
    put(`h.${l}.ln_1.weight`, [C], () => 1);
    put(`h.${l}.ln_1.bias`, [C], () => 0);
    // c_attn.weight[in][out] = 100·in + out + 10000·l.
    put(
      `h.${l}.attn.c_attn.weight`,
      [C, 3 * C],
      (i) => 100 * Math.floor(i / (3 * C)) + (i % (3 * C)) + 10000 * l,
    );
    put(`h.${l}.attn.c_attn.bias`, [3 * C], (i) => i);
    put(`h.${l}.attn.c_proj.weight`, [C, C], (i) => i);
    put(`h.${l}.attn.c_proj.bias`, [C], () => 0);
    put(`h.${l}.ln_2.weight`, [C], () => 1);
    put(`h.${l}.ln_2.bias`, [C], () => 0);
    put(`h.${l}.mlp.c_fc.weight`, [C, 4 * C], (i) => i);
    put(`h.${l}.mlp.c_fc.bias`, [4 * C], () => 0);
    put(`h.${l}.mlp.c_proj.weight`, [4 * C, C], (i) => i);
    put(`h.${l}.mlp.c_proj.bias`, [C], () => 0);
  }
  put("ln_f.weight", [C], () => 1);
  put("ln_f.bias", [C], () => 0);
  await writeSafetensors(join(dir, "model.safetensors"), tensors);
  await Deno.writeTextFile(
    join(dir, "config.json"),
    JSON.stringify({ model_type: "gpt2", vocab_size: V, n_positions: 6, n_embd: C, n_layer: 2, n_head: 2 }),
  );
  const { config, values } = await loadHfCheckpoint(dir);
  assert.deepEqual(config, gpt2);
  const table = paramTable(config);
  const qkv = table.byName.get("h.1.qkv.w")!;
  // Table row `out`, column `in` holds Conv1D [in][out].
  for (let out = 0; out < 3 * C; out++) {
    for (let inp = 0; inp < C; inp++) {
      assert.equal(values[qkv.offset + out * C + inp], 100 * inp + out + 10000, `qkv[${out}][${inp}]`);
    }
  }
  const k = table.byName.get("h.1.k.w")!;
  assert.equal(values[k.offset + 1 * C + 2], 100 * 2 + (C + 1) + 10000, "k rows follow q rows");
  assert.equal(values[table.byName.get("wpe")!.offset + 5], -5);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("HF round trip in GPT-2 and Llama layouts, f32 exact and bf16 rounded", async () => {
  for (const config of [gpt2, llama, { ...llama, tieEmbeddings: true }]) {
    const dir = await Deno.makeTempDir();
    const values = initialWeights(config, 4);
    await writeHfCheckpoint(dir, config, values);
    const back = await loadHfCheckpoint(dir);
    assert.deepEqual(back.config, config);
    assert.deepEqual(back.values, values);
    await writeHfCheckpoint(dir, config, values, { dtype: "BF16" });
    const bf = await loadHfCheckpoint(dir);
    assert.deepEqual(bf.values, bf16ArrayToF32(f32ArrayToBf16(values)));
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sharded checkpoints are read through model.safetensors.index.json", async () => {
  const dir = await Deno.makeTempDir();
  const values = initialWeights(llama, 2);
  await writeHfCheckpoint(dir, llama, values);
  // Split the single file into two shards by key.
  const { openSafetensors } = await import("../src/model/safetensors.ts");
  const file = await openSafetensors(join(dir, "model.safetensors"));
  const keys = [...file.entries.keys()];
  const shards: Record<string, Record<string, { shape: number[]; data: Float32Array }>> = { a: {}, b: {} };
  const weightMap: Record<string, string> = {};
  for (const [i, key] of keys.entries()) {
    const t = await file.read(key);
    const shard = i % 2 ? "b" : "a";
    shards[shard][key] = { shape: t.shape, data: t.data as Float32Array };
    weightMap[key] = `model-${shard}.safetensors`;
  }
  file.close();
  await Deno.remove(join(dir, "model.safetensors"));
  for (const s of ["a", "b"]) await writeSafetensors(join(dir, `model-${s}.safetensors`), shards[s]);
  await Deno.writeTextFile(
    join(dir, "model.safetensors.index.json"),
    JSON.stringify({ weight_map: weightMap }),
  );
  assert.deepEqual((await loadHfCheckpoint(dir)).values, values);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bad checkpoints are refused naming the file, the tensor and what was expected", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(loadHfCheckpoint(dir), /config.json: cannot read the model config/);
  await writeHfCheckpoint(dir, gpt2, initialWeights(gpt2, 1));
  const file = join(dir, "model.safetensors");
  const { readSafetensors } = await import("../src/model/safetensors.ts");
  const all = (await readSafetensors(file)).tensors;
  const rewrite = async (
    edit: (m: Map<string, { shape: number[]; data: Float32Array | Int32Array }>) => void,
  ) => {
    const m = new Map(
      [...all].map(([k, t]) => [k, { shape: t.shape, data: t.data as Float32Array | Int32Array }]),
    );
    edit(m);
    await writeSafetensors(file, m);
  };
  await rewrite((m) => m.delete("transformer.h.1.mlp.c_fc.bias"));
  await assert.rejects(
    loadHfCheckpoint(dir),
    /no tensor "transformer.h.1.mlp.c_fc.bias" \(needed for h.1.fc.b\)/,
  );
  await rewrite((m) => m.set("transformer.wpe.weight", { shape: [5, 4], data: new Float32Array(20) }));
  await assert.rejects(loadHfCheckpoint(dir), /"transformer.wpe.weight" has shape \[5,4\], expected \[6,4\]/);
  await rewrite((m) => m.set("transformer.ln_f.bias", { shape: [4], data: new Int32Array(4) }));
  await assert.rejects(
    loadHfCheckpoint(dir),
    /"transformer.ln_f.bias" is I32; weights must be F32, F16 or BF16/,
  );
  const bytes = await Deno.readFile(file);
  await Deno.writeFile(file, bytes.subarray(0, bytes.length - 10));
  await assert.rejects(loadHfCheckpoint(dir), /model.safetensors/);
  assert.throws(
    () => configFromHf({ model_type: "bert" }, "cfg.json"),
    /cfg.json: model_type "bert" is not supported/,
  );
  assert.throws(
    () => configFromHf({ model_type: "gpt2", vocab_size: 3 }, "cfg.json"),
    /cfg.json: field n_positions/,
  );
  await Deno.remove(dir, { recursive: true });
});
