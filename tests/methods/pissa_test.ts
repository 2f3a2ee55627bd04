import assert from "node:assert/strict";
import { getGpu } from "../../src/gpu/device.ts";
import { readF32 } from "../../src/gpu/tensor.ts";
import { NO_BASE } from "../../src/model/adapter.ts";
import { parameterCount } from "../../src/model/params.ts";
import { createWeights, initialWeights, readWeights } from "../../src/model/weights.ts";
import { loraConfigSchema, loraParameterCount, loraScale } from "../../src/methods/lora.ts";
import {
  jacobiSvd,
  pissa,
  pissaConfigSchema,
  pissaFactors,
  pissaIterations,
  pissaParameterCount,
  pissaToLora,
  randomizedSvd,
  type Svd,
} from "../../src/methods/pissa.ts";
import { fillNormal, fillUniform } from "../../src/random/philox.ts";
import { randomBatch, runGraph, trainOnPattern } from "../reference/graph_run.ts";
import { assertBitwiseEqual, compare } from "../reference/compare.ts";
import { referenceModel } from "../reference/model.ts";
import { scaledWeights, tinyGpt2, tinyLlama } from "../reference/tiny_models.ts";

const gpt2 = tinyGpt2;
const llama = tinyLlama;

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, x) => Math.max(m, Math.abs(x)), 0);

// k orthonormal rows of length n in float64: Gram–Schmidt, twice, on Philox normals.
function orthonormalRows(k: number, n: number, seed: number, stream: number): Float64Array {
  const x = fillNormal(new Float64Array(k * n), seed, stream);
  for (let c = 0; c < k; c++) {
    const row = x.subarray(c * n, (c + 1) * n);
    for (let pass = 0; pass < 2; pass++) {
      for (let d = 0; d < c; d++) {
        const other = x.subarray(d * n, (d + 1) * n);
        const dot = row.reduce((a, v, i) => a + v * other[i], 0);
        for (let i = 0; i < n; i++) row[i] -= dot * other[i];
      }
    }
    const norm = Math.sqrt(row.reduce((a, v) => a + v * v, 0));
    for (let i = 0; i < n; i++) row[i] /= norm;
  }
  return x;
}

/** W = U·diag(σ)·Vᵀ (rows × cols) with orthonormal U, V (float64) from Philox and the given σ. */
function known(rows: number, cols: number, sigma: number[], seed: number): Float64Array {
  const k = sigma.length;
  const ut = orthonormalRows(k, rows, seed, 0), vt = orthonormalRows(k, cols, seed, 1);
  const w = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      for (let c = 0; c < k; c++) w[i * cols + j] += ut[c * rows + i] * sigma[c] * vt[c * cols + j];
    }
  }
  return w;
}

function reconstruct(svd: Svd, rank = svd.k): Float64Array {
  const out = new Float64Array(svd.rows * svd.cols);
  for (let i = 0; i < svd.rows; i++) {
    for (let j = 0; j < svd.cols; j++) {
      for (let c = 0; c < rank; c++) {
        out[i * svd.cols + j] += svd.u[i * svd.k + c] * svd.s[c] * svd.v[j * svd.k + c];
      }
    }
  }
  return out;
}

// max |XᵀX − I| over the first `rank` columns of a (n × k) row-major X.
function orthonormality(x: Float64Array, n: number, k: number, rank = k): number {
  let worst = 0;
  for (let a = 0; a < rank; a++) {
    for (let b = 0; b <= a; b++) {
      let dot = 0;
      for (let i = 0; i < n; i++) dot += x[i * k + a] * x[i * k + b];
      worst = Math.max(worst, Math.abs(dot - (a === b ? 1 : 0)));
    }
  }
  return worst;
}

Deno.test("PiSSA parameter count equals LoRA's; init names parse", () => {
  for (const [model, targets] of [[gpt2, ["q", "k", "v", "o", "fc"]], [llama, ["q", "v", "down"]]] as const) {
    const c = pissaConfigSchema.parse({ r: 3, targets: [...targets] });
    const lc = loraConfigSchema.parse({ r: 3, targets: [...targets] });
    assert.equal(pissaParameterCount(model, c), loraParameterCount(model, lc));
  }
  // GPT-2 C=36, q/k/v/o 36×36, fc 144×36: per layer r·(72·4 + 180).
  assert.equal(
    pissa.parameterCount(gpt2, pissaConfigSchema.parse({ r: 3, targets: ["q", "k", "v", "o", "fc"] })),
    2 * 3 * 468,
  );
  assert.equal(pissaConfigSchema.parse({}).init, "pissa");
  assert.equal(pissaIterations("pissa"), null);
  assert.equal(pissaIterations("pissa_niter_4"), 4);
  assert.throws(() => pissaConfigSchema.parse({ init: "pissa_niter_x" }), /pissa_niter_K/);
  assert.throws(() => pissaConfigSchema.parse({ init: "kaiming" }), /pissa_niter_K/);
});

