/**
 * RoPE frequencies and the cos/sin tables the `rope` kernels read, for plain RoPE and the three
 * context-extension scalings of the methods spec §3.4 (HF transformers' `rope_init_fn`s):
 * - linear (position interpolation): inv_freq_i = base^(−2i/D) / f;
 * - dynamic NTK: base' = base·((f·N/L_orig) − (f − 1))^(D/(D−2)) when the sequence length N > L_orig;
 * - YaRN: a ramp between interpolated (θ/f) and original frequencies over the correction range of
 *   β_fast..β_slow rotations, and cos/sin multiplied by the attention factor m = 0.1·ln f + 1.
 *
 * Everything here is float64 on the host. The tables are rounded to f32 only at the end: an f32 angle
 * pos·inv_freq has an ulp of 2⁻⁹ ≈ 0.002 rad at pos ≈ 32K, so the kernels never form the angle.
 */
import { z } from "zod";

/** The scaling of one model's rotary embedding; `base` is the model's rope theta. */
export const ropeScalingConfigSchema = z.object({
  type: z.enum(["none", "linear", "dynamic", "yarn"]).default("none"),
  factor: z.number().min(1).default(1),
  /** The context length L_orig the base model was trained at; needed by dynamic and yarn. */
  originalMaxPositions: z.number().int().positive().optional(),
  base: z.number().gt(1).default(10000),
  betaFast: z.number().positive().default(32),
  betaSlow: z.number().positive().default(1),
}).strict().superRefine((c, ctx) => {
  if ((c.type === "dynamic" || c.type === "yarn") && c.originalMaxPositions === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["originalMaxPositions"],
      message: `RoPE scaling "${c.type}" needs originalMaxPositions (the base model's context length)`,
    });
  }
  if (c.type === "yarn" && !(c.betaFast > c.betaSlow)) {
    ctx.addIssue({
      code: "custom",
      path: ["betaFast"],
      message: `YaRN needs betaFast > betaSlow, got ${c.betaFast} and ${c.betaSlow}`,
    });
  }
});

/** A validated RoPE scaling configuration. */
export type RopeScalingConfig = z.infer<typeof ropeScalingConfigSchema>;
/** What a caller may write; defaults are filled in by the schema. */
export type RopeScalingInput = z.input<typeof ropeScalingConfigSchema>;

/** Frequencies of the D/2 rotation pairs and the factor cos and sin are multiplied by. */
export interface RopeFrequencies {
  /** (D/2,) radians per position, float64. */
  invFreq: Float64Array;
  /** YaRN's m = 0.1·ln f + 1 (f > 1); 1 for the other scalings. */
  attentionFactor: number;
  /** The base the frequencies were computed from (dynamic NTK changes it with N). */
  base: number;
}

function checkHeadSize(D: number): void {
  if (!Number.isInteger(D) || D < 2 || D % 2 !== 0) {
    throw new RangeError(`RoPE head size D = ${D} must be an even integer ≥ 2 (pairs (i, i + D/2))`);
  }
}

function plainInvFreq(D: number, base: number): Float64Array {
  const invFreq = new Float64Array(D / 2);
  for (let i = 0; i < D / 2; i++) invFreq[i] = Math.pow(base, -(2 * i) / D);
  return invFreq;
}

/**
 * YaRN's correction dimension: the pair index whose wavelength fits `rotations` times into L_orig,
 * dim(R) = D·ln(L_orig/(2πR)) / (2·ln base).
 */
export function yarnCorrectionDim(rotations: number, D: number, base: number, originalMax: number): number {
  return (D * Math.log(originalMax / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
}

/**
 * inv_freq and the attention factor of a scaling, for head size D; `seqLen` (N) matters only to
 * dynamic NTK, which is recomputed for the current sequence length.
 * @example const { invFreq } = ropeFrequencies({ type: "linear", factor: 4 }, 64);
 */
export function ropeFrequencies(config: RopeScalingInput, D: number, seqLen = 0): RopeFrequencies {
  const c = ropeScalingConfigSchema.parse(config);
  checkHeadSize(D);
  const f = c.factor;
  switch (c.type) {
    case "none":
      return { invFreq: plainInvFreq(D, c.base), attentionFactor: 1, base: c.base };
    case "linear":
      return { invFreq: plainInvFreq(D, c.base).map((x) => x / f), attentionFactor: 1, base: c.base };
    case "dynamic": {
      const L = c.originalMaxPositions!;
      // With D = 2 the only pair has exponent 0, so the base is irrelevant (and D/(D−2) undefined).
      const base = seqLen > L && D > 2 ? c.base * Math.pow((f * seqLen) / L - (f - 1), D / (D - 2)) : c.base;
      return { invFreq: plainInvFreq(D, base), attentionFactor: 1, base };
    }
    case "yarn": {
      const L = c.originalMaxPositions!;
      const low = Math.max(Math.floor(yarnCorrectionDim(c.betaFast, D, c.base, L)), 0);
      let high = Math.min(Math.ceil(yarnCorrectionDim(c.betaSlow, D, c.base, L)), D - 1);
      if (high === low) high += 0.001; // HF's guard against a zero-width ramp
      const invFreq = plainInvFreq(D, c.base);
      for (let i = 0; i < D / 2; i++) {
        const gamma = Math.min(Math.max((i - low) / (high - low), 0), 1);
        invFreq[i] = (invFreq[i] / f) * gamma + invFreq[i] * (1 - gamma);
      }
      const attentionFactor = f > 1 ? 0.1 * Math.log(f) + 1 : 1;
      return { invFreq, attentionFactor, base: c.base };
    }
  }
}

/** cos and sin tables for positions 0 … P−1, each (P, D/2) f32, already multiplied by m. */
export interface RopeTables {
  cos: Float32Array;
  sin: Float32Array;
  P: number;
  D: number;
}

/**
 * The tables the `rope` kernels read: entry (p, i) = m·cos(p·inv_freq_i) and m·sin(p·inv_freq_i),
 * with the angle and its trigonometry in float64.
 * @example const { cos, sin } = ropeTables({ type: "yarn", factor: 8, originalMaxPositions: 4096 }, 64, 32768);
 */
export function ropeTables(config: RopeScalingInput, D: number, P: number, seqLen = P): RopeTables {
  if (!Number.isInteger(P) || P < 1) throw new RangeError(`RoPE tables need P ≥ 1 positions, got ${P}`);
  const { invFreq, attentionFactor } = ropeFrequencies(config, D, seqLen);
  const half = D / 2;
  const cos = new Float32Array(P * half);
  const sin = new Float32Array(P * half);
  for (let pos = 0; pos < P; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i];
      cos[pos * half + i] = attentionFactor * Math.cos(angle);
      sin[pos * half + i] = attentionFactor * Math.sin(angle);
    }
  }
  return { cos, sin, P, D };
}
