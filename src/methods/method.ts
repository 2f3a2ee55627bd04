/**
 * What every fine-tuning method provides (one file per method in src/methods/): a zod config, the
 * exact trainable-parameter count from its formula, and `prepare`, which turns a base model into what
 * training and evaluation run — possibly modified base weights (PiSSA's residual, an extended position
 * table, a RoPE scaling), an adapter with hooks (adapter.ts), the base tensors that train, and the
 * attention masks of training and evaluation.
 */
import type { z } from "zod";
import type { Gpu } from "../gpu/device.ts";
import type { Adapter, BaseTrainable } from "../model/adapter.ts";
import type { ModelConfig } from "../model/config.ts";
import type { GraphOptions } from "../model/model.ts";
import type { ModelWeights } from "../model/weights.ts";

/** What a method is prepared for. */
export interface PrepareContext {
  gpu: Gpu;
  /** The base model (its device weights are the method's to copy, never to modify in place). */
  base: ModelWeights;
  /** Host copy of the base parameters (table layout). */
  baseValues: Float32Array;
  /** Sequence length of training and the longest evaluation length the run will use. */
  trainLength: number;
  maxLength: number;
  /** Seed of every random initialisation the method makes. */
  seed: number;
  /**
   * Training sequences for methods that score the base model before training (the hybrid's FFN neuron
   * selection): each (T,) tokens with next-token targets (−100: no loss). Such methods throw without them.
   */
  calibration?: readonly { tokens: Uint32Array; targets: Int32Array }[];
}

/** The lengths a run trains and evaluates at (as in PrepareContext). */
export type MethodLengths = Pick<PrepareContext, "trainLength" | "maxLength">;

/** A method made ready for one base model. */
export interface PreparedMethod {
  /** The weights training and evaluation use (the base's own, or a modified copy). */
  weights: ModelWeights;
  adapter: Adapter | null;
  /** Which base tensors train. */
  trainable: BaseTrainable;
  /** Attention mask in training and in evaluation (default causal). */
  trainMask?: GraphOptions["mask"];
  evalMask?: GraphOptions["mask"];
  /** Trainable parameters actually allocated (equals the method's formula; tests check it). */
  trainableParameters: number;
  /** What the report records about this preparation (resolved config, derived sizes, notes). */
  details: Record<string, unknown>;
  /** Frees what `prepare` allocated (not the base). */
  destroy(): void;
}

/** One registry entry. */
export interface Method<S extends z.ZodType = z.ZodType> {
  /** Registry name (kebab-case), used by suites, the CLI and reports. */
  name: string;
  /** One line for `longtune list methods`. */
  title: string;
  /** Set when the method is a reconstruction or deviates from its authors' code; reports print it. */
  caveat?: string;
  config: S;
  /**
   * The trainable-parameter formula (methods spec §10) for a model config and a method config. Methods
   * that extend the context or adapt their components to the length (LongLoRA, HyLoRADA) also read the
   * run's lengths; without them they assume the model's own context.
   */
  parameterCount(model: ModelConfig, config: z.infer<S>, lengths?: MethodLengths): number;
  prepare(ctx: PrepareContext, config: z.infer<S>): Promise<PreparedMethod>;
}
