// Matrix multiply out = [out +] alpha · op(A) · op(B) [+ bias], batched, every transpose layout.
// Versions (src/ops/matmul.ts picks one per adapter; both sum K in a fixed order, so reruns are bitwise
// equal):
//   matmulStorage, matmulStorageVec4  real GPUs: 16×16 invocations, 64×64 output tile, K in
//                  shared-memory steps of 8, 4×4 register block per invocation fed by vec4 reads of the
//                  shared tiles; the Vec4 version loads the tiles with vec4 reads when each operand's
//                  contiguous side is a multiple of 4.
//   packTexture + matmulTexture  software adapters: operands packed into rgba32float textures
//                  (4 consecutive K values per texel; blocks of rows when taller than a texture),
//                  16×8 register block per invocation; llvmpipe vectorises texture fetches but not
//                  storage-buffer reads.
// Measured on llvmpipe (LLVM 15.0.6, 256 bits), GL backend, 2 CPU cores, with `deno task bench`
// (timestamp queries, median of 5, packing included), in GFLOP/s. Other jobs shared the 2 cores (load
// average in the column head), so these are pessimistic and vary by 2× from run to run.
//                        texture (load 1.4)  texture (load 3.2)  storage (load 1.4*)  storage (load 3.2)
//   256³                        7.5                 8.6                2.2                  2.0
//   1024³                      12.6                 8.4                2.6                  1.5
//   4096×256 · 256×1024        23.4                 7.8                2.7                  1.5
// (* matmulStorage, before matmulStorageVec4 existed; the benchmark shapes now run the Vec4 version.)
// The texture kernel alone on an idle machine (scratch harness, wall clock): 24 GFLOP/s at 1024³.
// 1000 dispatches of an 8³ storage matmul in one pass: 134–260 ms.

struct Params {
  M: u32,
  N: u32,
  K: u32,
  // The texture path splits a matmul whose operands do not fit one texture into blocks: this
  // dispatch covers batches batch0.. and the rows × cols block of out at (m0, n0).
  batch0: u32,
  m0: u32,
  n0: u32,
  rows: u32,
  cols: u32,
  aRowStride: u32, // element (m, k) of A's batch b sits at b·aBatchStride + m·aRowStride + k·aKStride
  aKStride: u32,
  aBatchStride: u32,
  bColStride: u32, // element (k, n) of B's batch b sits at b·bBatchStride + n·bColStride + k·bKStride
  bKStride: u32,
  bBatchStride: u32, // 0 when one B is shared by every batch (a linear layer's weight)
  alpha: f32,
  hasBias: u32,
  accumulate: u32, // out += result instead of out = result
}

