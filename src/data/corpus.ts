/**
 * The project's own English-like prose, generated from a small grammar and hand-written word lists,
 * so the perplexity fixtures and the RULER/BABILong haystacks need no download and carry no licence.
 *
 * A corpus is a run of books. Each book has a cast of characters with persistent attributes (home
 * town, profession, trait, years in the trade, possessions) and towns with persistent landmarks
 * (founding year, visitor count, character) and distances. Later chapters refer back to what earlier
 * chapters established — who lives where, who gave what to whom, where someone was last seen — and
 * every such statement is true of the book's state, so a model with a long enough context can predict
 * it and one with a short context cannot.
 *
 * Determinism: book i of seed s draws from `Rng(s, i)` only, so it is the same whatever other books
 * are generated; the haystack stream draws from stream 0xffffffff. Speed: ~200K words in well under a
 * second on one core.
 *
 * The word lists avoid every name, place, object, animal, colour, shape and time word of bAbI
 * (`BABI_RESERVED_WORDS`), because BABILong hides bAbI facts in this text and a distractor that
 * names "the kitchen" or "Mary" would change the task's answer.
 */

import { z } from "zod";
import { Rng } from "../random/philox.ts";

/** Bumped whenever the same options would produce different text; fixtures record it. */
export const CORPUS_GENERATOR_VERSION = 1;

// Lists are comma-separated so that an item may hold a space ("market hall"), even across a line break.
function wordList(text: string): string[] {
  return text.split(",").map((w) => w.trim().replace(/\s+/g, " ")).filter((w) => w.length > 0);
}

/**
 * Words bAbI (and so BABILong) uses for its actors, locations, objects, containers, shapes, animals,
 * colours, times of day and motivations; the generator never emits them as words.
 */
export const BABI_RESERVED_WORDS: readonly string[] = wordList(`
  john, mary, sandra, daniel, fred, bill, jeff, julie, emily, jessica, gertrude, winona, lily,
  bernhard, greg, brian, julius, jason, antoine, sumit, yann, bathroom, bedroom, garden, hallway,
  kitchen, office, cinema, park, school, apple, football, milk, box, chest, chocolate, chocolates,
  suitcase, container, triangle, square, rectangle, sphere, pajamas, mouse, mice, sheep, wolf, wolves,
  cat, cats, lion, lions, swan, swans, rhino, frog, frogs, white, yellow, green, gray, red, blue,
  pink, yesterday, morning, afternoon, evening, hungry, thirsty, tired, bored
`);

