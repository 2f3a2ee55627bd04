// Attention mass per key category, for diagnostics (sink mass, context engagement, distractor mass),
// without any T×T buffer: for each (batch, head, query row i) the softmax probabilities
//   p_ij = exp(logitScale_h·(q_i·k_j) − lse_i)
// over the keys j the head's mask lets i see (the same windows and turn rule as attention_fwd.wgsl, from
// attention_mask.wgsl), summed per category bit c < CATS of the key's u32 category mask, plus the mass of
// keys with none of those bits, plus the sink logit's own mass exp(sink_h − lse_i). lse is the attention
// forward's (sink included), so a row's columns over disjoint categories sum to 1.
// Version: one, `attentionMass`: a workgroup owns WG consecutive query rows of one head, one row per
// thread, its scaled q row in registers; keys stream one at a time at a workgroup-uniform address (a
// broadcast on GPUs). O(T²·D) work, O(T) memory. Each output element has one owner and sums its keys in
// ascending order; passes over key ranges [begin, end) resume from the partial sums stored by the pass
// before (an exact f32 store and reload), so the results do not depend on the pass length.
// Measured on llvmpipe (LLVM 15, 2 cores shared with other jobs; Recorder.submitTimed, best of 3), B = 1,
// H = 1, D = 32, causal, all rows, 5 categories (FLOPs = 2·D per visible pair): T = 2048: 27 ms,
// 5.0 GFLOP/s; T = 8192: 0.47 s, 4.6 GFLOP/s (two key passes there).
//! import attention_mask

struct Params {
  H: u32,
  Hkv: u32,
  T: u32,
  G: u32, // group size of the group modes
  hasSink: u32,
  rowBegin: u32, // the query rows measured are [rowBegin, rowBegin + rows)
  rows: u32,
  begin: u32, // this dispatch streams keys [begin, end) and adds to the sums stored by earlier passes
  end: u32,
  firstPass: u32,
}

override D: u32; // head size, a multiple of 4, at most 4·MAX_REG
override WG: u32 = 64u;
override CATS: u32 = 4u; // category bits counted, at most MAX_CATS

const MAX_REG: u32 = 32u;
const MAX_CATS: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> mass: array<f32>;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> headMode: array<u32>;
@group(0) @binding(6) var<storage, read> logitScale: array<f32>;
@group(0) @binding(7) var<storage, read> sinkLogit: array<f32>;
@group(0) @binding(8) var<storage, read> tokenTurn: array<u32>;
@group(0) @binding(9) var<storage, read> tokenFlags: array<u32>;
@group(0) @binding(10) var<storage, read> categories: array<u32>;

// mass: (B, H, rows, CATS + 2), columns [category 0 … CATS − 1, no category, sink logit]; q: (B, H, T, D);
// k: (B, Hkv, T, D); lse: (B, H, T); headMode, logitScale, sinkLogit: (H,); tokenTurn, tokenFlags,
// categories: (B, T). Grid (⌈rows/WG⌉, H, B).
@compute @workgroup_size(WG)
fn attentionMass(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let DV = D / 4u;
  let T = p.T;
  let h = wid.y;
  let b = wid.z;
  let first = wid.x * WG; // the workgroup's first row, counted from rowBegin
  let row = first + lid;
  let live = row < p.rows;
  let i = p.rowBegin + min(row, p.rows - 1u); // rows past the range compute row rows − 1 and store nothing
  let qRow = (b * p.H + h) * T + i;
  let kvBase = (b * p.Hkv + h / (p.H / p.Hkv)) * T;
  let mode = headMode[h];
  let scale = logitScale[h];
  let cols = CATS + 2u;
  let out = ((b * p.H + h) * p.rows + min(row, p.rows - 1u)) * cols;

  var qReg: array<vec4<f32>, MAX_REG>;
  for (var x = 0u; x < DV; x++) {
    qReg[x] = q[qRow * DV + x] * scale;
  }
  let rowLse = lse[qRow];
  // A row that sees no key and has no sink has lse = MASKED: every mass is 0.
  let seen = rowLse > MASKED;
  var acc: array<f32, MAX_CATS + 2u>;
  if (p.firstPass != 0u) {
    for (var c = 0u; c < cols; c++) {
      acc[c] = 0.0;
    }
    if (p.hasSink != 0u && seen) {
      acc[CATS + 1u] = exp(sinkLogit[h] - rowLse);
    }
  } else {
    for (var c = 0u; c < cols; c++) {
      acc[c] = mass[out + c];
    }
  }
  let lo = keyStart(mode, p.G, i);
  let hi = keyEnd(mode, T, i);
  var turnI = 0u;
  var flagI = TOKEN_PAD;
  if (mode == MODE_TURNS) {
    turnI = tokenTurn[b * T + i];
    flagI = tokenFlags[b * T + i];
  }
  let catMask = (1u << CATS) - 1u;
  // Keys any row of the workgroup may see: windows move forward with i.
  let iLast = p.rowBegin + min(first + WG, p.rows) - 1u;
  let jEnd = min(keyEnd(mode, T, iLast), p.end);
  for (var j = max(keyStart(mode, p.G, p.rowBegin + first), p.begin); j < jEnd; j++) {
    var s = 0.0;
    for (var x = 0u; x < DV; x++) {
      s += dot(qReg[x], k[(kvBase + j) * DV + x]);
    }
    var visible = seen && j >= lo && j < hi;
    if (mode == MODE_TURNS) {
      visible = visible && turnVisible(i, turnI, flagI, j, tokenTurn[b * T + j], tokenFlags[b * T + j]);
    }
    // Masked keys never reach exp with their score (no overflow, no infinity arithmetic).
    let prob = select(0.0, exp(select(MASKED, s - rowLse, visible)), visible);
    let cat = categories[b * T + j];
    for (var c = 0u; c < CATS; c++) {
      acc[c] += select(0.0, prob, ((cat >> c) & 1u) != 0u);
    }
    acc[CATS] += select(0.0, prob, (cat & catMask) == 0u);
  }
  if (live) {
    for (var c = 0u; c < cols; c++) {
      mass[out + c] = acc[c];
    }
  }
}