struct PackParams {
  rows: u32, // rows of A (or columns of B) in this block
  row0: u32, // the block's first row within its batch
  K: u32,
  rowStride: u32,
  kStride: u32,
  batchStride: u32,
  batch0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
// Without a bias the launcher binds a one-element stand-in that hasBias = 0 keeps unread. Bias and
// accumulate are uniforms, not override constants: llvmpipe compiles each kernel variant for seconds,
// while a uniform branch per output element is negligible next to its K-long sum.
@group(0) @binding(4) var<storage, read> bias: array<f32>;

// The other entry points reuse binding numbers with other types; each entry point's layout holds
// only the variables it uses.
@group(0) @binding(2) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b4: array<vec4<f32>>;

@group(0) @binding(2) var aTex: texture_2d<f32>;
@group(0) @binding(3) var bTex: texture_2d<f32>;

@group(0) @binding(0) var<uniform> pk: PackParams;
@group(0) @binding(1) var packed: texture_storage_2d<rgba32float, write>;
@group(0) @binding(2) var<storage, read> src: array<f32>;

fn epilogue(batch: u32, m: u32, n: u32, acc: f32) {
  let idx = (batch * p.M + m) * p.N + n;
  var v = p.alpha * acc;
  if (p.hasBias != 0u) { v += bias[n]; }
  if (p.accumulate != 0u) { v = out[idx] + v; }
  out[idx] = v;
}

// ---- storage path ----

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 8u; // 16 tripled llvmpipe's compile time (the K step is unrolled)
const SW: u32 = 16u; // invocations per side: 16 × 16, each owning a 4 × 4 block of the 64 × 64 tile

// k-major tiles: aTile[k][m / 4] holds rows m..m+3 of column k, so a 4-row slice is one vec4 read.
var<workgroup> aTile: array<vec4<f32>, 128>; // BK · BM / 4
var<workgroup> bTile: array<vec4<f32>, 128>; // BK · BN / 4

// Scalar loads: each of the 256 invocations loads BK · BM / 256 = 2 elements of each tile, consecutive
// invocations along whichever axis is contiguous in memory (coalescing).
fn loadTilesScalar(tid: u32, batch: u32, tile_m: u32, tile_n: u32, k0: u32) {
  let aAlongK = p.aKStride == 1u;
  let bAlongK = p.bKStride == 1u;
  for (var r = 0u; r < 2u; r++) {
    let l = tid + r * 256u;
    let am = select(l % BM, l / BK, aAlongK);
    let ak = select(l / BM, l % BK, aAlongK);
    let gm = tile_m + am;
    let gk = k0 + ak;
    var av = 0.0;
    if (gm < p.M && gk < p.K) { av = a[batch * p.aBatchStride + gm * p.aRowStride + gk * p.aKStride]; }
    aTile[ak * (BM / 4u) + am / 4u][am % 4u] = av;
    let bn = select(l % BN, l / BK, bAlongK);
    let bk = select(l / BN, l % BK, bAlongK);
    let gn = tile_n + bn;
    let gkb = k0 + bk;
    var bv = 0.0;
    if (gn < p.N && gkb < p.K) { bv = b[batch * p.bBatchStride + gn * p.bColStride + gkb * p.bKStride]; }
    bTile[bk * (BN / 4u) + bn / 4u][bn % 4u] = bv;
  }
}

// vec4 loads when each operand's contiguous side is a multiple of 4 (so no vec4 straddles a row):
// invocations 0..127 load one vec4 of the A tile, 128..255 one of the B tile.
fn loadTilesVec4(tid: u32, batch: u32, tile_m: u32, tile_n: u32, k0: u32) {
  let v = tid % 128u;
  if (tid < 128u) {
    let alongK = p.aKStride == 1u;
    let am = select((v % 16u) * 4u, v / 2u, alongK);
    let ak = select(v / 16u, (v % 2u) * 4u, alongK);
    let gm = tile_m + am;
    let gk = k0 + ak;
    var q = vec4<f32>(0.0);
    if (gm < p.M && gk < p.K) { q = a4[(batch * p.aBatchStride + gm * p.aRowStride + gk * p.aKStride) / 4u]; }
    if (alongK) {
      for (var j = 0u; j < 4u; j++) { aTile[(ak + j) * (BM / 4u) + am / 4u][am % 4u] = q[j]; }
    } else {
      aTile[ak * (BM / 4u) + am / 4u] = q;
    }
  } else {
    let alongK = p.bKStride == 1u;
    let bn = select((v % 16u) * 4u, v / 2u, alongK);
    let bk = select(v / 16u, (v % 2u) * 4u, alongK);
    let gn = tile_n + bn;
    let gk = k0 + bk;
    var q = vec4<f32>(0.0);
    if (gn < p.N && gk < p.K) { q = b4[(batch * p.bBatchStride + gn * p.bColStride + gk * p.bKStride) / 4u]; }
    if (alongK) {
      for (var j = 0u; j < 4u; j++) { bTile[(bk + j) * (BN / 4u) + bn / 4u][bn % 4u] = q[j]; }
    } else {
      bTile[bk * (BN / 4u) + bn / 4u] = q;
    }
  }
}

// One K step of the invocation's 4 × 4 block, k in order.
fn multiplyTiles(lid: vec3<u32>, acc: ptr<function, array<vec4<f32>, 4>>) {
  for (var k = 0u; k < BK; k++) {
    let av = aTile[k * (BM / 4u) + lid.y];
    let bv = bTile[k * (BN / 4u) + lid.x];
    for (var i = 0u; i < 4u; i++) { (*acc)[i] = fma(vec4<f32>(av[i]), bv, (*acc)[i]); }
  }
}

fn storeBlock(lid: vec3<u32>, batch: u32, tile_m: u32, tile_n: u32, acc: array<vec4<f32>, 4>) {
  for (var i = 0u; i < 4u; i++) {
    let m = tile_m + lid.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {
      let n = tile_n + lid.x * 4u + j;
      if (m < p.M && n < p.N) { epilogue(batch, m, n, acc[i][j]); }
    }
  }
}

// out: (Bt, M, N); a: (Bt, M, K) with any strides; b: (Bt, K, N) or (K, N) with any strides; bias: (N,)
@compute @workgroup_size(16, 16)
fn matmulStorage(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let batch = p.batch0 + wid.z;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    loadTilesScalar(lid.y * SW + lid.x, batch, wid.y * BM, wid.x * BN, k0);
    workgroupBarrier();
    multiplyTiles(lid, &acc);
    workgroupBarrier();
  }
  storeBlock(lid, batch, wid.y * BM, wid.x * BN, acc);
}