const FEMALE_NAMES = wordList(`
  Mara, Elspeth, Isolde, Wendeline, Petra, Liesel, Rowena, Greta, Maud, Agnes, Theda, Sabine, Odile,
  Hester, Nell, Ines, Philippa, Clemence, Ysolde, Marisol, Tamsin, Solveig, Ottilie, Brigid, Imogen,
  Rosalind, Beatrix, Cordelia, Henrietta, Mirela
`);
const MALE_NAMES = wordList(`
  Tobin, Corwin, Bram, Osric, Anselm, Hollis, Fenwick, Caspar, Leopold, Ulric, Emrys, Lucan, Piers,
  Ambrose, Garrick, Alaric, Dorian, Benedikt, Jasper, Quentin, Ewan, Rufus, Cedric, Lazlo, Hamish,
  Barnaby, Ignatius, Matthias, Silas, Tobias
`);
// Surnames and town names are compounds, so most occur rarely: they are the tail that WikiText's
// `<unk>` mapping and a model's long-context copying both need.
const SURNAME_HEADS = wordList(`
  Ash, Thorn, Black, Whit, Hollow, Marl, Fern, Brack, Cold, Hart, Kings, Lang, Mill, Pen, Stan, Wick,
  Gold, Harrow, Oaken, Rook
`);
const SURNAME_TAILS = wordList(`
  worth, dale, more, ley, field, wood, stone, ridge, brook, ham, wick, ford, hurst, combe, well
`);
const TOWN_HEADS = wordList(`
  East, West, Wyn, Brom, Cald, Dun, Elm, Fal, Glen, Hawk, Ivy, Kil, Lark, Mor, Nor, Pell, Sand, Tarn,
  Ulver, Ven
`);
const TOWN_TAILS = wordList(`
  holm, mere, bury, haven, stead, thorpe, gate, minster, port, wich, moor, cross, fell, mouth
`);
const LANDMARKS = wordList(`
  mill, harbour, chapel, market hall, forge, lighthouse, orchard, granary, ferry landing, bell tower,
  tannery, library, inn, old bridge, quarry, boathouse, vineyard, observatory, greenhouse, stable
  yard, customs house, printing works, ropewalk, weir
`);
const PROFESSIONS = wordList(`
  weaver, blacksmith, ferry pilot, apothecary, clockmaker, cartographer, glassblower, miller,
  bookbinder, shipwright, schoolteacher, beekeeper, stonemason, lamplighter, cooper, chandler, tailor,
  physician, surveyor, printer, baker, potter, carpenter, herbalist, innkeeper, harbourmaster,
  archivist, organist, saddler, bell-founder, rope-maker
`);
const OBJECTS = wordList(`
  compass, lantern, ledger, pocket watch, telescope, fiddle, satchel, locket, map, key, hourglass,
  spyglass, quill, notebook, walking stick, shawl, kettle, ring, medallion, almanac, sextant,
  penknife, harmonica, umbrella, violin, bracelet, journal, barometer, magnifying glass, tinder pouch
`);
const OBJECT_DESCRIPTORS = wordList(`
  old, battered, polished, tarnished, engraved, small, heavy, well-worn, hand-made, silver-trimmed,
  brass-cornered, painted, dented, carved, faded
`);
const PLACE_ADJECTIVES = wordList(`
  quiet, narrow, crooked, cold, bright, grey, weathered, crowded, empty, damp, sunlit, shadowy,
  ancient, tidy, noisy, half-empty, rain-soaked, wind-swept, low-roofed, sun-bleached
`);
const TRAITS = wordList(`
  patient, restless, cheerful, stubborn, careful, generous, quiet, anxious, proud, curious, gentle,
  sharp-eyed, soft-spoken, quick-tempered, good-natured
`);
const ADVERBS = wordList(`
  slowly, quietly, carefully, suddenly, patiently, briskly, reluctantly, cheerfully, silently,
  gravely, eagerly, calmly, wearily, hastily, thoughtfully, absently, gently, firmly
`);
const MONTHS = wordList(`
  January, February, March, April, May, June, July, August, September, October, November, December
`);
const SEASONS = ["spring", "summer", "autumn", "winter"];
const TIMES_OF_DAY = ["at dawn", "by midday", "at dusk", "after supper", "before noon", "at nightfall"];
const WEATHER = ["rain", "fog", "wind", "snow", "frost", "storm", "drizzle", "mist"];
const WEATHER_EASED = ["eased", "lifted", "cleared", "passed", "thinned", "died down"];
const RECALL_PHRASES = ["thought of", "remembered", "wrote a letter to", "spoke fondly of"];
const UNDERSTOOD = ["knew", "understood", "could see", "could tell"];
const SMELLS = wordList(`
  tar, woodsmoke, wet stone, lavender, fresh bread, salt, pine resin, ink, hay, beeswax
`);
const GOODS = wordList(`
  candles, loaves, barrels, bolts of cloth, baskets of pears, sacks of flour, crates of nails, bundles
  of reeds, jars of honey, coils of rope
`);

interface Verb {
  base: string;
  third: string;
  past: string;
  participle: string;
  gerund: string;
}

function verbTable(table: string): Verb[] {
  return table.trim().split("\n").map((line) => {
    const [base, third, past, participle, gerund] = line.trim().split(/\s+/);
    return { base, third, past, participle, gerund };
  });
}

// base, third person, past, past participle, gerund
const MOVE_VERBS = verbTable(`
  walk walks walked walked walking
  hurry hurries hurried hurried hurrying
  return returns returned returned returning
  wander wanders wandered wandered wandering
  ride rides rode ridden riding
  stroll strolls strolled strolled strolling
  go goes went gone going
  run runs ran run running
  travel travels travelled travelled travelling
  come comes came come coming
`);
const HANDLE_VERBS = verbTable(`
  polish polishes polished polished polishing
  mend mends mended mended mending
  carry carries carried carried carrying
  hide hides hid hidden hiding
  examine examines examined examined examining
  clean cleans cleaned cleaned cleaning
  wrap wraps wrapped wrapped wrapping
  study studies studied studied studying
  inspect inspects inspected inspected inspecting
  repair repairs repaired repaired repairing
  fold folds folded folded folding
  pack packs packed packed packing
  clutch clutches clutched clutched clutching
  weigh weighs weighed weighed weighing
  sketch sketches sketched sketched sketching
`);
const SPEECH_VERBS = verbTable(`
  say says said said saying
  whisper whispers whispered whispered whispering
  reply replies replied replied replying
  mutter mutters muttered muttered muttering
  call calls called called calling
  answer answers answered answered answering
  remark remarks remarked remarked remarking
  insist insists insisted insisted insisting
  declare declares declared declared declaring
`);
// Verbs that take a "that" clause: "she feared that he would come back".
const THINK_VERBS = verbTable(`
  think thinks thought thought thinking
  suspect suspects suspected suspected suspecting
  know knows knew known knowing
  believe believes believed believed believing
  hope hopes hoped hoped hoping
  fear fears feared feared fearing
  realise realises realised realised realising
  suppose supposes supposed supposed supposing
`);

