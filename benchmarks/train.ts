/**
 * Training throughput of the reference config (GPT-2 family, 2 layers, d 128, 4 heads, T 512, byte
 * vocabulary, batch 1): tokens/s of a full optimizer step (forward, loss, backward, gradient norm,
 * AdamW — one recording, one submit per step), the submits per step, and the GPU memory longtune
 * allocated. `--json` prints only a JSON array of results; `--T`, `--steps`, `--family llama`,
 * `--recompute` change the run.
 *
 * Target (issue 3): ≥ 2,000 tokens/s on a 2-core machine's llvmpipe adapter.
 */
import { getGpu } from "../src/gpu/device.ts";
import { allocatedBytes } from "../src/gpu/tensor.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { createWeights, initialWeights } from "../src/model/weights.ts";
import { Rng } from "../src/random/philox.ts";
import { type HostBatch, Trainer } from "../src/train/trainer.ts";

function arg(name: string, fallback: string): string {
  const at = Deno.args.indexOf(`--${name}`);
  return at >= 0 ? Deno.args[at + 1] ?? fallback : fallback;
}

const json = Deno.args.includes("--json");
const T = Number(arg("T", "512"));
const steps = Number(arg("steps", "8"));
const family = arg("family", "gpt2");
const recompute = Deno.args.includes("--recompute");
const V = 257; // 256 bytes + <|endoftext|>

const config = parseModelConfig(
  family === "llama"
    ? { family, vocabSize: V, maxPositions: T, nLayer: 2, nHead: 4, nKvHead: 2, nEmbd: 128, nInner: 352 }
    : { family: "gpt2", vocabSize: V, maxPositions: T, nLayer: 2, nHead: 4, nEmbd: 128 },
);
const gpu = await getGpu();
const weights = createWeights(gpu, config, initialWeights(config, 1337));
const trainer = await Trainer.create(gpu, weights, {
  B: 1,
  T,
  optimizer: { lr: 1e-3, maxGradNorm: 1 },
  recompute,
});
const rng = new Rng(7);
const batch = (): HostBatch => {
  const stream = Array.from({ length: T + 1 }, () => rng.int(256));
  return { tokens: Uint32Array.from(stream.slice(0, T)), targets: Int32Array.from(stream.slice(1)) };
};

// Warm-up: pipeline compilation and first-touch allocation.
await trainer.step(batch());
await trainer.losses();
const batches = Array.from({ length: steps }, batch);
const t0 = performance.now();
for (const b of batches) await trainer.step(b);
await gpu.device.queue.onSubmittedWorkDone();
const ms = (performance.now() - t0) / steps;
const losses = await trainer.losses();

const result = {
  name: `train step ${family}${recompute ? " (recompute)" : ""}`,
  shape: `L2 C128 H4 T${T} V${V} B1`,
  ms,
  tokensPerSecond: T / (ms / 1000),
  submitsPerStep: 1,
  gpuBytes: allocatedBytes(),
  finalLoss: losses[losses.length - 1],
  adapter: gpu.adapter.description,
};
if (json) console.log(JSON.stringify([result]));
else {
  console.log(`adapter: ${result.adapter}`);
  console.log(
    `${result.name} [${result.shape}]: ${ms.toFixed(1)} ms/step, ${
      result.tokensPerSecond.toFixed(0)
    } tokens/s`,
  );
  console.log(
    `submits per step: 1; GPU memory allocated by longtune: ${(result.gpuBytes / 2 ** 20).toFixed(1)} MiB`,
  );
  console.log(
    `loss after ${losses.length} steps: ${result.finalLoss.toFixed(4)} (random bytes: ln 256 = 5.545)`,
  );
}
