/**
 * Position sweeps (benchmarks spec §5.3): a length × depth grid of needle-in-a-haystack prompts in the
 * evaluated model's tokens, scored into an accuracy heatmap with Wilson intervals per cell.
 *
 * - Needle: RULER's key→value sentence ("One of the special magic numbers for amber-anchor is:
 *   4821937.") with a fresh word key and a random 7-digit value per sample, so the answer cannot come
 *   from parametric knowledge and is scored by exact match (`string_match_all`), not by a judge.
 * - Haystack: standalone sentences from `haystackSentences`; the needle goes before sentence
 *   ⌊n·depth⌋ of n (RULER's sentence-level rule; depth 1 appends it).
 * - Length: the largest sentence count whose prompt, answer prefix and generation budget fit the
 *   cell's length in the tokenizer's tokens, found by search as RULER does.
 * - Paired design: a sample's key, value, distractors and haystack stream depend only on (seed,
 *   sample index), so the cells of one sample index differ only in length and needle position, and a
 *   difference between cells is not a difference between random draws.
 * - Distractors: k near-miss needles whose keys share one word with the real key and carry other
 *   values, at fixed fractions of the haystack. Every sample records the token spans of the needle and
 *   of each distractor in the model input (input + answer prefix), for attention diagnostics.
 */

import { z } from "zod";
import { haystackSentences } from "../data/corpus.ts";
import { DEFAULT_TEMPLATES, singularNiahPrefix, stringMatchAll } from "../data/ruler.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { Rng } from "../random/philox.ts";
import { type Interval, wilsonInterval } from "./stats.ts";

/** Eleven depths 0, 0.1, …, 1 (§5.3). */
export const DEFAULT_SWEEP_DEPTHS: readonly number[] = Array.from({ length: 11 }, (_, i) => i / 10);

// The project's own key words; a key is "adjective-noun", so a near-miss shares one of the two.
const KEY_ADJECTIVES = (
  "amber brisk cobalt dusky eager frosty gilded hollow ivory jagged keen lofty mellow nimble ochre " +
  "placid quaint russet sable tawny umber velvet wistful zesty burnished crimson dappled fallow gaunt " +
  "hazel lucid murky"
).split(" ");
const KEY_NOUNS = (
  "anchor beacon cinder dagger ember falcon gourd hamlet inkwell jigsaw kestrel lattice marble nettle " +
  "oriole pewter quiver rampart saddle thistle urchin vessel walrus yarrow zither bramble cistern " +
  "dormouse flagon gable heron lichen"
).split(" ");

/** Distractors per sample at most; each swaps one word of the key for one of 31 others. */
export const MAX_SWEEP_DISTRACTORS = 32;

/** Options of `generatePositionSweep`. */
export const positionSweepSchema = z.object({
  /** Target lengths in the tokenizer's tokens (prompt + answer prefix + generation budget). */
  lengths: z.array(z.number().int().positive()).min(1),
  /** Needle depths as fractions of the haystack: 0 before the first sentence, 1 after the last. */
  depths: z.array(z.number().min(0).max(1)).min(1).default([...DEFAULT_SWEEP_DEPTHS]),
  samplesPerCell: z.number().int().positive(),
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** Near-miss needles per sample (0 for the plain sweep). */
  distractors: z.number().int().min(0).max(MAX_SWEEP_DISTRACTORS).default(0),
  /** Generation budget counted into the length; a 7-digit answer needs far fewer than RULER's 128. */
  tokensToGenerate: z.number().int().min(0).default(32),
}).superRefine((o, ctx) => {
  for (const [field, values] of [["lengths", o.lengths], ["depths", o.depths]] as const) {
    const repeated = values.find((v, i) => values.indexOf(v) !== i);
    if (repeated !== undefined) {
      ctx.addIssue({ code: "custom", path: [field], message: `${field} lists ${repeated} twice` });
    }
  }
});

/** What callers pass to `generatePositionSweep` (defaults filled in by the schema). */
export type PositionSweepOptions = z.input<typeof positionSweepSchema>;

/** Token positions [start, end) in the tokens of `input + answerPrefix`. */
export interface TokenSpan {
  start: number;
  end: number;
}

/** A needle or distractor as placed in one prompt. */
export interface PlacedNeedle {
  key: string;
  value: string;
  /** Index among the haystack sentences it was inserted before (n when appended). */
  sentence: number;
  /** The needle sentence plus the space before it, which BPE tokenizers fuse with its first word. */
  span: TokenSpan;
}