/** Options of `generateCorpus`; give exactly one of `words` and `chapters`. */
export const corpusOptionsSchema = z.object({
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** Stop after the sentence that brings the corpus to this many words (whitespace-separated tokens). */
  words: z.number().int().positive().optional(),
  /** Stop after this many chapters in all. */
  chapters: z.number().int().positive().optional(),
  /** Index of the first book; books are independent, so splits can use disjoint ranges of one seed. */
  firstBook: z.number().int().min(0).max(0xfffffffe).default(0),
  chaptersPerBook: z.number().int().positive().default(10),
  /** Mean chapter length; each chapter draws its length in [0.75, 1.25] × this. */
  wordsPerChapter: z.number().int().min(20).default(1500),
  castSize: z.number().int().min(2).max(12).default(5),
  townsPerBook: z.number().int().min(2).max(8).default(3),
}).refine((o) => (o.words === undefined) !== (o.chapters === undefined), {
  message: "give exactly one of `words` and `chapters`",
});

/** What callers pass to `generateCorpus` (defaults filled in by the schema). */
export type CorpusOptions = z.input<typeof corpusOptionsSchema>;

/** A member of a book's cast, with the attributes the prose keeps referring back to. */
export interface Character {
  name: string;
  surname: string;
  pronoun: "she" | "he";
  profession: string;
  trait: string;
  home: string;
  yearsInTrade: number;
  /** What the character owns when the book starts (gifts in the story change it later). */
  possessions: string[];
}

/** A town of a book and its landmarks. */
export interface Town {
  name: string;
  landmarks: string[];
}

/** A chapter: its title and paragraphs, each a list of sentences. */
export interface Chapter {
  number: number;
  title: string;
  paragraphs: string[][];
}

/** One generated book. `words` counts the whitespace-separated tokens of its sentences. */
export interface Book {
  index: number;
  title: string;
  author: string;
  year: number;
  towns: Town[];
  cast: Character[];
  chapters: Chapter[];
  words: number;
}

/** A generated corpus: books from one seed, with the generator version that made them. */
export interface Corpus {
  seed: number;
  version: number;
  books: Book[];
  words: number;
}

/** Number of whitespace-separated tokens, the word count every generator and loader here uses. */
export function countWords(text: string): number {
  let count = 0;
  let inWord = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const space = c === 32 || c === 10 || c === 13 || c === 9 || c === 12 || c === 11;
    if (!space && !inWord) count++;
    inWord = !space;
  }
  return count;
}

/**
 * Generates a corpus of books from a seed.
 * @example const corpus = generateCorpus({ seed: 7, words: 200_000 });
 */
