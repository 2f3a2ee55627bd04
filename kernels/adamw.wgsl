// AdamW (torch.optim.AdamW, amsgrad off) over a parameter table: every trainable tensor in one dispatch.
// Entry points: adamw (no clipping), adamwClipped (gradients scaled by min(1, maxNorm/(‖g‖ + 1e-6)) with
// ‖g‖² read on the device from a reduceFull(sumsq) output, so clipping needs no readback).
// Workgroup w updates chunk w: ELEMS·WG consecutive elements of one tensor, listed by the host in
// `chunks` as (tensor index, first element). The per-step values live in `step`, a small buffer the host
// rewrites before each submit, so one recorded step is replayed for the whole run.
// Speed (llvmpipe, 2 cores shared with other jobs, load ≈ 9, timestamp queries, median of 5, WG 256,
// ELEMS 4): 10M parameters: adamw 405 ms; reduceFull(sumsq) + adamwClipped 438 ms (~25M params/s).

struct Params {
  chunkCount: u32,
}

struct TableEntry {
  offset: u32, // first element of the tensor in params/grads/m/v
  size: u32,
  lrScale: f32,
  weightDecay: f32,
}

// The differences 1 − β and the bias corrections come from the host in f64: in f32, 1 − 0.999 is
// off by 1.3e-5 relative because 0.999 itself is rounded.
struct Step {
  lr: f32,
  beta1: f32,
  beta2: f32,
  oneMinusBeta1: f32,
  oneMinusBeta2: f32,
  eps: f32,
  biasCorrection1: f32, // 1 − β1ᵗ
  sqrtBiasCorrection2: f32, // √(1 − β2ᵗ)
  maxNorm: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> grads: array<f32>;
@group(0) @binding(5) var<storage, read> table: array<TableEntry>;
@group(0) @binding(6) var<storage, read> chunks: array<vec2<u32>>;
@group(0) @binding(7) var<storage, read> step: Step;
@group(0) @binding(8) var<storage, read> gradSumSq: array<f32>;

override WG: u32 = 256;
override ELEMS: u32 = 4;

// p ← p·(1 − lr·wd); m ← m + (1 − β1)(g − m); v ← β2·v + (1 − β2)·g²;
// p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε), with g = grad·clip.
fn updateChunk(tid: u32, wid: vec3<u32>, groups: vec3<u32>, clip: f32) {
  let c = wid.x + wid.y * groups.x;
  if (c >= p.chunkCount) { return; }
  let chunk = chunks[c];
  let entry = table[chunk.x];
  let lr = step.lr * entry.lrScale;
  let decay = 1.0 - lr * entry.weightDecay;
  let stepSize = lr / step.biasCorrection1;
  for (var k = 0u; k < ELEMS; k++) {
    let j = chunk.y + k * WG + tid;
    if (j >= entry.size) { break; }
    let i = entry.offset + j;
    let g = grads[i] * clip;
    let mi = m[i] + step.oneMinusBeta1 * (g - m[i]);
    let vi = step.beta2 * v[i] + step.oneMinusBeta2 * g * g;
    m[i] = mi;
    v[i] = vi;
    let denom = sqrt(vi) / step.sqrtBiasCorrection2 + step.eps;
    params[i] = params[i] * decay - stepSize * mi / denom;
  }
}

// params, m, v: (total,); grads: (total,); table: (tensors,); chunks: (chunkCount,); step: (9,)
@compute @workgroup_size(WG)
fn adamw(
  @builtin(local_invocation_index) tid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  updateChunk(tid, wid, groups, 1.0);
}

// params, m, v: (total,); grads: (total,); table: (tensors,); chunks: (chunkCount,); step: (9,); gradSumSq: (1,)
@compute @workgroup_size(WG)
fn adamwClipped(
  @builtin(local_invocation_index) tid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  // torch.nn.utils.clip_grad_norm_: coefficient max_norm / (total_norm + 1e-6), clamped to 1.
  let clip = min(1.0, step.maxNorm / (sqrt(gradSumSq[0]) + 1e-6));
  updateChunk(tid, wid, groups, clip);
}
