/**
 * Data generation speed: one sample of every RULER task (src/data/ruler.ts generateRuler) and of
 * BABILong qa1–qa5 (src/data/babilong.ts makeBabilongSample) at 32K tokens of the byte tokenizer, each
 * timed on its own (wall time, one run after a warm-up sample of the same task at 4K). The essay haystack
 * is the project's generated corpus (200,000 words, as `longtune data` uses by default); building it is
 * timed once and reported separately. `--json` prints only a JSON array; `--length` changes the length.
 *
 * Target (issue "evaluations and data", item 7): < 2 s per sample on a 2-core machine.
 */
import { BABI_TASK_NAMES } from "../src/data/babi.ts";
import { makeBabilongSample } from "../src/data/babilong.ts";
import { corpusText, generateCorpus, haystackSentences } from "../src/data/corpus.ts";
import { generateRuler, RULER_TASK_NAMES } from "../src/data/ruler.ts";
import { byteTokenizer } from "../src/data/tokenizers.ts";

function arg(name: string, fallback: string): string {
  const at = Deno.args.indexOf(`--${name}`);
  return at >= 0 ? Deno.args[at + 1] ?? fallback : fallback;
}

const json = Deno.args.includes("--json");
const length = Number(arg("length", "32768"));
const TARGET_MS = 2000;
const tokenizer = byteTokenizer();

interface Result {
  name: string;
  length: number;
  tokens: number;
  ms: number;
  targetMs: number;
}

const results: Result[] = [];
const t0 = performance.now();
const essay = corpusText(generateCorpus({ seed: 42, words: 200_000 }));
const corpusMs = performance.now() - t0;

for (const task of RULER_TASK_NAMES) {
  const run = (maxLength: number) =>
    generateRuler({ task, maxLength, samples: 1, seed: 42, tokenizer, sources: { essay } })[0];
  run(4096);
  const start = performance.now();
  const sample = run(length);
  const ms = performance.now() - start;
  const tokens = tokenizer.encode(sample.input + sample.answer_prefix).length;
  results.push({ name: `ruler ${task}`, length, tokens, ms, targetMs: TARGET_MS });
}

// BABILong's headline tasks.
for (const task of BABI_TASK_NAMES.slice(0, 5)) {
  const run = (targetTokens: number) =>
    makeBabilongSample({ task, seed: 7, targetTokens, tokenizer, haystack: haystackSentences(7) });
  run(4096);
  const start = performance.now();
  const sample = run(length);
  const ms = performance.now() - start;
  results.push({ name: `babilong ${task}`, length, tokens: sample.tokens, ms, targetMs: TARGET_MS });
}

if (json) {
  console.log(JSON.stringify(results));
} else {
  console.log(
    `byte tokenizer, ${length} tokens per sample; essay corpus (200,000 words) built in ${
      corpusMs.toFixed(0)
    } ms`,
  );
  for (const r of results) {
    const verdict = r.ms < r.targetMs ? "ok" : "OVER TARGET";
    console.log(
      `${r.name.padEnd(26)} ${r.tokens.toString().padStart(6)} tokens  ${r.ms.toFixed(0).padStart(6)} ms  ` +
        `(target < ${r.targetMs} ms: ${verdict})`,
    );
  }
  const worst = results.reduce((a, b) => (b.ms > a.ms ? b : a));
  console.log(`slowest: ${worst.name} ${worst.ms.toFixed(0)} ms`);
}
