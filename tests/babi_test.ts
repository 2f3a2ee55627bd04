import assert from "node:assert/strict";
import {
  BABI_TASK_NAMES,
  BABI_TASKS,
  type BabiSample,
  type BabiTaskName,
  generateBabi,
} from "../src/data/babi.ts";

// Independent readers of the v1.2 surface forms: each re-derives the answer from the sentences alone,
// sharing no code with the generators.
const ACTOR = "(John|Mary|Sandra|Daniel|Bill|Fred|Jeff|Julie)";
const PLACE = "(bathroom|bedroom|garden|hallway|kitchen|office|cinema|park|school)";
const OBJECT = "(apple|football|milk)";
const MOVE = new RegExp(
  `^${ACTOR} (?:went to|journeyed to|travelled to|moved to|went back to) the ${PLACE}\\.$`,
);
const GET = new RegExp(`^${ACTOR} (?:got|grabbed|picked up|took) the ${OBJECT}(?: there)?\\.$`);
const DROP = new RegExp(`^${ACTOR} (?:dropped|discarded|put down|left) the ${OBJECT}(?: there)?\\.$`);
const GIVE = new RegExp(`^${ACTOR} (?:gave|handed|passed) the ${OBJECT} to ${ACTOR}\\.$`);
const IS_IN = new RegExp(`^${ACTOR} is in the ${PLACE}\\.$`);
const IS_NOT_IN = new RegExp(`^${ACTOR} is (?:not|no longer) in the ${PLACE}\\.$`);
const EITHER = new RegExp(`^${ACTOR} is either in the ${PLACE} or the ${PLACE}\\.$`);
const DIRECTION = "(north|south|east|west)";
const RELATION = new RegExp(`^The ${PLACE} is ${DIRECTION} of the ${PLACE}\\.$`);

function samples(task: BabiTaskName, count = 300, seed = 11): BabiSample[] {
  return generateBabi(task, { seed, count });
}

function fail(sample: BabiSample, why: string): never {
  const story = sample.facts.map((f, i) => `  ${i} ${f}`).join("\n");
  throw new assert.AssertionError({
    message: `${sample.task}: ${why}\n${story}\n  Q ${sample.question} → ${sample.answer} ${
      JSON.stringify(sample.supportingFacts)
    }`,
  });
}

/** Replays moves, gets, drops and gives as a reader would: what is known, and from which line. */
function read(facts: readonly string[]) {
  const actorAt = new Map<string, { place: string; line: number }>();
  const holder = new Map<string, string>();
  const lying = new Map<string, string | null>();
  const history = new Map<string, string[]>();
  const holdings = new Map<string, string[]>();
  const holdingLines = new Map<string, number[]>();
  const placeOf = (object: string): string | null => {
    const h = holder.get(object);
    if (h !== undefined) return actorAt.get(h)?.place ?? null;
    return lying.get(object) ?? null;
  };
  const touch = (actor: string, line: number) =>
    holdingLines.set(actor, [...(holdingLines.get(actor) ?? []), line]);
  facts.forEach((fact, line) => {
    let m: RegExpMatchArray | null;
    if ((m = fact.match(MOVE))) {
      actorAt.set(m[1], { place: m[2], line });
    } else if ((m = fact.match(GET))) {
      holder.set(m[2], m[1]);
      holdings.set(m[1], [...(holdings.get(m[1]) ?? []), m[2]]);
      touch(m[1], line);
    } else if ((m = fact.match(DROP))) {
      holder.delete(m[2]);
      lying.set(m[2], actorAt.get(m[1])?.place ?? null);
      holdings.set(m[1], (holdings.get(m[1]) ?? []).filter((o) => o !== m![2]));
      touch(m[1], line);
    } else if ((m = fact.match(GIVE))) {
      holder.set(m[2], m[3]);
      holdings.set(m[1], (holdings.get(m[1]) ?? []).filter((o) => o !== m![2]));
      holdings.set(m[3], [...(holdings.get(m[3]) ?? []), m[2]]);
      touch(m[1], line);
      touch(m[3], line);
    } else {
      throw new Error(`unreadable sentence ${JSON.stringify(fact)}`);
    }
    for (const object of ["apple", "football", "milk"]) {
      const place = placeOf(object);
      const past = history.get(object) ?? [];
      if (place !== null && past.at(-1) !== place) history.set(object, [...past, place]);
    }
  });
  return { actorAt, placeOf, history, holdings, holdingLines };
}

