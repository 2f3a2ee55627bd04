// Scalar bookkeeping on the device, so a replayed training step can log its loss without a readback.
// Versions: one. Cost: one invocation (~the dispatch overhead, 0.06 ms on llvmpipe).

@group(0) @binding(0) var<storage, read_write> history: array<f32>;
@group(0) @binding(1) var<storage, read> value: array<f32>;
@group(0) @binding(2) var<storage, read> slot: array<u32>;

// history: (K,); value: (1,); slot: (1,) — history[slot[0] % K] = value[0]
@compute @workgroup_size(1)
fn storeAt() {
  let K = arrayLength(&history);
  history[slot[0] % K] = value[0];
}
