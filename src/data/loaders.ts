/**
 * Readers of the released evaluation files — one code path for a user's download and for the
 * generated fixtures. Every record is validated with zod; a malformed file raises a `DataFileError`
 * that names the path, the line (JSON lines, CSV) or array index, the field, and what was expected.
 *
 * What each loader accepts:
 * - `loadWikiText(folder, split, {variant})`: `wiki.<split>.raw` or `wiki.<split>.tokens` in `folder`,
 *   or in one of its `wikitext-2[-raw]/` / `wikitext-103[-raw]/` subfolders (the unzipped releases).
 *   Articles start at a ` = Title = ` line that has a blank line (or the file's start) before it and a
 *   blank line after it: WikiText-103 holds in-body lines shaped like headings (table legends, split
 *   equations) that are not articles, and only real titles are framed by blank lines.
 * - `loadPg19(folder, split)`: `<folder>/<split>/<id>.txt` joined with `<folder>/metadata.csv` (rows
 *   `book_id,short_book_title,publication_date,url`, RFC 4180 quoting, with or without a header row).
 * - `loadBabilong(pathOrFolder)`: `.json` (one JSON array of records) or `.jsonl` / `.json` (JSON lines)
 *   files of `{input, question, target}` records, the HF export of `RMT-team/babilong`. The task and
 *   length come from the path, in any of these forms: `qa1/4k.json`, `4k/qa1.json` (HF config/split),
 *   `qa1_4k.json`, `4k_qa1.json` (also with `-`); tasks `qa1`…`qa20`, lengths `0k`…`512k`, `1M`, `10M`.
 * - `loadRuler(file)`: RULER's `validation.jsonl` records `{index, input, outputs, length,
 *   answer_prefix}` plus the optional `length_w_model_temp` and `token_position_answer`.
 */

import { z } from "zod";
import { basename, dirname, extname, join, relative } from "node:path";
import { countWords } from "./corpus.ts";
import { sha256 } from "./hash.ts";
import type { Pg19Book } from "./layouts.ts";

/** A malformed or missing data file, with where in it and what was expected. */
export class DataFileError extends Error {
  /** 1-based line of the problem, for line-oriented files. */
  readonly line?: number;
  /** 0-based index in a JSON array file. */
  readonly index?: number;
  /** Dotted path of the offending field, e.g. "outputs.0". */
  readonly field?: string;

  constructor(
    readonly path: string,
    detail: string,
    where: { line?: number; index?: number; field?: string } = {},
  ) {
    const parts = [path];
    if (where.line !== undefined) parts.push(`line ${where.line}`);
    if (where.index !== undefined) parts.push(`record [${where.index}]`);
    if (where.field !== undefined) parts.push(`field "${where.field}"`);
    super(`${parts.join(": ")}: ${detail}`);
    this.name = "DataFileError";
    this.line = where.line;
    this.index = where.index;
    this.field = where.field;
  }
}

type Issue = z.ZodError["issues"][number];

function describeIssue(issue: Issue): { field?: string; detail: string } {
  const field = issue.path.length > 0 ? issue.path.map(String).join(".") : undefined;
  const message = issue.message.replace(/^Invalid input: /, "");
  const missing = /, received undefined$/.exec(message);
  return { field, detail: missing ? `missing (${message.slice(0, missing.index)})` : message };
}

function validate<T>(
  schema: z.ZodType<T>,
  value: unknown,
  path: string,
  where: { line?: number; index?: number },
): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const { field, detail } = describeIssue(parsed.error.issues[0]);
  throw new DataFileError(path, detail, { ...where, field });
}

async function readUtf8(path: string, what: string): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new DataFileError(path, `not found; expected ${what}`);
    throw error;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new DataFileError(path, "is not valid UTF-8");
  }
}

