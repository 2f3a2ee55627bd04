import assert from "node:assert/strict";
import { BABI_TASK_NAMES, type BabiSample, type BabiTaskName } from "../src/data/babi.ts";
import {
  BABILONG_LABELS,
  babilongOfficialCorrect,
  babilongPrompt,
  babilongWholeWordCorrect,
  makeBabilongSample,
} from "../src/data/babilong.ts";
import type { Tokenizer } from "../src/data/tokenizer.ts";

/** One token per UTF-8 byte, so a token count is checkable by hand. */
const byteTokenizer: Tokenizer = {
  name: "test-bytes",
  hash: "test-bytes",
  vocabSize: 256,
  encode: (text) => [...new TextEncoder().encode(text)],
  decode: (ids) => new TextDecoder().decode(new Uint8Array(ids)),
  special: () => undefined,
};

/** One token per word or punctuation mark: a tokenizer whose counts differ from bytes. */
function wordTokenizer(): Tokenizer {
  const vocab = new Map<string, number>();
  const pieces: string[] = [];
  return {
    name: "test-words",
    hash: "test-words",
    vocabSize: 1 << 20,
    encode: (text) =>
      (text.match(/[A-Za-z0-9]+|[^\sA-Za-z0-9]/g) ?? []).map((piece) => {
        if (!vocab.has(piece)) {
          vocab.set(piece, pieces.length);
          pieces.push(piece);
        }
        return vocab.get(piece)!;
      }),
    decode: (ids) => ids.map((id) => pieces[id]).join(" "),
    special: () => undefined,
  };
}

const bytes = (text: string) => new TextEncoder().encode(text).length;

/** An endless, deterministic stream of background sentences of varied length. */
function* background(): Generator<string> {
  const subjects = ["The miller", "An old sailor", "The quiet girl from the valley", "Her uncle", "The dog"];
  const verbs = ["walked along", "painted", "talked for hours about", "remembered", "slept beside"];
  const things = [
    "the river",
    "a broken fence near the orchard",
    "the harvest",
    "the long winter road",
    "the bell",
  ];
  for (let i = 0;; i++) {
    yield `${subjects[i % 5]} ${verbs[(i * 3 + 1) % 5]} ${things[(i * 7 + 2) % 5]} on day ${i}.`;
  }
}

const fixedSample: BabiSample = {
  task: "qa1",
  facts: ["Mary moved to the bathroom.", "John went to the hallway.", "Mary went back to the kitchen."],
  question: "Where is Mary?",
  answer: "kitchen",
  supportingFacts: [2],
};

/** Checks each needle occurs in order in `text`; returns the offset of each. */
function offsetsInOrder(text: string, needles: readonly string[]): number[] {
  let from = 0;
  return needles.map((needle) => {
    const at = text.indexOf(needle, from);
    assert.ok(at >= 0, `"${needle}" missing or out of order after offset ${from}`);
    from = at + needle.length;
    return at;
  });
}

Deno.test("prompt layout: upstream template, disabled parts blank, stripped", () => {
  const context = "Mary went to the kitchen.";
  const none = { instruction: false, examples: false, postPrompt: false };
  assert.equal(
    babilongPrompt("qa1", `  ${context} `, "Where is Mary?", none),
    "<context>\nMary went to the kitchen.\n</context>\n\nQuestion: Where is Mary?",
  );
  const onlyPost = babilongPrompt("qa6", context, "Is Mary in the kitchen?", {
    instruction: false,
    examples: false,
  });
  assert.equal(
    onlyPost,
    "Answer with a single word, yes or no, and nothing else.\n\n<context>\nMary went to the kitchen.\n</context>" +
      "\n\nQuestion: Is Mary in the kitchen?",
  );
  // Instruction, examples and post-prompt in that order, each separated by a blank line.
  const full = babilongPrompt("qa4", context, "What is north of the kitchen?");
  const blocks = full.split("\n\n");
  assert.ok(blocks[0].startsWith("The context below hides short facts"), blocks[0]);
  assert.ok(blocks[1].startsWith("<example>\n") && blocks[1].endsWith("\n</example>"), blocks[1]);
  assert.ok(full.includes("\n\n<context>\nMary went to the kitchen.\n</context>\n\nQuestion: What is north"));
  // Upstream has two demonstrations for qa1–qa4 and qa6, three for the others.
  for (const task of BABI_TASK_NAMES) {
    const demos = babilongPrompt(task, context, "?").split("<example>").length - 1;
    assert.equal(demos, ["qa1", "qa2", "qa3", "qa4", "qa6"].includes(task) ? 2 : 3, `${task} examples`);
  }
});

