/**
 * The tokenizers longtune evaluates with: raw UTF-8 bytes, and byte-level BPE (GPT-2, Llama-3,
 * SmolLM, Qwen) from a Hugging Face `tokenizer.json` or from GPT-2's original `vocab.json` +
 * `merges.txt`. Both BPE layouts become one normalised tokenizer.json object that is hashed and
 * handed to `@huggingface/tokenizers` (pure JS, no network: it is given objects, never a model id).
 *
 * Three deliberate departures from the library's defaults, each for lossless, leak-free training text:
 * - `encode` never emits a special token: text that spells "<|endoftext|>" is encoded as text (as
 *   tiktoken with `disallowed_special=()` and HF with `split_special_tokens=True` do), so a document can
 *   never smuggle a document boundary into a packed batch. Callers insert specials by id.
 * - `decode` never "cleans up tokenization spaces" (" ." → "."), whatever tokenizer_config.json says.
 * - GPT-2's ByteLevel pre-tokenizer is run as the equivalent Split regex, which the library translates
 *   with Oniguruma's `\s` (Unicode White_Space) instead of JavaScript's (which adds U+FEFF and misses
 *   U+0085), so pieces, and hence ids, match the Rust `tokenizers` crate the models were trained with.
 */

import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { z } from "zod";
import { hashJson } from "./hash.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Special tokens a tokenizer gets when none are named: GPT-2's document separator. */
export const DEFAULT_SPECIALS: readonly string[] = ["<|endoftext|>"];

/** GPT-2's pre-tokenizer regex (Oniguruma syntax, as the Rust `tokenizers` crate compiles it). */
export const GPT2_SPLIT_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// ignoreBOM: a leading U+FEFF is text to reproduce, not a byte-order mark to drop.
const utf8Decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

function checkSpecials(specials: readonly string[], where: string): void {
  const seen = new Set<string>();
  for (const special of specials) {
    if (typeof special !== "string" || special.length === 0) {
      throw new Error(`${where}: special tokens must be non-empty strings, got ${JSON.stringify(special)}`);
    }
    if (seen.has(special)) {
      throw new Error(`${where}: special token ${JSON.stringify(special)} is listed twice`);
    }
    seen.add(special);
  }
}

function checkIds(
  ids: readonly number[],
  vocabSize: number,
  known: (id: number) => boolean,
  name: string,
): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize || !known(id)) {
      throw new RangeError(
        `${name}: cannot decode id ${id} at position ${i} (vocabulary has ids 0…${vocabSize - 1})`,
      );
    }
  }
}

/**
 * UTF-8 bytes as tokens: ids 0–255 are bytes, specials follow from 256. Decoding is lossless for
 * valid UTF-8; an invalid byte sequence (e.g. a character cut in half) decodes to U+FFFD.
 * @example const tok = byteTokenizer(); tok.encode("hé") // [104, 195, 169]; tok.special("<|endoftext|>") // 256
 */
export function byteTokenizer(specials: readonly string[] = DEFAULT_SPECIALS): Tokenizer {
  checkSpecials(specials, "byteTokenizer");
  const specialIds = new Map(specials.map((special, i) => [special, 256 + i]));
  const hash = hashJson({ kind: "byte", specials: [...specials] });
  const vocabSize = 256 + specials.length;
  const isDefault = specials.length === DEFAULT_SPECIALS.length &&
    specials.every((s, i) => s === DEFAULT_SPECIALS[i]);
  const name = isDefault ? "byte" : `byte:${hash.slice(0, 12)}`;
  return {
    name,
    hash,
    vocabSize,
    encode: (text) => Array.from(utf8Encoder.encode(text)),
    decode(ids) {
      checkIds(ids, vocabSize, () => true, name);
      let text = "";
      let run: number[] = [];
      for (const id of ids) {
        if (id < 256) {
          run.push(id);
          continue;
        }
        text += utf8Decoder.decode(new Uint8Array(run)) + specials[id - 256];
        run = [];
      }
      return text + utf8Decoder.decode(new Uint8Array(run));
    },
    special: (token) => specialIds.get(token),
  };
}

