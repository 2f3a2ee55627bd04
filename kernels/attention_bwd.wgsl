// Flash attention backward: three kernels and a per-head reduction, no atomics, fixed summation orders.
// Versions: one each. `attentionRowDot` Δ = rowsum(dO∘O); `attentionBackwardQuery` dQ, R query rows per
// thread, recomputing P = exp(s − lse) key by key (and per-row dScale/dSink terms);
// `attentionBackwardKeyValue` dK and dV, a workgroup owning R·WG key rows (R per thread) of one kv head,
// looping over the H/Hkv query heads of its group and their visible query rows in a fixed order;
// `attentionHeadGrads` sums the per-row terms per head. As in the forward, streamed rows are read at
// workgroup-uniform addresses, each load serves R owned rows, and nothing lives in workgroup memory except
// the final tree of attentionHeadGrads. Main loops step by whole blocks of BLOCK rows and, on CPU adapters,
// run in passes that add to the outputs: llvmpipe caps an invocation's loop iterations at 65,535 in total
// (see attention_fwd.wgsl).
// Measured on llvmpipe (LLVM 15, 2 cores shared with other jobs), D = 32, B = 1, H = 1, R = 4, BLOCK = 4,
// `deno run -A benchmarks/attention.ts`, forward + backward (FLOPs = 14·D per visible pair):
//   causal T = 2048: 94 ms, 10.0 GFLOP/s; T = 8192: 1.40 s, 10.8 GFLOP/s; shifted groups G = T/4 at
//   T = 8192: 0.42 s, 0.30× causal. T = 32768, H = 2, Hkv = 1: 36 s (tests/attention_long_test.ts).
//! import attention_mask

struct Params {
  H: u32,
  Hkv: u32,
  T: u32,
  G: u32, // group size of the group modes
  hasSink: u32,
  // This dispatch streams keys (forward, dQ) or queries (dK/dV) [begin, end) only and adds to the state
  // left in the outputs by the passes before it, unless firstPass.
  begin: u32,
  end: u32,
  firstPass: u32,
}

struct Rows {
  n: u32,
}

struct HeadSums {
  B: u32,
  H: u32,
  T: u32,
}

override D: u32; // head size, a multiple of 4, R·D ≤ 4·MAX_REG
override WG: u32 = 64u; // threads per workgroup
override R: u32 = 1u; // owned rows per thread: rows r·WG + lid of the workgroup's tile, r < R
override BLOCK: u32 = 4u; // streamed rows per step of the main loops

// Register arrays need a constant size; loops over r < R, x < D/4 and a block unroll (see
// attention_fwd.wgsl for the limits the launcher keeps).
const MAX_REG: u32 = 32u;
const MAX_R: u32 = 4u;

// ---- attentionRowDot ----
@group(0) @binding(0) var<uniform> rows: Rows;
@group(0) @binding(1) var<storage, read_write> delta: array<f32>;
@group(0) @binding(2) var<storage, read> rowO: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> rowDO: array<vec4<f32>>;

// delta: (B, H, T) ← Σ_d o·dO; o, dO: (B, H, T, D). 1-D grid of rows (spilling into y).
@compute @workgroup_size(WG)
fn attentionRowDot(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let row = gid.x + gid.y * groups.x * WG;
  if (row >= rows.n) {
    return;
  }
  let DV = D / 4u;
  var sum = 0.0;
  for (var x = 0u; x < DV; x++) {
    sum += dot(rowO[row * DV + x], rowDO[row * DV + x]);
  }
  delta[row] = sum;
}

// ---- attentionBackwardQuery ----
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> rowTerms: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> dO: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> lse: array<f32>;
@group(0) @binding(8) var<storage, read> rowDelta: array<f32>;
@group(0) @binding(9) var<storage, read> headMode: array<u32>;
@group(0) @binding(10) var<storage, read> logitScale: array<f32>;
@group(0) @binding(11) var<storage, read> sinkLogit: array<f32>;
@group(0) @binding(12) var<storage, read> tokenTurn: array<u32>;
@group(0) @binding(13) var<storage, read> tokenFlags: array<u32>;