Deno.test("length: whole input within one haystack sentence of the target, counted in the tokenizer's tokens", () => {
  for (const targetTokens of [1500, 3000, 6000]) {
    const s = makeBabilongSample({
      task: "qa2",
      seed: 3,
      targetTokens,
      tokenizer: byteTokenizer,
      haystack: background(),
    });
    assert.equal(s.tokens, bytes(s.input), "achieved count is the input's byte length");
    assert.ok(s.tokens <= targetTokens, `${s.tokens} > target ${targetTokens}`);
    // The next background sentence (joined by one space) would overshoot.
    const next = [...take(background(), s.haystackSentences + 1)].at(-1)!;
    assert.ok(
      s.tokens + bytes(next) + 1 > targetTokens,
      `room left for "${next}" at ${s.tokens}/${targetTokens}`,
    );
    // Facts in order inside the context, haystack sentences in order around them.
    offsetsInOrder(s.context, s.facts);
    offsetsInOrder(s.context, [...take(background(), s.haystackSentences)]);
    assert.ok(s.input.endsWith(`<context>\n${s.context}\n</context>\n\nQuestion: ${s.question}`));
    assert.deepEqual(s.factPositions, [...s.factPositions].sort((a, b) => a - b));
  }
  // The same target in word tokens needs far more text than in bytes.
  const words = makeBabilongSample({
    task: "qa2",
    seed: 3,
    targetTokens: 2000,
    tokenizer: wordTokenizer(),
    haystack: background(),
  });
  const inBytes = makeBabilongSample({
    task: "qa2",
    seed: 3,
    targetTokens: 2000,
    tokenizer: byteTokenizer,
    haystack: background(),
  });
  assert.equal(words.tokens, wordTokenizer().encode(words.input).length);
  assert.ok(words.tokens <= 2000 && words.tokens > 1980, `word tokens ${words.tokens}`);
  assert.ok(
    words.haystackSentences > 3 * inBytes.haystackSentences,
    `${words.haystackSentences} vs ${inBytes.haystackSentences}`,
  );
});

Deno.test("target 0 gives the facts alone; targets below the minimum are refused naming both numbers", () => {
  const s = makeBabilongSample({
    task: "qa1",
    seed: 1,
    targetTokens: 0,
    tokenizer: byteTokenizer,
    haystack: background(),
    sample: fixedSample,
  });
  assert.equal(s.context, fixedSample.facts.join(" "));
  assert.equal(s.haystackSentences, 0);
  const minimum = bytes(babilongPrompt("qa1", fixedSample.facts.join(" "), fixedSample.question));
  assert.equal(s.tokens, minimum);
  assert.equal(s.minimumTokens, minimum);
  assert.throws(
    () =>
      makeBabilongSample({
        task: "qa1",
        seed: 1,
        targetTokens: 50,
        tokenizer: byteTokenizer,
        haystack: background(),
        sample: fixedSample,
      }),
    new RegExp(`target 50 tokens is below the minimum ${minimum}`),
  );
  // Exactly the minimum is reachable and yields no haystack.
  const tight = makeBabilongSample({
    task: "qa1",
    seed: 1,
    targetTokens: minimum,
    tokenizer: byteTokenizer,
    haystack: background(),
    sample: fixedSample,
  });
  assert.equal(tight.tokens, minimum);
  assert.equal(tight.haystackSentences, 0);
});

