/**
 * Greedy generation as the evaluations use it (benchmarks spec §1.1 step 2, §2.3): the prompt — with
 * the task's answer prefix already appended by the caller, since RULER sends `input + answer_prefix` as
 * a prefill of the assistant turn — is prefilled, then tokens are chosen by argmax until a budget
 * (`tokens_to_generate`: NIAH 128, VT 30, CWE 120, FWE 50, QA 32; BABILong 20), an end-of-sequence token
 * or a stop string. Upstream RULER uses no stop words; they are here for tasks that want them.
 *
 * Decoding runs on the device with a KV cache (src/model/decode.ts): tokens are read back every
 * `readEvery` steps to check the stops, so up to readEvery − 1 steps past a stop are computed and thrown
 * away; the returned tokens never depend on readEvery.
 *
 * What comes back when generation stops:
 * - `eos`: the tokens before the end-of-sequence token (it is not included, and not in the text);
 * - `stop`: the tokens up to and including the one that completed the earliest stop string, and the text
 *   cut just before that stop string (which may begin inside an earlier token);
 * - `budget`: all maxNewTokens tokens and their text.
 */
import type { Tokenizer } from "../data/tokenizer.ts";
import type { Gpu } from "../gpu/device.ts";
import type { Adapter } from "../model/adapter.ts";
import { createDecoder, type Decoder } from "../model/decode.ts";
import type { GraphOptions } from "../model/model.ts";
import type { ModelWeights } from "../model/weights.ts";

/** The model a generator runs: base weights, a method's adapter (or none) and its evaluation mask. */
export interface GenerationModel {
  weights: ModelWeights;
  adapter: Adapter | null;
  evalMask?: GraphOptions["mask"];
}

/** Options of a generator. */
export interface GeneratorOptions {
  /** Longest prompt + generated tokens (sizes the KV cache). */
  maxLength: number;
  /** Decode steps per submit between readbacks of the generated tokens (default 8). */
  readEvery?: number;
  /** Keys per split of the decode attention (default from maxLength). */
  keysPerSplit?: number;
}

/** One generation request. */
export interface GenerateOptions {
  /** At most this many new tokens (the task's tokens_to_generate). */
  maxNewTokens: number;
  /** Stop strings: generation ends at the first one to appear; the text is cut before it. */
  stop?: string[];
  tokenizer: Tokenizer;
  /** End-of-sequence token id (not included in the result). */
  eosId?: number;
}

/** What one generation produced. */
export interface GenerationResult {
  tokens: number[];
  text: string;
  stoppedBy: "stop" | "budget" | "eos";
  promptTokens: number;
  /** Wall time of the prefill (and the first token), to the device's completion. */
  prefillMs: number;
  /** Wall time of the remaining decode steps and readbacks. */
  decodeMs: number;
}

/** A generator: reuse it for every prompt of a run, then destroy it. */
export interface Generator {
  generate(prompt: ArrayLike<number>, o: GenerateOptions): Promise<GenerationResult>;
  /** Whether decoding uses the KV cache (false: every token recomputes the sequence; see decode.ts). */
  readonly incremental: boolean;
  destroy(): void;
}

/** The first stop of `generated` under the rules in the file comment, or null. */
export function findStop(
  generated: readonly number[],
  from: number,
  o: Pick<GenerateOptions, "stop" | "tokenizer" | "eosId">,
): { tokens: number[]; text: string; stoppedBy: "stop" | "eos" } | null {
  const stops = o.stop ?? [];
  for (let i = from; i < generated.length; i++) {
    if (o.eosId !== undefined && generated[i] === o.eosId) {
      const tokens = generated.slice(0, i);
      return { tokens, text: o.tokenizer.decode(tokens), stoppedBy: "eos" };
    }
    if (stops.length === 0) continue;
    const tokens = generated.slice(0, i + 1);
    const text = o.tokenizer.decode(tokens);
    let cut = -1;
    for (const s of stops) {
      const at = text.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) return { tokens, text: text.slice(0, cut), stoppedBy: "stop" };
  }
  return null;
}

/**
 * A greedy generator with a KV cache for `model`; pipelines, caches and buffers are reused across prompts.
 * @example
 * const gen = createGenerator(gpu, { weights, adapter: null }, { maxLength: 4096 });
 * const { text } = await gen.generate(tokenizer.encode(input + answerPrefix), { maxNewTokens: 128, tokenizer });
 * gen.destroy();
 */
export function createGenerator(gpu: Gpu, model: GenerationModel, opts: GeneratorOptions): Generator {
  const readEvery = opts.readEvery ?? 8;
  if (!Number.isInteger(readEvery) || readEvery < 1) {
    throw new RangeError(`generate: readEvery = ${readEvery} must be a positive integer`);
  }
  const decoder: Decoder = createDecoder(gpu, model, {
    maxLength: opts.maxLength,
    keysPerSplit: opts.keysPerSplit,
  });
  return {
    incremental: decoder.incremental,
    async generate(prompt, o) {
      const { maxNewTokens } = o;
      if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) {
        throw new RangeError(`generate: maxNewTokens = ${maxNewTokens} must be an integer ≥ 0`);
      }
      if (o.stop?.some((s) => s.length === 0)) {
        throw new RangeError("generate: stop strings must not be empty (an empty string matches at once)");
      }
      const V = model.weights.dims.V;
      if (o.eosId !== undefined && !(Number.isInteger(o.eosId) && o.eosId >= 0 && o.eosId < V)) {
        throw new RangeError(`generate: eosId = ${o.eosId} is not a token id in 0 … ${V - 1}`);
      }
      const promptTokens = prompt.length;
      if (maxNewTokens === 0) {
        return { tokens: [], text: "", stoppedBy: "budget", promptTokens, prefillMs: 0, decodeMs: 0 };
      }
      const t0 = performance.now();
      await decoder.start(prompt, maxNewTokens);
      await gpu.device.queue.onSubmittedWorkDone();
      const t1 = performance.now();
      const generated: number[] = [];
      for (;;) {
        const count = Math.min(readEvery, maxNewTokens - decoder.generated);
        if (count > 0) await decoder.step(count);
        const checkedUpTo = generated.length;
        generated.push(...await decoder.tokens(generated.length));
        const stop = findStop(generated, checkedUpTo, o);
        if (stop || generated.length >= maxNewTokens) {
          const decodeMs = performance.now() - t1;
          const result = stop ??
            { tokens: generated, text: o.tokenizer.decode(generated), stoppedBy: "budget" };
          return { ...result, promptTokens, prefillMs: t1 - t0, decodeMs };
        }
      }
    },
    destroy() {
      decoder.destroy();
    },
  };
}
