// Content hashes, the WikiText/PG-19 writers, and the loaders of real files (WikiText, PG-19,
// BABILong, RULER) on the shipped fixtures and on small hand-written files, including every error.

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { bookText, generateCorpus } from "../src/data/corpus.ts";
import { canonicalJson, hashJson, sha256 } from "../src/data/hash.ts";
import {
  bookToPg19,
  renderWikiText,
  wikitextTokens,
  writeFileAtomic,
  writeFolderAtomic,
  writePg19,
  writeWikiText,
} from "../src/data/layouts.ts";
import type { WikiTextArticle } from "../src/data/layouts.ts";
import {
  DataFileError,
  jsonSyntaxErrorOffset,
  loadBabilong,
  loadPg19,
  loadRuler,
  loadWikiText,
  parseCsv,
  splitWikiTextDocuments,
} from "../src/data/loaders.ts";

const FIXTURES = fileURLToPath(new URL("../fixtures/corpus/", import.meta.url));

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "longtune-loaders-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function writeFiles(root: string, files: Record<string, string>): Promise<void> {
  for (const [path, text] of Object.entries(files)) {
    await Deno.mkdir(join(root, path, ".."), { recursive: true });
    await Deno.writeTextFile(join(root, path), text);
  }
}

/** Asserts that `promise` rejects with a DataFileError whose message holds every fragment. */
async function assertDataError(
  promise: Promise<unknown>,
  fragments: string[],
  where: { line?: number; index?: number; field?: string } = {},
): Promise<void> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  assert.ok(error instanceof DataFileError, `expected a DataFileError, got ${error}`);
  for (const fragment of fragments) {
    assert.ok(error.message.includes(fragment), `"${error.message}" lacks "${fragment}"`);
  }
  if (where.line !== undefined) assert.equal(error.line, where.line, error.message);
  if (where.index !== undefined) assert.equal(error.index, where.index, error.message);
  if (where.field !== undefined) assert.equal(error.field, where.field, error.message);
}

// ---------------------------------------------------------------------------------------------
// hash.ts (expected digests computed with Python's hashlib)

