/**
 * PiSSA, principal singular values and vectors adaptation (Meng et al. 2024), as HF PEFT's
 * `init_lora_weights="pissa"` / `"pissa_niter_K"` (methods spec §1.3): LoRA whose A and B start as
 * the top-r singular triplets of each adapted W0 (out × in), while the base weight is replaced by the
 * residual, so the model is unchanged at step 0:
 *
 *   W0 ≈ U_r·diag(S_r)·V_rᵀ,  S̃ = S_r/s,  A = diag(√S̃)·V_rᵀ,  B = U_r·diag(√S̃),  W_res = W0 − s·B·A
 *
 * The SVD runs once on the host in float64: `"pissa"` takes the full thin SVD (one-sided Jacobi,
 * cyclic order, deterministic); `"pissa_niter_K"` takes torch.svd_lowrank's randomized subspace
 * iteration (Halko et al. 2009, Algorithm 5) with q = r columns as PEFT calls it, K power iterations,
 * and a Philox Gaussian test matrix drawn from (seed, matrix index). A and B are rounded to f32, then
 * W_res = W0 − s·B·A is formed in float64 from those f32 values and rounded once, so W_res + s·B·A
 * is as close to W0 as f32 storage allows (PEFT forms it in fp32). Each singular pair's sign is fixed
 * so the largest-magnitude entry of v is positive, which makes both routes' factors comparable.
 *
 * `prepare` returns a NEW ModelWeights holding the residual (the base it was given is never written);
 * training, the forward and the trainable set are LoRA's (lora.ts hooks on A and B only).
 *
 * [FLAG] Checkpoint compatibility: the adapter is relative to the residual base W_res, not to W0. An
 * adapter saved from this run only fits the residual weights. `pissaToLora` converts it, as PEFT's
 * `path_initial_model_for_weight_conversion` does, into a rank-2r LoRA relative to the original W0:
 * A₂ = [A; A₀], B₂ = [B, −B₀], so W0 + s·B₂·A₂ = W_res + s·B·A.
 *
 * The full SVD costs O(min(out, in)²·max(out, in)) per Jacobi sweep, about ten sweeps: measured on a
 * shared 2-core machine, 90 ms for a 128 × 128 Gaussian matrix and 5.6 s for 384 × 384, growing as n³
 * (minutes per 768-wide matrix). Use `"pissa_niter_K"` (75 ms for 384 × 384 at r = 8, K = 4) for
 * models wider than a few hundred.
 */
import { z } from "zod";
import { tensorFrom } from "../gpu/tensor.ts";
import { NO_BASE } from "../model/adapter.ts";
import type { ModelConfig } from "../model/config.ts";
import { buildTable } from "../model/params.ts";
import { createWeights } from "../model/weights.ts";
import { fillNormal } from "../random/philox.ts";
import {
  type LoraConfig,
  loraConfigSchema,
  loraHooks,
  loraMatrices,
  loraParameterCount,
  loraScale,
  loraSpecs,
} from "./lora.ts";
import type { Method, PreparedMethod } from "./method.ts";

/** PiSSA's configuration: LoRA's, with `init` naming the SVD route. */
export const pissaConfigSchema = loraConfigSchema.extend({
  /** "pissa": full SVD; "pissa_niter_K": randomized subspace iteration with K power iterations. */
  init: z.string().regex(/^pissa(_niter_\d+)?$/, 'expected "pissa" or "pissa_niter_K" (K an integer ≥ 0)')
    .default("pissa"),
});
export type PissaConfig = z.infer<typeof pissaConfigSchema>;

// LoRA's matrix list and count read only r, α, rsLoRA, targets and layers.
const asLora = (config: PissaConfig): LoraConfig => ({ ...config, init: "kaiming" });

/** Σ r·(in + out) over the adapted matrices, as LoRA (methods spec §10). */
export function pissaParameterCount(model: ModelConfig, config: PissaConfig): number {
  return loraParameterCount(model, asLora(config));
}