Deno.test("jacobiSvd recovers known singular values and vectors, tall and wide, deterministically", () => {
  for (const [rows, cols] of [[23, 11], [11, 23], [17, 17]]) {
    const k = Math.min(rows, cols);
    // Distinct, a near-tie and an exact zero.
    const sigma = Array.from(
      { length: k },
      (_, i) => (i === k - 1 ? 0 : i === 3 ? 9 * 0.8 ** 2 - 1e-9 : 9 * 0.8 ** i),
    );
    sigma.sort((a, b) => b - a);
    const w = known(rows, cols, sigma, rows * 100 + cols);
    const svd = jacobiSvd(w, rows, cols);
    compare(`σ of ${rows} × ${cols}`, svd.s, sigma, { atol: 1e-13 * sigma[0], rtol: 0 });
    const back = compare(`U·S·Vᵀ of ${rows} × ${cols}`, reconstruct(svd), w, {
      atol: 1e-13 * sigma[0],
      rtol: 0,
    });
    // The zero singular value's u (tall) or v (wide) is left at zero; the others are orthonormal.
    const uErr = orthonormality(svd.u, rows, k, k - 1), vErr = orthonormality(svd.v, cols, k, k - 1);
    assert.ok(uErr < 1e-13 && vErr < 1e-13, `orthonormality of U ${uErr}, V ${vErr}`);
    const again = jacobiSvd(w, rows, cols);
    assert.deepEqual([again.s, again.u, again.v], [svd.s, svd.u, svd.v]);
    console.log(`jacobiSvd ${rows} × ${cols}: reconstruction max |err| ${back.maxAbs.toExponential(2)}`);
  }
  // A random matrix: the singular values are the square roots of WᵀW's eigenvalues (trace and Frobenius checks).
  const rows = 30, cols = 13;
  const w = fillUniform(new Float64Array(rows * cols), 3, 0, -1, 1);
  const svd = jacobiSvd(w, rows, cols);
  let frob = 0;
  for (const x of w) frob += x * x;
  const sumSq = svd.s.reduce((a, s) => a + s * s, 0);
  assert.ok(Math.abs(sumSq - frob) < 1e-12 * frob, `Σσ² ${sumSq} vs ‖W‖²_F ${frob}`);
  compare("U·S·Vᵀ of a random 30 × 13", reconstruct(svd), w, { atol: 1e-13, rtol: 0 });
  for (let i = 1; i < svd.k; i++) assert.ok(svd.s[i] <= svd.s[i - 1], "σ not descending");
});

Deno.test("randomized SVD finds the full SVD's top-r subspace when the spectrum has a gap", () => {
  const rows = 40, cols = 26, r = 5;
  const sigma = [10, 8, 6.5, 5, 4, ...Array.from({ length: 21 }, (_, i) => 0.2 * 0.9 ** i)];
  const w = known(rows, cols, sigma, 9);
  const full = jacobiSvd(w, rows, cols);
  for (const [wr, wc, mat] of [[rows, cols, w], [cols, rows, transpose(w, rows, cols)]] as const) {
    const fullW = wr === rows ? full : jacobiSvd(mat, wr, wc);
    for (const niter of [2, 4]) {
      const fast = randomizedSvd(mat, wr, wc, r, niter, 7, 3);
      // Projectors onto the top-r left and right subspaces; gap ratio 0.2/4 = 0.05, so after K iterations
      // the angle is about 0.05^(2K+1): 3e-7 for K = 2, 8e-13 for K = 4.
      const tol = niter === 2 ? 1e-5 : 1e-10;
      const pu = projectorGap(fullW.u, fast.u, wr, fullW.k, r);
      const pv = projectorGap(fullW.v, fast.v, wc, fullW.k, r);
      compare(`σ_r (${wr} × ${wc}, K = ${niter})`, fast.s, fullW.s.slice(0, r), { atol: tol * 10, rtol: 0 });
      assert.ok(pu < tol && pv < tol, `K = ${niter}: projector gaps U ${pu}, V ${pv} over ${tol}`);
      // With the gap, the signs fixed the same way, the singular vectors themselves agree.
      for (let c = 0; c < r; c++) {
        for (let j = 0; j < wc; j++) {
          assert.ok(Math.abs(fast.v[j * r + c] - fullW.v[j * fullW.k + c]) < Math.sqrt(tol), `v[${j}, ${c}]`);
        }
      }
      console.log(
        `randomized SVD ${wr} × ${wc}, K = ${niter}: projector gap U ${pu.toExponential(2)}, V ${
          pv.toExponential(2)
        }`,
      );
    }
  }
  const a = randomizedSvd(w, rows, cols, r, 2, 7, 3), b = randomizedSvd(w, rows, cols, r, 2, 7, 3);
  assert.deepEqual([a.s, a.u, a.v], [b.s, b.u, b.v], "same seed, same bits");
  assert.throws(() => randomizedSvd(w, rows, cols, 27, 2, 7, 3), /rank 27/);
  assert.throws(
    () => pissaFactors(w, rows, cols, 27, 1, null, 0, 0),
    /r = 27 exceeds min\(d_out, d_in\) = 26/,
  );
});

