/**
 * Attention speed: forward and forward + backward at T = 512, 2048, 8192 (B = 1, H = 1, D = 32), causal
 * and shifted groups (S²-Attn with G = T/4: heads h < H/2 plain groups, the rest shifted; with H = 1 the one
 * head is a shifted-groups head, so the run also uses H = 2 to time both halves).
 *
 * FLOPs are counted honestly, as the visible (query, key) pairs times the work per pair: the forward does
 * q·k and p·v, 4·D FLOPs per visible pair (causal: 4·D·T(T+1)/2 ≈ 4·T²·D/2); the backward recomputes q·k
 * and does dO·v, dS·k, dS·q and p·dO, 10·D per pair. GPU time comes from timestamp queries
 * (`Recorder.submitTimed`), else wall time to completion.
 *
 *   deno run --allow-read --allow-write --allow-env benchmarks/attention.ts [--json] [--quick]
 *
 * `--quick` stops at T = 2048.
 */
import { getGpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, type Tensor, tensorFrom } from "../src/gpu/tensor.ts";
import { attentionBackward, attentionForward, type AttentionMode, headModes } from "../src/ops/attention.ts";
import { fillNormal as fillNormalGpu } from "../src/ops/random.ts";

interface Row {
  name: string;
  shape: { B: number; H: number; T: number; D: number; G?: number };
  ms: number;
  gflops: number;
  adapter: string;
}

const json = Deno.args.includes("--json");
const quick = Deno.args.includes("--quick");
const gpu = await getGpu();
const adapter = `${gpu.adapter.description || gpu.adapter.device || gpu.adapter.vendor}` +
  (gpu.software ? " (software)" : "");

/** Visible (query, key) pairs of one head under a mode, counted from the definitions. */
function visiblePairs(mode: AttentionMode, T: number, G: number): number {
  if (mode === "causal") return (T * (T + 1)) / 2;
  if (mode === "groups") return (T / G) * (G * (G + 1)) / 2;
  if (mode === "groups-shifted") {
    const half = G / 2;
    return 2 * (half * (half + 1)) / 2 + (T / G - 1) * (G * (G + 1)) / 2;
  }
  return T * T;
}

async function timeRecorder(rec: Recorder, repeats: number): Promise<number> {
  await rec.submitTimed(); // warm-up: pipelines and first-touch costs
  let best = Infinity;
  for (let r = 0; r < repeats; r++) best = Math.min(best, (await rec.submitTimed()).ms);
  return best;
}

async function bench(layer: "causal" | "shifted-groups", T: number, H: number): Promise<Row[]> {
  const B = 1, D = 32, Hkv = H;
  const G = layer === "shifted-groups" ? T / 4 : undefined;
  const modes = headModes(H, layer);
  const made: Tensor[] = [];
  const t = (shape: number[], label: string) => {
    const x = createTensor(gpu, shape, { label });
    made.push(x);
    return x;
  };
  const q = t([B, H, T, D], "q"), k = t([B, Hkv, T, D], "k"), v = t([B, Hkv, T, D], "v");
  const dO = t([B, H, T, D], "dO"), o = t([B, H, T, D], "o"), lse = t([B, H, T], "lse");
  const dq = t([B, H, T, D], "dq"), dk = t([B, Hkv, T, D], "dk"), dv = t([B, Hkv, T, D], "dv");
  const dScale = t([H], "dScale");
  const logitScale = tensorFrom(gpu, [H], new Array(H).fill(1 / Math.sqrt(D)), { label: "logitScale" });
  made.push(logitScale);
  const init = new Recorder(gpu, "init");
  for (const [i, x] of [q, k, v, dO].entries()) await fillNormalGpu(init, x, 0, 1, { seed: 1, stream: i });
  await init.submit();
  const mask = { modes, groupSize: G };
  const fwd = new Recorder(gpu, `attention forward ${layer} T=${T}`);
  await attentionForward(fwd, { o, lse }, { q, k, v, logitScale }, mask);
  const both = new Recorder(gpu, `attention forward+backward ${layer} T=${T}`);
  await attentionForward(both, { o, lse }, { q, k, v, logitScale }, mask);
  await attentionBackward(both, { dq, dk, dv, dScale }, { q, k, v, o, lse, dO, logitScale }, mask);
  const repeats = T >= 8192 ? 1 : 3;
  const msF = await timeRecorder(fwd, repeats);
  const msFB = await timeRecorder(both, repeats);
  fwd.destroy();
  both.destroy();
  for (const x of made) x.buffer.destroy();
  const pairs = modes.reduce((sum, m) => sum + visiblePairs(m, T, G ?? T), 0) * B;
  const shape = { B, H, T, D, ...(G ? { G } : {}) };
  return [
    { name: `forward ${layer}`, shape, ms: msF, gflops: (4 * D * pairs) / (msF * 1e6), adapter },
    { name: `forward+backward ${layer}`, shape, ms: msFB, gflops: (14 * D * pairs) / (msFB * 1e6), adapter },
  ];
}

const rows: Row[] = [];
for (const T of quick ? [512, 2048] : [512, 2048, 8192]) {
  for (const [layer, H] of [["causal", 1], ["shifted-groups", 1], ["shifted-groups", 2]] as const) {
    const got = await bench(layer, T, H);
    rows.push(...got);
    if (!json) {
      for (const r of got) {
        console.log(
          `${r.name.padEnd(32)} T=${String(T).padStart(5)} H=${H} D=32${
            r.shape.G ? ` G=${r.shape.G}` : ""
          }: ` +
            `${r.ms.toFixed(1).padStart(9)} ms  ${r.gflops.toFixed(2).padStart(6)} GFLOP/s`,
        );
      }
    }
  }
}
if (json) {
  console.log(JSON.stringify(rows));
} else {
  console.log(`adapter: ${adapter}`);
  for (const T of quick ? [512, 2048] : [512, 2048, 8192]) {
    const causal = rows.find((r) => r.name === "forward+backward causal" && r.shape.T === T)!;
    const groups = rows.find((r) =>
      r.name === "forward+backward shifted-groups" && r.shape.T === T && r.shape.H === 1
    )!;
    console.log(
      `T=${T}: shifted groups (G = T/4) forward+backward cost ${
        (groups.ms / causal.ms).toFixed(2)
      }× causal ` +
        `(target ≤ 0.5×)`,
    );
  }
}
