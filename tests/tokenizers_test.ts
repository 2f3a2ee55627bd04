import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Rng } from "../src/random/philox.ts";
import type { Tokenizer } from "../src/data/tokenizer.ts";
import {
  bytesToUnicode,
  byteTokenizer,
  GPT2_SPLIT_PATTERN,
  loadGpt2Tokenizer,
  loadHfTokenizer,
  loadTokenizer,
} from "../src/data/tokenizers.ts";

const FIXTURES = new URL("../fixtures/tokenizers/", import.meta.url).pathname;
const GPT2_TINY = `${FIXTURES}gpt2-tiny`;
const HF_TINY = `${FIXTURES}hf-tiny`;
const END_OF_TEXT_ID = 292; // after the 256 bytes and 36 merges of fixtures/tokenizers/make.ts

/** The fixture's hash, pinned: it changes only if the definition or the canonical hashing changes. */
const TINY_HASH = "ed49c64e40d104aa9738fc4403aed722f08a06284892224637b37c99eb158c26";

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "longtune-tokenizers-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Seeded text mixing what tokenizers trip over: specials spelled out, odd whitespace, marks, astral code points. */
function randomText(rng: Rng): string {
  const pieces = [
    () => " ",
    () => "\n",
    () => "\t",
    () => "   ",
    () =>
      rng.pick([
        "the",
        " the",
        "thing",
        " thing",
        "Hello",
        " world",
        "it's",
        "123",
        "é",
        " .",
        "<|endoftext|>",
      ]),
    () => String.fromCharCode(0x20 + rng.int(0x5f)),
    () => String.fromCharCode(0x80 + rng.int(0x80)), // Latin-1, with U+0085 and U+00A0
    () => "\u0301", // a combining mark with nothing to combine with
    () => String.fromCodePoint(0x4e00 + rng.int(0x5200)),
    () => String.fromCodePoint(0x1f600 + rng.int(0x50)),
    () => rng.pick(["\uFEFF", "\u2028", "\u3000", "\u200b"]),
    () => {
      const code = rng.int(0x110000 - 0x800);
      return String.fromCodePoint(code < 0xd800 ? code : code + 0x800); // any scalar value, never a surrogate
    },
  ];
  let text = "";
  const length = rng.int(40);
  for (let i = 0; i < length; i++) text += rng.pick(pieces)();
  return text;
}

Deno.test("byte tokenizer: ids are UTF-8 bytes, specials follow, decode is lossless", () => {
  const tok = byteTokenizer();
  assert.equal(tok.name, "byte");
  assert.equal(tok.vocabSize, 257);
  assert.deepEqual(tok.encode("hé€😀"), [104, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80]);
  assert.deepEqual(tok.encode("<|endoftext|>").length, 13, "a special spelled in text stays text");
  assert.equal(tok.special("<|endoftext|>"), 256);
  assert.equal(tok.special("<bos>"), undefined);
  assert.equal(tok.decode([104, 105, 256, 0xc3, 0xa9]), "hi<|endoftext|>é");
  assert.equal(tok.decode([0xc3]), "\uFFFD", "half a character");
  assert.equal(tok.decode([0xc3, 256, 0xa9]), "\uFFFD<|endoftext|>\uFFFD", "a special splits the bytes");
  assert.equal(tok.decode([0xef, 0xbb, 0xbf, 0x78]), "\uFEFFx", "a leading U+FEFF is kept");
  assert.equal(tok.decode([]), "");
  assert.throws(
    () => tok.decode([104, 257]),
    /byte: cannot decode id 257 at position 1 \(vocabulary has ids 0…256\)/,
  );
  assert.throws(() => tok.decode([1.5]), /cannot decode id 1.5/);

  const chat = byteTokenizer(["<bos>", "<eos>"]);
  assert.equal(chat.special("<bos>"), 256);
  assert.equal(chat.special("<eos>"), 257);
  assert.equal(chat.vocabSize, 258);
  assert.match(chat.name, /^byte:[0-9a-f]{12}$/);
  assert.notEqual(chat.hash, tok.hash);
  assert.throws(() => byteTokenizer(["<a>", "<a>"]), /special token "<a>" is listed twice/);
});

