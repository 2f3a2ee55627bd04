/**
 * Content hashes for datasets, samples and configs: sha256 over bytes, over UTF-8 text, and over
 * canonical JSON (object keys sorted by UTF-16 code units, no whitespace, numbers in ECMAScript's
 * shortest round-trip form — the RFC 8785 rules for the values JSON can hold), so two objects that
 * differ only in key order hash the same.
 */

import { createHash } from "node:crypto";

/** Lowercase hex sha256 of bytes, or of a string's UTF-8 encoding. */
export function sha256(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * Canonical JSON text of a value. Refuses what JSON cannot state exactly (undefined, functions,
 * symbols, bigints, NaN and ±Infinity, class instances other than arrays) with the offending path,
 * because silently dropping or stringifying them would let two different configs share a hash.
 * @example canonicalJson({ b: 1, a: [true, null] }) === '{"a":[true,null],"b":1}'
 */
export function canonicalJson(value: unknown): string {
  return canonicalize(value, "$");
}

function canonicalize(value: unknown, path: string): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "string":
      return JSON.stringify(value);
    case "number":
      if (!Number.isFinite(value)) {
        throw new TypeError(`canonicalJson: ${path} is ${value}; JSON has no non-finite numbers`);
      }
      return JSON.stringify(value);
    case "object": {
      if (Array.isArray(value)) {
        return `[${value.map((item, i) => canonicalize(item, `${path}[${i}]`)).join(",")}]`;
      }
      const prototype = Object.getPrototypeOf(value);
      if (prototype !== Object.prototype && prototype !== null) {
        const kind = (value as object).constructor?.name ?? "object";
        throw new TypeError(`canonicalJson: ${path} is a ${kind}; expected a plain object, array or scalar`);
      }
      const record = value as Record<string, unknown>;
      // Default sort compares UTF-16 code units, which is the order RFC 8785 prescribes.
      const keys = Object.keys(record).sort();
      const members = keys.map((key) =>
        `${JSON.stringify(key)}:${canonicalize(record[key], `${path}.${key}`)}`
      );
      return `{${members.join(",")}}`;
    }
    default:
      throw new TypeError(`canonicalJson: ${path} is ${typeof value}; JSON cannot represent it`);
  }
}

/**
 * sha256 of a value's canonical JSON.
 * @example hashJson({ a: 1, b: 2 }) === hashJson({ b: 2, a: 1 })
 */
export function hashJson(value: unknown): string {
  return sha256(canonicalJson(value));
}
