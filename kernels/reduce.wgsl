// Reductions with a fixed order: the same input gives the same bits on every run.
// Versions: rowReduce (one workgroup per row, WG threads each reducing columns t, t + WG, … in order, then a
// shared-memory tree; WG = 32 on software adapters, 32…256 from C on GPUs); reduceFull = partialSums (64
// threads × 32 vec4 loads = 8192 elements per workgroup, lanes, then a 64-wide tree) + finalSum (one
// workgroup over the partials, then the n mod 4 tail in index order).
// Speed on llvmpipe (Mesa, GL, 2 cores shared with other jobs, load ~8), min–median of 5 timestamped submits:
//   rowReduce (4096, 1024), WG 32: sum 28–38 ms, max 34–53 ms (WG 256: 590–760 ms, barriers dominate)
//   reduceFull 4,194,307 elements: sum 24–38 ms, sumsq 48–58 ms (6–14 ms on a quieter machine)

struct RowParams {
  N: u32,
  C: u32,
}

struct PartialParams {
  groups: u32, // workgroups of this dispatch
  groupBase: u32, // index in partials of this dispatch's first workgroup
  n4: u32, // vec4s bound in x4
}

struct FinalParams {
  groups: u32, // partials to reduce
  tailStart: u32, // index in xTail of the first element not covered by a vec4
  tailCount: u32,
}

override WG: u32 = 64; // a power of two: the trees halve it
// rowReduce: 0 sum, 1 max, 2 mean. partialSums/finalSum: 0 sum, 1 sum of squares.
override OP: u32 = 0;
// vec4s each thread of partialSums reads; WG·K·4 elements per workgroup.
override K: u32 = 32;

var<workgroup> tree: array<f32, WG>;

@group(0) @binding(0) var<uniform> rowP: RowParams;
@group(0) @binding(1) var<storage, read_write> rowOut: array<f32>;
@group(0) @binding(2) var<storage, read> rowX: array<f32>;

fn combineRow(a: f32, b: f32) -> f32 {
  if (OP == 1u) { return max(a, b); }
  return a + b;
}

// out: (N,); x: (N, C)
@compute @workgroup_size(WG)
fn rowReduce(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) t: u32,
) {
  let row = wid.x + wid.y * groups.x;
  if (row >= rowP.N) { return; }
  let base = row * rowP.C;
  // Thread t holds a value exactly when t < min(C, WG); the tree only combines such lanes, so no
  // identity element is needed (max stays right for rows of −1e30 or −∞).
  let live = min(rowP.C, WG);
  var acc = 0.0;
  if (t < live) {
    acc = rowX[base + t];
    for (var j = t + WG; j < rowP.C; j += WG) {
      acc = combineRow(acc, rowX[base + j]);
    }
  }
  tree[t] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s && t + s < live) {
      tree[t] = combineRow(tree[t], tree[t + s]);
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    var result = tree[0];
    if (OP == 2u) { result = result / f32(rowP.C); }
    rowOut[row] = result;
  }
}

@group(0) @binding(0) var<uniform> partP: PartialParams;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>;

// Sums (0..WG) of tree[] into tree[0]; every lane holds a value (zero where it had no data).
fn treeSum(t: u32) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { tree[t] = tree[t] + tree[t + s]; }
    workgroupBarrier();
  }
}

// partials: (groupBase + groups,); x4: (n4, 4) — workgroup g owns vec4s [g·WG·K, (g+1)·WG·K)
@compute @workgroup_size(WG)
fn partialSums(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) t: u32,
) {
  let g = wid.x + wid.y * groups.x;
  if (g >= partP.groups) { return; }
  // Consecutive threads read consecutive vec4s (coalesced); the order per lane is fixed by g and t.
  let first = g * WG * K + t;
  var acc = vec4<f32>(0.0);
  for (var k = 0u; k < K; k++) {
    let j = first + k * WG;
    if (j < partP.n4) {
      let v = x4[j];
      if (OP == 1u) { acc = fma(v, v, acc); } else { acc = acc + v; }
    }
  }
  tree[t] = (acc.x + acc.y) + (acc.z + acc.w);
  treeSum(t);
  if (t == 0u) { partials[partP.groupBase + g] = tree[0]; }
}

@group(0) @binding(0) var<uniform> finP: FinalParams;
@group(0) @binding(1) var<storage, read_write> total: array<f32>;
@group(0) @binding(2) var<storage, read> finPartials: array<f32>;
@group(0) @binding(3) var<storage, read> xTail: array<f32>;

// total: (1,); partials: (groups,); xTail: the last < 4 elements of x at [tailStart, tailStart + tailCount)
@compute @workgroup_size(WG)
fn finalSum(@builtin(local_invocation_index) t: u32) {
  var acc = 0.0;
  for (var j = t; j < finP.groups; j += WG) {
    acc = acc + finPartials[j];
  }
  tree[t] = acc;
  treeSum(t);
  if (t == 0u) {
    var sum = tree[0];
    for (var i = 0u; i < finP.tailCount; i++) {
      let v = xTail[finP.tailStart + i];
      if (OP == 1u) { sum = fma(v, v, sum); } else { sum = sum + v; }
    }
    total[0] = sum;
  }
}