/**
 * A thin SVD W ≈ U·diag(s)·Vᵀ of a (rows × cols) matrix with k columns: s descending, U (rows × k)
 * and V (cols × k) row-major.
 */
export interface Svd {
  rows: number;
  cols: number;
  k: number;
  s: Float64Array;
  u: Float64Array;
  v: Float64Array;
}

const MAX_SWEEPS = 60;

/**
 * The full thin SVD (k = min(rows, cols)) of a row-major matrix by one-sided Jacobi in float64
 * (Hestenes): orthogonalise the columns of the tall orientation by plane rotations in cyclic order
 * until every pair is orthogonal to √m·ε, then read σ as the column norms. Deterministic; singular
 * pairs sorted by σ descending (ties by index) with the largest-magnitude entry of each v positive.
 * @example const { s, u, v } = jacobiSvd(w, 64, 48);
 */
export function jacobiSvd(w: ArrayLike<number>, rows: number, cols: number): Svd {
  if (
    !Number.isInteger(rows) || !Number.isInteger(cols) || rows < 1 || cols < 1 || w.length !== rows * cols
  ) {
    throw new RangeError(`jacobiSvd: ${w.length} values do not form a ${rows} × ${cols} matrix`);
  }
  const tall = rows >= cols;
  // X (m × n, m ≥ n) = W or Wᵀ, column c stored at c·m; Vx (n × n) accumulates the rotations.
  const m = tall ? rows : cols, n = tall ? cols : rows;
  const x = new Float64Array(m * n);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) x[tall ? j * m + i : i * m + j] = w[i * cols + j];
  }
  const vx = new Float64Array(n * n);
  for (let c = 0; c < n; c++) vx[c * n + c] = 1;
  const tol = Math.sqrt(m) * Number.EPSILON;
  let converged = false;
  for (let sweep = 0; sweep < MAX_SWEEPS && !converged; sweep++) {
    converged = true;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let alpha = 0, beta = 0, gamma = 0;
        for (let i = 0; i < m; i++) {
          const xp = x[p * m + i], xq = x[q * m + i];
          alpha += xp * xp;
          beta += xq * xq;
          gamma += xp * xq;
        }
        if (gamma === 0 || Math.abs(gamma) <= tol * Math.sqrt(alpha * beta)) continue;
        converged = false;
        // The rotation that zeroes the pair's inner product: t the smaller root of t² + 2ζt − 1 = 0.
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.hypot(1, zeta));
        const c = 1 / Math.hypot(1, t), s = c * t;
        for (let i = 0; i < m; i++) {
          const xp = x[p * m + i], xq = x[q * m + i];
          x[p * m + i] = c * xp - s * xq;
          x[q * m + i] = s * xp + c * xq;
        }
        for (let i = 0; i < n; i++) {
          const vp = vx[p * n + i], vq = vx[q * n + i];
          vx[p * n + i] = c * vp - s * vq;
          vx[q * n + i] = s * vp + c * vq;
        }
      }
    }
  }
  if (!converged) throw new Error(`jacobiSvd: ${rows} × ${cols} did not converge in ${MAX_SWEEPS} sweeps`);
  const sigma = Float64Array.from({ length: n }, (_, c) => {
    let sum = 0;
    for (let i = 0; i < m; i++) sum += x[c * m + i] ** 2;
    return Math.sqrt(sum);
  });
  const order = Array.from({ length: n }, (_, c) => c).sort((a, b) => sigma[b] - sigma[a] || a - b);
  // Columns of X/σ are the tall side's singular vectors, columns of Vx the other side's.
  const k = n;
  const out: Svd = {
    rows,
    cols,
    k,
    s: Float64Array.from(order, (c) => sigma[c]),
    u: new Float64Array(rows * k),
    v: new Float64Array(cols * k),
  };
  order.forEach((c, rank) => {
    const inv = sigma[c] > 0 ? 1 / sigma[c] : 0;
    const [big, small] = tall ? [out.u, out.v] : [out.v, out.u];
    for (let i = 0; i < m; i++) big[i * k + rank] = x[c * m + i] * inv;
    for (let i = 0; i < n; i++) small[i * k + rank] = vx[c * n + i];
  });
  fixSigns(out);
  return out;
}

