/**
 * Kernel benchmarks: `deno task bench:kernels` prints a table; `--json` prints only a JSON array of
 * `{name, shape, ms, gflops, adapter}` on stdout. Each entry records its dispatches once, submits them
 * once to warm up (pipeline compilation, first-touch allocation), then replays the recording and
 * reports the median of several timed submits. Times come from timestamp queries where the adapter
 * has them (first pass's start to last pass's end), else from the wall clock to completion; readbacks
 * never fall inside the timed region. Other families add entries to `benchmarks` below.
 * `--filter TEXT` runs only the benchmarks whose name or shape contains TEXT.
 */
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, type Tensor } from "../src/gpu/tensor.ts";
import { matmul, type MatmulPath } from "../src/ops/matmul.ts";
import { fillUniform } from "../src/ops/random.ts";

/** One benchmark: a recording to replay, and the floating-point work it does (0 when not meaningful). */
interface Benchmark {
  name: string;
  shape: string;
  flops: number;
  /** How many identical ops the recording holds, for a time per op in the table. */
  ops?: number;
  /** Records the work into `rec` and returns the tensors to free afterwards. */
  record(gpu: Gpu, rec: Recorder): Promise<Tensor[]>;
}

interface Result {
  name: string;
  shape: string;
  ms: number;
  gflops: number | null;
  adapter: string;
}

const RUNS = 5;

async function randomTensor(gpu: Gpu, shape: number[], label: string, stream: number): Promise<Tensor> {
  const t = createTensor(gpu, shape, { label });
  const rec = new Recorder(gpu, `init ${label}`);
  await fillUniform(rec, t, -1, 1, { seed: 1, stream });
  await rec.submit();
  rec.destroy();
  return t;
}

function matmulBenchmark(M: number, K: number, N: number, path: MatmulPath): Benchmark {
  return {
    name: `matmul ${path}`,
    shape: M === K && K === N ? `${M}³` : `${M}×${K} · ${K}×${N}`,
    flops: 2 * M * K * N,
    async record(gpu, rec) {
      const a = await randomTensor(gpu, [M, K], "a", 0);
      const b = await randomTensor(gpu, [K, N], "b", 1);
      const out = createTensor(gpu, [M, N], { label: "out" });
      await matmul(rec, out, a, b, { path });
      return [a, b, out];
    },
  };
}

// A thousand tiny dispatches in one pass: the per-dispatch cost a training step pays ~100× over.
const dispatchOverhead: Benchmark = {
  name: "1000 small dispatches",
  shape: "1000 × matmul 8³ (storage)",
  flops: 0,
  ops: 1000,
  async record(gpu, rec) {
    const a = await randomTensor(gpu, [8, 8], "a", 0);
    const b = await randomTensor(gpu, [8, 8], "b", 1);
    const out = createTensor(gpu, [8, 8], { label: "out" });
    for (let i = 0; i < 1000; i++) await matmul(rec, out, a, b, { path: "storage" });
    return [a, b, out];
  },
};

const matmulShapes: [number, number, number][] = [[256, 256, 256], [1024, 1024, 1024], [4096, 256, 1024]];

/** Every benchmark, in the order the table shows them. */
export const benchmarks: Benchmark[] = [
  ...matmulShapes.flatMap(([M, K, N]) =>
    (["texture", "storage"] as const).map((path) => matmulBenchmark(M, K, N, path))
  ),
  dispatchOverhead,
];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function run(gpu: Gpu, bench: Benchmark): Promise<{ result: Result; source: string }> {
  const rec = new Recorder(gpu, bench.name);
  const tensors = await bench.record(gpu, rec);
  await rec.submit();
  await gpu.device.queue.onSubmittedWorkDone();
  const times: number[] = [];
  let source = "wall";
  for (let i = 0; i < RUNS; i++) {
    const timed = await rec.submitTimed();
    times.push(timed.ms);
    source = timed.source;
  }
  rec.destroy();
  for (const t of tensors) t.buffer.destroy();
  const ms = median(times);
  const adapter = gpu.adapter.description || `${gpu.adapter.vendor} ${gpu.adapter.architecture}`.trim();
  const gflops = bench.flops > 0 ? bench.flops / (ms * 1e6) : null;
  return { result: { name: bench.name, shape: bench.shape, ms, gflops, adapter }, source };
}

async function main(): Promise<void> {
  const json = Deno.args.includes("--json");
  const at = Deno.args.indexOf("--filter");
  const filter = at >= 0 ? Deno.args[at + 1] ?? "" : "";
  const chosen = benchmarks.filter((b) => `${b.name} ${b.shape}`.includes(filter));
  const gpu = await getGpu();
  const results: Result[] = [];
  const sources = new Set<string>();
  if (!json) {
    console.log(`adapter: ${gpu.adapter.description} (software: ${gpu.software}); median of ${RUNS} runs`);
  }
  for (const bench of chosen) {
    const { result, source } = await run(gpu, bench);
    results.push(result);
    sources.add(source);
    if (!json) console.log(tableRow(result, bench));
  }
  if (json) {
    console.log(JSON.stringify(results, null, 2));
    return;
  }
  const timing = [...sources].map((s) => s === "timestamp" ? "timestamp queries" : "wall clock");
  console.log(`timing: ${timing.join(", ")}`);
}

function tableRow(result: Result, bench: Benchmark): string {
  const rate = result.gflops !== null
    ? `${result.gflops.toFixed(2).padStart(8)} GFLOP/s`
    : bench.ops
    ? `${(result.ms * 1000 / bench.ops).toFixed(1).padStart(8)} µs per op`
    : "";
  const ms = result.ms.toFixed(2).padStart(10);
  return `${result.name.padEnd(24)} ${result.shape.padEnd(28)} ${ms} ms ${rate}`;
}

if (import.meta.main) await main();
