/**
 * Perplexity under the three windowing protocols that published long-context numbers use
 * (benchmarks spec §4). They differ in how much left context each scored token gets, so a perplexity
 * is only comparable with one computed under the same protocol, window, stride and tokenizer; the
 * report carries the parsed protocol for that reason.
 *
 * - `sliding`: Hugging Face's "perplexity of fixed-length models" (§4.2). Windows of `window` tokens
 *   start every `stride` tokens; each window scores only the tokens the previous window did not reach,
 *   so with stride < window every token after the first gets at least window − stride tokens of context.
 *   The recipe's code weights each later window's mean loss by trg_len − 1 although such a window holds
 *   trg_len targets; here every target's log-probability is summed once, so the total is exact.
 * - `rolling`: lm-eval's `loglikelihood_rolling` (§4.3): `get_rolling_token_windows(context_len=1)`
 *   plus `make_disjoint_window`. Disjoint blocks of `maxLength` targets; the first block is conditioned
 *   on a prefix token (EOS/BOS), every later block on the one token before it, and the last block is
 *   right-aligned so that it has a full window of context. Context resets at every block.
 * - `longlora`: LongLoRA's `eval.py` (§4.4): windows of `seqLen` tokens starting every `stride` (256)
 *   tokens, the last start dropped, every position of every window scored (labels = inputs). Tokens
 *   are scored many times and early positions of each window have little context. eval.py averages
 *   per batch (its last batch may be smaller) and raises 2.71828 to the loss; here the mean is over
 *   windows, which all hold seqLen − 1 targets, and the exponential is exact.
 *
 * Units (§4.5) with ℒ the summed natural-log NLL: token PPL exp(ℒ/targets), word PPL exp(ℒ/W), byte PPL
 * exp(ℒ/B), bits per byte ℒ/(B ln 2). Over several documents the sums are pooled first, as lm-eval's
 * `weighted_perplexity` and `bits_per_byte` aggregations do; a mean of per-document perplexities would
 * weight a short document as much as a long one.
 */

import { z } from "zod";
import type { Tokenizer } from "../data/tokenizer.ts";

/**
 * The contract between the evaluation protocols and a model (the GPU model implements it).
 *
 * `score(tokens, firstTarget)` returns, for every i in [firstTarget, tokens.length), the natural log
 * of the model's probability of `tokens[i]` given exactly `tokens[0..i)` — nothing before `tokens[0]`,
 * no BOS the caller did not put there, no state carried from an earlier call. Element j of the result
 * belongs to position firstTarget + j, so the result has tokens.length − firstTarget entries, each
 * finite and ≤ 0. A causal model computes all of them in one forward pass over tokens[0..length − 1):
 * the last token is only ever a target, never an input.
 *
 * Callers guarantee 1 ≤ firstTarget ≤ tokens.length ≤ maxContext. The result must depend only on
 * (tokens, firstTarget) — the same call returns the same numbers — which is what lets a protocol's
 * perplexity be reproduced bit for bit.
 */
export interface LogProbScorer {
  /**
   * The longest `tokens` array `score` accepts. A model with P positions that feeds tokens[0..length − 1)
   * may declare P + 1.
   */
  readonly maxContext: number;
  /** log p(tokens[i] | tokens[0..i)) for i in [firstTarget, tokens.length). */
  score(tokens: readonly number[], firstTarget: number): Promise<Float64Array>;
}

const positiveInt = z.number().int().positive();

/** The three protocols' options; `kind` selects one. */
export const perplexityProtocolSchema = z.discriminatedUnion("kind", [
  z.object({
    kind: z.literal("sliding"),
    /** Tokens per window (HF's `max_length`); each scorer call gets at most this many. */
    window: z.number().int().min(2),
    /** Tokens between window starts; stride = window gives disjoint windows. */
    stride: positiveInt,
  }).superRefine((o, ctx) => {
    if (o.stride > o.window) {
      ctx.addIssue({
        code: "custom",
        path: ["stride"],
        message: `stride ${o.stride} must be ≤ window ${o.window} (a larger stride would skip tokens)`,
      });
    }
  }),
  z.object({
    kind: z.literal("rolling"),
    /** Targets per window (lm-eval's model `max_length`); scorer calls get up to maxLength + 1 tokens. */
    maxLength: positiveInt,
    /** Token the first window is conditioned on (lm-eval's `prefix_token_id`: EOS, or BOS). */
    prefixToken: z.number().int().min(0),
  }),
  z.object({
    kind: z.literal("longlora"),
    /** Tokens per window (`--seq_len`). */
    seqLen: z.number().int().min(2),
    /** Tokens between window starts (`sliding_window`, 256 in eval.py). */
    stride: positiveInt.default(256),
  }),
]);