Deno.test("sha256 of strings and bytes matches known digests", () => {
  assert.equal(sha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  assert.equal(sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  assert.equal(sha256("h\u00e9llo"), "3c48591d8d098a4538f5e013dfcf406e948eac4d3277b10bf614e295d6068179");
  assert.equal(
    sha256(new Uint8Array([0, 1, 2, 255])),
    "3d1f57c984978ef98a18378c8166c1cb8ede02c03eeb6aee7e2f121dfeee3e56",
  );
});

Deno.test("canonicalJson sorts keys, so key order does not change the hash", () => {
  const a = { b: 1, a: [true, null, "x"], c: { z: 0.5, y: -0 }, big: 1e21 };
  const b = { big: 1e21, c: { y: 0, z: 0.5 }, a: [true, null, "x"], b: 1 };
  const canonical = '{"a":[true,null,"x"],"b":1,"big":1e+21,"c":{"y":0,"z":0.5}}';
  assert.equal(canonicalJson(a), canonical);
  assert.equal(canonicalJson(b), canonical);
  assert.equal(hashJson(a), "28d325c7abd819c4292ce815056eb51cad823d92c88c47a255a071cbbda0e451");
  assert.equal(hashJson(b), hashJson(a));
  assert.notEqual(hashJson({ ...a, b: 2 }), hashJson(a));
  // UTF-16 code-unit order (RFC 8785): the surrogate pair of U+1F600 sorts before U+FFFF.
  const unicode = { "\uffff": 1, "\u{1F600}": 2 };
  assert.equal(canonicalJson(unicode), '{"\u{1F600}":2,"\uffff":1}');
  assert.equal(hashJson(unicode), "48c5d098713870a7b88be7fc0ffc0a79e912d20f80ea8a4a5604426f49add103");
});

Deno.test("canonicalJson refuses values JSON cannot state, naming the path", () => {
  assert.throws(() => canonicalJson({ a: [1, NaN] }), /\$\.a\[1\] is NaN/);
  assert.throws(() => canonicalJson({ a: undefined }), /\$\.a is undefined/);
  assert.throws(() => canonicalJson({ when: new Date(0) }), /\$\.when is a Date/);
  assert.throws(() => canonicalJson({ n: 1n }), /\$\.n is bigint/);
  assert.equal(canonicalJson(Object.assign(Object.create(null), { k: "v" })), '{"k":"v"}');
});

// ---------------------------------------------------------------------------------------------
// WikiText

Deno.test("wikitextTokens: WikiText's spacing of punctuation, numbers and hyphens", () => {
  assert.equal(
    wikitextTokens(`"It is 12.5 miles," said Mara's friend, a well-known cooper of 1,250,000 barrels.`),
    `" It is 12 @.@ 5 miles , " said Mara 's friend , a well @-@ known cooper of 1 @,@ 250 @,@ 000 barrels .`,
  );
  assert.equal(
    wikitextTokens("Don't (ever) stop: 1843-1850; ok?"),
    "Do n't ( ever ) stop : 1843 @-@ 1850 ; ok ?",
  );
});

const ARTICLE: WikiTextArticle = {
  title: "Alpha Beta",
  lead: ["Alpha met Beta in 1,250 places.", "Beta's well-known room."],
  sections: [
    { heading: "Early life", level: 2, paragraphs: ["It was 3.5 miles."] },
    { heading: "Deep part", level: 3, paragraphs: ["Alpha again."] },
  ],
};

Deno.test("writeWikiText writes the raw and tokens layouts (hand-checked text)", async () => {
  await withTempDir(async (dir) => {
    const folder = join(dir, "wikitext");
    const valid: WikiTextArticle = { title: "Gamma", lead: ["Alpha and Gamma."], sections: [] };
    const { vocabularySize } = await writeWikiText(folder, { train: [ARTICLE], valid: [valid], test: [] }, {
      minCount: 2,
    });
    const read = (name: string) => Deno.readTextFile(join(folder, name));
    assert.equal(
      await read("wiki.train.raw"),
      " \n = Alpha Beta = \n \n Alpha met Beta in 1 @,@ 250 places . \n Beta 's well @-@ known room . \n \n" +
        " = = Early life = = \n \n It was 3 @.@ 5 miles . \n \n = = = Deep part = = = \n \n Alpha again . \n \n",
    );
    // In train, only "=" (12×), "Alpha" (3×), "Beta" (3×) and "." (4×) occur at least twice.
    assert.equal(
      await read("wiki.train.tokens"),
      " \n = Alpha Beta = \n \n Alpha <unk> Beta <unk> <unk> <unk> <unk> <unk> . \n" +
        " Beta <unk> <unk> <unk> <unk> <unk> . \n \n = = <unk> <unk> = = \n \n" +
        " <unk> <unk> <unk> <unk> <unk> <unk> . \n \n = = = <unk> <unk> = = = \n \n Alpha <unk> . \n \n",
    );
    assert.equal(await read("wiki.valid.raw"), " \n = Gamma = \n \n Alpha and Gamma . \n \n");
    assert.equal(await read("wiki.valid.tokens"), " \n = <unk> = \n \n Alpha <unk> <unk> . \n \n");
    assert.equal(await read("wiki.test.raw"), " \n");
    assert.equal(vocabularySize, 5); // four kept tokens and <unk>

    const train = await loadWikiText(folder, "train");
    assert.deepEqual(train.documents.map((d) => [d.title, d.line]), [["Alpha Beta", 2]]);
    assert.equal(train.documents[0].text, train.text.slice(2));
    assert.equal(train.sha256, sha256(train.text));
    const tokens = await loadWikiText(folder, "validation", { variant: "tokens" });
    assert.equal(tokens.split, "valid");
    assert.deepEqual(tokens.documents.map((d) => d.title), ["<unk>"]);
    await assertDataError(loadWikiText(dir, "test"), ["wiki.test.raw", "not found", "wikitext-2-raw"]);
    await assert.rejects(writeWikiText(folder, { train: [], valid: [], test: [] }), /already exists/);
  });
});

Deno.test("splitWikiTextDocuments: titles framed by blank lines only, CRLF, preamble", () => {
  const lines = [
    " ",
    " = Alpha = ",
    " ",
    " Alpha is a test of 1 @,@ 000 words . ",
    " A second paragraph . ",
    " ",
    " = = History = = ",
    " ",
    " The history . ",
    " = Position ; GP = ", // in-body line shaped like a title, as in WikiText-103: not an article
    " More text . ",
    " ",
    " = = = Detail = = = ",
    " ",
    " Detail text . ",
    " ",
    " = Beta = ",
    " ",
    " Beta text . ",
    " ",
    "",
  ];
  const text = lines.join("\n");
  const documents = splitWikiTextDocuments(text);
  assert.deepEqual(documents.map((d) => [d.title, d.line]), [["Alpha", 2], ["Beta", 17]]);
  assert.equal(documents.map((d) => d.text).join(""), text.slice(2));
  assert.equal(documents[1].text, " = Beta = \n \n Beta text . \n \n");
  assert.equal(documents[1].words, 6);

  const crlf = splitWikiTextDocuments(lines.join("\r\n"));
  assert.deepEqual(crlf.map((d) => d.title), ["Alpha", "Beta"]);

  const withPreamble = splitWikiTextDocuments("Preface line .\n\n = Alpha = \n\n Body .\n");
  assert.deepEqual(withPreamble.map((d) => [d.title, d.text]), [
    ["", "Preface line .\n\n"],
    ["Alpha", " = Alpha = \n\n Body .\n"],
  ]);
});

Deno.test("loadWikiText on the fixtures and in a release subfolder", async () => {
  const folder = join(FIXTURES, "wikitext");
  const raw = await loadWikiText(folder, "train");
  const tokens = await loadWikiText(folder, "train", { variant: "tokens" });
  assert.ok(raw.documents.length >= 5, `${raw.documents.length} documents`);
  assert.equal(raw.documents.length, tokens.documents.length);
  assert.equal(raw.documents.map((d) => d.text).join(""), raw.text.slice(2));
  assert.equal(raw.words, tokens.words); // <unk> replaces a token, never adds or drops one
  assert.ok(tokens.text.includes("<unk>") && !raw.text.includes("<unk>"));
  assert.match(raw.text, / @-@ /);
  assert.match(raw.text, / @,@ /);
  assert.match(raw.text, / @\.@ /);
  for (const document of raw.documents) assert.match(document.text, /^ = [^=].* = \n \n/);

  await withTempDir(async (dir) => {
    await writeFiles(dir, { "wikitext-2-raw/wiki.test.raw": " \n = Solo = \n \n Text . \n" });
    const test = await loadWikiText(dir, "test");
    assert.equal(test.path, join(dir, "wikitext-2-raw", "wiki.test.raw"));
    assert.deepEqual(test.documents.map((d) => d.title), ["Solo"]);
    await Deno.writeFile(join(dir, "wiki.valid.raw"), new Uint8Array([0x20, 0xff, 0x0a]));
    await assertDataError(loadWikiText(dir, "valid"), ["wiki.valid.raw", "not valid UTF-8"]);
    await writeFiles(dir, { "wiki.train.raw": " \n \n" });
    await assertDataError(loadWikiText(dir, "train"), ["wiki.train.raw", "holds no text"]);
  });
});

// ---------------------------------------------------------------------------------------------
// PG-19

Deno.test("parseCsv: quotes, doubled quotes, embedded line breaks, CRLF", () => {
  const rows = parseCsv('a,"b, c","say ""hi"""\r\n1,"two\nlines",3\n\n4,,\n', "x.csv");
  assert.deepEqual(rows, [
    { line: 1, fields: ["a", "b, c", 'say "hi"'] },
    { line: 2, fields: ["1", "two\nlines", "3"] },
    { line: 5, fields: ["4", "", ""] },
  ]);
  assert.throws(() => parseCsv('1,"open\n2,3\n', "m.csv"), /m\.csv: line 1: a quoted field is never closed/);
  assert.throws(() => parseCsv('1,ab"c"\n', "q.csv"), /q\.csv: line 1: a quote inside an unquoted field/);
});

Deno.test("loadPg19 on the fixtures joins metadata and book files", async () => {
  const folder = join(FIXTURES, "pg19");
  const train = await loadPg19(folder, "train");
  const validation = await loadPg19(folder, "validation");
  const test = await loadPg19(folder, "test");
  assert.deepEqual(train.map((b) => b.id), ["9000000", "9000001", "9000002"]);
  assert.deepEqual(validation.map((b) => b.id), ["9000003"]);
  assert.deepEqual(test.map((b) => b.id), ["9000004"]);
  const metadata = parseCsv(await Deno.readTextFile(join(folder, "metadata.csv")), "metadata.csv");
  for (const book of [...train, ...validation, ...test]) {
    const row = metadata.find((r) => r.fields[0] === book.id)!;
    assert.deepEqual([book.shortBookTitle, String(book.publicationDate), book.url], row.fields.slice(1));
    // The file's first line is the title, which the metadata gives as "Title by Author".
    assert.equal(book.text.split("\n")[0], book.shortBookTitle.replace(/ by [^]*$/, "").toUpperCase());
    assert.equal(book.sha256, sha256(book.text));
    assert.ok(book.words > 4000, `${book.id}: ${book.words} words`);
  }
});

Deno.test("writePg19 → loadPg19 round trip of generated books", async () => {
  await withTempDir(async (dir) => {
    const books = generateCorpus({ seed: 31, chapters: 4, chaptersPerBook: 2, wordsPerChapter: 120 }).books;
    await writePg19(join(dir, "pg19"), {
      train: [bookToPg19(books[0], "120")],
      validation: [],
      test: [bookToPg19(books[1], "7")],
    });
    assert.ok(
      (await Deno.readTextFile(join(dir, "pg19", "metadata.csv"))).startsWith("7,"),
      "rows sorted by id",
    );
    const [loaded] = await loadPg19(join(dir, "pg19"), "train");
    assert.equal(loaded.text, bookText(books[0]));
    assert.equal(loaded.publicationDate, books[0].year);
    assert.equal(loaded.shortBookTitle, `${books[0].title} by ${books[0].author}`);
    assert.deepEqual(await loadPg19(join(dir, "pg19"), "validation"), []);
    await assert.rejects(
      writePg19(join(dir, "dup"), {
        train: [bookToPg19(books[0], "5")],
        validation: [bookToPg19(books[1], "5")],
        test: [],
      }),
      /5 appears in both train and validation/,
    );
  });
});

Deno.test("loadPg19 accepts a header row and quoted titles; names the id of every join error", async () => {
  await withTempDir(async (dir) => {
    await writeFiles(dir, {
      "metadata.csv":
        'book_id,short_book_title,publication_date,url\r\n10,"Moon, Sun and ""Stars"" by A. Writer",1865,' +
        "http://x/10\r\n20,Plain by B,1901,http://x/20\r\n",
      "train/10.txt": "MOON, SUN AND STARS\n",
      "test/20.txt": "PLAIN\n",
    });
    const [book] = await loadPg19(dir, "train");
    assert.deepEqual(
      [book.id, book.shortBookTitle, book.publicationDate, book.url, book.text],
      ["10", 'Moon, Sun and "Stars" by A. Writer', 1865, "http://x/10", "MOON, SUN AND STARS\n"],
    );

    await writeFiles(dir, { "train/30.txt": "NO ROW\n" });
    await assertDataError(loadPg19(dir, "train"), [join(dir, "train", "30.txt"), "book 30 has no row"]);
    await Deno.remove(join(dir, "train", "30.txt"));

    await writeFiles(dir, {
      "metadata.csv": "10,A by B,1865,u\n20,C by D,1901,u\n40,Lost by E,1890,u\n",
    });
    await assertDataError(loadPg19(dir, "train"), ["book 40 has no 40.txt", "allowExtraMetadata"], {
      line: 3,
      field: "book_id",
    });
    assert.equal((await loadPg19(dir, "train", { allowExtraMetadata: true })).length, 1);

    await writeFiles(dir, { "metadata.csv": "10,A by B,1865,u\n20,C by D,18x5,u\n" });
    await assertDataError(loadPg19(dir, "train"), ["metadata.csv", "expected a year"], {
      line: 2,
      field: "publication_date",
    });
    await writeFiles(dir, { "metadata.csv": "10,A by B,1865,u\n20,C by D\n" });
    await assertDataError(loadPg19(dir, "train"), ["has 2 column(s)"], { line: 2 });
    await writeFiles(dir, { "metadata.csv": "10,A by B,1865,u\n20,C by D,1901,u\n10,Again,1870,u\n" });
    await assertDataError(loadPg19(dir, "train"), ["book 10 is listed twice (first on line 1)"], { line: 3 });
    await writeFiles(dir, { "metadata.csv": "10,,1865,u\n20,C by D,1901,u\n" });
    await assertDataError(loadPg19(dir, "train"), ["expected a non-empty title"], {
      line: 1,
      field: "short_book_title",
    });
    await assertDataError(loadPg19(dir, "validation"), [join(dir, "validation"), "not found"]);
    await Deno.remove(join(dir, "metadata.csv"));
    await assertDataError(loadPg19(dir, "train"), ["metadata.csv", "not found"]);
  });
});

// ---------------------------------------------------------------------------------------------
// BABILong

const record = (i: number) => ({ input: `story ${i}`, question: `where ${i}?`, target: `place${i}` });

Deno.test("loadBabilong reads arrays and JSON lines, with task and length from the path", async () => {
  await withTempDir(async (dir) => {
    await writeFiles(dir, {
      "qa1/4k.json": JSON.stringify([record(0), { ...record(1), extra: "ignored" }], null, 1),
      "qa2_1k.jsonl": `${JSON.stringify(record(2))}\n${JSON.stringify(record(3))}\n\n`,
      "8k/qa1.json": `${JSON.stringify(record(4))}\r\n`, // HF's to_json writes JSON lines into .json
      "1M-qa10.jsonl": JSON.stringify(record(5)),
      "README.md": "not data",
    });
    const samples = await loadBabilong(dir);
    assert.deepEqual(
      samples.map((s) => [s.task, s.length, s.lengthTokens, s.index, s.input, s.question, s.target]),
      [
        ["qa1", "4k", 4000, 0, "story 0", "where 0?", "place0"],
        ["qa1", "4k", 4000, 1, "story 1", "where 1?", "place1"],
        ["qa1", "8k", 8000, 0, "story 4", "where 4?", "place4"],
        ["qa2", "1k", 1000, 0, "story 2", "where 2?", "place2"],
        ["qa2", "1k", 1000, 1, "story 3", "where 3?", "place3"],
        ["qa10", "1M", 1_000_000, 0, "story 5", "where 5?", "place5"],
      ],
    );
    assert.equal(samples[2].path, join(dir, "8k", "qa1.json"));
    assert.equal((await loadBabilong(join(dir, "qa2_1k.jsonl"))).length, 2);
  });
});

Deno.test("loadBabilong errors name the file, the line or index, and the field", async () => {
  await withTempDir(async (dir) => {
    const lines = [JSON.stringify(record(0)), JSON.stringify(record(1)), '{"input": "x", "question": ', ""];
    await writeFiles(dir, { "qa1_0k.jsonl": lines.join("\n") });
    await assertDataError(loadBabilong(join(dir, "qa1_0k.jsonl")), [
      "qa1_0k.jsonl",
      "line 3",
      "not valid JSON",
    ], {
      line: 3,
    });

    await writeFiles(dir, {
      "qa1_0k.jsonl": `${JSON.stringify(record(0))}\n{"input":"x","question":"q","target":7}\n`,
    });
    await assertDataError(loadBabilong(join(dir, "qa1_0k.jsonl")), ["expected string, received number"], {
      line: 2,
      field: "target",
    });

    await writeFiles(dir, { "qa2/2k.json": JSON.stringify([record(0), { input: "x", target: "t" }]) });
    await assertDataError(loadBabilong(join(dir, "qa2", "2k.json")), [
      "record [1]",
      'field "question"',
      "missing",
    ], {
      index: 1,
      field: "question",
    });

    await writeFiles(dir, {
      "qa3/2k.json": '[\n{"input": "a", "question": "b", "target": "c"},\n\n{"input": }\n]',
    });
    await assertDataError(loadBabilong(join(dir, "qa3", "2k.json")), ["2k.json", "not valid JSON"], {
      line: 4,
    });

    await writeFiles(dir, { "qa4/2k.json": '{"input": "a", "question": "b", "target": "c"}\n[1]\n' });
    await assertDataError(loadBabilong(join(dir, "qa4", "2k.json")), ["expected object"], { line: 2 });

    await writeFiles(dir, { "stories.json": "[]" });
    await assertDataError(loadBabilong(join(dir, "stories.json")), [
      "stories.json",
      "qa1/4k.json",
      "qa1_4k.json",
    ]);
    await writeFiles(dir, { "qa21_4k.json": "[]" });
    await assertDataError(loadBabilong(join(dir, "qa21_4k.json")), ["does not tell the task and length"]);

    await withTempDir(async (twice) => {
      await writeFiles(twice, { "qa1/4k.json": "[]", "qa1_4k.jsonl": "" });
      await assertDataError(loadBabilong(twice), ["qa1 at 4k twice", "qa1_4k.jsonl"]);
    });
    await assertDataError(loadBabilong(join(dir, "absent")), ["absent", "not found"]);
    await withTempDir(async (empty) => {
      await assertDataError(loadBabilong(empty), ["holds no .json or .jsonl files"]);
    });
  });
});

Deno.test("jsonSyntaxErrorOffset finds the first bad character and agrees with JSON.parse", () => {
  const cases: [string, number | undefined][] = [
    ['{"a": [1, -2.5e3, true, false, null, "x\\u00e9\\n"]}', undefined],
    ["  [ ]  ", undefined],
    ["[1,]", 3],
    ['{"a" 1}', 5],
    ['{"a":01}', 6],
    ["tru", 0],
    ['"bad \\x escape"', 6],
    ['"tab\tinside"', 4],
    ["[1] x", 4],
    ["", 0],
    ['{"input": }', 10],
    ["[1, 2", 5],
  ];
  for (const [text, want] of cases) {
    assert.equal(jsonSyntaxErrorOffset(text), want, JSON.stringify(text));
    const parses = (() => {
      try {
        JSON.parse(text);
        return true;
      } catch {
        return false;
      }
    })();
    assert.equal(parses, want === undefined, `JSON.parse disagrees on ${JSON.stringify(text)}`);
  }
});

// ---------------------------------------------------------------------------------------------
// RULER

const rulerLine = (index: number, extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    index,
    input: `haystack ${index}`,
    outputs: [`${1000000 + index}`],
    length: 4096,
    answer_prefix: " Answer:",
    ...extra,
  });

Deno.test("loadRuler reads validation.jsonl records", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "niah_single_1", "validation.jsonl");
    await writeFiles(dir, {
      "niah_single_1/validation.jsonl": [
        rulerLine(0, { length_w_model_temp: 4100, token_position_answer: { "1000000": 37 } }),
        rulerLine(1),
        "",
      ].join("\n"),
    });
    assert.deepEqual(await loadRuler(path), [
      {
        index: 0,
        input: "haystack 0",
        outputs: ["1000000"],
        length: 4096,
        answer_prefix: " Answer:",
        length_w_model_temp: 4100,
        token_position_answer: { "1000000": 37 },
      },
      { index: 1, input: "haystack 1", outputs: ["1000001"], length: 4096, answer_prefix: " Answer:" },
    ]);
  });
});

