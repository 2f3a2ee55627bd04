// The prose generator, its haystack stream, and the shipped fixtures it regenerates bit for bit.

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  BABI_RESERVED_WORDS,
  bookText,
  CORPUS_GENERATOR_VERSION,
  corpusText,
  countWords,
  generateCorpus,
  haystackSentences,
} from "../src/data/corpus.ts";
import type { Book } from "../src/data/corpus.ts";
import { sha256 } from "../src/data/hash.ts";
import { corpusManifestSchema, makeCorpusFixtures } from "../fixtures/corpus/make.ts";

const FIXTURES = fileURLToPath(new URL("../fixtures/corpus/", import.meta.url));

function sentencesOf(book: Book): string[] {
  return book.chapters.flatMap((c) => c.paragraphs.flat());
}

// Independent of countWords: a regex split instead of a character scan.
function regexWords(text: string): number {
  return text.split(/[ \t\n\r]+/).filter((w) => w.length > 0).length;
}

Deno.test("countWords counts whitespace-separated tokens", () => {
  const cases: [string, number][] = [
    ["", 0],
    ["one", 1],
    ["  a b\n\nc \t", 3],
    ['" We , " said Mara .', 7],
    ["a\u00a0b", 1], // only ASCII whitespace separates words
  ];
  for (const [text, want] of cases) assert.equal(countWords(text), want, JSON.stringify(text));
});

Deno.test("generateCorpus stops right after the sentence that reaches the word target", () => {
  for (const target of [1, 37, 5_000, 20_000]) {
    const corpus = generateCorpus({ seed: 11, words: target, wordsPerChapter: 900 });
    const sentences = corpus.books.flatMap(sentencesOf);
    const counted = sentences.reduce((sum, s) => sum + regexWords(s), 0);
    assert.equal(corpus.words, counted, `target ${target}: reported vs counted words`);
    const last = regexWords(sentences[sentences.length - 1]);
    assert.ok(
      corpus.words >= target && corpus.words - last < target,
      `target ${target}: got ${corpus.words} words, last sentence ${last}`,
    );
    assert.equal(regexWords(corpusText(corpus)), counted, `target ${target}: corpusText word count`);
  }
});

Deno.test("generateCorpus: chapters option, options validation", () => {
  const corpus = generateCorpus({ seed: 3, chapters: 7, chaptersPerBook: 3, wordsPerChapter: 100 });
  assert.deepEqual(corpus.books.map((b) => b.chapters.length), [3, 3, 1]);
  assert.deepEqual(corpus.books.map((b) => b.index), [0, 1, 2]);
  assert.equal(corpus.version, CORPUS_GENERATOR_VERSION);
  for (const book of corpus.books) {
    assert.deepEqual(book.chapters.map((c) => c.number), book.chapters.map((_, i) => i + 1));
    for (const chapter of book.chapters) {
      // Chapter lengths are drawn in [0.75, 1.25] × wordsPerChapter and end at a paragraph.
      const words = chapter.paragraphs.flat().reduce((sum, s) => sum + regexWords(s), 0);
      assert.ok(words >= 75 && words < 125 + 120, `chapter ${chapter.number}: ${words} words`);
    }
  }
  assert.throws(() => generateCorpus({ seed: 1 }), /exactly one of `words` and `chapters`/);
  assert.throws(() => generateCorpus({ seed: 1, words: 10, chapters: 2 }), /exactly one/);
  assert.throws(() => generateCorpus({ seed: -1, words: 10 }), /seed/);
});

Deno.test("generateCorpus is deterministic, seed-dependent, and books are independent", () => {
  const options = { seed: 5, chapters: 8, chaptersPerBook: 2, wordsPerChapter: 300 };
  const a = generateCorpus(options);
  assert.deepEqual(generateCorpus(options), a);
  const other = generateCorpus({ ...options, seed: 6 });
  assert.notEqual(corpusText(other), corpusText(a));
  // Book 3 is the same whether or not books 0–2 were generated before it.
  const alone = generateCorpus({ ...options, chapters: 2, firstBook: 3 });
  assert.deepEqual(alone.books[0], a.books[3]);
});

