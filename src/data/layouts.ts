/**
 * Writers of the on-disk layouts of the public perplexity corpora, so generated text can be read by
 * the same loaders (`loaders.ts`) as a user's download:
 *
 * - WikiText-2: `wiki.{train,valid,test}.raw` and `wiki.{train,valid,test}.tokens`. Lines start with a
 *   space and end with " \n" (as in the released files); ` = Title = ` starts an article and
 *   ` = = Section = = ` a section, each with a blank line (" ") before and after; a paragraph is one
 *   line of space-separated tokens; number- and word-internal `-`, `,`, `.` are written ` @-@ `,
 *   ` @,@ `, ` @.@ `. The `.tokens` files map rare tokens to `<unk>`: a token is kept when it occurs at
 *   least `minCount` (default 3, WikiText's cut-off) times in the train split, in every split.
 * - PG-19: `train/`, `validation/`, `test/` holding `<book_id>.txt`, and one `metadata.csv` at the top
 *   with rows `book_id,short_book_title,publication_date,url` and no header, as the released file.
 *
 * Every write is atomic: a folder is written into a temporary sibling and renamed into place; a file is
 * written to a temporary sibling and renamed.
 */

import { basename, dirname, isAbsolute, join, normalize } from "node:path";
import type { Book } from "./corpus.ts";
import { bookText } from "./corpus.ts";

/** One WikiText article: a title, lead paragraphs, then sections (level 2 = ` = = … = = `, 3, …). */
export interface WikiTextArticle {
  title: string;
  lead: string[];
  sections: { heading: string; level: number; paragraphs: string[] }[];
}

/** The three WikiText splits, by their file-name spelling. */
export interface WikiTextSplits {
  train: WikiTextArticle[];
  valid: WikiTextArticle[];
  test: WikiTextArticle[];
}

/** One PG-19 book as stored: the text file's content and its metadata row. */
export interface Pg19Book {
  /** Digits only, as Project Gutenberg ids; the file is `<id>.txt`. */
  id: string;
  shortBookTitle: string;
  publicationDate: number;
  url: string;
  text: string;
}

/** The three PG-19 splits, by their folder names. */
export interface Pg19Splits {
  train: Pg19Book[];
  validation: Pg19Book[];
  test: Pg19Book[];
}

/** Options of the folder writers. */
export interface WriteFolderOptions {
  /** Replace an existing folder (default false: an existing folder is an error). */
  overwrite?: boolean;
}

// Placeholders keep number-internal separators away from the punctuation splitter.
const AT_COMMA = "\u0001";
const AT_DOT = "\u0002";

/**
 * Natural text in WikiText's token spelling.
 * @example wikitextTokens('"It is 12.5 miles," said Mara.') === '" It is 12 @.@ 5 miles , " said Mara .'
 */
