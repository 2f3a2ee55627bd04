// Position sweeps: grid layout, length targeting, needle placement, token spans, paired samples,
// distractors, and the scored heatmap with its Wilson intervals.

import assert from "node:assert/strict";
import { haystackSentences } from "../src/data/corpus.ts";
import { byteTokenizer, loadGpt2Tokenizer } from "../src/data/tokenizers.ts";
import { generatePositionSweep, scorePositionSweep, type SweepSample } from "../src/eval/sweeps.ts";

const bytes = byteTokenizer();
const GPT2_TINY = new URL("../fixtures/tokenizers/gpt2-tiny", import.meta.url).pathname;

// Longest haystack sentence in UTF-8 bytes (+1 for its separating space): a prompt that stops short
// of its length by more than this could have taken another sentence.
const LONGEST_SENTENCE = (() => {
  const it = haystackSentences(99);
  let longest = 0;
  for (let i = 0; i < 3000; i++) {
    longest = Math.max(longest, new TextEncoder().encode(it.next().value).length);
  }
  return longest + 1;
})();

function needleText(key: string, value: string): string {
  return `One of the special magic numbers for ${key} is: ${value}.`;
}

function spanText(
  sample: SweepSample,
  span: { start: number; end: number },
  encode = bytes.encode,
): number[] {
  return encode(sample.input + sample.answerPrefix).slice(span.start, span.end);
}

Deno.test("the grid has every (length, depth, sample), fits each length and cannot take another sentence", () => {
  const lengths = [600, 1200];
  const depths = [0, 0.5, 1];
  const sweep = generatePositionSweep({ lengths, depths, samplesPerCell: 3, seed: 7 }, bytes);
  assert.equal(sweep.samples.length, 18);
  assert.deepEqual(
    sweep.samples.map((s) => `${s.length}/${s.depth}/${s.index}`),
    lengths.flatMap((l) => depths.flatMap((d) => [0, 1, 2].map((i) => `${l}/${d}/${i}`))),
  );
  assert.equal(sweep.tokenizer, "byte");
  for (const s of sweep.samples) {
    const where = `length ${s.length} depth ${s.depth} sample ${s.index}`;
    const measured = bytes.encode(s.input + s.answerPrefix).length + 32;
    assert.equal(s.tokens, measured, `${where}: recorded tokens`);
    assert.ok(s.tokens <= s.length, `${where}: ${s.tokens} tokens > ${s.length}`);
    assert.ok(
      s.tokens > s.length - LONGEST_SENTENCE,
      `${where}: ${s.tokens} tokens leaves room for a sentence`,
    );
    assert.deepEqual(s.outputs, [s.needle.value]);
    assert.match(s.needle.value, /^[1-9][0-9]{6}$/);
    assert.match(s.needle.key, /^[a-z]+-[a-z]+$/);
    assert.ok(s.input.includes(`Which special magic numbers for ${s.needle.key} are mentioned`), where);
    assert.equal(
      s.answerPrefix,
      ` A special magic number for ${s.needle.key} mentioned in the provided text is`,
      `${where}: singular RULER answer prefix`,
    );
  }
});

Deno.test("the needle sits before sentence ⌊n·depth⌋ and its token span covers exactly its sentence", () => {
  const sweep = generatePositionSweep(
    { lengths: [900], depths: [0, 0.25, 0.5, 1], samplesPerCell: 2, seed: 3 },
    bytes,
  );
  for (const s of sweep.samples) {
    const where = `depth ${s.depth} sample ${s.index}`;
    assert.equal(s.needle.sentence, Math.floor(s.sentences * s.depth), where);
    const needle = needleText(s.needle.key, s.needle.value);
    // The span includes the space before the needle, except at depth 0 where a newline precedes it.
    const expected = s.depth === 0 ? needle : ` ${needle}`;
    assert.equal(bytes.decode(spanText(s, s.needle.span)), expected, `${where}: span text`);
    if (s.depth === 0) {
      assert.ok(s.input.includes(`afterwards.\n${needle} `), `${where}: first in the context`);
    }
    if (s.depth === 1) assert.ok(s.input.includes(` ${needle}\nWhich special magic`), `${where}: last`);
  }
});

Deno.test("samples are paired across cells and the sweep is deterministic in its seed", () => {
  const options = { lengths: [500, 800], depths: [0, 0.5, 1], samplesPerCell: 3, seed: 11 };
  const sweep = generatePositionSweep(options, bytes);
  assert.deepEqual(generatePositionSweep(options, bytes), sweep, "same options, same samples");
  const byIndex = (i: number) => sweep.samples.filter((s) => s.index === i);
  for (const i of [0, 1, 2]) {
    const cells = byIndex(i);
    assert.ok(
      cells.every((s) => s.needle.key === cells[0].needle.key && s.needle.value === cells[0].needle.value),
    );
    // At one length, moving the needle leaves the same haystack (byte lengths do not depend on depth).
    for (const length of options.lengths) {
      const atLength = cells.filter((s) => s.length === length);
      const haystacks = atLength.map((s) =>
        s.input.replace(needleText(s.needle.key, s.needle.value), "").replace(/\s+/g, " ")
      );
      assert.ok(
        haystacks.every((h) => h === haystacks[0]),
        `sample ${i} at ${length}: same haystack at every depth`,
      );
      assert.ok(atLength.every((s) => s.sentences === atLength[0].sentences));
    }
  }
  const values = [0, 1, 2].map((i) => byIndex(i)[0].needle.value);
  assert.equal(new Set(values).size, 3, "sample indices draw different values");
  const reseeded = generatePositionSweep({ ...options, seed: 12 }, bytes);
  assert.notEqual(reseeded.samples[0].needle.value, sweep.samples[0].needle.value);
  assert.notEqual(reseeded.samples[0].input, sweep.samples[0].input);
});

