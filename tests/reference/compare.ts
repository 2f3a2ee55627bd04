/**
 * The one comparison helper every kernel test uses: |gpu − ref| ≤ atol + rtol·|ref| elementwise,
 * with NaN (the poison value) always a mismatch. On failure the message lists the first mismatches,
 * the maximum absolute and relative errors and the tolerances.
 */

/** Tolerances of one comparison; each test writes its own. */
export interface Tolerance {
  atol: number;
  rtol: number;
}

/** Summary of a comparison, returned so tests can also print their evidence. */
export interface CompareReport {
  n: number;
  maxAbs: number;
  maxRel: number;
  mismatches: number;
}

export function compare(
  name: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: Tolerance,
  shape?: readonly number[],
): CompareReport {
  if (got.length !== want.length) {
    throw new Error(`${name}: got ${got.length} values, reference has ${want.length}`);
  }
  let maxAbs = 0, maxRel = 0, mismatches = 0;
  const first: string[] = [];
  for (let i = 0; i < got.length; i++) {
    const g = got[i], w = want[i];
    const err = Math.abs(g - w);
    const bad = !(err <= tol.atol + tol.rtol * Math.abs(w)); // NaN fails here
    if (Number.isFinite(err)) {
      maxAbs = Math.max(maxAbs, err);
      if (w !== 0) maxRel = Math.max(maxRel, err / Math.abs(w));
    } else if (bad) maxAbs = Infinity;
    if (bad) {
      mismatches++;
      if (first.length < 6) {
        first.push(`  [${indexText(i, shape)}] gpu ${g} ref ${w} |err| ${err.toExponential(3)}`);
      }
    }
  }
  const report = { n: got.length, maxAbs, maxRel, mismatches };
  if (mismatches > 0) {
    throw new Error(
      `${name}: ${mismatches} of ${got.length} values outside atol ${tol.atol} + rtol ${tol.rtol}·|ref|; ` +
        `max |err| ${maxAbs.toExponential(3)}, max rel ${maxRel.toExponential(3)}\n${first.join("\n")}`,
    );
  }
  return report;
}

function indexText(i: number, shape?: readonly number[]): string {
  if (!shape || shape.length <= 1) return String(i);
  const idx: number[] = [];
  let rest = i;
  for (let d = shape.length - 1; d >= 0; d--) {
    idx.unshift(rest % shape[d]);
    rest = Math.floor(rest / shape[d]);
  }
  return idx.join(", ");
}

/** Bitwise equality of two float arrays (used by determinism tests); reports the first difference. */
export function assertBitwiseEqual(name: string, a: Float32Array, b: Float32Array): void {
  if (a.length !== b.length) throw new Error(`${name}: lengths ${a.length} and ${b.length} differ`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) {
      throw new Error(
        `${name}: element ${i} differs: ${a[i]} (0x${ua[i].toString(16)}) vs ${b[i]} (0x${
          ub[i].toString(16)
        })`,
      );
    }
  }
}
