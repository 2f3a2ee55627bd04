// Flash attention forward (FlashAttention-2 split): O and the row log-sum-exp, the T×T scores never stored.
// Versions: one, `attentionForward`: a workgroup owns R·WG consecutive query rows of one head, R rows per
// thread, their q rows and output accumulators in registers; keys stream in blocks of BLOCK with an online
// softmax (one rescale per block). Every thread reads the same key row at the same time (a
// workgroup-uniform address: a broadcast on GPUs), and each loaded key serves R rows: llvmpipe loads
// storage buffers lane by lane, so loads, not FLOPs, bound it, and R = 4 runs ~3× faster than R = 1.
// No workgroup memory: on Mesa's GL path naga zero-initialises workgroup arrays element by element, which
// made tiled versions take 30–100 s to compile there.
// On llvmpipe every loop iteration of an invocation counts against a shared cap of 65,535 (gallivm ends
// the shader there, silently), so the key loop steps by whole blocks, and since its compiler still leaves
// some inner loops rolled (~3 counted iterations per key), the launcher splits the keys into passes of 2048
// on CPU adapters, each resuming from the (o, lse) the previous one stored (Params.begin/end/firstPass).
// Measured on llvmpipe (LLVM 15, 2 cores shared with other jobs), D = 32, B = 1, H = 1, R = 4, BLOCK = 4,
// `deno run -A benchmarks/attention.ts` (FLOPs = 4·D per visible pair):
//   causal T = 2048: 32 ms, 8.3 GFLOP/s; T = 8192: 0.49 s, 8.8 GFLOP/s (R = 1: 3 GFLOP/s);
//   shifted groups G = T/4 at T = 8192: 0.15 s, 0.31× causal.
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

override D: u32; // head size, a multiple of 4, R·D ≤ 4·MAX_REG
override WG: u32 = 64u; // threads per workgroup
override R: u32 = 1u; // query rows per thread: rows i0 + r·WG + lid, r < R; each key load serves R rows
override BLOCK: u32 = 4u; // keys per step of the key loop

// Register arrays need a constant size. The loops over r < R, x < D/4 and a block have constant trip
// counts and unroll, so these arrays live in registers; the launcher keeps R·D/4 ≤ MAX_REG and
// BLOCK·R·D/4 ≤ 128 (on llvmpipe, larger arrays or bodies stop being unrolled, compile for 20 s and run
// 2–3× slower).
const MAX_REG: u32 = 32u;
const MAX_R: u32 = 4u;
const MAX_S: u32 = 64u; // R·BLOCK ≤ MAX_S

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> o: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> headMode: array<u32>;
@group(0) @binding(7) var<storage, read> logitScale: array<f32>;
@group(0) @binding(8) var<storage, read> sinkLogit: array<f32>;
@group(0) @binding(9) var<storage, read> tokenTurn: array<u32>;
@group(0) @binding(10) var<storage, read> tokenFlags: array<u32>;

