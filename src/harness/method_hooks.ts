/**
 * Where a method departs from the plain loop, the runner looks here instead of special-casing it:
 *
 * - `details.trainer` (a string a method's `prepare` puts in `PreparedMethod.details`) names a trainer
 *   factory in `TRAINERS`; without it the plain `Trainer` (one AdamW step per batch over the adapter and
 *   the trainable base ranges) trains. FocuSFT's bilevel loop is registered here.
 * - `details.perSample` names a per-sample adaptation in `SAMPLE_ADAPTATIONS`: the runner calls it
 *   with every evaluation input before generating or scoring, and calls the undo it returns afterwards
 *   (LIFT fine-tunes on each long input at evaluation time and throws the weights away).
 *
 * A new method with its own loop adds one entry to one of these tables (and nothing to the runner).
 */

import type { Gpu } from "../gpu/device.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { createFocusftTrainer } from "../methods/focusft.ts";
import { liftSampleAdaptation } from "../methods/lift.ts";
import type { PreparedMethod } from "../methods/method.ts";
import type { AdamWConfig } from "../ops/adamw.ts";
import { type HostBatch, Trainer } from "../train/trainer.ts";

/** What every training loop offers the runner (Trainer and FocusftTrainer both do). */
export interface MethodTrainer {
  step(batch: HostBatch): Promise<void>;
  /** Mean per-token loss of every step so far. */
  losses(): Promise<number[]>;
  /** Frees the loop's own buffers (not the prepared method's). */
  dispose(): void;
}

/** What a trainer factory is given. */
export interface TrainerRequest {
  gpu: Gpu;
  prepared: PreparedMethod;
  B: number;
  T: number;
  optimizer: Partial<AdamWConfig> & { lr: number };
  schedule: (step: number) => number;
  recompute: boolean;
}

/** Builds a training loop for a prepared method. */
export type TrainerFactory = (request: TrainerRequest) => Promise<MethodTrainer>;

/** The plain loop: `Trainer` with the method's adapter, trainable base ranges and training mask. */
export const plainTrainer: TrainerFactory = async (request) => {
  const { gpu, prepared } = request;
  const trainer = await Trainer.create(gpu, prepared.weights, {
    B: request.B,
    T: request.T,
    optimizer: request.optimizer,
    schedule: request.schedule,
    recompute: request.recompute,
    mask: prepared.trainMask,
    adapter: prepared.adapter ?? undefined,
    trainable: prepared.trainable,
  });
  return {
    step: (batch) => trainer.step(batch),
    losses: () => trainer.losses(),
    dispose: () => trainer.destroy(),
  };
};

/** Trainer factories by `details.trainer`. */
export const TRAINERS: Record<string, TrainerFactory> = {
  focusft: async (request) => {
    const trainer = await createFocusftTrainer(request.gpu, request.prepared, {
      B: request.B,
      T: request.T,
      optimizer: request.optimizer,
      schedule: request.schedule,
      recompute: request.recompute,
    });
    return {
      step: (batch) => trainer.step(batch),
      losses: () => trainer.losses(),
      dispose: () => trainer.destroy(),
    };
  },
};

/** The trainer factory a prepared method asks for; an unknown `details.trainer` is an error naming the known. */
export function trainerFor(method: string, prepared: PreparedMethod): TrainerFactory {
  const name = prepared.details.trainer;
  if (name === undefined) return plainTrainer;
  const factory = typeof name === "string" ? TRAINERS[name] : undefined;
  if (factory === undefined) {
    throw new RangeError(
      `method ${method}: details.trainer ${
        JSON.stringify(name)
      } has no trainer in src/harness/method_hooks.ts ` +
        `(known: ${Object.keys(TRAINERS).join(", ")})`,
    );
  }
  return factory;
}

/** One evaluation input, for a per-sample adaptation. */
export interface SampleInput {
  /** The whole prompt the model will read (context, question and answer prefix). */
  prompt: string;
  tokens: readonly number[];
  tokenizer: Tokenizer;
  /** The cell's length and the replicate seed. */
  length: number;
  seed: number;
}

/** Adapts a prepared method to one input; resolves to the undo, which restores the prepared state. */
export type SampleAdaptation = (
  gpu: Gpu,
  prepared: PreparedMethod,
  input: SampleInput,
) => Promise<() => Promise<void>>;

/** Per-sample adaptations by `details.perSample`. */
export const SAMPLE_ADAPTATIONS: Record<string, SampleAdaptation> = { lift: liftSampleAdaptation };

/** The per-sample adaptation a prepared method asks for, or null. */
export function sampleAdaptationFor(method: string, prepared: PreparedMethod): SampleAdaptation | null {
  const name = prepared.details.perSample;
  if (name === undefined) return null;
  const adaptation = typeof name === "string" ? SAMPLE_ADAPTATIONS[name] : undefined;
  if (adaptation === undefined) {
    throw new RangeError(
      `method ${method}: details.perSample ${JSON.stringify(name)} has no adaptation in ` +
        `src/harness/method_hooks.ts (known: ${Object.keys(SAMPLE_ADAPTATIONS).join(", ") || "none"})`,
    );
  }
  return adaptation;
}
