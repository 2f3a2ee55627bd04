/**
 * One cell's evaluation: its data, generated deterministically from the suite's data seed and the
 * model's tokenizer (or read from the named text source), run through a model backend (a log-prob
 * scorer for perplexity, greedy generation for RULER, BABILong and position sweeps), and scored into
 * the metrics, extras and evaluation-set hash a report cell carries.
 *
 * - Perplexity (wikitext, pg19): the split's text is tokenised once; sample i is the i-th slice of
 *   chunkWindows × length tokens, scored on its own under the protocol with window = the cell's length
 *   (`evaluatePerplexity`'s sums, pooled over slices). 95% interval: a seeded percentile bootstrap over
 *   slices of the pooled token perplexity (none with one slice).
 * - RULER: `generateRuler` per task at the cell's length (template, answer prefix and the task's
 *   generation budget counted in); the model continues input + answer prefix for at most the task's
 *   budget; string_match_all / string_match_part per sample. The cell's score is the mean of the task
 *   scores (§1.9). Interval: Wilson when every sample scored 0 or 1, else a seeded bootstrap.
 * - BABILong: `makeBabilongSample` per task and sample (sample seeds as `longtune data babilong`), with
 *   the target length = the cell's length − answer prefix − generation budget; scored by the official
 *   rule (primary, Wilson) and the corrected whole-word rule (`accuracy_corrected`).
 * - Position sweep: `generatePositionSweep` at the cell's length over the suite's depths; accuracy per
 *   depth and pooled (Wilson).
 * - Attention diagnostics (optional): the mass that the query predicting the first answer token puts on
 *   the first 4 positions (sinks), the context, the needle and the distractors, averaged over layers,
 *   heads and samples (see attention_probe.ts).
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  babilongOfficialCorrect,
  type BabilongSample,
  babilongWholeWordCorrect,
  makeBabilongSample,
} from "../data/babilong.ts";
import type { BabiTaskName } from "../data/babi.ts";
import { corpusText, generateCorpus, haystackSentences } from "../data/corpus.ts";
import { hashJson, sha256 } from "../data/hash.ts";
import { renderWikiText } from "../data/layouts.ts";
import { loadPg19, loadWikiText } from "../data/loaders.ts";
import {
  generateRuler,
  RULER_TASKS,
  type RulerSample,
  type RulerTaskName,
  stringMatchAll,
  stringMatchPart,
} from "../data/ruler.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
// The same sample seeds and corpus splits as `longtune data`, so a suite's data can be written to files.
import { babilongSampleSeed, corpusSplits } from "../cli/data_content.ts";
import {
  aggregatePerplexity,
  type DocumentPerplexity,
  lmEvalWordCount,
  type LogProbScorer,
  type PerplexityProtocol,
  scoreDocument,
  utf8ByteCount,
} from "../eval/perplexity.ts";
import { bootstrapInterval, wilsonInterval } from "../eval/stats.ts";
import { generatePositionSweep, type PositionSweep, scorePositionSweep } from "../eval/sweeps.ts";
import type { Cell, Metric } from "./report_schema.ts";
import type { ResolvedEvaluation } from "./suite.ts";
import type { AttentionMasses, AttentionRegions } from "./attention_probe.ts";

/** The fixtures' corpus folders (`fixtures/corpus/wikitext`, `fixtures/corpus/pg19`). */
export const FIXTURE_CORPUS_DIR: string = fileURLToPath(new URL("../../fixtures/corpus", import.meta.url));

/** A greedy continuation. */
export interface Generation {
  text: string;
  /** Generated token ids (stop text included when a stop string ended it). */
  tokens: number[];
  promptTokens: number;
}

/** A generator for one cell. */
export interface CellGenerator {
  generate(prompt: string, options: { maxNewTokens: number; stop: readonly string[] }): Promise<Generation>;
  destroy(): void;
}

/** A scorer for one cell. */
export interface CellScorer extends LogProbScorer {
  destroy(): void;
}

/** What evaluation runs on: a prepared model behind these three doors. */
export interface EvalBackend {
  tokenizer: Tokenizer;
  /** A generator whose prompt + generated tokens never exceed `maxLength`. */
  generator(maxLength: number): Promise<CellGenerator>;
  /** A scorer accepting up to `maxContext` tokens. */
  scorer(maxContext: number): Promise<CellScorer>;
  /** Attention masses of the last prompt position (null when the backend cannot measure them). */
  attention(prompt: readonly number[], regions: AttentionRegions): Promise<AttentionMasses>;
  /** Runs before each sample (a per-sample adaptation such as LIFT); resolves to its undo. */
  beforeSample(prompt: string, tokens: readonly number[]): Promise<() => Promise<void>>;
}

