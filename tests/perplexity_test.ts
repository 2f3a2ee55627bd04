// The perplexity protocols against toy models whose answers are worked out by hand: a model whose
// log-probability depends only on how many tokens precede the target, a bigram model on a known
// sequence, and a uniform byte model for the word/byte conversions.

import assert from "node:assert/strict";
import { byteTokenizer } from "../src/data/tokenizers.ts";
import {
  evaluatePerplexity,
  lmEvalWordCount,
  type LogProbScorer,
  parsePerplexityProtocol,
  type PerplexityProtocolInput,
  perplexityWindows,
  scoreDocument,
} from "../src/eval/perplexity.ts";

function near(got: number | null, want: number, what: string, tolerance = 1e-12): void {
  assert.ok(got !== null, `${what}: got null, want ${want}`);
  assert.ok(
    Math.abs(got - want) <= tolerance * Math.max(1, Math.abs(want)),
    `${what}: got ${got}, want ${want} (difference ${got - want})`,
  );
}

interface Call {
  tokens: number[];
  firstTarget: number;
}

/** Checks the scorer contract on every call and records it. */
function contractScorer(
  maxContext: number,
  logProb: (tokens: readonly number[], position: number) => number,
): LogProbScorer & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    maxContext,
    calls,
    score(tokens, firstTarget) {
      if (tokens.length > maxContext) throw new Error(`called with ${tokens.length} > ${maxContext} tokens`);
      if (firstTarget < 1 || firstTarget > tokens.length) throw new Error(`firstTarget ${firstTarget}`);
      calls.push({ tokens: [...tokens], firstTarget });
      const out = new Float64Array(tokens.length - firstTarget);
      for (let i = firstTarget; i < tokens.length; i++) out[i - firstTarget] = logProb(tokens, i);
      return Promise.resolve(out);
    },
  };
}

// log p(target | c tokens of context) = −1/(c + 1): more context, lower loss, and every protocol's total
// NLL is a sum of unit fractions over the context lengths it gives its targets.
const byContext = (maxContext: number) =>
  contractScorer(maxContext, (_tokens, position) => -1 / (position + 1));

const PREFIX = 1000;
// Document token i has id i, so a recorded call says exactly which document tokens were targets.
const positions = (n: number) => Array.from({ length: n }, (_, i) => i);

/** How many times each document token was a target, and the context length it had each time. */
function coverage(calls: Call[], n: number): { times: number[]; contexts: number[][] } {
  const times = new Array(n).fill(0);
  const contexts: number[][] = Array.from({ length: n }, () => []);
  for (const { tokens, firstTarget } of calls) {
    for (let i = firstTarget; i < tokens.length; i++) {
      times[tokens[i]]++;
      contexts[tokens[i]].push(i);
    }
  }
  return { times, contexts };
}

async function scoreIds(scorer: LogProbScorer, n: number, protocol: PerplexityProtocolInput) {
  const parsed = parsePerplexityProtocol(protocol, scorer.maxContext);
  return await scoreDocument(scorer, positions(n), parsed, { words: 1, bytes: 1 });
}

