// HyLoRADA's kernels (methods spec §3.2, §3.3); everything else of the method is a matmul.
// Versions:
//   positionScale        out (N, R) = s(p_n)·x (N, R) with s(p) = 1 + σ(w)·tanh(b[min(⌊log2(p+1)⌋, 63)]);
//                        the adapter scales its rank-R activation rows (the same as scaling the delta rows);
//   positionGradPartial  one workgroup per chunk of 64 rows: g_n = Σ_k du[n,k]·z[n,k], then thread j sums the
//                        chunk's ∂/∂b[j] terms in row order and thread 0 the ∂/∂w terms;
//   positionGradFinal    64 threads sum the chunks in order and add into the gradient table (b, then w);
//   seqSumPartial/Final  per-sequence column sums of (B, T, C): chunks of 256 rows, then the chunks in order,
//                        times a scale (and optionally the learnable α, read from its buffer);
//   addSeqRows           out[b, t, :] += f·v[b, :] for every t of sequence b;
//   gateSoftmax          softmax over the K landmark logits of each sequence (one thread per sequence);
//   gateBackward         the gate's softmax backward and dα, in one invocation (B·K values).
// No atomics: every output has one owner and a fixed summation order, so runs repeat bit for bit.
// Speed on llvmpipe (Mesa, 2 cores shared with other jobs, load ~4), min–median of 5 timestamped submits:
//   positionScale (4096, 8) 0.54–0.56 ms; positionGradPartial + Final (4096, 8) 0.96–1.05 ms;
//   seqSumPartial + Final (1, 4096, 768) 4.3–4.7 ms; addSeqRows (1, 4096, 768) 30–36 ms (scalar, one
//   division per element; a vec4 version would follow elementwise.wgsl if it ever mattered next to the
//   LM head's matmul).

struct ScaleParams {
  N: u32,
  R: u32,
  w: u32, // index of this module's w in bw (64 + its slot)
}

struct GradParams {
  N: u32,
  R: u32,
  w: u32,
  chunks: u32, // ⌈N / 64⌉
}

struct SeqParams {
  B: u32,
  T: u32,
  C: u32,
  chunks: u32, // ⌈T / SEQ_CHUNK⌉
  scale: f32,
  useAlpha: u32, // 1: multiply by alpha[0] too
}

struct GateParams {
  B: u32,
  K: u32,
}

override WG: u32 = 64;
const BUCKETS: u32 = 64u;
const ROWS: u32 = 64u; // rows per positionGradPartial workgroup (its workgroup size)
const SEQ_CHUNK: u32 = 256u;

fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
  return gid.x + gid.y * groups.x * WG;
}

// bucket(p) = min(⌊log2(p + 1)⌋, 63).
fn bucket(p: u32) -> u32 {
  return min(firstLeadingBit(p + 1u), BUCKETS - 1u);
}

fn sigmoid(x: f32) -> f32 {
  return 1.0 / (1.0 + exp(-x));
}

// tanh is ±1 in f32 beyond |x| ≈ 9; the clamp keeps backends that build tanh from exp away from inf/inf.
fn tanhBias(x: f32) -> f32 {
  return tanh(clamp(x, -15.0, 15.0));
}

// ---- position bias

@group(0) @binding(0) var<uniform> sp: ScaleParams;
@group(0) @binding(1) var<storage, read_write> scaled: array<f32>;
@group(0) @binding(2) var<storage, read> scaleX: array<f32>;
@group(0) @binding(3) var<storage, read> scalePositions: array<u32>;
@group(0) @binding(4) var<storage, read> scaleBw: array<f32>;

// scaled, scaleX: (N, R); scalePositions: (N,) u32; scaleBw: (64 + W,) = b, then the w of every slot
@compute @workgroup_size(WG)
fn positionScale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = flat(gid, groups);
  if (i >= sp.N * sp.R) { return; }
  let n = i / sp.R;
  let s = 1.0 + sigmoid(scaleBw[sp.w]) * tanhBias(scaleBw[bucket(scalePositions[n])]);
  scaled[i] = s * scaleX[i];
}