/** What evaluating one cell produced, before it becomes a report cell. */
export interface CellEvaluation {
  family: Cell["family"];
  primaryMetric: string;
  metrics: Record<string, Metric>;
  extras: Cell["extras"];
  evaluationSet: { key: string; hash: string };
  /** Tokens read and generated. */
  evalTokens: number;
  evalSeconds: number;
}

/** The cell to evaluate (the parts of SuiteCell evaluation needs). */
export interface EvalCell {
  evaluation: ResolvedEvaluation;
  length: number;
  samples: number;
  dataSeed: number;
}

/** Called between samples; throws to stop (the runner's Ctrl-C check). */
export type Checkpoint = () => void;

// ---------------------------------------------------------------------------------------------
// Intervals.

/** An accuracy metric from k correct of n, with its Wilson interval in percent. */
export function accuracyMetric(correct: number, n: number): Metric {
  const { lo, hi } = wilsonInterval(correct, n);
  return {
    kind: "accuracy",
    value: (100 * correct) / n,
    n,
    ci95: { lo: 100 * lo, hi: 100 * hi, method: "wilson" },
  };
}

/**
 * An accuracy metric from per-sample scores in [0, 1] whose mean is `value` (percent): Wilson when
 * every score is 0 or 1, else a percentile bootstrap of the mean seeded by `seed`.
 */
function scoreMetric(scores: readonly number[], value: number, seed: number): Metric {
  const n = scores.length;
  if (scores.every((s) => s === 0 || s === 1)) {
    const metric = accuracyMetric(scores.reduce((a: number, b) => a + b, 0), n);
    return { ...metric, value };
  }
  const { lo, hi } = bootstrapInterval(scores, (xs) => xs.reduce((a, b) => a + b, 0) / xs.length, { seed });
  return {
    kind: "accuracy",
    value,
    n,
    ci95: { lo: Math.min(value, 100 * lo), hi: Math.max(value, 100 * hi), method: "bootstrap" },
  };
}

// ---------------------------------------------------------------------------------------------
// Text sources, memoised per run.

const textCache = new Map<string, Promise<string>>();

/** The text a perplexity evaluation reads: the whole split, documents joined as the layout stores them. */
export function perplexityText(evaluation: Extract<ResolvedEvaluation, { family: "wikitext" | "pg19" }>) {
  const key = JSON.stringify([evaluation.family, evaluation.source, evaluation.split]);
  let text = textCache.get(key);
  if (text === undefined) {
    text = loadPerplexityText(evaluation);
    textCache.set(key, text);
  }
  return text;
}

async function loadPerplexityText(
  evaluation: Extract<ResolvedEvaluation, { family: "wikitext" | "pg19" }>,
): Promise<string> {
  const { family, source, split } = evaluation;
  if (typeof source === "object" && "generated" in source) {
    const splits = corpusSplits({
      job: "corpus",
      layout: family,
      seed: source.generated.seed,
      words: source.generated.words,
    });
    if (splits.layout === "wikitext") {
      return renderWikiText(split === "test" ? splits.splits.test : splits.splits.valid);
    }
    const books = split === "test" ? splits.splits.test : splits.splits.validation;
    return books.map((book) => book.text).join("\n\n");
  }
  const folder = source === "fixture" ? join(FIXTURE_CORPUS_DIR, family) : source.path;
  if (family === "wikitext") return (await loadWikiText(folder, split)).text;
  const books = await loadPg19(folder, split);
  if (books.length === 0) throw new RangeError(`${folder}: the ${split} split holds no books`);
  return books.map((book) => book.text).join("\n\n");
}

const essayCache = new Map<string, string>();

function essayText(seed: number, words: number): string {
  const key = `${seed}/${words}`;
  let essay = essayCache.get(key);
  if (essay === undefined) {
    essay = corpusText(generateCorpus({ seed, words }));
    essayCache.set(key, essay);
  }
  return essay;
}

// ---------------------------------------------------------------------------------------------
// Data: generated (or read) before any model runs, so its hash is known even when the model fails.

type PerplexityEvaluation = Extract<ResolvedEvaluation, { family: "wikitext" | "pg19" }>;

