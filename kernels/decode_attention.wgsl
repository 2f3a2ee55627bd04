// Decode attention: the one query row of a generation step against a per-layer KV cache (src/model/decode.ts).
// Entry points: appendKv (the new token's k and v into cache row p), decodeAttentionPartial (one invocation
// per (key split, head): an online softmax over its keysPerSplit keys, written as (max, sum, acc)) and
// decodeAttentionCombine (one invocation per (head, vec4 of D): every live split merged in ascending order,
// the sink first). No atomics, no workgroup memory: each output has one owner and a fixed order, and the
// split size is fixed by the launcher (from the cache length, not from p), so a step's bits depend only on
// its inputs and p, never on how many steps a submit holds.
// The position p comes from a device buffer (`state[0]`): the query is token p and sees keys 0 … p, so one
// recording replays every step; splits past p exit at once, which keeps a step O(p), not O(Tmax).
// Measured on llvmpipe (LLVM 15, 2 cores shared with other jobs, load ≈ 2–3; Recorder.submitTimed, median of
// 7), H = Hkv = 4, D = 32, 64 keys per split, both dispatches: 4096 keys 2.6 ms, 32768 keys 11 ms (min 6.6).
// A whole decode step of the 2-layer d-128 model is timed by benchmarks/generate.ts.

struct Params {
  H: u32,
  Hkv: u32,
  Tmax: u32, // rows of each cache head
  keysPerSplit: u32,
  splits: u32, // split slots per head in the partial buffers, ⌈Tmax / keysPerSplit⌉
  hasSink: u32,
}

override D: u32; // head size, a multiple of 4, ≤ 4·MAX_DV
override WG: u32 = 64u;
override BLOCK: u32 = 4u; // keys per step of the key loop (≤ MAX_BLOCK): one accumulator rescale per block

// Register arrays need a constant size; the loops over D/4 and a block have constant trip counts and unroll.
const MAX_DV: u32 = 32u;
const MAX_BLOCK: u32 = 16u;
// As in attention_mask.wgsl: finite, so exp(MASKED − m) is exactly 0 without infinity arithmetic.
const MASKED: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> p: Params;

// ---- appendKv ----
@group(0) @binding(1) var<storage, read_write> kCacheOut: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> vCacheOut: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> kNew: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> vNew: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> appendState: array<u32>;

// kCacheOut, vCacheOut: (Hkv, Tmax, D); kNew, vNew: (Hkv, D); appendState: (≥ 1,) u32, p = [0].
// One invocation per (kv head, vec4): cache row p ← the new row. A p ≥ Tmax writes nothing.
@compute @workgroup_size(WG)
fn appendKv(@builtin(global_invocation_id) gid: vec3<u32>) {
  let DV = D / 4u;
  let e = gid.x;
  if (e >= p.Hkv * DV) { return; }
  let pos = appendState[0];
  if (pos >= p.Tmax) { return; }
  let h = e / DV;
  let x = e - h * DV;
  let at = (h * p.Tmax + pos) * DV + x;
  kCacheOut[at] = kNew[e];
  vCacheOut[at] = vNew[e];
}

// ---- decodeAttentionPartial ----
@group(0) @binding(1) var<storage, read_write> partAcc: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> partStat: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> kCache: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> vCache: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> logitScale: array<f32>;
@group(0) @binding(7) var<storage, read> partState: array<u32>;