Deno.test("BABI_TASKS lists qa1–qa20 in order; qa1–qa10 faithful, qa11–qa20 marked approximate", () => {
  assert.deepEqual(BABI_TASKS.map((t) => t.name), [...BABI_TASK_NAMES]);
  for (const [i, t] of BABI_TASKS.entries()) {
    assert.equal(t.faithful, i < 10, `${t.name}.faithful`);
    assert.ok(t.note.length > 20 && t.title.length > 3, `${t.name} needs a title and a note`);
  }
});

Deno.test("qa1: answer is the actor's latest move and the support is that move", () => {
  for (const s of samples("qa1")) {
    const actor = s.question.match(new RegExp(`^Where is ${ACTOR}\\?$`))?.[1] ?? fail(s, "question form");
    const known = read(s.facts).actorAt.get(actor) ?? fail(s, `${actor} never moved`);
    if (known.place !== s.answer) fail(s, `expected ${known.place}`);
    assert.deepEqual(s.supportingFacts, [known.line], `qa1 support of ${s.question}`);
    if (s.facts.length < 2 || s.facts.length > 10 || s.facts.length % 2 !== 0) {
      fail(s, "v1.2 has 2, 4, …, 10 facts");
    }
  }
});

Deno.test("qa2: the object is where it lies or where its holder is; support names the placing facts", () => {
  for (const s of samples("qa2")) {
    const object = s.question.match(new RegExp(`^Where is the ${OBJECT}\\?$`))?.[1] ??
      fail(s, "question form");
    const reader = read(s.facts);
    const place = reader.placeOf(object) ?? fail(s, `${object} cannot be placed from the story`);
    if (place !== s.answer) fail(s, `expected ${place}`);
    if (s.supportingFacts.length !== 2) fail(s, "expected 2 supporting facts");
    // The latest sentence about the object is one of them.
    const lastAbout = s.facts.findLastIndex((f) => f.includes(` the ${object}`));
    if (!s.supportingFacts.includes(lastAbout)) fail(s, `support should include line ${lastAbout}`);
  }
});

Deno.test("qa3: answer is the object's previous known location before the one asked about", () => {
  for (const s of samples("qa3")) {
    const m = s.question.match(new RegExp(`^Where was the ${OBJECT} before the ${PLACE}\\?$`)) ??
      fail(s, "form");
    const past = read(s.facts).history.get(m[1]) ?? [];
    if (past.length < 2 || past.at(-1) !== m[2]) fail(s, `history ${past} does not end in ${m[2]}`);
    if (past.at(-2) !== s.answer) fail(s, `expected ${past.at(-2)}`);
    if (s.supportingFacts.length < 3 || s.supportingFacts.length > 4) {
      fail(s, "expected 3 (or 4) supporting facts");
    }
  }
});

Deno.test("qa4: answer is the direct neighbour in the asked direction", () => {
  const opposite: Record<string, string> = { north: "south", south: "north", east: "west", west: "east" };
  for (const s of samples("qa4")) {
    if (s.facts.length !== 2) fail(s, "v1.2 qa4 has exactly 2 facts");
    // "A is d of B" as triples, plus the same fact read from B.
    const triples = s.facts.flatMap((f) => {
      const m = f.match(RELATION) ?? fail(s, `unreadable ${f}`);
      return [[m[1], m[2], m[3]], [m[3], opposite[m[2]], m[1]]];
    });
    let m: RegExpMatchArray | null;
    let expected: string[];
    if ((m = s.question.match(new RegExp(`^What is ${DIRECTION} of the ${PLACE}\\?$`)))) {
      expected = triples.filter(([, d, b]) => d === m![1] && b === m![2]).map(([a]) => a);
    } else if ((m = s.question.match(new RegExp(`^What is the ${PLACE} ${DIRECTION} of\\?$`)))) {
      expected = triples.filter(([a, d]) => a === m![1] && d === m![2]).map(([, , b]) => b);
    } else {
      fail(s, "question form");
    }
    if (expected.length !== 1 || expected[0] !== s.answer) fail(s, `expected ${expected}`);
  }
});

