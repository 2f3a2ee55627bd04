/**
 * Hugging Face checkpoints from a local folder (`config.json` plus `model.safetensors`, or shards
 * listed in `model.safetensors.index.json`), in the GPT-2 and Llama key layouts, mapped onto the
 * parameter table. Also the writer of the same layouts, so fine-tuned weights can be used by other
 * tools and so loaders are tested on checkpoints the project makes itself.
 *
 * GPT-2 stores its linear layers as Conv1D (in, out); they are transposed to the table's (out, in).
 * Llama's q_proj, k_proj and v_proj become the row blocks of the fused qkv tensor.
 */
import { join } from "node:path";
import { z } from "zod";
import { writeFileAtomic } from "../data/layouts.ts";
import { type ModelConfig, parseModelConfig } from "./config.ts";
import { type ParamTable, paramTable } from "./params.ts";
import { type FloatDtype, openSafetensors, type SafetensorsFile, writeSafetensors } from "./safetensors.ts";

const gpt2Json = z.object({
  model_type: z.literal("gpt2"),
  vocab_size: z.number().int(),
  n_positions: z.number().int(),
  n_embd: z.number().int(),
  n_layer: z.number().int(),
  n_head: z.number().int(),
  n_inner: z.number().int().nullable().optional(),
  layer_norm_epsilon: z.number().optional(),
}).passthrough();

const ropeScalingJson = z.object({
  type: z.string().optional(),
  rope_type: z.string().optional(),
  factor: z.number().optional(),
  original_max_position_embeddings: z.number().int().optional(),
  beta_fast: z.number().optional(),
  beta_slow: z.number().optional(),
}).passthrough();

const llamaJson = z.object({
  model_type: z.enum(["llama", "mistral"]),
  vocab_size: z.number().int(),
  hidden_size: z.number().int(),
  intermediate_size: z.number().int(),
  num_hidden_layers: z.number().int(),
  num_attention_heads: z.number().int(),
  num_key_value_heads: z.number().int().optional(),
  head_dim: z.number().int().optional(),
  max_position_embeddings: z.number().int(),
  rms_norm_eps: z.number().optional(),
  rope_theta: z.number().optional(),
  rope_scaling: ropeScalingJson.nullable().optional(),
  tie_word_embeddings: z.boolean().optional(),
}).passthrough();

/** Turns an HF `config.json` object into a longtune model config; `source` names it in errors. */
export function configFromHf(raw: unknown, source: string): ModelConfig {
  const type = (raw as { model_type?: unknown })?.model_type;
  if (type === "gpt2") {
    const c = parse(gpt2Json, raw, source);
    return parseModelConfig({
      family: "gpt2",
      vocabSize: c.vocab_size,
      maxPositions: c.n_positions,
      nLayer: c.n_layer,
      nHead: c.n_head,
      nEmbd: c.n_embd,
      ...(c.n_inner ? { nInner: c.n_inner } : {}),
      ...(c.layer_norm_epsilon !== undefined ? { lnEps: c.layer_norm_epsilon } : {}),
    }, source);
  }
  if (type === "llama" || type === "mistral") {
    const c = parse(llamaJson, raw, source);
    const s = c.rope_scaling;
    const scalingType = (s?.rope_type ?? s?.type ?? "none").replace("default", "none");
    if (!["none", "linear", "dynamic", "yarn"].includes(scalingType)) {
      throw new Error(
        `${source}: rope_scaling type "${scalingType}" is not supported (none, linear, dynamic, yarn)`,
      );
    }
    return parseModelConfig({
      family: "llama",
      vocabSize: c.vocab_size,
      maxPositions: c.max_position_embeddings,
      nLayer: c.num_hidden_layers,
      nHead: c.num_attention_heads,
      nKvHead: c.num_key_value_heads ?? c.num_attention_heads,
      nEmbd: c.hidden_size,
      nInner: c.intermediate_size,
      ...(c.head_dim ? { headDim: c.head_dim } : {}),
      rmsEps: c.rms_norm_eps ?? 1e-6,
      rope: {
        type: scalingType,
        factor: s?.factor ?? 1,
        base: c.rope_theta ?? 10000,
        ...(s?.original_max_position_embeddings
          ? { originalMaxPositions: s.original_max_position_embeddings }
          : {}),
        ...(s?.beta_fast !== undefined ? { betaFast: s.beta_fast } : {}),
        ...(s?.beta_slow !== undefined ? { betaSlow: s.beta_slow } : {}),
      },
      tieEmbeddings: c.tie_word_embeddings ?? false,
    }, source);
  }
  throw new Error(`${source}: model_type "${String(type)}" is not supported (gpt2, llama, mistral)`);
}

function parse<T extends z.ZodType>(schema: T, raw: unknown, source: string): z.infer<T> {
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new Error(`${source}: field ${issue.path.join(".") || "(root)"}: ${issue.message}`);
  }
  return r.data;
}