Deno.test("byte tokenizer hash is sha256 of its canonical description", () => {
  const description = '{"kind":"byte","specials":["<|endoftext|>"]}';
  const want = createHash("sha256").update(description).digest("hex");
  assert.equal(byteTokenizer().hash, want);
  assert.equal(want, "bf9852f5c193a94ecc5c7e768aabde51ccf82efc9dc7ffb3bc4faec2045ee6f0");
});

Deno.test("bytes_to_unicode is GPT-2's: printable bytes stand for themselves, space is Ġ, NUL is Ā", () => {
  const chars = bytesToUnicode();
  assert.equal(chars.length, 256);
  assert.equal(new Set(chars).size, 256);
  assert.equal(chars[0x21], "!");
  assert.equal(chars[0x20], "Ġ");
  assert.equal(chars[0x0a], "Ċ");
  assert.equal(chars[0x00], "Ā");
  assert.equal(chars[0xad], "Ń"); // the soft hyphen is the last of the 68 remapped bytes
  assert.equal(chars[0xe9], "é");
});

/**
 * Ids worked out by hand from make.ts's merge ranks; printable bytes have id = code − 33 (GPT-2's order),
 * space is 220, and 0x85 is 227 (the remapped bytes 0–32, 127–160, 173 take ids 188–255 in order).
 */
const HAND_ENCODINGS: [string, number[]][] = [
  // Ġ t h e: "Ġ t" (rank 0) first, then "h e" (1), then "Ġt he" (4) → Ġthe.
  // Ġ t h i n g: Ġt, in (2), ing (5), Ġth (8), Ġthing (9).
  [" the thing", [260, 265]],
  ["the", [262]], // "h e" (1) beats "t h" (3), then "t he" (6)
  ["thing", [263]], // in, ing, th, thing
  ["Hello world", [284, 289]],
  ["Hello", [284]],
  ["tea", [83, 68, 64]], // no merge applies: t e a
  ["é", [274]],
  [" é", [275]],
  ["it's", [72, 83, 279]], // "it" has no merge; "'s" is its own piece
  ["123", [278]],
  ["a   b", [64, 272, 220, 65]], // "  " is a piece (whitespace not before a word), " b" another
  ["\n\n", [276]],
  ["😀", [290, 246, 222]], // F0 9F → ðŁ; 98 → 246; 80 → 222
  ["a .b", [64, 220, 13, 65]], // pieces "a", " .", "b"
  ["", []],
];

Deno.test("GPT-2 BPE encodes the fixture's hand-worked examples, in both layouts", async () => {
  for (const tok of [await loadGpt2Tokenizer(GPT2_TINY), await loadHfTokenizer(HF_TINY)]) {
    for (const [text, want] of HAND_ENCODINGS) {
      assert.deepEqual(tok.encode(text), want, `${tok.name}: ${JSON.stringify(text)}`);
      assert.equal(tok.decode(want), text, `${tok.name}: decode ${JSON.stringify(text)}`);
    }
  }
});

Deno.test("pieces split where Oniguruma splits: U+FEFF is not whitespace, U+0085 is", async () => {
  const tok = await loadHfTokenizer(HF_TINY);
  // Oniguruma: "a", " \uFEFF" (space joins the symbol), "b" → merge "Ġ ï" applies. JavaScript's \s would
  // split " " from "\uFEFF" and give [64, 220, 171, 119, 123, 65].
  assert.deepEqual(tok.encode("a \uFEFFb"), [64, 280, 119, 123, 65]);
  // Oniguruma: "a", " ", "\x85", "b" → no "Ġ Â" merge. JavaScript's \s would give " \x85" and [64, 291, 227, 65].
  assert.deepEqual(tok.encode("a \x85b"), [64, 220, 126, 227, 65]);
});

