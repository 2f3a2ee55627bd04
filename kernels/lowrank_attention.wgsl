// Causal low-rank attention map, linear in T: out_i = s·Σ_{j≤i} (a_i·w_j)·v_j = s·a_iᵀ·S_i with
// S_i = Σ_{j≤i} w_j v_jᵀ (R×D), for a = X·U_h, w = X·W_h (T×R) and the head's values v (T×D).
// UNVERIFIED: this is the methods spec §6 reconstruction of LoRaDA's low-rank attention map (no official
// code or method section was found); it is not checked against the paper.
// Entry points: chunkSums (per-chunk Σ x_t y_tᵀ), chunkScan (exclusive prefix or, with REVERSE, suffix
// over chunks, in place), forwardChunks (out), backwardChunks (da, dw, dv). Forward = chunkSums(w, v),
// chunkScan, forwardChunks; backward = chunkSums(w, v), chunkSums(a, dout), chunkScan, chunkScan REVERSE,
// backwardChunks. T is split into chunks of TC tokens: the part of the map inside a chunk is a TC×TC
// score tile in workgroup memory, the part before (or after) it comes through the scanned R×D sums, so
// nothing T×T exists and no invocation loops over more than max(TC, R, D, ⌈T/TC⌉) elements (llvmpipe
// silently stops loops after 65,535 iterations).
// Measured on llvmpipe (LLVM 15, 2 cores shared with other jobs; Recorder.submitTimed, median of 5),
// B = 1, H = 2, Hkv = 1, T = 8192, R = 8, D = 64, TC = 16, WG = 64: forward 98 ms (chunkSums 18,
// chunkScan 1, forwardChunks 78), backward 312 ms (backwardChunks 273); ~0.5 GFLOP/s of useful work.
// TC = 8: 88 / 268 ms; TC = 32: 122 / 376 ms.

