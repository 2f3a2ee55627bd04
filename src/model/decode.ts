/**
 * Greedy decoding with a KV cache, for both families, with a fine-tuning method's adapter attached.
 *
 * A prompt of T tokens is prefilled by the model's own forward (createGraph with B = 1, the adapter and
 * the evaluation mask; recordForward with logitsOnly), and each layer's k and v (post-RoPE for Llama) are
 * copied into a per-layer cache of (Hkv, maxLength, D). Then each decode step feeds one token at position p:
 *   x = wte[token] (+ wpe[p])                         written by the previous step's argmax
 *   per layer: norm → qkv (1 row) → split → RoPE at p → cache row p ← k, v
 *              → attention of the 1 query over keys 0 … p (decodeAttention) → merge → attnOut (+ residual)
 *              → norm → MLP (+ residual)
 *   final norm → logits (1, V) → argmax → the next token, its embedding and p + 1, all on the device.
 * Adapter hooks run exactly where the graph runs them (linearForward on 1-row linears, attention() for
 * the per-head logit scale and sink, mixOutput, finalNorm), attached with T = 1 and a `positions` tensor
 * that holds p on the device. p and the step counter live in a (2,) u32 state buffer that the argmax
 * advances, so one recorded step replays for every position: k steps are k encodes of one recording in
 * one submit, with no readback between them, and the tokens come back from a history buffer whenever
 * the caller reads. The same kernels run whatever k is, so the tokens never depend on it.
 *
 * Fallback: an adapter with `incremental === false` (rows that depend on other rows beyond what the KV
 * cache holds) or an evaluation mask other than causal gets no cache: every token recomputes the whole
 * forward over the growing sequence (a new graph per token, O(T²) per token — slow, but exact). The
 * `turns` mask needs per-token turn ids that generation does not have and is refused.
 *
 * RoPE: the decode tables cover maxLength positions. Dynamic NTK follows Hugging Face's decode: the prompt
 * is rotated with the base for its length T, and the token at p with the base for length p + 1 (cached
 * keys keep the rotation they were made with), so its tokens can differ from a full recompute, whose
 * every key uses the base of the whole length. The other scalings do not depend on the length.
 */
import { checked, type Gpu } from "../gpu/device.ts";
import { Recorder } from "../gpu/recorder.ts";
import { createTensor, numel, readTensors, type Tensor, tensorFrom, upload } from "../gpu/tensor.ts";
import { geluForward, swigluForward } from "../ops/activation.ts";
import { argmaxNext, argmaxRows, type GreedyState } from "../ops/argmax.ts";
import { appendKv, createKvCache, decodeAttention, type KvCache } from "../ops/decode_attention.ts";
import { splitHeads } from "../ops/heads.ts";
import { matmul } from "../ops/matmul.ts";
import { layernormForward, rmsnormForward } from "../ops/norm.ts";
import { ropeForward, type RopeTableTensors, uploadRopeTables } from "../ops/rope.ts";
import { type Adapter, type AdapterHooks, headSite, type LinearName } from "./adapter.ts";
import { createGraph, destroyGraph, type Graph, type GraphOptions, recordForward } from "./model.ts";
import { ropeFrequencies, type RopeScalingInput, type RopeTables, ropeTables } from "./rope_scaling.ts";
import { type ModelWeights, viewOf } from "./weights.ts";

/** What is decoded: base weights, the method's adapter (or none) and its evaluation mask. */
export interface DecodeModel {
  weights: ModelWeights;
  adapter: Adapter | null;
  evalMask?: GraphOptions["mask"];
}

/** Options of a decoder. */
export interface DecoderOptions {
  /** Longest prompt + generated tokens; sizes the KV cache (and, for GPT-2, at most the position table). */
  maxLength: number;
  /** Keys per split of the decode attention (default from maxLength; see decodeKeysPerSplit). */
  keysPerSplit?: number;
}

/** One sequence's greedy decoding on the device. */
export interface Decoder {
  readonly maxLength: number;
  /** False when every token recomputes the whole forward (see the file comment). */
  readonly incremental: boolean;
  /** Tokens generated in the current sequence, read back or not. */
  readonly generated: number;
  /**
   * Prefills `prompt` and generates its first token (on the device). `maxNewTokens` ≥ 1 bounds what
   * `step` may add; prompt length + maxNewTokens must not exceed maxLength.
   */
  start(prompt: ArrayLike<number>, maxNewTokens: number): Promise<void>;
  /** Generates `count` more tokens in one submit (no readback on the cached path). */
  step(count: number): Promise<void>;
  /** The generated tokens from index `from` on (one readback). */
  tokens(from?: number): Promise<number[]>;
  /** (V,) the logits that chose the latest token (prefill's last row, or the last step's). For tests. */
  logits(): Promise<Float32Array>;
  destroy(): void;
}