function transpose(w: Float64Array, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = w[i * cols + j];
  return t;
}

// max |P_full − P_fast| of the projectors onto the first r columns of (n × k) and (n × r) bases.
function projectorGap(full: Float64Array, fast: Float64Array, n: number, k: number, r: number): number {
  let worst = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let a = 0, b = 0;
      for (let c = 0; c < r; c++) {
        a += full[i * k + c] * full[j * k + c];
        b += fast[i * r + c] * fast[j * r + c];
      }
      worst = Math.max(worst, Math.abs(a - b));
    }
  }
  return worst;
}

Deno.test("pissaFactors: s·B·A is the top-r part of W0 and W_res + s·B·A = W0 to f32 rounding", () => {
  const out = 19, inDim = 14, r = 4, scale = 7 / 4;
  const w0 = fillUniform(new Float32Array(out * inDim), 5, 0, -1, 1);
  const f = pissaFactors(w0, out, inDim, r, scale, null, 0, 0);
  const svd = jacobiSvd(w0, out, inDim);
  const top = reconstruct(svd, r);
  const ba = new Float64Array(out * inDim);
  for (let i = 0; i < out; i++) {
    for (let j = 0; j < inDim; j++) {
      for (let c = 0; c < r; c++) ba[i * inDim + j] += scale * f.b[i * r + c] * f.a[c * inDim + j];
    }
  }
  // A and B are f32: s·B·A errs from the float64 top-r part by a few f32 ulp of σ_1.
  compare("s·B·A vs U_r·S_r·V_rᵀ", ba, top, { atol: 8 * 2 ** -24 * svd.s[0], rtol: 0 });
  // W_res was formed in float64 from the f32 A, B and rounded once: half an ulp of each element.
  const sum = Float64Array.from(f.residual, (x, i) => x + ba[i]);
  compare("W_res + s·B·A vs W0", sum, w0, { atol: 2 ** -24 * maxAbs(f.residual), rtol: 0 });
  // A's rows are orthogonal with squared norms S̃ = σ/s (B's columns likewise).
  for (let c = 0; c < r; c++) {
    let norm = 0;
    for (let j = 0; j < inDim; j++) norm += f.a[c * inDim + j] ** 2;
    assert.ok(
      Math.abs(norm - svd.s[c] / scale) < 1e-6 * svd.s[0],
      `‖A[${c}]‖² ${norm} vs σ/s ${svd.s[c] / scale}`,
    );
  }
});

