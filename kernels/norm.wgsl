// LayerNorm (GPT-2) and RMSNorm (Llama), forward and backward, deterministic.
// Entry points: layernormForward, layernormBackward (dx), layernormParamsPartial +
// layernormParamsReduce (dw, db); rmsnormForward, rmsnormBackward (dx), rmsnormParamsPartial +
// rmsnormParamsReduce (dw). Row kernels use one workgroup per row with a fixed shared-memory tree;
// parameter gradients are per-block partials over RB rows, then a second dispatch sums the blocks in
// order. Measured on llvmpipe (LLVM 15, 2 cores shared, load ~6; Recorder.submitTimed, median of 3),
// N = 4096, C = 768, WG = 32: layernormForward 138 ms, layernormBackward (all three dispatches)
// 175 ms, rmsnormForward 70 ms, rmsnormBackward 143 ms (18–45 M elements/s).

struct Params {
  N: u32, // rows
  C: u32,
  eps: f32,
  NB: u32, // row blocks of the parameter partials, ceil(N / RB)
}

@group(0) @binding(0) var<uniform> p: Params;

// A power of two (the reduction tree halves it).
override WG: u32 = 32;
// Rows per block of the parameter-gradient partials.
override RB: u32 = 64;
// The norm's dx is added to the residual stream's gradient, so the row backwards can accumulate.
override ACCUMULATE: bool = false;

var<workgroup> tree: array<f32, WG>;
var<workgroup> tree2: array<vec2<f32>, WG>;

// Sum over the workgroup in a fixed tree, so results depend on WG and C only.
fn workgroupSum(tid: u32, v: f32) -> f32 {
  tree[tid] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (tid < stride) { tree[tid] += tree[tid + stride]; }
    workgroupBarrier();
  }
  let total = tree[0];
  // The next call overwrites tree; every invocation must have read the total first.
  workgroupBarrier();
  return total;
}

fn workgroupSum2(tid: u32, v: vec2<f32>) -> vec2<f32> {
  tree2[tid] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (tid < stride) { tree2[tid] += tree2[tid + stride]; }
    workgroupBarrier();
  }
  let total = tree2[0];
  workgroupBarrier();
  return total;
}

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> w: array<f32>;
@group(0) @binding(6) var<storage, read> b: array<f32>;

// out: (N, C); mean, rstd: (N,); x: (N, C); w, b: (C,)
// Two passes over the row (mean, then Σ(x − mean)²) rather than E[x²] − mean², which cancels.
@compute @workgroup_size(WG)
fn layernormForward(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let row = wid.x + wid.y * groups.x;
  if (row >= p.N) { return; }
  let tid = lid.x;
  let xRow = row * p.C;
  var s = 0.0;
  for (var c = tid; c < p.C; c += WG) { s += x[xRow + c]; }
  let m = workgroupSum(tid, s) / f32(p.C);
  var v = 0.0;
  for (var c = tid; c < p.C; c += WG) {
    let d = x[xRow + c] - m;
    v += d * d;
  }
  let r = inverseSqrt(workgroupSum(tid, v) / f32(p.C) + p.eps);
  for (var c = tid; c < p.C; c += WG) {
    out[xRow + c] = (x[xRow + c] - m) * r * w[c] + b[c];
  }
  if (tid == 0u) {
    mean[row] = m;
    rstd[row] = r;
  }
}

@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> xIn: array<f32>;
@group(0) @binding(4) var<storage, read> wIn: array<f32>;
@group(0) @binding(5) var<storage, read> meanIn: array<f32>;
@group(0) @binding(6) var<storage, read> rstdIn: array<f32>;

// dx: (N, C) = or +=; dout, x: (N, C); w: (C,); mean, rstd: (N,)
// Forward was out = norm·w + b, norm = (x − mean)·rstd, so
// dx = (dnorm − mean(dnorm) − norm·mean(dnorm·norm))·rstd with dnorm = w·dout.
@compute @workgroup_size(WG)
fn layernormBackward(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let row = wid.x + wid.y * groups.x;
  if (row >= p.N) { return; }
  let tid = lid.x;
  let xRow = row * p.C;
  let m = meanIn[row];
  let r = rstdIn[row];
  var sums = vec2<f32>(0.0);
  for (var c = tid; c < p.C; c += WG) {
    let norm = (xIn[xRow + c] - m) * r;
    let dnorm = wIn[c] * dout[xRow + c];
    sums += vec2<f32>(dnorm, dnorm * norm);
  }
  let means = workgroupSum2(tid, sums) / f32(p.C);
  for (var c = tid; c < p.C; c += WG) {
    let norm = (xIn[xRow + c] - m) * r;
    let dnorm = wIn[c] * dout[xRow + c];
    var g = (dnorm - means.x - norm * means.y) * r;
    if (ACCUMULATE) { g += dx[xRow + c]; }
    dx[xRow + c] = g;
  }
}

@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
@group(0) @binding(2) var<storage, read> doutP: array<f32>;
@group(0) @binding(3) var<storage, read> xP: array<f32>;
@group(0) @binding(4) var<storage, read> meanP: array<f32>;
@group(0) @binding(5) var<storage, read> rstdP: array<f32>;