Deno.test("facts land at random depths; a depth band keeps them inside it", () => {
  const depths: number[] = [];
  for (let seed = 0; seed < 30; seed++) {
    const s = makeBabilongSample({
      task: "qa1",
      seed,
      targetTokens: 3000,
      tokenizer: byteTokenizer,
      haystack: background(),
      sample: fixedSample,
    });
    depths.push(...s.factDepths);
  }
  assert.ok(Math.min(...depths) < 0.2 && Math.max(...depths) > 0.8, `fact depths ${depths}`);
  const middle = depths.filter((d) => d > 0.3 && d < 0.7).length;
  assert.ok(middle > 20, `${middle} of ${depths.length} facts between 30 % and 70 % depth`);

  for (const depth of [[0.4, 0.6], [0, 0.1], [0.85, 1]] as [number, number][]) {
    for (let seed = 0; seed < 5; seed++) {
      const s = makeBabilongSample({
        task: "qa1",
        seed,
        targetTokens: 8000,
        depth,
        tokenizer: byteTokenizer,
        haystack: background(),
        sample: fixedSample,
      });
      // Independent check: byte offsets of the facts in the context, as fractions of its length.
      const offsets = offsetsInOrder(s.context, s.facts);
      const total = bytes(s.context);
      const [lo, hi] = depth;
      assert.ok(offsets[0] / total >= lo - 0.01, `first fact at ${offsets[0] / total}, band ${depth}`);
      const end = offsets.at(-1)! + bytes(s.facts.at(-1)!);
      assert.ok(end / total <= hi + 0.01, `last fact ends at ${end / total}, band ${depth}`);
    }
  }
  assert.throws(
    () =>
      makeBabilongSample({
        task: "qa1",
        seed: 0,
        targetTokens: 1200,
        depth: [0.5, 0.52],
        tokenizer: byteTokenizer,
        haystack: background(),
        sample: fixedSample,
      }),
    /depth band \[0\.5, 0\.52\]/,
  );
  assert.throws(
    () =>
      makeBabilongSample({
        task: "qa1",
        seed: 0,
        targetTokens: 4000,
        depth: [0.6, 0.4],
        tokenizer: byteTokenizer,
        haystack: background(),
      }),
    /lo < hi/,
  );
});

Deno.test("determinism: same seed and tokenizer give byte-identical samples; another seed differs", () => {
  for (const task of ["qa1", "qa7", "qa19"] as const) {
    const make = (seed: number) =>
      JSON.stringify(
        makeBabilongSample({
          task,
          seed,
          targetTokens: 4000,
          tokenizer: byteTokenizer,
          haystack: background(),
        }),
      );
    assert.equal(make(9), make(9), `${task} seed 9 twice`);
    assert.notEqual(make(9), make(10), `${task} seeds 9 and 10`);
  }
  const a = makeBabilongSample({
    task: "qa3",
    seed: 9,
    targetTokens: 4000,
    tokenizer: byteTokenizer,
    haystack: background(),
  });
  const b = makeBabilongSample({
    task: "qa3",
    seed: 9,
    targetTokens: 4000,
    tokenizer: byteTokenizer,
    haystack: background(),
  });
  assert.equal(a.hash, b.hash);
  assert.match(a.hash, /^[0-9a-f]{64}$/);
});

Deno.test("every task builds a 12K-byte sample whose answer is its bAbI answer", () => {
  for (const task of BABI_TASK_NAMES) {
    const s = makeBabilongSample({
      task,
      seed: 2,
      targetTokens: 12000,
      tokenizer: byteTokenizer,
      haystack: background(),
    });
    assert.ok(s.tokens <= 12000 && s.tokens > 11900, `${task}: ${s.tokens} tokens`);
    offsetsInOrder(s.context, s.facts);
    // The reference answer itself passes both checks (qa7 "none" aside, see the quirk test).
    if (!(task === "qa7" && s.answer === "none")) {
      assert.ok(
        babilongOfficialCorrect(task, s.answer, s.answer, s.question),
        `${task}: "${s.answer}" official`,
      );
    }
    assert.ok(
      babilongWholeWordCorrect(task, s.answer, s.answer, s.question),
      `${task}: "${s.answer}" whole word`,
    );
  }
});

Deno.test("label sets: upstream's tables, qa19 is every two-step direction pair but reversals", () => {
  const opposite: Record<string, string> = { n: "s", s: "n", e: "w", w: "e" };
  const pairs = ["e", "n", "s", "w"].flatMap((a) =>
    ["e", "n", "s", "w"].filter((b) => b !== opposite[a]).map((b) => `${a},${b}`)
  );
  assert.deepEqual([...BABILONG_LABELS.qa19], pairs);
  assert.deepEqual([...BABILONG_LABELS.qa7], ["none", "one", "two", "three"]);
  assert.deepEqual([...BABILONG_LABELS.qa5], ["Bill", "Fred", "Jeff", "Mary", "apple", "football", "milk"]);
  assert.deepEqual(Object.keys(BABILONG_LABELS), [...BABI_TASK_NAMES]);
});

Deno.test("a haystack that runs out is an error naming how far it got", () => {
  const short = [...take(background(), 10)];
  assert.throws(
    () =>
      makeBabilongSample({
        task: "qa1",
        seed: 0,
        targetTokens: 5000,
        tokenizer: byteTokenizer,
        haystack: short,
        sample: fixedSample,
      }),
    /haystack ran out after 10 sentences \(\d+ tokens\), short of the target 5000/,
  );
});