/** One prompt of the sweep. */
export interface SweepSample {
  length: number;
  depth: number;
  /** Sample index within the cell; the same index shares key, value and haystack across cells. */
  index: number;
  input: string;
  answerPrefix: string;
  /** The expected answer, for `string_match_all`. */
  outputs: string[];
  /** Tokens of input + answer prefix, plus the generation budget; ≤ length. */
  tokens: number;
  tokensToGenerate: number;
  /** Haystack sentences in the prompt. */
  sentences: number;
  needle: PlacedNeedle;
  distractors: PlacedNeedle[];
}

/** A generated sweep with what a report must record to reproduce it (§5.3). */
export interface PositionSweep {
  lengths: number[];
  depths: number[];
  samplesPerCell: number;
  seed: number;
  distractors: number;
  tokensToGenerate: number;
  tokenizer: string;
  tokenizerHash: string;
  placement: string;
  /** Ordered by length, then depth, then sample index. */
  samples: SweepSample[];
}

/** The drawn content of one sample index: the same in every cell. */
interface SampleContent {
  key: string;
  value: string;
  distractors: { key: string; value: string; fraction: number }[];
  sentences: string[];
  more: Iterator<string>;
}

const SAMPLE_STREAM_BASE = 0x53570000;

function drawContent(seed: number, index: number, distractors: number): SampleContent {
  const rng = new Rng(seed, (SAMPLE_STREAM_BASE + index) >>> 0);
  const adjective = rng.int(KEY_ADJECTIVES.length);
  const noun = rng.int(KEY_NOUNS.length);
  const key = `${KEY_ADJECTIVES[adjective]}-${KEY_NOUNS[noun]}`;
  const values = new Set<string>();
  const drawValue = () => {
    let value: string;
    do value = String(1_000_000 + rng.int(9_000_000)); while (values.has(value));
    values.add(value);
    return value;
  };
  const value = drawValue();
  // Alternate which word is swapped; each list offers its other words in a shuffled order.
  const otherAdjectives = rng.shuffle(KEY_ADJECTIVES.filter((_, i) => i !== adjective));
  const otherNouns = rng.shuffle(KEY_NOUNS.filter((_, i) => i !== noun));
  const near: SampleContent["distractors"] = [];
  for (let j = 0; j < distractors; j++) {
    const swapNoun = j % 2 === 0;
    const nearKey = swapNoun
      ? `${KEY_ADJECTIVES[adjective]}-${otherNouns[j >> 1]}`
      : `${otherAdjectives[j >> 1]}-${KEY_NOUNS[noun]}`;
    near.push({ key: nearKey, value: drawValue(), fraction: rng.uniform() });
  }
  const haystackSeed = rng.u32() * 2 ** 21 + (rng.u32() >>> 11);
  return { key, value, distractors: near, sentences: [], more: haystackSentences(haystackSeed) };
}

function sentencesOf(content: SampleContent, n: number): string[] {
  while (content.sentences.length < n) content.sentences.push(content.more.next().value as string);
  return content.sentences.slice(0, n);
}

function needleSentence(key: string, value: string): string {
  return `One of the special magic numbers for ${key} is: ${value}.`;
}

function fill(template: string, values: Record<string, string>): string {
  return template.replace(/\{(\w+)\}/g, (match, name: string) => values[name] ?? match);
}

interface Built {
  input: string;
  answerPrefix: string;
  /** Character range of each inserted item in `input`, needle first, then distractors in order. */
  ranges: { start: number; end: number; sentence: number }[];
}

function buildPrompt(content: SampleContent, n: number, depth: number): Built {
  const haystack = sentencesOf(content, n);
  const items = [
    { text: needleSentence(content.key, content.value), sentence: Math.floor(n * depth), order: 0 },
    ...content.distractors.map((d, j) => ({
      text: needleSentence(d.key, d.value),
      sentence: Math.floor(n * d.fraction),
      order: j + 1,
    })),
  ];
  const placed = [...items].sort((a, b) => a.sentence - b.sentence || a.order - b.order);
  const pieces: { text: string; order: number }[] = [];
  let next = 0;
  for (const item of placed) {
    while (next < item.sentence) pieces.push({ text: haystack[next++], order: -1 });
    pieces.push({ text: item.text, order: item.order });
  }
  while (next < n) pieces.push({ text: haystack[next++], order: -1 });

  const template = DEFAULT_TEMPLATES.niah;
  const marker = "\u0000context\u0000";
  const [head, tail] = fill(template.template, { context: marker, query: content.key, type: "numbers" })
    .split(marker);
  const ranges: Built["ranges"] = new Array(items.length);
  let input = head;
  pieces.forEach((piece, i) => {
    const separator = i === 0 ? "" : " ";
    if (piece.order >= 0) {
      // The span starts at the separator: BPE fuses a leading space with the needle's first word.
      ranges[piece.order] = {
        start: input.length,
        end: input.length + separator.length + piece.text.length,
        sentence: items[piece.order].sentence,
      };
    }
    input += separator + piece.text;
  });
  input += tail;
  const answerPrefix = fill(singularNiahPrefix(template.answerPrefix), {
    query: content.key,
    type: "number",
  });
  return { input, answerPrefix, ranges };
}