Deno.test("long-range statements agree with the book's cast, towns and earlier events", () => {
  const corpus = generateCorpus({ seed: 21, words: 60_000, wordsPerChapter: 1200 });
  const counts = { attribute: 0, distance: 0, founding: 0, gift: 0 };
  for (const book of corpus.books) {
    const cast = new Map(book.cast.map((c) => [c.name, c]));
    const distance = new Map<string, string>();
    const founding = new Map<string, string>();
    const gifts: { giver: string; object: string; receiver: string }[] = [];
    const agree = (key: string, value: string, seen: Map<string, string>, sentence: string) => {
      const earlier = seen.get(key);
      assert.ok(
        earlier === undefined || earlier === value,
        `${book.title}: "${sentence}" contradicts ${earlier}`,
      );
      seen.set(key, value);
    };
    for (const sentence of sentencesOf(book)) {
      for (const m of sentence.matchAll(/\b([A-Z][a-z]+), the ([a-z -]+) from ([A-Z][a-z]+),/g)) {
        const c = cast.get(m[1]);
        assert.ok(c, `unknown character in "${sentence}"`);
        assert.deepEqual([m[2], m[3]], [c.profession, c.home], sentence);
        counts.attribute++;
      }
      for (
        const m of sentence.matchAll(
          /([A-Z][a-z]+) was an? ([a-z-]+) ([a-z -]+), as everyone in ([A-Z][a-z]+) knew/g,
        )
      ) {
        const c = cast.get(m[1])!;
        assert.deepEqual([m[2], m[3], m[4]], [c.trait, c.profession, c.home], sentence);
        counts.attribute++;
      }
      for (
        const m of sentence.matchAll(
          /([A-Z][a-z]+) had been an? ([a-z -]+) in ([A-Z][a-z]+) for (\d+) years/g,
        )
      ) {
        const c = cast.get(m[1])!;
        assert.deepEqual([m[2], m[3], Number(m[4])], [c.profession, c.home, c.yearsInTrade], sentence);
        counts.attribute++;
      }
      for (
        const m of sentence.matchAll(
          /from ([A-Z][a-z]+) to ([A-Z][a-z]+), ([\d.]+) miles|It is ([\d.]+) miles from ([A-Z][a-z]+) to ([A-Z][a-z]+)/g,
        )
      ) {
        const [a, b, miles] = m[1] !== undefined ? [m[1], m[2], m[3]] : [m[5], m[6], m[4]];
        agree([a, b].sort().join("|"), miles, distance, sentence);
        counts.distance++;
      }
      for (
        const m of sentence.matchAll(
          /The ([a-z ]+) in ([A-Z][a-z]+) had stood since (\d+), and ([\d,]+) people/g,
        )
      ) {
        agree(`${m[1]}|${m[2]}`, `${m[3]}|${m[4]}`, founding, sentence);
        counts.founding++;
      }
      const gave = /^([A-Z][a-z]+) gave the ([a-z -]+) to ([A-Z][a-z]+),/.exec(sentence);
      if (gave) gifts.push({ giver: gave[1], object: gave[2], receiver: gave[3] });
      const kept = /^([A-Z][a-z]+) still had the ([a-z ]+) that ([A-Z][a-z]+) had given/.exec(sentence);
      if (kept && cast.has(kept[1])) {
        const [, receiver, object, giver] = kept;
        assert.ok(
          gifts.some((g) => g.giver === giver && g.receiver === receiver && g.object.endsWith(` ${object}`)),
          `${book.title}: "${sentence}" without an earlier gift`,
        );
        counts.gift++;
      }
    }
  }
  console.log("checked statements:", counts);
  for (const [kind, n] of Object.entries(counts)) assert.ok(n >= 5, `only ${n} ${kind} statements checked`);
});

Deno.test("no bAbI entity word appears in books or haystack sentences", () => {
  const reserved = new Set(BABI_RESERVED_WORDS);
  const haystack = haystackSentences(9);
  const sentences: string[] = [];
  for (let i = 0; i < 20_000; i++) sentences.push(haystack.next().value);
  const texts = [corpusText(generateCorpus({ seed: 9, words: 100_000 })), sentences.join(" ")];
  for (const text of texts) {
    const hits = new Set(
      (text.match(/[A-Za-z]+/g) ?? []).map((w) => w.toLowerCase()).filter((w) => reserved.has(w)),
    );
    assert.deepEqual([...hits], [], "bAbI words in generated text");
    assert.doesNotMatch(text, /\bmagic\b/i, "RULER's needle word in generated text");
  }
});

