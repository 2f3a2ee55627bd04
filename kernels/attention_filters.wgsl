// Per-head attention noise filters of the hybrid method: a learnable temperature τ (logit scale
// exp(τ)/√D) and a learnable sink logit per head. The forward turns τ into the logit scale the attention
// kernels read; the backward applies the chain rule to the attention kernels' dScale and dSink.
// Versions: one invocation per head. Cost: the dispatch overhead (temperatureForward, H = 12: 0.11–0.15 ms
// on llvmpipe, timestamp queries, min–median of 5).

struct Params {
  H: u32,
  invSqrtD: f32, // 1/√D rounded to f32, as the graph's default logit scale
}

override WG: u32 = 64;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> scale: array<f32>;
@group(0) @binding(2) var<storage, read> tau: array<f32>;

// scale, tau: (H,). scale[h] = exp(τ[h])·(1/√D); τ = 0 gives the graph's default scale exactly.
@compute @workgroup_size(WG)
fn temperatureForward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let h = gid.x;
  if (h >= p.H) { return; }
  scale[h] = exp(tau[h]) * p.invSqrtD;
}

@group(0) @binding(1) var<storage, read_write> dTau: array<f32>;
@group(0) @binding(2) var<storage, read> dScale: array<f32>;
@group(0) @binding(3) var<storage, read> fwdScale: array<f32>;

// dTau, dScale, fwdScale: (H,). Inverts scale = exp(τ)/√D: dτ[h] += dScale[h]·scale[h].
@compute @workgroup_size(WG)
fn temperatureBackward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let h = gid.x;
  if (h >= p.H) { return; }
  dTau[h] = dTau[h] + dScale[h] * fwdScale[h];
}

@group(0) @binding(1) var<storage, read_write> dSinkParam: array<f32>;
@group(0) @binding(2) var<storage, read> dSink: array<f32>;

// dSinkParam, dSink: (H,). The sink logit is the parameter itself: dσ[h] += dSink[h].
@compute @workgroup_size(WG)
fn sinkBackward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let h = gid.x;
  if (h >= p.H) { return; }
  dSinkParam[h] = dSinkParam[h] + dSink[h];
}
