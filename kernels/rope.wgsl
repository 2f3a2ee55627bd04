// Rotary position embedding (HF Llama rotate-half: pairs (i, i + D/2)) on q or k laid out (B, H, T, D).
// Entry points: ropeAtPositions (positions from a (T,) u32 tensor), ropeAtOffset (position = offset + t,
// for KV-cache decode). TRANSPOSE = false is the forward rotation R, true its transpose Rᵀ (the backward).
// cos/sin come from host tables (P, D/2) computed in f64 (src/model/rope_scaling.ts), already scaled by
// YaRN's attention factor: an f32 angle pos·inv_freq is off by up to 2e-3 rad at pos ≈ 32K.
// Speed (llvmpipe, 2 cores shared with other jobs, load ≈ 9, timestamp queries, median of 5): B=1 H=32
// T=1024 D=128 (4.2M elements): forward 84 ms, backward 86 ms (0.6 GB/s of x/out/table traffic).
// A position ≥ P writes NaN, so a too-short table shows up instead of silently wrapping.

struct Params {
  pairs: u32, // B·H·T·D/2
  T: u32,
  half: u32, // D/2
  P: u32, // rows of the cos/sin tables
  offset: u32, // ropeAtOffset: position of t = 0
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> cosTable: array<f32>;
@group(0) @binding(4) var<storage, read> sinTable: array<f32>;
@group(0) @binding(5) var<storage, read> positions: array<u32>;

override WG: u32 = 256;
override TRANSPOSE: bool = false;

fn pairIndex(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
  return gid.x + gid.y * groups.x * WG;
}

// Rotates pair j = ((b·H + h)·T + t)·D/2 + i by the angle of `pos`:
// forward  out_i = x_i·cos − x_{i+D/2}·sin, out_{i+D/2} = x_{i+D/2}·cos + x_i·sin;
// backward dx_i = d_i·cos + d_{i+D/2}·sin,  dx_{i+D/2} = d_{i+D/2}·cos − d_i·sin (sin negated).
fn rotatePair(j: u32, pos: u32) {
  let row = j / p.half;
  let i = j - row * p.half;
  let lo = row * 2u * p.half + i;
  let hi = lo + p.half;
  var c = bitcast<f32>(0x7fc00000u);
  var s = c;
  if (pos < p.P) {
    c = cosTable[pos * p.half + i];
    s = sinTable[pos * p.half + i];
  }
  if (TRANSPOSE) {
    s = -s;
  }
  let x1 = x[lo];
  let x2 = x[hi];
  out[lo] = x1 * c - x2 * s;
  out[hi] = x2 * c + x1 * s;
}

// out: (B, H, T, D); x: (B, H, T, D); cosTable, sinTable: (P, D/2); positions: (T,) u32
@compute @workgroup_size(WG)
fn ropeAtPositions(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let j = pairIndex(gid, groups);
  if (j >= p.pairs) { return; }
  let t = (j / p.half) % p.T;
  rotatePair(j, positions[t]);
}

// out: (B, H, T, D); x: (B, H, T, D); cosTable, sinTable: (P, D/2)
@compute @workgroup_size(WG)
fn ropeAtOffset(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let j = pairIndex(gid, groups);
  if (j >= p.pairs) { return; }
  let t = (j / p.half) % p.T;
  rotatePair(j, p.offset + t);
}