/**
 * GPT-2's bytes_to_unicode: each byte as a printable character, so byte strings can be BPE'd as text.
 * Printable Latin-1 bytes stand for themselves; the other 68 take U+0100 onwards in byte order.
 */
export function bytesToUnicode(): string[] {
  const printable = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const chars: string[] = [];
  let next = 0;
  for (let b = 0; b < 256; b++) chars.push(String.fromCharCode(printable(b) ? b : 256 + next++));
  return chars;
}

// --- tokenizer.json -------------------------------------------------------------------------------

const componentSchema = z.looseObject({ type: z.string() });

const addedTokenSchema = z.looseObject({
  id: z.int().nonnegative(),
  content: z.string().min(1),
  special: z.boolean().default(false),
  single_word: z.boolean().default(false),
  lstrip: z.boolean().default(false),
  rstrip: z.boolean().default(false),
  normalized: z.boolean().optional(),
});

const vocabSchema = z.record(z.string(), z.int().nonnegative());

const bpeModelSchema = z.looseObject({
  type: z.literal("BPE", { error: "only BPE models are supported" }),
  vocab: vocabSchema,
  merges: z.array(z.union([z.string(), z.tuple([z.string(), z.string()])])),
});

const tokenizerJsonSchema = z.looseObject({
  added_tokens: z.array(addedTokenSchema).default([]),
  normalizer: componentSchema.nullable().default(null),
  pre_tokenizer: componentSchema.nullable().default(null),
  post_processor: componentSchema.nullable().default(null),
  decoder: componentSchema.nullable().default(null),
  model: bpeModelSchema,
});

const tokenizerConfigSchema = z.looseObject({
  clean_up_tokenization_spaces: z.boolean().optional(),
});

/** A tokenizer.json's added token, with the optional flags filled in as the Rust crate defaults them. */
export interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
}

/** The parts of a tokenizer.json that decide encode and decode; merges always as pairs. */
export interface BpeTokenizerJson {
  added_tokens: AddedToken[];
  normalizer: Record<string, unknown> | null;
  pre_tokenizer: Record<string, unknown> | null;
  post_processor: Record<string, unknown> | null;
  decoder: Record<string, unknown> | null;
  model: Record<string, unknown> & { type: "BPE"; vocab: Record<string, number>; merges: [string, string][] };
}

/** Largest id, or −1 for none; a loop because spreading a 128k-token vocabulary into Math.max overflows the stack. */
function largestId(ids: Iterable<number>): number {
  let largest = -1;
  for (const id of ids) if (id > largest) largest = id;
  return largest;
}

function describeIssues(error: z.ZodError): string {
  return error.issues.map((issue) =>
    `${issue.path.length > 0 ? `${issue.path.join(".")}: ` : ""}${issue.message}`
  ).join("; ");
}