/** A parsed protocol. */
export type PerplexityProtocol = z.output<typeof perplexityProtocolSchema>;
/** What callers pass as a protocol (defaults filled in by the schema). */
export type PerplexityProtocolInput = z.input<typeof perplexityProtocolSchema>;

/**
 * One scorer call of a protocol: the sequence is `[prefixToken]` (when `prefix`) followed by
 * document tokens [start, end); positions [firstTarget, sequence length) are scored.
 */
export interface PerplexityWindow {
  start: number;
  end: number;
  prefix: boolean;
  firstTarget: number;
}

/** Parses a protocol and checks it against the scorer's context; errors name the bad value. */
export function parsePerplexityProtocol(
  protocol: PerplexityProtocolInput,
  maxContext: number,
): PerplexityProtocol {
  if (!Number.isInteger(maxContext) || maxContext < 2) {
    throw new RangeError(`perplexity: the scorer's maxContext ${maxContext} must be an integer ≥ 2`);
  }
  const parsed = perplexityProtocolSchema.safeParse(protocol);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join(".") || "protocol"}: ${i.message}`);
    throw new RangeError(`perplexity protocol: ${detail.join("; ")}`);
  }
  const p = parsed.data;
  const longest = p.kind === "sliding" ? p.window : p.kind === "rolling" ? p.maxLength + 1 : p.seqLen;
  if (longest > maxContext) {
    const what = p.kind === "sliding"
      ? `window ${p.window}`
      : p.kind === "rolling"
      ? `maxLength ${p.maxLength} (windows of ${longest} tokens: one context token + ${p.maxLength} targets)`
      : `seqLen ${p.seqLen}`;
    throw new RangeError(
      `perplexity protocol ${p.kind}: ${what} exceeds the scorer's maxContext ${maxContext}`,
    );
  }
  return p;
}

/**
 * The scorer calls a protocol makes on a document of `length` tokens, in order. Windows with no
 * target (a one-token document under `sliding`) are left out.
 * @example perplexityWindows({ kind: "sliding", window: 4, stride: 2 }, 10)
 */
export function perplexityWindows(protocol: PerplexityProtocol, length: number): PerplexityWindow[] {
  const windows: PerplexityWindow[] = [];
  if (protocol.kind === "sliding") {
    const { window, stride } = protocol;
    let previousEnd = 0;
    for (let begin = 0; begin < length; begin += stride) {
      const end = Math.min(begin + window, length);
      // HF labels the last end − previousEnd positions; the model's one-token shift drops position 0,
      // which has no context inside the window (the document's first token, and with stride = window
      // the first token of every window, is never scored).
      const targetCount = end - previousEnd;
      const firstTarget = Math.max(1, end - begin - targetCount);
      if (firstTarget < end - begin) windows.push({ start: begin, end, prefix: false, firstTarget });
      previousEnd = end;
      if (end === length) break;
    }
  } else if (protocol.kind === "rolling") {
    const { maxLength } = protocol;
    if (length === 0) return windows;
    const first = Math.min(maxLength, length);
    windows.push({ start: 0, end: first, prefix: true, firstTarget: 1 });
    for (let predicted = first; predicted < length;) {
      const count = Math.min(length - predicted, maxLength);
      const end = predicted + count;
      // make_disjoint_window keeps maxLength + 1 − count tokens of context before the targets.
      windows.push({ start: end - maxLength - 1, end, prefix: false, firstTarget: maxLength + 1 - count });
      predicted = end;
    }
  } else {
    const { seqLen, stride } = protocol;
    const starts: number[] = [];
    for (let begin = 0; begin < length - seqLen; begin += stride) starts.push(begin);
    // eval.py pops the last start of range(0, N − seq_len, stride).
    starts.pop();
    for (const begin of starts) {
      windows.push({ start: begin, end: begin + seqLen, prefix: false, firstTarget: 1 });
    }
  }
  return windows;
}

