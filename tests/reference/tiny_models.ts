/**
 * The tiny model configs most method tests share: widths that are multiples of no tile, head size 12
 * (attention needs a multiple of 4), GQA for Llama; and their weights scaled ×4 so every gradient path
 * carries signal (×10 makes layer 0's attention so sharp that f32 gradients drift to ~3e-4).
 */
import { type ModelConfig, parseModelConfig } from "../../src/model/config.ts";
import { initialWeights } from "../../src/model/weights.ts";

/** GPT-2 family: V 37, 16 positions, 2 layers, 3 heads of 12. */
export const tinyGpt2: ModelConfig = parseModelConfig({
  family: "gpt2",
  vocabSize: 37,
  maxPositions: 16,
  nLayer: 2,
  nHead: 3,
  nEmbd: 36,
});

/** Llama family: V 41, 32 positions, 2 layers, 4 query and 2 kv heads of 12, FFN 44. */
export const tinyLlama: ModelConfig = parseModelConfig({
  family: "llama",
  vocabSize: 41,
  maxPositions: 32,
  nLayer: 2,
  nHead: 4,
  nKvHead: 2,
  nEmbd: 48,
  nInner: 44,
});

/** initialWeights(config, seed) × 4. */
export function scaledWeights(config: ModelConfig, seed: number): Float32Array {
  const w = initialWeights(config, seed);
  for (let i = 0; i < w.length; i++) w[i] *= 4;
  return w;
}