function parseWith<T>(schema: z.ZodType<T>, value: unknown, source: string): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new Error(`${source}: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

/** A merge written "a b" (old tokenizer.json form, merges.txt lines) as a pair; exactly one space. */
function splitMerge(merge: string, where: string): [string, string] {
  const parts = merge.split(" ");
  if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
    throw new Error(`${where}: merge ${JSON.stringify(merge)} must be two tokens separated by one space`);
  }
  return [parts[0], parts[1]];
}

function mentionsType(component: unknown, type: string): boolean {
  if (component === null || typeof component !== "object") return false;
  const node = component as { type?: unknown; pretokenizers?: unknown; decoders?: unknown };
  if (node.type === type) return true;
  const children = [node.pretokenizers, node.decoders].filter(Array.isArray).flat();
  return children.some((child) => mentionsType(child, type));
}

/**
 * Checks a parsed tokenizer.json the way the Rust crate does on load (every merge's parts and result
 * in the vocabulary, ids unique) plus what byte-level BPE needs to be lossless (all 256 byte tokens),
 * and returns it normalised: merges as pairs, added tokens sorted by id with every flag present.
 */
export function normalizeTokenizerJson(
  json: unknown,
  source: string,
  mergeLocation: (index: number) => string = (index) => `model.merges[${index}]`,
): BpeTokenizerJson {
  const parsed = parseWith(tokenizerJsonSchema, json, source);
  const vocab = parsed.model.vocab;
  const tokenOfId = new Map<number, string>();
  for (const [token, id] of Object.entries(vocab)) {
    const other = tokenOfId.get(id);
    if (other !== undefined) {
      throw new Error(
        `${source}: tokens ${JSON.stringify(other)} and ${JSON.stringify(token)} share id ${id}`,
      );
    }
    tokenOfId.set(id, token);
  }
  const prefix = typeof parsed.model.continuing_subword_prefix === "string"
    ? parsed.model.continuing_subword_prefix
    : "";
  const merges = parsed.model.merges.map((merge, index): [string, string] => {
    const pair = typeof merge === "string" ? splitMerge(merge, `${source}: ${mergeLocation(index)}`) : merge;
    const merged = pair[0] +
      (prefix !== "" && pair[1].startsWith(prefix) ? pair[1].slice(prefix.length) : pair[1]);
    for (const token of [pair[0], pair[1], merged]) {
      if (!Object.hasOwn(vocab, token)) {
        throw new Error(
          `${source}: ${mergeLocation(index)} (${JSON.stringify(pair.join(" "))}) uses ${
            JSON.stringify(token)
          }, ` +
            `which is not in the vocabulary`,
        );
      }
    }
    return pair;
  });
  const addedTokens = parsed.added_tokens.map((token): AddedToken => {
    const inVocab = tokenOfId.get(token.id);
    if (inVocab !== undefined && inVocab !== token.content) {
      throw new Error(
        `${source}: added token ${JSON.stringify(token.content)} takes id ${token.id}, ` +
          `which the vocabulary gives to ${JSON.stringify(inVocab)}`,
      );
    }
    return {
      id: token.id,
      content: token.content,
      special: token.special,
      single_word: token.single_word,
      lstrip: token.lstrip,
      rstrip: token.rstrip,
      normalized: token.normalized ?? !token.special,
    };
  }).sort((a, b) => a.id - b.id);
  for (let i = 1; i < addedTokens.length; i++) {
    if (addedTokens[i].id === addedTokens[i - 1].id) {
      throw new Error(
        `${source}: added tokens ${JSON.stringify(addedTokens[i - 1].content)} and ` +
          `${JSON.stringify(addedTokens[i].content)} share id ${addedTokens[i].id}`,
      );
    }
  }
  if (mentionsType(parsed.pre_tokenizer, "ByteLevel") || mentionsType(parsed.decoder, "ByteLevel")) {
    bytesToUnicode().forEach((char, byte) => {
      if (!Object.hasOwn(vocab, char)) {
        throw new Error(
          `${source}: byte-level BPE needs all 256 byte tokens, but ${JSON.stringify(char)} ` +
            `(byte 0x${byte.toString(16).padStart(2, "0")}) is not in the vocabulary`,
        );
      }
    });
  }
  return {
    added_tokens: addedTokens,
    normalizer: parsed.normalizer,
    pre_tokenizer: parsed.pre_tokenizer,
    post_processor: parsed.post_processor,
    decoder: parsed.decoder,
    model: { ...parsed.model, type: "BPE", vocab, merges },
  };
}

/** ByteLevel-with-regex as Split(GPT-2 regex) then ByteLevel-without, so `\s` means what Oniguruma means. */
function withOnigurumaWhitespace(component: Record<string, unknown> | null): Record<string, unknown> | null {
  if (component === null) return null;
  if (component.type === "Sequence" && Array.isArray(component.pretokenizers)) {
    return { ...component, pretokenizers: component.pretokenizers.map(withOnigurumaWhitespace) };
  }
  // With add_prefix_space the space goes before the whole text, not before every piece: left as it is.
  if (
    component.type === "ByteLevel" && component.use_regex !== false && component.add_prefix_space !== true
  ) {
    return {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: GPT2_SPLIT_PATTERN }, behavior: "Isolated", invert: false },
        { ...component, use_regex: false },
      ],
    };
  }
  return component;
}

/**
 * A tokenizer from a tokenizer.json object (and optionally its tokenizer_config.json object);
 * `source` names the file in errors.
 * @example const tok = bpeTokenizer(JSON.parse(await Deno.readTextFile("tokenizer.json")));
 */
export function bpeTokenizer(json: unknown, config: unknown = {}, source = "tokenizer.json"): Tokenizer {
  const definition = normalizeTokenizerJson(json, source);
  const tokenizerConfig = parseWith(tokenizerConfigSchema, config, `${source} (tokenizer_config.json)`);
  // The post-processor only adds BOS/EOS, which encode never does; it does not change the tokenizer.
  const { post_processor: _postProcessor, ...essentials } = definition;
  const hash = hashJson(essentials);
  const name = `bpe:${hash.slice(0, 12)}`;

  const specials = definition.added_tokens.filter((token) => token.special);
  const specialIds = new Map(specials.map((token) => [token.content, token.id]));
  const specialOfId = new Map(specials.map((token) => [token.id, token.content]));
  const knownIds = new Set([
    ...Object.values(definition.model.vocab),
    ...definition.added_tokens.map((t) => t.id),
  ]);
  const vocabSize = largestId(knownIds) + 1;

  let library: HfTokenizer;
  try {
    library = new HfTokenizer({
      ...definition,
      added_tokens: definition.added_tokens.filter((token) => !token.special),
      pre_tokenizer: withOnigurumaWhitespace(definition.pre_tokenizer),
    }, { ...tokenizerConfig, clean_up_tokenization_spaces: false });
  } catch (error) {
    throw new Error(`${source}: @huggingface/tokenizers rejected it (${(error as Error).message})`);
  }

  return {
    name,
    hash,
    vocabSize,
    encode(text) {
      if (text.length === 0) return [];
      const ids = library.encode(text, { add_special_tokens: false }).ids;
      if (!ids.every((id) => Number.isInteger(id))) {
        throw new Error(
          `${name} (${source}): ${JSON.stringify(text.slice(0, 40))} has pieces outside the vocabulary`,
        );
      }
      return ids;
    },
    decode(ids) {
      checkIds(ids, vocabSize, (id) => knownIds.has(id), name);
      let text = "";
      let start = 0;
      const flush = (end: number) => {
        if (end > start) {
          text += library.decode(ids.slice(start, end), {
            skip_special_tokens: false,
            clean_up_tokenization_spaces: false,
          });
        }
      };
      for (let i = 0; i < ids.length; i++) {
        const special = specialOfId.get(ids[i]);
        if (special === undefined) continue;
        flush(i);
        text += special;
        start = i + 1;
      }
      flush(ids.length);
      return text;
    },
    special: (token) => specialIds.get(token),
  };
}

// --- files ---------------------------------------------------------------------------------------

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new Error(`${path}: file not found`);
    throw error;
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${path}: not valid JSON (${(error as Error).message})`);
  }
}

