/**
 * Float64 reference of the whole model (src/model/model.ts), written as llm.c's train_gpt2.c is: the
 * forward stores every activation, the backward walks the layers in reverse, and each layer is the
 * float64 twin of its kernel (tests/reference/*). Parameters and gradients use the parameter table's
 * flat layout, so they compare element for element with the GPU's buffers.
 */
import { dims, type ModelConfig } from "../../src/model/config.ts";
import { paramTable } from "../../src/model/params.ts";
import { ropeFrequencies } from "../../src/model/rope_scaling.ts";
import {
  attentionBackward,
  attentionForward,
  mergeHeads,
  mergeHeadsBackward,
  MODE_CAUSAL,
  type RefMask,
  type RefSizes,
  splitHeads,
  splitHeadsBackward,
} from "./attention.ts";
import {
  encoderBackward,
  encoderForward,
  geluBackward,
  geluForward,
  layernormBackward,
  layernormForward,
  rmsnormBackward,
  rmsnormForward,
  swigluBackward,
  swigluForward,
} from "./layers.ts";
import { matmulBackward, matmulForward } from "./matmul.ts";
import { crossEntropyForwardBackward, ropeRotate } from "./train_ops.ts";

/** One batch for the reference: (B, T) tokens, targets and loss weights. */
export interface RefBatch {
  tokens: ArrayLike<number>;
  targets: ArrayLike<number>;
  weights: ArrayLike<number>;
}

/** What the reference returns. */
export interface RefResult {
  /** (N,) per-token losses. */
  losses: Float64Array;
  /** Σ losses. */
  lossSum: number;
  /** Gradient table of gradScale·Σ weights·losses, in the parameter table's layout. */
  grads: Float64Array;
  /** (N, V) logits. */
  logits: Float64Array;
}

/**
 * A method's pieces at the model's extension points, in float64 (twins of src/model/adapter.ts's hooks):
 * a term after each block linear, a change of the final norm's output, the attention mask and parameters,
 * and the attention-output mix.
 */
export interface RefHooks {
  /** Attention mask of every layer (default causal). */
  mask?: RefMask;
  /**
   * y (N, out) holds x·Wᵀ + b of block linear `name` (qkv, attnOut, fc, fcProj, gate, up, down), or the
   * logits of the LM head (layer -1, "lmHead", x = the final norm's output): add the term.
   */
  linear?(layer: number, name: string, y: Float64Array, x: Float64Array): void;
  /** Accumulate the term's parameter gradients from dy and x; add its input gradient into dx. */
  linearBackward?(layer: number, name: string, dx: Float64Array, dy: Float64Array, x: Float64Array): void;
  /** Modifies the final norm's output (N, C) in place. */
  finalNorm?(lnf: Float64Array): void;
  /** dlnf: gradient with respect to the modified output → with respect to the unmodified one, in place. */
  finalNormBackward?(dlnf: Float64Array): void;
  /** Per-head logit scale and sink logit of one layer's attention (defaults 1/√D and no sink). */
  attention?(layer: number): { scale?: ArrayLike<number>; sink?: ArrayLike<number> | null };
  /** Receives one layer's (H,) dScale and dSink from the attention backward. */
  attentionBackward?(layer: number, dScale: Float64Array, dSink: Float64Array): void;
  /**
   * Replaces merging the heads: writes att (N, H·D) from o (B, H, T, D) and v (B, Hkv, T, D); qPre
   * (B, H, T, D) is the query before RoPE (Gated Memory reads it).
   */
  mixOutput?(layer: number, att: Float64Array, o: Float64Array, v: Float64Array, qPre: Float64Array): void;
  /**
   * Writes dO (B, H, T, D) from datt (N, H·D); adds its value gradient into dv (B, Hkv, T, D, zeroed),
   * which the model adds to the attention's after the attention backward, and its pre-RoPE query gradient
   * into dqPre (B, H, T, D, zeroed), added to the query's gradient after the inverse RoPE.
   */
  mixOutputBackward?(
    layer: number,
    dO: Float64Array,
    dv: Float64Array,
    datt: Float64Array,
    dqPre: Float64Array,
  ): void;
}