@group(0) @binding(0) var<uniform> gp: GradParams;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
@group(0) @binding(2) var<storage, read> gradDu: array<f32>;
@group(0) @binding(3) var<storage, read> gradZ: array<f32>;
@group(0) @binding(4) var<storage, read> gradPositions: array<u32>;
@group(0) @binding(5) var<storage, read> gradBw: array<f32>;

var<workgroup> rowB: array<f32, ROWS>;
var<workgroup> rowW: array<f32, ROWS>;
var<workgroup> rowBucket: array<u32, ROWS>;

// partial: (chunks, 65); gradDu, gradZ: (N, R); gradPositions: (N,) u32; gradBw: (64 + W,)
// Forward u = s(p)·z, so ∂loss/∂s_n = g_n = Σ_k du[n,k]·z[n,k];
// ∂s/∂b[j] = σ(w)·(1 − tanh²(b[j])) for rows of bucket j, ∂s/∂w = tanh(b[j])·σ(w)·(1 − σ(w)).
@compute @workgroup_size(ROWS)
fn positionGradPartial(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) t: u32,
) {
  let chunk = wid.x + wid.y * groups.x;
  if (chunk >= gp.chunks) { return; }
  let n = chunk * ROWS + t;
  var dB = 0.0;
  var dW = 0.0;
  var j = BUCKETS; // no bucket: padding rows of the last chunk
  if (n < gp.N) {
    var g = 0.0;
    for (var k = 0u; k < gp.R; k++) {
      g = fma(gradDu[n * gp.R + k], gradZ[n * gp.R + k], g);
    }
    j = bucket(gradPositions[n]);
    let th = tanhBias(gradBw[j]);
    let sig = sigmoid(gradBw[gp.w]);
    dB = g * sig * (1.0 - th * th);
    dW = g * th * sig * (1.0 - sig);
  }
  rowB[t] = dB;
  rowW[t] = dW;
  rowBucket[t] = j;
  workgroupBarrier();
  var acc = 0.0;
  for (var i = 0u; i < ROWS; i++) {
    if (rowBucket[i] == t) { acc += rowB[i]; }
  }
  partial[chunk * (BUCKETS + 1u) + t] = acc;
  if (t == 0u) {
    var accW = 0.0;
    for (var i = 0u; i < ROWS; i++) { accW += rowW[i]; }
    partial[chunk * (BUCKETS + 1u) + BUCKETS] = accW;
  }
}

@group(0) @binding(0) var<uniform> fp: GradParams;
@group(0) @binding(1) var<storage, read_write> dbw: array<f32>;
@group(0) @binding(2) var<storage, read> finalPartial: array<f32>;

// dbw: (64 + W,) gradient table slice (b, then the w of every slot), accumulated; finalPartial: (chunks, 65)
@compute @workgroup_size(BUCKETS)
fn positionGradFinal(@builtin(local_invocation_index) t: u32) {
  var acc = 0.0;
  for (var c = 0u; c < fp.chunks; c++) { acc += finalPartial[c * (BUCKETS + 1u) + t]; }
  dbw[t] += acc;
  if (t == 0u) {
    var accW = 0.0;
    for (var c = 0u; c < fp.chunks; c++) { accW += finalPartial[c * (BUCKETS + 1u) + BUCKETS]; }
    dbw[fp.w] += accW;
  }
}

// ---- landmarks

@group(0) @binding(0) var<uniform> seqP: SeqParams;
@group(0) @binding(1) var<storage, read_write> seqPartial: array<f32>;
@group(0) @binding(2) var<storage, read> seqX: array<f32>;

// seqPartial: (B, chunks, C); seqX: (B, T, C)
@compute @workgroup_size(WG)
fn seqSumPartial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = flat(gid, groups);
  if (i >= seqP.B * seqP.chunks * seqP.C) { return; }
  let c = i % seqP.C;
  let bc = i / seqP.C;
  let ch = bc % seqP.chunks;
  let b = bc / seqP.chunks;
  let t1 = min(ch * SEQ_CHUNK + SEQ_CHUNK, seqP.T);
  var acc = 0.0;
  for (var t = ch * SEQ_CHUNK; t < t1; t++) { acc += seqX[(b * seqP.T + t) * seqP.C + c]; }
  seqPartial[i] = acc;
}