function lineOfOffset(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

/**
 * Offset of the first JSON syntax error in `text`, or undefined if it is valid JSON. JSON.parse's own
 * messages carry a position only for some errors (V8 omits it for an unexpected token), and a user
 * fixing a 50 MB file needs the line.
 */
export function jsonSyntaxErrorOffset(text: string): number | undefined {
  let i = 0;
  const fail = (): never => {
    throw new JsonSyntaxAt(i);
  };
  const space = () => {
    while (i < text.length && (text[i] === " " || text[i] === "\t" || text[i] === "\n" || text[i] === "\r")) {
      i++;
    }
  };
  const string = () => {
    i++;
    while (i < text.length) {
      const c = text[i];
      if (c === '"') {
        i++;
        return;
      }
      if (c === "\\") {
        i++;
        if ('"\\/bfnrt'.includes(text[i] ?? "x")) i++;
        else if (text[i] === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 1, i + 5))) i += 5;
        else fail();
      } else if (c.charCodeAt(0) < 0x20) {
        fail();
      } else {
        i++;
      }
    }
    fail();
  };
  const literal = (word: string) => {
    if (text.startsWith(word, i)) i += word.length;
    else fail();
  };
  const number = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const value = (): void => {
    space();
    const c = text[i];
    if (c === "{" || c === "[") {
      const close = c === "{" ? "}" : "]";
      i++;
      space();
      if (text[i] === close) {
        i++;
        return;
      }
      for (;;) {
        if (c === "{") {
          space();
          if (text[i] !== '"') fail();
          string();
          space();
          if (text[i] !== ":") fail();
          i++;
        }
        value();
        space();
        if (text[i] === ",") i++;
        else if (text[i] === close) {
          i++;
          return;
        } else fail();
      }
    }
    if (c === '"') return string();
    if (c === "t") return literal("true");
    if (c === "f") return literal("false");
    if (c === "n") return literal("null");
    number.lastIndex = i;
    if (number.test(text)) i = number.lastIndex;
    else fail();
  };
  try {
    value();
    space();
    if (i < text.length) fail();
    return undefined;
  } catch (error) {
    if (error instanceof JsonSyntaxAt) return error.offset;
    throw error;
  }
}

class JsonSyntaxAt {
  constructor(readonly offset: number) {}
}

/**
 * Parses a file of JSON records: a JSON array (first non-blank character `[`) or JSON lines (blank
 * lines skipped). Errors name the line (JSON lines, or the line of a syntax error in an array) or the
 * array index, and the field.
 */
export function parseJsonRecords<T>(text: string, path: string, schema: z.ZodType<T>): T[] {
  const body = text.replace(/^\uFEFF/, "");
  if (body.trimStart().startsWith("[")) {
    let value: unknown;
    try {
      value = JSON.parse(body);
    } catch (error) {
      const offset = jsonSyntaxErrorOffset(body);
      const line = offset === undefined ? undefined : lineOfOffset(body, offset);
      throw new DataFileError(path, `not valid JSON (${(error as Error).message})`, { line });
    }
    if (!Array.isArray(value)) {
      throw new DataFileError(path, "expected a JSON array of records or JSON lines");
    }
    return value.map((record, index) => validate(schema, record, path, { index }));
  }
  const records: T[] = [];
  const lines = body.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, "");
    if (line.trim().length === 0) continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      throw new DataFileError(path, `not valid JSON (${(error as Error).message})`, { line: i + 1 });
    }
    records.push(validate(schema, value, path, { line: i + 1 }));
  }
  return records;
}

async function isDirectory(path: string): Promise<boolean> {
  return await Deno.stat(path).then((s) => s.isDirectory, () => false);
}

async function isFile(path: string): Promise<boolean> {
  return await Deno.stat(path).then((s) => s.isFile, () => false);
}

// ---------------------------------------------------------------------------------------------
// WikiText

/** Options of `loadWikiText`. */
export const wikiTextOptionsSchema = z.object({
  variant: z.enum(["raw", "tokens"]).default("raw"),
});

/** A WikiText split name; "validation" is accepted for "valid". */
export type WikiTextSplit = "train" | "valid" | "validation" | "test";

/** One WikiText article: its heading line through the line before the next article's heading. */
export interface WikiTextDocument {
  /** The title without the ` = ` marks; "" for text before the first heading. */
  title: string;
  /** The article's lines, each with its "\n", exactly as in the file. */
  text: string;
  /** 1-based line of the heading in the file. */
  line: number;
  /** Whitespace-separated tokens. */
  words: number;
}