/** Forward and backward of the model in float64. */
export function referenceModel(
  config: ModelConfig,
  params: ArrayLike<number>,
  batch: RefBatch,
  B: number,
  T: number,
  gradScale: number,
  hooks: RefHooks = {},
): RefResult {
  const table = paramTable(config);
  const { V, C, L, H, Hkv, D, F, tied } = dims(config);
  const gpt2 = config.family === "gpt2";
  const N = B * T;
  const QKV = (H + 2 * Hkv) * D;
  const P64 = Float64Array.from(params);
  const grads = new Float64Array(table.size);
  const P = (name: string) => {
    const e = table.byName.get(name)!;
    return P64.subarray(e.offset, e.offset + e.numel);
  };
  const G = (name: string) => {
    const e = table.byName.get(name)!;
    return grads.subarray(e.offset, e.offset + e.numel);
  };
  const s: RefSizes = { B, H, Hkv, T, D };
  const mask = hooks.mask ?? { modes: new Array(H).fill(MODE_CAUSAL), G: 0 };
  // "h.3.qkv" → (3, "qkv") for the linear hooks.
  const site = (name: string): [number, string] => {
    const [, l, linear] = name.split(".");
    return [Number(l), linear];
  };
  const scale = new Array(H).fill(1 / Math.sqrt(D));
  const positions = Array.from({ length: T }, (_, t) => t);
  const rope = gpt2 ? null : ropeFrequencies(config.rope, D, T);
  const f64 = (n: number) => new Float64Array(n);

  const linear = (
    y: Float64Array,
    x: Float64Array,
    name: string,
    rows: number,
    out: number,
    inp: number,
    acc = false,
  ) => {
    matmulForward(y, x, P(`${name}.w`), {
      Bt: 1,
      M: rows,
      N: out,
      K: inp,
      transA: false,
      transB: true,
      bBatched: false,
    }, {
      bias: gpt2 && table.byName.has(`${name}.b`) ? P(`${name}.b`) : undefined,
      accumulate: acc,
    });
    hooks.linear?.(...site(name), y, x);
  };
  // Adds dW, db to the gradient table; returns dx (N, inp).
  const linearBack = (
    dy: Float64Array,
    x: Float64Array,
    name: string,
    rows: number,
    out: number,
    inp: number,
  ) => {
    const dx = f64(rows * inp), dW = f64(out * inp), db = f64(out);
    matmulBackward(dx, dW, db, dy, x, P(`${name}.w`), {
      Bt: 1,
      M: rows,
      N: out,
      K: inp,
      transA: false,
      transB: true,
      bBatched: false,
    });
    const gw = G(`${name}.w`);
    for (let i = 0; i < gw.length; i++) gw[i] += dW[i];
    if (gpt2 && table.byName.has(`${name}.b`)) {
      const gb = G(`${name}.b`);
      for (let i = 0; i < gb.length; i++) gb[i] += db[i];
    }
    hooks.linearBackward?.(...site(name), dx, dy, x);
    return dx;
  };
  const norm = (out: Float64Array, mean: Float64Array, rstd: Float64Array, x: Float64Array, name: string) => {
    if (config.family === "gpt2") {
      layernormForward(out, mean, rstd, x, P(`${name}.w`), P(`${name}.b`), N, C, config.lnEps);
    } else rmsnormForward(out, rstd, x, P(`${name}.w`), N, C, config.rmsEps);
  };
  const normBack = (
    dx: Float64Array,
    dout: Float64Array,
    x: Float64Array,
    mean: Float64Array,
    rstd: Float64Array,
    name: string,
  ) => {
    if (config.family === "gpt2") {
      layernormBackward(dx, G(`${name}.w`), G(`${name}.b`), dout, x, P(`${name}.w`), mean, rstd, N, C);
    } else rmsnormBackward(dx, G(`${name}.w`), dout, x, P(`${name}.w`), rstd, N, C);
  };

  // ---- forward
  const x: Float64Array[] = [f64(N * C)];
  encoderForward(x[0], batch.tokens, P("wte"), gpt2 ? P("wpe") : null, B, T, C);
  const acts = [];
  const attnParams: { scale: ArrayLike<number>; sink: ArrayLike<number> | null }[] = [];
  for (let l = 0; l < L; l++) {
    const a = {
      ln1: f64(N * C),
      m1: f64(N),
      r1s: f64(N),
      qkv: f64(N * QKV),
      q: f64(B * H * T * D),
      k: f64(B * Hkv * T * D),
      v: f64(B * Hkv * T * D),
      qPre: f64(B * H * T * D),
      o: f64(B * H * T * D),
      lse: f64(B * H * T),
      att: f64(N * H * D),
      r1: f64(N * C),
      ln2: f64(N * C),
      m2: f64(N),
      r2s: f64(N),
      fc: f64(N * F),
      up: f64(N * F),
      hidden: f64(N * F),
    };
    const pre = `h.${l}`;
    norm(a.ln1, a.m1, a.r1s, x[l], `${pre}.ln1`);
    linear(a.qkv, a.ln1, `${pre}.qkv`, N, QKV, C);
    splitHeads(a.q, a.k, a.v, a.qkv, s);
    a.qPre.set(a.q);
    if (rope) {
      ropeRotate(a.q, a.q.slice(), rope.invFreq, rope.attentionFactor, positions, B, H, T, D);
      ropeRotate(a.k, a.k.slice(), rope.invFreq, rope.attentionFactor, positions, B, Hkv, T, D);
    }
    const ap = hooks.attention?.(l) ?? {};
    attnParams.push({ scale: ap.scale ?? scale, sink: ap.sink ?? null });
    attentionForward(a.o, a.lse, a.q, a.k, a.v, attnParams[l].scale, attnParams[l].sink, mask, s);
    if (hooks.mixOutput) hooks.mixOutput(l, a.att, a.o, a.v, a.qPre);
    else mergeHeads(a.att, a.o, B, H, T, D);
    a.r1.set(x[l]);
    linear(a.r1, a.att, `${pre}.attnOut`, N, C, H * D, true);
    norm(a.ln2, a.m2, a.r2s, a.r1, `${pre}.ln2`);
    const next = Float64Array.from(a.r1);
    if (gpt2) {
      linear(a.fc, a.ln2, `${pre}.fc`, N, F, C);
      geluForward(a.hidden, a.fc, N * F);
      linear(next, a.hidden, `${pre}.fcProj`, N, C, F, true);
    } else {
      linear(a.fc, a.ln2, `${pre}.gate`, N, F, C);
      linear(a.up, a.ln2, `${pre}.up`, N, F, C);
      swigluForward(a.hidden, a.fc, a.up, N * F);
      linear(next, a.hidden, `${pre}.down`, N, C, F, true);
    }
    acts.push(a);
    x.push(next);
  }
  const lnf = f64(N * C), mf = f64(N), rf = f64(N);
  norm(lnf, mf, rf, x[L], "lnf");
  hooks.finalNorm?.(lnf);
  const head = tied ? "wte" : "lmHead.w";
  const logits = f64(N * V);
  matmulForward(logits, lnf, P(head), {
    Bt: 1,
    M: N,
    N: V,
    K: C,
    transA: false,
    transB: true,
    bBatched: false,
  });
  hooks.linear?.(-1, "lmHead", logits, lnf);
  const losses = f64(N), dlogits = f64(N * V);
  crossEntropyForwardBackward(losses, dlogits, logits, batch.targets, batch.weights, N, V, gradScale);

  // ---- backward
  {
    const dlnf = f64(N * C), dW = f64(V * C), db = f64(V);
    matmulBackward(dlnf, dW, db, dlogits, lnf, P(head), {
      Bt: 1,
      M: N,
      N: V,
      K: C,
      transA: false,
      transB: true,
      bBatched: false,
    });
    const gh = G(head);
    for (let i = 0; i < gh.length; i++) gh[i] += dW[i];
    hooks.linearBackward?.(-1, "lmHead", dlnf, dlogits, lnf);
    let dres = f64(N * C);
    hooks.finalNormBackward?.(dlnf);
    normBack(dres, dlnf, x[L], mf, rf, "lnf");
    for (let l = L - 1; l >= 0; l--) {
      const a = acts[l];
      const pre = `h.${l}`;
      let dln2: Float64Array;
      if (gpt2) {
        const dhidden = linearBack(dres, a.hidden, `${pre}.fcProj`, N, C, F);
        const dfc = f64(N * F);
        geluBackward(dfc, dhidden, a.fc, N * F);
        dln2 = linearBack(dfc, a.ln2, `${pre}.fc`, N, F, C);
      } else {
        const dhidden = linearBack(dres, a.hidden, `${pre}.down`, N, C, F);
        const dgate = f64(N * F), dup = f64(N * F);
        swigluBackward(dgate, dup, dhidden, a.fc, a.up, N * F);
        dln2 = linearBack(dgate, a.ln2, `${pre}.gate`, N, F, C);
        const dln2b = linearBack(dup, a.ln2, `${pre}.up`, N, F, C);
        for (let i = 0; i < dln2.length; i++) dln2[i] += dln2b[i];
      }
      const dr1 = Float64Array.from(dres);
      normBack(dr1, dln2, a.r1, a.m2, a.r2s, `${pre}.ln2`);
      const datt = linearBack(dr1, a.att, `${pre}.attnOut`, N, C, H * D);
      const dO = f64(B * H * T * D);
      const dvMix = hooks.mixOutputBackward ? f64(B * Hkv * T * D) : null;
      const dqMix = hooks.mixOutputBackward ? f64(B * H * T * D) : null;
      if (hooks.mixOutputBackward) hooks.mixOutputBackward(l, dO, dvMix!, datt, dqMix!);
      else mergeHeadsBackward(dO, datt, B, H, T, D);
      const dq = f64(B * H * T * D), dk = f64(B * Hkv * T * D), dv = f64(B * Hkv * T * D);
      const dScale = f64(H), dSink = f64(H);
      const ap = attnParams[l];
      attentionBackward(dq, dk, dv, dScale, dSink, dO, a.q, a.k, a.v, ap.scale, ap.sink, mask, s);
      if (dvMix) { for (let i = 0; i < dv.length; i++) dv[i] += dvMix[i]; }
      hooks.attentionBackward?.(l, dScale, dSink);
      if (rope) {
        ropeRotate(dq, dq.slice(), rope.invFreq, rope.attentionFactor, positions, B, H, T, D, true);
        ropeRotate(dk, dk.slice(), rope.invFreq, rope.attentionFactor, positions, B, Hkv, T, D, true);
      }
      if (dqMix) { for (let i = 0; i < dq.length; i++) dq[i] += dqMix[i]; }
      const dqkv = f64(N * QKV);
      splitHeadsBackward(dqkv, dq, dk, dv, s);
      const dln1 = linearBack(dqkv, a.ln1, `${pre}.qkv`, N, QKV, C);
      const dx = Float64Array.from(dr1);
      normBack(dx, dln1, x[l], a.m1, a.r1s, `${pre}.ln1`);
      dres = dx;
    }
    encoderBackward(G("wte"), gpt2 ? G("wpe") : null, dres, batch.tokens, B, T, C);
  }
  return { losses, lossSum: losses.reduce((a, b) => a + b, 0), grads, logits };
}