Deno.test("pissaToLora: the rank-2r LoRA on W0 equals the trained adapter on the residual", () => {
  const out = 11, inDim = 9, r = 3, scale = 2;
  const w0 = fillUniform(new Float32Array(out * inDim), 8, 0, -1, 1);
  const f = pissaFactors(w0, out, inDim, r, scale, null, 0, 0);
  // "Trained" factors: the initial ones moved by random amounts.
  const a = Float32Array.from(f.a, (x, i) => x + 0.1 * Math.sin(i));
  const b = Float32Array.from(f.b, (x, i) => x + 0.1 * Math.cos(i));
  const two = pissaToLora(a, b, f.a, f.b, r, inDim, out);
  const product = (bb: ArrayLike<number>, aa: ArrayLike<number>, rank: number, i: number, j: number) => {
    let sum = 0;
    for (let c = 0; c < rank; c++) sum += bb[i * rank + c] * aa[c * inDim + j];
    return sum;
  };
  const onResidual = new Float64Array(out * inDim);
  const onW0 = new Float64Array(out * inDim);
  for (let i = 0; i < out; i++) {
    for (let j = 0; j < inDim; j++) {
      onResidual[i * inDim + j] = f.residual[i * inDim + j] + scale * product(b, a, r, i, j);
      onW0[i * inDim + j] = w0[i * inDim + j] + scale * product(two.b, two.a, 2 * r, i, j);
    }
  }
  // W_res carries half an ulp of rounding (see pissaFactors' test); the rest is exact algebra in float64.
  compare("W0 + s·B₂·A₂ vs W_res + s·B·A", onW0, onResidual, { atol: 2 ** -23 * maxAbs(w0), rtol: 0 });
  assert.throws(
    () => pissaToLora(a, b, f.a, f.b.subarray(1), r, inDim, out),
    /B0 has 32 values, expected 33/,
  );
});