Deno.test("200K words generate in well under two seconds", () => {
  const start = performance.now();
  const corpus = generateCorpus({ seed: 1, words: 200_000 });
  const ms = performance.now() - start;
  console.log(`200K words: ${ms.toFixed(0)} ms, ${corpus.books.length} books`);
  assert.ok(corpus.words >= 200_000);
  assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
});

Deno.test("haystackSentences: deterministic, seed-dependent, standalone sentences", () => {
  const take = (seed: number, n: number) => {
    const it = haystackSentences(seed);
    return Array.from({ length: n }, () => it.next().value);
  };
  const a = take(4, 2000);
  assert.deepEqual(take(4, 2000), a);
  assert.notDeepEqual(take(5, 50), a.slice(0, 50));
  assert.ok(new Set(a).size > 1900, `only ${new Set(a).size} distinct sentences of 2000`);
  for (const sentence of a) {
    assert.match(sentence, /^["A-Z]/, sentence);
    assert.match(sentence, /[.?!]"?$/, sentence);
    // A sentence may say "his"/"her" about the person it names, never "he"/"she" about someone earlier.
    assert.doesNotMatch(sentence, /\b(he|she|him|they|them)\b/i, sentence);
  }
});

Deno.test("bookText: Gutenberg-style layout with wrapped paragraphs", () => {
  const book = generateCorpus({ seed: 8, chapters: 5, chaptersPerBook: 5, wordsPerChapter: 200 }).books[0];
  const text = bookText(book);
  const lines = text.split("\n");
  assert.equal(lines[0], book.title.toUpperCase());
  assert.equal(lines[2], `By ${book.author}`);
  const headings = lines.filter((l) => l.startsWith("CHAPTER "));
  assert.deepEqual(headings, ["CHAPTER I.", "CHAPTER II.", "CHAPTER III.", "CHAPTER IV.", "CHAPTER V."]);
  for (const line of lines) assert.ok(line.length <= 70, `line longer than 70: ${line}`);
  // Unwrapping the paragraphs gives back the sentences.
  const blocks = text.split(/\n\n+/).map((b) => b.replace(/\n/g, " ").trim());
  const paragraphs = book.chapters.flatMap((c) => c.paragraphs.map((p) => p.join(" ")));
  for (const paragraph of paragraphs) assert.ok(blocks.includes(paragraph), paragraph.slice(0, 60));
  assert.equal(regexWords(text) > book.words, true);
});

Deno.test("fixtures regenerate bit-identically and match their manifest", async () => {
  const shippedManifestText = await Deno.readTextFile(join(FIXTURES, "manifest.json"));
  const shipped = corpusManifestSchema.parse(JSON.parse(shippedManifestText));
  assert.equal(shipped.generatorVersion, CORPUS_GENERATOR_VERSION);
  const temp = await Deno.makeTempDir({ prefix: "longtune-corpus-" });
  try {
    const rebuilt = await makeCorpusFixtures(temp);
    assert.equal(await Deno.readTextFile(join(temp, "manifest.json")), shippedManifestText);
    let total = 0;
    for (const [path, entry] of Object.entries(shipped.files)) {
      const bytes = await Deno.readFile(join(FIXTURES, path));
      const again = await Deno.readFile(join(temp, path));
      assert.equal(sha256(bytes), entry.sha256, `${path}: shipped bytes differ from manifest`);
      assert.equal(bytes.length, entry.bytes, `${path}: size`);
      assert.equal(sha256(again), entry.sha256, `${path}: regenerated bytes differ`);
      total += bytes.length;
    }
    assert.deepEqual(Object.keys(rebuilt.files), Object.keys(shipped.files));
    total += shippedManifestText.length + (await Deno.stat(join(FIXTURES, "make.ts"))).size;
    console.log(`fixtures/corpus: ${Object.keys(shipped.files).length + 2} files, ${total} bytes`);
    assert.ok(total < 1.5e6, `fixtures/corpus holds ${total} bytes`);
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
});
