/**
 * Per-method training cost (the methods issue's targets). For the reference config — GPT-2 family, 2
 * layers, d 128, 4 heads, byte vocabulary, batch 1 — at each T: every registered method's training step
 * (its own trainer and training mask, as the harness runs it) in tokens/s, the GPU memory it allocated
 * and its trainable parameters; then two ratios:
 *   - LoRA's step over the frozen model's forward + backward (input gradients only); target ≤ 1.3;
 *   - at the longest T, LoRA's step with S²-Attn (G = T/4) over the same step with causal attention;
 *     target ≤ 0.5.
 * Memory is what longtune allocated while preparing and training the method (the allocation counter
 * never decreases, so it bounds the peak from above).
 *
 *   deno task bench:methods [--T 512,8192] [--steps 3] [--methods lora,dora] [--json]
 */
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { allocatedBytes, upload } from "../src/gpu/tensor.ts";
import { trainerFor } from "../src/harness/method_hooks.ts";
import { NO_BASE } from "../src/model/adapter.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { createGraph, destroyGraph, recordBackward, recordForward } from "../src/model/model.ts";
import { createWeights, initialWeights } from "../src/model/weights.ts";
import { bucketTokens } from "../src/ops/encoder.ts";
import { METHODS } from "../src/methods/registry.ts";
import type { PreparedMethod } from "../src/methods/method.ts";
import { Rng } from "../src/random/philox.ts";
import type { HostBatch } from "../src/train/trainer.ts";

function arg(name: string, fallback: string): string {
  const at = Deno.args.indexOf(`--${name}`);
  return at >= 0 ? Deno.args[at + 1] ?? fallback : fallback;
}

const json = Deno.args.includes("--json");
const lengths = arg("T", "512,8192").split(",").map(Number);
const steps = Number(arg("steps", "3"));
const only = arg("methods", "");
const methods = only ? METHODS.filter((m) => only.split(",").includes(m.name)) : METHODS;
const V = 257;
const maxT = Math.max(...lengths);
const config = parseModelConfig({
  family: "gpt2",
  vocabSize: V,
  maxPositions: maxT,
  nLayer: 2,
  nHead: 4,
  nEmbd: 128,
});
const gpu = await getGpu();
const values = initialWeights(config, 1337);
const base = createWeights(gpu, config, values);
const adapter = gpu.adapter.description || gpu.adapter.device;

const batchFor = (T: number, seed: number): HostBatch => {
  const rng = new Rng(seed, 3);
  const stream = Array.from({ length: T + 1 }, () => rng.int(256));
  return { tokens: Uint32Array.from(stream.slice(0, T)), targets: Int32Array.from(stream.slice(1)) };
};

interface Result {
  name: string;
  T: number;
  msPerStep: number;
  tokensPerSecond: number;
  allocatedMiB: number;
  trainableParameters: number;
  adapter: string;
}
const results: Result[] = [];

// One method's step at length T: prepare, build its trainer, one warm-up step, then `steps` timed.
async function timeMethod(
  name: string,
  T: number,
  prepare: () => Promise<PreparedMethod>,
  label = name,
): Promise<Result> {
  const before = allocatedBytes();
  const prepared = await prepare();
  const trainer = await trainerFor(name, prepared)({
    gpu,
    prepared,
    B: 1,
    T,
    optimizer: { lr: 1e-4, maxGradNorm: 1 },
    schedule: () => 1e-4,
    recompute: false,
  });
  await trainer.step(batchFor(T, 0));
  await trainer.losses();
  const t0 = performance.now();
  for (let s = 1; s <= steps; s++) await trainer.step(batchFor(T, s));
  await gpu.device.queue.onSubmittedWorkDone();
  const ms = (performance.now() - t0) / steps;
  const losses = await trainer.losses();
  if (!losses.every(Number.isFinite)) throw new Error(`${label} at T = ${T}: non-finite loss ${losses}`);
  const result = {
    name: label,
    T,
    msPerStep: ms,
    tokensPerSecond: T / (ms / 1000),
    allocatedMiB: (allocatedBytes() - before) / 2 ** 20,
    trainableParameters: prepared.trainableParameters,
    adapter,
  };
  trainer.dispose();
  prepared.destroy();
  return result;
}