/**
 * RoPE tables for decoding positions 0 … P − 1: row p rotates by the frequencies of a sequence of p + 1
 * tokens (only dynamic NTK depends on that; the other scalings give ropeTables(config, D, P)).
 */
export function decodeRopeTables(config: RopeScalingInput, D: number, P: number): RopeTables {
  if (config.type !== "dynamic") return ropeTables(config, D, P);
  // Up to L_orig tokens the base is unscaled; past it, row p uses the base for p + 1 tokens.
  const L = config.originalMaxPositions ?? P;
  const tables = ropeTables(config, D, P, Math.min(P, L));
  const half = D / 2;
  for (let pos = L; pos < P; pos++) {
    const { invFreq, attentionFactor } = ropeFrequencies(config, D, pos + 1);
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i];
      tables.cos[pos * half + i] = attentionFactor * Math.cos(angle);
      tables.sin[pos * half + i] = attentionFactor * Math.sin(angle);
    }
  }
  return tables;
}

/** Activations of one decode step (one row each). */
interface StepBuffers {
  ln: Tensor;
  lnMean: Tensor;
  lnRstd: Tensor;
  qkv: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  qPre: Tensor | null;
  kPre: Tensor | null;
  o: Tensor;
  att: Tensor;
  r1: Tensor;
  fc: Tensor;
  up: Tensor | null;
  hidden: Tensor;
  logits: Tensor;
  logitScale: Tensor;
}

function checkPrompt(prompt: ArrayLike<number>, V: number): void {
  if (prompt.length < 1) {
    throw new RangeError("decode: the prompt is empty; generation needs at least one token");
  }
  for (let i = 0; i < prompt.length; i++) {
    const t = prompt[i];
    if (!Number.isInteger(t) || t < 0 || t >= V) {
      throw new RangeError(`decode: prompt[${i}] = ${t} is not a token id in 0 … ${V - 1}`);
    }
  }
}

/**
 * A decoder for `model` with caches for `opts.maxLength` tokens; pipelines, caches and step buffers are
 * reused across prompts (the prefill graph too, while prompts keep their length).
 * @example
 * const decoder = createDecoder(gpu, { weights, adapter: null }, { maxLength: 4096 });
 * await decoder.start(prompt, 32); await decoder.step(31); const tokens = await decoder.tokens();
 */
export function createDecoder(gpu: Gpu, model: DecodeModel, opts: DecoderOptions): Decoder {
  const { weights, adapter } = model;
  const maxT = weights.dims.maxT;
  const maxLength = opts.maxLength;
  const family = weights.config.family;
  if (!Number.isInteger(maxLength) || maxLength < 1) {
    throw new RangeError(`decode: maxLength = ${maxLength} must be a positive integer`);
  }
  if (family === "gpt2" && maxLength > maxT) {
    throw new RangeError(
      `decode: maxLength = ${maxLength} exceeds the GPT-2 model's ${maxT} learned positions (maxPositions)`,
    );
  }
  const maskMode = model.evalMask?.mode ?? "causal";
  if (maskMode === "turns") {
    throw new RangeError(
      `decode: evalMask mode "turns" needs per-token turn ids, which generation does not have; ` +
        `evaluate with a causal mask`,
    );
  }
  const incremental = adapter?.incremental !== false && maskMode === "causal";
  return incremental ? cachedDecoder(gpu, model, opts) : recomputeDecoder(gpu, model, maxLength);
}

// Budget bookkeeping shared by both paths.
class Budget {
  generated = 0;
  limit = 0;
  constructor(readonly maxLength: number) {}
  begin(promptLength: number, maxNewTokens: number): void {
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
      throw new RangeError(`decode: maxNewTokens = ${maxNewTokens} must be an integer ≥ 1`);
    }
    if (promptLength + maxNewTokens > this.maxLength) {
      throw new RangeError(
        `decode: a prompt of ${promptLength} tokens + maxNewTokens ${maxNewTokens} = ` +
          `${promptLength + maxNewTokens} exceeds maxLength ${this.maxLength}`,
      );
    }
    this.limit = maxNewTokens;
    this.generated = 0;
  }
  take(count: number): void {
    if (this.limit === 0) throw new Error("decode: step() before start()");
    if (!Number.isInteger(count) || count < 1 || this.generated + count > this.limit) {
      throw new RangeError(
        `decode: step(${count}) would generate ${
          this.generated + count
        } tokens; start() allowed ${this.limit}`,
      );
    }
  }
}

