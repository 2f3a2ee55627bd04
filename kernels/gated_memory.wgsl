// LIFT's Gated Memory (methods spec §4.3), the parts that are not matmuls. Per query head i and token n
// (n = b·T + t), with q the head's query before RoPE:
//   mem = W2·SiLU(W1·q),  g = σ(3·(wᵀ·SiLU(V·q) − 1)),  out = (1 − g)·o + g·mem.
// The per-head matmuls run as batched matmuls over heads on head-major rows (H, N, ·), so this file holds:
//   headRows / headRowsBackward   (H, N, D) ↔ (B, H, T, D) permutations (the matmuls' row layout);
//   silu / siluBackward           a = x·σ(x) and dx = dout·σ(x)·(1 + x·(1 − σ(x))), elementwise;
//   gateForward                   one thread per (head, token): a2 = SiLU(z) (S values), u = w·a2, g;
//   gatedMix                      att (B, T, H·D) = (1 − g)·o + g·mem, one thread per element (heads merged);
//   gatedMixBackward              one thread per (head, token): dO = (1 − g)·datt, dmem = g·datt and
//                                 dg = Σ_d datt·(mem − o), summed over d in order;
//   gateBackward                  one thread per (head, token): dg += reg·lossWeight[n] (the regulariser),
//                                 du = 3·g·(1 − g)·dg, dz = du·w·SiLU'(z).
// No atomics: every output has one owner and sums run in a fixed order, so runs repeat bit for bit.
// Speed on llvmpipe (Mesa, 2 cores shared with other jobs, load ~1), B = 1, T = 1024, H = 12, D = 64 (S = 8),
// min–median of 5 submits (Recorder.submitTimed): headRows 5.0–10 ms, silu over (H, N, 2D) 3.7–3.8 ms,
// gateForward 0.40–0.41 ms, gatedMix 5.7–5.8 ms, gatedMixBackward 3.3–3.4 ms, gateBackward 0.43–0.46 ms.
// Memory-bound; the per-(head, token) kernels loop over D with strided rows, fine next to the four matmuls.

struct Sizes {
  B: u32,
  T: u32,
  H: u32,
  D: u32,
  S: u32, // ⌊√D⌋, the gate's hidden width
  count: u32, // elements (or rows) the launch covers
  reg: f32, // gateBackward: d(regulariser)/dg per unit loss weight
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> sz: Sizes;

fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
  return gid.x + gid.y * groups.x * WG;
}

fn sigmoid(x: f32) -> f32 {
  return 1.0 / (1.0 + exp(-x));
}

// Index into (B, H, T, D) of element e of (H, N, D), N = B·T.
fn perHeadIndex(e: u32) -> u32 {
  let N = sz.B * sz.T;
  let i = e / (N * sz.D);
  let n = (e / sz.D) % N;
  return ((n / sz.T * sz.H + i) * sz.T + n % sz.T) * sz.D + e % sz.D;
}

// ---- headRows, headRowsBackward
@group(0) @binding(1) var<storage, read_write> rowsOut: array<f32>;
@group(0) @binding(2) var<storage, read> rowsIn: array<f32>;

// rowsOut: (H, N, D) ← rowsIn: (B, H, T, D). 1-D grid over rowsOut.
@compute @workgroup_size(WG)
fn headRows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let e = flat(gid, groups);
  if (e >= sz.count) { return; }
  rowsOut[e] = rowsIn[perHeadIndex(e)];
}

// rowsOut: (B, H, T, D) ← rowsIn: (H, N, D), the inverse permutation. 1-D grid over rowsIn.
@compute @workgroup_size(WG)
fn headRowsBackward(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let e = flat(gid, groups);
  if (e >= sz.count) { return; }
  rowsOut[perHeadIndex(e)] = rowsIn[e];
}

// ---- silu, siluBackward
@group(0) @binding(1) var<storage, read_write> siluOut: array<f32>;
@group(0) @binding(2) var<storage, read> siluX: array<f32>;
@group(0) @binding(3) var<storage, read> siluDout: array<f32>;

// siluOut, siluX: any one shape (count elements)
@compute @workgroup_size(WG)
fn silu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let e = flat(gid, groups);
  if (e >= sz.count) { return; }
  let x = siluX[e];
  siluOut[e] = x * sigmoid(x);
}

// siluOut (dx), siluX, siluDout: one shape. Forward a = x·σ(x), so da/dx = σ(x)·(1 + x·(1 − σ(x))).
@compute @workgroup_size(WG)
fn siluBackward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let e = flat(gid, groups);
  if (e >= sz.count) { return; }
  let x = siluX[e];
  let s = sigmoid(x);
  siluOut[e] = siluDout[e] * s * (1.0 + x * (1.0 - s));
}

// ---- gateForward
@group(0) @binding(1) var<storage, read_write> gateA: array<f32>;
@group(0) @binding(2) var<storage, read_write> gateG: array<f32>;
@group(0) @binding(3) var<storage, read> gateZ: array<f32>;
@group(0) @binding(4) var<storage, read> gateW: array<f32>;