/** How one table tensor is assembled from checkpoint keys. */
interface Source {
  /** Table tensor name. */
  name: string;
  /** Checkpoint keys whose rows are stacked (one key for most tensors, q/k/v for Llama's qkv). */
  keys: string[];
  /** Conv1D layout: stored transposed. */
  transpose: boolean;
}

function sources(config: ModelConfig): Source[] {
  const L = config.nLayer;
  const out: Source[] = [];
  const add = (name: string, keys: string[], transpose = false) => out.push({ name, keys, transpose });
  if (config.family === "gpt2") {
    add("wte", ["wte.weight"]);
    add("wpe", ["wpe.weight"]);
    for (let l = 0; l < L; l++) {
      const h = `h.${l}`;
      add(`${h}.ln1.w`, [`${h}.ln_1.weight`]);
      add(`${h}.ln1.b`, [`${h}.ln_1.bias`]);
      add(`${h}.qkv.w`, [`${h}.attn.c_attn.weight`], true);
      add(`${h}.qkv.b`, [`${h}.attn.c_attn.bias`]);
      add(`${h}.attnOut.w`, [`${h}.attn.c_proj.weight`], true);
      add(`${h}.attnOut.b`, [`${h}.attn.c_proj.bias`]);
      add(`${h}.ln2.w`, [`${h}.ln_2.weight`]);
      add(`${h}.ln2.b`, [`${h}.ln_2.bias`]);
      add(`${h}.fc.w`, [`${h}.mlp.c_fc.weight`], true);
      add(`${h}.fc.b`, [`${h}.mlp.c_fc.bias`]);
      add(`${h}.fcProj.w`, [`${h}.mlp.c_proj.weight`], true);
      add(`${h}.fcProj.b`, [`${h}.mlp.c_proj.bias`]);
    }
    add("lnf.w", ["ln_f.weight"]);
    add("lnf.b", ["ln_f.bias"]);
    return out;
  }
  add("wte", ["model.embed_tokens.weight"]);
  for (let l = 0; l < L; l++) {
    const h = `model.layers.${l}`;
    add(`h.${l}.ln1.w`, [`${h}.input_layernorm.weight`]);
    add(`h.${l}.qkv.w`, [
      `${h}.self_attn.q_proj.weight`,
      `${h}.self_attn.k_proj.weight`,
      `${h}.self_attn.v_proj.weight`,
    ]);
    add(`h.${l}.attnOut.w`, [`${h}.self_attn.o_proj.weight`]);
    add(`h.${l}.ln2.w`, [`${h}.post_attention_layernorm.weight`]);
    add(`h.${l}.gate.w`, [`${h}.mlp.gate_proj.weight`]);
    add(`h.${l}.up.w`, [`${h}.mlp.up_proj.weight`]);
    add(`h.${l}.down.w`, [`${h}.mlp.down_proj.weight`]);
  }
  add("lnf.w", ["model.norm.weight"]);
  if (!config.tieEmbeddings) add("lmHead.w", ["lm_head.weight"]);
  return out;
}

/** Shape a key must have in the checkpoint, from its table tensor and its share of the rows. */
function keyShapes(table: ParamTable, s: Source): number[][] {
  const shape = table.byName.get(s.name)!.shape;
  if (s.keys.length === 1) return [s.transpose ? [...shape].reverse() : shape];
  // Llama q, k, v: row blocks of qkv.
  const l = s.name.split(".")[1];
  return ["q", "k", "v"].map((part) => table.byName.get(`h.${l}.${part}.w`)!.shape);
}

async function openShards(folder: string): Promise<Map<string, SafetensorsFile>> {
  const index = join(folder, "model.safetensors.index.json");
  const single = join(folder, "model.safetensors");
  const byKey = new Map<string, SafetensorsFile>();
  let files: string[];
  try {
    const parsed = JSON.parse(await Deno.readTextFile(index)) as { weight_map?: Record<string, string> };
    if (!parsed.weight_map) throw new Error(`${index}: no "weight_map" object`);
    files = [...new Set(Object.values(parsed.weight_map))];
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    files = ["model.safetensors"];
    try {
      await Deno.stat(single);
    } catch {
      throw new Error(`${folder}: neither model.safetensors nor model.safetensors.index.json exists`);
    }
  }
  for (const f of files) {
    const file = await openSafetensors(join(folder, f));
    for (const key of file.entries.keys()) byKey.set(key, file);
  }
  return byKey;
}

/**
 * Loads a local HF checkpoint folder into the parameter table's layout.
 * @example const { config, values } = await loadHfCheckpoint("./models/gpt2"); createWeights(gpu, config, values);
 */