/** A loaded WikiText split. */
export interface WikiTextData {
  path: string;
  split: "train" | "valid" | "test";
  variant: "raw" | "tokens";
  /** The whole file. */
  text: string;
  sha256: string;
  documents: WikiTextDocument[];
  words: number;
}

const WIKITEXT_TITLE = /^= (?!= )(.*\S) =$/;

/**
 * Splits WikiText into articles at top-level ` = Title = ` lines framed by blank lines (see the module
 * comment). Leading blank lines are dropped; any other text before the first title becomes a document
 * with title "". The documents' texts concatenate to the input minus those leading blank lines.
 */
export function splitWikiTextDocuments(text: string): WikiTextDocument[] {
  const lines = text.split("\n");
  const withNewline = (i: number) => (i < lines.length - 1 ? lines[i] + "\n" : lines[i]);
  const blank = (i: number) => i < 0 || i >= lines.length || lines[i].trim().length === 0;
  const documents: WikiTextDocument[] = [];
  let start = 0;
  while (start < lines.length && blank(start) && start < lines.length - 1) start++;
  let current: { title: string; line: number; parts: string[] } | undefined;
  const flush = () => {
    if (current === undefined) return;
    const body = current.parts.join("");
    if (body.length > 0) {
      documents.push({ title: current.title, text: body, line: current.line, words: countWords(body) });
    }
  };
  for (let i = start; i < lines.length; i++) {
    const title = WIKITEXT_TITLE.exec(lines[i].replace(/\r$/, "").trim());
    if (title !== null && blank(i - 1) && blank(i + 1)) {
      flush();
      current = { title: title[1], line: i + 1, parts: [] };
    } else if (current === undefined) {
      current = { title: "", line: i + 1, parts: [] };
    }
    current.parts.push(withNewline(i));
  }
  flush();
  return documents;
}

/**
 * Loads one split of WikiText-2/103 (raw or tokens) and splits it into articles.
 * @example const test = await loadWikiText("data/wikitext-2-raw", "test");
 */
export async function loadWikiText(
  folder: string,
  split: WikiTextSplit,
  options: z.input<typeof wikiTextOptionsSchema> = {},
): Promise<WikiTextData> {
  const { variant } = wikiTextOptionsSchema.parse(options);
  const splitName = split === "validation" ? "valid" : split;
  if (!["train", "valid", "test"].includes(splitName)) {
    throw new RangeError(`loadWikiText: split "${split}" is not train, valid (validation) or test`);
  }
  const file = `wiki.${splitName}.${variant}`;
  const subfolders = variant === "raw"
    ? ["wikitext-2-raw", "wikitext-103-raw"]
    : ["wikitext-2", "wikitext-103"];
  const candidates = [join(folder, file), ...subfolders.map((s) => join(folder, s, file))];
  const found: string[] = [];
  for (const candidate of candidates) if (await isFile(candidate)) found.push(candidate);
  if (found.length === 0) {
    throw new DataFileError(
      join(folder, file),
      `not found; expected ${file} in ${folder} or in its ${subfolders.join("/ or ")}/ subfolder`,
    );
  }
  if (found.length > 1) {
    throw new DataFileError(
      folder,
      `holds ${found.length} candidates for ${file} (${found.join(", ")}); pass one`,
    );
  }
  const path = found[0];
  const text = await readUtf8(path, `a WikiText ${variant} file`);
  const documents = splitWikiTextDocuments(text);
  if (documents.length === 0) throw new DataFileError(path, "holds no text");
  return {
    path,
    split: splitName as WikiTextData["split"],
    variant,
    text,
    sha256: sha256(text),
    documents,
    words: countWords(text),
  };
}

// ---------------------------------------------------------------------------------------------
// CSV and PG-19

/** A CSV record with the 1-based line it starts on. */
export interface CsvRow {
  line: number;
  fields: string[];
}