// gateA: (H, N, S) = SiLU(gateZ); gateG: (H, N) = σ(3·(Σ_s w[i, s]·a[i, n, s] − 1)); gateZ: (H, N, S);
// gateW: (H, S). One thread per (i, n); count = H·N.
@compute @workgroup_size(WG)
fn gateForward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let r = flat(gid, groups);
  if (r >= sz.count) { return; }
  let i = r / (sz.B * sz.T);
  var u = 0.0;
  for (var s = 0u; s < sz.S; s++) {
    let x = gateZ[r * sz.S + s];
    let a = x * sigmoid(x);
    gateA[r * sz.S + s] = a;
    u = fma(gateW[i * sz.S + s], a, u);
  }
  gateG[r] = sigmoid(3.0 * (u - 1.0));
}

// ---- gatedMix
@group(0) @binding(1) var<storage, read_write> mixAtt: array<f32>;
@group(0) @binding(2) var<storage, read> mixO: array<f32>;
@group(0) @binding(3) var<storage, read> mixMem: array<f32>;
@group(0) @binding(4) var<storage, read> mixG: array<f32>;

// mixAtt: (B, T, H·D) = (1 − g)·o + g·mem with heads merged; mixO: (B, H, T, D); mixMem: (H, N, D);
// mixG: (H, N). 1-D grid over mixAtt.
@compute @workgroup_size(WG)
fn gatedMix(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let e = flat(gid, groups);
  if (e >= sz.count) { return; }
  let W = sz.H * sz.D;
  let n = e / W;
  let i = (e % W) / sz.D;
  let d = e % sz.D;
  let b = n / sz.T;
  let t = n % sz.T;
  let r = i * sz.B * sz.T + n;
  let g = mixG[r];
  // fma: one rounding for the sum, the same on every backend (a*b + c may or may not be contracted).
  mixAtt[e] = fma(g, mixMem[r * sz.D + d], (1.0 - g) * mixO[((b * sz.H + i) * sz.T + t) * sz.D + d]);
}

// ---- gatedMixBackward
@group(0) @binding(1) var<storage, read_write> backDo: array<f32>;
@group(0) @binding(2) var<storage, read_write> backDmem: array<f32>;
@group(0) @binding(3) var<storage, read_write> backDg: array<f32>;
@group(0) @binding(4) var<storage, read> backDatt: array<f32>;
@group(0) @binding(5) var<storage, read> backO: array<f32>;
@group(0) @binding(6) var<storage, read> backMem: array<f32>;
@group(0) @binding(7) var<storage, read> backG: array<f32>;

// backDo: (B, H, T, D) = (1 − g)·datt; backDmem: (H, N, D) = g·datt; backDg: (H, N) = Σ_d datt·(mem − o);
// backDatt: (B, T, H·D); backO: (B, H, T, D); backMem: (H, N, D); backG: (H, N). One thread per (i, n).
@compute @workgroup_size(WG)
fn gatedMixBackward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let r = flat(gid, groups);
  if (r >= sz.count) { return; }
  let N = sz.B * sz.T;
  let i = r / N;
  let n = r % N;
  let b = n / sz.T;
  let t = n % sz.T;
  let g = backG[r];
  let attRow = (n * sz.H + i) * sz.D;
  let oRow = ((b * sz.H + i) * sz.T + t) * sz.D;
  var dg = 0.0;
  for (var d = 0u; d < sz.D; d++) {
    let da = backDatt[attRow + d];
    let o = backO[oRow + d];
    let m = backMem[r * sz.D + d];
    backDo[oRow + d] = (1.0 - g) * da;
    backDmem[r * sz.D + d] = g * da;
    dg = fma(da, m - o, dg);
  }
  backDg[r] = dg;
}

// ---- gateBackward
@group(0) @binding(1) var<storage, read_write> gbDu: array<f32>;
@group(0) @binding(2) var<storage, read_write> gbDz: array<f32>;
@group(0) @binding(3) var<storage, read> gbDg: array<f32>;
@group(0) @binding(4) var<storage, read> gbG: array<f32>;
@group(0) @binding(5) var<storage, read> gbZ: array<f32>;
@group(0) @binding(6) var<storage, read> gbW: array<f32>;
@group(0) @binding(7) var<storage, read> gbLossWeights: array<f32>;

// gbDu: (H, N); gbDz: (H, N, S); gbDg: (H, N) the mix's dg; gbG: (H, N); gbZ: (H, N, S); gbW: (H, S);
// gbLossWeights: (N,). Forward g = σ(3(u − 1)), u = Σ_s w_s·SiLU(z_s); the regulariser adds reg·lossWeight[n]
// to dg. One thread per (i, n).
@compute @workgroup_size(WG)
fn gateBackward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let r = flat(gid, groups);
  if (r >= sz.count) { return; }
  let N = sz.B * sz.T;
  let i = r / N;
  let n = r % N;
  let g = gbG[r];
  let dg = fma(sz.reg, gbLossWeights[n], gbDg[r]);
  let du = 3.0 * g * (1.0 - g) * dg;
  gbDu[r] = du;
  for (var s = 0u; s < sz.S; s++) {
    let x = gbZ[r * sz.S + s];
    let sg = sigmoid(x);
    gbDz[r * sz.S + s] = du * gbW[i * sz.S + s] * sg * (1.0 + x * (1.0 - sg));
  }
}
