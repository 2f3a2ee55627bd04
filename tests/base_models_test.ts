import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { sha256 } from "../src/data/hash.ts";
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { readF32, upload } from "../src/gpu/tensor.ts";
import {
  BASE_MODEL_NAMES,
  BASE_MODELS_DIR,
  type BaseModel,
  type BaseModelManifest,
  loadBaseModel,
  readBaseModelManifest,
} from "../src/harness/base_models.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { writeHfCheckpoint } from "../src/model/hf.ts";
import { createGraph, destroyGraph, recordForward } from "../src/model/model.ts";
import { createWeights, initialWeights } from "../src/model/weights.ts";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const MAKE = join(ROOT, "fixtures", "models", "make.ts");
const LN_V = Math.log(257);
// Held-out mean loss bounds in nats per byte, against ln 257 = 5.549 for a uniform guess. The shipped
// models score 2.31–2.57 (gpt2-tiny: learned positions, near bigram level after 500 steps) and 1.69–1.80
// (llama-tiny) on these texts; the bounds leave ≥ 0.23 of margin and still catch a model that did not train.
const HELD_OUT_BOUND: Record<string, number> = { "gpt2-tiny": 2.8, "llama-tiny": 2.2 };

Deno.test("the manifest validates and every shipped file matches its sha256", async () => {
  const manifest = await readBaseModelManifest();
  let total = 0;
  for (const name of BASE_MODEL_NAMES) {
    const entry = manifest.models[name];
    assert.ok(entry, `manifest has no ${name}`);
    assert.equal(entry.tokenizer.name, "byte");
    for (const [path, want] of Object.entries(entry.files)) {
      const bytes = await Deno.readFile(join(BASE_MODELS_DIR, path));
      assert.equal(bytes.length, want.bytes, `${path} size`);
      assert.equal(sha256(bytes), want.sha256, `${path} sha256`);
      total += bytes.length;
    }
    const l = entry.loss;
    console.log(
      `${name}: ${entry.steps} steps, loss ${l.first.toFixed(3)} → ${
        l.final.toFixed(3)
      } (last ${l.finalWindow}); ` +
        `last fifth prose ${l.lastFifthByKind.prose?.toFixed(3)}, train ${entry.wallSeconds.train} s`,
    );
    assert.ok(l.first > 5 && l.final < 2.5, `${name}: loss ${l.first} → ${l.final} should fall from ~ln 257`);
  }
  console.log(`shipped bytes: ${total}`);
  assert.ok(total < 5 * 2 ** 20, `fixtures/models holds ${total} bytes; keep it under 5 MiB`);
});

// Mean per-token loss of one forward pass (no training buffers) over `ids`.
async function forwardLoss(model: BaseModel, ids: readonly number[]): Promise<number> {
  const gpu = await getGpu();
  const weights = createWeights(gpu, model.config, model.values);
  const T = ids.length - 1;
  const graph = createGraph(gpu, weights, { B: 1, T, training: false });
  upload(gpu, graph.inputs.tokens, Uint32Array.from(ids.slice(0, T)));
  upload(gpu, graph.inputs.targets, Int32Array.from(ids.slice(1)));
  upload(gpu, graph.inputs.weights, new Float32Array(T).fill(1));
  const rec = new Recorder(gpu, "held-out forward");
  await recordForward(rec, graph);
  await rec.submit();
  const losses = await readF32(gpu, graph.losses);
  destroyGraph(graph);
  weights.params.buffer.destroy();
  return losses.reduce((a, b) => a + b, 0) / T;
}

Deno.test("the shipped models score held-out corpus text well below ln 257", async () => {
  // Test splits of the corpus fixtures: another generator seed than the models' training text.
  const pg19 = await Deno.readTextFile(join(ROOT, "fixtures/corpus/pg19/test/9000004.txt"));
  const wiki = await Deno.readTextFile(join(ROOT, "fixtures/corpus/wikitext/wiki.test.raw"));
  const texts = { "pg19 test": pg19.slice(20_000), "wikitext test": wiki.slice(5_000) };
  for (const name of BASE_MODEL_NAMES) {
    const model = await loadBaseModel(name);
    assert.equal(model.config.family, name.startsWith("gpt2") ? "gpt2" : "llama");
    assert.equal(model.tokenizer.name, "byte");
    assert.equal(model.manifest?.name, name);
    for (const [label, text] of Object.entries(texts)) {
      const ids = model.tokenizer.encode(text).slice(0, 385);
      const loss = await forwardLoss(model, ids);
      console.log(
        `${name} on ${label} (${ids.length - 1} tokens): ${loss.toFixed(3)} nats/token (ln V ${
          LN_V.toFixed(3)
        })`,
      );
      assert.ok(loss < HELD_OUT_BOUND[name], `${name} on ${label}: ${loss} ≥ bound ${HELD_OUT_BOUND[name]}`);
    }
  }
});

async function copyFolder(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    await Deno.copyFile(join(from, entry.name), join(to, entry.name));
  }
}

