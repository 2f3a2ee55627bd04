/**
 * BABILong samples (booydar/babilong; benchmarks spec §2): a bAbI sample's facts interleaved, in order,
 * into haystack sentences so that the whole model input — instruction, examples, post-prompt,
 * context and question — has a target length in the evaluated model's own tokens, plus the official
 * answer check and a corrected one.
 *
 * Construction follows `NoiseInjectionDataset`: fact positions are sentence gaps drawn with
 * replacement and sorted, several facts may share a gap, and an optional depth band restricts the
 * gaps. Unlike upstream (GPT-2 tokens, 300 tokens reserved for the prompt, last sentence cut to the
 * exact budget), lengths here count everything the model reads in its own tokens, and whole haystack
 * sentences are kept, so a sample reaches the target to within one haystack sentence, never above it.
 *
 * The prompt layout (`TASK_TEMPLATE` + `USER_TEMPLATE`, disabled parts left as empty strings, whole
 * string stripped) is upstream's; the instruction, example and post-prompt wording is the project's
 * own, written to the same per-task rules and output formats, so scores are comparable in kind with
 * published BABILong numbers, not byte for byte.
 *
 * Speed (one shared core): a 32K-token qa2 sample builds in 6–31 ms with a byte tokenizer and 25–125 ms
 * with a word tokenizer: one encode per haystack sentence plus a handful of full encodes.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { Rng } from "../random/philox.ts";
import { BABI_TASK_NAMES, type BabiSample, type BabiTaskName, generateBabi } from "./babi.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Which prompt parts are included (upstream's `instruction_yes/no`, `examples_…`, `post_prompt_…`). */
export const BabilongPromptSchema = z.object({
  instruction: z.boolean().default(true),
  examples: z.boolean().default(true),
  postPrompt: z.boolean().default(true),
});

/** The plain-data options of `makeBabilongSample`. */
export const BabilongOptionsSchema = z.object({
  task: z.enum(BABI_TASK_NAMES),
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** Length of the whole input in the tokenizer's tokens; 0 means the facts alone, no haystack. */
  targetTokens: z.number().int().min(0),
  /** Facts only in this band of the context, as fractions [lo, hi] of its tokens. */
  depth: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)])
    .refine(([lo, hi]) => lo < hi, { message: "depth band [lo, hi] needs lo < hi" })
    .optional(),
  prompt: BabilongPromptSchema.default({ instruction: true, examples: true, postPrompt: true }),
});

/** Options of `makeBabilongSample`: the schema's fields plus what cannot be plain data. */
export type BabilongOptions = z.input<typeof BabilongOptionsSchema> & {
  tokenizer: Tokenizer;
  /** Background sentences, consumed in order and only as far as needed. */
  haystack: Iterable<string>;
  /** Use this bAbI sample instead of drawing one from `generateBabi(task, seed)`. */
  sample?: BabiSample;
};

/** One BABILong sample. */
export interface BabilongSample {
  task: BabiTaskName;
  seed: number;
  /** The tokenizer's name; lengths are in its tokens. */
  tokenizer: string;
  targetTokens: number;
  /** Tokens of `input`: ≤ targetTokens, short of it by less than one haystack sentence (or facts only at 0). */
  tokens: number;
  /** Tokens of the input with no haystack: the smallest reachable target. */
  minimumTokens: number;
  /** The whole model input: prompt parts, context and question. */
  input: string;
  /** Haystack with the facts embedded. */
  context: string;
  question: string;
  /** The bAbI answer (BABILong's `target`). */
  answer: string;
  facts: string[];
  supportingFacts: number[];
  haystackSentences: number;
  /** For each fact, the haystack gap it sits in (0 = before the first sentence). */
  factPositions: number[];
  /** For each fact, the fraction of the context's tokens before it (counted piece by piece). */
  factDepths: number[];
  prompt: z.output<typeof BabilongPromptSchema>;
  /** sha256 of the task, input and answer. */
  hash: string;
}

// Philox streams: which bAbI sample a seed draws, and where its facts go.
const SAMPLE_STREAM = 0xbab20000;
const POSITION_STREAM = 0xbab20001;
// bAbI samples drawn per seed before one is chosen, so a seed does not always get a story's first question.
const SAMPLE_POOL = 25;