// Flips each singular pair so that the largest-magnitude entry of its v column (first on ties) is positive.
function fixSigns(svd: Svd): void {
  const { k } = svd;
  for (let c = 0; c < k; c++) {
    let at = 0;
    for (let i = 1; i < svd.cols; i++) {
      if (Math.abs(svd.v[i * k + c]) > Math.abs(svd.v[at * k + c])) at = i;
    }
    if (svd.v[at * k + c] >= 0) continue;
    for (let i = 0; i < svd.cols; i++) svd.v[i * k + c] = -svd.v[i * k + c];
    for (let i = 0; i < svd.rows; i++) svd.u[i * k + c] = -svd.u[i * k + c];
  }
}

// C (p × q) = op(A)·B for row-major A (a × b): Aᵀ·B with `transpose`, else A·B; B row-major.
function multiply(
  a: Float64Array,
  aRows: number,
  aCols: number,
  b: Float64Array,
  q: number,
  transpose: boolean,
) {
  const p = transpose ? aCols : aRows, inner = transpose ? aRows : aCols;
  const c = new Float64Array(p * q);
  for (let i = 0; i < p; i++) {
    for (let l = 0; l < inner; l++) {
      const av = transpose ? a[l * aCols + i] : a[i * aCols + l];
      if (av === 0) continue;
      for (let j = 0; j < q; j++) c[i * q + j] += av * b[l * q + j];
    }
  }
  return c;
}

// Orthonormalises the q columns of a row-major (p × q) matrix in place: modified Gram–Schmidt, twice.
// A column that vanishes (rank deficiency) is left at zero.
function orthonormalize(x: Float64Array, p: number, q: number): Float64Array {
  for (let c = 0; c < q; c++) {
    let before = 0;
    for (let i = 0; i < p; i++) before += x[i * q + c] ** 2;
    for (let pass = 0; pass < 2; pass++) {
      for (let d = 0; d < c; d++) {
        let dot = 0;
        for (let i = 0; i < p; i++) dot += x[i * q + c] * x[i * q + d];
        for (let i = 0; i < p; i++) x[i * q + c] -= dot * x[i * q + d];
      }
    }
    let norm = 0;
    for (let i = 0; i < p; i++) norm += x[i * q + c] ** 2;
    norm = Math.sqrt(norm);
    const inv = norm > 1e-12 * Math.sqrt(before) && norm > 0 ? 1 / norm : 0;
    for (let i = 0; i < p; i++) x[i * q + c] *= inv;
  }
  return x;
}

/**
 * A rank-q SVD by randomized subspace iteration, torch.svd_lowrank(W, q, niter) in float64: on the
 * tall orientation M (m × n, m ≥ n), Q = orth(M·Ω) with Ω (n × q) Philox normals from (seed, stream),
 * then `niter` times Q = orth(M·orth(Mᵀ·Q)); then the SVD of Qᵀ·M (q × n) by jacobiSvd, U = Q·U_B.
 * Deterministic for a seed; signs fixed as jacobiSvd fixes them.
 * @example const top = randomizedSvd(w, 64, 48, 4, 2, 7, 0);
 */