// dq: (B, H, T, D); rowTerms: (B, H, T) of (dScale, dSink) terms; q, dO: (B, H, T, D); k, v: (B, Hkv, T, D);
// lse, rowDelta: (B, H, T); headMode, logitScale, sinkLogit: (H,); tokenTurn, tokenFlags: (B, T).
// Grid (⌈T/(R·WG)⌉, H, B).
@compute @workgroup_size(WG)
fn attentionBackwardQuery(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let DV = D / 4u;
  let T = p.T;
  let h = wid.y;
  let b = wid.z;
  let i0 = wid.x * WG * R;
  let iLast = min(i0 + WG * R, T) - 1u;
  let rowBase = (b * p.H + h) * T;
  let kvBase = (b * p.Hkv + h / (p.H / p.Hkv)) * T;
  let mode = headMode[h];
  let scale = logitScale[h];

  var qReg: array<vec4<f32>, MAX_REG>; // row r at r·D/4
  var dOReg: array<vec4<f32>, MAX_REG>;
  var acc: array<vec4<f32>, MAX_REG>; // Σ_j dS_ij k_j, before the logit scale
  var lo: array<u32, MAX_R>;
  var hi: array<u32, MAX_R>;
  var turnI: array<u32, MAX_R>;
  var flagI: array<u32, MAX_R>;
  var rowLse: array<f32, MAX_R>;
  var rowD: array<f32, MAX_R>;
  for (var r = 0u; r < R; r++) {
    let i = i0 + r * WG + lid;
    let row = rowBase + min(i, T - 1u);
    for (var x = 0u; x < DV; x++) {
      qReg[r * DV + x] = q[row * DV + x];
      dOReg[r * DV + x] = dO[row * DV + x];
    }
    rowLse[r] = lse[row];
    rowD[r] = rowDelta[row];
    // The row's key window; empty for rows past T.
    lo[r] = keyStart(mode, p.G, i);
    hi[r] = select(0u, min(keyEnd(mode, T, i), p.end), i < T);
    turnI[r] = 0u;
    flagI[r] = TOKEN_PAD;
    if (mode == MODE_TURNS && i < T) {
      turnI[r] = tokenTurn[b * T + i];
      flagI[r] = tokenFlags[b * T + i];
    }
  }
  // Real tokens' turn ids never decrease: see attention_fwd.wgsl.
  var latest = 0u;
  if (mode == MODE_TURNS) {
    for (var t = i0; t <= iLast; t++) {
      if ((tokenFlags[b * T + t] & TOKEN_PAD) == 0u) {
        latest = max(latest, tokenTurn[b * T + t]);
      }
    }
  }

  var dotQK: array<f32, MAX_R>;
  var dotDV: array<f32, MAX_R>;
  let jEnd = min(keyEnd(mode, T, iLast), p.end);
  for (var j0 = max(keyStart(mode, p.G, i0), p.begin); j0 < jEnd; j0 += BLOCK) {
    if (mode == MODE_TURNS && (tokenFlags[b * T + j0] & TOKEN_PAD) == 0u && tokenTurn[b * T + j0] > latest) {
      break;
    }
    for (var jj = 0u; jj < BLOCK; jj++) {
      let j = j0 + jj;
      let jc = min(j, T - 1u); // keys past T are masked; the clamp keeps their loads in bounds
      for (var r = 0u; r < R; r++) {
        dotQK[r] = 0.0;
        dotDV[r] = 0.0;
      }
      for (var x = 0u; x < DV; x++) {
        let kx = k[(kvBase + jc) * DV + x];
        let vx = v[(kvBase + jc) * DV + x];
        for (var r = 0u; r < R; r++) {
          dotQK[r] += dot(qReg[r * DV + x], kx);
          dotDV[r] += dot(dOReg[r * DV + x], vx);
        }
      }
      var turnJ = 0u;
      var flagJ = 0u;
      if (mode == MODE_TURNS) {
        turnJ = tokenTurn[b * T + jc];
        flagJ = tokenFlags[b * T + jc];
      }
      for (var r = 0u; r < R; r++) {
        var visible = j >= lo[r] && j < hi[r];
        if (mode == MODE_TURNS) {
          visible = visible && turnVisible(i0 + r * WG + lid, turnI[r], flagI[r], j, turnJ, flagJ);
        }
        // The argument, not the result, is selected: exp of a masked pair's score could overflow.
        let prob = exp(select(MASKED, scale * dotQK[r] - rowLse[r], visible));
        dotQK[r] = prob * (dotDV[r] - rowD[r]); // now dS_ij
      }
      for (var x = 0u; x < DV; x++) {
        let kx = k[(kvBase + jc) * DV + x];
        for (var r = 0u; r < R; r++) {
          acc[r * DV + x] += dotQK[r] * kx;
        }
      }
    }
  }

  for (var r = 0u; r < R; r++) {
    let i = i0 + r * WG + lid;
    if (i < T) {
      // dScale_h = Σ_ij dS_ij (q_i·k_j) = Σ_i q_i·acc_i;  dSink_h = Σ_i p_sink,i (0 − Δ_i). Later passes add
      // their keys' share to what the earlier ones stored.
      var terms = vec2<f32>(0.0);
      if (p.firstPass != 0u) {
        if (p.hasSink != 0u) {
          terms.y = -exp(sinkLogit[h] - rowLse[r]) * rowD[r];
        }
      } else {
        terms = rowTerms[rowBase + i];
      }
      for (var x = 0u; x < DV; x++) {
        let before = select(dq[(rowBase + i) * DV + x], vec4<f32>(0.0), p.firstPass != 0u);
        dq[(rowBase + i) * DV + x] = before + acc[r * DV + x] * scale;
        terms.x += dot(qReg[r * DV + x], acc[r * DV + x]);
      }
      rowTerms[rowBase + i] = terms;
    }
  }
}