async function isDirectory(path: string): Promise<boolean | undefined> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

async function exists(path: string): Promise<boolean> {
  return (await isDirectory(path)) !== undefined;
}

/**
 * A Hugging Face tokenizer from a `tokenizer.json` file, or from a folder holding `tokenizer.json`
 * and optionally `tokenizer_config.json`.
 * @example const tok = await loadHfTokenizer("models/SmolLM2-135M");
 */
export async function loadHfTokenizer(path: string): Promise<Tokenizer> {
  const directory = await isDirectory(path);
  if (directory === undefined) throw new Error(`${path}: no such tokenizer.json file or folder`);
  const file = directory ? `${path}/tokenizer.json` : path;
  const configFile = directory ? `${path}/tokenizer_config.json` : undefined;
  const json = await readJson(file);
  const config = configFile !== undefined && await exists(configFile) ? await readJson(configFile) : {};
  return bpeTokenizer(json, config, file);
}

/**
 * The tokenizer.json object equivalent to GPT-2's `vocab.json` + `merges.txt`, as the Hugging Face
 * conversion writes it; specials missing from the vocabulary get the next free ids.
 */
export function gpt2TokenizerJson(
  vocab: Record<string, number>,
  merges: [string, string][],
  specials: readonly string[] = DEFAULT_SPECIALS,
): BpeTokenizerJson {
  checkSpecials(specials, "gpt2TokenizerJson");
  let nextId = largestId(Object.values(vocab)) + 1;
  const addedTokens = specials.map((content): AddedToken => ({
    id: Object.hasOwn(vocab, content) ? vocab[content] : nextId++,
    content,
    special: true,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: true,
  }));
  return {
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

const mergeLineSchema = z.string().regex(/^[^ ]+ [^ ]+$/, "expected two tokens separated by one space");

/**
 * GPT-2 BPE from OpenAI's layout, a folder with `vocab.json` and `merges.txt`; the same code path as
 * tokenizer.json, so both layouts of one tokenizer give the same ids and the same hash.
 * @example const tok = await loadGpt2Tokenizer("models/gpt2");
 */
export async function loadGpt2Tokenizer(
  folder: string,
  specials: readonly string[] = DEFAULT_SPECIALS,
): Promise<Tokenizer> {
  const vocabFile = `${folder}/vocab.json`;
  const mergesFile = `${folder}/merges.txt`;
  const vocab = parseWith(vocabSchema, await readJson(vocabFile), vocabFile);
  let text: string;
  try {
    text = await Deno.readTextFile(mergesFile);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new Error(`${mergesFile}: file not found`);
    throw error;
  }
  const merges: [string, string][] = [];
  const lineOfMerge: number[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    // The crate skips a "#version" header; a merge may itself begin with "#", so nothing else is skipped.
    if (line === "" || line.startsWith("#version")) return;
    parseWith(mergeLineSchema, line, `${mergesFile} line ${i + 1}`);
    merges.push(splitMerge(line, `${mergesFile} line ${i + 1}`));
    lineOfMerge.push(i + 1);
  });
  const json = gpt2TokenizerJson(vocab, merges, specials);
  const definition = normalizeTokenizerJson(
    json,
    folder,
    (index) => `${mergesFile} line ${lineOfMerge[index]}`,
  );
  return bpeTokenizer(definition, {}, folder);
}

/**
 * The tokenizer a spec names: "byte", a tokenizer.json file, or a folder holding tokenizer.json or
 * vocab.json + merges.txt.
 * @example const tok = await loadTokenizer("byte");
 */
export async function loadTokenizer(spec: string): Promise<Tokenizer> {
  if (spec === "byte") return byteTokenizer();
  const directory = await isDirectory(spec);
  if (directory === undefined) {
    throw new Error(
      `tokenizer "${spec}": no such file or folder (expected "byte", a tokenizer.json file, or a folder ` +
        `with tokenizer.json or vocab.json + merges.txt)`,
    );
  }
  if (!directory || await exists(`${spec}/tokenizer.json`)) return loadHfTokenizer(spec);
  const hasVocab = await exists(`${spec}/vocab.json`);
  const hasMerges = await exists(`${spec}/merges.txt`);
  if (hasVocab && hasMerges) return loadGpt2Tokenizer(spec);
  const missing = hasVocab
    ? "merges.txt"
    : hasMerges
    ? "vocab.json"
    : "tokenizer.json, or vocab.json + merges.txt";
  throw new Error(`tokenizer folder ${spec}: missing ${missing}`);
}