Deno.test("loadRuler errors name the line and field", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "validation.jsonl");
    const cases: [string[], string[], { line: number; field?: string }][] = [
      [[rulerLine(0), "{not json"], ["not valid JSON"], { line: 2 }],
      [[JSON.stringify({ index: 0, input: "x", length: 1, answer_prefix: "" })], ["missing"], {
        line: 1,
        field: "outputs",
      }],
      [[rulerLine(0), rulerLine(1, { outputs: [1, "a"] })], ["expected string, received number"], {
        line: 2,
        field: "outputs.0",
      }],
      [[rulerLine(0, { outputs: [] })], ["at least one gold output"], { line: 1, field: "outputs" }],
      [[rulerLine(0, { length: "4096" })], ["expected number, received string"], {
        line: 1,
        field: "length",
      }],
      [[rulerLine(0, { index: 1.5 })], ["expected int"], { line: 1, field: "index" }],
      [[rulerLine(3), "", rulerLine(4), rulerLine(3)], ["index 3 repeats line 1"], {
        line: 4,
        field: "index",
      }],
    ];
    for (const [lines, fragments, where] of cases) {
      await Deno.writeTextFile(path, lines.join("\n") + "\n");
      await assertDataError(loadRuler(path), [path, ...fragments], where);
    }
    await assertDataError(loadRuler(join(dir, "none.jsonl")), ["not found", "validation.jsonl"]);
  });
});