// q, o: (B, H, T, D); k, v: (B, Hkv, T, D); lse: (B, H, T); headMode, logitScale, sinkLogit: (H,);
// tokenTurn, tokenFlags: (B, T). Grid (⌈T/(R·WG)⌉, H, B).
@compute @workgroup_size(WG)
fn attentionForward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let DV = D / 4u;
  let T = p.T;
  let h = wid.y;
  let b = wid.z;
  let i0 = wid.x * WG * R;
  let iLast = min(i0 + WG * R, T) - 1u;
  let kvBase = (b * p.Hkv + h / (p.H / p.Hkv)) * T;
  let mode = headMode[h];
  let scale = logitScale[h];

  var qReg: array<vec4<f32>, MAX_REG>; // row r at r·D/4, pre-multiplied by the head's logit scale
  var acc: array<vec4<f32>, MAX_REG>;
  var lo: array<u32, MAX_R>;
  var hi: array<u32, MAX_R>;
  var turnI: array<u32, MAX_R>;
  var flagI: array<u32, MAX_R>;
  var rowMax: array<f32, MAX_R>;
  var rowSum: array<f32, MAX_R>;
  for (var r = 0u; r < R; r++) {
    let i = i0 + r * WG + lid;
    let qRow = (b * p.H + h) * T + min(i, T - 1u);
    for (var x = 0u; x < DV; x++) {
      qReg[r * DV + x] = q[qRow * DV + x] * scale;
    }
    // The row's key window; empty for rows past T.
    lo[r] = keyStart(mode, p.G, i);
    hi[r] = select(0u, min(keyEnd(mode, T, i), p.end), i < T);
    turnI[r] = 0u;
    flagI[r] = TOKEN_PAD;
    if (mode == MODE_TURNS && i < T) {
      turnI[r] = tokenTurn[b * T + i];
      flagI[r] = tokenFlags[b * T + i];
    }
    // Online softmax state: running max and sum, the sink counted in both. A later pass resumes from
    // the stored row: (o, lse) is the state max = lse, sum = 1, acc = o.
    if (p.firstPass != 0u) {
      rowMax[r] = MASKED;
      rowSum[r] = 0.0;
      if (p.hasSink != 0u) {
        rowMax[r] = sinkLogit[h];
        rowSum[r] = 1.0;
      }
    } else if (i < T) {
      rowMax[r] = lse[qRow];
      rowSum[r] = select(0.0, 1.0, rowMax[r] > MASKED);
      for (var x = 0u; x < DV; x++) {
        acc[r * DV + x] = o[qRow * DV + x];
      }
    }
  }
  // Real tokens' turn ids never decrease, so a key block starting at a real token of a later turn than
  // every real row here, and all blocks after it, are invisible to the workgroup.
  var latest = 0u;
  if (mode == MODE_TURNS) {
    for (var t = i0; t <= iLast; t++) {
      if ((tokenFlags[b * T + t] & TOKEN_PAD) == 0u) {
        latest = max(latest, tokenTurn[b * T + t]);
      }
    }
  }

  var s: array<f32, MAX_S>;
  var dots: array<f32, MAX_R>;
  let jEnd = min(keyEnd(mode, T, iLast), p.end);
  for (var j0 = max(keyStart(mode, p.G, i0), p.begin); j0 < jEnd; j0 += BLOCK) {
    if (mode == MODE_TURNS && (tokenFlags[b * T + j0] & TOKEN_PAD) == 0u && tokenTurn[b * T + j0] > latest) {
      break;
    }
    for (var jj = 0u; jj < BLOCK; jj++) {
      let j = j0 + jj;
      let jc = min(j, T - 1u); // keys past T are masked; the clamp keeps their loads in bounds
      for (var r = 0u; r < R; r++) {
        dots[r] = 0.0;
      }
      for (var x = 0u; x < DV; x++) {
        let kx = k[(kvBase + jc) * DV + x];
        for (var r = 0u; r < R; r++) {
          dots[r] += dot(qReg[r * DV + x], kx);
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
        s[r * BLOCK + jj] = select(MASKED, dots[r], visible);
      }
    }
    for (var r = 0u; r < R; r++) {
      var blockMax = MASKED;
      for (var jj = 0u; jj < BLOCK; jj++) {
        blockMax = max(blockMax, s[r * BLOCK + jj]);
      }
      let newMax = max(rowMax[r], blockMax);
      let alpha = exp(rowMax[r] - newMax);
      rowMax[r] = newMax;
      var sum = rowSum[r] * alpha;
      for (var jj = 0u; jj < BLOCK; jj++) {
        let e = s[r * BLOCK + jj];
        let prob = select(0.0, exp(e - newMax), e > MASKED);
        s[r * BLOCK + jj] = prob;
        sum += prob;
      }
      rowSum[r] = sum;
      for (var x = 0u; x < DV; x++) {
        acc[r * DV + x] *= alpha;
      }
    }
    for (var jj = 0u; jj < BLOCK; jj++) {
      let jc = min(j0 + jj, T - 1u);
      for (var x = 0u; x < DV; x++) {
        let vx = v[(kvBase + jc) * DV + x];
        for (var r = 0u; r < R; r++) {
          acc[r * DV + x] += s[r * BLOCK + jj] * vx;
        }
      }
    }
  }

  // A row that sees no key and has no sink has rowSum = 0: its output is 0 and its lse MASKED.
  for (var r = 0u; r < R; r++) {
    let i = i0 + r * WG + lid;
    if (i < T) {
      let qRow = (b * p.H + h) * T + i;
      let inv = select(0.0, 1.0 / rowSum[r], rowSum[r] > 0.0);
      for (var x = 0u; x < DV; x++) {
        o[qRow * DV + x] = acc[r * DV + x] * inv;
      }
      lse[qRow] = select(MASKED, rowMax[r] + log(rowSum[r]), rowSum[r] > 0.0);
    }
  }
}