/**
 * Builds one BABILong sample of `targetTokens` tokens (binary search over the number of haystack
 * sentences, counting prompt and question). Refuses targets below the facts-plus-prompt minimum.
 * @example makeBabilongSample({ task: "qa1", seed: 0, targetTokens: 4096, tokenizer, haystack: sentences });
 */
export function makeBabilongSample(options: BabilongOptions): BabilongSample {
  const { task, seed, targetTokens, depth, prompt } = BabilongOptionsSchema.parse(options);
  const { tokenizer } = options;
  const babi = options.sample ?? drawBabiSample(task, seed);
  const count = (text: string): number => tokenizer.encode(text).length;
  const parts = promptParts(task, prompt);
  const assemble = (sentences: readonly string[], n: number, positions: readonly number[]) => {
    const context = interleave(babi.facts, sentences, n, positions);
    return { context, input: formatInput(parts, context, babi.question) };
  };
  const factsAtEnd = (n: number) => babi.facts.map(() => n);

  const minimumTokens = count(assemble([], 0, factsAtEnd(0)).input);
  if (targetTokens > 0 && targetTokens < minimumTokens) {
    throw new RangeError(
      `BABILong ${task}: target ${targetTokens} tokens is below the minimum ${minimumTokens} ` +
        `(${babi.facts.length} facts + prompt + question, no haystack) for tokenizer ${tokenizer.name}`,
    );
  }

  const haystack = new HaystackReader(options.haystack, count);
  let n = 0;
  if (targetTokens > 0) {
    // Exact counts with the facts at the end; positions barely change a count (only at piece joins),
    // and the final placement is re-counted below.
    const exact = memoise((k: number) => count(assemble(haystack.sentences, k, factsAtEnd(k)).input));
    n = largestFitting(minimumTokens, targetTokens, haystack, exact, task);
  }

  const factTokens = babi.facts.map((f) => count(" " + f));
  for (;;) {
    const sentences = haystack.sentences.slice(0, n);
    const gaps = allowedGaps(haystack.tokens.slice(0, n), factTokens, depth, task);
    const rng = new Rng(seed, POSITION_STREAM);
    const factPositions = babi.facts.map(() => gaps[rng.int(gaps.length)]).sort((a, b) => a - b);
    const { context, input } = assemble(sentences, n, factPositions);
    const tokens = count(input);
    if (targetTokens > 0 && tokens > targetTokens && n > 0) {
      n--;
      continue;
    }
    return {
      task,
      seed,
      tokenizer: tokenizer.name,
      targetTokens,
      tokens,
      minimumTokens,
      input,
      context,
      question: babi.question,
      answer: babi.answer,
      facts: [...babi.facts],
      supportingFacts: [...babi.supportingFacts],
      haystackSentences: n,
      factPositions,
      factDepths: factDepths(haystack.tokens.slice(0, n), factTokens, factPositions),
      prompt,
      hash: createHash("sha256").update(JSON.stringify([task, input, babi.answer])).digest("hex"),
    };
  }
}

function drawBabiSample(task: BabiTaskName, seed: number): BabiSample {
  const pool = generateBabi(task, { seed, count: SAMPLE_POOL });
  return pool[new Rng(seed, SAMPLE_STREAM).int(pool.length)];
}

/** Pulls haystack sentences on demand and remembers each one's token count (with its leading space). */
class HaystackReader {
  readonly sentences: string[] = [];
  readonly tokens: number[] = [];
  readonly #iterator: Iterator<string>;
  #done = false;

  constructor(source: Iterable<string>, readonly count: (text: string) => number) {
    this.#iterator = source[Symbol.iterator]();
  }

  /** Makes at least `n` sentences available; false if the haystack ends first. */
  ensure(n: number): boolean {
    while (this.sentences.length < n && !this.#done) {
      const next = this.#iterator.next();
      if (next.done) {
        this.#done = true;
        break;
      }
      const sentence = next.value.trim();
      if (sentence === "") continue;
      this.sentences.push(sentence);
      this.tokens.push(this.count(" " + sentence));
    }
    return this.sentences.length >= n;
  }
}

function memoise(f: (n: number) => number): (n: number) => number {
  const cache = new Map<number, number>();
  return (n) => {
    if (!cache.has(n)) cache.set(n, f(n));
    return cache.get(n)!;
  };
}

