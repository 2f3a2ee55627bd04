/**
 * The contents of the files `longtune data` writes, as pure functions of the settings: RULER's
 * `validation.jsonl`, a BABILong `<task>/<length>.json` array, and the WikiText / PG-19 splits of a
 * generated corpus. They run inside the generator worker (`data_worker.ts`) and in tests alike.
 */

import type { BabiTaskName } from "../data/babi.ts";
import { makeBabilongSample } from "../data/babilong.ts";
import { generateCorpus, haystackSentences } from "../data/corpus.ts";
import { sha256 } from "../data/hash.ts";
import { bookToArticle, bookToPg19, type Pg19Splits, type WikiTextSplits } from "../data/layouts.ts";
import { generateRuler, type RulerSources, type RulerTaskName } from "../data/ruler.ts";
import type { Tokenizer } from "../data/tokenizer.ts";

/** RULER sources that survive a structured clone to the worker (no chat-template function). */
export type RulerTextSources = Omit<RulerSources, "chatTemplate">;

/** One file's worth of work for the generator. */
export type GeneratorRequest =
  | { job: "ruler"; task: RulerTaskName; length: number; samples: number; seed: number }
  | { job: "babilong"; task: BabiTaskName; length: number; samples: number; seed: number }
  | { job: "corpus"; layout: CorpusLayout; seed: number; words: number };

/** The two on-disk corpus layouts `data corpus` writes. */
export type CorpusLayout = "wikitext" | "pg19";

/** What a corpus job returns: the splits, ready for `writeWikiText` or `writePg19`. */
export type CorpusSplits =
  | { layout: "wikitext"; splits: WikiTextSplits }
  | { layout: "pg19"; splits: Pg19Splits };

/** RULER's `validation.jsonl` for one task and length: one sample per line, RULER's field names. */
export function rulerFileText(
  request: Extract<GeneratorRequest, { job: "ruler" }>,
  tokenizer: Tokenizer,
  sources: RulerTextSources,
): string {
  const samples = generateRuler({
    task: request.task,
    maxLength: request.length,
    samples: request.samples,
    seed: request.seed,
    tokenizer,
    sources,
  });
  return samples.map((sample) => JSON.stringify(sample)).join("\n") + "\n";
}

/**
 * The seed of BABILong sample `index` under the run's seed. Derived by hashing so that samples of
 * neighbouring run seeds do not coincide (seed s, sample 1 ≠ seed s+1, sample 0); the same index gets
 * the same bAbI sample and haystack at every length, as in BABILong's releases. 52 bits: a safe integer.
 */
export function babilongSampleSeed(seed: number, index: number): number {
  return Number.parseInt(sha256(`longtune babilong sample ${seed} ${index}`).slice(0, 13), 16);
}

/**
 * One BABILong file: a JSON array of `{input, question, target}` records (the HF export's fields:
 * `input` is the haystack with the facts embedded) plus the measured `tokens` of the whole prompt,
 * the `targetTokens`, the sample's `seed`, the `factDepths` and the sample `hash`. One record per line.
 * `onSample` is called after each sample, for progress.
 */
export function babilongFileText(
  request: Extract<GeneratorRequest, { job: "babilong" }>,
  tokenizer: Tokenizer,
  onSample: (index: number) => void = () => {},
): string {
  const records: string[] = [];
  for (let index = 0; index < request.samples; index++) {
    const seed = babilongSampleSeed(request.seed, index);
    const sample = makeBabilongSample({
      task: request.task,
      seed,
      targetTokens: request.length,
      tokenizer,
      haystack: haystackSentences(seed),
    });
    records.push(JSON.stringify({
      input: sample.context,
      question: sample.question,
      target: sample.answer,
      tokens: sample.tokens,
      targetTokens: sample.targetTokens,
      seed: sample.seed,
      factDepths: sample.factDepths,
      hash: sample.hash,
    }));
    onSample(index);
  }
  return `[\n${records.join(",\n")}\n]\n`;
}

/**
 * The smallest target BABILong sample `index` can reach (its facts, prompt and question, no haystack),
 * so lengths can be checked before any file is written.
 */
export function babilongMinimumTokens(
  task: BabiTaskName,
  seed: number,
  index: number,
  tokenizer: Tokenizer,
): number {
  const sampleSeed = babilongSampleSeed(seed, index);
  return makeBabilongSample({ task, seed: sampleSeed, targetTokens: 0, tokenizer, haystack: [] })
    .minimumTokens;
}

// Splits draw from disjoint book ranges of one seed, so no book appears in two splits (as the fixtures).
const SPLIT_FIRST_BOOK = [0, 1_000_000, 2_000_000] as const;
// PG-19 ids far above Project Gutenberg's numbering, as the shipped fixtures use.
const PG19_FIRST_ID = 9_000_000;

/** Words of each split: a tenth each for validation and test, the rest for training. */
export function corpusSplitWords(words: number): [number, number, number] {
  const tenth = Math.max(1, Math.floor(words / 10));
  return [words - 2 * tenth, tenth, tenth];
}

/** The generated corpus cut into the three splits of a layout. */
export function corpusSplits(request: Extract<GeneratorRequest, { job: "corpus" }>): CorpusSplits {
  const books = corpusSplitWords(request.words).map((words, split) =>
    generateCorpus({ seed: request.seed, words, firstBook: SPLIT_FIRST_BOOK[split] }).books
  );
  if (request.layout === "wikitext") {
    const [train, valid, test] = books.map((split) => split.map(bookToArticle));
    return { layout: "wikitext", splits: { train, valid, test } };
  }
  const [train, validation, test] = books.map((split) =>
    split.map((book) => bookToPg19(book, String(PG19_FIRST_ID + book.index)))
  );
  return { layout: "pg19", splits: { train, validation, test } };
}