function cachedDecoder(gpu: Gpu, model: DecodeModel, opts: DecoderOptions): Decoder {
  const { weights, adapter } = model;
  const { V, C, L, H, Hkv, D, F } = weights.dims;
  const maxLength = opts.maxLength;
  const config = weights.config;
  const llama = config.family === "llama";
  const QKV = (H + 2 * Hkv) * D;
  const owned: Tensor[] = [];
  const make = (shape: number[], label: string, dtype: "f32" | "u32" = "f32") => {
    const t = createTensor(gpu, shape, { label, dtype });
    owned.push(t);
    return t;
  };
  const caches: KvCache[] = Array.from({ length: L }, (_, l) => {
    const cache = createKvCache(gpu, Hkv, maxLength, D, `kv.${l}`);
    owned.push(cache.k, cache.v);
    return cache;
  });
  const greedy: GreedyState = {
    x: make([1, C], "decode.x"),
    history: make([maxLength], "decode.history", "u32"),
    state: make([2], "decode.state", "u32"),
  };
  // The hooks and RoPE read p from the state's first element.
  const position: Tensor = { ...greedy.state, shape: [1], label: "decode.position" };
  const buf: StepBuffers = {
    ln: make([1, C], "decode.ln"),
    lnMean: make([1], "decode.lnMean"),
    lnRstd: make([1], "decode.lnRstd"),
    qkv: make([1, 1, QKV], "decode.qkv"),
    q: make([1, H, 1, D], "decode.q"),
    k: make([1, Hkv, 1, D], "decode.k"),
    v: make([1, Hkv, 1, D], "decode.v"),
    qPre: llama ? make([1, H, 1, D], "decode.qPre") : null,
    kPre: llama ? make([1, Hkv, 1, D], "decode.kPre") : null,
    o: make([1, H, 1, D], "decode.o"),
    att: make([1, 1, H * D], "decode.att"),
    r1: make([1, C], "decode.r1"),
    fc: make([1, F], "decode.fc"),
    up: llama ? make([1, F], "decode.up") : null,
    hidden: make([1, F], "decode.hidden"),
    logits: make([1, V], "decode.logits"),
    logitScale: tensorFrom(gpu, [H], new Float32Array(H).fill(1 / Math.sqrt(D)), {
      label: "decode.logitScale",
    }),
  };
  owned.push(buf.logitScale);
  const rope: RopeTableTensors | null = config.family === "llama"
    ? uploadRopeTables(gpu, decodeRopeTables(config.rope, D, maxLength), "decode.rope")
    : null;
  if (rope) owned.push(rope.cos, rope.sin);
  // What an adapter carries from the prompt to the steps (freed with the decoder).
  const adapterState = new Map<string, Tensor>();
  const hooks: AdapterHooks = adapter
    ? adapter.attach({
      B: 1,
      T: 1,
      dims: weights.dims,
      family: weights.config.family,
      training: false,
      weights,
      grads: null,
      positions: position,
      lossWeights: make([1], "decode.lossWeights"),
      decode: { phase: "step", state: adapterState },
    })
    : {};
  const p = (name: string) => viewOf(weights.params, weights.table, name);
  const wte = p("wte");
  const wpe = llama ? null : p("wpe");
  const head = p(weights.dims.tied ? "wte" : "lmHead.w");
  const row = (t: Tensor): Tensor => ({ ...t, shape: [1, numel(t.shape)] });

  async function norm(rec: Recorder, out: Tensor, x: Tensor, prefix: string): Promise<void> {
    if (config.family === "llama") {
      await rmsnormForward(rec, out, buf.lnRstd, x, p(`${prefix}.w`), 1, C, { eps: config.rmsEps });
    } else {
      await layernormForward(rec, out, buf.lnMean, buf.lnRstd, x, p(`${prefix}.w`), p(`${prefix}.b`), 1, C, {
        eps: config.lnEps,
      });
    }
  }

  // y (1, out) [+]= x·Wᵀ [+ b], then the adapter's term, as the graph's `linear`.
  async function linear(
    rec: Recorder,
    y: Tensor,
    x: Tensor,
    layer: number,
    name: LinearName,
    accumulate = false,
  ) {
    const w = p(`h.${layer}.${name}.w`);
    await matmul(rec, row(y), row(x), w, {
      transB: true,
      accumulate,
      bias: llama ? undefined : p(`h.${layer}.${name}.b`),
    });
    if (hooks.linearForward) {
      await hooks.linearForward(rec, { layer, name, inDim: w.shape[1], outDim: w.shape[0] }, row(y), row(x));
    }
  }

  async function recordStep(rec: Recorder): Promise<void> {
    const x = greedy.x;
    for (let l = 0; l < L; l++) {
      await norm(rec, buf.ln, x, `h.${l}.ln1`);
      await linear(rec, buf.qkv, buf.ln, l, "qkv");
      if (llama) {
        await splitHeads(rec, buf.qPre!, buf.kPre!, buf.v, buf.qkv);
        await ropeForward(rec, buf.q, buf.qPre!, rope!, position);
        await ropeForward(rec, buf.k, buf.kPre!, rope!, position);
      } else {
        await splitHeads(rec, buf.q, buf.k, buf.v, buf.qkv);
      }
      await appendKv(rec, caches[l], buf.k, buf.v, position);
      const ap = hooks.attention ? await hooks.attention(rec, l) : {};
      // With one row, o (1, H, 1, D) and the merged heads (1, 1, H·D) share a layout: without a mix hook
      // the attention writes `att` directly.
      const mixed = !!hooks.mixOutput;
      await decodeAttention(
        rec,
        mixed ? buf.o : buf.att,
        {
          q: buf.q,
          cache: caches[l],
          logitScale: ap.logitScale ?? buf.logitScale,
          sinkLogit: ap.sinkLogit,
          position,
        },
        { keysPerSplit: opts.keysPerSplit },
      );
      if (mixed) {
        await hooks.mixOutput!(rec, l, { o: buf.o, qPre: llama ? buf.qPre! : buf.q, v: buf.v, att: buf.att });
      }
      rec.copy(buf.r1, x);
      await linear(rec, buf.r1, buf.att, l, "attnOut", true);
      await norm(rec, buf.ln, buf.r1, `h.${l}.ln2`);
      rec.copy(x, buf.r1);
      if (llama) {
        await linear(rec, buf.fc, buf.ln, l, "gate");
        await linear(rec, buf.up!, buf.ln, l, "up");
        await swigluForward(rec, buf.hidden, buf.fc, buf.up!);
        await linear(rec, x, buf.hidden, l, "down", true);
      } else {
        await linear(rec, buf.fc, buf.ln, l, "fc");
        await geluForward(rec, buf.hidden, buf.fc);
        await linear(rec, x, buf.hidden, l, "fcProj", true);
      }
    }
    await norm(rec, buf.ln, x, "lnf");
    if (hooks.finalNorm) await hooks.finalNorm(rec, buf.ln);
    await matmul(rec, buf.logits, buf.ln, head, { transB: true });
    if (hooks.linearForward) await hooks.linearForward(rec, headSite(weights.dims), buf.logits, buf.ln);
    await argmaxNext(rec, greedy, buf.logits, wte, wpe);
  }

  let stepRecorder: Recorder | null = null;
  let prefill: { T: number; graph: Graph; rec: Recorder } | null = null;
  const budget = new Budget(maxLength);
  // Which logits chose the latest token: the prefill graph's last row or the step's.
  let lastLogits: Tensor = buf.logits;

  async function prefillFor(T: number) {
    if (prefill?.T === T) return prefill;
    dropPrefill();
    const graph = createGraph(gpu, weights, {
      B: 1,
      T,
      training: false,
      adapter: adapter ?? undefined,
      mask: model.evalMask,
      decode: { phase: "prefill", state: adapterState },
    });
    const rec = new Recorder(gpu, `prefill T=${T}`);
    await recordForward(rec, graph, { logitsOnly: true });
    const bytesPerHead = (rows: number) => rows * D * 4;
    for (let l = 0; l < L; l++) {
      const block = graph.blocks[l];
      for (const [from, to] of [[block.k, caches[l].k], [block.v, caches[l].v]] as const) {
        for (let h = 0; h < Hkv; h++) {
          rec.copy(
            { ...to, offset: to.offset + h * bytesPerHead(maxLength), shape: [T, D] },
            { ...from, offset: from.offset + h * bytesPerHead(T), shape: [T, D] },
          );
        }
      }
    }
    await argmaxNext(rec, greedy, graph.logits, wte, wpe, { row: T - 1 });
    prefill = { T, graph, rec };
    return prefill;
  }

  function dropPrefill() {
    if (!prefill) return;
    prefill.rec.destroy();
    destroyGraph(prefill.graph);
    prefill = null;
  }

  return {
    maxLength,
    incremental: true,
    get generated() {
      return budget.generated;
    },
    async start(prompt, maxNewTokens) {
      checkPrompt(prompt, V);
      const T = prompt.length;
      budget.begin(T, maxNewTokens);
      const run = await prefillFor(T);
      upload(gpu, run.graph.inputs.tokens, prompt);
      upload(gpu, greedy.state, [T - 1, 0]);
      await run.rec.submit();
      budget.generated = 1;
      lastLogits = { ...run.graph.logits, offset: run.graph.logits.offset + (T - 1) * V * 4, shape: [V] };
    },
    async step(count) {
      budget.take(count);
      if (!stepRecorder) {
        stepRecorder = new Recorder(gpu, "decode step");
        await recordStep(stepRecorder);
      }
      const rec = stepRecorder;
      await checked(gpu, `decode ${count} step(s) [${rec.describe()}]`, () => {
        const encoder = gpu.device.createCommandEncoder({ label: "decode steps" });
        for (let i = 0; i < count; i++) rec.encode(encoder);
        gpu.device.queue.submit([encoder.finish()]);
      });
      budget.generated += count;
      lastLogits = buf.logits;
    },
    async tokens(from = 0) {
      const n = budget.generated - from;
      if (n <= 0) return [];
      const view: Tensor = { ...greedy.history, offset: greedy.history.offset + from * 4, shape: [n] };
      return [...(await readTensors(gpu, [view]))[0]];
    },
    async logits() {
      return (await readTensors(gpu, [lastLogits]))[0] as Float32Array;
    },
    destroy() {
      dropPrefill();
      stepRecorder?.destroy();
      hooks.destroy?.();
      for (const t of [...owned, ...adapterState.values()]) t.buffer.destroy();
    },
  };
}