Deno.test("distractors: near-miss keys sharing one word, other values, recorded token spans", () => {
  const sweep = generatePositionSweep(
    { lengths: [1500], depths: [0.5], samplesPerCell: 2, seed: 5, distractors: 4 },
    bytes,
  );
  for (const s of sweep.samples) {
    assert.equal(s.distractors.length, 4);
    const [adjective, noun] = s.needle.key.split("-");
    const keys = new Set([s.needle.key]);
    const values = new Set([s.needle.value]);
    s.distractors.forEach((d, j) => {
      const where = `sample ${s.index} distractor ${j}`;
      const [a, n] = d.key.split("-");
      assert.ok(
        (a === adjective) !== (n === noun),
        `${where}: ${d.key} shares exactly one word with ${s.needle.key}`,
      );
      assert.equal(a === adjective, j % 2 === 0, `${where}: even distractors keep the adjective`);
      keys.add(d.key);
      values.add(d.value);
      assert.ok(d.sentence >= 0 && d.sentence <= s.sentences, `${where}: sentence ${d.sentence}`);
      const text = bytes.decode(spanText(s, d.span)).trimStart();
      assert.equal(text, needleText(d.key, d.value), `${where}: span text`);
      const overlaps = d.span.start < s.needle.span.end && s.needle.span.start < d.span.end;
      assert.ok(!overlaps, `${where}: span overlaps the needle's`);
    });
    assert.equal(keys.size, 5, "keys are distinct");
    assert.equal(values.size, 5, "values are distinct");
    assert.ok(s.tokens <= 1500);
  }
});

Deno.test("token spans hold under a BPE tokenizer that merges across spaces", async () => {
  const bpe = await loadGpt2Tokenizer(GPT2_TINY);
  const sweep = generatePositionSweep(
    { lengths: [700], depths: [0, 0.5, 1], samplesPerCell: 1, seed: 2, distractors: 2 },
    bpe,
  );
  for (const s of sweep.samples) {
    const full = bpe.encode(s.input + s.answerPrefix);
    assert.equal(s.tokens, full.length + 32);
    assert.ok(s.tokens <= 700);
    for (const placed of [s.needle, ...s.distractors]) {
      const text = bpe.decode(full.slice(placed.span.start, placed.span.end));
      assert.equal(text.trimStart(), needleText(placed.key, placed.value), `depth ${s.depth}: ${placed.key}`);
    }
  }
});

Deno.test("scoring: per-cell accuracy with Wilson intervals, the heatmap matrix and both marginals", () => {
  const sweep = generatePositionSweep(
    { lengths: [500, 800], depths: [0, 0.5, 1], samplesPerCell: 3, seed: 9 },
    bytes,
  );
  // Right everywhere except the middle, where only sample 0 is answered.
  const predictions = sweep.samples.map((s) =>
    s.depth !== 0.5 || s.index === 0 ? `The number is ${s.needle.value}.` : "I do not know."
  );
  const scores = scorePositionSweep(sweep, predictions);
  assert.deepEqual(scores.lengths, [500, 800]);
  assert.deepEqual(scores.depths, [0, 0.5, 1]);
  assert.deepEqual(
    scores.cells.map((c) => [c.length, c.depth, c.n, c.correct]),
    [[500, 0, 3, 3], [500, 0.5, 3, 1], [500, 1, 3, 3], [800, 0, 3, 3], [800, 0.5, 3, 1], [800, 1, 3, 3]],
  );
  assert.deepEqual(scores.accuracy, [[1, 1], [1 / 3, 1 / 3], [1, 1]]);
  // Wilson 1/3: [0.0615, 0.7923]; 3/3: [3/(3 + z²), 1].
  const middle = scores.cells[1].ci;
  assert.ok(Math.abs(middle.lo - 0.06149194472039615) < 1e-12, `Wilson 1/3 lo ${middle.lo}`);
  assert.ok(Math.abs(middle.hi - 0.7923403991979523) < 1e-12, `Wilson 1/3 hi ${middle.hi}`);
  const z2 = 1.959963984540054 ** 2;
  assert.ok(Math.abs(scores.cells[0].ci.lo - 3 / (3 + z2)) < 1e-12);
  assert.equal(scores.cells[0].ci.hi, 1);
  assert.deepEqual(scores.byLength.map((c) => [c.length, c.n, c.correct]), [[500, 9, 7], [800, 9, 7]]);
  assert.deepEqual(scores.byDepth.map((c) => [c.depth, c.n, c.correct]), [[0, 6, 6], [0.5, 6, 2], [1, 6, 6]]);
  assert.throws(() => scorePositionSweep(sweep, predictions.slice(1)), /17 predictions for 18 samples/);
});

Deno.test("options are validated: duplicates, depths outside [0, 1], lengths below the bare prompt", () => {
  assert.throws(
    () => generatePositionSweep({ lengths: [500, 500], samplesPerCell: 1, seed: 1 }, bytes),
    /lengths: lengths lists 500 twice/,
  );
  assert.throws(
    () => generatePositionSweep({ lengths: [500], depths: [0, 1.5], samplesPerCell: 1, seed: 1 }, bytes),
    /depths\.1/,
  );
  assert.throws(
    () => generatePositionSweep({ lengths: [200], samplesPerCell: 1, seed: 1 }, bytes),
    /length 200 is below the \d+ tokens of the prompt without haystack/,
  );
});