export function generateCorpus(options: CorpusOptions): Corpus {
  const parsed = corpusOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join(".") || "options"}: ${i.message}`);
    throw new RangeError(`generateCorpus: ${detail.join("; ")}`);
  }
  const o = parsed.data;
  const budget = { words: o.words ?? Infinity, chapters: o.chapters ?? Infinity };
  const books: Book[] = [];
  for (let index = o.firstBook; budget.words > 0 && budget.chapters > 0; index++) {
    if (index > 0xfffffffe) throw new RangeError("generateCorpus: ran out of book indices");
    books.push(generateBook(o.seed, index, o, budget));
  }
  return {
    seed: o.seed,
    version: CORPUS_GENERATOR_VERSION,
    books,
    words: books.reduce((sum, b) => sum + b.words, 0),
  };
}

/** The corpus as plain prose: paragraphs separated by blank lines, no titles. */
export function corpusText(corpus: Corpus): string {
  const paragraphs: string[] = [];
  for (const book of corpus.books) {
    for (const chapter of book.chapters) {
      for (const sentences of chapter.paragraphs) paragraphs.push(sentences.join(" "));
    }
  }
  return paragraphs.join("\n\n") + "\n";
}

/**
 * A book as a Project Gutenberg style plain-text file (the PG-19 layout): title and author, then
 * "CHAPTER I." headings and paragraphs wrapped at 70 columns, separated by blank lines.
 */
export function bookText(book: Book): string {
  const lines: string[] = [book.title.toUpperCase(), "", `By ${book.author}`, "", ""];
  for (const chapter of book.chapters) {
    lines.push("", `CHAPTER ${romanNumeral(chapter.number)}.`, "", chapter.title.toUpperCase(), "");
    for (const sentences of chapter.paragraphs) {
      lines.push(...wrap(sentences.join(" "), 70), "");
    }
  }
  return lines.join("\n");
}

const HAYSTACK_STREAM = 0xffffffff;

/**
 * An endless, deterministic stream of standalone sentences (every name introduced in the sentence
 * that uses it, no pronoun without its antecedent), for RULER and BABILong distractor text.
 * @example const it = haystackSentences(42); const first = it.next().value;
 */
export function* haystackSentences(seed: number): Generator<string, never, unknown> {
  const rng = new Rng(seed, HAYSTACK_STREAM);
  for (;;) yield standaloneSentence(rng);
}

// ---------------------------------------------------------------------------------------------
// Book state: what the prose has established and must stay consistent with.

interface Pronouns {
  subject: string;
  object: string;
  possessive: string;
}
const SHE: Pronouns = { subject: "she", object: "her", possessive: "her" };
const HE: Pronouns = { subject: "he", object: "him", possessive: "his" };

interface Landmark {
  name: string;
  town: TownState;
  built: number;
  visitors: number;
  adjective: string;
}

interface TownState {
  name: string;
  landmarks: Landmark[];
}

interface Possession {
  name: string;
  /** Given name of the character who gave it, once it has changed hands. */
  from?: string;
}

interface Person {
  character: Character;
  full: string;
  pronouns: Pronouns;
  home: TownState;
  place: Landmark;
  possessions: Possession[];
  introduced: boolean;
}

interface BookState {
  rng: Rng;
  towns: TownState[];
  people: Person[];
  /** Miles between towns i and j (i < j) at key i * 16 + j; fixed for the whole book. */
  distances: Map<number, number>;
  year: number;
  month: number;
  day: number;
}

interface Scene {
  town: TownState;
  cast: Person[];
  /** Who the last sentence was about, so the next may say "she" instead of the name. */
  lastSubject?: Person;
}

function distinct<T>(rng: Rng, items: readonly T[], n: number): T[] {
  return rng.shuffle(items.slice()).slice(0, n);
}

function compoundNames(rng: Rng, heads: readonly string[], tails: readonly string[], n: number): string[] {
  const names = new Set<string>();
  while (names.size < n) names.add(rng.pick(heads) + rng.pick(tails));
  return [...names];
}

function generateBook(
  seed: number,
  index: number,
  o: z.output<typeof corpusOptionsSchema>,
  budget: { words: number; chapters: number },
): Book {
  const rng = new Rng(seed, index);
  const year = 1830 + rng.int(89);
  const townNames = compoundNames(rng, TOWN_HEADS, TOWN_TAILS, o.townsPerBook);
  const towns: TownState[] = townNames.map((name) => {
    const town: TownState = { name, landmarks: [] };
    town.landmarks = distinct(rng, LANDMARKS, 4).map((landmark) => ({
      name: landmark,
      town,
      built: year - 30 - rng.int(300),
      visitors: 40 * (5 + rng.int(200)),
      adjective: rng.pick(PLACE_ADJECTIVES),
    }));
    return town;
  });
  const distances = new Map<number, number>();
  for (let i = 0; i < towns.length; i++) {
    for (let j = i + 1; j < towns.length; j++) distances.set(i * 16 + j, (4 + rng.int(60)) / 2);
  }
  const given = distinct(rng, [...FEMALE_NAMES, ...MALE_NAMES], o.castSize + 1);
  const surnames = compoundNames(rng, SURNAME_HEADS, SURNAME_TAILS, o.castSize + 1);
  const people: Person[] = given.slice(0, o.castSize).map((name, i) => {
    const home = rng.pick(towns);
    const pronouns = FEMALE_NAMES.includes(name) ? SHE : HE;
    const possessions = distinct(rng, OBJECTS, 2).map((object) => ({
      name: `${rng.pick(OBJECT_DESCRIPTORS)} ${object}`,
    }));
    const character: Character = {
      name,
      surname: surnames[i],
      pronoun: pronouns === SHE ? "she" : "he",
      profession: rng.pick(PROFESSIONS),
      trait: rng.pick(TRAITS),
      home: home.name,
      yearsInTrade: 2 + rng.int(30),
      possessions: possessions.map((p) => p.name),
    };
    return {
      character,
      full: `${name} ${surnames[i]}`,
      pronouns,
      home,
      place: rng.pick(home.landmarks),
      possessions,
      introduced: false,
    };
  });
  const author = `${given[o.castSize]} ${surnames[o.castSize]}`;
  const state: BookState = { rng, towns, people, distances, year: year - 1 - rng.int(20), month: 0, day: 1 };
  const title = bookTitle(state);

  const chapters: Chapter[] = [];
  let words = 0;
  for (let number = 1; number <= o.chaptersPerBook && budget.words > 0 && budget.chapters > 0; number++) {
    const target = Math.round(o.wordsPerChapter * (0.75 + 0.5 * rng.uniform()));
    const chapter = generateChapter(state, target, budget);
    words += chapter.words;
    chapters.push({ number, title: chapter.title, paragraphs: chapter.paragraphs });
    budget.chapters--;
  }
  return {
    index,
    title,
    author,
    year,
    towns: towns.map((t) => ({ name: t.name, landmarks: t.landmarks.map((l) => l.name) })),
    cast: people.map((p) => p.character),
    chapters,
    words,
  };
}

function bookTitle(state: BookState): string {
  const { rng } = state;
  const town = rng.pick(state.towns);
  const landmark = rng.pick(town.landmarks);
  const person = rng.pick(state.people);
  switch (rng.int(4)) {
    case 0:
      return titleCase(`the ${landmark.adjective} ${landmark.name} of ${town.name}`);
    case 1:
      return titleCase(`${person.character.name} of ${person.home.name}`);
    case 2:
      return titleCase(`${rng.pick(["a summer", "a winter", "an autumn", "a spring"])} in ${town.name}`);
    default:
      return titleCase(`the ${person.character.profession}'s ${baseObject(person.possessions[0].name)}`);
  }
}