// partial: (2, NB, C) holding dw then db per block of RB rows; dout, x: (N, C); mean, rstd: (N,)
// Forward was out = norm·w + b: dw = Σ_n dout·norm, db = Σ_n dout. The invocation owning (block, c)
// adds its rows in order; neighbouring invocations read neighbouring channels of one row.
@compute @workgroup_size(WG)
fn layernormParamsPartial(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= p.NB * p.C) { return; }
  let block = i / p.C;
  let c = i - block * p.C;
  let end = min(block * RB + RB, p.N);
  var dw = 0.0;
  var db = 0.0;
  for (var n = block * RB; n < end; n++) {
    let d = doutP[n * p.C + c];
    dw += d * (xP[n * p.C + c] - meanP[n]) * rstdP[n];
    db += d;
  }
  partial[i] = dw;
  partial[p.NB * p.C + i] = db;
}

@group(0) @binding(1) var<storage, read_write> dw: array<f32>;
@group(0) @binding(2) var<storage, read_write> db: array<f32>;
@group(0) @binding(3) var<storage, read> partialIn: array<f32>;

// dw, db: (C,) +=; partial: (2, NB, C)
@compute @workgroup_size(WG)
fn layernormParamsReduce(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let c = gid.x + gid.y * groups.x * WG;
  if (c >= p.C) { return; }
  var sw = 0.0;
  var sb = 0.0;
  for (var block = 0u; block < p.NB; block++) {
    sw += partialIn[block * p.C + c];
    sb += partialIn[(p.NB + block) * p.C + c];
  }
  dw[c] += sw;
  db[c] += sb;
}

@group(0) @binding(1) var<storage, read_write> rmsOut: array<f32>;
@group(0) @binding(2) var<storage, read_write> rmsRstd: array<f32>;
@group(0) @binding(3) var<storage, read> rmsX: array<f32>;
@group(0) @binding(4) var<storage, read> rmsW: array<f32>;

// out: (N, C); rstd: (N,); x: (N, C); w: (C,)
@compute @workgroup_size(WG)
fn rmsnormForward(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let row = wid.x + wid.y * groups.x;
  if (row >= p.N) { return; }
  let tid = lid.x;
  let xRow = row * p.C;
  var s = 0.0;
  for (var c = tid; c < p.C; c += WG) {
    let v = rmsX[xRow + c];
    s += v * v;
  }
  let r = inverseSqrt(workgroupSum(tid, s) / f32(p.C) + p.eps);
  for (var c = tid; c < p.C; c += WG) {
    rmsOut[xRow + c] = rmsX[xRow + c] * r * rmsW[c];
  }
  if (tid == 0u) { rmsRstd[row] = r; }
}

@group(0) @binding(1) var<storage, read_write> rmsDx: array<f32>;
@group(0) @binding(2) var<storage, read> rmsDout: array<f32>;
@group(0) @binding(3) var<storage, read> rmsXIn: array<f32>;
@group(0) @binding(4) var<storage, read> rmsWIn: array<f32>;
@group(0) @binding(5) var<storage, read> rmsRstdIn: array<f32>;

// dx: (N, C) = or +=; dout, x: (N, C); w: (C,); rstd: (N,)
// Forward was out = norm·w, norm = x·rstd, so dx = (dnorm − norm·mean(dnorm·norm))·rstd, dnorm = w·dout.
@compute @workgroup_size(WG)
fn rmsnormBackward(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let row = wid.x + wid.y * groups.x;
  if (row >= p.N) { return; }
  let tid = lid.x;
  let xRow = row * p.C;
  let r = rmsRstdIn[row];
  var s = 0.0;
  for (var c = tid; c < p.C; c += WG) {
    s += rmsWIn[c] * rmsDout[xRow + c] * rmsXIn[xRow + c] * r;
  }
  let dnormNormMean = workgroupSum(tid, s) / f32(p.C);
  for (var c = tid; c < p.C; c += WG) {
    let norm = rmsXIn[xRow + c] * r;
    var g = (rmsWIn[c] * rmsDout[xRow + c] - norm * dnormNormMean) * r;
    if (ACCUMULATE) { g += rmsDx[xRow + c]; }
    rmsDx[xRow + c] = g;
  }
}

@group(0) @binding(1) var<storage, read_write> rmsPartial: array<f32>;
@group(0) @binding(2) var<storage, read> rmsDoutP: array<f32>;
@group(0) @binding(3) var<storage, read> rmsXP: array<f32>;
@group(0) @binding(4) var<storage, read> rmsRstdP: array<f32>;

// partial: (NB, C) holding dw per block of RB rows; dout, x: (N, C); rstd: (N,)
@compute @workgroup_size(WG)
fn rmsnormParamsPartial(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= p.NB * p.C) { return; }
  let block = i / p.C;
  let c = i - block * p.C;
  let end = min(block * RB + RB, p.N);
  var dw = 0.0;
  for (var n = block * RB; n < end; n++) {
    dw += rmsDoutP[n * p.C + c] * rmsXP[n * p.C + c] * rmsRstdP[n];
  }
  rmsPartial[i] = dw;
}

@group(0) @binding(1) var<storage, read_write> rmsDw: array<f32>;
@group(0) @binding(2) var<storage, read> rmsPartialIn: array<f32>;

// dw: (C,) +=; partial: (NB, C)
@compute @workgroup_size(WG)
fn rmsnormParamsReduce(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let c = gid.x + gid.y * groups.x * WG;
  if (c >= p.C) { return; }
  var sw = 0.0;
  for (var block = 0u; block < p.NB; block++) {
    sw += rmsPartialIn[block * p.C + c];
  }
  rmsDw[c] += sw;
}
