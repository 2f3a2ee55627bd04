/**
 * Confidence intervals for the numbers a report prints (benchmarks spec §1.10, §5.3, §6.4): every
 * accuracy or mean comes with its sample count and a 95 % interval, so two cells are compared with
 * their uncertainty in view.
 *
 * - Proportions: Wilson score interval (keeps its coverage near 0 and 1, where the Wald interval
 *   collapses to a point; RULER-style 0/1 scores pile up exactly there).
 * - Means: Student t (or normal) interval on the sample standard deviation.
 * - Anything else: a percentile bootstrap with a fixed resample count drawn from Philox, so the same
 *   values and seed give the same interval bit for bit.
 *
 * Quantiles are computed here (AS241 for the normal, the regularised incomplete beta for Student t)
 * because the project has no statistics dependency.
 */

import { z } from "zod";
import { Rng } from "../random/philox.ts";

/** A two-sided interval. */
export interface Interval {
  lo: number;
  hi: number;
}

/** What a report attaches to a metric: sample count, point estimate and interval. */
export interface MetricSummary {
  n: number;
  mean: number;
  lo: number;
  hi: number;
  /** How the interval was computed. */
  method: "wilson" | "t" | "normal" | "bootstrap";
  confidence: number;
}

const confidenceSchema = z.number().gt(0).lt(1);

/** Options of `summarizeMetric` and `bootstrapInterval`. */
export const intervalOptionsSchema = z.object({
  method: z.enum(["t", "normal", "bootstrap"]).default("t"),
  confidence: confidenceSchema.default(0.95),
  /** Bootstrap resamples; fixed so that the interval is reproducible. */
  resamples: z.number().int().min(100).max(1_000_000).default(2000),
  /** Bootstrap seed (Philox key) and stream. */
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
  stream: z.number().int().min(0).max(0xffffffff).default(0),
});

/** What callers pass as interval options (defaults filled in by the schema). */
export type IntervalOptions = z.input<typeof intervalOptionsSchema>;