/** What one document contributed. */
export interface DocumentPerplexity {
  /** Σ −log p over every scored target (natural log). */
  nll: number;
  /** Log-probabilities summed: each scored token once, except under `longlora` (once per window). */
  targets: number;
  /** Tokens of the document. */
  tokens: number;
  /** Document tokens never scored (the first token under `sliding`; the tail beyond the last `longlora` window). */
  unscored: number;
  windows: number;
  /** Word count, as lm-eval counts it (see `lmEvalWordCount`) unless the document gave its own. */
  words: number;
  /** UTF-8 bytes of the original text. */
  bytes: number;
}

/** Pooled result over documents. Word and byte figures are null under `longlora`, which scores tokens repeatedly. */
export interface PerplexityReport {
  protocol: PerplexityProtocol;
  documents: DocumentPerplexity[];
  nll: number;
  targets: number;
  tokens: number;
  unscored: number;
  words: number;
  bytes: number;
  tokenPerplexity: number;
  wordPerplexity: number | null;
  bytePerplexity: number | null;
  bitsPerByte: number | null;
}

/** A document to evaluate. */
export interface PerplexityDocument {
  /** The text the model scores (for WikiText: the detokenised page). */
  text: string;
  /** The text words and bytes are counted on (lm-eval: the page before detokenisation); default `text`. */
  original?: string;
  /** An official word count (PG-19's) replacing the lm-eval count. */
  words?: number;
}

// Python's `str.isspace` set, which is what `re.split(r"\s+", …)` splits on; JavaScript's `\s` differs
// (it adds U+FEFF and misses U+001C–U+001F and U+0085). The control characters are intended.
const PYTHON_WHITESPACE_RUN =
  // deno-lint-ignore no-control-regex
  /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/g;

/**
 * Words as lm-eval's wikitext task counts them: `len(re.split(r"\s+", text))`, the number of pieces
 * between whitespace runs, so leading or trailing whitespace adds an empty piece and "" counts 1.
 * @example lmEvalWordCount("héllo wörld\n") // 3
 */
export function lmEvalWordCount(text: string): number {
  return (text.match(PYTHON_WHITESPACE_RUN)?.length ?? 0) + 1;
}

const utf8 = new TextEncoder();

/** UTF-8 length of `text` in bytes. */
export function utf8ByteCount(text: string): number {
  return utf8.encode(text).length;
}

// float32 log-softmax can land a hair above 0 for a near-certain token.
const LOG_PROB_SLACK = 1e-5;

/**
 * Scores one tokenised document under a protocol; `words` and `bytes` are carried through.
 * @example await scoreDocument(scorer, tokenizer.encode(text), protocol, { words: 120, bytes: 640 })
 */
export async function scoreDocument(
  scorer: LogProbScorer,
  tokens: readonly number[],
  protocolInput: PerplexityProtocolInput,
  counts: { words: number; bytes: number },
): Promise<DocumentPerplexity> {
  const protocol = parsePerplexityProtocol(protocolInput, scorer.maxContext);
  const windows = perplexityWindows(protocol, tokens.length);
  const timesScored = new Uint32Array(tokens.length);
  let nll = 0;
  let targets = 0;
  for (let w = 0; w < windows.length; w++) {
    const { start, end, prefix, firstTarget } = windows[w];
    const body = tokens.slice(start, end);
    const sequence = prefix && protocol.kind === "rolling" ? [protocol.prefixToken, ...body] : body;
    const offset = start - (prefix ? 1 : 0);
    const logProbs = await scorer.score(sequence, firstTarget);
    const expected = sequence.length - firstTarget;
    if (!(logProbs instanceof Float64Array) || logProbs.length !== expected) {
      throw new RangeError(
        `perplexity ${protocol.kind}: window ${w} (tokens ${start}…${end - 1}) expected ${expected} ` +
          `log-probabilities in a Float64Array, the scorer returned ${describeScorerOutput(logProbs)}`,
      );
    }
    for (let j = 0; j < expected; j++) {
      const logProb = logProbs[j];
      if (!Number.isFinite(logProb) || logProb > LOG_PROB_SLACK) {
        throw new RangeError(
          `perplexity ${protocol.kind}: window ${w}, position ${firstTarget + j} (document token ` +
            `${offset + firstTarget + j}): log p = ${logProb}; expected a finite value ≤ 0`,
        );
      }
      nll -= logProb;
      timesScored[offset + firstTarget + j]++;
    }
    targets += expected;
  }
  const unscored = timesScored.reduce((count, times) => count + (times === 0 ? 1 : 0), 0);
  return { nll, targets, tokens: tokens.length, unscored, windows: windows.length, ...counts };
}

