// Head layout changes around attention: pure permutations, memory-bound, one thread per element.
// Versions: one each. `splitHeads` / `splitHeadsBackward` between the QKV projection's (B, T, (H + 2·Hkv)·D)
// rows and per-head q, k, v; `mergeHeads` / `mergeHeadsBackward` between o (B, H, T, D) and the output
// projection's (B, T, H·D). Each thread reads or writes the row-major side in order, so one side of every
// copy is coalesced. Measured on llvmpipe (LLVM 15, 2 shared cores), B = 1, T = 8192, H = Hkv = 8, D = 64:
// splitHeads 77 ms, mergeHeads 26 ms, both 0.16 G elements/s.

struct Sizes {
  B: u32,
  T: u32,
  H: u32,
  Hkv: u32,
  D: u32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> n: Sizes;

// Where element (b, t, head, d) of the packed (B, T, (H + 2·Hkv)·D) layout lives in the per-head tensors:
// x = 0, 1, 2 for q, k, v and the flat index inside that tensor.
fn headIndex(e: u32) -> vec2<u32> {
  let W = (n.H + 2u * n.Hkv) * n.D;
  let bt = e / W;
  let col = e % W;
  let head = col / n.D;
  let d = col % n.D;
  let b = bt / n.T;
  let t = bt % n.T;
  if (head < n.H) {
    return vec2<u32>(0u, ((b * n.H + head) * n.T + t) * n.D + d);
  }
  let kvHead = (head - n.H) % n.Hkv;
  let which = select(2u, 1u, head < n.H + n.Hkv);
  return vec2<u32>(which, ((b * n.Hkv + kvHead) * n.T + t) * n.D + d);
}

// ---- splitHeads ----
@group(0) @binding(1) var<storage, read_write> splitQ: array<f32>;
@group(0) @binding(2) var<storage, read_write> splitK: array<f32>;
@group(0) @binding(3) var<storage, read_write> splitV: array<f32>;
@group(0) @binding(4) var<storage, read> splitQKV: array<f32>;

// q: (B, H, T, D); k, v: (B, Hkv, T, D) ← qkv: (B, T, (H + 2·Hkv)·D). 1-D grid over qkv (spills into y).
@compute @workgroup_size(WG)
fn splitHeads(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let e = gid.x + gid.y * groups.x * WG;
  if (e >= n.B * n.T * (n.H + 2u * n.Hkv) * n.D) {
    return;
  }
  let at = headIndex(e);
  let x = splitQKV[e];
  if (at.x == 0u) {
    splitQ[at.y] = x;
  } else if (at.x == 1u) {
    splitK[at.y] = x;
  } else {
    splitV[at.y] = x;
  }
}

// ---- splitHeadsBackward ----
@group(0) @binding(1) var<storage, read_write> gatherQKV: array<f32>;
@group(0) @binding(2) var<storage, read> gatherQ: array<f32>;
@group(0) @binding(3) var<storage, read> gatherK: array<f32>;
@group(0) @binding(4) var<storage, read> gatherV: array<f32>;

// dqkv: (B, T, (H + 2·Hkv)·D) ← dq: (B, H, T, D); dk, dv: (B, Hkv, T, D). 1-D grid over dqkv.
@compute @workgroup_size(WG)
fn splitHeadsBackward(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let e = gid.x + gid.y * groups.x * WG;
  if (e >= n.B * n.T * (n.H + 2u * n.Hkv) * n.D) {
    return;
  }
  let at = headIndex(e);
  var x: f32;
  if (at.x == 0u) {
    x = gatherQ[at.y];
  } else if (at.x == 1u) {
    x = gatherK[at.y];
  } else {
    x = gatherV[at.y];
  }
  gatherQKV[e] = x;
}

// ---- mergeHeads and mergeHeadsBackward ----
@group(0) @binding(1) var<storage, read_write> mergeOut: array<f32>;
@group(0) @binding(2) var<storage, read> mergeIn: array<f32>;

// Index into (B, H, T, D) of element e of (B, T, H·D).
fn perHeadIndex(e: u32) -> u32 {
  let W = n.H * n.D;
  let bt = e / W;
  let col = e % W;
  return ((bt / n.T * n.H + col / n.D) * n.T + bt % n.T) * n.D + col % n.D;
}

// y: (B, T, H·D) ← o: (B, H, T, D). 1-D grid over y.
@compute @workgroup_size(WG)
fn mergeHeads(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let e = gid.x + gid.y * groups.x * WG;
  if (e >= n.B * n.T * n.H * n.D) {
    return;
  }
  mergeOut[e] = mergeIn[perHeadIndex(e)];
}

// dO: (B, H, T, D) ← dy: (B, T, H·D), the transpose of mergeHeads. 1-D grid over dy.
@compute @workgroup_size(WG)
fn mergeHeadsBackward(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let e = gid.x + gid.y * groups.x * WG;
  if (e >= n.B * n.T * n.H * n.D) {
    return;
  }
  mergeOut[perHeadIndex(e)] = mergeIn[e];
}
