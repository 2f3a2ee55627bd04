/**
 * Launchers for decode attention (kernels/decode_attention.wgsl): one new token's query against a
 * per-layer KV cache, for greedy generation. The position p of the new token lives on the device (a u32
 * `position` tensor), so one recorded step replays for every p:
 *   appendKv      cache row p ← the token's k and v;
 *   decodeAttention  o_h = Σ_{j ≤ p} softmax_j(logitScale[h]·q_h·k_j) v_j, the softmax's denominator also
 *                 holding exp(sinkLogit[h]) when a sink is given (a key whose value is zero), query head h
 *                 reading kv head ⌊h / (H/Hkv)⌋ — the same function as attentionForward's causal row p.
 * The keys are cut into splits of `keysPerSplit` (fixed per cache length), each reduced to (max, sum, acc)
 * by its own invocation, then merged in ascending order: deterministic without atomics, and O(p) per step.
 */
import type { Gpu } from "../gpu/device.ts";
import { kernel } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { createTensor, numel, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import { shapeText } from "./checks.ts";

/** Largest head size (the kernel keeps a query row and an accumulator of D floats in registers). */
export const DECODE_MAX_HEAD_SIZE = 128;
const WG = 64;
const BLOCK = 4;

/** One layer's cache: k and v, each (Hkv, Tmax, D) f32, row t holding token t (post-RoPE for Llama). */
export interface KvCache {
  k: Tensor;
  v: Tensor;
}

/** Inputs of one decode attention. */
export interface DecodeAttentionInputs {
  /** (H·D) elements: the new token's query, heads side by side ((1, H, 1, D) or (H, D)). */
  q: Tensor;
  cache: KvCache;
  /** (H,) logit scale per head (1/√D is the usual value). */
  logitScale: Tensor;
  /** (H,) optional sink logit per head. */
  sinkLogit?: Tensor;
  /** (≥ 1,) u32 whose element 0 is p: the query is token p and sees keys 0 … p. */
  position: Tensor;
}

/** Options of decodeAttention. */
export interface DecodeAttentionOptions {
  /** Keys per split; default `decodeKeysPerSplit(Tmax)`. The bits depend on it, so keep it fixed. */
  keysPerSplit?: number;
}

/**
 * The default split: 64 keys, doubled until a cache holds at most 1024 splits, so the combine's two
 * loops over splits and each split's loop over keys stay far below llvmpipe's 65,535 loop iterations per
 * invocation even at 1M tokens.
 */
export function decodeKeysPerSplit(Tmax: number): number {
  let keys = 64;
  while (Math.ceil(Tmax / keys) > 1024) keys *= 2;
  return keys;
}

function checkF32(what: string, t: Tensor): void {
  if (t.dtype !== "f32") throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected f32`);
}

function checkPosition(what: string, position: Tensor): void {
  if (position.dtype !== "u32") {
    throw new TypeError(`${what}: ${position.label} is ${position.dtype}, expected u32`);
  }
  if (numel(position.shape) < 1) throw new RangeError(`${what}: ${shapeText(position)} holds no position`);
}

// Hkv, Tmax, D of a cache, after checking k and v agree.
function cacheShape(what: string, cache: KvCache): [number, number, number] {
  checkF32(what, cache.k);
  checkF32(what, cache.v);
  if (cache.k.shape.length !== 3) {
    throw new RangeError(`${what}: ${shapeText(cache.k)} must be (Hkv, Tmax, D)`);
  }
  if (cache.v.shape.length !== 3 || cache.v.shape.some((d, i) => d !== cache.k.shape[i])) {
    throw new RangeError(`${what}: ${shapeText(cache.v)} must have the shape of ${shapeText(cache.k)}`);
  }
  const [Hkv, Tmax, D] = cache.k.shape;
  if (D % 4 !== 0 || D > DECODE_MAX_HEAD_SIZE) {
    throw new RangeError(
      `${what}: head size D = ${D} of ${shapeText(cache.k)} must be a multiple of 4 and at most ` +
        `${DECODE_MAX_HEAD_SIZE}`,
    );
  }
  if (cache.k.buffer === cache.v.buffer) {
    throw new RangeError(`${what}: ${cache.k.label} and ${cache.v.label} must be in different GPU buffers`);
  }
  return [Hkv, Tmax, D];
}

/**
 * Allocates one layer's cache for up to `Tmax` tokens.
 * @example const cache = createKvCache(gpu, Hkv, maxLength, D, "layer 0");
 */
export function createKvCache(gpu: Gpu, Hkv: number, Tmax: number, D: number, label = "kv"): KvCache {
  return {
    k: createTensor(gpu, [Hkv, Tmax, D], { label: `${label}.k` }),
    v: createTensor(gpu, [Hkv, Tmax, D], { label: `${label}.v` }),
  };
}

/**
 * cache.k[:, p] ← k, cache.v[:, p] ← v with p = position[0] (a p ≥ Tmax writes nothing).
 * k, v: (1, Hkv, 1, D) or (Hkv, D); cache: (Hkv, Tmax, D) each; position: u32, element 0 = p.
 * @example await appendKv(rec, cache, k, v, state);
 */
export async function appendKv(
  rec: Recorder,
  cache: KvCache,
  k: Tensor,
  v: Tensor,
  position: Tensor,
): Promise<void> {
  const what = "appendKv";
  const [Hkv, Tmax, D] = cacheShape(what, cache);
  checkPosition(what, position);
  for (const t of [k, v]) {
    checkF32(what, t);
    if (numel(t.shape) !== Hkv * D) {
      throw new RangeError(`${what}: ${shapeText(t)} must hold Hkv·D = ${Hkv}·${D} elements`);
    }
  }
  const kern = await kernel(rec.gpu, { file: "decode_attention", entry: "appendKv", constants: { D, WG } });
  rec.dispatch(kern, {
    uniforms: [0, Hkv, Tmax, 0, 0, 0],
    outputs: [cache.k, cache.v],
    inputs: [k, v, position],
    workgroups: [Math.ceil((Hkv * D) / 4 / WG)],
  });
}

// Split partials, shared by every decode attention of one shape on a device: layers run one after the
// other and each consumes its partials before the next one writes them.
const scratchCache = new WeakMap<GPUDevice, Map<string, { acc: Tensor; stat: Tensor }>>();

function partials(gpu: Gpu, H: number, splits: number, D: number): { acc: Tensor; stat: Tensor } {
  let cache = scratchCache.get(gpu.device);
  if (!cache) scratchCache.set(gpu.device, cache = new Map());
  const key = `${H},${splits},${D}`;
  let scratch = cache.get(key);
  if (!scratch) {
    scratch = {
      acc: createTensor(gpu, [H, splits, D], { label: "decode attention split accumulators" }),
      stat: createTensor(gpu, [H, splits, 2], { label: "decode attention split (max, sum)" }),
    };
    cache.set(key, scratch);
  }
  return scratch;
}

const absentCache = new WeakMap<GPUDevice, Tensor>();

// Bound where the sink is absent; the kernel never reads it then.
function absentSink(gpu: Gpu): Tensor {
  let t = absentCache.get(gpu.device);
  if (!t) absentCache.set(gpu.device, t = tensorFrom(gpu, [4], [0, 0, 0, 0], { label: "absent sink" }));
  return t;
}

/**
 * o ← attention of the token at p = position[0] over cache rows 0 … p (see the file comment).
 * o, q: H·D elements each ((1, H, 1, D), (1, 1, H·D) or (H, D)); cache: (Hkv, Tmax, D); logitScale,
 * sinkLogit: (H,). Two dispatches: the splits, then their ordered merge.
 * @example await decodeAttention(rec, o, { q, cache, logitScale, position: state });
 */
export async function decodeAttention(
  rec: Recorder,
  o: Tensor,
  inputs: DecodeAttentionInputs,
  opts: DecodeAttentionOptions = {},
): Promise<void> {
  const what = "decodeAttention";
  const gpu = rec.gpu;
  const [Hkv, Tmax, D] = cacheShape(what, inputs.cache);
  checkPosition(what, inputs.position);
  checkF32(what, o);
  checkF32(what, inputs.q);
  checkF32(what, inputs.logitScale);
  if (inputs.logitScale.shape.length !== 1) {
    throw new RangeError(`${what}: ${shapeText(inputs.logitScale)} must be (H,)`);
  }
  const H = inputs.logitScale.shape[0];
  if (H % Hkv !== 0) {
    throw new RangeError(
      `${what}: H = ${H} query heads (${shapeText(inputs.logitScale)}) is not a multiple of the cache's ` +
        `Hkv = ${Hkv}`,
    );
  }
  for (const t of [inputs.q, o]) {
    if (numel(t.shape) !== H * D) {
      throw new RangeError(`${what}: ${shapeText(t)} must hold H·D = ${H}·${D} elements`);
    }
  }
  if (inputs.sinkLogit) {
    checkF32(what, inputs.sinkLogit);
    if (numel(inputs.sinkLogit.shape) !== H) {
      throw new RangeError(`${what}: ${shapeText(inputs.sinkLogit)} must be (H,)`);
    }
  }
  const keysPerSplit = opts.keysPerSplit ?? decodeKeysPerSplit(Tmax);
  if (!Number.isInteger(keysPerSplit) || keysPerSplit < 1) {
    throw new RangeError(`${what}: keysPerSplit = ${keysPerSplit} must be a positive integer`);
  }
  const splits = Math.ceil(Tmax / keysPerSplit);
  if (gpu.software && (2 * splits > 60000 || keysPerSplit / BLOCK > 60000)) {
    throw new RangeError(
      `${what}: ${splits} splits of ${keysPerSplit} keys exceed the loop iterations this software adapter ` +
        `allows one invocation (65,535); use decodeKeysPerSplit(Tmax)`,
    );
  }
  const scratch = partials(gpu, H, splits, D);
  const uniforms = [H, Hkv, Tmax, keysPerSplit, splits, inputs.sinkLogit ? 1 : 0];
  const partial = await kernel(gpu, {
    file: "decode_attention",
    entry: "decodeAttentionPartial",
    constants: { D, WG, BLOCK },
  });
  const maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (H > maxGroups) throw new RangeError(`${what}: H = ${H} heads exceed ${maxGroups} workgroups in y`);
  rec.dispatch(partial, {
    uniforms,
    outputs: [scratch.acc, scratch.stat],
    inputs: [inputs.q, inputs.cache.k, inputs.cache.v, inputs.logitScale, inputs.position],
    workgroups: [Math.ceil(splits / WG), H],
  });
  const combine = await kernel(gpu, {
    file: "decode_attention",
    entry: "decodeAttentionCombine",
    constants: { D, WG },
  });
  rec.dispatch(combine, {
    uniforms,
    outputs: [o],
    inputs: [scratch.acc, scratch.stat, inputs.sinkLogit ?? absentSink(gpu), inputs.position],
    workgroups: [Math.ceil((H * D) / 4 / WG)],
  });
}