function generateChapter(
  state: BookState,
  targetWords: number,
  budget: { words: number },
): { title: string; paragraphs: string[][]; words: number } {
  const { rng } = state;
  const town = rng.pick(state.towns);
  const cast = distinct(rng, state.people, 2 + rng.int(2));
  const scene: Scene = { town, cast };
  advanceDate(state);
  const title = chapterTitle(state, scene);
  const paragraphs: string[][] = [];
  let words = 0;
  let paragraph: string[] = [];
  const add = (sentence: string): boolean => {
    paragraph.push(sentence);
    const n = countWords(sentence);
    words += n;
    budget.words -= n;
    return budget.words <= 0;
  };
  const close = () => {
    if (paragraph.length > 0) paragraphs.push(paragraph);
    paragraph = [];
    scene.lastSubject = undefined;
  };

  // Opening: the date, then everyone in the scene arrives in town (introduced on first appearance).
  let done = add(openingSentence(state, scene));
  for (const person of cast) {
    if (done) break;
    if (!person.introduced) done = add(introduction(state, person));
    if (!done) done = add(arrival(state, scene, person, person === cast[0]));
  }
  close();
  while (!done && words < targetWords) {
    if (rng.uniform() < 0.3) {
      done = add(dialogue(state, scene));
      if (!done && rng.uniform() < 0.5) done = add(narrative(state, scene));
    } else {
      const sentences = 3 + rng.int(4);
      for (let i = 0; i < sentences && !done; i++) done = add(narrative(state, scene));
    }
    close();
  }
  close();
  return { title, paragraphs, words };
}

function advanceDate(state: BookState): void {
  state.day += 3 + state.rng.int(40);
  while (state.day > 28) {
    state.day -= 28;
    state.month++;
    if (state.month === 12) {
      state.month = 0;
      state.year++;
    }
  }
}

