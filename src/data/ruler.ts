/**
 * RULER's 13 synthetic tasks (NVIDIA/RULER; benchmarks spec §1), generated in the evaluated model's
 * own tokens. The task structure, haystack kinds, needle depths, key/value kinds, distractors,
 * counts, token budgets and metrics follow the upstream generators; the template wording is the
 * project's own (upstream wording can be loaded from a file with `loadRulerTemplates`), so scores
 * are comparable in kind, not byte for byte, with published RULER numbers.
 *
 * Lengths include the template, the answer prefix and the generation budget, as upstream counts
 * them; the number of haystack units is found by binary search.
 */
import { z } from "zod";
import { Rng } from "../random/philox.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** The 13 task names, in RULER's order. */
export const RULER_TASK_NAMES = [
  "niah_single_1",
  "niah_single_2",
  "niah_single_3",
  "niah_multikey_1",
  "niah_multikey_2",
  "niah_multikey_3",
  "niah_multivalue",
  "niah_multiquery",
  "vt",
  "cwe",
  "fwe",
  "qa_1",
  "qa_2",
] as const;
export type RulerTaskName = typeof RULER_TASK_NAMES[number];

type Family = "niah" | "vt" | "cwe" | "fwe" | "qa";
type Haystack = "noise" | "essay" | "needle";
type KeyKind = "words" | "numbers" | "uuids";

/** One task's configuration, as in upstream `synthetic.yaml`. */
export interface RulerTask {
  name: RulerTaskName;
  family: Family;
  metric: "string_match_all" | "string_match_part";
  tokensToGenerate: number;
  haystack?: Haystack;
  keyKind?: KeyKind;
  valueKind?: KeyKind;
  /** Keys, values per key, queried keys. */
  k?: number;
  v?: number;
  q?: number;
}

const niah = (
  name: RulerTaskName,
  haystack: Haystack,
  keyKind: KeyKind,
  valueKind: KeyKind,
  k: number,
  v: number,
  q: number,
): RulerTask => ({
  name,
  family: "niah",
  metric: "string_match_all",
  tokensToGenerate: 128,
  haystack,
  keyKind,
  valueKind,
  k: Math.max(k, q),
  v,
  q,
});

/** Every task's configuration by name. */
export const RULER_TASKS: Record<RulerTaskName, RulerTask> = {
  niah_single_1: niah("niah_single_1", "noise", "words", "numbers", 1, 1, 1),
  niah_single_2: niah("niah_single_2", "essay", "words", "numbers", 1, 1, 1),
  niah_single_3: niah("niah_single_3", "essay", "words", "uuids", 1, 1, 1),
  niah_multikey_1: niah("niah_multikey_1", "essay", "words", "numbers", 4, 1, 1),
  niah_multikey_2: niah("niah_multikey_2", "needle", "words", "numbers", 1, 1, 1),
  niah_multikey_3: niah("niah_multikey_3", "needle", "uuids", "uuids", 1, 1, 1),
  niah_multivalue: niah("niah_multivalue", "essay", "words", "numbers", 1, 4, 1),
  niah_multiquery: niah("niah_multiquery", "essay", "words", "numbers", 1, 1, 4),
  vt: { name: "vt", family: "vt", metric: "string_match_all", tokensToGenerate: 30, haystack: "noise" },
  cwe: { name: "cwe", family: "cwe", metric: "string_match_all", tokensToGenerate: 120 },
  fwe: { name: "fwe", family: "fwe", metric: "string_match_all", tokensToGenerate: 50 },
  qa_1: { name: "qa_1", family: "qa", metric: "string_match_part", tokensToGenerate: 32 },
  qa_2: { name: "qa_2", family: "qa", metric: "string_match_part", tokensToGenerate: 32 },
};

/** A template and its answer prefix; `{context}`, `{query}`, `{type}`, `{num_v}` are filled in. */
export interface RulerTemplate {
  template: string;
  answerPrefix: string;
}

/** The project's own wording of each family's template (structure as upstream, §1.3–1.7). */
export const DEFAULT_TEMPLATES: Record<Family, RulerTemplate> = {
  niah: {
    template: "Some special magic {type} are hidden in the text below. Memorise them: you will be " +
      "asked about the {type} afterwards.\n{context}\nWhich special magic {type} for {query} are " +
      "mentioned in the text above?",
    answerPrefix: " Some special magic {type} for {query} mentioned in the provided text are",
  },
  vt: {
    template: "Memorise and follow every chain of variable assignments hidden in the text below.\n\n" +
      "{context}\nQuestion: Which variables are assigned the value {query} in the text above?",
    answerPrefix: " Answer: Following the chains of assignments above, {num_v} variables are assigned " +
      "the value {query}, they are: ",
  },
  cwe: {
    template: "Below is a numbered list of words. Some words appear more often than others; " +
      "remember which.\n{context}\nQuestion: Which 10 words appear most often in the list above?",
    answerPrefix: " Answer: The 10 words that appear most often in the list are:",
  },
  fwe: {
    template: "Read the coded text below and count how often each coded word occurs. Find the three " +
      "coded words that occur most often. {context}\nQuestion: Give no explanation and ignore the " +
      "dots '....'. Which three words occur most often in the coded text above?",
    answerPrefix: " Answer: In the coded text above, the three words that occur most often are:",
  },
  qa: {
    template: "Answer the question from the documents below. Reply with the answer only, no other " +
      "words.\n\nThe documents:\n\n{context}\n\nAnswer the question from the documents above. Reply " +
      "with the answer only, no other words.\n\nQuestion: {query}",
    answerPrefix: " Answer:",
  },
};

