// Greedy decoding's argmax over a vocabulary, on the device so decode steps chain without a readback.
// Entry points: argmaxRows (index of each row's largest logit) and argmaxNext (one row's argmax recorded as
// the next generated token: written into a token history at the step counter, its embedding written as the
// next step's input row, and the step state advanced).
// One workgroup per row; each thread scans v = tid, tid + WG, … and a fixed tree merges the candidates.
// The result is exact whatever WG is: ties go to the lowest index, and a NaN counts as larger than every
// number (torch.argmax's rule), so a NaN logit shows up as its own index instead of being skipped.
// Measured on llvmpipe (LLVM 15, 2 shared cores, load ≈ 2–3; submitTimed, median of 7), WG = 64, one row:
// V = 257 0.14 ms, V = 50257 0.42 ms (dispatch overhead, then ~150 M logits/s).

struct RowsParams {
  rows: u32,
  V: u32,
  firstRow: u32, // row r of the output reads logits row firstRow + r
}

struct NextParams {
  V: u32,
  row: u32, // logits row to read
  C: u32,
  positions: u32, // rows of wpe; 0 without a position table (RoPE models)
  historyLength: u32,
}

override WG: u32 = 64u; // a power of two: the merge tree halves it

var<workgroup> treeValue: array<f32, WG>;
var<workgroup> treeIndex: array<u32, WG>;
var<workgroup> nextPosition: u32;

fn isNan(x: f32) -> bool {
  // Bit test: WGSL lets compilers assume floats are never NaN, so `x != x` may fold to false.
  return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Whether candidate (vb, ib) beats (va, ia): NaN above every number, then the larger value, then the
// lower index.
fn beats(vb: f32, ib: u32, va: f32, ia: u32) -> bool {
  let nb = isNan(vb);
  let na = isNan(va);
  if (nb != na) {
    return nb;
  }
  if (!nb && vb != va) {
    return vb > va;
  }
  return ib < ia;
}

const NONE: u32 = 0xffffffffu; // "no candidate yet": any real candidate beats it

// Folds logit x at index v into a thread's running best (value, index).
fn fold(best: vec2<u32>, x: f32, v: u32) -> vec2<u32> {
  if (best.y == NONE || beats(x, v, bitcast<f32>(best.x), best.y)) {
    return vec2<u32>(bitcast<u32>(x), v);
  }
  return best;
}

// Merges every thread's best (value bits, index) in a fixed tree; every thread returns the row's argmax.
fn mergeTree(tid: u32, best: vec2<u32>) -> u32 {
  treeValue[tid] = bitcast<f32>(best.x);
  treeIndex[tid] = best.y;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (tid < stride) {
      let ib = treeIndex[tid + stride];
      let ia = treeIndex[tid];
      if (ib != NONE && (ia == NONE || beats(treeValue[tid + stride], ib, treeValue[tid], ia))) {
        treeValue[tid] = treeValue[tid + stride];
        treeIndex[tid] = ib;
      }
    }
    workgroupBarrier();
  }
  return treeIndex[0];
}

// ---- argmaxRows ----
@group(0) @binding(0) var<uniform> rowsP: RowsParams;
@group(0) @binding(1) var<storage, read_write> rowsOut: array<u32>;
@group(0) @binding(2) var<storage, read> rowsLogits: array<f32>;

// rowsOut: (rows,) u32; rowsLogits: (≥ firstRow + rows, V). One workgroup per row (2-D grid past 65535).
@compute @workgroup_size(WG)
fn argmaxRows(
  @builtin(local_invocation_index) tid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let r = wid.x + wid.y * groups.x;
  if (r >= rowsP.rows) { return; }
  let start = (rowsP.firstRow + r) * rowsP.V;
  var best = vec2<u32>(0u, NONE);
  for (var v = tid; v < rowsP.V; v += WG) {
    best = fold(best, rowsLogits[start + v], v);
  }
  let token = mergeTree(tid, best);
  if (tid == 0u) {
    rowsOut[r] = token;
  }
}

// ---- argmaxNext ----
@group(0) @binding(0) var<uniform> nextP: NextParams;
@group(0) @binding(1) var<storage, read_write> nextX: array<f32>;
@group(0) @binding(2) var<storage, read_write> history: array<u32>;
@group(0) @binding(3) var<storage, read_write> state: array<u32>;
@group(0) @binding(4) var<storage, read> nextLogits: array<f32>;
@group(0) @binding(5) var<storage, read> wte: array<f32>;
@group(0) @binding(6) var<storage, read> wpe: array<f32>;

// nextX: (C,) the next step's input row; history: (K,) u32 generated tokens; state: (2,) u32 = [position p
// of the token being decoded, tokens generated so far]; nextLogits: (≥ row + 1, V); wte: (V, C);
// wpe: (positions, C) or unused. One workgroup.
// token = argmax(logits[row]); history[state[1]] = token; the token sits at p' = state[0] + 1, so
// nextX = wte[token] + wpe[p'] (NaN past the position table); state = [p', state[1] + 1].
@compute @workgroup_size(WG)
fn argmaxNext(@builtin(local_invocation_index) tid: u32) {
  if (tid == 0u) {
    nextPosition = state[0] + 1u;
  }
  let start = nextP.row * nextP.V;
  var best = vec2<u32>(0u, NONE);
  for (var v = tid; v < nextP.V; v += WG) {
    best = fold(best, nextLogits[start + v], v);
  }
  // mergeTree's barriers also publish nextPosition.
  let token = mergeTree(tid, best);
  let pos = nextPosition;
  let C = nextP.C;
  for (var c = tid; c < C; c += WG) {
    var x = wte[token * C + c];
    if (nextP.positions > 0u) {
      x += select(bitcast<f32>(0x7fc00000u | (c & 0u)), wpe[min(pos, nextP.positions - 1u) * C + c], pos < nextP.positions);
    }
    nextX[c] = x;
  }
  if (tid == 0u) {
    let step = state[1];
    if (step < nextP.historyLength) {
      history[step] = token;
    }
    state[0] = pos;
    state[1] = step + 1u;
  }
}
