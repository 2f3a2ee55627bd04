/**
 * The windows a suite's methods train on, generated from the suite's training-data settings and the
 * model's tokenizer, the same way the shipped base models were trained (fixtures/models/make.ts):
 * each window of T + 1 tokens is either generated prose (plain, PG-19 or WikiText layout) read from a
 * random offset, or a task sample — a RULER needle task or a BABILong sample with its answer after
 * the answer prefix — followed by <|endoftext|> and prose up to the window's end.
 *
 * Window w of replicate seed s depends only on (data seed, s, w), so training data order changes with
 * the replicate seed and never with what else the run does. With `promptLoss: false` the task
 * prompt carries no loss (its targets are IGNORE_INDEX), as in supervised fine-tuning; a method
 * that needs the turn structure (FocuSFT) derives it from the targets.
 *
 * Evaluation data never uses these seeds: the training corpus, the RULER essay and the BABILong
 * haystack all come from the training data seed, evaluation from the suite's data seed.
 */

import { createHash } from "node:crypto";
import type { BabiTaskName } from "../data/babi.ts";
import { makeBabilongSample } from "../data/babilong.ts";
import { bookText, type Corpus, corpusText, generateCorpus, haystackSentences } from "../data/corpus.ts";
import { sha256 } from "../data/hash.ts";
import { bookToArticle, renderWikiText } from "../data/layouts.ts";
import { generateRuler, RULER_TASKS, type RulerTaskName } from "../data/ruler.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { IGNORE_INDEX } from "../ops/crossentropy.ts";
import { Rng } from "../random/philox.ts";
import type { HostBatch } from "../train/trainer.ts";
import type { TrainingDataSettings } from "./suite.ts";

/** Tokens kept free after a task prompt for its answer and <|endoftext|>. */
const ANSWER_ROOM = { ruler: 48, babilong: 24 } as const;
/** The answer prefix of BABILong training samples (the shipped models' format). */
export const TRAINING_BABILONG_PREFIX = "\nAnswer: ";

/** What a window holds. */
export type WindowKind = "prose" | "ruler" | "babilong";

/** A source of training batches for one (settings, tokenizer, replicate seed, B, T). */
export interface TrainingStream {
  /** Batch of step `step` (0-based): B windows of T tokens with next-token targets. */
  batch(step: number): HostBatch;
  /** Kinds of the windows made so far, in order. */
  readonly kinds: WindowKind[];
  /** sha256 over every window made so far (token ids and loss mask), in step order. */
  hash(): string;
}

function windowSeed(dataSeed: number, seed: number, window: number): number {
  return Number.parseInt(sha256(`longtune train window ${dataSeed} ${seed} ${window}`).slice(0, 13), 16);
}

function proseText(settings: TrainingDataSettings, corpus: Corpus): string {
  if (settings.corpus.layout === "plain") return corpusText(corpus);
  if (settings.corpus.layout === "pg19") return corpus.books.map(bookText).join("\n\n");
  return renderWikiText(corpus.books.map(bookToArticle));
}

/**
 * Builds the training stream. Generation is lazy (one window at a time), so long runs never hold all
 * their data.
 * @example const stream = trainingStream(settings.data, tokenizer, 0, 1, 512); await trainer.step(stream.batch(0));
 */
export function trainingStream(
  settings: TrainingDataSettings,
  tokenizer: Tokenizer,
  seed: number,
  B: number,
  T: number,
): TrainingStream {
  const eot = tokenizer.special("<|endoftext|>") ?? 0;
  const corpus = generateCorpus({ seed: settings.corpus.seed, words: settings.corpus.words });
  const prose = Uint32Array.from(tokenizer.encode(proseText(settings, corpus)));
  if (prose.length < T + 1) {
    throw new RangeError(
      `training data: the corpus has ${prose.length} tokens, fewer than one window of ${T + 1}; raise ` +
        `training.data.corpus.words`,
    );
  }
  // RULER essay haystacks are the same prose as plain text.
  const essay = corpusText(corpus);
  const total = settings.mix.prose + settings.mix.ruler + settings.mix.babilong;
  const kinds: WindowKind[] = [];
  const hasher = createHash("sha256");
  let made = 0;

  const taskSample = (kind: "ruler" | "babilong", rng: Rng): number[][] | null => {
    if (kind === "ruler") {
      const task = rng.pick(settings.rulerTasks) as RulerTaskName;
      const maxLength = T + 1 - ANSWER_ROOM.ruler + RULER_TASKS[task].tokensToGenerate;
      try {
        const [s] = generateRuler({
          task,
          maxLength,
          samples: 1,
          seed: rng.u32(),
          tokenizer,
          sources: { essay },
        });
        return [tokenizer.encode(s.input + s.answer_prefix), tokenizer.encode(` ${s.outputs.join(", ")}.`)];
      } catch (error) {
        if (error instanceof RangeError) return null;
        throw error;
      }
    }
    const task = rng.pick(settings.babilongTasks) as BabiTaskName;
    const sampleSeed = rng.u32();
    try {
      const sample = makeBabilongSample({
        task,
        seed: sampleSeed,
        targetTokens: T + 1 - ANSWER_ROOM.babilong,
        tokenizer,
        haystack: haystackSentences(sampleSeed),
        prompt: { instruction: false, examples: false, postPrompt: false },
      });
      return [tokenizer.encode(sample.input + TRAINING_BABILONG_PREFIX), tokenizer.encode(sample.answer)];
    } catch (error) {
      if (error instanceof RangeError) return null;
      throw error;
    }
  };

  const makeWindow = (windowIndex: number): { ids: Uint32Array; loss: Uint8Array; kind: WindowKind } => {
    const rng = new Rng(windowSeed(settings.seed, seed, windowIndex));
    const u = rng.uniform() * total;
    let kind: WindowKind = u < settings.mix.prose
      ? "prose"
      : u < settings.mix.prose + settings.mix.ruler
      ? "ruler"
      : "babilong";
    const ids = new Uint32Array(T + 1);
    const loss = new Uint8Array(T + 1).fill(1);
    let at = 0;
    if (kind !== "prose") {
      const parts = taskSample(kind, rng);
      if (parts === null || parts[0].length + parts[1].length + 1 > T + 1) kind = "prose";
      else {
        const [prompt, answer] = parts;
        ids.set(prompt, 0);
        if (!settings.promptLoss) loss.fill(0, 0, prompt.length);
        ids.set(answer, prompt.length);
        at = prompt.length + answer.length;
        ids[at++] = eot;
      }
    }
    let offset = rng.int(prose.length);
    while (at < T + 1) {
      const take = Math.min(T + 1 - at, prose.length - offset);
      ids.set(prose.subarray(offset, offset + take), at);
      at += take;
      offset = (offset + take) % prose.length;
    }
    return { ids, loss, kind };
  };

  return {
    kinds,
    batch(step: number): HostBatch {
      if (step !== made) {
        throw new RangeError(
          `training data: batch ${step} requested after ${made}; batches are made in order`,
        );
      }
      made++;
      const tokens = new Uint32Array(B * T);
      const targets = new Int32Array(B * T);
      for (let b = 0; b < B; b++) {
        const { ids, loss, kind } = makeWindow(step * B + b);
        kinds.push(kind);
        hasher.update(new Uint8Array(ids.buffer));
        hasher.update(loss);
        tokens.set(ids.subarray(0, T), b * T);
        for (let t = 0; t < T; t++) targets[b * T + t] = loss[t + 1] ? ids[t + 1] : IGNORE_INDEX;
      }
      return { tokens, targets };
    },
    hash: () => hasher.copy().digest("hex"),
  };
}