export function randomizedSvd(
  w: ArrayLike<number>,
  rows: number,
  cols: number,
  q: number,
  niter: number,
  seed: number,
  stream: number,
): Svd {
  if (w.length !== rows * cols) {
    throw new RangeError(`randomizedSvd: ${w.length} values are not ${rows} × ${cols}`);
  }
  if (!Number.isInteger(q) || q < 1 || q > Math.min(rows, cols)) {
    throw new RangeError(`randomizedSvd: rank ${q} must be an integer in [1, min(${rows}, ${cols})]`);
  }
  if (!Number.isInteger(niter) || niter < 0) {
    throw new RangeError(`randomizedSvd: niter ${niter} must be ≥ 0`);
  }
  const tall = rows >= cols;
  const m = tall ? rows : cols, n = tall ? cols : rows;
  const mat = new Float64Array(m * n);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) mat[tall ? i * n + j : j * n + i] = w[i * cols + j];
  }
  const omega = fillNormal(new Float64Array(n * q), seed, stream);
  let basis = orthonormalize(multiply(mat, m, n, omega, q, false), m, q);
  for (let it = 0; it < niter; it++) {
    const z = orthonormalize(multiply(mat, m, n, basis, q, true), n, q);
    basis = orthonormalize(multiply(mat, m, n, z, q, false), m, q);
  }
  // Bsmall (q × n) = Qᵀ·M.
  const small = multiply(basis, m, q, mat, n, true);
  const inner = jacobiSvd(small, q, n);
  const left = multiply(basis, m, q, inner.u, q, false); // (m × q)
  const out: Svd = tall
    ? { rows, cols, k: q, s: inner.s, u: left, v: inner.v }
    : { rows, cols, k: q, s: inner.s, u: inner.v, v: left };
  fixSigns(out);
  return out;
}

/** What PiSSA makes of one matrix: A (r × in) and B (out × r) in f32, and the f32 residual (out × in). */
export interface PissaFactors {
  a: Float32Array;
  b: Float32Array;
  residual: Float32Array;
  /** The top r singular values of W0. */
  s: Float64Array;
}

/**
 * A = diag(√(S_r/s))·V_rᵀ, B = U_r·diag(√(S_r/s)) and W_res = W0 − s·B·A for one (out × in) W0,
 * from the full SVD (`niter` null) or the randomized one.
 */
export function pissaFactors(
  w0: ArrayLike<number>,
  out: number,
  inDim: number,
  r: number,
  scale: number,
  niter: number | null,
  seed: number,
  stream: number,
): PissaFactors {
  if (r > Math.min(out, inDim)) {
    throw new RangeError(
      `pissa: r = ${r} exceeds min(d_out, d_in) = ${Math.min(out, inDim)} of a ${out} × ${inDim} matrix`,
    );
  }
  const svd = niter === null
    ? jacobiSvd(w0, out, inDim)
    : randomizedSvd(w0, out, inDim, r, niter, seed, stream);
  const k = svd.k;
  const a = new Float32Array(r * inDim), b = new Float32Array(out * r);
  for (let c = 0; c < r; c++) {
    const root = Math.sqrt(svd.s[c] / scale);
    for (let j = 0; j < inDim; j++) a[c * inDim + j] = root * svd.v[j * k + c];
    for (let i = 0; i < out; i++) b[i * r + c] = svd.u[i * k + c] * root;
  }
  const residual = new Float32Array(out * inDim);
  for (let i = 0; i < out; i++) {
    for (let j = 0; j < inDim; j++) {
      let ba = 0;
      for (let c = 0; c < r; c++) ba += b[i * r + c] * a[c * inDim + j];
      residual[i * inDim + j] = w0[i * inDim + j] - scale * ba;
    }
  }
  return { a, b, residual, s: svd.s.slice(0, r) };
}

/** K of "pissa_niter_K", or null for the full SVD. */
export function pissaIterations(init: string): number | null {
  const match = init.match(/^pissa(?:_niter_(\d+))?$/);
  if (!match) throw new RangeError(`pissa: init "${init}" must be "pissa" or "pissa_niter_K"`);
  return match[1] === undefined ? null : Number(match[1]);
}

/** PiSSA (Meng et al. 2024) as PEFT's init_lora_weights="pissa" / "pissa_niter_K". */
/**
 * One matrix's trained PiSSA adapter (A: r × in, B: out × r) as a rank-2r LoRA on the original W0, given
 * the initial factors A₀, B₀: A₂ = [A; A₀] (2r × in), B₂ = [B, −B₀] (out × 2r), same scale s, so
 * W0 + s·B₂·A₂ = (W0 − s·B₀·A₀) + s·B·A.
 * @example const { a, b } = pissaToLora(a, b, a0, b0, r, inDim, outDim);
 */
