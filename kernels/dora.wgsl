// DoRA (weight-decomposed LoRA) kernels; every sum in a fixed order, no atomics.
// Versions: rowNorm (one workgroup per output row, WG threads each summing columns t, t + WG, … in
// order, then a shared-memory tree), forward and scaleGrad (one invocation per element),
// magnitudeGrad (16 columns × 16 row lanes per workgroup, each lane summing rows in order, then a
// tree over the lanes).
// rowNorm costs rows·cols·R fused multiply-adds (B·A is never formed); the others are one pass over
// (rows, narrow). Speed on llvmpipe (Mesa, 2 cores shared with other jobs, load ~6), min–median of 5
// submitTimed runs: rowNorm 768 × 768, R = 8: 71–96 ms; forward (2048, 768): 52–78 ms; scaleGrad
// (2048, 768): 16–24 ms; magnitudeGrad (2048, 768): 18–25 ms. Not measured on a GPU.
//
// The effective weight is W' = diag(m/n)·(W0 + s·B·A) with n the row norms of W0 + s·B·A; the ratio
// m/n is taken as exactly 1 where m == n: WGSL lets f32 division err by 2.5 ulp, and DoRA at its
// initialisation (m computed by rowNorm itself) must leave the base model's outputs bit for bit.

struct NormParams {
  rows: u32, // rows of the adapted block (d_out)
  cols: u32, // d_in
  R: u32, // rank
  rowOffset: u32, // first row of the block in W
  scale: f32, // s
}

struct ColumnParams {
  rows: u32, // N: rows of the activations
  wide: u32, // W: columns of the site's output
  narrow: u32, // w: columns of the adapted block (d_out)
  off: u32, // first column of the block in the site's output
}

override WG: u32 = 64; // rowNorm: a power of two, the tree halves it
override EW_WG: u32 = 256; // forward, scaleGrad
const COLS: u32 = 16u; // magnitudeGrad: columns per workgroup
const LANES: u32 = 16u; // magnitudeGrad: row lanes per column, a power of two

var<workgroup> tree: array<f32, WG>;
var<workgroup> lanes: array<f32, 256>; // COLS · LANES

fn ratio(m: f32, n: f32) -> f32 {
  return select(m / n, 1.0, m == n);
}

@group(0) @binding(0) var<uniform> normP: NormParams;
@group(0) @binding(1) var<storage, read_write> norms: array<f32>;
@group(0) @binding(2) var<storage, read> normW: array<f32>;
@group(0) @binding(3) var<storage, read> normA: array<f32>;
@group(0) @binding(4) var<storage, read> normB: array<f32>;

// norms: (rows,); W: (≥ rowOffset + rows, cols); A: (R, cols); B: (rows, R)
// norms[i] = ‖W[rowOffset + i, :] + s·(B·A)[i, :]‖, with (B·A)[i, j] = Σ_k B[i, k]·A[k, j] (k in order).
@compute @workgroup_size(WG)
fn rowNorm(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) t: u32,
) {
  let i = wid.x + wid.y * groups.x;
  if (i >= normP.rows) { return; }
  let wRow = (normP.rowOffset + i) * normP.cols;
  let bRow = i * normP.R;
  var acc = 0.0;
  for (var j = t; j < normP.cols; j += WG) {
    var ba = 0.0;
    for (var k = 0u; k < normP.R; k++) {
      ba = fma(normB[bRow + k], normA[k * normP.cols + j], ba);
    }
    let v = normW[wRow + j] + normP.scale * ba;
    acc = fma(v, v, acc);
  }
  tree[t] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { tree[t] = tree[t] + tree[t + s]; }
    workgroupBarrier();
  }
  if (t == 0u) { norms[i] = sqrt(tree[0]); }
}

fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
  return gid.x + gid.y * groups.x * EW_WG;
}

@group(0) @binding(0) var<uniform> colP: ColumnParams;
@group(0) @binding(1) var<storage, read_write> fwdY: array<f32>;
@group(0) @binding(2) var<storage, read> fwdBase: array<f32>;
@group(0) @binding(3) var<storage, read> fwdLora: array<f32>;
@group(0) @binding(4) var<storage, read> fwdM: array<f32>;
@group(0) @binding(5) var<storage, read> fwdNorms: array<f32>;

// y: (rows, wide); base, lora: (rows, narrow); m, norms: (narrow,)
// y[n, off + j] += (g − 1)·base[n, j] + g·lora[n, j] with g = m[j]/norms[j] (PEFT's DoRA forward:
// base = W0·x without bias, lora = s·B·A·x).
@compute @workgroup_size(EW_WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = flat(gid, groups);
  if (i >= colP.rows * colP.narrow) { return; }
  let n = i / colP.narrow;
  let j = i - n * colP.narrow;
  let g = ratio(fwdM[j], fwdNorms[j]);
  let at = n * colP.wide + colP.off + j;
  fwdY[at] = fwdY[at] + ((g - 1.0) * fwdBase[i] + g * fwdLora[i]);
}

@group(0) @binding(1) var<storage, read_write> gradScaled: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradScaledMinusOne: array<f32>;
@group(0) @binding(3) var<storage, read> gradDy: array<f32>;
@group(0) @binding(4) var<storage, read> gradM: array<f32>;
@group(0) @binding(5) var<storage, read> gradNorms: array<f32>;

// dyG, dyG1: (rows, narrow); dy: (rows, wide); m, norms: (narrow,)
// Inverts y = g⊙(base + lora) + b with g constant (n detached): dyG = g⊙dy (the gradient of the
// low-rank term), dyG1 = (g − 1)⊙dy (what the base term adds to the base layer's dy·W0).
@compute @workgroup_size(EW_WG)
fn scaleGrad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = flat(gid, groups);
  if (i >= colP.rows * colP.narrow) { return; }
  let n = i / colP.narrow;
  let j = i - n * colP.narrow;
  let g = ratio(gradM[j], gradNorms[j]);
  let d = gradDy[n * colP.wide + colP.off + j];
  gradScaled[i] = g * d;
  gradScaledMinusOne[i] = (g - 1.0) * d;
}

@group(0) @binding(1) var<storage, read_write> magGrad: array<f32>;
@group(0) @binding(2) var<storage, read> magDy: array<f32>;
@group(0) @binding(3) var<storage, read> magV: array<f32>;
@group(0) @binding(4) var<storage, read> magNorms: array<f32>;

// dm: (narrow,); dy: (rows, wide); v: (rows, narrow); norms: (narrow,)
// dm[j] += (Σ_n dy[n, off + j]·v[n, j]) / norms[j], v = (W0 + s·B·A)·x: the gradient of
// y = (m/n)⊙v with respect to m.
@compute @workgroup_size(256)
fn magnitudeGrad(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) t: u32,
) {
  let col = t % COLS;
  let lane = t / COLS;
  let j = (wid.x + wid.y * groups.x) * COLS + col;
  var acc = 0.0;
  if (j < colP.narrow) {
    for (var n = lane; n < colP.rows; n += LANES) {
      acc = fma(magDy[n * colP.wide + colP.off + j], magV[n * colP.narrow + j], acc);
    }
  }
  lanes[t] = acc;
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { lanes[t] = lanes[t] + lanes[t + s * COLS]; }
    workgroupBarrier();
  }
  if (lane == 0u && j < colP.narrow) {
    magGrad[j] = magGrad[j] + lanes[col] / magNorms[j];
  }
}