const templateFileSchema = z.record(
  z.enum(["niah", "vt", "cwe", "fwe", "qa"]),
  z.object({ template: z.string().min(1), answerPrefix: z.string() }).strict(),
);

/**
 * Loads template wording from a JSON file `{family: {template, answerPrefix}}` (e.g. upstream's
 * constants transcribed by the user); families not in the file keep the project's wording.
 */
export async function loadRulerTemplates(path: string): Promise<Record<Family, RulerTemplate>> {
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(path));
  } catch (err) {
    throw new Error(`${path}: cannot read RULER templates: ${(err as Error).message}`);
  }
  const parsed = templateFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${path}: ${issue.path.join(".") || "(root)"}: ${issue.message}`);
  }
  for (const [family, t] of Object.entries(parsed.data)) {
    if (!t.template.includes("{context}")) throw new Error(`${path}: ${family}.template has no {context}`);
  }
  return { ...DEFAULT_TEMPLATES, ...parsed.data };
}

/** A question with its supporting documents, for qa_1 (one gold document) and qa_2 (two hops). */
export interface QaItem {
  question: string;
  answers: string[];
  gold: string[];
  /** Other documents of the same article (SQuAD), placed right after the gold ones. */
  related?: string[];
}

/** What the generators draw text from. */
export interface RulerSources {
  /** Long prose for essay haystacks (repeated if too short); the project's generated corpus by default. */
  essay: string;
  /** QA pools; when absent, built from `essay` paragraphs with synthetic facts. */
  qa1?: { items: QaItem[]; pool: string[] };
  qa2?: { items: QaItem[]; pool: string[] };
  templates?: Record<Family, RulerTemplate>;
  /** Wraps a prompt in the model's chat template; identity for base models. */
  chatTemplate?: (prompt: string) => string;
}

/** One generated sample, in the fields of RULER's `validation.jsonl`. */
export interface RulerSample {
  index: number;
  task: RulerTaskName;
  input: string;
  outputs: string[];
  /** Tokens of input + answer prefix + the generation budget. */
  length: number;
  answer_prefix: string;
  tokens_to_generate: number;
  /** Needle depths in percent (essay NIAH) for position analyses. */
  depths?: number[];
  /** CWE repeat-count variant used (see CWE_VARIANTS). */
  variant?: string;
}

/** Options of a generation run. */
export interface RulerOptions {
  task: RulerTaskName;
  maxLength: number;
  samples: number;
  seed: number;
  tokenizer: Tokenizer;
  sources: RulerSources;
}

// ---------------------------------------------------------------------------------------------
// Word lists (the project's own) for keys, values and the CWE vocabulary.

const ADJECTIVES = (
  "amber ancient angry arctic ashen autumn bitter blazing bold brave breezy brisk bronze calm candid " +
  "careful cheerful chilly clever cloudy coastal cobalt crimson crisp curious daring dusty eager early " +
  "earnest elegant empty faint fearless fierce fragile frosty gentle giant gilded glad golden graceful " +
  "grand gray hasty hidden hollow honest humble icy idle jolly keen kind lively lonely loyal lucky lunar " +
  "mellow merry mighty misty modest narrow noble nimble odd olive patient plain polite proud quick quiet " +
  "rapid rare restless rosy royal rustic sandy scarlet secret serene sharp shy silent silver simple " +
  "sleepy slender smooth solar solemn sparse spicy steady stormy sturdy sunny swift tender thorny tidy " +
  "tiny tranquil urban velvet vivid wandering warm wary wild windy wise witty wooden young zealous"
).split(" ");

const NOUNS = (
  "acorn anchor anvil apple arrow attic badge bakery banner barrel basket beacon bell bench bicycle " +
  "blanket boat bottle bracelet bridge brook bucket cabin camel candle canoe canyon carpet castle cellar " +
  "chimney cliff clock cloud comet compass cottage crater crown dagger desert dolphin dragon drum eagle " +
  "engine falcon feather fence ferry fiddle forest fountain fox garden glacier goblet harbor harp hawk " +
  "helmet hill horizon island jacket journal kettle kite ladder lagoon lantern lemon lighthouse lizard " +
  "locket magnet meadow mirror monastery mountain needle oak orchard otter owl paddle palace parrot " +
  "pebble pepper piano pillow pine planet plum pond quarry quill rabbit raven ribbon river rocket saddle " +
  "scroll shell shovel signal spoon spring statue stove sparrow telescope temple thimble tiger tower " +
  "trumpet tunnel umbrella valley violin wagon walnut whistle window wolf"
).split(" ");

const VERBS = (
  "admire bake balance borrow build carry carve chase climb collect cook dance deliver dig drift " +
  "explore fetch fold gather guard hammer harvest hike hum juggle knit launch listen mend mix paint " +
  "plant polish pour repair ride roam row sail scatter sew shelter sketch sort stitch sweep swim trace " +
  "travel wander weave whisper"
).split(" ");

const SYLLABLES =
  "ba be bi bo bu da de di do du fa fe fi fo ka ke ki ko la le li lo lu ma me mi mo mu na ne ni no " +
  "pa pe pi po ra re ri ro ru sa se si so ta te ti to tu va ve vi vo za zo".split(" ");

/** The CWE vocabulary: real words, then pronounceable pseudo-words as upstream falls back to a bigger list. */
function cweVocabulary(needed: number): string[] {
  const words = [...new Set([...NOUNS, ...ADJECTIVES, ...VERBS])].sort();
  const seen = new Set(words);
  for (let i = 0; words.length < needed; i++) {
    let w = "";
    for (let n = i;; n = Math.floor(n / SYLLABLES.length) - 1) {
      w = SYLLABLES[n % SYLLABLES.length] + w;
      if (n < SYLLABLES.length) break;
    }
    w += "n";
    if (!seen.has(w)) {
      seen.add(w);
      words.push(w);
    }
  }
  return words;
}

// ---------------------------------------------------------------------------------------------
// Random draws shared by the generators.

function randomWordKey(rng: Rng): string {
  return `${rng.pick(ADJECTIVES)}-${rng.pick(NOUNS)}`;
}

function randomNumber(rng: Rng, digits: number): string {
  const lo = 10 ** (digits - 1);
  return String(lo + rng.int(9 * lo));
}

function randomUuid(rng: Rng): string {
  const words = [rng.u32(), rng.u32(), rng.u32(), rng.u32()];
  words[1] = (words[1] & 0xffff0fff) | 0x00004000; // version 4
  words[2] = (words[2] & 0x3fffffff) | 0x80000000; // RFC 4122 variant
  const hex = words.map((w) => (w >>> 0).toString(16).padStart(8, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function draw(rng: Rng, kind: KeyKind): string {
  return kind === "words" ? randomWordKey(rng) : kind === "numbers" ? randomNumber(rng, 7) : randomUuid(rng);
}

/** k distinct indices from [0, n), in drawn order. */
function sampleIndices(rng: Rng, n: number, k: number): number[] {
  const all = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(n - i);
    [all[i], all[j]] = [all[j], all[i]];
  }
  return all.slice(0, k);
}

function fill(template: string, values: Record<string, string>): string {
  return template.replace(/\{(\w+)\}/g, (m, key: string) => values[key] ?? m);
}

const NOISE_UNIT = "The river runs past the old mill. The hills are quiet today. The lamp in the window is " +
  "still lit. On we walk. Round the bend and back again.";

/** Upstream's 40 depths: round(linspace(0, 100, 40)). */
export const NIAH_DEPTHS = Array.from({ length: 40 }, (_, i) => Math.round((100 * i) / 39));

function essayWords(essay: string): string[] {
  const words = essay.split(/\s+/).filter((w) => w.length > 0);
  if (words.length === 0) throw new Error("RULER: the essay haystack text is empty");
  return words;
}

function splitSentences(text: string): string[] {
  return text.match(/[^.!?]+[.!?]+["')\]]*\s*|[^.!?]+$/g)?.map((s) => s.trim()).filter((s) => s) ?? [];
}

// ---------------------------------------------------------------------------------------------
// The generators: each builds (prompt, answers) for a haystack size `units`.

interface Built {
  body: string;
  query: string;
  outputs: string[];
  extra?: Record<string, string>;
  depths?: number[];
  /** Text placed before the template (a one-shot demo). */
  prefix?: string;
}

function buildNiah(task: RulerTask, units: number, rng: Rng, words: string[]): Built {
  const keys: string[] = [];
  const values: string[][] = [];
  const needles: string[] = [];
  const type = task.valueKind!;
  for (let i = 0; i < task.k!; i++) {
    let key = draw(rng, task.keyKind!);
    while (keys.includes(key)) key = draw(rng, task.keyKind!);
    keys.push(key);
    const vals: string[] = [];
    for (let j = 0; j < task.v!; j++) {
      const value = draw(rng, type);
      vals.push(value);
      needles.push(`One of the special magic ${type} for ${key} is: ${value}.`);
    }
    values.push(vals);
  }
  new Rng(rng.u32(), 1).shuffle(needles);
  let body: string;
  let depths: number[] | undefined;
  if (task.haystack === "essay") {
    const text = Array.from({ length: units }, (_, i) => words[i % words.length]).join(" ");
    const sentences = splitSentences(text);
    depths = sampleIndices(rng, NIAH_DEPTHS.length, needles.length).map((i) => NIAH_DEPTHS[i]).sort((a, b) =>
      a - b
    );
    const positions = depths.map((d) => Math.floor((sentences.length * d) / 100));
    const parts: string[] = [];
    let last = 0;
    positions.forEach((p, i) => {
      parts.push(...sentences.slice(last, p), needles[i]);
      last = p;
    });
    parts.push(...sentences.slice(last));
    body = parts.join(" ");
  } else {
    const haystack: string[] = task.haystack === "noise"
      ? Array(units).fill(NOISE_UNIT)
      : Array.from({ length: units }, () => {
        const key = draw(rng, task.keyKind!);
        return `One of the special magic ${type} for ${key} is: ${draw(rng, type)}.`;
      });
    const positions = sampleIndices(rng, units + 1, needles.length).sort((a, b) => b - a);
    positions.forEach((p, i) => haystack.splice(p, 0, needles[i]));
    body = haystack.join("\n");
  }
  const queried = sampleIndices(rng, keys.length, task.q!);
  const queryKeys = queried.map((i) => keys[i]);
  const query = queryKeys.length === 1
    ? queryKeys[0]
    : `${queryKeys.slice(0, -1).join(", ")}, and ${queryKeys[queryKeys.length - 1]}`;
  return { body, query, outputs: queried.flatMap((i) => values[i]), depths, extra: { type } };
}

function randomVarName(rng: Rng, letters: number): string {
  let s = "";
  for (let i = 0; i < letters; i++) s += String.fromCharCode(65 + rng.int(26));
  return s;
}

function vtChain(rng: Rng, hops: number, value: string): string[] {
  const names = new Set<string>();
  while (names.size < hops + 1) names.add(randomVarName(rng, 5));
  const vars = [...names];
  return vars.map((v, i) => i === 0 ? `VAR ${v} = ${value}` : `VAR ${v} = VAR ${vars[i - 1]}`);
}

function vtBody(rng: Rng, units: number, statements: string[]): string {
  const haystack: string[] = Array(units).fill(NOISE_UNIT);
  // Sorted draws (repeats allowed, so a short demo haystack still holds the whole chain), inserted
  // in chain order, each shifted by the statements already placed.
  const positions = statements.map(() => rng.int(units + 1)).sort((a, b) => a - b);
  positions.forEach((p, i) => haystack.splice(p + i, 0, statements[i]));
  return haystack.join("\n");
}

function buildVt(units: number, rng: Rng, template: RulerTemplate): Built {
  const hops = 4;
  // The one-shot demo: a short chain in a little noise, answered in full (upstream builds it at
  // 500 tokens and renames its variables per sample; drawing fresh names here is the same).
  const demoValue = randomNumber(rng, 5);
  const demoChain = vtChain(rng, hops, demoValue);
  const demoVars = demoChain.map((s) => s.split(" ")[1]);
  const demo = fill(template.template, { context: vtBody(rng, 3, demoChain), query: demoValue }) +
    fill(template.answerPrefix, { num_v: String(hops + 1), query: demoValue }) + demoVars.join(" ") + "\n";
  const value = randomNumber(rng, 5);
  const chain = vtChain(rng, hops, value);
  return {
    body: vtBody(rng, units, chain),
    query: value,
    outputs: chain.map((s) => s.split(" ")[1]),
    extra: { num_v: String(hops + 1) },
    prefix: demo,
  };
}

function cweList(rng: Rng, vocab: string[], nWords: number, freqCommon: number, freqRare: number): {
  text: string;
  common: string[];
} {
  const chosen = sampleIndices(rng, vocab.length, nWords).map((i) => vocab[i]);
  const common = chosen.slice(0, 10);
  const list = [
    ...common.flatMap((w) => Array(freqCommon).fill(w)),
    ...chosen.slice(10).flatMap((w) => Array(freqRare).fill(w)),
  ];
  new Rng(rng.u32(), 2).shuffle(list);
  return { text: list.map((w, i) => `${i + 1}. ${w}`).join(" "), common };
}

/**
 * CWE's repeat counts. Upstream uses "standard" from 4096 tokens and "small" below. Byte-level
 * tokenizers spend ~4× more tokens per list item, so when neither fits the budget the generator
 * steps down to "tiny" (a project extension, recorded in each sample's `variant`).
 */
export const CWE_VARIANTS = {
  standard: { demoWords: 40, demoCommon: 10, demoRare: 3, common: 30, rare: 3 },
  small: { demoWords: 20, demoCommon: 3, demoRare: 1, common: 6, rare: 1 },
  tiny: { demoWords: 0, demoCommon: 0, demoRare: 0, common: 3, rare: 1 },
} as const;
type CweVariant = keyof typeof CWE_VARIANTS;

function buildCwe(
  units: number,
  rng: Rng,
  variant: CweVariant,
  template: RulerTemplate,
  vocabSeed: number,
): Built {
  const v = CWE_VARIANTS[variant];
  const nWords = Math.max(10, units);
  const vocab = new Rng(vocabSeed, 3).shuffle(cweVocabulary(nWords + 40));
  let prefix = "";
  if (v.demoWords > 0) {
    const demo = cweList(rng, vocab, v.demoWords, v.demoCommon, v.demoRare);
    prefix = fill(template.template, { context: demo.text }) + template.answerPrefix + " " +
      demo.common.map((w, i) => `${i + 1}. ${w}`).join(" ") + "\n";
  }
  const real = cweList(rng, vocab, nWords, v.common, v.rare);
  return { body: real.text, query: "", outputs: real.common, prefix, extra: { variant } };
}

const ZETA_2 = Math.PI * Math.PI / 6; // ζ(α) for RULER's α = 2

function buildFwe(numWords: number, rng: Rng, maxLength: number, tokensToGenerate: number): Built {
  const vocabSize = Math.max(4, Math.floor((maxLength - tokensToGenerate) / 50));
  const codes = new Set<string>();
  while (codes.size < vocabSize) {
    let w = "";
    for (let i = 0; i < 6; i++) w += String.fromCharCode(97 + rng.int(26));
    codes.add(w);
  }
  const vocab = new Rng(rng.u32(), 4).shuffle([...codes].sort());
  vocab[0] = "...";
  const words: string[] = [];
  vocab.forEach((w, k) => {
    const count = Math.floor((numWords * (k + 1) ** -2) / ZETA_2);
    for (let i = 0; i < count; i++) words.push(w);
  });
  new Rng(rng.u32(), 5).shuffle(words);
  return { body: words.join(" "), query: "", outputs: vocab.slice(1, 4) };
}

/**
 * Synthetic QA pools from prose, used when no SQuAD/HotpotQA file is given: each document is a
 * paragraph of the essay with one invented fact; qa_1 asks a one-document question, qa_2 a two-hop
 * question whose two facts sit in different documents.
 */
export function syntheticQa(
  essay: string,
  hops: 1 | 2,
  seed: number,
  count = 200,
): { items: QaItem[]; pool: string[] } {
  const rng = new Rng(seed, 6);
  const sentences = splitSentences(essay);
  const paragraph = () => {
    const start = rng.int(Math.max(1, sentences.length - 4));
    return sentences.slice(start, start + 4).join(" ");
  };
  const items: QaItem[] = [];
  const pool: string[] = [];
  const used = new Set<string>();
  const person = () => {
    let name: string;
    do name = `${capitalise(rng.pick(ADJECTIVES))} ${capitalise(rng.pick(NOUNS))}`; while (used.has(name));
    used.add(name);
    return name;
  };
  for (let i = 0; i < count; i++) {
    if (hops === 1) {
      const who = person();
      const craft = rng.pick(VERBS);
      const doc = `${paragraph()} ${who} earns a living by learning to ${craft}.`;
      items.push({
        question: `What does ${who} earn a living by learning to do?`,
        answers: [craft],
        gold: [doc],
      });
      pool.push(doc);
    } else {
      const who = person();
      const town = `${capitalise(rng.pick(NOUNS))}ton`;
      const region = `${capitalise(rng.pick(ADJECTIVES))} ${capitalise(rng.pick(NOUNS))} Vale`;
      const doc1 = `${town}\n${paragraph()} ${who} grew up in ${town}.`;
      const doc2 = `${region}\n${paragraph()} The town of ${town} lies in ${region}.`;
      items.push({ question: `In which region did ${who} grow up?`, answers: [region], gold: [doc1, doc2] });
      pool.push(doc1, doc2);
    }
  }
  for (let i = 0; i < count * 4; i++) pool.push(paragraph());
  return { items, pool: [...new Set(pool)].sort() };
}

const squadSchema = z.object({
  data: z.array(z.object({
    title: z.string(),
    paragraphs: z.array(z.object({
      context: z.string(),
      qas: z.array(z.object({
        question: z.string(),
        answers: z.array(z.object({ text: z.string() })),
        is_impossible: z.boolean().optional(),
      })),
    })),
  })),
});

const hotpotSchema = z.array(z.object({
  question: z.string(),
  answer: z.string(),
  context: z.array(z.tuple([z.string(), z.array(z.string())])),
}));

async function readJson(path: string, what: string): Promise<unknown> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (err) {
    throw new Error(`${path}: cannot read ${what}: ${(err as Error).message}`);
  }
}

function schemaError(path: string, error: z.ZodError): Error {
  const issue = error.issues[0];
  return new Error(`${path}: field ${issue.path.join(".") || "(root)"}: ${issue.message}`);
}

/**
 * qa_1's pool from SQuAD v2.0 dev (§1.7): unanswerable questions dropped, unique paragraphs sorted,
 * the other paragraphs of the same article placed after the gold one.
 */
export async function loadSquadQa(path: string): Promise<{ items: QaItem[]; pool: string[] }> {
  const parsed = squadSchema.safeParse(await readJson(path, "SQuAD JSON"));
  if (!parsed.success) throw schemaError(path, parsed.error);
  const items: QaItem[] = [];
  const pool = new Set<string>();
  for (const article of parsed.data.data) {
    const contexts = article.paragraphs.map((p) => p.context);
    for (const p of article.paragraphs) {
      pool.add(p.context);
      for (const qa of p.qas) {
        if (qa.is_impossible || qa.answers.length === 0) continue;
        items.push({
          question: qa.question,
          answers: [...new Set(qa.answers.map((a) => a.text))],
          gold: [p.context],
          related: contexts.filter((c) => c !== p.context),
        });
      }
    }
  }
  if (items.length === 0) throw new Error(`${path}: no answerable SQuAD questions`);
  return { items, pool: [...pool].sort() };
}

/** qa_2's pool from HotpotQA dev distractor (§1.7): all 10 paragraphs of a question are its gold set. */
export async function loadHotpotQa(path: string): Promise<{ items: QaItem[]; pool: string[] }> {
  const parsed = hotpotSchema.safeParse(await readJson(path, "HotpotQA JSON"));
  if (!parsed.success) throw schemaError(path, parsed.error);
  const pool = new Set<string>();
  const items = parsed.data.map((q) => {
    const docs = q.context.map(([title, sentences]) => `${title}\n${sentences.join("")}`);
    docs.forEach((d) => pool.add(d));
    return { question: q.question, answers: [q.answer], gold: docs };
  });
  if (items.length === 0) throw new Error(`${path}: no HotpotQA questions`);
  return { items, pool: [...pool].sort() };
}

function capitalise(w: string): string {
  return w[0].toUpperCase() + w.slice(1);
}

function buildQa(docs: number, itemIndex: number, rng: Rng, qa: { items: QaItem[]; pool: string[] }): Built {
  const item = qa.items[itemIndex % qa.items.length];
  const chosen = [...item.gold, ...(item.related ?? [])];
  const gold = new Set(chosen);
  // Distractors come from the rest of the pool; a pool smaller than the request is repeated (§1.7).
  const rest = qa.pool.filter((d) => !gold.has(d));
  const others = rest.length > 0 ? rest : qa.pool;
  while (chosen.length < docs) chosen.push(others[rng.int(others.length)]);
  const set = chosen.slice(0, Math.max(docs, item.gold.length));
  new Rng(rng.u32(), 7).shuffle(set);
  return {
    body: set.map((d, i) => `Document ${i + 1}:\n${d}`).join("\n\n"),
    query: item.question,
    outputs: item.answers,
  };
}

// ---------------------------------------------------------------------------------------------
// Assembling prompts and hitting the length.

/** Upstream's singular rewrite of the NIAH answer prefix when one value is asked for. */
export function singularNiahPrefix(prefix: string): string {
  return prefix.replace("Some", "A").replace("are all", "is").replace("are", "is").replace(
    "answers",
    "answer",
  );
}

function assemble(
  task: RulerTask,
  built: Built,
  templates: Record<Family, RulerTemplate>,
  chat: (p: string) => string,
): {
  input: string;
  answerPrefix: string;
} {
  const template = templates[task.family];
  const values = {
    context: built.body,
    query: built.query,
    type: built.extra?.type ?? "",
    num_v: built.extra?.num_v ?? "",
  };
  let prefixTemplate = template.answerPrefix;
  let prefixType = values.type;
  if (task.family === "niah" && task.q! * task.v! === 1) {
    prefixTemplate = singularNiahPrefix(prefixTemplate);
    prefixType = values.type.replace(/s$/, "");
  }
  const input = chat((built.prefix ?? "") + fill(template.template, values));
  return { input, answerPrefix: fill(prefixTemplate, { ...values, type: prefixType }) };
}

interface Measured {
  built: Built;
  input: string;
  answerPrefix: string;
  length: number;
}

/** A requested length below what a task needs; `minimum` is the smallest length that fits sample 0. */
export class RulerLengthError extends RangeError {
  constructor(message: string, readonly minimum: number) {
    super(message);
    this.name = "RulerLengthError";
  }
}

/** The smallest length (in the tokenizer's tokens) at which `task`'s first sample fits. */
export function rulerMinimumLength(opts: Omit<RulerOptions, "maxLength" | "samples">): number {
  try {
    generateRuler({ ...opts, maxLength: 1, samples: 1 });
  } catch (error) {
    if (error instanceof RulerLengthError) return error.minimum;
    throw error;
  }
  return 1;
}

/**
 * Generates `samples` samples of one task at `maxLength` tokens (template, answer prefix and the
 * generation budget included). Throws when even the smallest haystack does not fit.
 */
export function generateRuler(opts: RulerOptions): RulerSample[] {
  const task = RULER_TASKS[opts.task];
  if (!task) {
    throw new Error(`unknown RULER task "${opts.task}"; known tasks: ${RULER_TASK_NAMES.join(", ")}`);
  }
  if (!Number.isInteger(opts.maxLength) || opts.maxLength <= 0) {
    throw new RangeError(`RULER ${opts.task}: maxLength ${opts.maxLength} must be a positive integer`);
  }
  const templates = opts.sources.templates ?? DEFAULT_TEMPLATES;
  const chat = opts.sources.chatTemplate ?? ((p: string) => p);
  const words = task.haystack === "essay" ? essayWords(opts.sources.essay) : [];
  const qa = task.family === "qa"
    ? (opts.task === "qa_1" ? opts.sources.qa1 : opts.sources.qa2) ??
      syntheticQa(opts.sources.essay, opts.task === "qa_1" ? 1 : 2, opts.seed)
    : undefined;
  const vocabSeed = opts.seed;
  let cweVariant: CweVariant = opts.maxLength < 4096 ? "small" : "standard";

  const build = (units: number, sampleIndex: number): Measured => {
    const rng = new Rng(opts.seed, 1000 + sampleIndex);
    const built = task.family === "niah"
      ? buildNiah(task, units, rng, words)
      : task.family === "vt"
      ? buildVt(units, rng, templates.vt)
      : task.family === "cwe"
      ? buildCwe(units, rng, cweVariant, templates.cwe, vocabSeed)
      : task.family === "fwe"
      ? buildFwe(units, rng, opts.maxLength, task.tokensToGenerate)
      : buildQa(units, sampleIndex, rng, qa!);
    const { input, answerPrefix } = assemble(task, built, templates, chat);
    const length = opts.tokenizer.encode(input + answerPrefix).length + task.tokensToGenerate;
    return { built, input, answerPrefix, length };
  };
  const fits = (units: number, sample: number) => build(units, sample).length <= opts.maxLength;

  const minUnits = task.family === "niah" && task.haystack === "essay" ? 1 : task.family === "cwe" ? 10 : 1;
  while (task.family === "cwe" && !fits(minUnits, 0) && cweVariant !== "tiny") {
    cweVariant = cweVariant === "standard" ? "small" : "tiny";
  }
  if (!fits(minUnits, 0)) {
    const minimum = build(minUnits, 0).length;
    throw new RulerLengthError(
      `RULER ${opts.task}: ${opts.maxLength} tokens is below the task's minimum of ` +
        `${minimum} (template, answer prefix, ${task.tokensToGenerate} generated tokens)`,
      minimum,
    );
  }
  const units = task.family === "fwe"
    ? fweWordCount(opts.maxLength, fits)
    : largestFitting(minUnits, fits, (n) => build(n, 0).length, opts.maxLength);
  // A sample whose own random draws overflow steps down by 1% of the units (upstream steps by its
  // probe increment, which can leave a sample hundreds of tokens short).
  const increment = Math.max(1, Math.floor(units / 100));
  const out: RulerSample[] = [];
  for (let i = 0; i < opts.samples; i++) {
    let n = units;
    let m = build(n, i);
    while (m.length > opts.maxLength && n > minUnits) {
      n = Math.max(minUnits, n - increment);
      m = build(n, i);
    }
    if (m.length > opts.maxLength) {
      throw new RangeError(`RULER ${opts.task}: sample ${i} does not fit in ${opts.maxLength} tokens`);
    }
    out.push({
      index: i,
      task: opts.task,
      input: m.input,
      outputs: m.built.outputs,
      length: m.length,
      answer_prefix: m.answerPrefix,
      tokens_to_generate: task.tokensToGenerate,
      ...(m.built.depths ? { depths: m.built.depths } : {}),
      ...(m.built.extra?.variant ? { variant: m.built.extra.variant } : {}),
    });
  }
  return out;
}