/** The samples of one cell, with their content hash. */
export type CellData =
  | {
    family: "perplexity";
    hash: string;
    chunks: number[][];
    texts: string[];
    protocol: PerplexityProtocol;
    eot: number;
  }
  | { family: "ruler"; hash: string; tasks: { task: RulerTaskName; samples: RulerSample[] }[] }
  | { family: "babilong"; hash: string; tasks: { task: BabiTaskName; samples: BabilongSample[] }[] }
  | { family: "position-sweep"; hash: string; sweep: PositionSweep };

/** BABILong candidates tried per requested sample before a length is declared too short. */
const MAX_CANDIDATES = 20;

/**
 * Generates (or reads) a cell's samples, deterministically from the data seed and the tokenizer.
 * Throws (RangeError) when the samples cannot exist at the cell's length.
 */
export async function cellData(cell: EvalCell, tokenizer: Tokenizer): Promise<CellData> {
  const evaluation = cell.evaluation;
  const L = cell.length;
  switch (evaluation.family) {
    case "wikitext":
    case "pg19": {
      const e = evaluation as PerplexityEvaluation;
      const all = tokenizer.encode(await perplexityText(e));
      const chunk = Math.max(2, Math.round(e.chunkWindows * L));
      const count = Math.max(1, Math.min(cell.samples, Math.floor(all.length / chunk)));
      const eot = tokenizer.special("<|endoftext|>") ?? 0;
      const p = e.protocol;
      const protocol: PerplexityProtocol = p.kind === "sliding"
        ? { kind: "sliding", window: L, stride: Math.max(1, Math.round(L * p.strideFraction)) }
        : p.kind === "rolling"
        ? { kind: "rolling", maxLength: L - 1, prefixToken: eot }
        : { kind: "longlora", seqLen: L, stride: p.stride };
      const chunks = Array.from({ length: count }, (_, i) => all.slice(i * chunk, (i + 1) * chunk));
      const texts = chunks.map((tokens) => tokenizer.decode(tokens));
      const hashes = chunks.map((tokens) => sha256(new Uint8Array(Uint32Array.from(tokens).buffer)));
      return {
        family: "perplexity",
        hash: hashJson({ protocol, chunks: hashes }),
        chunks,
        texts,
        protocol,
        eot,
      };
    }
    case "ruler": {
      const essay = essayText(evaluation.essay.seed, evaluation.essay.words);
      const tasks = (evaluation.tasks as RulerTaskName[]).map((task) => ({
        task,
        samples: generateRuler({
          task,
          maxLength: L,
          samples: cell.samples,
          seed: cell.dataSeed,
          tokenizer,
          sources: { essay },
        }),
      }));
      const hash = hashJson(
        Object.fromEntries(
          tasks.map((t) => [t.task, t.samples.map((s) => [s.input, s.answer_prefix, s.outputs])]),
        ),
      );
      return { family: "ruler", hash, tasks };
    }
    case "babilong": {
      const reserve = tokenizer.encode(evaluation.answerPrefix).length + evaluation.maxNewTokens;
      const targetTokens = L - reserve;
      if (targetTokens < 1) {
        throw new RangeError(
          `${evaluation.name}: length ${L} leaves no room after the answer prefix and ${evaluation.maxNewTokens} generated tokens`,
        );
      }
      let skipped = 0;
      const tasks = (evaluation.tasks as BabiTaskName[]).map((task) => {
        const samples: BabilongSample[] = [];
        for (let candidate = 0; samples.length < cell.samples; candidate++) {
          // Upstream drops stories too long for the length (max_n_facts = length // 8); here a candidate
          // whose facts alone overflow the budget is skipped for the next one.
          if (candidate >= MAX_CANDIDATES * cell.samples) {
            throw new RangeError(
              `${evaluation.name} ${task}: fewer than ${cell.samples} of the first ${candidate} samples fit ` +
                `${targetTokens} tokens (the length minus answer prefix and generation budget); raise the length`,
            );
          }
          const seed = babilongSampleSeed(cell.dataSeed, candidate);
          const bare = makeBabilongSample({
            task,
            seed,
            targetTokens: 0,
            tokenizer,
            haystack: [],
            prompt: evaluation.prompt,
          });
          if (bare.minimumTokens > targetTokens) {
            skipped++;
            continue;
          }
          samples.push(makeBabilongSample({
            task,
            seed,
            targetTokens,
            tokenizer,
            haystack: haystackSentences(seed),
            prompt: evaluation.prompt,
          }));
        }
        return { task, samples };
      });
      const hash = hashJson({
        answerPrefix: evaluation.answerPrefix,
        skipped,
        tasks: Object.fromEntries(tasks.map((t) => [t.task, t.samples.map((s) => s.hash)])),
      });
      return { family: "babilong", hash, tasks };
    }
    case "position-sweep": {
      const sweep = generatePositionSweep({
        lengths: [L],
        depths: evaluation.depths,
        samplesPerCell: cell.samples,
        seed: cell.dataSeed,
        distractors: evaluation.distractors,
        tokensToGenerate: evaluation.tokensToGenerate,
      }, tokenizer);
      return {
        family: "position-sweep",
        hash: hashJson(sweep.samples.map((s) => [s.input, s.answerPrefix, s.outputs])),
        sweep,
      };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Running the model on a cell's data.

/**
 * Evaluates one cell's data on a backend. `checkpoint` runs between samples (to stop on Ctrl-C).
 * @example const result = await evaluateCell(backend, cell, await cellData(cell, backend.tokenizer), () => {});
 */
export async function evaluateCell(
  backend: EvalBackend,
  cell: EvalCell,
  data: CellData,
  checkpoint: Checkpoint,
): Promise<CellEvaluation> {
  const started = performance.now();
  const result = data.family === "perplexity"
    ? await runPerplexity(backend, cell, data, checkpoint)
    : data.family === "ruler"
    ? await runRuler(backend, cell, data, checkpoint)
    : data.family === "babilong"
    ? await runBabilong(backend, cell, data, checkpoint)
    : await runSweep(backend, cell, data, checkpoint);
  return {
    ...result,
    evaluationSet: { key: `${cell.evaluation.name}@${cell.length}`, hash: data.hash },
    evalSeconds: (performance.now() - started) / 1000,
  };
}

type Partial = Omit<CellEvaluation, "evalSeconds" | "evaluationSet">;

async function runPerplexity(
  backend: EvalBackend,
  cell: EvalCell,
  data: Extract<CellData, { family: "perplexity" }>,
  checkpoint: Checkpoint,
): Promise<Partial> {
  const L = cell.length;
  const { protocol, eot } = data;
  const scorer = await backend.scorer(L);
  const documents: DocumentPerplexity[] = [];
  try {
    for (let i = 0; i < data.chunks.length; i++) {
      checkpoint();
      const tokens = data.chunks[i];
      const text = data.texts[i];
      const undo = await backend.beforeSample(text, tokens);
      try {
        documents.push(
          await scoreDocument(scorer, tokens, protocol, {
            words: lmEvalWordCount(text),
            bytes: utf8ByteCount(text),
          }),
        );
      } finally {
        await undo();
      }
    }
  } finally {
    scorer.destroy();
  }
  const report = aggregatePerplexity(protocol, documents);
  const perUnit = protocol.kind !== "longlora";
  const metrics: Record<string, Metric> = {
    token_ppl: { kind: "perplexity", value: report.tokenPerplexity, n: report.targets, ci95: null },
  };
  if (documents.length >= 2) {
    const pooled = (indices: Float64Array) => {
      let nll = 0, targets = 0;
      for (const i of indices) {
        nll += documents[i].nll;
        targets += documents[i].targets;
      }
      return Math.exp(nll / targets);
    };
    const { lo, hi } = bootstrapInterval(documents.map((_, i) => i), pooled, { seed: cell.dataSeed });
    metrics.token_ppl.ci95 = {
      lo: Math.min(lo, report.tokenPerplexity),
      hi: Math.max(hi, report.tokenPerplexity),
      method: "bootstrap",
    };
  }
  if (perUnit && report.bitsPerByte !== null) {
    metrics.bpb = { kind: "bits-per-byte", value: report.bitsPerByte, n: report.bytes, ci95: null };
  }
  if (perUnit && report.wordPerplexity !== null) {
    metrics.word_ppl = { kind: "perplexity", value: report.wordPerplexity, n: report.words, ci95: null };
  }
  const windowing = protocol.kind === "sliding"
    ? {
      kind: "sliding" as const,
      window: L,
      stride: protocol.stride,
      contextResetPerWindow: protocol.stride >= L,
    }
    : protocol.kind === "rolling"
    ? { kind: "rolling" as const, window: L, stride: L - 1, contextResetPerWindow: true }
    : { kind: "longlora" as const, window: L, stride: protocol.stride, contextResetPerWindow: true };
  return {
    family: "perplexity",
    primaryMetric: "token_ppl",
    metrics,
    extras: {
      perplexity: {
        nllNats: report.nll,
        targets: report.targets,
        words: perUnit ? report.words : null,
        bytes: perUnit ? report.bytes : null,
        tokenPerplexity: report.tokenPerplexity,
        wordPerplexity: report.wordPerplexity,
        bytePerplexity: report.bytePerplexity,
        bitsPerByte: report.bitsPerByte,
        protocol: {
          ...windowing,
          scoring: "concatenated",
          bos: protocol.kind === "rolling" ? `prefix token ${eot}` : "none",
        },
      },
    },
    evalTokens: documents.reduce((sum, d) => sum + d.targets, 0),
  };
}

/** Generates for one prompt, with the per-sample adaptation around it. */
async function generateOne(
  backend: EvalBackend,
  generator: CellGenerator,
  prompt: string,
  maxNewTokens: number,
  stop: readonly string[],
): Promise<Generation> {
  const tokens = backend.tokenizer.encode(prompt);
  const undo = await backend.beforeSample(prompt, tokens);
  try {
    return await generator.generate(prompt, { maxNewTokens, stop });
  } finally {
    await undo();
  }
}

/** Mean attention masses over samples, as report diagnostics. */
function attentionExtras(masses: AttentionMasses[]): NonNullable<Cell["extras"]["attention"]> {
  const mean = (pick: (m: AttentionMasses) => number | null) => {
    const values = masses.map(pick).filter((v): v is number => v !== null);
    return values.length === 0 ? null : values.reduce((a, b) => a + b, 0) / values.length;
  };
  const where = "the query predicting the first answer token, averaged over layers, heads and samples";
  const out: NonNullable<Cell["extras"]["attention"]> = {};
  const add = (name: string, value: number | null, what: string) => {
    if (value !== null) out[name] = { value, definition: `${what}; ${where}` };
  };
  add("sinkMass", mean((m) => m.sink), "softmax mass on the first 4 positions (plus any sink logit)");
  add("contextMass", mean((m) => m.context), "softmax mass on the context tokens outside the sinks");
  add("needleMass", mean((m) => m.needle), "softmax mass on the needle sentence's tokens");
  add("distractorMass", mean((m) => m.distractors), "softmax mass on all distractor needles' tokens");
  return out;
}

async function runRuler(
  backend: EvalBackend,
  cell: EvalCell,
  data: Extract<CellData, { family: "ruler" }>,
  checkpoint: Checkpoint,
): Promise<Partial> {
  const evaluation = cell.evaluation as Extract<ResolvedEvaluation, { family: "ruler" }>;
  const { tokenizer } = backend;
  const generator = await backend.generator(cell.length);
  const tasks: Record<string, { score: number; n: number }> = {};
  const sampleScores: number[] = [];
  const masses: AttentionMasses[] = [];
  let evalTokens = 0;
  try {
    for (const { task, samples } of data.tasks) {
      const metric = RULER_TASKS[task].metric === "string_match_all" ? stringMatchAll : stringMatchPart;
      const budget = Math.min(RULER_TASKS[task].tokensToGenerate, evaluation.maxNewTokens ?? Infinity);
      let total = 0;
      for (const sample of samples) {
        checkpoint();
        const prompt = sample.input + sample.answer_prefix;
        const out = await generateOne(backend, generator, prompt, budget, evaluation.stop);
        evalTokens += out.promptTokens + out.tokens.length;
        const score = metric(out.text, sample.outputs);
        total += score;
        sampleScores.push(score);
        if (evaluation.attention) {
          masses.push(await backend.attention(tokenizer.encode(prompt), contextRegions(tokenizer, prompt)));
        }
      }
      tasks[task] = { score: (100 * total) / samples.length, n: samples.length };
    }
  } finally {
    generator.destroy();
  }
  const taskScores = Object.values(tasks).map((t) => t.score);
  const value = taskScores.reduce((a, b) => a + b, 0) / taskScores.length;
  const extras: Cell["extras"] = { ruler: { tasks } };
  if (evaluation.attention) extras.attention = attentionExtras(masses);
  return {
    family: "ruler",
    primaryMetric: "score",
    metrics: { score: scoreMetric(sampleScores, value, cell.dataSeed) },
    extras,
    evalTokens,
  };
}

async function runBabilong(
  backend: EvalBackend,
  cell: EvalCell,
  data: Extract<CellData, { family: "babilong" }>,
  checkpoint: Checkpoint,
): Promise<Partial> {
  const evaluation = cell.evaluation as Extract<ResolvedEvaluation, { family: "babilong" }>;
  const { tokenizer } = backend;
  const generator = await backend.generator(cell.length);
  const tasks: Record<string, { accuracy: number; n: number }> = {};
  const masses: AttentionMasses[] = [];
  let official = 0, corrected = 0, n = 0, evalTokens = 0;
  try {
    for (const { task, samples } of data.tasks) {
      let right = 0;
      for (const sample of samples) {
        checkpoint();
        const prompt = sample.input + evaluation.answerPrefix;
        const out = await generateOne(backend, generator, prompt, evaluation.maxNewTokens, evaluation.stop);
        evalTokens += out.promptTokens + out.tokens.length;
        if (babilongOfficialCorrect(task, sample.answer, out.text, sample.question)) right++;
        if (babilongWholeWordCorrect(task, sample.answer, out.text, sample.question)) corrected++;
        if (evaluation.attention) {
          masses.push(await backend.attention(tokenizer.encode(prompt), contextRegions(tokenizer, prompt)));
        }
      }
      official += right;
      n += samples.length;
      tasks[task] = { accuracy: (100 * right) / samples.length, n: samples.length };
    }
  } finally {
    generator.destroy();
  }
  const extras: Cell["extras"] = { babilong: { tasks } };
  if (evaluation.attention) extras.attention = attentionExtras(masses);
  return {
    family: "babilong",
    primaryMetric: "accuracy",
    metrics: { accuracy: accuracyMetric(official, n), accuracy_corrected: accuracyMetric(corrected, n) },
    extras,
    evalTokens,
  };
}

async function runSweep(
  backend: EvalBackend,
  cell: EvalCell,
  data: Extract<CellData, { family: "position-sweep" }>,
  checkpoint: Checkpoint,
): Promise<Partial> {
  const evaluation = cell.evaluation as Extract<ResolvedEvaluation, { family: "position-sweep" }>;
  const { tokenizer } = backend;
  const { sweep } = data;
  const generator = await backend.generator(cell.length);
  const predictions: string[] = [];
  const masses: AttentionMasses[] = [];
  let evalTokens = 0;
  try {
    for (const sample of sweep.samples) {
      checkpoint();
      const prompt = sample.input + sample.answerPrefix;
      const out = await generateOne(backend, generator, prompt, sample.tokensToGenerate, evaluation.stop);
      evalTokens += out.promptTokens + out.tokens.length;
      predictions.push(out.text);
      if (evaluation.attention) {
        const regions = contextRegions(tokenizer, prompt);
        masses.push(
          await backend.attention(tokenizer.encode(prompt), {
            ...regions,
            needle: [sample.needle.span],
            distractors: sample.distractors.map((d) => d.span),
          }),
        );
      }
    }
  } finally {
    generator.destroy();
  }
  const scores = scorePositionSweep(sweep, predictions);
  const correct = scores.cells.reduce((sum, c) => sum + c.correct, 0);
  const total = scores.cells.reduce((sum, c) => sum + c.n, 0);
  const extras: Cell["extras"] = {
    positionSweep: {
      placement: sweep.placement,
      points: scores.byDepth.map((d) => ({ depthPercent: 100 * d.depth, score: 100 * d.accuracy, n: d.n })),
    },
  };
  if (evaluation.attention) extras.attention = attentionExtras(masses);
  return {
    family: "position-sweep",
    primaryMetric: "depth_avg",
    metrics: { depth_avg: accuracyMetric(correct, total) },
    extras,
    evalTokens,
  };
}

/**
 * Sink and context regions of a prompt: the first 4 tokens, and the context — the text between
 * `<context>` tags when the prompt has them (BABILong), else everything after the sinks.
 */
function contextRegions(tokenizer: Tokenizer, prompt: string): AttentionRegions {
  const length = tokenizer.encode(prompt).length;
  const sinks = Math.min(4, length);
  const open = prompt.indexOf("<context>\n");
  const close = prompt.indexOf("\n</context>");
  if (open >= 0 && close > open) {
    const start = Math.max(sinks, tokenizer.encode(prompt.slice(0, open + "<context>\n".length)).length);
    const end = tokenizer.encode(prompt.slice(0, close)).length;
    return { sinks, context: [{ start, end }], needle: [], distractors: [] };
  }
  return { sinks, context: [{ start: sinks, end: length }], needle: [], distractors: [] };
}
