/**
 * Model configurations for the two families longtune trains:
 * - GPT-2: learned absolute positions, LayerNorm, GELU (tanh), biases everywhere, tied embeddings;
 * - Llama: RoPE (with optional scaling), RMSNorm, SwiGLU, grouped-query attention, no biases,
 *   untied LM head unless the checkpoint says otherwise.
 */
import { z } from "zod";
import { ropeScalingConfigSchema } from "./rope_scaling.ts";

const positiveInt = z.number().int().positive();

export const gpt2ConfigSchema = z.object({
  family: z.literal("gpt2"),
  vocabSize: positiveInt,
  /** Rows of the learned position table (GPT-2's n_positions). */
  maxPositions: positiveInt,
  nLayer: positiveInt,
  nHead: positiveInt,
  /** Model width C. */
  nEmbd: positiveInt,
  /** FFN width; GPT-2 uses 4·C. */
  nInner: positiveInt.optional(),
  lnEps: z.number().positive().default(1e-5),
}).strict();

export const llamaConfigSchema = z.object({
  family: z.literal("llama"),
  vocabSize: positiveInt,
  maxPositions: positiveInt,
  nLayer: positiveInt,
  nHead: positiveInt,
  nKvHead: positiveInt,
  nEmbd: positiveInt,
  /** SwiGLU inner width F (HF intermediate_size). */
  nInner: positiveInt,
  /** Head size D; defaults to C / H. */
  headDim: positiveInt.optional(),
  rmsEps: z.number().positive().default(1e-5),
  /** RoPE base (HF rope_theta) and scaling (methods spec §3.4). */
  rope: ropeScalingConfigSchema.default({ type: "none", factor: 1, base: 10000, betaFast: 32, betaSlow: 1 }),
  tieEmbeddings: z.boolean().default(false),
}).strict();

/** A model configuration of either family, validated. */
export const modelConfigSchema = z.discriminatedUnion("family", [gpt2ConfigSchema, llamaConfigSchema]);

export type Gpt2Config = z.infer<typeof gpt2ConfigSchema>;
export type LlamaConfig = z.infer<typeof llamaConfigSchema>;
export type ModelConfig = z.infer<typeof modelConfigSchema>;

/** Derived sizes every part of the engine uses, with the family's conventions resolved. */
export interface ModelDims {
  V: number;
  C: number;
  L: number;
  H: number;
  Hkv: number;
  D: number;
  /** FFN inner width. */
  F: number;
  maxT: number;
  tied: boolean;
}

/**
 * Parses and validates a configuration; errors name the field and what was expected.
 * @example const cfg = parseModelConfig({ family: "gpt2", vocabSize: 256, maxPositions: 512, nLayer: 2, nHead: 4, nEmbd: 128 });
 */
export function parseModelConfig(raw: unknown, source = "model config"): ModelConfig {
  const parsed = modelConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new Error(`${source} is invalid: ${issues}`);
  }
  const config = parsed.data;
  const d = dims(config);
  const fail = (field: string, why: string) => {
    throw new Error(`${source} is invalid: ${field}: ${why}`);
  };
  if (config.family === "gpt2" && config.nEmbd % config.nHead !== 0) {
    fail("nEmbd", `${config.nEmbd} is not divisible by nHead ${config.nHead}`);
  }
  if (config.family === "llama") {
    if (config.headDim === undefined && config.nEmbd % config.nHead !== 0) {
      fail("nEmbd", `${config.nEmbd} is not divisible by nHead ${config.nHead} (or give headDim)`);
    }
    if (config.nHead % config.nKvHead !== 0) {
      fail("nKvHead", `nHead ${config.nHead} is not a multiple of nKvHead ${config.nKvHead}`);
    }
    if (d.D % 2 !== 0) fail("headDim", `RoPE needs an even head size, got ${d.D}`);
  }
  return config;
}

/** The derived sizes of a configuration. */
export function dims(config: ModelConfig): ModelDims {
  if (config.family === "gpt2") {
    return {
      V: config.vocabSize,
      C: config.nEmbd,
      L: config.nLayer,
      H: config.nHead,
      Hkv: config.nHead,
      D: Math.floor(config.nEmbd / config.nHead),
      F: config.nInner ?? 4 * config.nEmbd,
      maxT: config.maxPositions,
      tied: true,
    };
  }
  return {
    V: config.vocabSize,
    C: config.nEmbd,
    L: config.nLayer,
    H: config.nHead,
    Hkv: config.nKvHead,
    D: config.headDim ?? Math.floor(config.nEmbd / config.nHead),
    F: config.nInner,
    maxT: config.maxPositions,
    tied: config.tieEmbeddings,
  };
}
