/**
 * `longtune list [what]`: what the harness knows — RULER tasks, bAbI/BABILong tasks, perplexity
 * protocols, the tokenizers shipped in `fixtures/tokenizers/`, and the fixtures with their manifest
 * hashes (each file re-hashed and checked) — as aligned text or, with `--json`, as one JSON object.
 */

import { type Command, Option } from "commander";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { BABI_TASKS } from "../data/babi.ts";
import { sha256 } from "../data/hash.ts";
import { RULER_TASK_NAMES, RULER_TASKS } from "../data/ruler.ts";
import { byteTokenizer, loadTokenizer } from "../data/tokenizers.ts";
import { perplexityProtocolSchema } from "../eval/perplexity.ts";
import { parseNames } from "./parse.ts";

/** The sections `list` can show, in the order it shows them. */
export const LIST_SECTIONS = ["ruler", "babilong", "perplexity", "tokenizers", "fixtures"] as const;
type Section = typeof LIST_SECTIONS[number];

const DEFAULT_FIXTURES = fileURLToPath(new URL("../../fixtures", import.meta.url));

// Where each protocol comes from, for a reader choosing one (the schema holds only the options).
const PROTOCOL_ORIGIN: Record<string, string> = {
  sliding: "Hugging Face's strided sliding window (perplexity of fixed-length models)",
  rolling: "lm-eval's loglikelihood_rolling: disjoint blocks, context reset per block",
  longlora: "LongLoRA's eval.py: overlapping windows, every position scored",
};

function rulerRows() {
  return RULER_TASK_NAMES.map((name) => {
    const task = RULER_TASKS[name];
    return {
      name,
      family: task.family,
      metric: task.metric,
      tokensToGenerate: task.tokensToGenerate,
      haystack: task.haystack ?? null,
    };
  });
}

function babilongRows() {
  return BABI_TASKS.map((task) => ({
    name: task.name,
    title: task.title,
    faithful: task.faithful,
    note: task.note,
  }));
}

function perplexityRows() {
  return perplexityProtocolSchema.options.map((option) => {
    const kind = String(option.shape.kind.value);
    const fields = Object.entries(option.shape as Record<string, z.ZodType>)
      .filter(([field]) => field !== "kind")
      .map(([field, schema]) =>
        schema instanceof z.ZodDefault
          ? `${field} (default ${JSON.stringify(schema.def.defaultValue)})`
          : field
      );
    return { kind, options: fields, origin: PROTOCOL_ORIGIN[kind] ?? "" };
  });
}

interface TokenizerRow {
  spec: string;
  name: string;
  hash: string;
  vocabSize: number;
  /** Why the tokenizer could not be loaded, or null. */
  error: string | null;
}

