// Fill a tensor with seeded random numbers on the device (weight init, noise).
// Versions: one. Memory-bound; ~40 Philox rounds of integer work per 4 elements.
//! import rng

struct Params {
  n: u32,
  seedLo: u32,
  seedHi: u32,
  stream: u32,
  start: u32, // index of out[0] within the stream
  a: f32, // uniform: lo; normal: mean
  b: f32, // uniform: hi; normal: std
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

override WG: u32 = 256;

// out: (n,) ← lo + (hi − lo) · U[0, 1)
@compute @workgroup_size(WG)
fn fillUniform(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= p.n) { return; }
  out[i] = p.a + (p.b - p.a) * rngUniform(vec2<u32>(p.seedLo, p.seedHi), p.stream, p.start + i);
}

// out: (n,) ← mean + std · N(0, 1)
@compute @workgroup_size(WG)
fn fillNormal(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= p.n) { return; }
  out[i] = p.a + p.b * rngNormal(vec2<u32>(p.seedLo, p.seedHi), p.stream, p.start + i);
}