Deno.test("both layouts: same ids on random text, same name and pinned hash, lossless round trip", async () => {
  const gpt2 = await loadGpt2Tokenizer(GPT2_TINY);
  const hf = await loadHfTokenizer(HF_TINY);
  const bytes = byteTokenizer();
  assert.equal(gpt2.hash, TINY_HASH);
  assert.equal(hf.hash, TINY_HASH);
  assert.equal(gpt2.name, `bpe:${TINY_HASH.slice(0, 12)}`);
  assert.equal(hf.name, gpt2.name);
  assert.equal(gpt2.vocabSize, 293);
  const rng = new Rng(2024, 7);
  let tokens = 0, characters = 0;
  for (let i = 0; i < 300; i++) {
    const text = randomText(rng);
    const ids = gpt2.encode(text);
    assert.deepEqual(hf.encode(text), ids, `layouts differ on ${JSON.stringify(text)}`);
    assert.ok(!ids.includes(END_OF_TEXT_ID), `encode produced the special id for ${JSON.stringify(text)}`);
    assert.equal(gpt2.decode(ids), text, `gpt2 round trip of ${JSON.stringify(text)}`);
    assert.equal(bytes.decode(bytes.encode(text)), text, `byte round trip of ${JSON.stringify(text)}`);
    tokens += ids.length;
    characters += text.length;
  }
  assert.ok(tokens > 0 && tokens <= 4 * characters, `${tokens} tokens for ${characters} UTF-16 units`);
});

Deno.test("BPE special tokens: looked up by name, rendered by name, never produced by encode", async () => {
  const tok = await loadTokenizer(HF_TINY);
  assert.equal(tok.special("<|endoftext|>"), END_OF_TEXT_ID);
  assert.equal(tok.special("<|im_start|>"), undefined);
  assert.deepEqual(tok.encode("<|endoftext|>"), [27, 91, 68, 77, 67, 78, 69, 83, 68, 87, 83, 91, 29]);
  assert.equal(tok.decode([260, END_OF_TEXT_ID, 284]), " the<|endoftext|>Hello");
  assert.equal(tok.decode([290, 246]), "\uFFFD", "three of an emoji's four bytes");
  assert.equal(tok.decode([172, END_OF_TEXT_ID]), "\uFFFD<|endoftext|>");
  assert.equal(tok.decode([]), "");
  assert.throws(() => tok.decode([293]), /cannot decode id 293 at position 0 \(vocabulary has ids 0…292\)/);
});

Deno.test("Llama-3-style tokenizer.json: Split + ByteLevel, string merges, specials outside the vocabulary", async () => {
  await withTempDir(async (dir) => {
    const json = JSON.parse(await Deno.readTextFile(`${HF_TINY}/tokenizer.json`));
    delete json.model.vocab["<|endoftext|>"];
    json.model.merges = json.model.merges.map(([a, b]: [string, string]) => `${a} ${b}`);
    json.pre_tokenizer = {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: GPT2_SPLIT_PATTERN }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    };
    json.added_tokens = [
      { id: 300, content: "<|begin_of_text|>", special: true },
      { id: 301, content: "<|eot_id|>", special: true },
    ];
    const file = `${dir}/tokenizer.json`;
    await Deno.writeTextFile(file, JSON.stringify(json));
    const llama = await loadTokenizer(file);
    const tiny = await loadHfTokenizer(HF_TINY);
    assert.equal(llama.vocabSize, 302);
    assert.equal(llama.special("<|begin_of_text|>"), 300);
    assert.equal(llama.special("<|endoftext|>"), undefined);
    assert.notEqual(llama.hash, tiny.hash);
    assert.equal(llama.decode([300, 260, 301]), "<|begin_of_text|> the<|eot_id|>");
    assert.throws(
      () => llama.decode([295]),
      /cannot decode id 295/,
      "ids between the vocabulary and the specials",
    );
    const rng = new Rng(99, 1);
    for (let i = 0; i < 100; i++) {
      const text = randomText(rng);
      assert.deepEqual(
        llama.encode(text),
        tiny.encode(text),
        `Split + ByteLevel vs ByteLevel on ${JSON.stringify(text)}`,
      );
    }
  });
});