// ---------------------------------------------------------------------------------------------
// Atomic writes

async function leftovers(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) if (entry.name.includes(".tmp-")) names.push(entry.name);
  return names;
}

Deno.test("writeFolderAtomic: all or nothing, refuses to clobber, leaves no temporary files", async () => {
  await withTempDir(async (dir) => {
    const folder = join(dir, "out");
    await writeFolderAtomic(folder, { "a.txt": "A", "sub/b.txt": "B" });
    assert.equal(await Deno.readTextFile(join(folder, "sub", "b.txt")), "B");
    await assert.rejects(writeFolderAtomic(folder, { "c.txt": "C" }), /already exists/);
    await writeFolderAtomic(folder, { "c.txt": "C" }, { overwrite: true });
    assert.deepEqual([...Deno.readDirSync(folder)].map((e) => e.name), ["c.txt"]);
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(folder)).mode! & 0o777, 0o755);

    // "x" as a file and as a folder cannot both be written: the failure must leave nothing behind.
    await assert.rejects(writeFolderAtomic(join(dir, "broken"), { "x": "file", "x/y": "inside" }));
    assert.equal(await Deno.stat(join(dir, "broken")).then(() => true, () => false), false);
    await assert.rejects(
      writeFolderAtomic(join(dir, "escape"), { "../evil.txt": "!" }),
      /plain relative path/,
    );
    assert.deepEqual(await leftovers(dir), []);
  });
});

Deno.test("writeFileAtomic replaces content and leaves no temporary files", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "deep", "file.json");
    await writeFileAtomic(path, "one");
    await writeFileAtomic(path, new TextEncoder().encode("two"));
    assert.equal(await Deno.readTextFile(path), "two");
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(path)).mode! & 0o777, 0o644);
    assert.deepEqual(await leftovers(join(dir, "deep")), []);
  });
});

Deno.test("renderWikiText rejects a section level below 2", () => {
  const bad: WikiTextArticle = {
    title: "T",
    lead: [],
    sections: [{ heading: "S", level: 1, paragraphs: [] }],
  };
  assert.throws(() => renderWikiText([bad]), /section "S" of "T": level must be an integer ≥ 2/);
});
