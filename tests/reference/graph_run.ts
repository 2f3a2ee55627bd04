/**
 * Test helpers for whole-graph runs with methods attached: upload a batch, run forward (+ backward)
 * once, read the losses and both gradient tables back.
 */
import type { Gpu } from "../../src/gpu/device.ts";
import { Recorder } from "../../src/gpu/recorder.ts";
import { readTensors, type Tensor, upload } from "../../src/gpu/tensor.ts";
import {
  createGraph,
  destroyGraph,
  type GraphOptions,
  recordBackward,
  recordForward,
} from "../../src/model/model.ts";
import type { ModelWeights } from "../../src/model/weights.ts";
import { bucketTokens } from "../../src/ops/encoder.ts";
import { Rng } from "../../src/random/philox.ts";
import type { PreparedMethod } from "../../src/methods/method.ts";
import { type HostBatch, Trainer } from "../../src/train/trainer.ts";

/** A host batch of B·T tokens, targets (every fifth ignored) and loss weights. */
export interface TestBatch {
  tokens: Uint32Array;
  targets: Int32Array;
  weights: Float32Array;
  turn?: Uint32Array;
  tokenFlags?: Uint32Array;
}

/** Random tokens and targets from (seed); every fifth target is ignored. */
export function randomBatch(V: number, N: number, seed: number): TestBatch {
  const rng = new Rng(seed, 77);
  const tokens = Uint32Array.from({ length: N }, () => rng.int(V));
  const targets = Int32Array.from({ length: N }, (_, i) => (i % 5 === 3 ? -100 : rng.int(V)));
  const weights = Float32Array.from(targets, (t) => (t === -100 ? 0 : 0.5 + rng.uniform()));
  return { tokens, targets, weights };
}

/** What one run read back. */
export interface GraphRun {
  losses: Float32Array;
  lossSum: number;
  /** Base gradient table (null when no base tensor trains or without training). */
  grads: Float32Array | null;
  /** Adapter gradients (null without an adapter or without training). */
  adapterGrads: Float32Array | null;
  logits: Float32Array | null;
}

/**
 * One forward (and with `opts.training` one backward) of `weights` on `batch`.
 * With `readLogits` (forward only) the logits are read back too.
 */
export async function runGraph(
  gpu: Gpu,
  weights: ModelWeights,
  opts: GraphOptions,
  batch: TestBatch,
  { gradScale = 1, readLogits = false }: { gradScale?: number; readLogits?: boolean } = {},
): Promise<GraphRun> {
  const g = createGraph(gpu, weights, opts);
  try {
    const buckets = bucketTokens(batch.tokens, weights.dims.V);
    upload(gpu, g.inputs.tokens, batch.tokens);
    upload(gpu, g.inputs.targets, batch.targets);
    upload(gpu, g.inputs.weights, batch.weights);
    upload(gpu, g.inputs.bucketIds, buckets.ids);
    upload(gpu, g.inputs.bucketStart, buckets.start);
    upload(gpu, g.inputs.bucketPositions, buckets.positions);
    if (g.inputs.turn && batch.turn) upload(gpu, g.inputs.turn, batch.turn);
    if (g.inputs.tokenFlags && batch.tokenFlags) upload(gpu, g.inputs.tokenFlags, batch.tokenFlags);
    const rec = new Recorder(gpu, "test run");
    let logits: Float32Array | null = null;
    if (readLogits) {
      // The loss kernel overwrites the logits with dlogits, so logits come from their own forward.
      const first = new Recorder(gpu, "test logits");
      await recordForward(first, g, { logitsOnly: true });
      await first.submit();
      logits = (await readTensors(gpu, [g.logits]))[0] as Float32Array;
    }
    await recordForward(rec, g, { gradScale });
    if (opts.training) await recordBackward(rec, g);
    await rec.submit();
    const wanted: Tensor[] = [g.losses, g.lossSum];
    if (g.grads && opts.training) wanted.push(g.grads);
    if (g.adapterGrads && opts.training) wanted.push(g.adapterGrads);
    const read = await readTensors(gpu, wanted);
    let k = 2;
    return {
      losses: read[0] as Float32Array,
      lossSum: (read[1] as Float32Array)[0],
      grads: g.grads && opts.training ? read[k++] as Float32Array : null,
      adapterGrads: g.adapterGrads && opts.training ? read[k++] as Float32Array : null,
      logits,
    };
  } finally {
    destroyGraph(g);
  }
}

/** (i·7) mod 5 + 3 as one row of T tokens: a short repeating pattern a frozen random model cannot predict. */
export function patternBatch(T: number): HostBatch {
  const pattern = Array.from({ length: T + 1 }, (_, i) => (i * 7) % 5 + 3);
  return { tokens: Uint32Array.from(pattern.slice(0, T)), targets: Int32Array.from(pattern.slice(1)) };
}

/**
 * Trains a prepared method as the harness does (its weights, adapter, trainable tensors and training
 * mask; AdamW, gradient norm clipped at 1, batch 1) for `steps` steps on patternBatch(T) and returns the
 * per-step losses.
 */
export async function trainOnPattern(
  gpu: Gpu,
  prepared: PreparedMethod,
  T: number,
  opts: { steps?: number; lr?: number } = {},
): Promise<number[]> {
  const trainer = await Trainer.create(gpu, prepared.weights, {
    B: 1,
    T,
    optimizer: { lr: opts.lr ?? 5e-2, maxGradNorm: 1 },
    adapter: prepared.adapter ?? undefined,
    trainable: prepared.trainable,
    mask: prepared.trainMask,
  });
  const batch = patternBatch(T);
  for (let i = 0; i < (opts.steps ?? 40); i++) await trainer.step(batch);
  const losses = await trainer.losses();
  trainer.destroy();
  return losses;
}