export async function loadHfCheckpoint(
  folder: string,
): Promise<{ config: ModelConfig; values: Float32Array }> {
  const configPath = join(folder, "config.json");
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(configPath));
  } catch (err) {
    throw new Error(`${configPath}: cannot read the model config: ${(err as Error).message}`);
  }
  const config = configFromHf(raw, configPath);
  const table = paramTable(config);
  const values = new Float32Array(table.size);
  const shards = await openShards(folder);
  try {
    // GPT2LMHeadModel saves keys under "transformer."; GPT2Model without a prefix.
    const prefix = config.family === "gpt2" && shards.has("transformer.wte.weight") ? "transformer." : "";
    for (const s of sources(config)) {
      const shapes = keyShapes(table, s);
      let at = table.byName.get(s.name)!.offset;
      for (const [i, key] of s.keys.entries()) {
        const full = prefix + key;
        const file = shards.get(full);
        if (!file) throw new Error(`${folder}: checkpoint has no tensor "${full}" (needed for ${s.name})`);
        const t = await file.read(full);
        const want = shapes[i];
        if (t.shape.length !== want.length || t.shape.some((d, j) => d !== want[j])) {
          throw new Error(`${file.path}: tensor "${full}" has shape [${t.shape}], expected [${want}]`);
        }
        if (!(t.data instanceof Float32Array)) {
          throw new Error(`${file.path}: tensor "${full}" is ${t.dtype}; weights must be F32, F16 or BF16`);
        }
        if (s.transpose) {
          const [rows, cols] = t.shape;
          for (let r = 0; r < rows; r++) {
            for (let c = 0; c < cols; c++) values[at + c * rows + r] = t.data[r * cols + c];
          }
        } else values.set(t.data, at);
        at += t.data.length;
      }
    }
  } finally {
    for (const file of new Set(shards.values())) file.close();
  }
  return { config, values };
}

/** The HF config.json object of a longtune config. */
export function configToHf(config: ModelConfig): Record<string, unknown> {
  if (config.family === "gpt2") {
    return {
      model_type: "gpt2",
      architectures: ["GPT2LMHeadModel"],
      vocab_size: config.vocabSize,
      n_positions: config.maxPositions,
      n_embd: config.nEmbd,
      n_layer: config.nLayer,
      n_head: config.nHead,
      n_inner: config.nInner ?? null,
      layer_norm_epsilon: config.lnEps,
      activation_function: "gelu_new",
    };
  }
  const r = config.rope;
  return {
    model_type: "llama",
    architectures: ["LlamaForCausalLM"],
    vocab_size: config.vocabSize,
    hidden_size: config.nEmbd,
    intermediate_size: config.nInner,
    num_hidden_layers: config.nLayer,
    num_attention_heads: config.nHead,
    num_key_value_heads: config.nKvHead,
    ...(config.headDim ? { head_dim: config.headDim } : {}),
    max_position_embeddings: config.maxPositions,
    rms_norm_eps: config.rmsEps,
    rope_theta: r.base,
    rope_scaling: r.type === "none" ? null : {
      rope_type: r.type,
      factor: r.factor,
      ...(r.originalMaxPositions ? { original_max_position_embeddings: r.originalMaxPositions } : {}),
      beta_fast: r.betaFast,
      beta_slow: r.betaSlow,
    },
    tie_word_embeddings: config.tieEmbeddings,
    hidden_act: "silu",
  };
}

/**
 * Writes `values` (table layout) as an HF checkpoint folder: config.json and model.safetensors in the
 * family's key layout (GPT2LMHeadModel's "transformer." prefix for GPT-2), each written atomically.
 */
export async function writeHfCheckpoint(
  folder: string,
  config: ModelConfig,
  values: Float32Array,
  opts: { dtype?: FloatDtype } = {},
): Promise<void> {
  const table = paramTable(config);
  if (values.length !== table.size) {
    throw new RangeError(`writeHfCheckpoint: ${values.length} values, the table holds ${table.size}`);
  }
  await Deno.mkdir(folder, { recursive: true });
  const prefix = config.family === "gpt2" ? "transformer." : "";
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const s of sources(config)) {
    const shapes = keyShapes(table, s);
    let at = table.byName.get(s.name)!.offset;
    s.keys.forEach((key, i) => {
      const shape = shapes[i];
      const n = shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(n);
      if (s.transpose) {
        const [rows, cols] = shape;
        for (let r = 0; r < rows; r++) {
          for (let c = 0; c < cols; c++) data[r * cols + c] = values[at + c * rows + r];
        }
      } else data.set(values.subarray(at, at + n));
      tensors[prefix + key] = { shape, data };
      at += n;
    });
  }
  await writeSafetensors(join(folder, "model.safetensors"), tensors, { format: "pt" }, {
    dtype: opts.dtype ?? "F32",
  });
  await writeFileAtomic(join(folder, "config.json"), JSON.stringify(configToHf(config), null, 2) + "\n");
}