@group(0) @binding(0) var<uniform> sumP: SeqParams;
@group(0) @binding(1) var<storage, read_write> seqSum: array<f32>;
@group(0) @binding(2) var<storage, read> sumPartial: array<f32>;
@group(0) @binding(3) var<storage, read> sumAlpha: array<f32>;

// seqSum: (B, C) = scale·[alpha]·Σ_chunks sumPartial (B, chunks, C); sumAlpha: (1,)
@compute @workgroup_size(WG)
fn seqSumFinal(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = flat(gid, groups);
  if (i >= sumP.B * sumP.C) { return; }
  let c = i % sumP.C;
  let b = i / sumP.C;
  var acc = 0.0;
  for (var ch = 0u; ch < sumP.chunks; ch++) { acc += sumPartial[(b * sumP.chunks + ch) * sumP.C + c]; }
  let f = select(1.0, sumAlpha[0], sumP.useAlpha == 1u) * sumP.scale;
  seqSum[i] = f * acc;
}

@group(0) @binding(0) var<uniform> addP: SeqParams;
@group(0) @binding(1) var<storage, read_write> addOut: array<f32>;
@group(0) @binding(2) var<storage, read> addV: array<f32>;
@group(0) @binding(3) var<storage, read> addAlpha: array<f32>;

// addOut: (B, T, C) += scale·[alpha]·addV (B, C) broadcast over T; addAlpha: (1,)
@compute @workgroup_size(WG)
fn addSeqRows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = flat(gid, groups);
  if (i >= addP.B * addP.T * addP.C) { return; }
  let c = i % addP.C;
  let b = i / (addP.T * addP.C);
  let f = select(1.0, addAlpha[0], addP.useAlpha == 1u) * addP.scale;
  addOut[i] = fma(f, addV[b * addP.C + c], addOut[i]);
}

@group(0) @binding(0) var<uniform> gateP: GateParams;
@group(0) @binding(1) var<storage, read_write> gate: array<f32>;
@group(0) @binding(2) var<storage, read> gateLogits: array<f32>;

// gate, gateLogits: (B, K); gate[b] = softmax(gateLogits[b])
@compute @workgroup_size(WG)
fn gateSoftmax(@builtin(global_invocation_id) gid: vec3<u32>) {
  let b = gid.x;
  if (b >= gateP.B) { return; }
  let row = b * gateP.K;
  var top = gateLogits[row];
  for (var k = 1u; k < gateP.K; k++) { top = max(top, gateLogits[row + k]); }
  var sum = 0.0;
  for (var k = 0u; k < gateP.K; k++) { sum += exp(gateLogits[row + k] - top); }
  for (var k = 0u; k < gateP.K; k++) { gate[row + k] = exp(gateLogits[row + k] - top) / sum; }
}

@group(0) @binding(0) var<uniform> gbP: GateParams;
@group(0) @binding(1) var<storage, read_write> gateDz: array<f32>;
@group(0) @binding(2) var<storage, read_write> gateDAlpha: array<f32>;
@group(0) @binding(3) var<storage, read> gbGate: array<f32>;
@group(0) @binding(4) var<storage, read> gbLs: array<f32>;
@group(0) @binding(5) var<storage, read> gbAlpha: array<f32>;

// gateDz, gbGate, gbLs: (B, K); gateDAlpha, gbAlpha: (1,).
// Forward c_b = α·Σ_k g[b,k]·L[k]; with ls[b,k] = L[k]·S_b (S_b = Σ_t dh'[b,t]) the gate gradient is
// dg = α·ls, so dz = g∘(dg − g·dg) = α·g∘(ls − g·ls) and dα += Σ_b g_b·ls_b.
@compute @workgroup_size(1)
fn gateBackward() {
  let a = gbAlpha[0];
  var dA = 0.0;
  for (var b = 0u; b < gbP.B; b++) {
    let row = b * gbP.K;
    var dot = 0.0;
    for (var k = 0u; k < gbP.K; k++) { dot = fma(gbGate[row + k], gbLs[row + k], dot); }
    for (var k = 0u; k < gbP.K; k++) { gateDz[row + k] = a * gbGate[row + k] * (gbLs[row + k] - dot); }
    dA += dot;
  }
  gateDAlpha[0] += dA;
}