/**
 * The largest number of haystack sentences whose exact input length fits the target: start from the
 * per-sentence estimate, gallop to bracket the answer, then bisect, so only a few full encodes run.
 */
function largestFitting(
  minimum: number,
  target: number,
  haystack: HaystackReader,
  exact: (n: number) => number,
  task: BabiTaskName,
): number {
  let estimate = minimum;
  let guess = 0;
  while (haystack.ensure(guess + 1) && estimate + haystack.tokens[guess] <= target) {
    estimate += haystack.tokens[guess];
    guess++;
  }
  let fits: number; // exact(fits) ≤ target
  let tooLong: number; // exact(tooLong) > target
  if (exact(guess) <= target) {
    fits = guess;
    for (let step = 1;; step *= 2) {
      const next = fits + step;
      if (!haystack.ensure(next)) {
        const available = haystack.sentences.length;
        if (exact(available) <= target) {
          throw new RangeError(
            `BABILong ${task}: the haystack ran out after ${available} sentences ` +
              `(${exact(available)} tokens), short of the target ${target}`,
          );
        }
        tooLong = available;
        break;
      }
      if (exact(next) > target) {
        tooLong = next;
        break;
      }
      fits = next;
    }
  } else {
    tooLong = guess;
    for (let step = 1;; step *= 2) {
      const next = Math.max(0, tooLong - step);
      if (exact(next) <= target) {
        fits = next;
        break;
      }
      tooLong = next;
    }
  }
  while (tooLong - fits > 1) {
    const middle = Math.floor((fits + tooLong) / 2);
    if (exact(middle) <= target) fits = middle;
    else tooLong = middle;
  }
  return fits;
}

/** Gaps 0…n where facts may go; with a depth band, those whose start lies in it with room for the facts. */
function allowedGaps(
  sentenceTokens: readonly number[],
  factTokens: readonly number[],
  depth: readonly [number, number] | undefined,
  task: BabiTaskName,
): number[] {
  const n = sentenceTokens.length;
  if (!depth) return Array.from({ length: n + 1 }, (_, i) => i);
  const factTotal = factTokens.reduce((a, b) => a + b, 0);
  const contextTotal = factTotal + sentenceTokens.reduce((a, b) => a + b, 0);
  const [lo, hi] = depth;
  const gaps: number[] = [];
  let before = 0;
  for (let i = 0; i <= n; i++) {
    if (before >= lo * contextTotal && before + factTotal <= hi * contextTotal) gaps.push(i);
    before += sentenceTokens[i] ?? 0;
  }
  if (gaps.length === 0) {
    throw new RangeError(
      `BABILong ${task}: no haystack gap puts the facts (${factTotal} tokens) inside the depth band ` +
        `[${lo}, ${hi}] of a ${contextTotal}-token context; widen the band or raise the target`,
    );
  }
  return gaps;
}

/** Facts before the sentence of their gap, in order; everything joined by single spaces. */
function interleave(
  facts: readonly string[],
  sentences: readonly string[],
  n: number,
  positions: readonly number[],
): string {
  const pieces: string[] = [];
  let fact = 0;
  for (let gap = 0; gap <= n; gap++) {
    while (fact < facts.length && positions[fact] === gap) pieces.push(facts[fact++]);
    if (gap < n) pieces.push(sentences[gap]);
  }
  return pieces.join(" ").trim();
}

function factDepths(
  sentenceTokens: readonly number[],
  factTokens: readonly number[],
  positions: readonly number[],
): number[] {
  const total = sentenceTokens.reduce((a, b) => a + b, 0) + factTokens.reduce((a, b) => a + b, 0);
  const depths: number[] = [];
  let before = 0;
  let gap = 0;
  positions.forEach((position, i) => {
    while (gap < position) before += sentenceTokens[gap++];
    depths.push(total === 0 ? 0 : before / total);
    before += factTokens[i];
  });
  return depths;
}

// ---------------------------------------------------------------------------------------------
// Prompts

/** The three task-part strings, already blanked where disabled. */
interface PromptParts {
  instruction: string;
  examples: string;
  postPrompt: string;
}

/**
 * Upstream's `DEFAULT_TEMPLATE`: instruction, examples and post-prompt separated by blank lines,
 * then the context in `<context>` tags and the question; the whole string is stripped.
 */
