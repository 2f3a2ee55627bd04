// Plain SGD over a table of tensors with per-tensor gradient-norm clipping (FocuSFT's inner loop):
//   g_k ← g_k · c / (‖g_k‖ + 1e-12) where ‖g_k‖ > c (each tensor on its own), p_k ← p_k − lr·g_k.
// Entry points: sumSqPartials (workgroup w sums the squares of chunk w: WG·ELEMS consecutive elements of
// one tensor, listed by the host as (tensor index, first element)), sumSqTensors (one workgroup per
// tensor sums its chunks' partials) and sgdClipped (workgroup w updates chunk w). Every sum has a fixed
// order that depends only on the table, so the bits never depend on timing. A tensor whose ‖g‖² is not
// finite (Inf or NaN) is left unchanged: FocuSFT skips the inner update when the loss is not finite.
// Speed: memory-bound, one read of the gradients for the norms and one read-modify-write of the
// parameters; not measured separately (a few hundred thousand elements per step in the tests).

struct Params {
  chunkCount: u32,
  tensors: u32,
  lr: f32,
  maxNorm: f32, // 0: no clipping
}

// One tensor: offset and size in params/grads, and its chunks [firstChunk, firstChunk + chunks).
struct TableEntry {
  offset: u32,
  size: u32,
  firstChunk: u32,
  chunks: u32,
}

override WG: u32 = 64; // a power of two: the trees halve it
override ELEMS: u32 = 16;

var<workgroup> tree: array<f32, WG>;

fn treeSum(t: u32) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { tree[t] = tree[t] + tree[t + s]; }
    workgroupBarrier();
  }
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<storage, read> sqGrads: array<f32>;
@group(0) @binding(3) var<storage, read> sqTable: array<TableEntry>;
@group(0) @binding(4) var<storage, read> sqChunks: array<vec2<u32>>;

// partials: (chunkCount,); grads: (total,); table: (tensors,); chunks: (chunkCount, 2)
@compute @workgroup_size(WG)
fn sumSqPartials(
  @builtin(local_invocation_index) t: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let c = wid.x + wid.y * groups.x;
  if (c >= p.chunkCount) { return; } // uniform per workgroup: no barrier is skipped by some threads only
  let chunk = sqChunks[c];
  let entry = sqTable[chunk.x];
  var acc = 0.0;
  for (var k = 0u; k < ELEMS; k++) {
    let j = chunk.y + k * WG + t;
    if (j < entry.size) {
      let g = sqGrads[entry.offset + j];
      acc = fma(g, g, acc);
    }
  }
  tree[t] = acc;
  treeSum(t);
  if (t == 0u) { partials[c] = tree[0]; }
}

@group(0) @binding(1) var<storage, read_write> sumSq: array<f32>;
@group(0) @binding(2) var<storage, read> tPartials: array<f32>;
@group(0) @binding(3) var<storage, read> tTable: array<TableEntry>;

// sumSq: (tensors,) Σ g² of each tensor; partials: (chunkCount,); table: (tensors,)
@compute @workgroup_size(WG)
fn sumSqTensors(
  @builtin(local_invocation_index) t: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let k = wid.x + wid.y * groups.x;
  if (k >= p.tensors) { return; }
  let entry = tTable[k];
  var acc = 0.0;
  for (var i = t; i < entry.chunks; i += WG) {
    acc = acc + tPartials[entry.firstChunk + i];
  }
  tree[t] = acc;
  treeSum(t);
  if (t == 0u) { sumSq[k] = tree[0]; }
}

@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read> uSumSq: array<f32>;
@group(0) @binding(4) var<storage, read> uTable: array<TableEntry>;
@group(0) @binding(5) var<storage, read> uChunks: array<vec2<u32>>;

// Inf and NaN have an all-ones exponent; a bit test survives compilers that assume finite floats.
fn isFinite(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// params: (total,); grads: (total,); sumSq: (tensors,); table: (tensors,); chunks: (chunkCount, 2)
@compute @workgroup_size(WG)
fn sgdClipped(
  @builtin(local_invocation_index) t: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let c = wid.x + wid.y * groups.x;
  if (c >= p.chunkCount) { return; }
  let chunk = uChunks[c];
  let entry = uTable[chunk.x];
  let s = uSumSq[chunk.x];
  if (!isFinite(s)) { return; }
  let norm = sqrt(s);
  var factor = 1.0;
  if (p.maxNorm > 0.0 && norm > p.maxNorm) { factor = p.maxNorm / (norm + 1e-12); }
  for (var k = 0u; k < ELEMS; k++) {
    let j = chunk.y + k * WG + t;
    if (j < entry.size) {
      let i = entry.offset + j;
      params[i] = params[i] - p.lr * (grads[i] * factor);
    }
  }
}