function chapterTitle(state: BookState, scene: Scene): string {
  const { rng } = state;
  const landmark = rng.pick(scene.town.landmarks);
  const lead = scene.cast[0];
  switch (rng.int(5)) {
    case 0:
      return titleCase(`the ${landmark.adjective} ${landmark.name}`);
    case 1:
      return titleCase(`${lead.character.name} in ${scene.town.name}`);
    case 2:
      return titleCase(`a letter from ${rng.pick(state.towns).name}`);
    case 3:
      return titleCase(`${MONTHS[state.month]} in ${scene.town.name}`);
    default:
      return titleCase(`the ${baseObject(rng.pick(lead.possessions).name)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Sentences of a book. Each keeps the state true: movement updates places, gifts update possessions.

function subject(scene: Scene, person: Person, rng: Rng): string {
  const usePronoun = scene.lastSubject === person && rng.uniform() < 0.5;
  scene.lastSubject = person;
  return usePronoun ? capitalize(person.pronouns.subject) : person.character.name;
}

function openingSentence(state: BookState, scene: Scene): string {
  const { rng } = state;
  const lead = scene.cast[0];
  const date = `the ${ordinal(state.day)} of ${MONTHS[state.month]}, ${state.year}`;
  if (rng.uniform() < 0.5) {
    return `On ${date}, the ${rng.pick(WEATHER)} came early to ${scene.town.name}.`;
  }
  return `It was ${date}, and ${lead.full} had ${2 + rng.int(11)} letters to answer.`;
}

function introduction(state: BookState, person: Person): string {
  const { rng } = state;
  person.introduced = true;
  const c = person.character;
  const [first, second] = person.possessions.map((p) => p.name);
  switch (rng.int(3)) {
    case 0:
      return `${person.full} was ${article(c.trait)} ${c.trait} ${c.profession} from ${c.home}, who owned ${
        article(first)
      } ${first} and ${article(second)} ${second}.`;
    case 1:
      return `In ${c.home} there lived ${
        article(c.trait)
      } ${c.trait} ${c.profession} named ${person.full}, ` +
        `who had worked at the trade for ${c.yearsInTrade} years.`;
    default:
      return `${person.full}, ${article(c.profession)} ${c.profession} from ${c.home}, never went anywhere ` +
        `without ${person.pronouns.possessive} ${first}.`;
  }
}

function arrival(state: BookState, scene: Scene, person: Person, lead: boolean): string {
  const { rng } = state;
  const landmark = rng.pick(scene.town.landmarks);
  const fromTown = person.place.town;
  person.place = landmark;
  const verb = rng.pick(MOVE_VERBS);
  const name = subject(scene, person, rng);
  if (fromTown !== scene.town) {
    return `${name} ${verb.past} from ${fromTown.name} to ${scene.town.name}, ${
      milesBetween(state, fromTown, scene.town)
    } miles, and went straight to the ${landmark.name}.`;
  }
  if (lead) return `${name} ${verb.past} ${rng.pick(ADVERBS)} to the ${landmark.name} in ${scene.town.name}.`;
  return `${name} was already at the ${landmark.name}.`;
}

function narrative(state: BookState, scene: Scene): string {
  const { rng } = state;
  const person = rng.pick(scene.cast);
  const others = scene.cast.filter((p) => p !== person);
  const other = rng.pick(others);
  const c = person.character;
  const pron = person.pronouns;
  switch (rng.int(12)) {
    case 0: {
      const landmark = rng.pick(scene.town.landmarks);
      person.place = landmark;
      return `${subject(scene, person, rng)} ${rng.pick(MOVE_VERBS).past} ${
        rng.pick(ADVERBS)
      } to the ${landmark.name}.`;
    }
    case 1: {
      const possession = rng.pick(person.possessions);
      const verb = rng.pick(HANDLE_VERBS).past;
      if (rng.uniform() < 0.5) {
        scene.lastSubject = person;
        return `${c.name}, the ${c.profession} from ${c.home}, ${rng.pick(ADVERBS)} ${verb} the ${
          baseObject(possession.name)
        }.`;
      }
      return `${subject(scene, person, rng)} ${verb} the ${possession.name} ${rng.pick(ADVERBS)}.`;
    }
    case 2: {
      // Gifts are rarer than other events, or a two-person scene ping-pongs one object back and forth.
      if (person.possessions.length < 2 || rng.uniform() < 0.5) return locationRecall(scene, person, rng);
      const i = rng.int(person.possessions.length);
      const [gift] = person.possessions.splice(i, 1);
      other.possessions.push({ name: gift.name, from: c.name });
      scene.lastSubject = other;
      return `${c.name} gave the ${gift.name} to ${other.character.name}, who ${
        rng.pick(THINK_VERBS).past
      } it was a fair trade.`;
    }
    case 3: {
      const gift = person.possessions.find((p) => p.from !== undefined);
      if (gift === undefined) return professionRecall(scene, person, rng);
      return `${subject(scene, person, rng)} still had the ${
        baseObject(gift.name)
      } that ${gift.from} had given ${pron.object}.`;
    }
    case 4:
      return professionRecall(scene, person, rng);
    case 5: {
      const landmark = rng.pick(scene.town.landmarks);
      person.place = landmark;
      other.place = landmark;
      const possession = rng.pick(other.possessions);
      scene.lastSubject = person;
      return `When ${c.name} reached the ${landmark.name}, ${other.character.name} was already ${
        rng.pick(HANDLE_VERBS).gerund
      } the ${baseObject(possession.name)}.`;
    }
    case 6: {
      scene.lastSubject = person;
      return `Although the ${rng.pick(WEATHER)} had ${
        rng.pick(WEATHER_EASED)
      }, ${c.name} stayed at the ${person.place.name} because ${pron.subject} ${
        rng.pick(THINK_VERBS).past
      } that ${other.character.name} would come back.`;
    }
    case 7: {
      const landmark = rng.pick(scene.town.landmarks);
      return `The ${landmark.name} in ${scene.town.name} had stood since ${landmark.built}, and ${
        formatCount(landmark.visitors)
      } people passed through it every ${rng.pick(SEASONS)}.`;
    }
    case 8: {
      const landmark = rng.pick(scene.town.landmarks);
      return `The ${landmark.name} was ${landmark.adjective} as ever, and the air there smelled of ${
        rng.pick(SMELLS)
      }.`;
    }
    case 9: {
      scene.lastSubject = person;
      if (other.home === person.place.town) {
        return `${c.name} ${
          rng.pick(RECALL_PHRASES)
        } ${other.character.name}, who lived here in ${other.home.name}.`;
      }
      return `${c.name} ${
        rng.pick(RECALL_PHRASES)
      } ${other.character.name}, whose home in ${other.home.name} lay ${
        milesBetween(state, person.place.town, other.home)
      } miles away.`;
    }
    case 10:
      return elsewhereRecall(state, scene, rng);
    default:
      return `${subject(scene, person, rng)} counted ${formatCount(12 + rng.int(2400))} ${
        rng.pick(GOODS)
      } before the light went.`;
  }
}

function locationRecall(scene: Scene, person: Person, rng: Rng): string {
  return `${subject(scene, person, rng)} was still at the ${person.place.name} in ${person.place.town.name}.`;
}

function professionRecall(scene: Scene, person: Person, rng: Rng): string {
  const c = person.character;
  scene.lastSubject = person;
  if (rng.uniform() < 0.5) {
    return `Because ${c.name} had been ${
      article(c.profession)
    } ${c.profession} in ${c.home} for ${c.yearsInTrade} ` +
      `years, ${person.pronouns.subject} ${rng.pick(UNDERSTOOD)} what the ${person.place.name} needed.`;
  }
  return `${c.name} was ${article(c.trait)} ${c.trait} ${c.profession}, as everyone in ${c.home} knew.`;
}

// A character outside the scene is wherever the story last left them: a fact from chapters back.
function elsewhereRecall(state: BookState, scene: Scene, rng: Rng): string {
  const absent = state.people.filter((p) => p.introduced && !scene.cast.includes(p));
  if (absent.length === 0) return locationRecall(scene, rng.pick(scene.cast), rng);
  const person = rng.pick(absent);
  const place = person.place;
  const where = place.town === scene.town ? "Elsewhere in" : "Far off in";
  return `${where} ${place.town.name}, ${person.character.name} was still at the ${place.name}.`;
}

function dialogue(state: BookState, scene: Scene): string {
  const { rng } = state;
  const speaker = rng.pick(scene.cast);
  const listener = rng.pick(scene.cast.filter((p) => p !== speaker));
  const said = rng.pick(SPEECH_VERBS).past;
  const tag = rng.uniform() < 0.5 ? `${said} ${speaker.character.name}` : `${speaker.character.name} ${said}`;
  scene.lastSubject = speaker;
  switch (rng.int(6)) {
    case 0: {
      const absent = state.people.filter((p) => p.introduced && p !== speaker && p !== listener);
      if (absent.length > 0) {
        const person = rng.pick(absent);
        return `"${person.character.name} is at the ${person.place.name} in ${person.place.town.name}," ${tag}.`;
      }
      return `"Have you seen my ${
        baseObject(speaker.possessions[0]?.name ?? "map")
      }?" asked ${speaker.character.name}.`;
    }
    case 1: {
      const l = listener.character;
      return `"You are the only ${l.profession} in ${l.home} I would trust with this," ${said} ${speaker.character.name} to ${l.name}.`;
    }
    case 2: {
      const possession = rng.pick(speaker.possessions);
      const town = rng.pick(state.towns.filter((t) => t !== scene.town));
      return `"I will take the ${baseObject(possession.name)} to ${town.name} before ${
        MONTHS[(state.month + 1) % 12]
      }," ${tag}.`;
    }
    case 3: {
      const [a, b] = distinct(rng, state.towns, 2);
      return `"It is ${milesBetween(state, a, b)} miles from ${a.name} to ${b.name}, and the road is ${
        rng.pick(PLACE_ADJECTIVES)
      }," ${tag}.`;
    }
    case 4: {
      const landmark = rng.pick(scene.town.landmarks);
      return `"The ${landmark.name} has stood here since ${landmark.built}," ${tag}.`;
    }
    default: {
      const possession = rng.pick(speaker.possessions);
      if (possession.from !== undefined) {
        return `"Keep the ${baseObject(possession.name)} safe; ${possession.from} gave it to me," ${tag}.`;
      }
      return `"We should leave ${rng.pick(TIMES_OF_DAY)}, before the ${rng.pick(WEATHER)} sets in," ${tag}.`;
    }
  }
}