export function wikitextTokens(text: string): string {
  return text
    .replace(/(\d),(?=\d)/g, `$1${AT_COMMA}`)
    .replace(/(\d)\.(?=\d)/g, `$1${AT_DOT}`)
    .replace(/([\p{L}\p{N}])-(?=[\p{L}\p{N}])/gu, "$1 @-@ ")
    .replace(/([\p{L}\p{N}])'s\b/gu, "$1 's")
    .replace(/([\p{L}])n't\b/gu, "$1 n't")
    .replace(/([,.;:!?()"])/g, " $1 ")
    .replaceAll(AT_COMMA, " @,@ ")
    .replaceAll(AT_DOT, " @.@ ")
    .replace(/\s+/g, " ")
    .trim();
}

/** A generated book as a WikiText article: a lead paragraph, then one section per chapter. */
export function bookToArticle(book: Book): WikiTextArticle {
  const people = book.cast.map((c) => `${c.name} ${c.surname}`);
  const towns = book.towns.map((t) => t.name);
  const lead = `${book.title} is a novel by ${book.author}, published in ${book.year}. It follows ` +
    `${people.slice(0, -1).join(", ")} and ${people[people.length - 1]} between the towns of ` +
    `${towns.slice(0, -1).join(", ")} and ${towns[towns.length - 1]}.`;
  return {
    title: book.title,
    lead: [lead],
    sections: book.chapters.map((chapter) => ({
      heading: chapter.title,
      level: 2,
      paragraphs: chapter.paragraphs.map((sentences) => sentences.join(" ")),
    })),
  };
}

/** The `.raw` text of a WikiText split. */
export function renderWikiText(articles: readonly WikiTextArticle[]): string {
  const lines: string[] = [" "];
  const heading = (text: string, level: number) => {
    const marks = Array(level).fill("=").join(" ");
    lines.push(` ${marks} ${wikitextTokens(text)} ${marks} `, " ");
  };
  for (const article of articles) {
    heading(article.title, 1);
    for (const paragraph of article.lead) lines.push(` ${wikitextTokens(paragraph)} `);
    for (const section of article.sections) {
      if (!Number.isInteger(section.level) || section.level < 2) {
        throw new RangeError(
          `section "${section.heading}" of "${article.title}": level must be an integer ≥ 2`,
        );
      }
      if (lines[lines.length - 1] !== " ") lines.push(" ");
      heading(section.heading, section.level);
      for (const paragraph of section.paragraphs) lines.push(` ${wikitextTokens(paragraph)} `);
    }
    if (lines[lines.length - 1] !== " ") lines.push(" ");
  }
  return lines.join("\n") + "\n";
}

/** Tokens that occur at least `minCount` times in a WikiText text. */
export function wikitextVocabulary(raw: string, minCount: number): Set<string> {
  const counts = new Map<string, number>();
  for (const token of raw.split(/\s+/)) {
    if (token.length > 0) counts.set(token, (counts.get(token) ?? 0) + 1);
  }
  const vocabulary = new Set<string>();
  for (const [token, count] of counts) if (count >= minCount) vocabulary.add(token);
  return vocabulary;
}

/** The `.tokens` spelling of a `.raw` text: tokens outside the vocabulary become `<unk>`. */
export function unkRareTokens(raw: string, vocabulary: ReadonlySet<string>): string {
  return raw.replace(/[^ \n]+/g, (token) => (vocabulary.has(token) ? token : "<unk>"));
}

/**
 * Writes `wiki.{train,valid,test}.{raw,tokens}` into `folder` at once (atomically).
 * @example await writeWikiText("out/wikitext", { train, valid, test });
 */
export async function writeWikiText(
  folder: string,
  splits: WikiTextSplits,
  options: WriteFolderOptions & { minCount?: number } = {},
): Promise<{ vocabularySize: number }> {
  const minCount = options.minCount ?? 3;
  const raw = {
    train: renderWikiText(splits.train),
    valid: renderWikiText(splits.valid),
    test: renderWikiText(splits.test),
  };
  const vocabulary = wikitextVocabulary(raw.train, minCount);
  const files: Record<string, string> = {};
  for (const split of ["train", "valid", "test"] as const) {
    files[`wiki.${split}.raw`] = raw[split];
    files[`wiki.${split}.tokens`] = unkRareTokens(raw[split], vocabulary);
  }
  await writeFolderAtomic(folder, files, options);
  return { vocabularySize: vocabulary.size + 1 };
}

/**
 * A generated book in the PG-19 layout. The title follows PG-19's "Title by Author"; the URL is under
 * the reserved `.invalid` domain so it can never be mistaken for a real Gutenberg book.
 */
export function bookToPg19(book: Book, id: string): Pg19Book {
  return {
    id,
    shortBookTitle: `${book.title} by ${book.author}`,
    publicationDate: book.year,
    url: `https://longtune.invalid/corpus/${id}`,
    text: bookText(book),
  };
}

/** One CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180). */
function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

/**
 * Writes a PG-19 folder (`metadata.csv` and the three split folders) at once (atomically).
 * @example await writePg19("out/pg19", { train: [book], validation: [], test: [] });
 */
export async function writePg19(
  folder: string,
  splits: Pg19Splits,
  options: WriteFolderOptions = {},
): Promise<void> {
  const files: Record<string, string> = {};
  const seen = new Map<string, string>();
  const rows: Pg19Book[] = [];
  for (const split of ["train", "validation", "test"] as const) {
    for (const book of splits[split]) {
      if (!/^\d+$/.test(book.id)) throw new RangeError(`PG-19 book id "${book.id}" must be digits only`);
      const earlier = seen.get(book.id);
      if (earlier !== undefined) {
        throw new RangeError(`PG-19 book id ${book.id} appears in both ${earlier} and ${split}`);
      }
      if (!Number.isInteger(book.publicationDate)) {
        throw new RangeError(`PG-19 book ${book.id}: publicationDate must be an integer year`);
      }
      seen.set(book.id, split);
      files[`${split}/${book.id}.txt`] = book.text;
      rows.push(book);
    }
  }
  rows.sort((a, b) => Number(a.id) - Number(b.id));
  files["metadata.csv"] = rows
    .map((b) => [b.id, b.shortBookTitle, String(b.publicationDate), b.url].map(csvField).join(",") + "\n")
    .join("");
  // The release always has the three split folders, even where this call has no book for one.
  await writeFolderAtomic(folder, files, { ...options, emptyFolders: ["train", "validation", "test"] });
}

// Temporary files and folders are created private (0600/0700); what they become must be readable like
// any other file of the checkout. Windows has no POSIX modes.
async function publishMode(path: string, mode: number): Promise<void> {
  if (Deno.build.os !== "windows") await Deno.chmod(path, mode);
}

/**
 * Writes a file atomically: a temporary sibling, then a rename, so readers see the old or the new
 * content and never half of it.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true });
  const temp = await Deno.makeTempFile({ dir: dirname(path), prefix: `.${basename(path)}.tmp-` });
  try {
    if (typeof data === "string") await Deno.writeTextFile(temp, data);
    else await Deno.writeFile(temp, data);
    const previous = await Deno.stat(path).catch(() => undefined);
    await publishMode(temp, previous?.mode != null ? previous.mode & 0o777 : 0o644);
    await Deno.rename(temp, path);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw error;
  }
}

/**
 * Writes a whole folder atomically: every file (keys are paths relative to the folder) and every
 * `emptyFolders` entry goes into a temporary sibling folder that is then renamed into place. With
 * `overwrite`, the old folder is moved aside first and removed after the rename.
 */
export async function writeFolderAtomic(
  folder: string,
  files: Record<string, string | Uint8Array>,
  options: WriteFolderOptions & { emptyFolders?: readonly string[] } = {},
): Promise<void> {
  const emptyFolders = options.emptyFolders ?? [];
  for (const relative of [...Object.keys(files), ...emptyFolders]) {
    const clean = normalize(relative);
    if (isAbsolute(relative) || clean.startsWith("..") || clean !== relative.replaceAll("\\", "/")) {
      throw new RangeError(`writeFolderAtomic: "${relative}" must be a plain relative path inside ${folder}`);
    }
  }
  const exists = await Deno.lstat(folder).then(() => true, () => false);
  if (exists && !options.overwrite) {
    throw new Error(`${folder} already exists; pass { overwrite: true } to replace it`);
  }
  const parent = dirname(folder);
  await Deno.mkdir(parent, { recursive: true });
  const temp = await Deno.makeTempDir({ dir: parent, prefix: `.${basename(folder)}.tmp-` });
  try {
    await publishMode(temp, 0o755);
    for (const relative of emptyFolders) await Deno.mkdir(join(temp, relative), { recursive: true });
    for (const [relative, data] of Object.entries(files)) {
      const path = join(temp, relative);
      await Deno.mkdir(dirname(path), { recursive: true });
      if (typeof data === "string") await Deno.writeTextFile(path, data);
      else await Deno.writeFile(path, data);
    }
    if (exists) {
      const old = `${temp}.old`;
      await Deno.rename(folder, old);
      await Deno.rename(temp, folder);
      await Deno.remove(old, { recursive: true });
    } else {
      await Deno.rename(temp, folder);
    }
  } catch (error) {
    await Deno.remove(temp, { recursive: true }).catch(() => {});
    throw error;
  }
}