function describeScorerOutput(value: unknown): string {
  if (value instanceof Float64Array) return `${value.length} values`;
  if (ArrayBuffer.isView(value) || Array.isArray(value)) {
    return `a ${value.constructor.name} of ${(value as ArrayLike<unknown>).length} values`;
  }
  return String(value);
}

/**
 * Pools per-document results the way lm-eval aggregates (Σ NLL / Σ units) into token-, word- and
 * byte-level perplexity and bits per byte.
 */
export function aggregatePerplexity(
  protocol: PerplexityProtocol,
  documents: readonly DocumentPerplexity[],
): PerplexityReport {
  const sum = (field: keyof DocumentPerplexity) => documents.reduce((s, d) => s + d[field], 0);
  const nll = sum("nll"), targets = sum("targets"), words = sum("words"), bytes = sum("bytes");
  if (targets === 0) {
    const hint = protocol.kind === "longlora"
      ? ` (longlora needs a document of more than seqLen + stride = ${
        protocol.seqLen + protocol.stride
      } tokens)`
      : "";
    throw new RangeError(
      `perplexity ${protocol.kind}: no token was scored in ${documents.length} document(s)${hint}`,
    );
  }
  const perUnit = protocol.kind !== "longlora";
  return {
    protocol,
    documents: [...documents],
    nll,
    targets,
    tokens: sum("tokens"),
    unscored: sum("unscored"),
    words,
    bytes,
    tokenPerplexity: Math.exp(nll / targets),
    wordPerplexity: perUnit && words > 0 ? Math.exp(nll / words) : null,
    bytePerplexity: perUnit && bytes > 0 ? Math.exp(nll / bytes) : null,
    bitsPerByte: perUnit && bytes > 0 ? nll / (bytes * Math.LN2) : null,
  };
}

/**
 * Tokenises and scores documents under a protocol and pools the result. Documents are scored
 * separately (context never crosses a document boundary); to score a concatenated stream as the HF
 * recipe and LongLoRA do, pass the joined text as one document.
 * @example
 * ```ts
 * const report = await evaluatePerplexity(scorer, tokenizer, [{ text }], { kind: "sliding", window: 1024, stride: 512 });
 * console.log(report.tokenPerplexity, report.bitsPerByte);
 * ```
 */
export async function evaluatePerplexity(
  scorer: LogProbScorer,
  tokenizer: Tokenizer,
  documents: readonly PerplexityDocument[],
  protocol: PerplexityProtocolInput,
): Promise<PerplexityReport> {
  const parsed = parsePerplexityProtocol(protocol, scorer.maxContext);
  if (documents.length === 0) throw new RangeError("evaluatePerplexity: no documents");
  const results: DocumentPerplexity[] = [];
  for (let d = 0; d < documents.length; d++) {
    const doc = documents[d];
    const original = doc.original ?? doc.text;
    if (doc.words !== undefined && !(Number.isInteger(doc.words) && doc.words >= 0)) {
      throw new RangeError(
        `evaluatePerplexity: document ${d} has words = ${doc.words}; expected an integer ≥ 0`,
      );
    }
    const counts = { words: doc.words ?? lmEvalWordCount(original), bytes: utf8ByteCount(original) };
    results.push(await scoreDocument(scorer, tokenizer.encode(doc.text), parsed, counts));
  }
  return aggregatePerplexity(parsed, results);
}