struct Params {
  B: u32,
  H: u32, // heads of a, w, out, da, dw: (B, H, T, R or D)
  HY: u32, // heads of the D-wide input (v: Hkv, or dout: H); head h reads ⌊h / (H / HY)⌋
  T: u32,
  R: u32,
  D: u32,
  NC: u32, // chunks, ⌈T / TC⌉
  scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

// Tokens per chunk. Larger chunks do more of the work as dense TC×TC tiles (TC·(R + D) per token) and
// less through the R×D sums (R·D per token); the backward keeps two TC×TC tiles in workgroup memory.
override TC: u32 = 16;
override WG: u32 = 64;
// The map's output is added to the softmax attention's output, so forwardChunks can accumulate.
override ACCUMULATE: bool = false;
// chunkScan runs from the last chunk to the first (suffix sums for the backward).
override REVERSE: bool = false;

// Score tiles of one chunk, element i·TC + j at [(i·TC + j) / 4][(i·TC + j) % 4]: scoreP holds a_i·w_j and
// scoreQ dout_i·v_j for tokens j ≤ i. Packed as vec4 because WGSL zero-fills workgroup memory and Mesa
// compiles that fill one store per element: 2·1024 f32 stores took llvmpipe ~30 s to compile, 512 vec4
// stores ~2 s (TC = 32).
override TILE4: u32 = (TC * TC + 3u) / 4u;
var<workgroup> scoreP: array<vec4<f32>, TILE4>;
var<workgroup> scoreQ: array<vec4<f32>, TILE4>;

@group(0) @binding(1) var<storage, read_write> sums: array<f32>;
@group(0) @binding(2) var<storage, read> sumX: array<f32>;
@group(0) @binding(3) var<storage, read> sumY: array<f32>;

// sums: (B, H, NC, R, D) = Σ_{t in chunk} x_t y_tᵀ; x: (B, H, T, R); y: (B, HY, T, D)
// One invocation per sum element; neighbours share x_t[r] and read neighbouring y_t[d].
@compute @workgroup_size(WG)
fn chunkSums(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let idx = gid.x + gid.y * groups.x * WG;
  let RD = p.R * p.D;
  if (idx >= p.B * p.H * p.NC * RD) { return; }
  let rd = idx % RD;
  let r = rd / p.D;
  let d = rd - r * p.D;
  let bhc = idx / RD;
  let c = bhc % p.NC;
  let bh = bhc / p.NC;
  let b = bh / p.H;
  let hy = (bh - b * p.H) / (p.H / p.HY);
  let t0 = c * TC;
  let t1 = min(t0 + TC, p.T);
  let xRow = bh * p.T * p.R + r;
  let yRow = (b * p.HY + hy) * p.T * p.D + d;
  var acc = 0.0;
  for (var t = t0; t < t1; t++) {
    acc += sumX[xRow + t * p.R] * sumY[yRow + t * p.D];
  }
  sums[idx] = acc;
}

@group(0) @binding(1) var<storage, read_write> scanned: array<f32>;

// scanned: (B, H, NC, R, D) in place, chunk sums → Σ over the chunks before (REVERSE: after) each one
// One invocation per (b, h, r, d) walks the chunks in a fixed order, so the sums are deterministic.
@compute @workgroup_size(WG)
fn chunkScan(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let idx = gid.x + gid.y * groups.x * WG;
  let RD = p.R * p.D;
  if (idx >= p.B * p.H * RD) { return; }
  let bh = idx / RD;
  let base = bh * p.NC * RD + (idx - bh * RD);
  var running = 0.0;
  for (var k = 0u; k < p.NC; k++) {
    let c = select(k, p.NC - 1u - k, REVERSE);
    let at = base + c * RD;
    let local = scanned[at];
    scanned[at] = running;
    running += local;
  }
}

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> aF: array<f32>;
@group(0) @binding(3) var<storage, read> wF: array<f32>;
@group(0) @binding(4) var<storage, read> vF: array<f32>;
@group(0) @binding(5) var<storage, read> prefixF: array<f32>;

// out: (B, H, T, D) = or +=; a, w: (B, H, T, R); v: (B, Hkv, T, D); prefix: (B, H, NC, R, D) exclusive
// One workgroup per (b, h, chunk): out_i = s·(a_i·S_{chunk start} + Σ_{chunk start ≤ j ≤ i} (a_i·w_j)·v_j).
@compute @workgroup_size(WG)
fn forwardChunks(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let chunk = wid.x + wid.y * groups.x;
  if (chunk >= p.B * p.H * p.NC) { return; }
  let tid = lid.x;
  let c = chunk % p.NC;
  let bh = chunk / p.NC;
  let b = bh / p.H;
  let hv = (bh - b * p.H) / (p.H / p.HY);
  let t0 = c * TC;
  let rows = min(TC, p.T - t0);
  let aChunk = (bh * p.T + t0) * p.R;
  let vChunk = ((b * p.HY + hv) * p.T + t0) * p.D;
  let outChunk = (bh * p.T + t0) * p.D;
  let sChunk = chunk * p.R * p.D;
  for (var e = tid; e < rows * TC; e += WG) {
    let i = e / TC;
    let j = e - i * TC;
    if (j > i) { continue; }
    var score = 0.0;
    for (var r = 0u; r < p.R; r++) {
      score += aF[aChunk + i * p.R + r] * wF[aChunk + j * p.R + r];
    }
    scoreP[e / 4u][e % 4u] = score;
  }
  workgroupBarrier();
  for (var e = tid; e < rows * p.D; e += WG) {
    let i = e / p.D;
    let d = e - i * p.D;
    var before = 0.0;
    for (var r = 0u; r < p.R; r++) {
      before += aF[aChunk + i * p.R + r] * prefixF[sChunk + r * p.D + d];
    }
    var within = 0.0;
    for (var j = 0u; j <= i; j++) {
      within += scoreP[(i * TC + j) / 4u][(i * TC + j) % 4u] * vF[vChunk + j * p.D + d];
    }
    var y = p.scale * (before + within);
    if (ACCUMULATE) { y += out[outChunk + e]; }
    out[outChunk + e] = y;
  }
}

@group(0) @binding(1) var<storage, read_write> da: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;
@group(0) @binding(3) var<storage, read_write> dv: array<f32>;
@group(0) @binding(4) var<storage, read> doutB: array<f32>;
@group(0) @binding(5) var<storage, read> aB: array<f32>;
@group(0) @binding(6) var<storage, read> wB: array<f32>;
@group(0) @binding(7) var<storage, read> vB: array<f32>;
@group(0) @binding(8) var<storage, read> prefixB: array<f32>;
@group(0) @binding(9) var<storage, read> suffixB: array<f32>;

// da, dw: (B, H, T, R); dv: (B, Hkv, T, D) +=; dout: (B, H, T, D); a, w: (B, H, T, R); v: (B, Hkv, T, D);
// prefix: (B, H, NC, R, D) exclusive Σ w vᵀ; suffix: (B, H, NC, R, D) exclusive Σ a doutᵀ over later chunks
// Inverts out_i = s·Σ_{j≤i} (a_i·w_j)·v_j; with S_i = Σ_{j≤i} w_j v_jᵀ and G_j = Σ_{i≥j} a_i dout_iᵀ:
// da_i = s·S_i·dout_i, dw_j = s·G_j·v_j, dv_j = s·G_jᵀ·w_j. One workgroup per (b, kv head, chunk) walks
// the query heads of its group in order, so dv's sum over them has one owner and a fixed order.
@compute @workgroup_size(WG)
fn backwardChunks(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let chunk = wid.x + wid.y * groups.x;
  if (chunk >= p.B * p.HY * p.NC) { return; }
  let tid = lid.x;
  let c = chunk % p.NC;
  let bg = chunk / p.NC;
  let b = bg / p.HY;
  let group = p.H / p.HY;
  let t0 = c * TC;
  let rows = min(TC, p.T - t0);
  let vChunk = (bg * p.T + t0) * p.D;
  for (var k = 0u; k < group; k++) {
    let bh = b * p.H + (bg - b * p.HY) * group + k;
    let aChunk = (bh * p.T + t0) * p.R;
    let oChunk = (bh * p.T + t0) * p.D;
    let sChunk = (bh * p.NC + c) * p.R * p.D;
    for (var e = tid; e < rows * TC; e += WG) {
      let i = e / TC;
      let j = e - i * TC;
      if (j > i) { continue; }
      var aw = 0.0;
      for (var r = 0u; r < p.R; r++) {
        aw += aB[aChunk + i * p.R + r] * wB[aChunk + j * p.R + r];
      }
      var ov = 0.0;
      for (var d = 0u; d < p.D; d++) {
        ov += doutB[oChunk + i * p.D + d] * vB[vChunk + j * p.D + d];
      }
      scoreP[e / 4u][e % 4u] = aw;
      scoreQ[e / 4u][e % 4u] = ov;
    }
    workgroupBarrier();
    // da_i = s·(S_{chunk start}·dout_i + Σ_{chunk start ≤ j ≤ i} (dout_i·v_j)·w_j)
    for (var e = tid; e < rows * p.R; e += WG) {
      let i = e / p.R;
      let r = e - i * p.R;
      var before = 0.0;
      for (var d = 0u; d < p.D; d++) {
        before += prefixB[sChunk + r * p.D + d] * doutB[oChunk + i * p.D + d];
      }
      var within = 0.0;
      for (var j = 0u; j <= i; j++) {
        within += scoreQ[(i * TC + j) / 4u][(i * TC + j) % 4u] * wB[aChunk + j * p.R + r];
      }
      da[aChunk + e] = p.scale * (before + within);
    }
    // dw_j = s·(G_{after chunk}·v_j + Σ_{j ≤ i < chunk end} (dout_i·v_j)·a_i)
    for (var e = tid; e < rows * p.R; e += WG) {
      let j = e / p.R;
      let r = e - j * p.R;
      var after = 0.0;
      for (var d = 0u; d < p.D; d++) {
        after += suffixB[sChunk + r * p.D + d] * vB[vChunk + j * p.D + d];
      }
      var within = 0.0;
      for (var i = j; i < rows; i++) {
        within += scoreQ[(i * TC + j) / 4u][(i * TC + j) % 4u] * aB[aChunk + i * p.R + r];
      }
      dw[aChunk + e] = p.scale * (after + within);
    }
    // dv_j += s·(G_{after chunk}ᵀ·w_j + Σ_{j ≤ i < chunk end} (a_i·w_j)·dout_i); invocation e owns the
    // same dv element for every head k, so the adds need no barrier.
    for (var e = tid; e < rows * p.D; e += WG) {
      let j = e / p.D;
      let d = e - j * p.D;
      var after = 0.0;
      for (var r = 0u; r < p.R; r++) {
        after += suffixB[sChunk + r * p.D + d] * wB[aChunk + j * p.R + r];
      }
      var within = 0.0;
      for (var i = j; i < rows; i++) {
        within += scoreP[(i * TC + j) / 4u][(i * TC + j) % 4u] * doutB[oChunk + i * p.D + d];
      }
      dv[vChunk + e] += p.scale * (after + within);
    }
    // The next head overwrites the score tiles; every invocation must be done reading them.
    workgroupBarrier();
  }
}