function formatInput(parts: PromptParts, context: string, question: string): string {
  const taskPart = `${parts.instruction}\n\n${parts.examples}\n\n${parts.postPrompt}`;
  const userPart = `<context>\n${context.trim()}\n</context>\n\nQuestion: ${question}`;
  return `${taskPart}\n\n${userPart}`.trim();
}

/**
 * The model input for a context and question with the given prompt parts.
 * @example babilongPrompt("qa1", "Mary went to the kitchen.", "Where is Mary?", { examples: false });
 */
export function babilongPrompt(
  task: BabiTaskName,
  context: string,
  question: string,
  prompt: z.input<typeof BabilongPromptSchema> = {},
): string {
  return formatInput(promptParts(task, BabilongPromptSchema.parse(prompt)), context, question);
}

function promptParts(task: BabiTaskName, enabled: z.output<typeof BabilongPromptSchema>): PromptParts {
  const text = PROMPTS[task];
  const examples = text.examples
    .map(([story, answer]) => `<example>\n${story}\nAnswer: ${answer}\n</example>`)
    .join("\n\n");
  return {
    instruction: enabled.instruction ? text.instruction : "",
    examples: enabled.examples ? examples : "",
    postPrompt: enabled.postPrompt ? text.postPrompt : "",
  };
}

const HIDDEN =
  "The context below hides short facts among unrelated text. Answer the question that follows it " +
  "using those facts only.";
const PEOPLE = `${HIDDEN} The facts are about people and where they go. If a person was in several places, ` +
  "the latest one counts.";
const CARRY = `${HIDDEN} The facts are about people, where they go and what they pick up, put down or hand ` +
  "over. Whatever a person carries goes where the person goes; whatever they put down stays where it was left.";
const ONE_LOCATION = "Answer with a single word, the location, and nothing else.";
const YES_NO = "Answer with a single word, yes or no, and nothing else.";

/** Project-own wording for each task (upstream `DEFAULT_PROMPTS` is not reproduced). */
const PROMPTS: Record<
  BabiTaskName,
  { instruction: string; examples: [string, string][]; postPrompt: string }