Deno.test("qa5: answer comes from the latest matching give, cast is Bill/Fred/Jeff/Mary", () => {
  for (const s of samples("qa5")) {
    const gives = s.facts.map((f) => f.match(GIVE)).flatMap((m, line) =>
      m ? [{ line, from: m[1], what: m[2], to: m[3] }] : []
    );
    for (const f of s.facts) if (/\b(John|Sandra|Daniel)\b/.test(f)) fail(s, "v1.2 qa5 cast only");
    const forms: [RegExp, (m: RegExpMatchArray) => (g: typeof gives[0]) => boolean, keyof typeof gives[0]][] =
      [
        [/^What did (\w+) give to (\w+)\?$/, (m) => (g) => g.from === m[1] && g.to === m[2], "what"],
        [/^Who received the (\w+)\?$/, (m) => (g) => g.what === m[1], "to"],
        [/^Who did (\w+) give the (\w+) to\?$/, (m) => (g) => g.from === m[1] && g.what === m[2], "to"],
        [/^Who gave the (\w+)\?$/, (m) => (g) => g.what === m[1], "from"],
        [/^Who gave the (\w+) to (\w+)\?$/, (m) => (g) => g.what === m[1] && g.to === m[2], "from"],
      ];
    const form = forms.find(([re]) => re.test(s.question)) ?? fail(s, "question form");
    const give = gives.findLast(form[1](s.question.match(form[0])!)) ?? fail(s, "no matching give");
    if (String(give[form[2]]) !== s.answer) fail(s, `expected ${give[form[2]]}`);
    assert.deepEqual(s.supportingFacts, [give.line]);
  }
});

Deno.test("qa6: yes iff the asked place is the actor's latest move", () => {
  let yes = 0;
  for (const s of samples("qa6")) {
    const m = s.question.match(new RegExp(`^Is ${ACTOR} in the ${PLACE}\\?$`)) ?? fail(s, "question form");
    const known = read(s.facts).actorAt.get(m[1]) ?? fail(s, "actor never moved");
    const expected = known.place === m[2] ? "yes" : "no";
    if (expected !== s.answer) fail(s, `expected ${expected}`);
    assert.deepEqual(s.supportingFacts, [known.line]);
    if (s.facts.length > 26) fail(s, "v1.2 qa6 has at most 26 facts");
    if (s.answer === "yes") yes++;
  }
  assert.ok(yes > 90 && yes < 210, `yes answers ${yes}/300, expected about half`);
});

Deno.test("qa7: answer is the number of objects held, as none/one/two/three", () => {
  const words = ["none", "one", "two", "three"];
  const seen = new Set<string>();
  for (const s of samples("qa7")) {
    const actor = s.question.match(new RegExp(`^How many objects is ${ACTOR} carrying\\?$`))?.[1] ??
      fail(s, "form");
    const reader = read(s.facts);
    const expected = words[(reader.holdings.get(actor) ?? []).length];
    if (expected !== s.answer) fail(s, `expected ${expected}`);
    assert.deepEqual(s.supportingFacts, reader.holdingLines.get(actor), `qa7 support of ${s.question}`);
    seen.add(s.answer);
  }
  assert.ok(seen.has("none") && seen.has("one") && seen.has("two"), `answers seen: ${[...seen]}`);
});

Deno.test("qa8: answer lists held objects in the order acquired, or nothing", () => {
  for (const s of samples("qa8")) {
    const actor = s.question.match(new RegExp(`^What is ${ACTOR} carrying\\?$`))?.[1] ??
      fail(s, "question form");
    const held = read(s.facts).holdings.get(actor) ?? [];
    const expected = held.length === 0 ? "nothing" : held.join(",");
    if (expected !== s.answer) fail(s, `expected ${expected}`);
  }
});

