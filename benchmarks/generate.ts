/**
 * Greedy generation speed with the KV cache (src/model/decode.ts) on the reference tiny model (GPT-2
 * family, 2 layers, d 128, 4 heads, byte vocabulary; `--family llama` for the Llama shape with GQA):
 * for prompts of 4K and 32K tokens, the prefill time (one forward over the prompt + copying k, v into the
 * cache + the first token) and the time per decode token (`--steps` steps in one submit, timed to the
 * device's completion, after one warm step). Decode attention reads every cached key once, so a step is
 * O(T): the 32K step should cost at most ~8× the 4K one (less where the fixed per-step work of the
 * linears and the LM head dominates) and a tiny fraction of a 32K prefill (O(T²) attention).
 * `--json` prints only a JSON array; `--lengths 4096,32768` and `--steps 16` change the run.
 */
import { getGpu } from "../src/gpu/device.ts";
import { allocatedBytes } from "../src/gpu/tensor.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { createDecoder } from "../src/model/decode.ts";
import { createWeights, initialWeights } from "../src/model/weights.ts";
import { Rng } from "../src/random/philox.ts";

function arg(name: string, fallback: string): string {
  const at = Deno.args.indexOf(`--${name}`);
  return at >= 0 ? Deno.args[at + 1] ?? fallback : fallback;
}

const json = Deno.args.includes("--json");
const lengths = arg("lengths", "4096,32768").split(",").map(Number);
const steps = Number(arg("steps", "16"));
const family = arg("family", "gpt2");
const V = 257; // 256 bytes + <|endoftext|>
const maxLength = Math.max(...lengths) + steps + 2;

const config = parseModelConfig(
  family === "llama"
    ? {
      family,
      vocabSize: V,
      maxPositions: maxLength,
      nLayer: 2,
      nHead: 4,
      nKvHead: 2,
      nEmbd: 128,
      nInner: 352,
    }
    : { family: "gpt2", vocabSize: V, maxPositions: maxLength, nLayer: 2, nHead: 4, nEmbd: 128 },
);
const gpu = await getGpu();
const weights = createWeights(gpu, config, initialWeights(config, 1337));
const decoder = createDecoder(gpu, { weights, adapter: null }, { maxLength });
const rng = new Rng(7);
const prompt = (T: number) => Array.from({ length: T }, () => rng.int(256));
const done = () => gpu.device.queue.onSubmittedWorkDone();

// Warm-up: pipeline compilation of the prefill and the step.
await decoder.start(prompt(64), 3);
await decoder.step(2);
await decoder.tokens();

interface Result {
  name: string;
  shape: string;
  promptTokens: number;
  prefillMs: number;
  decodeMsPerToken: number;
  decodeTokensPerSecond: number;
  steps: number;
  adapter: string;
}

const results: Result[] = [];
for (const T of lengths) {
  const t0 = performance.now();
  await decoder.start(prompt(T), steps + 2);
  await done();
  const prefillMs = performance.now() - t0;
  await decoder.step(1);
  await done();
  const t1 = performance.now();
  await decoder.step(steps);
  await done();
  const decodeMsPerToken = (performance.now() - t1) / steps;
  const tokens = await decoder.tokens();
  if (tokens.length !== steps + 2) throw new Error(`expected ${steps + 2} tokens, read ${tokens.length}`);
  results.push({
    name: `greedy decode ${family}`,
    shape: `L2 C128 H4 V${V} B1`,
    promptTokens: T,
    prefillMs,
    decodeMsPerToken,
    decodeTokensPerSecond: 1000 / decodeMsPerToken,
    steps,
    adapter: gpu.adapter.description,
  });
}
decoder.destroy();

if (json) {
  console.log(JSON.stringify(results));
} else {
  console.log(
    `adapter: ${gpu.adapter.description}; GPU memory allocated: ${
      (allocatedBytes() / 2 ** 20).toFixed(0)
    } MiB`,
  );
  for (const r of results) {
    console.log(
      `${r.name} [${r.shape}] prompt ${r.promptTokens}: prefill ${r.prefillMs.toFixed(0)} ms, decode ` +
        `${r.decodeMsPerToken.toFixed(2)} ms/token (${
          r.decodeTokensPerSecond.toFixed(1)
        } tokens/s, ${r.steps} steps ` +
        `in one submit)`,
    );
  }
  if (results.length >= 2) {
    const [a, b] = [results[0], results[results.length - 1]];
    console.log(
      `per-token decode ${b.promptTokens} vs ${a.promptTokens}: ${
        (b.decodeMsPerToken / a.decodeMsPerToken).toFixed(2)
      }× ` +
        `(context ${
          (b.promptTokens / a.promptTokens).toFixed(0)
        }× longer); a ${b.promptTokens} prefill costs ` +
        `${(b.prefillMs / b.decodeMsPerToken).toFixed(0)} decode tokens`,
    );
  }
}