function sameStart(full: readonly number[], prefix: readonly number[]): boolean {
  if (prefix.length > full.length) return false;
  for (let i = 0; i < prefix.length; i++) if (prefix[i] !== full[i]) return false;
  return true;
}

/** Token spans of the inserted items; throws when the tokenizer merges across an item's edge. */
function tokenSpans(tokenizer: Tokenizer, built: Built, full: readonly number[]): TokenSpan[] {
  const prefixTokens = (chars: number) => {
    const tokens = tokenizer.encode(built.input.slice(0, chars));
    if (!sameStart(full, tokens)) {
      throw new Error(
        `position sweep: ${tokenizer.name} tokenises across the needle boundary at character ${chars} ` +
          `(the tokens of the text before it are not a prefix of the prompt's tokens)`,
      );
    }
    return tokens.length;
  };
  return built.ranges.map((r) => ({ start: prefixTokens(r.start), end: prefixTokens(r.end) }));
}

/**
 * The largest n ≥ 0 with fits(n), assuming fits is monotone: gallop from `guess` in doubling steps to
 * bracket the answer, then bisect, so a good guess costs a handful of calls.
 */
function largestFitting(fits: (n: number) => boolean, guess: number): number {
  let lo: number, hi: number;
  let step = 1;
  if (fits(guess)) {
    lo = guess;
    hi = guess + step;
    while (fits(hi)) {
      lo = hi;
      step *= 2;
      hi = lo + step;
    }
  } else {
    hi = guess;
    lo = Math.max(0, guess - step);
    while (lo > 0 && !fits(lo)) {
      hi = lo;
      step *= 2;
      lo = Math.max(0, lo - step);
    }
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/**
 * Generates the samples of a length × depth sweep, deterministic in (options, tokenizer).
 * @example
 * ```ts
 * const sweep = generatePositionSweep(
 *   { lengths: [4096, 8192], depths: [0, 0.5, 1], samplesPerCell: 20, seed: 1 },
 *   byteTokenizer(),
 * );
 * ```
 */
export function generatePositionSweep(options: PositionSweepOptions, tokenizer: Tokenizer): PositionSweep {
  const parsed = positionSweepSchema.safeParse(options);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join(".") || "options"}: ${i.message}`);
    throw new RangeError(`generatePositionSweep: ${detail.join("; ")}`);
  }
  const o = parsed.data;
  const contents = Array.from({ length: o.samplesPerCell }, (_, i) => drawContent(o.seed, i, o.distractors));
  const samples: SweepSample[] = [];
  for (const length of o.lengths) {
    for (const depth of o.depths) {
      for (let index = 0; index < o.samplesPerCell; index++) {
        const content = contents[index];
        const measure = (n: number) => {
          const built = buildPrompt(content, n, depth);
          const full = tokenizer.encode(built.input + built.answerPrefix);
          return { built, full, tokens: full.length + o.tokensToGenerate };
        };
        const smallest = measure(0);
        if (smallest.tokens > length) {
          throw new RangeError(
            `position sweep: length ${length} is below the ${smallest.tokens} tokens of the prompt without ` +
              `haystack (template, needle, ${o.distractors} distractors, ${o.tokensToGenerate} generated tokens)`,
          );
        }
        const guess = previousCount(samples, length, index) ??
          estimateCount(content, tokenizer, length, smallest.tokens);
        const n = largestFitting((count) => measure(count).tokens <= length, guess);
        const { built, full, tokens } = measure(n);
        const spans = tokenSpans(tokenizer, built, full);
        const [needleRange, ...distractorRanges] = built.ranges;
        samples.push({
          length,
          depth,
          index,
          input: built.input,
          answerPrefix: built.answerPrefix,
          outputs: [content.value],
          tokens,
          tokensToGenerate: o.tokensToGenerate,
          sentences: n,
          needle: { key: content.key, value: content.value, sentence: needleRange.sentence, span: spans[0] },
          distractors: content.distractors.map((d, j) => ({
            key: d.key,
            value: d.value,
            sentence: distractorRanges[j].sentence,
            span: spans[j + 1],
          })),
        });
      }
    }
  }
  return {
    lengths: o.lengths,
    depths: o.depths,
    samplesPerCell: o.samplesPerCell,
    seed: o.seed,
    distractors: o.distractors,
    tokensToGenerate: o.tokensToGenerate,
    tokenizer: tokenizer.name,
    tokenizerHash: tokenizer.hash,
    placement: "needle before haystack sentence floor(n * depth) of n (RULER, sentence level)",
    samples,
  };
}

// The same sample at the previous depth of this length needs almost the same sentence count.
function previousCount(samples: readonly SweepSample[], length: number, index: number): number | undefined {
  for (let i = samples.length - 1; i >= 0; i--) {
    const s = samples[i];
    if (s.length !== length) return undefined;
    if (s.index === index) return s.sentences;
  }
  return undefined;
}

// Sentence count from the mean tokens of the first sentences; the search corrects it.
function estimateCount(
  content: SampleContent,
  tokenizer: Tokenizer,
  length: number,
  overhead: number,
): number {
  const probe = sentencesOf(content, 16);
  const perSentence = Math.max(1, tokenizer.encode(" " + probe.join(" ")).length / probe.length);
  return Math.max(0, Math.floor((length - overhead) / perSentence));
}

/** Accuracy of one group of samples with its Wilson interval. */
export interface SweepCell {
  length: number;
  depth: number;
  n: number;
  correct: number;
  accuracy: number;
  ci: Interval;
}

/** A scored sweep, ready for a heatmap and its two marginals (§5.3). */
export interface PositionSweepScores {
  lengths: number[];
  depths: number[];
  confidence: number;
  /** Ordered by length, then depth. */
  cells: SweepCell[];
  /** accuracy[d][l]: rows are depths (the heatmap's y), columns lengths (its x). */
  accuracy: number[][];
  /** Depth-averaged accuracy per length (pooled counts). */
  byLength: Omit<SweepCell, "depth">[];
  /** Length-averaged accuracy per depth (pooled counts). */
  byDepth: Omit<SweepCell, "length">[];
}

/**
 * Scores predictions (one per sample, in `sweep.samples` order) with RULER's `string_match_all`;
 * a sample is correct when its answer appears in the prediction.
 * @example const scores = scorePositionSweep(sweep, predictions); scores.accuracy[0][1];
 */
export function scorePositionSweep(
  sweep: Pick<PositionSweep, "lengths" | "depths" | "samples">,
  predictions: readonly string[],
  confidence = 0.95,
): PositionSweepScores {
  if (predictions.length !== sweep.samples.length) {
    throw new RangeError(
      `scorePositionSweep: ${predictions.length} predictions for ${sweep.samples.length} samples`,
    );
  }
  const lengthIndex = new Map(sweep.lengths.map((l, i) => [l, i]));
  const depthIndex = new Map(sweep.depths.map((d, i) => [d, i]));
  const n = sweep.depths.map(() => sweep.lengths.map(() => 0));
  const correct = sweep.depths.map(() => sweep.lengths.map(() => 0));
  sweep.samples.forEach((sample, i) => {
    const l = lengthIndex.get(sample.length);
    const d = depthIndex.get(sample.depth);
    if (l === undefined || d === undefined) {
      throw new RangeError(
        `scorePositionSweep: sample ${i} has length ${sample.length} and depth ${sample.depth}, ` +
          `outside the grid (lengths ${sweep.lengths.join(", ")}; depths ${sweep.depths.join(", ")})`,
      );
    }
    n[d][l]++;
    if (stringMatchAll(predictions[i], sample.outputs) === 1) correct[d][l]++;
  });
  const cell = (count: number, right: number) => {
    if (count === 0) throw new RangeError("scorePositionSweep: a grid cell has no samples");
    return {
      n: count,
      correct: right,
      accuracy: right / count,
      ci: wilsonInterval(right, count, confidence),
    };
  };
  const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
  const cells: SweepCell[] = [];
  sweep.lengths.forEach((length, l) => {
    sweep.depths.forEach((depth, d) => cells.push({ length, depth, ...cell(n[d][l], correct[d][l]) }));
  });
  return {
    lengths: [...sweep.lengths],
    depths: [...sweep.depths],
    confidence,
    cells,
    accuracy: sweep.depths.map((_, d) => sweep.lengths.map((_, l) => correct[d][l] / n[d][l])),
    byLength: sweep.lengths.map((length, l) => ({
      length,
      ...cell(sum(n.map((row) => row[l])), sum(correct.map((row) => row[l]))),
    })),
    byDepth: sweep.depths.map((depth, d) => ({ depth, ...cell(sum(n[d]), sum(correct[d])) })),
  };
}
