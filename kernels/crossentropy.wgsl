// Fused softmax + cross-entropy over a vocabulary, forward and backward in one pass per row.
// Entry points: crossEntropy (dlogits to its own buffer), crossEntropyInPlace (dlogits over logits).
// One workgroup per row (2-D grid past 65535 rows); each thread keeps an online (max, sum) over
// v = tid, tid + WG, … and a fixed tree merges them, so results depend on (V, WG) only.
// Speed (llvmpipe, 2 cores shared with other jobs, load ≈ 9, timestamp queries, median of 5): N=256
// V=50257: crossEntropy 552 ms, crossEntropyInPlace 436 ms (two exp per logit; ~25M logits/s).
// Targets outside [0, V) other than the ignore index give NaN loss and gradients (loud, not clamped).

struct Params {
  N: u32,
  V: u32,
  gradScale: f32, // usually 1 / (number of counted tokens)
  ignoreIndex: i32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> losses: array<f32>;
@group(0) @binding(2) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> targets: array<i32>;
@group(0) @binding(5) var<storage, read> weights: array<f32>;

// crossEntropyInPlace binds one read_write buffer that holds logits on entry and dlogits on exit.
@group(0) @binding(2) var<storage, read_write> logitsInPlace: array<f32>;
@group(0) @binding(3) var<storage, read> targetsInPlace: array<i32>;
@group(0) @binding(4) var<storage, read> weightsInPlace: array<f32>;

override WG: u32 = 256; // a power of two: the merge tree halves it

const LOWEST: f32 = -3.4028234e38; // WGSL has no infinity literal

var<workgroup> treeMax: array<f32, WG>;
var<workgroup> treeSum: array<f32, WG>;
var<workgroup> targetLogit: f32;

fn rowOf(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
  return wid.x + wid.y * groups.x;
}

// Folds x into the running (max, sum of exp(· − max)).
fn online(state: vec2<f32>, x: f32) -> vec2<f32> {
  if (x > state.x) {
    return vec2<f32>(x, state.y * exp(state.x - x) + 1.0);
  }
  return vec2<f32>(state.x, state.y + exp(x - state.x));
}

// Merges every thread's (max, sum) in a fixed tree and returns log Σ exp(x) of the row.
fn rowLogSumExp(tid: u32, state: vec2<f32>) -> f32 {
  treeMax[tid] = state.x;
  treeSum[tid] = state.y;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (tid < stride) {
      let ma = treeMax[tid];
      let mb = treeMax[tid + stride];
      let m = max(ma, mb);
      treeSum[tid] = treeSum[tid] * exp(ma - m) + treeSum[tid + stride] * exp(mb - m);
      treeMax[tid] = m;
    }
    workgroupBarrier();
  }
  return treeMax[0] + log(treeSum[0]);
}

struct RowTarget {
  index: u32,
  ignored: bool,
  valid: bool,
}

fn rowTarget(label: i32) -> RowTarget {
  let ignored = label == p.ignoreIndex;
  return RowTarget(u32(label), ignored, !ignored && label >= 0 && u32(label) < p.V);
}

fn nan() -> f32 {
  return bitcast<f32>(0x7fc00000u);
}

// The row's loss −log p[target] and the factor on (softmax − onehot): weight·gradScale.
fn lossAndScale(t: RowTarget, lse: f32, weight: f32) -> vec2<f32> {
  if (t.ignored) {
    return vec2<f32>(0.0, 0.0);
  }
  if (!t.valid) {
    return vec2<f32>(nan(), nan());
  }
  return vec2<f32>(lse - targetLogit, weight * p.gradScale);
}

// losses: (N,); dlogits: (N, V); logits: (N, V); targets: (N,) i32; weights: (N,)
@compute @workgroup_size(WG)
fn crossEntropy(
  @builtin(local_invocation_index) tid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let row = rowOf(wid, groups);
  if (row >= p.N) { return; }
  let start = row * p.V;
  let t = rowTarget(targets[row]);
  if (tid == 0u) {
    targetLogit = select(0.0, logits[start + min(t.index, p.V - 1u)], t.valid);
  }
  var state = vec2<f32>(LOWEST, 0.0);
  for (var v = tid; v < p.V; v += WG) {
    state = online(state, logits[start + v]);
  }
  let lse = rowLogSumExp(tid, state);
  let ls = lossAndScale(t, lse, weights[row]);
  if (tid == 0u) {
    losses[row] = ls.x;
  }
  for (var v = tid; v < p.V; v += WG) {
    let onehot = select(0.0, 1.0, t.valid && v == t.index);
    dlogits[start + v] = (exp(logits[start + v] - lse) - onehot) * ls.y;
  }
}

// losses: (N,); logitsInPlace: (N, V) logits in, dlogits out; targets: (N,) i32; weights: (N,)
@compute @workgroup_size(WG)
fn crossEntropyInPlace(
  @builtin(local_invocation_index) tid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let row = rowOf(wid, groups);
  if (row >= p.N) { return; }
  let start = row * p.V;
  let t = rowTarget(targetsInPlace[row]);
  // Read before the merge's barriers; another thread overwrites logits[target] afterwards.
  if (tid == 0u) {
    targetLogit = select(0.0, logitsInPlace[start + min(t.index, p.V - 1u)], t.valid);
  }
  var state = vec2<f32>(LOWEST, 0.0);
  for (var v = tid; v < p.V; v += WG) {
    state = online(state, logitsInPlace[start + v]);
  }
  let lse = rowLogSumExp(tid, state);
  let ls = lossAndScale(t, lse, weightsInPlace[row]);
  if (tid == 0u) {
    losses[row] = ls.x;
  }
  for (var v = tid; v < p.V; v += WG) {
    let onehot = select(0.0, 1.0, t.valid && v == t.index);
    logitsInPlace[start + v] = (exp(logitsInPlace[start + v] - lse) - onehot) * ls.y;
  }
}