Deno.test("qa9: the latest statement about the actor decides yes/no", () => {
  for (const s of samples("qa9")) {
    const m = s.question.match(new RegExp(`^Is ${ACTOR} in the ${PLACE}\\?$`)) ?? fail(s, "question form");
    let latest: { place: string; positive: boolean; line: number } | undefined;
    s.facts.forEach((f, line) => {
      const pos = f.match(MOVE) ?? f.match(IS_IN);
      const neg = f.match(IS_NOT_IN);
      if (!pos && !neg) fail(s, `unreadable ${f}`);
      const hit = (pos ?? neg)!;
      if (hit[1] === m[1]) latest = { place: hit[2], positive: pos !== null, line };
    });
    if (!latest) fail(s, "nothing told about the actor");
    if (!latest.positive && latest.place !== m[2]) fail(s, "after a negation only its place is decidable");
    const expected = latest.positive && latest.place === m[2] ? "yes" : "no";
    if (expected !== s.answer) fail(s, `expected ${expected}`);
    assert.deepEqual(s.supportingFacts, [latest.line]);
  }
});

Deno.test("qa10: yes/no/maybe from the latest statement, with the v1.2 cast and places", () => {
  const seen = new Set<string>();
  for (const s of samples("qa10")) {
    const m = s.question.match(new RegExp(`^Is ${ACTOR} in the ${PLACE}\\?$`)) ?? fail(s, "question form");
    let places: string[] | undefined;
    for (const f of s.facts) {
      const either = f.match(EITHER);
      const one = f.match(MOVE) ?? f.match(IS_IN);
      if (!either && !one) fail(s, `unreadable ${f}`);
      if (!/^(Bill|Fred|Julie|Mary) /.test(f) || /bathroom|hallway|garden/.test(f)) {
        fail(s, "v1.2 qa10 world only");
      }
      if (either?.[1] === m[1]) places = [either[2], either[3]];
      if (one?.[1] === m[1]) places = [one[2]];
    }
    if (!places) fail(s, "nothing told about the actor");
    const expected = !places.includes(m[2]) ? "no" : places.length === 1 ? "yes" : "maybe";
    if (expected !== s.answer) fail(s, `expected ${expected}`);
    seen.add(s.answer);
  }
  assert.deepEqual([...seen].sort(), ["maybe", "no", "yes"]);
});