/** Parses RFC 4180 CSV (quoted fields may hold commas, quotes and line breaks; LF or CRLF). */
export function parseCsv(text: string, path: string): CsvRow[] {
  const rows: CsvRow[] = [];
  let fields: string[] = [];
  let field = "";
  let line = 1;
  let rowLine = 1;
  let quoted = false;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  const endRow = () => {
    fields.push(field);
    if (!(fields.length === 1 && fields[0] === "")) rows.push({ line: rowLine, fields });
    fields = [];
    field = "";
  };
  for (; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else {
          quoted = false;
        }
      } else {
        if (c === "\n") line++;
        field += c;
      }
    } else if (c === '"') {
      if (field.length > 0) {
        throw new DataFileError(path, "a quote inside an unquoted field (RFC 4180 quotes whole fields)", {
          line,
        });
      }
      quoted = true;
    } else if (c === ",") {
      fields.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      endRow();
      line++;
      rowLine = line;
    } else {
      field += c;
    }
  }
  if (quoted) throw new DataFileError(path, "a quoted field is never closed", { line: rowLine });
  if (field.length > 0 || fields.length > 0) endRow();
  return rows;
}

const pg19MetadataSchema = z.object({
  book_id: z.string().regex(/^\d+$/, "expected a numeric book id"),
  short_book_title: z.string().min(1, "expected a non-empty title"),
  publication_date: z.string().regex(/^\d{1,4}$/, "expected a year (1 to 4 digits)").transform(Number),
  url: z.string(),
});

const PG19_COLUMNS = ["book_id", "short_book_title", "publication_date", "url"] as const;
const PG19_ID_HEADERS = new Set(["book_id", "_id", "id"]);

/** Options of `loadPg19`. */
export const pg19OptionsSchema = z.object({
  /**
   * Accept metadata rows whose book is in none of the split folders present (a partial download);
   * by default every row must have its book, so a lost file is not silently skipped.
   */
  allowExtraMetadata: z.boolean().default(false),
});

/** A PG-19 book as loaded: the stored book plus where it came from. */
export interface LoadedPg19Book extends Pg19Book {
  split: "train" | "validation" | "test";
  path: string;
  sha256: string;
  /** Whitespace-separated tokens (PG-19's official counts use its own word definition). */
  words: number;
}

type Pg19MetadataRow = z.output<typeof pg19MetadataSchema> & { line: number };

async function readPg19Metadata(path: string): Promise<Map<string, Pg19MetadataRow>> {
  const rows = parseCsv(await readUtf8(path, "PG-19's metadata.csv"), path);
  let columns: string[] = [...PG19_COLUMNS];
  let body = rows;
  if (rows.length > 0 && PG19_ID_HEADERS.has(rows[0].fields[0].trim())) {
    columns = rows[0].fields.map((name) => name.trim());
    columns[0] = "book_id";
    for (const required of ["short_book_title", "publication_date"]) {
      if (!columns.includes(required)) {
        throw new DataFileError(path, `header has no "${required}" column (got ${columns.join(",")})`, {
          line: 1,
        });
      }
    }
    body = rows.slice(1);
  }
  const metadata = new Map<string, Pg19MetadataRow>();
  for (const row of body) {
    if (row.fields.length < 3) {
      throw new DataFileError(
        path,
        `has ${row.fields.length} column(s); expected book_id,short_book_title,publication_date[,url]`,
        { line: row.line },
      );
    }
    const record: Record<string, string> = { url: "" };
    columns.forEach((name, i) => {
      if (i < row.fields.length) record[name] = row.fields[i];
    });
    const parsed = validate(pg19MetadataSchema, record, path, { line: row.line });
    const earlier = metadata.get(parsed.book_id);
    if (earlier !== undefined) {
      throw new DataFileError(
        path,
        `book ${parsed.book_id} is listed twice (first on line ${earlier.line})`,
        {
          line: row.line,
        },
      );
    }
    metadata.set(parsed.book_id, { ...parsed, line: row.line });
  }
  return metadata;
}