> = {
  qa1: {
    instruction: PEOPLE,
    examples: [
      [
        "Alice went to the attic. Bob travelled to the porch. Alice moved to the cellar. Where is Alice?",
        "The most recent location of Alice is cellar.",
      ],
      [
        "Bob journeyed to the garage. Carol went to the library. Where is Carol?",
        "The most recent location of Carol is library.",
      ],
    ],
    postPrompt: "Answer with one sentence, exactly: The most recent location of <person> is <location>. " +
      "Write nothing after it.",
  },
  qa2: {
    instruction: CARRY,
    examples: [
      [
        "Alice went to the attic. Alice picked up the lamp. Alice travelled to the porch. Where is the lamp?",
        "The lamp is in the porch.",
      ],
      [
        "Bob grabbed the kettle. Bob moved to the garage. Bob put down the kettle. Bob went to the library. " +
        "Where is the kettle?",
        "The kettle is in the garage.",
      ],
    ],
    postPrompt: "Answer with one sentence, exactly: The <item> is in <location>. Write nothing after it.",
  },
  qa3: {
    instruction: CARRY,
    examples: [
      [
        "Carol took the lamp. Carol went to the attic. Carol travelled to the porch. " +
        "Where was the lamp before the porch?",
        "Before the porch the lamp was in the attic.",
      ],
      [
        "Bob moved to the garage. Bob grabbed the kettle there. Bob journeyed to the cellar. Bob dropped the kettle. " +
        "Where was the kettle before the cellar?",
        "Before the cellar the kettle was in the garage.",
      ],
    ],
    postPrompt:
      "Answer with one sentence, exactly: Before the <location 1> the <item> was in the <location 2>. " +
      "Write nothing after it.",
  },
  qa4: {
    instruction: `${HIDDEN} The facts say how places lie relative to each other.`,
    examples: [
      [
        "The attic is north of the porch. The cellar is south of the porch. What is the porch north of?",
        "cellar",
      ],
      [
        "The garage is east of the library. The library is east of the attic. What is west of the library?",
        "attic",
      ],
    ],
    postPrompt: ONE_LOCATION,
  },
  qa5: {
    instruction:
      `${HIDDEN} The facts are about people moving, picking things up and giving them to each other.`,
    examples: [
      [
        "Alice picked up the lamp there. Alice handed the lamp to Bob. Carol went to the porch. Who received the lamp?",
        "Bob",
      ],
      ["Bob took the kettle there. Bob gave the kettle to Carol. What did Bob give to Carol?", "kettle"],
      [
        "Carol grabbed the rope there. Carol passed the rope to Alice. Alice moved to the attic. Who gave the rope?",
        "Carol",
      ],
    ],
    postPrompt: "Answer with a single word and nothing else; do not explain.",
  },
  qa6: {
    instruction: PEOPLE,
    examples: [
      ["Alice went to the attic. Bob moved to the porch. Is Alice in the attic?", "yes"],
      ["Carol travelled to the garage. Carol journeyed to the cellar. Is Carol in the garage?", "no"],
    ],
    postPrompt: YES_NO,
  },
  qa7: {
    instruction: CARRY,
    examples: [
      [
        "Alice picked up the lamp there. Alice took the rope there. How many objects is Alice carrying?",
        "two",
      ],
      ["Bob grabbed the kettle there. Bob dropped the kettle. How many objects is Bob carrying?", "none"],
      ["Carol took the rope there. Carol went to the porch. How many objects is Carol carrying?", "one"],
    ],
    postPrompt:
      "Answer with a single word, none or the number of objects written as a word, and nothing else.",
  },
  qa8: {
    instruction: CARRY,
    examples: [
      ["Alice picked up the lamp there. Alice moved to the attic. What is Alice carrying?", "lamp"],
      ["Bob took the kettle there. Bob gave the kettle to Carol. What is Bob carrying?", "nothing"],
      ["Carol grabbed the rope there. Carol took the lamp there. What is Carol carrying?", "rope,lamp"],
    ],
    postPrompt: "Answer with nothing, one object, or objects separated by commas, and nothing else.",
  },
  qa9: {
    instruction: `${PEOPLE} Some facts say where a person is not.`,
    examples: [
      ["Alice is not in the attic. Bob went to the porch. Is Alice in the attic?", "no"],
      ["Carol is in the garage. Bob is no longer in the cellar. Is Carol in the garage?", "yes"],
      ["Alice moved to the cellar. Carol is not in the porch. Is Alice in the porch?", "no"],
    ],
    postPrompt: YES_NO,
  },
  qa10: {
    instruction: `${PEOPLE} Some facts only say that a person is in one of two places.`,
    examples: [
      ["Alice is either in the attic or the porch. Is Alice in the attic?", "maybe"],
      ["Bob moved to the garage. Carol is either in the cellar or the library. Is Bob in the cellar?", "no"],
      ["Carol is in the library. Is Carol in the library?", "yes"],
    ],
    postPrompt: "Answer with a single word, yes, no or maybe, and nothing else.",
  },
  qa11: {
    instruction: PEOPLE,
    examples: [
      ["Alice went to the attic. Then she moved to the porch. Where is Alice?", "porch"],
      [
        "Bob travelled to the garage. After that he journeyed to the cellar. Carol went to the library. Where is Bob?",
        "cellar",
      ],
      ["Carol moved to the attic. Afterwards she went back to the library. Where is Carol?", "library"],
    ],
    postPrompt: ONE_LOCATION,
  },
  qa12: {
    instruction: PEOPLE,
    examples: [
      ["Alice and Bob went to the attic. Bob and Carol moved to the porch. Where is Bob?", "porch"],
      ["Carol and Alice travelled to the garage. Where is Alice?", "garage"],
      ["Bob and Alice journeyed to the cellar. Alice and Carol went to the library. Where is Bob?", "cellar"],
    ],
    postPrompt: ONE_LOCATION,
  },
  qa13: {
    instruction: PEOPLE,
    examples: [
      ["Alice and Bob went to the attic. Then they moved to the porch. Where is Alice?", "porch"],
      [
        "Bob and Carol travelled to the garage. After that they went to the cellar. Alice and Carol moved to the " +
        "library. Where is Bob?",
        "cellar",
      ],
      [
        "Carol and Alice journeyed to the porch. Following that they went back to the attic. Where is Carol?",
        "attic",
      ],
    ],
    postPrompt: ONE_LOCATION,
  },
  qa14: {
    instruction: `${HIDDEN} The facts say where people went and when: yesterday, then this morning, this ` +
      "afternoon and this evening.",
    examples: [
      [
        "Alice went to the attic yesterday. This morning Alice moved to the porch. Where was Alice before the porch?",
        "attic",
      ],
      [
        "Bob went to the garage this afternoon. Yesterday Bob travelled to the library. This morning Bob went to the " +
        "cellar. Where was Bob before the cellar?",
        "library",
      ],
      [
        "This evening Carol went to the attic. Carol journeyed to the porch this afternoon. Where was Carol before the attic?",
        "porch",
      ],
    ],
    postPrompt: ONE_LOCATION,
  },
  qa15: {
    instruction: `${HIDDEN} The facts say which animals fear which, and which kind of animal each name is.`,
    examples: [
      ["Foxes are afraid of bears. Tom is a fox. Bears are afraid of wolves. What is tom afraid of?", "bear"],
      [
        "Owls are afraid of hawks. Hawks are afraid of eagles. Ann is a hawk. What is ann afraid of?",
        "eagle",
      ],
      [
        "Frogs are afraid of snakes. Max is a frog. Snakes are afraid of owls. Lea is a snake. What is lea afraid of?",
        "owl",
      ],
    ],
    postPrompt: "Answer with a single word, an animal species, and nothing else.",
  },
  qa16: {
    instruction:
      `${HIDDEN} The facts name animals, their kinds and some of their colours; animals of one kind ` +
      "share a colour.",
    examples: [
      ["Tom is a fox. Ann is a fox. Ann is red. What color is Tom?", "red"],
      [
        "Max is a crow. Lea is an owl. Lea is brown. Max is black. Zoe is a crow. What color is Zoe?",
        "black",
      ],
      ["Ann is a duck. Tom is a duck. Ann is blue. Max is a cat. Max is gray. What color is Tom?", "blue"],
    ],
    postPrompt: "Answer with a single word, a colour, and nothing else.",
  },
  qa17: {
    instruction: `${HIDDEN} The facts say where coloured shapes lie relative to each other.`,
    examples: [
      [
        "The green circle is above the orange star. The purple cube is to the left of the green circle. " +
        "Is the orange star to the right of the purple cube?",
        "yes",
      ],
      [
        "The orange star is below the purple cube. The green circle is to the right of the purple cube. " +
        "Is the orange star above the green circle?",
        "no",
      ],
      [
        "The green circle is to the left of the orange star. The green circle is above the purple cube. " +
        "Is the purple cube to the left of the orange star?",
        "yes",
      ],
    ],
    postPrompt: YES_NO,
  },
  qa18: {
    instruction: `${HIDDEN} The facts compare the sizes of containers.`,
    examples: [
      [
        "The cup fits inside the bucket. The bucket fits inside the barrel. Does the cup fit in the barrel?",
        "yes",
      ],
      [
        "The barrel is bigger than the bucket. The crate is bigger than the barrel. Is the bucket bigger than the crate?",
        "no",
      ],
      [
        "The cup fits inside the crate. The crate fits inside the barrel. Does the barrel fit in the cup?",
        "no",
      ],
    ],
    postPrompt: YES_NO,
  },
  qa19: {
    instruction: `${HIDDEN} The facts say which places lie north, south, east or west of which.`,
    examples: [
      [
        "The attic is north of the porch. The cellar is east of the porch. How do you go from the attic to the cellar?",
        "s,e",
      ],
      [
        "The garage is west of the library. The library is south of the porch. How do you go from the porch to the garage?",
        "s,w",
      ],
      [
        "The cellar is south of the attic. The attic is south of the porch. How do you go from the porch to the cellar?",
        "s,s",
      ],
    ],
    postPrompt:
      "Answer with two direction letters from n, s, e and w, separated by a comma, and nothing else.",
  },
  qa20: {
    instruction: `${HIDDEN} The facts say how people feel, where they go and what they take there.`,
    examples: [
      ["Ann is tired. Where will ann go?", "bedroom"],
      ["Tom is hungry. Tom went to the kitchen. Why did tom go to the kitchen?", "hungry"],
      [
        "Max is bored. Max went to the garden. Max took the football there. Why did max get the football?",
        "bored",
      ],
    ],
    postPrompt: "Answer with a single word, a person's condition or a place, and nothing else.",
  },
};

