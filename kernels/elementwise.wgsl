// Elementwise ops on same-shape f32 tensors: out = a + b, a · b, α·a, out += α·a, out = value.
// Versions: binary/scaled/fill read and write vec4s over the first 4·⌊n/4⌋ elements; their *Tail twins
// finish the last n mod 4 elements with scalar accesses in a second, one-workgroup dispatch.
// Speed on llvmpipe (Mesa, GL, 2 cores shared with other jobs, load ~8), 4,194,307 elements, WG 256,
// min–median of 5 timestamped submits: add 12.0–13.5 ms (3.7 GB/s moved), axpy 11.6–12.0 ms (4.2 GB/s),
// fill 4.1–4.2 ms (4.0 GB/s). Memory-bound.

struct Params {
  n: u32, // vec4s (body) or elements (tail) of the bound tensors
  start: u32, // tail: index of the first element not covered by a vec4
  alpha: f32,
}

override WG: u32 = 256;
// binary: 0 add, 1 mul. scaled: 0 out = α·a, 1 out += α·a.
override OP: u32 = 0;

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b4: array<vec4<f32>>;

@group(0) @binding(1) var<storage, read_write> out1: array<f32>;
@group(0) @binding(2) var<storage, read> a1: array<f32>;
@group(0) @binding(3) var<storage, read> b1: array<f32>;

fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
  return gid.x + gid.y * groups.x * WG;
}

fn binaryOp(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
  if (OP == 1u) { return a * b; }
  return a + b;
}

// out4, a4, b4: (n, 4)
@compute @workgroup_size(WG)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = flat(gid, groups);
  if (i >= p.n) { return; }
  out4[i] = binaryOp(a4[i], b4[i]);
}

// out1, a1, b1: (n,), elements [start, n)
@compute @workgroup_size(4)
fn binaryTail(@builtin(local_invocation_index) t: u32) {
  let i = p.start + t;
  if (i >= p.n) { return; }
  out1[i] = binaryOp(vec4<f32>(a1[i]), vec4<f32>(b1[i])).x;
}

// out4, a4: (n, 4)
@compute @workgroup_size(WG)
fn scaled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = flat(gid, groups);
  if (i >= p.n) { return; }
  // fma: one rounding for out + α·a, the same on every backend (a*b+c may or may not be contracted).
  if (OP == 1u) {
    out4[i] = fma(vec4<f32>(p.alpha), a4[i], out4[i]);
  } else {
    out4[i] = p.alpha * a4[i];
  }
}

// out1, a1: (n,), elements [start, n)
@compute @workgroup_size(4)
fn scaledTail(@builtin(local_invocation_index) t: u32) {
  let i = p.start + t;
  if (i >= p.n) { return; }
  if (OP == 1u) {
    out1[i] = fma(p.alpha, a1[i], out1[i]);
  } else {
    out1[i] = p.alpha * a1[i];
  }
}

// out4: (n, 4)
@compute @workgroup_size(WG)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = flat(gid, groups);
  if (i >= p.n) { return; }
  out4[i] = vec4<f32>(p.alpha);
}

// out1: (n,), elements [start, n)
@compute @workgroup_size(4)
fn fillTail(@builtin(local_invocation_index) t: u32) {
  let i = p.start + t;
  if (i >= p.n) { return; }
  out1[i] = p.alpha;
}