// The slow path: a fresh graph over the whole sequence for every token.
function recomputeDecoder(gpu: Gpu, model: DecodeModel, maxLength: number): Decoder {
  const { weights, adapter } = model;
  const V = weights.dims.V;
  const budget = new Budget(maxLength);
  const next = createTensor(gpu, [1], { label: "decode.next", dtype: "u32" });
  let sequence: number[] = [];
  let generated: number[] = [];
  let last: { graph: Graph; T: number } | null = null;

  async function one(): Promise<void> {
    const T = sequence.length;
    if (last) destroyGraph(last.graph);
    last = null;
    const graph = createGraph(gpu, weights, {
      B: 1,
      T,
      training: false,
      adapter: adapter ?? undefined,
      mask: model.evalMask,
    });
    last = { graph, T };
    upload(gpu, graph.inputs.tokens, sequence);
    const rec = new Recorder(gpu, `recompute T=${T}`);
    try {
      await recordForward(rec, graph, { logitsOnly: true });
      await argmaxRows(rec, next, graph.logits, { firstRow: T - 1 });
      await rec.submit();
    } finally {
      rec.destroy();
    }
    const token = (await readTensors(gpu, [next]))[0][0];
    sequence.push(token);
    generated.push(token);
    budget.generated++;
  }

  return {
    maxLength,
    incremental: false,
    get generated() {
      return budget.generated;
    },
    async start(prompt, maxNewTokens) {
      checkPrompt(prompt, V);
      budget.begin(prompt.length, maxNewTokens);
      sequence = Array.from(prompt);
      generated = [];
      await one();
    },
    async step(count) {
      budget.take(count);
      for (let i = 0; i < count; i++) await one();
    },
    tokens(from = 0) {
      return Promise.resolve(generated.slice(from));
    },
    async logits() {
      if (!last) throw new Error("decode: logits() before start()");
      const { graph, T } = last;
      const rowView: Tensor = { ...graph.logits, offset: graph.logits.offset + (T - 1) * V * 4, shape: [V] };
      return (await readTensors(gpu, [rowView]))[0] as Float32Array;
    },
    destroy() {
      if (last) destroyGraph(last.graph);
      last = null;
      next.buffer.destroy();
    },
  };
}