// out: (Bt, M, N); a4: (Bt, M, K) with any strides, contiguous side a multiple of 4; b4: likewise (Bt, K, N)
// or (K, N); bias: (N,)
@compute @workgroup_size(16, 16)
fn matmulStorageVec4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let batch = p.batch0 + wid.z;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    loadTilesVec4(lid.y * SW + lid.x, batch, wid.y * BM, wid.x * BN, k0);
    workgroupBarrier();
    multiplyTiles(lid, &acc);
    workgroupBarrier();
  }
  storeBlock(lid, batch, wid.y * BM, wid.x * BN, acc);
}

// ---- texture path ----

override WGX: u32 = 8u;
override WGY: u32 = 8u;
const TM: u32 = 16u; // rows of out per invocation
const TN: u32 = 8u; // columns of out per invocation

// packed: (batches · rows, ⌈K/4⌉) texels; src: (Bt, M or N, K) with any strides
@compute @workgroup_size(8, 8)
fn packTexture(@builtin(global_invocation_id) gid: vec3<u32>) {
  let k4 = gid.x;
  let r = gid.y;
  if (r >= pk.rows || k4 * 4u >= pk.K) { return; }
  let base = (pk.batch0 + gid.z) * pk.batchStride + (pk.row0 + r) * pk.rowStride;
  var texel = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) {
    let k = k4 * 4u + j;
    if (k < pk.K) { texel[j] = src[base + k * pk.kStride]; }
  }
  textureStore(packed, vec2<u32>(k4, gid.z * pk.rows + r), texel);
}

// out: (Bt, M, N); aTex: (batches · rows, ⌈K/4⌉) texels; bTex: (batches · cols or cols, ⌈K/4⌉) texels;
// bias: (N,)
@compute @workgroup_size(WGX, WGY)
fn matmulTexture(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.y * TM; // within the block
  let n0 = gid.x * TN;
  if (m0 >= p.rows || n0 >= p.cols) { return; }
  let aRow = gid.z * p.rows;
  let bRow = select(0u, gid.z * p.cols, p.bBatchStride != 0u);
  let K4 = (p.K + 3u) / 4u;
  var acc: array<array<f32, TN>, TM>;
  for (var k4 = 0u; k4 < K4; k4++) {
    // Rows past the edge re-read the last row (in bounds on every backend); their sums are dropped.
    var av: array<vec4<f32>, TM>;
    var bv: array<vec4<f32>, TN>;
    for (var i = 0u; i < TM; i++) {
      av[i] = textureLoad(aTex, vec2<u32>(k4, aRow + min(m0 + i, p.rows - 1u)), 0);
    }
    for (var j = 0u; j < TN; j++) {
      bv[j] = textureLoad(bTex, vec2<u32>(k4, bRow + min(n0 + j, p.cols - 1u)), 0);
    }
    for (var i = 0u; i < TM; i++) {
      for (var j = 0u; j < TN; j++) { acc[i][j] += dot(av[i], bv[j]); }
    }
  }
  let batch = p.batch0 + gid.z;
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN; j++) {
      if (m0 + i < p.rows && n0 + j < p.cols) { epilogue(batch, p.m0 + m0 + i, p.n0 + n0 + j, acc[i][j]); }
    }
  }
}
