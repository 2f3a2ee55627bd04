// Column blocks of row-major matrices, for adapters on one part of a fused projection (q, k or v of
// the fused qkv): add a (N, w) block into columns [off, off + w) of a (N, W) matrix, or copy those
// columns out. One invocation per element; rows and columns from a 2-D index, no atomics.

struct Params {
  rows: u32,
  wide: u32, // W: columns of the big matrix
  narrow: u32, // w: columns of the block
  off: u32, // first column of the block in the big matrix
  alpha: f32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;

fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
  return gid.x + gid.y * groups.x * WG;
}

// out: (rows, wide), src: (rows, narrow); out[n, off + j] += alpha · src[n, j].
@compute @workgroup_size(WG)
fn addBlock(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = flat(gid, groups);
  if (i >= p.rows * p.narrow) { return; }
  let n = i / p.narrow;
  let j = i - n * p.narrow;
  let at = n * p.wide + p.off + j;
  out[at] = fma(p.alpha, src[i], out[at]);
}

// out: (rows, narrow), src: (rows, wide); out[n, j] = src[n, off + j].
@compute @workgroup_size(WG)
fn getBlock(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = flat(gid, groups);
  if (i >= p.rows * p.narrow) { return; }
  let n = i / p.narrow;
  let j = i - n * p.narrow;
  out[i] = src[n * p.wide + p.off + j];
}