// partAcc: (H, splits, D); partStat: (H, splits) of (max, Σ exp(s − max)); q: (H, D); kCache, vCache:
// (Hkv, Tmax, D); logitScale: (H,); partState: p = [0]. Grid (⌈splits / WG⌉, H).
// Split s of head h covers keys [s·keysPerSplit, min((s + 1)·keysPerSplit, p + 1)); splits past p + 1
// write nothing (the combine never reads them).
@compute @workgroup_size(WG)
fn decodeAttentionPartial(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let DV = D / 4u;
  let s = wid.x * WG + lid;
  let h = wid.y;
  let n = min(partState[0] + 1u, p.Tmax);
  let j0 = s * p.keysPerSplit;
  if (s >= p.splits || j0 >= n) { return; }
  let j1 = min(j0 + p.keysPerSplit, n);
  let kvBase = (h / (p.H / p.Hkv)) * p.Tmax;
  let scale = logitScale[h];

  var qReg: array<vec4<f32>, MAX_DV>;
  var acc: array<vec4<f32>, MAX_DV>;
  for (var x = 0u; x < DV; x++) {
    qReg[x] = q[h * DV + x] * scale;
    acc[x] = vec4<f32>(0.0);
  }
  var rowMax = MASKED;
  var rowSum = 0.0;
  var sc: array<f32, MAX_BLOCK>;
  for (var jb = j0; jb < j1; jb += BLOCK) {
    var blockMax = MASKED;
    for (var jj = 0u; jj < BLOCK; jj++) {
      let j = jb + jj;
      let jc = min(j, j1 - 1u); // keys past the split are masked; the clamp keeps loads in bounds
      var dotv = 0.0;
      for (var x = 0u; x < DV; x++) {
        dotv += dot(qReg[x], kCache[(kvBase + jc) * DV + x]);
      }
      sc[jj] = select(MASKED, dotv, j < j1);
      blockMax = max(blockMax, sc[jj]);
    }
    let newMax = max(rowMax, blockMax);
    let alpha = exp(rowMax - newMax);
    rowMax = newMax;
    var sum = rowSum * alpha;
    for (var x = 0u; x < DV; x++) {
      acc[x] *= alpha;
    }
    for (var jj = 0u; jj < BLOCK; jj++) {
      let e = sc[jj];
      let prob = select(0.0, exp(e - newMax), e > MASKED);
      sum += prob;
      let jc = min(jb + jj, j1 - 1u);
      for (var x = 0u; x < DV; x++) {
        acc[x] += prob * vCache[(kvBase + jc) * DV + x];
      }
    }
    rowSum = sum;
  }
  let slot = h * p.splits + s;
  for (var x = 0u; x < DV; x++) {
    partAcc[slot * DV + x] = acc[x];
  }
  partStat[slot] = vec2<f32>(rowMax, rowSum);
}

// ---- decodeAttentionCombine ----
@group(0) @binding(1) var<storage, read_write> o: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> combAcc: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> combStat: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> sinkLogit: array<f32>;
@group(0) @binding(5) var<storage, read> combState: array<u32>;

// o: (H, D); combAcc: (H, splits, D); combStat: (H, splits); sinkLogit: (H,); combState: p = [0].
// One invocation per (head, vec4 of D); each recomputes its head's max and sum in the same order, so the
// D/4 invocations of a head agree bit for bit. o = (Σ_s acc_s·e^(m_s − M)) / (e^(sink − M) + Σ_s l_s·e^(m_s − M)).
@compute @workgroup_size(WG)
fn decodeAttentionCombine(@builtin(global_invocation_id) gid: vec3<u32>) {
  let DV = D / 4u;
  let e = gid.x;
  if (e >= p.H * DV) { return; }
  let h = e / DV;
  let x = e - h * DV;
  let n = min(combState[0] + 1u, p.Tmax);
  let live = (n + p.keysPerSplit - 1u) / p.keysPerSplit;
  let base = h * p.splits;
  var m = MASKED;
  if (p.hasSink != 0u) {
    m = sinkLogit[h];
  }
  for (var s = 0u; s < live; s++) {
    m = max(m, combStat[base + s].x);
  }
  var total = 0.0;
  if (p.hasSink != 0u) {
    total = exp(sinkLogit[h] - m);
  }
  var acc = vec4<f32>(0.0);
  for (var s = 0u; s < live; s++) {
    let st = combStat[base + s];
    let w = exp(st.x - m);
    total += st.y * w;
    acc += combAcc[(base + s) * DV + x] * w;
  }
  o[e] = select(vec4<f32>(0.0), acc / total, total > 0.0);
}