// ---- attentionBackwardKeyValue ----
@group(0) @binding(1) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dv: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> kvQ: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> kvK: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> kvV: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> kvDO: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> kvLse: array<f32>;
@group(0) @binding(8) var<storage, read> kvDelta: array<f32>;
@group(0) @binding(9) var<storage, read> kvHeadMode: array<u32>;
@group(0) @binding(10) var<storage, read> kvLogitScale: array<f32>;
@group(0) @binding(11) var<storage, read> kvTokenTurn: array<u32>;
@group(0) @binding(12) var<storage, read> kvTokenFlags: array<u32>;

// dk, dv: (B, Hkv, T, D); q, dO: (B, H, T, D); k, v: (B, Hkv, T, D); lse, delta: (B, H, T);
// headMode, logitScale: (H,); tokenTurn, tokenFlags: (B, T). Grid (⌈T/(R·WG)⌉, Hkv, B).
@compute @workgroup_size(WG)
fn attentionBackwardKeyValue(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let DV = D / 4u;
  let T = p.T;
  let hkv = wid.y;
  let b = wid.z;
  let j0 = wid.x * WG * R;
  let jLast = min(j0 + WG * R, T) - 1u;
  let kvBase = (b * p.Hkv + hkv) * T;
  let groupHeads = p.H / p.Hkv;

  var kReg: array<vec4<f32>, MAX_REG>; // key row r at r·D/4
  var vReg: array<vec4<f32>, MAX_REG>;
  var dkAcc: array<vec4<f32>, MAX_REG>; // a later pass adds to what the earlier ones stored
  var dvAcc: array<vec4<f32>, MAX_REG>;
  var turnJ: array<u32, MAX_R>;
  var flagJ: array<u32, MAX_R>;
  for (var r = 0u; r < R; r++) {
    let j = j0 + r * WG + lid;
    let row = kvBase + min(j, T - 1u);
    for (var x = 0u; x < DV; x++) {
      kReg[r * DV + x] = kvK[row * DV + x];
      vReg[r * DV + x] = kvV[row * DV + x];
      if (p.firstPass == 0u && j < T) {
        dkAcc[r * DV + x] = dk[row * DV + x];
        dvAcc[r * DV + x] = dv[row * DV + x];
      }
    }
    turnJ[r] = 0u;
    flagJ[r] = TOKEN_PAD;
    if (j < T) {
      turnJ[r] = kvTokenTurn[b * T + j];
      flagJ[r] = kvTokenFlags[b * T + j];
    }
  }
  // The earliest turn among the tile's real keys: a real query of an earlier turn sees none of them
  // (turn ids of real tokens never decrease), and a padding query sees nothing.
  var earliest = 0xffffffffu;
  for (var t = j0; t <= jLast; t++) {
    if ((kvTokenFlags[b * T + t] & TOKEN_PAD) == 0u) {
      earliest = min(earliest, kvTokenTurn[b * T + t]);
    }
  }

  var lo: array<u32, MAX_R>;
  var hi: array<u32, MAX_R>;
  var dotQK: array<f32, MAX_R>;
  var dotDV: array<f32, MAX_R>;
  var prob: array<f32, MAX_R>;
  for (var hh = 0u; hh < groupHeads; hh++) {
    let h = hkv * groupHeads + hh;
    let mode = kvHeadMode[h];
    let scale = kvLogitScale[h];
    let rowBase = (b * p.H + h) * T;
    // Each key's query window; empty past T.
    for (var r = 0u; r < R; r++) {
      let j = j0 + r * WG + lid;
      lo[r] = queryStart(mode, j);
      hi[r] = select(0u, min(queryEnd(mode, p.G, T, j), p.end), j < T);
    }
    let iEnd = min(queryEnd(mode, p.G, T, jLast), p.end);
    for (var i0 = max(queryStart(mode, j0), p.begin); i0 < iEnd; i0 += BLOCK) {
      if (mode == MODE_TURNS) {
        // Skip a block whose queries are all padding or in turns before every key of this workgroup.
        var seen = false;
        for (var ii = 0u; ii < BLOCK; ii++) {
          let ic = min(i0 + ii, T - 1u);
          let real = (kvTokenFlags[b * T + ic] & TOKEN_PAD) == 0u;
          seen = seen || (real && kvTokenTurn[b * T + ic] >= earliest);
        }
        if (!seen) {
          continue;
        }
      }
      for (var ii = 0u; ii < BLOCK; ii++) {
        let i = i0 + ii;
        let ic = min(i, T - 1u); // queries past T are masked; the clamp keeps their loads in bounds
        let row = rowBase + ic;
        for (var r = 0u; r < R; r++) {
          dotQK[r] = 0.0;
          dotDV[r] = 0.0;
        }
        for (var x = 0u; x < DV; x++) {
          let qx = kvQ[row * DV + x];
          let dox = kvDO[row * DV + x];
          for (var r = 0u; r < R; r++) {
            dotQK[r] += dot(kReg[r * DV + x], qx);
            dotDV[r] += dot(vReg[r * DV + x], dox);
          }
        }
        var turnI = 0u;
        var flagI = 0u;
        if (mode == MODE_TURNS) {
          turnI = kvTokenTurn[b * T + ic];
          flagI = kvTokenFlags[b * T + ic];
        }
        let rowLse = kvLse[row];
        let rowD = kvDelta[row];
        for (var r = 0u; r < R; r++) {
          var visible = i >= lo[r] && i < hi[r];
          if (mode == MODE_TURNS) {
            visible = visible && turnVisible(i, turnI, flagI, j0 + r * WG + lid, turnJ[r], flagJ[r]);
          }
          prob[r] = exp(select(MASKED, scale * dotQK[r] - rowLse, visible));
          dotQK[r] = scale * prob[r] * (dotDV[r] - rowD); // now the scaled dS_ij
        }
        for (var x = 0u; x < DV; x++) {
          let qx = kvQ[row * DV + x];
          let dox = kvDO[row * DV + x];
          for (var r = 0u; r < R; r++) {
            dvAcc[r * DV + x] += prob[r] * dox;
            dkAcc[r * DV + x] += dotQK[r] * qx;
          }
        }
      }
    }
  }
  for (var r = 0u; r < R; r++) {
    let j = j0 + r * WG + lid;
    if (j < T) {
      for (var x = 0u; x < DV; x++) {
        dk[(kvBase + j) * DV + x] = dkAcc[r * DV + x];
        dv[(kvBase + j) * DV + x] = dvAcc[r * DV + x];
      }
    }
  }
}

// ---- attentionHeadGrads ----
@group(0) @binding(0) var<uniform> sums: HeadSums;
@group(0) @binding(1) var<storage, read_write> dScale: array<f32>;
@group(0) @binding(2) var<storage, read_write> dSink: array<f32>;
@group(0) @binding(3) var<storage, read> terms: array<vec2<f32>>;

var<workgroup> partial: array<vec2<f32>, WG>;

// dScale, dSink: (H,) ← Σ over batch and tokens of the row terms (B, H, T) of (dScale, dSink). Grid (H).
// Thread t sums rows t, t + WG, … of each batch in order, then a fixed tree over the workgroup.
@compute @workgroup_size(WG)
fn attentionHeadGrads(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let h = wid.x;
  var sum = vec2<f32>(0.0);
  for (var b = 0u; b < sums.B; b++) {
    let base = (b * sums.H + h) * sums.T;
    for (var t = lid; t < sums.T; t += WG) {
      sum += terms[base + t];
    }
  }
  partial[lid] = sum;
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    workgroupBarrier();
    if (lid < stride) {
      partial[lid] += partial[lid + stride];
    }
  }
  if (lid == 0u) {
    dScale[h] = partial[0].x;
    dSink[h] = partial[0].y;
  }
}