export function pissaToLora(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  a0: ArrayLike<number>,
  b0: ArrayLike<number>,
  r: number,
  inDim: number,
  outDim: number,
): { a: Float32Array; b: Float32Array } {
  for (
    const [name, t, n] of [["A", a, r * inDim], ["A0", a0, r * inDim], ["B", b, outDim * r], [
      "B0",
      b0,
      outDim * r,
    ]] as const
  ) {
    if (t.length !== n) throw new RangeError(`pissaToLora: ${name} has ${t.length} values, expected ${n}`);
  }
  const a2 = new Float32Array(2 * r * inDim);
  a2.set(Array.from(a), 0);
  a2.set(Array.from(a0), r * inDim);
  const b2 = new Float32Array(outDim * 2 * r);
  for (let i = 0; i < outDim; i++) {
    for (let c = 0; c < r; c++) {
      b2[i * 2 * r + c] = b[i * r + c];
      b2[i * 2 * r + r + c] = -b0[i * r + c];
    }
  }
  return { a: a2, b: b2 };
}

export const pissa: Method<typeof pissaConfigSchema> = {
  name: "pissa",
  title: "PiSSA: LoRA initialised from W0's top-r SVD, base replaced by the residual (PEFT)",
  caveat: "The adapter is relative to the residual base W0 − s·B·A, not to W0: a saved adapter only " +
    "fits the residual weights; pissaToLora converts it to a rank-2r LoRA on W0, as PEFT can. " +
    "pissa_niter_K draws its test matrix from Philox, so its factors differ from torch.svd_lowrank's.",
  config: pissaConfigSchema,
  parameterCount: pissaParameterCount,
  prepare(ctx, config) {
    const model = ctx.base.config;
    const niter = pissaIterations(config.init);
    const matrices = loraMatrices(model, asLora(config), "pissa");
    const table = buildTable(loraSpecs(matrices, config.r));
    const scale = loraScale(config);
    const values = new Float32Array(table.size);
    const residual = ctx.baseValues.slice();
    let captured = 0;
    matrices.forEach((m, index) => {
      const w = ctx.base.table.byName.get(`h.${m.layer}.${m.site}.w`)!;
      const at = w.offset + m.offset * m.in;
      const w0 = ctx.baseValues.subarray(at, at + m.out * m.in);
      const f = pissaFactors(w0, m.out, m.in, config.r, scale, niter, ctx.seed, index);
      values.set(f.a, table.byName.get(m.a)!.offset);
      values.set(f.b, table.byName.get(m.b)!.offset);
      residual.set(f.residual, at);
      let total = 0;
      for (const x of w0) total += x * x;
      captured += total > 0 ? f.s.reduce((sum, s) => sum + s * s, 0) / total : 0;
    });
    const weights = createWeights(ctx.gpu, model, residual);
    const params = tensorFrom(ctx.gpu, [table.size], values, { label: "pissa.params" });
    const r = config.r;
    const prepared: PreparedMethod = {
      weights,
      adapter: {
        name: "pissa",
        table,
        params,
        attach: (actx) => loraHooks(ctx.gpu, actx, params, table, matrices, r, scale),
      },
      trainable: NO_BASE,
      trainableParameters: pissaParameterCount(model, config),
      details: {
        scale,
        matrices: matrices.length,
        svd: niter === null ? "full (one-sided Jacobi, float64)" : `randomized (q = r, ${niter} iterations)`,
        /** Mean over matrices of Σ_{i<r} σ_i² / ‖W0‖²_F: the share of W0 the adapter starts with. */
        principalEnergy: matrices.length ? captured / matrices.length : 0,
      },
      destroy: () => {
        params.buffer.destroy();
        weights.params.buffer.destroy();
      },
    };
    return Promise.resolve(prepared);
  },
};