// ---------------------------------------------------------------------------------------------
// Answer checks (babilong/metrics.py)

const LOCATION_LABELS = ["bathroom", "bedroom", "garden", "hallway", "kitchen", "office"];
const YES_NO_LABELS = ["no", "yes"];

/** Upstream `TASK_LABELS`: the answers a task can have; a correct output names exactly the target's. */
export const BABILONG_LABELS: Record<BabiTaskName, readonly string[]> = {
  qa1: LOCATION_LABELS,
  qa2: LOCATION_LABELS,
  qa3: LOCATION_LABELS,
  qa4: LOCATION_LABELS,
  qa5: ["Bill", "Fred", "Jeff", "Mary", "apple", "football", "milk"],
  qa6: YES_NO_LABELS,
  qa7: ["none", "one", "two", "three"],
  qa8: ["apple", "football", "milk", "nothing"],
  qa9: YES_NO_LABELS,
  qa10: ["maybe", "no", "yes"],
  qa11: LOCATION_LABELS,
  qa12: LOCATION_LABELS,
  qa13: LOCATION_LABELS,
  qa14: ["bedroom", "cinema", "kitchen", "office", "park", "school"],
  qa15: ["cat", "mouse", "sheep", "wolf"],
  qa16: ["gray", "green", "white", "yellow"],
  qa17: YES_NO_LABELS,
  qa18: YES_NO_LABELS,
  qa19: ["e,e", "e,n", "e,s", "n,e", "n,n", "n,w", "s,e", "s,s", "s,w", "w,n", "w,s", "w,w"],
  qa20: ["bedroom", "bored", "garden", "hungry", "kitchen", "thirsty", "tired"],
};