function parseOptions(options: IntervalOptions, where: string): z.output<typeof intervalOptionsSchema> {
  const parsed = intervalOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join(".") || "options"}: ${i.message}`);
    throw new RangeError(`${where}: ${detail.join("; ")}`);
  }
  return parsed.data;
}

function checkConfidence(confidence: number, where: string): void {
  if (!confidenceSchema.safeParse(confidence).success) {
    throw new RangeError(`${where}: confidence ${confidence} must lie strictly between 0 and 1`);
  }
}

function checkValues(values: ArrayLike<number>, min: number, where: string): void {
  if (values.length < min) {
    throw new RangeError(
      `${where}: needs at least ${min} value${min === 1 ? "" : "s"}, got ${values.length}`,
    );
  }
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) throw new RangeError(`${where}: value ${i} is ${values[i]}, not finite`);
  }
}

// ---------------------------------------------------------------------------------------------
// Quantiles.

/**
 * Quantile of the standard normal: Wichura's AS241 (PPND16), accurate to about 1e-16.
 * @example normalQuantile(0.975) // 1.959963984540054
 */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`normalQuantile: p = ${p} must lie strictly between 0 and 1`);
  const q = p - 0.5;
  if (Math.abs(q) <= 0.425) {
    const r = 0.180625 - q * q;
    return q *
      (((((((r * 2509.0809287301226727 + 33430.575583588128105) * r + 67265.770927008700853) * r +
                        45921.953931549871457) * r + 13731.693765509461125) * r + 1971.5909503065514427) * r +
            133.14166789178437745) * r + 3.387132872796366608) /
      (((((((r * 5226.495278852545925 + 28729.085735721942674) * r + 39307.89580009271061) * r +
                        21213.794301586595867) * r + 5394.1960214247511077) * r + 687.1870074920579083) * r +
            42.313330701600911252) * r + 1);
  }
  let r = Math.sqrt(-Math.log(q < 0 ? p : 1 - p));
  let value: number;
  if (r <= 5) {
    r -= 1.6;
    value = (((((((r * 7.7454501427834140764e-4 + 0.0227238449892691845833) * r + 0.24178072517745061177) *
                        r + 1.27045825245236838258) * r + 3.64784832476320460504) * r +
              5.7694972214606914055) *
            r + 4.6303378461565452959) * r + 1.42343711074968357734) /
      (((((((r * 1.05075007164441684324e-9 + 5.475938084995344946e-4) * r + 0.0151986665636164571966) * r +
                        0.14810397642748007459) * r + 0.68976733498510000455) * r + 1.6763848301838038494) *
              r +
            2.05319162663775882187) * r + 1);
  } else {
    r -= 5;
    value = (((((((r * 2.01033439929228813265e-7 + 2.71155556874348757815e-5) * r +
                          0.0012426609473880784386) * r + 0.026532189526576123093) * r +
                  0.29656057182850489123) * r + 1.7848265399172913358) * r + 5.4637849111641143699) * r +
      6.6579046435011037772) /
      (((((((r * 2.04426310338993978564e-15 + 1.4215117583164458887e-7) * r + 1.8463183175100546818e-5) *
                          r + 7.868691311456132591e-4) * r + 0.0148753612908506148525) * r +
                0.13692988092273580531) * r + 0.59983220655588793769) * r + 1);
  }
  return q < 0 ? -value : value;
}

const LANCZOS = [
  0.99999999999980993,
  676.5203681218851,
  -1259.1392167224028,
  771.32342877765313,
  -176.61502916214059,
  12.507343278686905,
  -0.13857109526572012,
  9.9843695780195716e-6,
  1.5056327351493116e-7,
];

/** log Γ(x) for x > 0 (Lanczos, g = 7; about 15 significant digits). */
function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const shifted = x - 1;
  let sum = LANCZOS[0];
  for (let i = 1; i < LANCZOS.length; i++) sum += LANCZOS[i] / (shifted + i);
  const t = shifted + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (shifted + 0.5) * Math.log(t) - t + Math.log(sum);
}

// Continued fraction of the incomplete beta (modified Lentz), converging fast for x < (a+1)/(a+b+2).
function betaContinuedFraction(a: number, b: number, x: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 10_000; m++) {
    const m2 = 2 * m;
    const even = (m * (b - m) * x) / ((a - 1 + m2) * (a + m2));
    d = 1 + even * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + even / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    const odd = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + 1 + m2));
    d = 1 + odd * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + odd / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const step = d * c;
    h *= step;
    if (Math.abs(step - 1) < 1e-16) return h;
  }
  throw new Error(`incomplete beta (a = ${a}, b = ${b}, x = ${x}) did not converge`);
}

/** Regularised incomplete beta I_x(a, b). */
function regularizedBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(
    logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log1p(-x),
  );
  return x < (a + 1) / (a + b + 2)
    ? (front * betaContinuedFraction(a, b, x)) / a
    : 1 - (front * betaContinuedFraction(b, a, 1 - x)) / b;
}

function checkDegrees(df: number, where: string): void {
  if (!(df > 0) || !Number.isFinite(df)) {
    throw new RangeError(`${where}: degrees of freedom ${df} must be a finite number > 0`);
  }
}

/**
 * P(T ≤ t) for Student's t with `df` degrees of freedom.
 * @example studentTCdf(2.262157, 9) // ≈ 0.975
 */
export function studentTCdf(t: number, df: number): number {
  checkDegrees(df, "studentTCdf");
  if (Number.isNaN(t)) throw new RangeError("studentTCdf: t is NaN");
  const tail = 0.5 * regularizedBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/**
 * Quantile of Student's t with `df` degrees of freedom, by bisection on the CDF to double precision.
 * @example studentTQuantile(0.975, 9) // 2.2621571627409915
 */
export function studentTQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`studentTQuantile: p = ${p} must lie strictly between 0 and 1`);
  checkDegrees(df, "studentTQuantile");
  if (p === 0.5) return 0;
  // Symmetric: solve the upper half and mirror.
  const upper = p > 0.5 ? p : 1 - p;
  let hi = 1;
  while (studentTCdf(hi, df) < upper) hi *= 2;
  let lo = hi / 2 > 1 ? hi / 2 : 0;
  for (let i = 0; i < 200 && hi - lo > 1e-15 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (studentTCdf(mid, df) < upper) lo = mid;
    else hi = mid;
  }
  const t = (lo + hi) / 2;
  return p > 0.5 ? t : -t;
}

// ---------------------------------------------------------------------------------------------
// Intervals.

/**
 * Wilson score interval for `successes` out of `n` trials at the given confidence.
 * @example wilsonInterval(8, 10) // { lo: 0.4902, hi: 0.9433 } (rounded)
 */
export function wilsonInterval(successes: number, n: number, confidence = 0.95): Interval {
  if (!Number.isInteger(n) || n <= 0) throw new RangeError(`wilsonInterval: n = ${n} must be an integer ≥ 1`);
  if (!Number.isInteger(successes) || successes < 0 || successes > n) {
    throw new RangeError(`wilsonInterval: successes = ${successes} must be an integer in [0, ${n}]`);
  }
  checkConfidence(confidence, "wilsonInterval");
  const z = normalQuantile(0.5 + confidence / 2);
  const p = successes / n;
  const z2n = (z * z) / n;
  const center = (p + z2n / 2) / (1 + z2n);
  const half = (z / (1 + z2n)) * Math.sqrt(p * (1 - p) / n + z2n / (4 * n));
  // At 0 or n successes one end is exactly 0 or 1; clamping removes the rounding residue.
  return {
    lo: successes === 0 ? 0 : Math.max(0, center - half),
    hi: successes === n ? 1 : Math.min(1, center + half),
  };
}

function meanAndDeviation(values: ArrayLike<number>): { mean: number; sd: number } {
  let mean = 0;
  for (let i = 0; i < values.length; i++) mean += values[i];
  mean /= values.length;
  let squares = 0;
  for (let i = 0; i < values.length; i++) squares += (values[i] - mean) ** 2;
  return { mean, sd: Math.sqrt(squares / (values.length - 1)) };
}

/**
 * Interval for the mean of `values`: mean ± q · s/√n with q the Student t quantile on n − 1 degrees
 * of freedom (or the normal quantile); s is the sample standard deviation (n − 1 denominator).
 * @example meanInterval([1, 2, 3, 4, 5]) // { n: 5, mean: 3, lo: 1.0367, hi: 4.9633 } (rounded)
 */
export function meanInterval(
  values: ArrayLike<number>,
  options: { confidence?: number; method?: "t" | "normal" } = {},
): { n: number; mean: number; lo: number; hi: number } {
  const confidence = options.confidence ?? 0.95;
  const method = options.method ?? "t";
  checkConfidence(confidence, "meanInterval");
  checkValues(values, 2, `meanInterval (${method})`);
  const n = values.length;
  const { mean, sd } = meanAndDeviation(values);
  const upper = 0.5 + confidence / 2;
  const quantile = method === "t" ? studentTQuantile(upper, n - 1) : normalQuantile(upper);
  const half = (quantile * sd) / Math.sqrt(n);
  return { n, mean, lo: mean - half, hi: mean + half };
}

/** Linear-interpolation quantile of sorted data (numpy's default, Hyndman–Fan type 7). */
function sortedQuantile(sorted: Float64Array, p: number): number {
  const position = p * (sorted.length - 1);
  const below = Math.floor(position);
  const above = Math.min(sorted.length - 1, below + 1);
  return sorted[below] + (position - below) * (sorted[above] - sorted[below]);
}

/**
 * Percentile bootstrap interval of `statistic` over `values`: `resamples` resamples of size n drawn
 * with replacement by `Rng(seed, stream)`, the interval being the (1 ∓ confidence)/2 quantiles of the
 * resampled statistics. Resample r draws its n indices in order, so the result depends only on
 * (values, statistic, seed, stream, resamples).
 * @example bootstrapInterval([3, 1, 4, 1, 5], (xs) => Math.max(...xs), { seed: 7 })
 */
export function bootstrapInterval(
  values: ArrayLike<number>,
  statistic: (sample: Float64Array) => number,
  options: IntervalOptions = {},
): { n: number; estimate: number; lo: number; hi: number; resamples: number } {
  const o = parseOptions(options, "bootstrapInterval");
  checkValues(values, 1, "bootstrapInterval");
  const n = values.length;
  const data = Float64Array.from(values as ArrayLike<number>);
  const estimate = statistic(data.slice());
  const rng = new Rng(o.seed, o.stream);
  const stats = new Float64Array(o.resamples);
  const sample = new Float64Array(n);
  for (let r = 0; r < o.resamples; r++) {
    for (let i = 0; i < n; i++) sample[i] = data[rng.int(n)];
    const value = statistic(sample);
    if (Number.isNaN(value)) throw new RangeError(`bootstrapInterval: the statistic is NaN on resample ${r}`);
    stats[r] = value;
  }
  stats.sort();
  const alpha = 1 - o.confidence;
  return {
    n,
    estimate,
    lo: sortedQuantile(stats, alpha / 2),
    hi: sortedQuantile(stats, 1 - alpha / 2),
    resamples: o.resamples,
  };
}

/**
 * `{n, mean, lo, hi}` of a metric's per-sample values, to spread into a report entry.
 * @example const accuracy = { name: "exact_match", ...summarizeMetric(scores, { method: "bootstrap", seed: 3 }) };
 */
export function summarizeMetric(values: ArrayLike<number>, options: IntervalOptions = {}): MetricSummary {
  const o = parseOptions(options, "summarizeMetric");
  if (o.method === "bootstrap") {
    const mean = (xs: Float64Array) => xs.reduce((sum, x) => sum + x, 0) / xs.length;
    const { n, estimate, lo, hi } = bootstrapInterval(values, mean, o);
    return { n, mean: estimate, lo, hi, method: "bootstrap", confidence: o.confidence };
  }
  const { n, mean, lo, hi } = meanInterval(values, { confidence: o.confidence, method: o.method });
  return { n, mean, lo, hi, method: o.method, confidence: o.confidence };
}

/**
 * `{n, mean, lo, hi}` of a proportion (`successes` of `n`) with its Wilson interval.
 * @example summarizeProportion(8, 10) // { n: 10, mean: 0.8, lo: 0.4902, hi: 0.9433, method: "wilson", … }
 */
export function summarizeProportion(successes: number, n: number, confidence = 0.95): MetricSummary {
  const { lo, hi } = wilsonInterval(successes, n, confidence);
  return { n, mean: successes / n, lo, hi, method: "wilson", confidence };
}