Deno.test("speed: one 32K-token sample", () => {
  for (const [name, tokenizer] of [["bytes", byteTokenizer], ["words", wordTokenizer()]] as const) {
    const t0 = performance.now();
    const s = makeBabilongSample({
      task: "qa2",
      seed: 4,
      targetTokens: 32768,
      tokenizer,
      haystack: background(),
    });
    const ms = performance.now() - t0;
    console.log(
      `BABILong qa2 32K (${name}): ${s.tokens} tokens, ${s.haystackSentences} sentences, ${ms.toFixed(0)} ms`,
    );
    assert.ok(s.tokens <= 32768 && s.tokens > 32000);
  }
});

Deno.test("answer checks: official rule and whole-word variant on hand-written outputs", () => {
  const cases: [
    task: BabiTaskName,
    target: string,
    output: string,
    question: string,
    official: boolean,
    wholeWord: boolean,
    why: string,
  ][] = [
    ["qa7", "none", "none", "How many objects is Mary carrying?", false, true, "'one' is inside 'none'"],
    [
      "qa7",
      "none",
      "None.",
      "How many objects is Mary carrying?",
      false,
      true,
      "still the quirk after lowercasing",
    ],
    ["qa7", "one", "one", "How many objects is Mary carrying?", true, true, "plain one"],
    ["qa7", "one", "none", "How many objects is Mary carrying?", false, false, "wrong either way"],
    ["qa7", "two", "two", "How many objects is John carrying?", true, true, "plain two"],
    ["qa6", "yes", "yes, that is well known", "Is John in the office?", false, true, "'no' inside 'known'"],
    ["qa6", "no", "no", "Is John in the office?", true, true, "plain no"],
    ["qa10", "no", "nope", "Is Bill in the park?", true, false, "'no' inside 'nope' counts officially"],
    [
      "qa1",
      "kitchen",
      "The most recent location of Mary is kitchen. Before that, the garden.",
      "Where is Mary?",
      true,
      true,
      "first sentence only",
    ],
    ["qa1", "kitchen", "kitchen or garden", "Where is Mary?", false, false, "two labels"],
    [
      "qa1",
      "kitchen",
      "kitchen Question: where is the garden",
      "Where is Mary?",
      false,
      true,
      "'Question' cut is a no-op upstream",
    ],
    [
      "qa3",
      "office",
      "Before the kitchen the apple was in the office.",
      "Where was the apple before the kitchen?",
      true,
      true,
      "labels in the question never count",
    ],
    [
      "qa5",
      "Fred",
      "Fred",
      "Who did Mary give the apple to?",
      true,
      true,
      "case-insensitive; Mary and apple are in the question",
    ],
    ["qa5", "Fred", "Fred gave it to Jeff", "Who gave the apple?", false, false, "extra label"],
    ["qa8", "apple,milk", "apple, milk", "What is Daniel carrying?", true, true, "list, any spacing"],
    ["qa8", "apple,milk", "milk", "What is Daniel carrying?", false, false, "list incomplete"],
    [
      "qa8",
      "apple,milk",
      "apple, milk and football",
      "What is Daniel carrying?",
      false,
      false,
      "list with extra",
    ],
    ["qa8", "nothing", "nothing", "What is Daniel carrying?", true, true, "nothing"],
    ["qa19", "s,e", "s,e", "How do you go from the office to the garden?", true, true, "path letters"],
    [
      "qa19",
      "s,e",
      "s, e",
      "How do you go from the office to the garden?",
      false,
      false,
      "labels are 's,e' without a space",
    ],
    [
      "qa20",
      "hungry",
      "kitchen, because hungry",
      "Why did yann go to the kitchen?",
      true,
      true,
      "place is in the question",
    ],
    ["qa15", "cat", "cats", "What is gertrude afraid of?", true, false, "plural contains the label"],
  ];
  for (const [task, target, output, question, official, wholeWord, why] of cases) {
    assert.equal(
      babilongOfficialCorrect(task, target, output, question),
      official,
      `official ${task} "${output}": ${why}`,
    );
    assert.equal(
      babilongWholeWordCorrect(task, target, output, question),
      wholeWord,
      `whole-word ${task} "${output}": ${why}`,
    );
  }
});

function* take<T>(items: Iterable<T>, n: number): Generator<T> {
  if (n <= 0) return;
  let i = 0;
  for (const item of items) {
    yield item;
    if (++i >= n) return;
  }
}
