/**
 * Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
 * counter-based generator. Output depends only on (key, counter), so element i of a tensor gets
 * the same number whatever order or device computes it. `kernels/rng.wgsl` is the bit-exact twin.
 *
 * Conventions shared with the WGSL side:
 * - key = the seed's low and high 32 bits;
 * - counter = (block index low, block index high, stream, 0), where block = element index >> 2 and
 *   the element takes word (index & 3) of the block's four outputs;
 * - uniform f32 in [0, 1) = (word >> 8) · 2⁻²⁴ (exact in f32 and f64);
 * - normal = Box–Muller on the two uniforms of a word pair, u1 shifted into (0, 1].
 */

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

/** High 32 bits of the 64-bit product of two u32s, computed exactly with 16-bit halves. */
export function mulhi32(a: number, b: number): number {
  const al = a & 0xffff, ah = a >>> 16, bl = b & 0xffff, bh = b >>> 16;
  const lh = al * bh, hl = ah * bl;
  const mid = ((al * bl) >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (ah * bh + (lh >>> 16) + (hl >>> 16) + Math.floor(mid / 65536)) >>> 0;
}

/** Philox4x32-10 of a counter under a key; writes four u32 words into `out`. */
export function philox4x32(
  c0: number,
  c1: number,
  c2: number,
  c3: number,
  k0: number,
  k1: number,
  out: Uint32Array = new Uint32Array(4),
): Uint32Array {
  for (let round = 0; round < 10; round++) {
    const hi0 = mulhi32(M0, c0), lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi32(M1, c2), lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
  return out;
}

/** Splits a seed (a safe integer ≥ 0) into the two key words. */
export function seedKey(seed: number): [number, number] {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`seed ${seed} must be a safe integer ≥ 0`);
  }
  return [seed >>> 0, Math.floor(seed / 4294967296) >>> 0];
}

/** u32 word `index` of stream `stream` under `seed`. */
export function randomU32(seed: number, stream: number, index: number): number {
  const [k0, k1] = seedKey(seed);
  const block = Math.floor(index / 4);
  const words = philox4x32(block >>> 0, Math.floor(block / 4294967296) >>> 0, stream >>> 0, 0, k0, k1);
  return words[index & 3];
}

const TWO_POW_M24 = 1 / 16777216;

/** Uniform in [0, 1) from one word; exact in f32. */
export function wordToUniform(word: number): number {
  return (word >>> 8) * TWO_POW_M24;
}

/**
 * Fills `out` with uniforms in [lo, hi) for elements `start … start + out.length − 1` of a stream.
 * @example fillUniform(new Float32Array(10), 42, 0);
 */
export function fillUniform<T extends Float32Array | Float64Array>(
  out: T,
  seed: number,
  stream: number,
  lo = 0,
  hi = 1,
  start = 0,
): T {
  const [k0, k1] = seedKey(seed);
  const words = new Uint32Array(4);
  let cached = -1;
  for (let i = 0; i < out.length; i++) {
    const index = start + i;
    const block = Math.floor(index / 4);
    if (block !== cached) {
      philox4x32(block >>> 0, Math.floor(block / 4294967296) >>> 0, stream >>> 0, 0, k0, k1, words);
      cached = block;
    }
    out[i] = lo + (hi - lo) * wordToUniform(words[index & 3]);
  }
  return out;
}

/**
 * Fills `out` with normals (Box–Muller; element i pairs words 2⌊i/2⌋ and 2⌊i/2⌋+1 of its block, even
 * elements take the cosine, odd the sine).
 */
export function fillNormal<T extends Float32Array | Float64Array>(
  out: T,
  seed: number,
  stream: number,
  mean = 0,
  std = 1,
  start = 0,
): T {
  const [k0, k1] = seedKey(seed);
  const words = new Uint32Array(4);
  let cached = -1;
  for (let i = 0; i < out.length; i++) {
    const index = start + i;
    const block = Math.floor(index / 4);
    if (block !== cached) {
      philox4x32(block >>> 0, Math.floor(block / 4294967296) >>> 0, stream >>> 0, 0, k0, k1, words);
      cached = block;
    }
    const pair = index & 2;
    out[i] = mean + std * boxMuller(words[pair], words[pair + 1], (index & 1) === 1);
  }
  return out;
}

/** One Box–Muller normal from two words; u1 is shifted into (0, 1] so log never sees 0. */
export function boxMuller(w0: number, w1: number, sine: boolean): number {
  const u1 = ((w0 >>> 8) + 1) * TWO_POW_M24;
  const u2 = (w1 >>> 8) * TWO_POW_M24;
  const r = Math.sqrt(-2 * Math.log(u1));
  const theta = 2 * Math.PI * u2;
  return r * (sine ? Math.sin(theta) : Math.cos(theta));
}

/**
 * A sequential generator for host-side choices (data order, sampling, shuffles), itself counter-based:
 * draw n of stream s is word n of (seed, s), so a generator can be re-created at any position.
 * @example const rng = new Rng(7, 3); rng.int(10); rng.shuffle([1, 2, 3]);
 */
export class Rng {
  #index = 0;
  readonly #key: [number, number];
  #words = new Uint32Array(4);
  #block = -1;

  constructor(readonly seed: number, readonly stream = 0, start = 0) {
    this.#key = seedKey(seed);
    this.#index = start;
  }

  /** How many words have been drawn. */
  get position(): number {
    return this.#index;
  }

  u32(): number {
    const index = this.#index++;
    const block = Math.floor(index / 4);
    if (block !== this.#block) {
      philox4x32(
        block >>> 0,
        Math.floor(block / 4294967296) >>> 0,
        this.stream >>> 0,
        0,
        ...this.#key,
        this.#words,
      );
      this.#block = block;
    }
    return this.#words[index & 3];
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return wordToUniform(this.u32());
  }

  /** Standard normal (uses two words). */
  normal(): number {
    return boxMuller(this.u32(), this.u32(), false);
  }

  /** Uniform integer in [0, n) without modulo bias (rejection on the top of the range). */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > 0x100000000) {
      throw new RangeError(`Rng.int(${n}): need 1 ≤ n ≤ 2³²`);
    }
    const limit = 0x100000000 - (0x100000000 % n);
    for (;;) {
      const w = this.u32();
      if (w < limit) return w % n;
    }
  }

  /** Fisher–Yates shuffle in place. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [items[i], items[j]] = [items[j], items[i]];
    }
    return items;
  }

  /** One element chosen uniformly. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("Rng.pick of an empty list");
    return items[this.int(items.length)];
  }
}