for (
  const [family, config, targets, init] of [
    ["GPT-2", gpt2, ["q", "k", "v", "o", "fc", "fcProj"], "pissa"],
    ["GPT-2 fused, randomized", gpt2, ["qkv", "o"], "pissa_niter_2"],
    ["Llama", llama, ["q", "k", "v", "o", "gate", "up", "down"], "pissa"],
  ] as const
) {
  Deno.test(`${family}: PiSSA at init gives the base logits within f32 rounding; losses and gradients match float64`, async () => {
    const gpu = await getGpu();
    const B = 2, T = 9, N = B * T;
    const values = scaledWeights(config, 5);
    const base = createWeights(gpu, config, values);
    const cfg = pissaConfigSchema.parse({ r: 3, alpha: 7, targets: [...targets], init });
    const t0 = performance.now();
    const prepared = await pissa.prepare(
      { gpu, base, baseValues: values, trainLength: T, maxLength: T, seed: 4 },
      cfg,
    );
    const prepareMs = performance.now() - t0;
    const adapter = prepared.adapter!;
    assert.notEqual(prepared.weights, base, "PiSSA must return a new ModelWeights");
    assert.equal(prepared.trainableParameters, parameterCount(adapter.table));
    assert.equal(prepared.trainableParameters, pissaParameterCount(config, cfg));
    assertBitwiseEqual(`${family} base after prepare`, await readWeights(gpu, base), values);

    const batch = randomBatch(config.vocabSize, N, 3);
    const want = await runGraph(gpu, base, { B, T, training: false }, batch, { readLogits: true });
    const got = await runGraph(gpu, prepared.weights, { B, T, training: false, adapter }, batch, {
      readLogits: true,
    });
    // x·W_resᵀ + s·(x·Aᵀ)·Bᵀ rounds differently from x·W0ᵀ; through two layers that stays within
    // 1e-5 of the largest logit (observed ≤ 1.8e-6: 1.1e-5 of 6.2 for Llama).
    const logitScale = maxAbs(want.logits!);
    const logits = compare(`${family} logits at init`, got.logits!, want.logits!, {
      atol: 1e-5 * logitScale,
      rtol: 0,
    });

    const gradScale = 1 / 13;
    const run = await runGraph(
      gpu,
      prepared.weights,
      { B, T, training: true, adapter, trainable: NO_BASE },
      batch,
      {
        gradScale,
      },
    );
    // The float64 reference of the original W0: the losses PiSSA must reproduce.
    const original = referenceModel(config, Float64Array.from(values), batch, B, T, gradScale);
    const lossErr = compare(`${family} losses vs the float64 model on W0`, run.losses, original.losses, {
      atol: 2e-5,
      rtol: 1e-5,
    });
    // Gradients: the float64 model on W_res + s·B·A (merged in float64) gives dW; dB = s·dW·Aᵀ, dA = s·Bᵀ·dW.
    const av = await readF32(gpu, adapter.params!);
    const residual = await readWeights(gpu, prepared.weights);
    const merged = Float64Array.from(residual);
    const s = loraScale(cfg);
    const matrices = adapter.table.entries.filter((e) => e.name.endsWith(".A")).map((e) => {
      const [, layer, target] = e.name.match(/^h\.(\d+)\.(\w+)\.pissa\.A$/)!;
      const site = ["q", "k", "v"].includes(target) ? "qkv" : target === "o" ? "attnOut" : target;
      const w = base.table.byName.get(`h.${layer}.${site}.w`)!;
      const block = base.table.byName.get(`h.${layer}.${target === "o" ? "attnOut" : target}.w`)!;
      const bEntry = adapter.table.byName.get(e.name.replace(/A$/, "B"))!;
      return { a: e, b: bEntry, at: block.offset, out: bEntry.shape[0], in: e.shape[1], stride: w.shape[1] };
    });
    const r = cfg.r;
    for (const m of matrices) {
      for (let i = 0; i < m.out; i++) {
        for (let j = 0; j < m.in; j++) {
          let ba = 0;
          for (let k = 0; k < r; k++) ba += av[m.b.offset + i * r + k] * av[m.a.offset + k * m.in + j];
          merged[m.at + i * m.stride + j] += s * ba;
        }
      }
    }
    const ref = referenceModel(config, merged, batch, B, T, gradScale);
    compare(`${family} merged W_res + s·B·A vs W0`, merged, values, {
      atol: 2 ** -24 * Math.max(maxAbs(values), maxAbs(residual)),
      rtol: 0,
    });
    let worst = 0;
    for (const m of matrices) {
      const dW = (i: number, j: number) => ref.grads[m.at + i * m.stride + j];
      const dA = new Float64Array(m.a.numel), dB = new Float64Array(m.b.numel);
      for (let i = 0; i < m.out; i++) {
        for (let k = 0; k < r; k++) {
          let sum = 0;
          for (let j = 0; j < m.in; j++) sum += dW(i, j) * av[m.a.offset + k * m.in + j];
          dB[i * r + k] = s * sum;
        }
      }
      for (let k = 0; k < r; k++) {
        for (let j = 0; j < m.in; j++) {
          let sum = 0;
          for (let i = 0; i < m.out; i++) sum += av[m.b.offset + i * r + k] * dW(i, j);
          dA[k * m.in + j] = s * sum;
        }
      }
      for (const [e, wantGrad] of [[m.a, dA], [m.b, dB]] as const) {
        const gotGrad = run.adapterGrads!.subarray(e.offset, e.offset + e.numel);
        const max = maxAbs(wantGrad);
        assert.ok(max > 0, `${e.name}: the reference gradient is all zero`);
        compare(`${family} ${e.name}`, gotGrad, wantGrad, { atol: 1e-4 * max, rtol: 1e-4 });
        for (let i = 0; i < e.numel; i++) worst = Math.max(worst, Math.abs(gotGrad[i] - wantGrad[i]) / max);
      }
    }
    console.log(
      `${family}: prepare ${prepareMs.toFixed(0)} ms, logits at init max |err| ${
        logits.maxAbs.toExponential(2)
      } ` +
        `(max |logit| ${logitScale.toFixed(2)}), losses vs W0 ${lossErr.maxAbs.toExponential(2)}, ` +
        `max grad error / tensor max ${worst.toExponential(2)}, principal energy ${
          (prepared.details.principalEnergy as number).toFixed(3)
        }`,
    );
    prepared.destroy();
    base.params.buffer.destroy();
  });
}

Deno.test("PiSSA training lowers the loss and leaves the residual base untouched", async () => {
  const gpu = await getGpu();
  const T = 24;
  const values = initialWeights(llama, 8);
  const base = createWeights(gpu, llama, values);
  const prepared = await pissa.prepare(
    { gpu, base, baseValues: values, trainLength: T, maxLength: T, seed: 2 },
    pissa.config.parse({ r: 4, alpha: 4, targets: ["q", "v", "o", "up"], init: "pissa_niter_4" }),
  );
  const residual = await readWeights(gpu, prepared.weights);
  const losses = await trainOnPattern(gpu, prepared, T);
  console.log(`PiSSA losses: ${losses[0].toFixed(4)} → ${losses[39].toFixed(4)}`);
  assert.ok(losses[39] < losses[0] - 0.5, `loss ${losses[0]} → ${losses[39]} did not drop by 0.5`);
  assertBitwiseEqual(
    "residual weights after PiSSA training",
    await readWeights(gpu, prepared.weights),
    residual,
  );
  assertBitwiseEqual("original base after PiSSA training", await readWeights(gpu, base), values);
  prepared.destroy();
  base.params.buffer.destroy();
});