async function tokenizerRows(fixtures: string): Promise<TokenizerRow[]> {
  const byte = byteTokenizer();
  const rows: TokenizerRow[] = [
    { spec: "byte", name: byte.name, hash: byte.hash, vocabSize: byte.vocabSize, error: null },
  ];
  const folder = join(fixtures, "tokenizers");
  const entries: string[] = [];
  try {
    for await (const entry of Deno.readDir(folder)) if (entry.isDirectory) entries.push(entry.name);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  for (const name of entries.sort()) {
    const path = join(folder, name);
    // Shown as the user would type it from the current folder when it lies below it.
    const spec = relative(Deno.cwd(), path).startsWith("..") ? path : relative(Deno.cwd(), path);
    try {
      const tokenizer = await loadTokenizer(path);
      rows.push({
        spec,
        name: tokenizer.name,
        hash: tokenizer.hash,
        vocabSize: tokenizer.vocabSize,
        error: null,
      });
    } catch (error) {
      rows.push({ spec, name, hash: "", vocabSize: 0, error: (error as Error).message });
    }
  }
  return rows;
}

const manifestFilesSchema = z.object({
  files: z.record(z.string(), z.object({ sha256: z.string(), bytes: z.number().optional() })),
});

async function manifestPaths(folder: string): Promise<string[]> {
  const found: string[] = [];
  try {
    for await (const entry of Deno.readDir(folder)) {
      const path = join(folder, entry.name);
      if (entry.isDirectory) found.push(...(await manifestPaths(path)));
      else if (entry.name === "manifest.json") found.push(path);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return found.sort();
}

async function fixtureRows(fixtures: string) {
  const rows = [];
  for (const path of await manifestPaths(fixtures)) {
    const text = await Deno.readTextFile(path);
    const parsed = manifestFilesSchema.safeParse(JSON.parse(text));
    if (!parsed.success) continue;
    const folder = join(path, "..");
    const files = [];
    for (const [file, entry] of Object.entries(parsed.data.files)) {
      const actual = await Deno.readFile(join(folder, file)).then(sha256, () => null);
      const status = actual === null ? "missing" : actual === entry.sha256 ? "ok" : "changed";
      files.push({ path: file, sha256: entry.sha256, status });
    }
    rows.push({
      manifest: relative(Deno.cwd(), path) || path,
      sha256: sha256(text),
      files,
      allMatch: files.every((file) => file.status === "ok"),
    });
  }
  return rows;
}

/** Everything `list` shows, by section. */
export async function listing(sections: readonly Section[], fixtures = DEFAULT_FIXTURES) {
  const result: Record<string, unknown> = {};
  for (const section of sections) {
    if (section === "ruler") result.ruler = rulerRows();
    if (section === "babilong") result.babilong = babilongRows();
    if (section === "perplexity") result.perplexity = perplexityRows();
    if (section === "tokenizers") result.tokenizers = await tokenizerRows(fixtures);
    if (section === "fixtures") result.fixtures = await fixtureRows(fixtures);
  }
  return result;
}

function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  return rows.map((row) =>
    "  " + row.map((cell, column) => cell.padEnd(widths[column])).join("  ").trimEnd()
  );
}

function renderText(result: Awaited<ReturnType<typeof listing>>): string {
  const out: string[] = [];
  if (result.ruler) {
    const rows = result.ruler as ReturnType<typeof rulerRows>;
    out.push(
      `RULER tasks (${rows.length})`,
      ...table([
        ["task", "metric", "tokens to generate", "haystack"],
        ...rows.map((r) => [r.name, r.metric, String(r.tokensToGenerate), r.haystack ?? "-"]),
      ]),
      "",
    );
  }
  if (result.babilong) {
    const rows = result.babilong as ReturnType<typeof babilongRows>;
    out.push(
      `bAbI / BABILong tasks (${rows.length}; "faithful" follows bAbI v1.2, "approximate" is reconstructed)`,
      ...table([
        ["task", "title", "fidelity", "note"],
        ...rows.map((r) => [r.name, r.title, r.faithful ? "faithful" : "approximate", r.note]),
      ]),
      "",
    );
  }
  if (result.perplexity) {
    const rows = result.perplexity as ReturnType<typeof perplexityRows>;
    out.push(
      `Perplexity protocols (${rows.length})`,
      ...table([
        ["kind", "options", "origin"],
        ...rows.map((r) => [r.kind, r.options.join(", "), r.origin]),
      ]),
      "",
    );
  }
  if (result.tokenizers) {
    const rows = result.tokenizers as Awaited<ReturnType<typeof tokenizerRows>>;
    out.push(
      "Tokenizers (--tokenizer byte or a path)",
      ...table([
        ["spec", "name", "vocab", "hash"],
        ...rows.map((r) =>
          r.error === null
            ? [r.spec, r.name, String(r.vocabSize), r.hash]
            : [r.spec, "-", "-", `error: ${r.error}`]
        ),
      ]),
      "",
    );
  }
  if (result.fixtures) {
    const rows = result.fixtures as Awaited<ReturnType<typeof fixtureRows>>;
    out.push(`Fixtures (${rows.length} manifest${rows.length === 1 ? "" : "s"})`);
    for (const row of rows) {
      const ok = row.files.filter((file) => file.status === "ok").length;
      out.push(`  ${row.manifest}  sha256 ${row.sha256}  ${ok}/${row.files.length} files match`);
      out.push(
        ...table([
          ["file", "sha256", "status"],
          ...row.files.map((file) => [file.path, file.sha256, file.status]),
        ]).map((line) => "  " + line),
      );
    }
    out.push("");
  }
  return out.join("\n");
}

/** Registers `list` on the program. */
export function registerList(program: Command): void {
  program
    .command("list")
    .description("list RULER and bAbI/BABILong tasks, perplexity protocols, tokenizers and fixtures")
    .argument(
      "[what]",
      `one of ${LIST_SECTIONS.join(", ")} (default: all)`,
      (text: string) => parseNames(text, LIST_SECTIONS, "section"),
    )
    .addOption(new Option("--json", "print one JSON object instead of tables"))
    .addOption(
      new Option("--fixtures <dir>", "fixtures folder to list").default(DEFAULT_FIXTURES, "fixtures/"),
    )
    .addHelpText(
      "after",
      `
Examples:
  longtune list
  longtune list ruler --json`,
    )
    .action(async (what: Section[] | undefined, options: { json?: boolean; fixtures: string }) => {
      const result = await listing(what ?? LIST_SECTIONS, options.fixtures);
      if (options.json) console.log(JSON.stringify(result, null, 2));
      else console.log(renderText(result).trimEnd());
    });
}
