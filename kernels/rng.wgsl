// Philox4x32-10 counter-based random numbers: the bit-exact twin of src/random/philox.ts.
// Library file (no entry points): kernels use it with `//! import rng`.
// Element `index` of stream `stream` under key (seed lo, seed hi) takes word (index & 3) of
// philox(counter = (index >> 2, 0, stream, 0)); indices here are u32, so < 2³² elements per stream.

const PHILOX_M0: u32 = 0xd2511f53u;
const PHILOX_M1: u32 = 0xcd9e8d57u;
const PHILOX_W0: u32 = 0x9e3779b9u;
const PHILOX_W1: u32 = 0xbb67ae85u;

// High 32 bits of a * b, exactly, from 16-bit halves (WGSL has no 64-bit integers).
fn mulhi32(a: u32, b: u32) -> u32 {
  let al = a & 0xffffu;
  let ah = a >> 16u;
  let bl = b & 0xffffu;
  let bh = b >> 16u;
  let lh = al * bh;
  let hl = ah * bl;
  let mid = ((al * bl) >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  return ah * bh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
}

fn philox4x32(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = counter;
  var k = key;
  for (var round = 0u; round < 10u; round++) {
    let hi0 = mulhi32(PHILOX_M0, c.x);
    let lo0 = PHILOX_M0 * c.x;
    let hi1 = mulhi32(PHILOX_M1, c.z);
    let lo1 = PHILOX_M1 * c.z;
    c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
  }
  return c;
}

fn philoxBlock(key: vec2<u32>, stream: u32, index: u32) -> vec4<u32> {
  return philox4x32(vec4<u32>(index >> 2u, 0u, stream, 0u), key);
}

fn wordToUniform(word: u32) -> f32 {
  return f32(word >> 8u) * (1.0 / 16777216.0);
}

// Uniform in [0, 1) for element `index` of a stream.
fn rngUniform(key: vec2<u32>, stream: u32, index: u32) -> f32 {
  return wordToUniform(philoxBlock(key, stream, index)[index & 3u]);
}

// Standard normal for element `index` (Box–Muller on words 2⌊i/2⌋ mod 4 and the next; even
// elements take the cosine, odd the sine). Not bit-identical to the f64 host version: log, cos and
// sin are f32 builtins here.
fn rngNormal(key: vec2<u32>, stream: u32, index: u32) -> f32 {
  let words = philoxBlock(key, stream, index);
  let pair = index & 2u;
  let u1 = f32((words[pair] >> 8u) + 1u) * (1.0 / 16777216.0);
  let u2 = f32(words[pair + 1u] >> 8u) * (1.0 / 16777216.0);
  let r = sqrt(-2.0 * log(u1));
  let theta = 6.283185307179586 * u2;
  return select(r * cos(theta), r * sin(theta), (index & 1u) == 1u);
}