Deno.test("a user checkpoint loads by path, with its tokenizer.json when it has one", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const shipped = await loadBaseModel("gpt2-tiny");
    const copy = join(dir, "copy");
    await copyFolder(join(BASE_MODELS_DIR, "gpt2-tiny"), copy);
    const user = await loadBaseModel(copy);
    assert.equal(user.manifest, null);
    assert.equal(user.tokenizer.name, "byte");
    assert.deepEqual(user.config, shipped.config);
    assert.ok(
      user.values.every((x, i) => Object.is(x, shipped.values[i])),
      "values differ from the shipped ones",
    );

    // A tokenizer with more ids than the model's vocabulary is refused, naming the folder.
    const tokenizerJson = join(ROOT, "fixtures/tokenizers/hf-tiny/tokenizer.json");
    await Deno.copyFile(tokenizerJson, join(copy, "tokenizer.json"));
    await assert.rejects(
      loadBaseModel(copy),
      (e: Error) => e.message.includes(copy) && /293 ids/.test(e.message),
    );

    // A model whose vocabulary fits the tokenizer gets it.
    const config = parseModelConfig({
      family: "gpt2",
      vocabSize: 293,
      maxPositions: 32,
      nLayer: 1,
      nHead: 2,
      nEmbd: 16,
    });
    const bpe = join(dir, "bpe");
    await writeHfCheckpoint(bpe, config, initialWeights(config, 5));
    await Deno.copyFile(tokenizerJson, join(bpe, "tokenizer.json"));
    const loaded = await loadBaseModel(bpe);
    assert.equal(loaded.tokenizer.vocabSize, 293);
    assert.notEqual(loaded.tokenizer.name, "byte");
    assert.equal(loaded.config.vocabSize, 293);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad paths and changed shipped files give errors that name them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const missing = join(dir, "no-such-model");
    await assert.rejects(loadBaseModel(missing), (e: Error) => e.message.includes(missing));
    const empty = join(dir, "empty");
    await Deno.mkdir(empty);
    await assert.rejects(
      loadBaseModel(empty),
      (e: Error) => e.message.includes(empty) && e.message.includes("config.json"),
    );

    // A copy of the shipped root with one flipped byte in the weights.
    const root = join(dir, "models");
    await Deno.mkdir(root);
    await Deno.copyFile(join(BASE_MODELS_DIR, "manifest.json"), join(root, "manifest.json"));
    await copyFolder(join(BASE_MODELS_DIR, "gpt2-tiny"), join(root, "gpt2-tiny"));
    const weights = join(root, "gpt2-tiny", "model.safetensors");
    const bytes = await Deno.readFile(weights);
    bytes[bytes.length - 3] ^= 1;
    await Deno.writeFile(weights, bytes);
    await assert.rejects(
      loadBaseModel("gpt2-tiny", { root }),
      (e: Error) => e.message.includes(weights) && e.message.includes("sha256"),
    );
    // The untouched model's folder is missing from this root: also named.
    await assert.rejects(
      loadBaseModel("llama-tiny", { root }),
      (e: Error) => e.message.includes(join(root, "llama-tiny")),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function rebuild(out: string): Promise<BaseModelManifest> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      MAKE,
      "--steps",
      "3",
      "--out",
      out,
    ],
    cwd: ROOT,
  }).output();
  const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  assert.equal(code, 0, text);
  return readBaseModelManifest(out);
}

Deno.test("a 3-step rebuild is bitwise identical when run twice", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const started = performance.now();
    const a = await rebuild(join(dir, "a"));
    const b = await rebuild(join(dir, "b"));
    console.log(`two 3-step rebuilds: ${((performance.now() - started) / 1000).toFixed(1)} s`);
    assert.deepEqual(Object.keys(a.files), Object.keys(b.files));
    for (const path of Object.keys(a.files)) {
      const [x, y] = await Promise.all([
        Deno.readFile(join(dir, "a", path)),
        Deno.readFile(join(dir, "b", path)),
      ]);
      assert.ok(x.length === y.length && x.every((v, i) => v === y[i]), `${path} differs between rebuilds`);
    }
    const timeless = (m: BaseModelManifest) =>
      JSON.stringify(m, (key, value) => (key === "wallSeconds" ? undefined : value));
    assert.equal(timeless(a), timeless(b));

    // The shipped models came from this recipe: step 1 (same init, batch and lr) gives the same loss.
    const shipped = await readBaseModelManifest();
    for (const name of BASE_MODEL_NAMES) {
      const want = shipped.models[name]!, got = a.models[name]!;
      console.log(`${name}: step-1 loss rebuilt ${got.loss.first}, shipped ${want.loss.first}`);
      // llvmpipe has one description for its OpenGL and Vulkan paths; the subgroup range tells them apart.
      const sameAdapter = got.environment.adapter === want.environment.adapter &&
        JSON.stringify(got.environment.subgroupSizes) === JSON.stringify(want.environment.subgroupSizes);
      if (sameAdapter) assert.equal(got.loss.first, want.loss.first);
      else {assert.ok(
          Math.abs(got.loss.first - want.loss.first) < 1e-3,
          `${name}: step-1 loss on another adapter`,
        );}
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