// The largest unit count that fits: estimate tokens per unit from two probes, bracket the estimate,
// then bisect (each probe encodes a whole prompt, so the bracket keeps the count of encodes small).
function largestFitting(
  min: number,
  fits: (units: number, sample: number) => boolean,
  lengthOf: (units: number) => number,
  budget: number,
): number {
  const probe = min + 16;
  const base = lengthOf(min);
  const perUnit = Math.max(1e-3, (lengthOf(probe) - base) / (probe - min));
  const estimate = Math.max(min, Math.floor(min + (budget - base) / perUnit));
  let lo = Math.max(min, Math.floor(estimate * 0.9));
  let hi = Math.max(lo + 1, Math.ceil(estimate * 1.1) + 1);
  while (!fits(lo, 0) && lo > min) {
    hi = lo;
    lo = Math.max(min, Math.floor(lo / 2));
  }
  while (fits(hi, 0)) {
    lo = hi;
    hi *= 2;
    // Every unit adds text, so a prompt that still fits at 8 units per budget token is not growing.
    if (hi > 8 * budget) {
      throw new Error(`RULER: the haystack does not grow with its unit count (${hi} units)`);
    }
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid, 0)) lo = mid;
    else hi = mid;
  }
  return lo;
}

// FWE's own schedule (§1.6): start at maxLen/6 words and add maxLen/32 until it overflows.
function fweWordCount(maxLength: number, fits: (units: number, sample: number) => boolean): number {
  const step = Math.max(1, Math.floor(maxLength / 32));
  let n = Math.max(1, Math.floor(maxLength / 6));
  if (!fits(n, 0)) {
    while (n > step && !fits(n, 0)) n -= step;
    return n;
  }
  while (fits(n + step, 0)) n += step;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Metrics and aggregation (§1.8, §1.9).

/** Upstream post-processing: strip, control characters to newlines, strip again. */
export function postprocessPrediction(prediction: string): string {
  // deno-lint-ignore no-control-regex
  return prediction.trim().replace(/[\x00-\x1f]/g, "\n").trim();
}

/** Fraction of gold strings found as case-insensitive substrings. */
export function stringMatchAll(prediction: string, outputs: readonly string[]): number {
  const p = postprocessPrediction(prediction).toLowerCase();
  return outputs.filter((o) => p.includes(o.toLowerCase())).length / outputs.length;
}

/** 1 if any gold string is a case-insensitive substring, else 0 (upstream RULER, not lm-eval's port). */
export function stringMatchPart(prediction: string, outputs: readonly string[]): number {
  const p = postprocessPrediction(prediction).toLowerCase();
  return outputs.some((o) => p.includes(o.toLowerCase())) ? 1 : 0;
}

/** A task's score (0–100) over its samples with the task's own metric. */
export function scoreRulerTask(
  task: RulerTaskName,
  predictions: readonly string[],
  samples: readonly RulerSample[],
): number {
  if (predictions.length !== samples.length) {
    throw new RangeError(`RULER ${task}: ${predictions.length} predictions for ${samples.length} samples`);
  }
  const metric = RULER_TASKS[task].metric === "string_match_all" ? stringMatchAll : stringMatchPart;
  const total = predictions.reduce((s, p, i) => s + metric(p, samples[i].outputs), 0);
  return Math.round((10000 * total) / Math.max(1, samples.length)) / 100;
}

/** RULER's threshold for the effective length: Llama-2-7B-chat's 4K score. */
export const RULER_EFFECTIVE_THRESHOLD = 85.6;

/** Per-length means, the average, the two length-weighted averages and the effective length. */
export interface RulerAggregate {
  perLength: { length: number; score: number }[];
  average: number;
  weightedIncreasing: number;
  weightedDecreasing: number;
  /** Largest tested length whose score exceeds the threshold, or null. */
  effectiveLength: number | null;
}

/** Aggregates task scores {length: {task: score}} as RULER's README does. */
export function aggregateRuler(
  scores: Record<number, Partial<Record<RulerTaskName, number>>>,
): RulerAggregate {
  const perLength = Object.keys(scores).map(Number).sort((a, b) => a - b).map((length) => {
    const values = Object.values(scores[length]) as number[];
    if (values.length === 0) throw new RangeError(`RULER aggregate: no task scores at length ${length}`);
    return { length, score: values.reduce((a, b) => a + b, 0) / values.length };
  });
  const n = perLength.length;
  const denominator = (n * (n + 1)) / 2;
  const average = perLength.reduce((s, x) => s + x.score, 0) / Math.max(1, n);
  const weightedIncreasing = perLength.reduce((s, x, i) => s + (i + 1) * x.score, 0) / denominator;
  const weightedDecreasing = perLength.reduce((s, x, i) => s + (n - i) * x.score, 0) / denominator;
  const passing = perLength.filter((x) => x.score > RULER_EFFECTIVE_THRESHOLD);
  return {
    perLength,
    average,
    weightedIncreasing,
    weightedDecreasing,
    effectiveLength: passing.length ? passing[passing.length - 1].length : null,
  };
}