Deno.test("loaders name the path and the field when files are missing or malformed", async () => {
  await withTempDir(async (dir) => {
    const vocab = JSON.parse(await Deno.readTextFile(`${GPT2_TINY}/vocab.json`));
    const merges = await Deno.readTextFile(`${GPT2_TINY}/merges.txt`);
    const tokenizerJson = await Deno.readTextFile(`${HF_TINY}/tokenizer.json`);
    const folder = async (name: string, files: Record<string, string>) => {
      const path = `${dir}/${name}`;
      await Deno.mkdir(path);
      for (const [file, text] of Object.entries(files)) await Deno.writeTextFile(`${path}/${file}`, text);
      return path;
    };
    const expect = async (spec: string, pattern: RegExp) => {
      await assert.rejects(loadTokenizer(spec), (error: Error) => {
        assert.match(error.message, pattern);
        return true;
      });
    };

    await expect(`${dir}/absent`, /tokenizer ".*\/absent": no such file or folder \(expected "byte"/);
    await expect(
      await folder("empty", {}),
      /tokenizer folder .*\/empty: missing tokenizer\.json, or vocab\.json \+/,
    );
    await expect(await folder("vocab-only", { "vocab.json": "{}" }), /vocab-only: missing merges\.txt/);
    const badJson = await folder("bad-json", { "tokenizer.json": '{"model": ' });
    await expect(badJson, /bad-json\/tokenizer\.json: not valid JSON/);
    const unigram = JSON.parse(tokenizerJson);
    unigram.model.type = "Unigram";
    await expect(
      await folder("unigram", { "tokenizer.json": JSON.stringify(unigram) }),
      /unigram\/tokenizer\.json: model\.type: only BPE models are supported/,
    );
    const noVocab = JSON.parse(tokenizerJson);
    delete noVocab.model.vocab;
    await expect(
      await folder("no-vocab", { "tokenizer.json": JSON.stringify(noVocab) }),
      /no-vocab\/tokenizer\.json: model\.vocab: /,
    );
    const badConfig = await folder("bad-config", {
      "tokenizer.json": tokenizerJson,
      "tokenizer_config.json": "[",
    });
    await expect(badConfig, /bad-config\/tokenizer_config\.json: not valid JSON/);

    await expect(
      await folder("three-part-merge", {
        "vocab.json": JSON.stringify(vocab),
        "merges.txt": "#version: 0.2\nĠ t\nh e x\n",
      }),
      /three-part-merge\/merges\.txt line 3: expected two tokens separated by one space/,
    );
    await expect(
      await folder("unknown-merge", {
        "vocab.json": JSON.stringify(vocab),
        "merges.txt": "#version: 0.2\nĠ t\nq z\n",
      }),
      /unknown-merge\/merges\.txt line 3 \("q z"\) uses "qz", which is not in the vocabulary/,
    );
    const noByte = { ...vocab };
    delete noByte["Ā"];
    await expect(
      await folder("no-byte", { "vocab.json": JSON.stringify(noByte), "merges.txt": merges }),
      /no-byte: byte-level BPE needs all 256 byte tokens, but "Ā" \(byte 0x00\) is not in the vocabulary/,
    );
    await expect(
      await folder("string-id", {
        "vocab.json": JSON.stringify({ ...vocab, a: "64" }),
        "merges.txt": merges,
      }),
      /string-id\/vocab\.json: a: /,
    );
    await expect(
      await folder("shared-id", {
        "vocab.json": JSON.stringify({ ...vocab, extra: 0 }),
        "merges.txt": merges,
      }),
      /shared-id: tokens "!" and "extra" share id 0/,
    );
    const clash = JSON.parse(tokenizerJson);
    clash.added_tokens[0].id = 0;
    await expect(
      await folder("clash", { "tokenizer.json": JSON.stringify(clash) }),
      /clash\/tokenizer\.json: added token "<\|endoftext\|>" takes id 0, which the vocabulary gives to "!"/,
    );
  });
});

Deno.test("loadTokenizer: 'byte', a folder of either layout, a tokenizer.json file", async () => {
  const specs: [string, string][] = [
    ["byte", "byte"],
    [GPT2_TINY, `bpe:${TINY_HASH.slice(0, 12)}`],
    [HF_TINY, `bpe:${TINY_HASH.slice(0, 12)}`],
    [`${HF_TINY}/tokenizer.json`, `bpe:${TINY_HASH.slice(0, 12)}`],
  ];
  for (const [spec, name] of specs) {
    const tok: Tokenizer = await loadTokenizer(spec);
    assert.equal(tok.name, name, spec);
    assert.equal(tok.decode(tok.encode(" the thing .")), " the thing .", `${spec}: no space clean-up`);
  }
});
