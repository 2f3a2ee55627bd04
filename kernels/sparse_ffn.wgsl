// Indexed columns of row-major (rows, wide) matrices, for top-k FFN neuron tuning: gather the k columns
// an index list names into a (rows, k) block, scatter-add such a block back into them, and sum |a| or
// |a·b| down every column (neuron scores over a calibration set). The indices of one list are distinct,
// so every output element has exactly one owner: no atomics. Column sums run down the rows in index
// order, one thread per column, so they repeat bit for bit.
// Versions: one invocation per element (gather, scatter) or per column (sums, rows in passes of ≤ 16384).
// Speed (llvmpipe, 2 cores shared with other jobs, load ≈ 6.5, timestamp queries, min–median of 5), rows
// 4096, W 1024, k 64: gatherColumns 7.9–10 ms, scatterAddColumns 5.2–8.6 ms, columnAbsSum 17–21 ms,
// columnAbsProductSum 49–54 ms. Gather and scatter move k·rows floats, noise next to the FFN's matmuls.

struct Params {
  rows: u32,
  wide: u32, // columns of the big matrix
  narrow: u32, // k: entries of the index list, columns of the block
  alpha: f32,
}

struct SumParams {
  wide: u32,
  begin: u32, // first row of this pass
  end: u32, // one past its last row
  accumulate: u32, // 1: add onto out; 0: overwrite
}

override WG: u32 = 256;

fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
  return gid.x + gid.y * groups.x * WG;
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read> index: array<u32>;

// out: (rows, narrow); src: (rows, wide); index: (narrow,). out[n, i] = src[n, index[i]].
@compute @workgroup_size(WG)
fn gatherColumns(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let e = flat(gid, groups);
  if (e >= p.rows * p.narrow) { return; }
  let n = e / p.narrow;
  let i = e - n * p.narrow;
  out[e] = src[n * p.wide + index[i]];
}

// out: (rows, wide); src: (rows, narrow); index: (narrow,) distinct. out[n, index[i]] += alpha·src[n, i].
@compute @workgroup_size(WG)
fn scatterAddColumns(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let e = flat(gid, groups);
  if (e >= p.rows * p.narrow) { return; }
  let n = e / p.narrow;
  let i = e - n * p.narrow;
  let at = n * p.wide + index[i];
  out[at] = out[at] + p.alpha * src[e];
}

@group(0) @binding(0) var<uniform> s: SumParams;
@group(0) @binding(1) var<storage, read_write> colSum: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

// colSum: (wide,); a: (rows, wide). colSum[j] (+)= Σ_{n ∈ [begin, end)} |a[n, j]|, n ascending.
@compute @workgroup_size(WG)
fn columnAbsSum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let j = flat(gid, groups);
  if (j >= s.wide) { return; }
  var sum = 0.0;
  for (var n = s.begin; n < s.end; n++) {
    sum += abs(a[n * s.wide + j]);
  }
  colSum[j] = select(sum, colSum[j] + sum, s.accumulate != 0u);
}

// colSum: (wide,); a, b: (rows, wide). colSum[j] (+)= Σ_{n ∈ [begin, end)} |a[n, j]·b[n, j]|, n ascending.
@compute @workgroup_size(WG)
fn columnAbsProductSum(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let j = flat(gid, groups);
  if (j >= s.wide) { return; }
  var sum = 0.0;
  for (var n = s.begin; n < s.end; n++) {
    let at = n * s.wide + j;
    sum += abs(a[at] * b[at]);
  }
  colSum[j] = select(sum, colSum[j] + sum, s.accumulate != 0u);
}