function milesBetween(state: BookState, a: TownState, b: TownState): string {
  const i = state.towns.indexOf(a), j = state.towns.indexOf(b);
  const miles = state.distances.get(Math.min(i, j) * 16 + Math.max(i, j));
  if (miles === undefined) throw new Error(`no distance between ${a.name} and ${b.name}`);
  return String(miles);
}

// ---------------------------------------------------------------------------------------------
// Standalone sentences for haystacks: fresh people and places in every sentence.

function freshPerson(rng: Rng): { full: string; possessive: string } {
  const female = rng.uniform() < 0.5;
  const given = rng.pick(female ? FEMALE_NAMES : MALE_NAMES);
  return {
    full: `${given} ${rng.pick(SURNAME_HEADS)}${rng.pick(SURNAME_TAILS)}`,
    possessive: female ? "her" : "his",
  };
}

function freshTown(rng: Rng): string {
  return rng.pick(TOWN_HEADS) + rng.pick(TOWN_TAILS);
}

function standaloneSentence(rng: Rng): string {
  const person = freshPerson(rng);
  const town = freshTown(rng);
  const landmark = rng.pick(LANDMARKS);
  const year = 1700 + rng.int(219);
  switch (rng.int(10)) {
    case 0: {
      const trait = rng.pick(TRAITS);
      return `${person.full} was ${article(trait)} ${trait} ${
        rng.pick(PROFESSIONS)
      } who lived near the ${landmark} ` +
        `in ${town}.`;
    }
    case 1:
      return `On the ${ordinal(1 + rng.int(28))} of ${rng.pick(MONTHS)}, ${year}, ${person.full} ${
        rng.pick(MOVE_VERBS).past
      } from ${town} to ${freshTown(rng)}.`;
    case 2:
      return `The ${landmark} in ${town} was built in ${year} and could hold ${
        formatCount(20 * (2 + rng.int(150)))
      } people.`;
    case 3:
      return `${person.full} ${rng.pick(HANDLE_VERBS).past} ${person.possessive} ${
        rng.pick(OBJECT_DESCRIPTORS)
      } ${rng.pick(OBJECTS)} ${rng.pick(ADVERBS)} before leaving the ${landmark}.`;
    case 4:
      return `"The road to ${town} is ${rng.pick(PLACE_ADJECTIVES)} in ${rng.pick(MONTHS)}," ${
        rng.pick(SPEECH_VERBS).past
      } ${person.full}.`;
    case 5:
      return `Although the ${rng.pick(WEATHER)} had ${
        rng.pick(WEATHER_EASED)
      }, ${person.full} stayed at the ${landmark} ${rng.pick(TIMES_OF_DAY)}.`;
    case 6:
      return `It was ${(4 + rng.int(60)) / 2} miles from ${town} to ${freshTown(rng)} by the old road.`;
    case 7:
      return `Most people in ${town} remembered the ${rng.pick(SEASONS)} of ${year}, when the ${
        rng.pick(WEATHER)
      } lasted for ${2 + rng.int(40)} days.`;
    case 8: {
      const profession = rng.pick(PROFESSIONS);
      return `${person.full}, ${article(profession)} ${profession} from ${town}, sold ${
        formatCount(12 + rng.int(2400))
      } ${rng.pick(GOODS)} at the ${landmark}.`;
    }
    default:
      return `The ${landmark} in ${town} was ${rng.pick(PLACE_ADJECTIVES)}, and the air there smelled of ${
        rng.pick(SMELLS)
      }.`;
  }
}