Deno.test("qa15, qa17, qa19: answers re-derived from the facts", () => {
  const plural: Record<string, string> = { mice: "mouse", cats: "cat", sheep: "sheep", wolves: "wolf" };
  for (const s of samples("qa15", 100)) {
    const name = s.question.match(/^What is (\w+) afraid of\?$/)?.[1] ?? fail(s, "question form");
    const kind = s.facts.map((f) => f.match(/^(\w+) is a (\w+)\.$/)).find((m) =>
      m?.[1].toLowerCase() === name
    )?.[2];
    const fear = s.facts.map((f) => f.match(/^(\w+) are afraid of (\w+)\.$/))
      .find((m) => m && plural[m[1].toLowerCase()] === kind)?.[2];
    if (!fear || plural[fear] !== s.answer) fail(s, `expected ${fear && plural[fear]}`);
  }
  const axis: Record<string, [number, number]> = {
    "above": [0, 1],
    "below": [0, -1],
    "to the right of": [1, 0],
    "to the left of": [-1, 0],
  };
  const relation =
    /^(?:The|Is the) ([a-z ]+?) (?:is )?(above|below|to the right of|to the left of) the ([a-z ]+)[.?]$/;
  for (const s of samples("qa17", 100)) {
    // Solve positions by relaxation from the shape shared by both facts.
    const pos = new Map<string, [number, number]>();
    const rules = s.facts.map((f) => f.match(relation) ?? fail(s, `unreadable ${f}`));
    pos.set(rules[0][3], [0, 0]);
    for (let pass = 0; pass < 3; pass++) {
      for (const [, a, rel, b] of rules) {
        const [dx, dy] = axis[rel];
        if (pos.has(b) && !pos.has(a)) pos.set(a, [pos.get(b)![0] + dx, pos.get(b)![1] + dy]);
        if (pos.has(a) && !pos.has(b)) pos.set(b, [pos.get(a)![0] - dx, pos.get(a)![1] - dy]);
      }
    }
    const [, a, rel, b] = s.question.match(relation) ?? fail(s, "question form");
    const [dx, dy] = axis[rel];
    const d = (pos.get(a)![0] - pos.get(b)![0]) * dx + (pos.get(a)![1] - pos.get(b)![1]) * dy;
    if ((d > 0 ? "yes" : "no") !== s.answer) fail(s, `expected ${d > 0 ? "yes" : "no"}`);
  }
  const step: Record<string, [number, number, string]> = {
    north: [0, 1, "n"],
    south: [0, -1, "s"],
    east: [1, 0, "e"],
    west: [-1, 0, "w"],
  };
  for (const s of samples("qa19", 100)) {
    const [, from, to] =
      s.question.match(new RegExp(`^How do you go from the ${PLACE} to the ${PLACE}\\?$`)) ??
        fail(s, "question form");
    // Breadth-first over the stated adjacencies, both ways.
    const moves = s.facts.flatMap((f) => {
      const [, a, d, b] = f.match(RELATION) ?? fail(s, `unreadable ${f}`);
      const opposite = { n: "s", s: "n", e: "w", w: "e" }[step[d][2]]!;
      return [{ from: b, to: a, letter: step[d][2] }, { from: a, to: b, letter: opposite }];
    });
    const route = new Map<string, string[]>([[from, []]]);
    const queue = [from];
    while (queue.length) {
      const at = queue.shift()!;
      for (const m of moves.filter((m) => m.from === at && !route.has(m.to))) {
        route.set(m.to, [...route.get(at)!, m.letter]);
        queue.push(m.to);
      }
    }
    if (route.get(to)?.join(",") !== s.answer) fail(s, `expected ${route.get(to)}`);
  }
});

Deno.test("every task: sentences are well formed and support points into the facts", () => {
  for (const task of BABI_TASK_NAMES) {
    for (const s of samples(task, 60, 3)) {
      assert.equal(s.task, task);
      for (const f of s.facts) {
        if (!/^[A-Z][A-Za-z ,]+[a-z]\.$/.test(f)) fail(s, `malformed fact ${JSON.stringify(f)}`);
      }
      if (!/^[A-Z][A-Za-z ]+\?$/.test(s.question)) fail(s, "malformed question");
      if (s.answer === "" || /\s/.test(s.answer)) fail(s, "answer must be one token");
      const sorted = [...s.supportingFacts].sort((a, b) => a - b);
      assert.deepEqual(s.supportingFacts, sorted, `${task} support ascending`);
      for (const i of s.supportingFacts) {
        if (!(i >= 0 && i < s.facts.length)) fail(s, `support ${i} out of range`);
      }
    }
  }
});

Deno.test("same seed gives identical samples, another seed different ones, for every task", () => {
  for (const task of BABI_TASK_NAMES) {
    const a = JSON.stringify(generateBabi(task, { seed: 42, count: 20 }));
    const b = JSON.stringify(generateBabi(task, { seed: 42, count: 20 }));
    const c = JSON.stringify(generateBabi(task, { seed: 43, count: 20 }));
    assert.equal(a, b, `${task} seed 42 twice`);
    assert.notEqual(a, c, `${task} seeds 42 and 43`);
  }
});

Deno.test("maxFacts drops long samples; impossible limits and bad options are refused by name", () => {
  for (const s of generateBabi("qa2", { seed: 5, count: 50, maxFacts: 6 })) assert.ok(s.facts.length <= 6);
  assert.throws(() => generateBabi("qa16", { seed: 5, count: 1, maxFacts: 3 }), /maxFacts 3/);
  assert.throws(() => generateBabi("qa1", { seed: -1, count: 1 }), /seed/);
  assert.throws(
    () => generateBabi("qa21" as BabiTaskName, { seed: 1, count: 1 }),
    /unknown bAbI task "qa21"/,
  );
});