// The frozen model's forward + backward (input gradients only, no weight gradients): LoRA's yardstick.
async function timeFrozen(T: number): Promise<number> {
  const g = createGraph(gpu, base, { B: 1, T, training: true, trainable: NO_BASE });
  const batch = batchFor(T, 0);
  const buckets = bucketTokens(batch.tokens, V);
  upload(gpu, g.inputs.tokens, batch.tokens);
  upload(gpu, g.inputs.targets, batch.targets);
  upload(gpu, g.inputs.weights, new Float32Array(T).fill(1 / T));
  upload(gpu, g.inputs.bucketIds, buckets.ids);
  upload(gpu, g.inputs.bucketStart, buckets.start);
  upload(gpu, g.inputs.bucketPositions, buckets.positions);
  const rec = new Recorder(gpu, "frozen fwd+bwd");
  await recordForward(rec, g);
  await recordBackward(rec, g);
  await rec.submit();
  await gpu.device.queue.onSubmittedWorkDone();
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) await rec.submit();
  await gpu.device.queue.onSubmittedWorkDone();
  const ms = (performance.now() - t0) / steps;
  destroyGraph(g);
  return ms;
}

const calibration = Array.from({ length: 4 }, (_, i) => batchFor(Math.min(512, maxT), 100 + i));
for (const T of lengths) {
  for (const method of methods) {
    if (method.name === "baseline") continue; // nothing trains; the frozen forward+backward below stands in
    const ctx = { gpu, base, baseValues: values, trainLength: T, maxLength: T, seed: 1, calibration };
    const r = await timeMethod(method.name, T, () => method.prepare(ctx, method.config.parse({})));
    results.push(r);
    if (!json) {
      console.log(
        `${r.name.padEnd(9)} T ${String(T).padStart(5)}: ${r.msPerStep.toFixed(1).padStart(8)} ms/step ` +
          `${r.tokensPerSecond.toFixed(0).padStart(6)} tokens/s  ${
            r.allocatedMiB.toFixed(1).padStart(7)
          } MiB  ` +
          `${r.trainableParameters} trainable`,
      );
    }
  }
}

const ratios: Record<string, number> = {};
const lora = METHODS.find((m) => m.name === "lora")!;
const T0 = Math.min(...lengths);
const frozenMs = await timeFrozen(T0);
const loraAt = (T: number) => results.find((r) => r.name === "lora" && r.T === T);
const loraMs = loraAt(T0)?.msPerStep ??
  (await timeMethod("lora", T0, () =>
    lora.prepare(
      { gpu, base, baseValues: values, trainLength: T0, maxLength: T0, seed: 1 },
      lora.config.parse({}),
    ))).msPerStep;
ratios[`lora step / frozen fwd+bwd at T ${T0} (target ≤ 1.3)`] = loraMs / frozenMs;
const T1 = Math.max(...lengths);
const loraCtx = { gpu, base, baseValues: values, trainLength: T1, maxLength: T1, seed: 1 };
const causal = await timeMethod(
  "lora",
  T1,
  () => lora.prepare(loraCtx, lora.config.parse({})),
  "lora causal",
);
const s2 = await timeMethod("lora", T1, async () => ({
  ...(await lora.prepare(loraCtx, lora.config.parse({}))),
  trainMask: { mode: "shifted-groups" as const, groupSize: T1 / 4 },
}), "lora S²-Attn");
results.push(causal, s2);
ratios[`S²-Attn step / causal step at T ${T1} (target ≤ 0.5)`] = s2.msPerStep / causal.msPerStep;

if (json) {
  console.log(JSON.stringify({ adapter, results, frozenMs, ratios }, null, 2));
} else {
  console.log(`adapter: ${adapter}; frozen forward+backward at T ${T0}: ${frozenMs.toFixed(1)} ms`);
  console.log(
    `lora causal T ${T1}: ${causal.msPerStep.toFixed(0)} ms; S²-Attn: ${s2.msPerStep.toFixed(0)} ms`,
  );
  for (const [k, v] of Object.entries(ratios)) console.log(`${k}: ${v.toFixed(2)}`);
}