// ---------------------------------------------------------------------------------------------
// Small text helpers.

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function article(word: string): string {
  return /^[aeiou]/i.test(word) ? "an" : "a";
}

/** The object noun without its descriptor: "well-worn pocket watch" → "pocket watch". */
function baseObject(possession: string): string {
  return possession.slice(possession.indexOf(" ") + 1);
}

const MINOR_WORDS = new Set(["a", "an", "the", "of", "in", "from", "at", "to"]);

function titleCase(s: string): string {
  return s.split(" ").map((w, i) => (i > 0 && MINOR_WORDS.has(w) ? w : capitalize(w))).join(" ");
}

function ordinal(n: number): string {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  const suffix = teen ? "th" : ["th", "st", "nd", "rd", "th", "th", "th", "th", "th", "th"][n % 10];
  return `${n}${suffix}`;
}

function formatCount(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

function romanNumeral(n: number): string {
  const table: [number, string][] = [
    [1000, "M"],
    [900, "CM"],
    [500, "D"],
    [400, "CD"],
    [100, "C"],
    [90, "XC"],
    [50, "L"],
    [40, "XL"],
    [10, "X"],
    [9, "IX"],
    [5, "V"],
    [4, "IV"],
    [1, "I"],
  ];
  let out = "";
  for (const [value, numeral] of table) {
    while (n >= value) {
      out += numeral;
      n -= value;
    }
  }
  return out;
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line.length > 0 && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line.length > 0 ? `${line} ${word}` : word;
    }
  }
  if (line.length > 0) lines.push(line);
  return lines;
}