Deno.test("sliding window (HF): windows, targets and NLL of a 10-token document worked by hand", async () => {
  // window 4, stride 2: [0,4) scores tokens 1–3 (context 1, 2, 3); then each window scores the two
  // tokens the previous one did not reach, with context 2 and 3.
  assert.deepEqual(
    perplexityWindows(parsePerplexityProtocol({ kind: "sliding", window: 4, stride: 2 }, 8), 10),
    [
      { start: 0, end: 4, prefix: false, firstTarget: 1 },
      { start: 2, end: 6, prefix: false, firstTarget: 2 },
      { start: 4, end: 8, prefix: false, firstTarget: 2 },
      { start: 6, end: 10, prefix: false, firstTarget: 2 },
    ],
  );
  const strided = byContext(8);
  const result = await scoreIds(strided, 10, { kind: "sliding", window: 4, stride: 2 });
  // 1/2 + 1/3 + 1/4 + 3·(1/3 + 1/4) = 17/6 over 9 targets.
  near(result.nll, 17 / 6, "NLL, window 4 stride 2");
  assert.equal(result.targets, 9);
  assert.equal(result.unscored, 1, "only the first token has no context");
  const { times, contexts } = coverage(strided.calls, 10);
  assert.deepEqual(times, [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
  assert.deepEqual(contexts.map((c) => c[0] ?? null), [null, 1, 2, 3, 2, 3, 2, 3, 2, 3]);

  // stride = window: disjoint windows; the first token of each window has no context and is skipped
  // (the model's label shift drops it), as HF's code does at stride 1024 = max_length.
  const disjoint = byContext(8);
  const apart = await scoreIds(disjoint, 10, { kind: "sliding", window: 4, stride: 4 });
  near(apart.nll, 8 / 3, "NLL, window 4 stride 4"); // 2·(1/2 + 1/3 + 1/4) + 1/2
  assert.equal(apart.targets, 7);
  assert.deepEqual(coverage(disjoint.calls, 10).times, [0, 1, 1, 1, 0, 1, 1, 1, 0, 1]);
  // More context per token: the strided perplexity is lower.
  near(Math.exp(result.nll / result.targets), Math.exp(17 / 54), "token PPL, stride 2");
  near(Math.exp(apart.nll / apart.targets), Math.exp(8 / 21), "token PPL, stride 4");
  assert.ok(17 / 54 < 8 / 21);
});

Deno.test("rolling windows (lm-eval): prefix token, disjoint blocks, right-aligned last block", async () => {
  // maxLength 4 over 10 tokens: [P, 0..3] scores 0–3; [3..7] scores 4–7 after one context token;
  // the last block scores 8, 9 right-aligned in a full window [5..9] (context 3 and 4).
  const protocol = parsePerplexityProtocol({ kind: "rolling", maxLength: 4, prefixToken: PREFIX }, 5);
  assert.deepEqual(perplexityWindows(protocol, 10), [
    { start: 0, end: 4, prefix: true, firstTarget: 1 },
    { start: 3, end: 8, prefix: false, firstTarget: 1 },
    { start: 5, end: 10, prefix: false, firstTarget: 3 },
  ]);
  const scorer = byContext(5);
  const result = await scoreIds(scorer, 10, protocol);
  // 2·(1/2 + 1/3 + 1/4 + 1/5) + 1/4 + 1/5 = 181/60 over all 10 tokens.
  near(result.nll, 181 / 60, "NLL, rolling maxLength 4");
  assert.equal(result.targets, 10);
  assert.equal(result.unscored, 0);
  assert.deepEqual(scorer.calls[0].tokens, [PREFIX, 0, 1, 2, 3]);
  const { times, contexts } = coverage(scorer.calls, 10);
  assert.deepEqual(times, new Array(10).fill(1));
  assert.deepEqual(contexts.map((c) => c[0]), [1, 2, 3, 4, 1, 2, 3, 4, 3, 4]);

  // The same longest call (5 tokens) as a sliding window with stride 1 gives every token after the
  // fourth a full 4-token context: 1/2 + 1/3 + 1/4 + 1/5 + 5·(1/5) = 137/60 over 9 targets.
  const sliding = await scoreIds(byContext(5), 10, { kind: "sliding", window: 5, stride: 1 });
  near(sliding.nll, 137 / 60, "NLL, sliding window 5 stride 1");
  assert.ok(137 / 60 / 9 < 181 / 60 / 10, "the sliding window gives more context than disjoint blocks");

  // A document shorter than one block is a single prefixed window.
  assert.deepEqual(perplexityWindows(protocol, 3), [{ start: 0, end: 3, prefix: true, firstTarget: 1 }]);
  assert.deepEqual(perplexityWindows(protocol, 0), []);
});

Deno.test("LongLoRA: starts range(0, N − seqLen, stride) minus the last, every position scored", async () => {
  const protocol = parsePerplexityProtocol({ kind: "longlora", seqLen: 4, stride: 2 }, 4);
  // range(0, 6, 2) = [0, 2, 4]; eval.py pops 4.
  assert.deepEqual(perplexityWindows(protocol, 10), [
    { start: 0, end: 4, prefix: false, firstTarget: 1 },
    { start: 2, end: 6, prefix: false, firstTarget: 1 },
  ]);
  const scorer = byContext(4);
  const result = await scoreIds(scorer, 10, protocol);
  near(result.nll, 13 / 6, "NLL, longlora seqLen 4 stride 2"); // 2·(1/2 + 1/3 + 1/4)
  assert.equal(result.targets, 6);
  assert.deepEqual(coverage(scorer.calls, 10).times, [0, 1, 1, 2, 1, 1, 0, 0, 0, 0]);
  assert.equal(result.unscored, 5);
  // The default stride is eval.py's 256: N = seqLen + 256 leaves one start, which is popped.
  const defaults = parsePerplexityProtocol({ kind: "longlora", seqLen: 4 }, 4);
  assert.equal(defaults.kind === "longlora" && defaults.stride, 256);
  assert.deepEqual(perplexityWindows(defaults, 260), []);
  assert.equal(perplexityWindows(defaults, 261).length, 1);
});

Deno.test("every token is scored exactly once by sliding (stride < window) and rolling windows", async () => {
  for (const n of [1, 2, 7, 31, 64, 65]) {
    for (const [window, stride] of [[2, 1], [5, 2], [8, 3], [8, 7], [16, 4]]) {
      const scorer = byContext(16);
      const result = await scoreIds(scorer, n, { kind: "sliding", window, stride });
      const { times, contexts } = coverage(scorer.calls, n);
      const what = `sliding n=${n} window=${window} stride=${stride}`;
      assert.deepEqual(times, positions(n).map((i) => i === 0 ? 0 : 1), what);
      assert.equal(result.targets, Math.max(0, n - 1), what);
      // As much left context as the window allows: at least window − stride, or all of it.
      contexts.forEach((c, i) => {
        if (i > 0) assert.ok(c[0] >= Math.min(i, window - stride), `${what}: token ${i} had context ${c[0]}`);
      });
    }
    for (const maxLength of [1, 3, 8, 15]) {
      const scorer = byContext(16);
      const result = await scoreIds(scorer, n, { kind: "rolling", maxLength, prefixToken: PREFIX });
      const what = `rolling n=${n} maxLength=${maxLength}`;
      assert.deepEqual(coverage(scorer.calls, n).times, new Array(n).fill(1), what);
      assert.equal(result.targets, n, what);
      assert.ok(scorer.calls.every((c) => c.tokens.length <= maxLength + 1), `${what}: call length`);
    }
  }
});

Deno.test("bigram model: rolling windows keep the one token of context a bigram needs", async () => {
  // p(1|0) = 1, p(2|1) = 3/4, p(0|1) = 1/4, p(0|2) = 1, p(x|prefix 3) = 1/3.
  const bigram: Record<string, number> = { "0>1": 1, "1>2": 3 / 4, "1>0": 1 / 4, "2>0": 1, "3>0": 1 / 3 };
  const model = (maxContext: number) =>
    contractScorer(maxContext, (tokens, i) => {
      const p = bigram[`${tokens[i - 1]}>${tokens[i]}`];
      if (p === undefined) throw new Error(`bigram ${tokens[i - 1]}>${tokens[i]} has probability 0`);
      return Math.log(p);
    });
  const sequence = [0, 1, 2, 0, 1, 0, 1, 2];
  // Transitions 0>1, 1>2, 2>0, 0>1, 1>0, 0>1, 1>2: NLL 2·log(4/3) + log 4.
  const transitions = 2 * Math.log(4 / 3) + Math.log(4);
  for (const maxLength of [1, 2, 3, 8]) {
    const protocol = parsePerplexityProtocol({ kind: "rolling", maxLength, prefixToken: 3 }, 9);
    const result = await scoreDocument(model(9), sequence, protocol, { words: 1, bytes: 1 });
    near(result.nll, Math.log(3) + transitions, `rolling maxLength ${maxLength}`);
  }
  for (const [window, stride] of [[2, 1], [3, 2], [8, 8]]) {
    const protocol = parsePerplexityProtocol({ kind: "sliding", window, stride }, 9);
    const result = await scoreDocument(model(9), sequence, protocol, { words: 1, bytes: 1 });
    near(result.nll, transitions, `sliding window ${window} stride ${stride}`);
  }
  // Disjoint windows of 2 score only tokens 1, 3, 5, 7: transitions 0>1, 2>0, 1>0, 1>2.
  const disjoint = parsePerplexityProtocol({ kind: "sliding", window: 2, stride: 2 }, 9);
  const skipped = await scoreDocument(model(9), sequence, disjoint, { words: 1, bytes: 1 });
  near(skipped.nll, Math.log(4) + Math.log(4 / 3), "sliding window 2 stride 2");
  assert.equal(skipped.targets, 4);
});

Deno.test("word and byte units: lm-eval word counts, UTF-8 bytes, bits per byte", async () => {
  assert.equal(lmEvalWordCount("héllo wörld\n"), 3, "a trailing newline adds an empty piece");
  assert.equal(lmEvalWordCount(""), 1);
  assert.equal(lmEvalWordCount(" a  b"), 3);
  assert.equal(lmEvalWordCount("a\x1cb\ufeffc"), 2, "Python splits at U+001C, not at U+FEFF");

  const tokenizer = byteTokenizer();
  const uniform = contractScorer(9, () => -Math.log(256));
  const protocol = { kind: "rolling", maxLength: 8, prefixToken: 256 } as const;
  const report = await evaluatePerplexity(uniform, tokenizer, [{ text: "héllo wörld\n" }], protocol);
  // 14 UTF-8 bytes (é and ö take two), 14 byte tokens at log 256 each, 3 words.
  assert.deepEqual([report.tokens, report.bytes, report.words], [14, 14, 3]);
  near(report.nll, 14 * Math.log(256), "NLL");
  near(report.tokenPerplexity, 256, "token PPL");
  near(report.bytePerplexity, 256, "byte PPL");
  near(report.bitsPerByte, 8, "bits per byte");
  near(report.wordPerplexity, 256 ** (14 / 3), "word PPL");

  // WikiText: the model scores the detokenised text, words and bytes come from the original page.
  const wiki = await evaluatePerplexity(uniform, tokenizer, [{ text: "a-b", original: "a @-@ b" }], protocol);
  assert.deepEqual([wiki.tokens, wiki.bytes, wiki.words], [3, 7, 3]);
  near(wiki.bitsPerByte, (3 * 8) / 7, "bits per byte of the original");
  near(wiki.wordPerplexity, 256, "word PPL over the original's 3 words");
  // An official word count (PG-19) replaces the lm-eval count.
  const pg19 = await evaluatePerplexity(uniform, tokenizer, [{ text: "a-b", words: 6 }], protocol);
  near(pg19.wordPerplexity, 256 ** 0.5, "word PPL over 6 official words");
});

Deno.test("documents pool as Σ NLL / Σ units, not as a mean of per-document perplexities", async () => {
  const tokenizer = byteTokenizer();
  const protocol = { kind: "rolling", maxLength: 8, prefixToken: 256 } as const;
  const report = await evaluatePerplexity(
    byContext(9),
    tokenizer,
    [{ text: "a" }, { text: "bcd" }],
    protocol,
  );
  // "a": 1/2. "bcd": 1/2 + 1/3 + 1/4 = 13/12. Pooled: 19/12 over 4 tokens, 2 words, 4 bytes.
  near(report.documents[0].nll, 1 / 2, "NLL of a");
  near(report.documents[1].nll, 13 / 12, "NLL of bcd");
  near(report.tokenPerplexity, Math.exp(19 / 48), "pooled token PPL");
  near(report.wordPerplexity, Math.exp(19 / 24), "pooled word PPL");
  near(report.bitsPerByte, 19 / 12 / (4 * Math.LN2), "pooled bits per byte");
  const meanOfDocuments = (Math.exp(1 / 2) + Math.exp(13 / 12)) / 2;
  assert.ok(Math.abs(report.wordPerplexity! - meanOfDocuments) > 0.01, "differs from the mean of ratios");

  // LongLoRA scores tokens repeatedly, so only its token perplexity is defined.
  const long = await evaluatePerplexity(byContext(4), tokenizer, [{ text: "abcdefghij" }], {
    kind: "longlora",
    seqLen: 4,
    stride: 2,
  });
  near(long.tokenPerplexity, Math.exp(13 / 36), "longlora token PPL");
  assert.deepEqual([long.wordPerplexity, long.bytePerplexity, long.bitsPerByte], [null, null, null]);
  await assert.rejects(
    evaluatePerplexity(byContext(4), tokenizer, [{ text: "abcdef" }], {
      kind: "longlora",
      seqLen: 4,
      stride: 2,
    }),
    /no token was scored in 1 document\(s\) \(longlora needs a document of more than seqLen \+ stride = 6 tokens\)/,
  );
});

Deno.test("options and scorer output are validated with errors that name the bad value", async () => {
  assert.throws(
    () => parsePerplexityProtocol({ kind: "sliding", window: 4, stride: 5 }, 8),
    /stride: stride 5 must be ≤ window 4/,
  );
  assert.throws(
    () => parsePerplexityProtocol({ kind: "sliding", window: 9, stride: 4 }, 8),
    /sliding: window 9 exceeds the scorer's maxContext 8/,
  );
  assert.throws(
    () => parsePerplexityProtocol({ kind: "rolling", maxLength: 8, prefixToken: 0 }, 8),
    /maxLength 8 \(windows of 9 tokens: one context token \+ 8 targets\) exceeds the scorer's maxContext 8/,
  );
  assert.throws(() => parsePerplexityProtocol({ kind: "longlora", seqLen: 1 }, 8), /seqLen/);
  assert.throws(
    () => parsePerplexityProtocol({ kind: "beam" } as unknown as PerplexityProtocolInput, 8),
    /perplexity protocol/,
  );
  const protocol = parsePerplexityProtocol({ kind: "sliding", window: 4, stride: 2 }, 8);
  const short: LogProbScorer = { maxContext: 8, score: () => Promise.resolve(new Float64Array(1)) };
  await assert.rejects(
    scoreDocument(short, positions(10), protocol, { words: 1, bytes: 1 }),
    /window 0 \(tokens 0…3\) expected 3 log-probabilities in a Float64Array, the scorer returned 1 values/,
  );
  const broken = contractScorer(8, (_tokens, i) => i === 2 ? NaN : -1);
  await assert.rejects(
    scoreDocument(broken, positions(10), protocol, { words: 1, bytes: 1 }),
    /window 0, position 2 \(document token 2\): log p = NaN; expected a finite value ≤ 0/,
  );
});