async function listBookIds(folder: string): Promise<string[]> {
  if (!(await isDirectory(folder))) return [];
  const ids: string[] = [];
  for await (const entry of Deno.readDir(folder)) {
    if (entry.isFile && entry.name.endsWith(".txt")) ids.push(entry.name.slice(0, -4));
  }
  return ids.sort((a, b) => (a.length - b.length) || (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Loads one PG-19 split with its metadata joined. A book without a metadata row, or (unless
 * `allowExtraMetadata`) a metadata row without a book in any split folder, is an error naming the id.
 * @example const books = await loadPg19("data/pg19", "test");
 */
export async function loadPg19(
  folder: string,
  split: "train" | "validation" | "test",
  options: z.input<typeof pg19OptionsSchema> = {},
): Promise<LoadedPg19Book[]> {
  const { allowExtraMetadata } = pg19OptionsSchema.parse(options);
  const splitFolder = join(folder, split);
  if (!(await isDirectory(splitFolder))) {
    throw new DataFileError(
      splitFolder,
      `not found; expected a folder of <book_id>.txt files for the ${split} split`,
    );
  }
  const metadataPath = join(folder, "metadata.csv");
  const metadata = await readPg19Metadata(metadataPath);
  const ids = await listBookIds(splitFolder);
  if (!allowExtraMetadata) {
    const present = new Set<string>();
    for (const s of ["train", "validation", "test"]) {
      for (const id of await listBookIds(join(folder, s))) present.add(id);
    }
    for (const [id, row] of metadata) {
      if (!present.has(id)) {
        throw new DataFileError(
          metadataPath,
          `book ${id} has no ${id}.txt in train/, validation/ or test/ (pass { allowExtraMetadata: true } for ` +
            `a partial download)`,
          { line: row.line, field: "book_id" },
        );
      }
    }
  }
  const books: LoadedPg19Book[] = [];
  for (const id of ids) {
    const path = join(splitFolder, `${id}.txt`);
    const row = metadata.get(id);
    if (row === undefined) throw new DataFileError(path, `book ${id} has no row in ${metadataPath}`);
    const text = await readUtf8(path, "a PG-19 book");
    books.push({
      id,
      shortBookTitle: row.short_book_title,
      publicationDate: row.publication_date,
      url: row.url,
      text,
      split,
      path,
      sha256: sha256(text),
      words: countWords(text),
    });
  }
  return books;
}

// ---------------------------------------------------------------------------------------------
// BABILong

const babilongRecordSchema = z.object({
  input: z.string(),
  question: z.string(),
  target: z.string(),
});

/** One BABILong sample with the task and length its file name gave. */
export interface BabilongRecord {
  task: string;
  /** Length name as published ("0k", "4k", "128k", "1M"). */
  length: string;
  /** The nominal length in GPT-2 tokens (k = 1000, M = 1,000,000), as BABILong's generator targets. */
  lengthTokens: number;
  /** Position of the record in its file. */
  index: number;
  input: string;
  question: string;
  target: string;
  path: string;
}

const BABILONG_TASK = /^qa([1-9]|1\d|20)$/;
const BABILONG_LENGTH = /^(\d+)([kKmM])$/;

function babilongLength(name: string): { length: string; lengthTokens: number } | undefined {
  const m = BABILONG_LENGTH.exec(name);
  if (m === null) return undefined;
  const mega = m[2] === "M" || m[2] === "m";
  return {
    length: `${Number(m[1])}${mega ? "M" : "k"}`,
    lengthTokens: Number(m[1]) * (mega ? 1_000_000 : 1000),
  };
}

function babilongTaskAndLength(path: string): { task: string; length: string; lengthTokens: number } {
  const stem = basename(path, extname(path));
  const parent = basename(dirname(path));
  const pairs: [string, string][] = [];
  const joined = /^([^_-]+)[_-]([^_-]+)$/.exec(stem);
  if (joined !== null) pairs.push([joined[1], joined[2]], [joined[2], joined[1]]);
  pairs.push([parent, stem], [stem, parent]);
  for (const [task, lengthName] of pairs) {
    const length = babilongLength(lengthName);
    if (BABILONG_TASK.test(task) && length !== undefined) return { task, ...length };
  }
  throw new DataFileError(
    path,
    "name does not tell the task and length; expected qa1/4k.json, 4k/qa1.json, qa1_4k.json or 4k_qa1.json " +
      "(task qa1…qa20, length like 0k, 4k, 128k, 1M; .json or .jsonl)",
  );
}

async function listRecordFiles(folder: string): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(folder)) {
    const path = join(folder, entry.name);
    if (entry.isDirectory) files.push(...(await listRecordFiles(path)));
    else if (entry.isFile && /\.jsonl?$/.test(entry.name) && entry.name !== "manifest.json") files.push(path);
  }
  return files;
}

/**
 * Loads BABILong samples from one file or from every `.json`/`.jsonl` file under a folder, ordered by
 * task, then length, then position in the file.
 * @example const samples = await loadBabilong("data/babilong"); // qa1/4k.json, qa2/4k.json, …
 */
export async function loadBabilong(pathOrFolder: string): Promise<BabilongRecord[]> {
  const stat = await Deno.stat(pathOrFolder).catch(() => undefined);
  if (stat === undefined) {
    throw new DataFileError(
      pathOrFolder,
      "not found; expected a BABILong .json/.jsonl file or a folder of them",
    );
  }
  const paths = stat.isDirectory ? await listRecordFiles(pathOrFolder) : [pathOrFolder];
  if (paths.length === 0) throw new DataFileError(pathOrFolder, "holds no .json or .jsonl files");
  const files = paths.map((path) => ({ path, ...babilongTaskAndLength(path) }));
  const taskNumber = (task: string) => Number(task.slice(2));
  files.sort((a, b) =>
    taskNumber(a.task) - taskNumber(b.task) || a.lengthTokens - b.lengthTokens || (a.path < b.path ? -1 : 1)
  );
  for (let i = 1; i < files.length; i++) {
    const [a, b] = [files[i - 1], files[i]];
    if (a.task === b.task && a.length === b.length) {
      const shown = stat.isDirectory
        ? [relative(pathOrFolder, a.path), relative(pathOrFolder, b.path)]
        : [a.path];
      throw new DataFileError(pathOrFolder, `holds ${a.task} at ${a.length} twice (${shown.join(" and ")})`);
    }
  }
  const samples: BabilongRecord[] = [];
  for (const file of files) {
    const records = parseJsonRecords(
      await readUtf8(file.path, "BABILong records"),
      file.path,
      babilongRecordSchema,
    );
    records.forEach((record, index) => {
      samples.push({
        task: file.task,
        length: file.length,
        lengthTokens: file.lengthTokens,
        index,
        ...record,
        path: file.path,
      });
    });
  }
  return samples;
}

// ---------------------------------------------------------------------------------------------
// RULER

/** One record of RULER's `validation.jsonl`, fields named as upstream writes them. */
export const rulerRecordSchema = z.object({
  index: z.number().int().min(0),
  input: z.string(),
  outputs: z.array(z.string()).min(1, "expected at least one gold output"),
  length: z.number().int().min(0),
  answer_prefix: z.string(),
  length_w_model_temp: z.number().int().min(0).optional(),
  token_position_answer: z.unknown().optional(),
});

/** A record of RULER's `validation.jsonl`. */
export type RulerRecord = z.output<typeof rulerRecordSchema>;

/**
 * Loads RULER's `validation.jsonl` (JSON lines; a JSON array is accepted too). Duplicate indices are
 * an error naming both lines.
 * @example const records = await loadRuler("ruler/4096/niah_single_1/validation.jsonl");
 */
export async function loadRuler(file: string): Promise<RulerRecord[]> {
  const text = await readUtf8(file, "RULER's validation.jsonl");
  const records = parseJsonRecords(text, file, rulerRecordSchema);
  const jsonLines = !text.replace(/^\uFEFF/, "").trimStart().startsWith("[");
  const recordLines: number[] = [];
  if (jsonLines) {
    text.split("\n").forEach((line, i) => {
      if (line.trim().length > 0) recordLines.push(i + 1);
    });
  }
  const seen = new Map<number, number>();
  records.forEach((record, i) => {
    const earlier = seen.get(record.index);
    if (earlier !== undefined) {
      const where = jsonLines ? { line: recordLines[i] } : { index: i };
      const first = jsonLines ? `line ${recordLines[earlier]}` : `record [${earlier}]`;
      throw new DataFileError(file, `index ${record.index} repeats ${first}`, { ...where, field: "index" });
    }
    seen.set(record.index, i);
  });
  return records;
}