/**
 * The official BABILong check (`compare_answers`), quirks included: the output is cut at its first
 * ".", labels match as substrings (so in qa7 a correct "none" also contains "one" and is scored
 * wrong), and the cut at "Question" never fires because it runs after lowercasing.
 * @example babilongOfficialCorrect("qa1", "kitchen", "Mary is in the kitchen.", "Where is Mary?"); // true
 */
export function babilongOfficialCorrect(
  task: BabiTaskName,
  target: string,
  output: string,
  question: string,
): boolean {
  const text = firstSentence(output).split("Question")[0];
  return labelSetMatches(task, target, text, question, (label, haystack) => haystack.includes(label));
}

/**
 * The corrected check: the official rule with labels matched as whole words (so "none" does not
 * contain "one" and "known" does not contain "no") and the output really cut at "question".
 * @example babilongWholeWordCorrect("qa7", "none", "none", "How many objects is Mary carrying?"); // true
 */
export function babilongWholeWordCorrect(
  task: BabiTaskName,
  target: string,
  output: string,
  question: string,
): boolean {
  const text = firstSentence(output).split("question")[0];
  return labelSetMatches(task, target, text, question, mentionsWholeWord);
}

function firstSentence(output: string): string {
  return output.toLowerCase().split(".")[0].split("<context>")[0].split("<example>")[0];
}

function mentionsWholeWord(label: string, text: string): boolean {
  for (let at = text.indexOf(label); at >= 0; at = text.indexOf(label, at + 1)) {
    const before = text.slice(0, at);
    const after = text.slice(at + label.length);
    if (!/[\p{L}\p{N}_]$/u.test(before) && !/^[\p{L}\p{N}_]/u.test(after)) return true;
  }
  return false;
}

/** Labels in the (preprocessed) output, minus those in the question, must be exactly the target's. */
function labelSetMatches(
  task: BabiTaskName,
  target: string,
  output: string,
  question: string,
  mentions: (label: string, text: string) => boolean,
): boolean {
  const labels = BABILONG_LABELS[task].map((l) => l.toLowerCase());
  const wanted = target.toLowerCase();
  const asked = question.toLowerCase();
  const named = new Set(labels.filter((l) => mentions(l, output) && !mentions(l, asked)));
  if (wanted.includes(",") && wanted.length > 3) {
    // qa8 lists: every listed object and nothing else.
    const parts = wanted.split(",");
    return parts.every((p) => named.has(p)) && named.size === parts.length;
  }
  return named.has(wanted) && named.size === 1;
}
