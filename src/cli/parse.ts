/**
 * Parsers for command-line values. Each throws commander's `InvalidArgumentError`, which commander
 * prints with the option's name and the value given ("option '--samples <n>' argument 'x' is
 * invalid. …"), so no error reaches the user without the flag it came from.
 */

import { InvalidArgumentError } from "commander";

/** A whole number in [min, Number.MAX_SAFE_INTEGER]. */
export function parseWholeNumber(text: string, min: number): number {
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed)) throw new InvalidArgumentError(`expected a whole number ≥ ${min}`);
  const value = Number(trimmed);
  if (!Number.isSafeInteger(value)) throw new InvalidArgumentError(`${trimmed} is too large`);
  if (value < min) throw new InvalidArgumentError(`expected a whole number ≥ ${min}`);
  return value;
}

/** A finite number ≥ `min` (ratios and thresholds). */
export function parseNumber(text: string, min: number): number {
  const value = Number(text.trim());
  if (text.trim() === "" || !Number.isFinite(value) || value < min) {
    throw new InvalidArgumentError(`expected a number ≥ ${min}`);
  }
  return value;
}

/** Comma-separated items, blanks dropped; an empty list is an error. */
export function parseList(text: string): string[] {
  const items = text.split(",").map((item) => item.trim()).filter((item) => item.length > 0);
  if (items.length === 0) throw new InvalidArgumentError("expected a comma-separated list");
  return items;
}

/**
 * Names from a fixed set, comma-separated, in the set's order without repeats; "all" means every name.
 * @example parseNames("vt,niah_single_1", RULER_TASK_NAMES, "RULER task")
 */
export function parseNames<T extends string>(text: string, known: readonly T[], what: string): T[] {
  const items = parseList(text);
  if (items.length === 1 && items[0] === "all") return [...known];
  const unknown = items.filter((item) => !(known as readonly string[]).includes(item));
  if (unknown.length > 0) {
    const quoted = unknown.map((name) => `"${name}"`).join(", ");
    throw new InvalidArgumentError(`unknown ${what} ${quoted}; known: ${known.join(", ")} (or "all")`);
  }
  return known.filter((name) => items.includes(name));
}

/**
 * Token lengths, comma-separated, as whole numbers or with a suffix: `k` multiplies by `kilo` (1024 for
 * RULER's powers of two, 1000 for BABILong's names), `M` by `kilo²`. Sorted ascending, duplicates
 * refused.
 * @example parseLengths("4k,8192", 1024, 1) // [4096, 8192]
 */
export function parseLengths(text: string, kilo: 1000 | 1024, min: number): number[] {
  const lengths = parseList(text).map((item) => {
    const match = /^(\d+)([kKmM]?)$/.exec(item);
    if (match === null) {
      throw new InvalidArgumentError(`"${item}" is not a length; expected a whole number like 4096 or 4k`);
    }
    const scale = match[2] === "" ? 1 : /[kK]/.test(match[2]) ? kilo : kilo * kilo;
    const value = Number(match[1]) * scale;
    if (!Number.isSafeInteger(value)) throw new InvalidArgumentError(`"${item}" is too large`);
    if (value < min) throw new InvalidArgumentError(`"${item}" is below ${min}`);
    return value;
  });
  const sorted = [...lengths].sort((a, b) => a - b);
  const repeated = sorted.find((value, i) => i > 0 && sorted[i - 1] === value);
  if (repeated !== undefined) throw new InvalidArgumentError(`${repeated} is given twice`);
  return sorted;
}
