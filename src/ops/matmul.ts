/**
 * Matrix multiply (kernels/matmul.wgsl): out = [out +] alpha · op(A) · op(B) [+ bias], batched, with
 * A·B, A·Bᵀ (x·Wᵀ), Aᵀ·B (weight gradients xᵀ·dy) and a B shared by every batch (a layer's weight).
 *
 * Two kernels behind one launcher: a shared-memory, register-tiled storage-buffer kernel for real
 * GPUs, and a texture-read kernel for software adapters, where llvmpipe vectorises texture fetches
 * but not storage-buffer reads (five to nine times faster there). The texture path packs operands
 * into scratch textures first, in blocks when they are taller than a texture (a vocabulary-sized N).
 * Both sum K in a fixed order.
 */
import type { Gpu } from "../gpu/device.ts";
import { kernel } from "../gpu/kernel.ts";
import { f32, type Recorder } from "../gpu/recorder.ts";
import { byteSize, checkBindable, checkShape, createTensor, type Tensor } from "../gpu/tensor.ts";

/** Which kernel runs: chosen from the adapter (`auto`) or forced (tests run both). */
export type MatmulPath = "auto" | "storage" | "texture";

/** Options of `matmul`; every one defaults to off (alpha to 1, path to auto). */
export interface MatmulOptions {
  /** A is stored (Bt, K, M) and used transposed. */
  transA?: boolean;
  /** B is stored (Bt, N, K) or (N, K) and used transposed. */
  transB?: boolean;
  /** (N,), added to every row of the product. */
  bias?: Tensor;
  /** out += result instead of out = result. */
  accumulate?: boolean;
  /** Scales the product (not the bias or the accumulated out). */
  alpha?: number;
  path?: MatmulPath;
  /**
   * Texture path: the tallest scratch texture to use (defaults to maxTextureDimension2D); operands
   * with more rows are split into blocks. Smaller values bound scratch memory.
   */
  textureRows?: number;
}

/** The sizes of one matmul after its shapes were checked. */
export interface MatmulDims {
  /** Batch count (1 for an unbatched matmul). */
  Bt: number;
  M: number;
  N: number;
  K: number;
  /** False when one B (K, N) is shared by every batch. */
  bBatched: boolean;
}

/** What the path chooser needs to know about the adapter. */
export interface MatmulAdapterFacts {
  software: boolean;
  limits: { maxTextureDimension2D: number };
}

// Storage kernel: a 64 × 64 output tile per workgroup. Texture kernel: 16 × 8 outputs per invocation
// (TM, TN in kernels/matmul.wgsl) and TEXTURE_WG × TEXTURE_WG invocations per workgroup.
const STORAGE_TILE = 64;
const TEXTURE_WG = 8;
const TEXTURE_TILE_M = 16 * TEXTURE_WG;
const TEXTURE_TILE_N = 8 * TEXTURE_WG;
const PACK_WG = 8;

const describe = (t: Tensor) => `${t.label} [${t.shape.join(", ")}]`;

/**
 * Checks the operands of `matmul` and returns its sizes; throws TypeError/RangeError naming the
 * tensors and their shapes.
 */
export function matmulDims(out: Tensor, a: Tensor, b: Tensor, opts: MatmulOptions = {}): MatmulDims {
  const roles: [string, Tensor | undefined][] = [["out", out], ["a", a], ["b", b], ["bias", opts.bias]];
  for (const [role, t] of roles) {
    if (!t) continue;
    if (t.dtype !== "f32") throw new TypeError(`matmul: ${role} ${describe(t)} is ${t.dtype}, expected f32`);
    checkShape(`matmul: ${role} ${t.label}`, t.shape);
  }
  const aLayout = opts.transA ? "(Bt, K, M)" : "(Bt, M, K)";
  const bLayout = opts.transB ? "(Bt, N, K)" : "(Bt, K, N)";
  if (a.shape.length !== 2 && a.shape.length !== 3) {
    throw new RangeError(`matmul: a ${describe(a)} must be ${aLayout} or without Bt`);
  }
  if (b.shape.length !== 2 && b.shape.length !== 3) {
    throw new RangeError(`matmul: b ${describe(b)} must be ${bLayout} or without Bt`);
  }
  const batched = a.shape.length === 3;
  const bBatched = b.shape.length === 3;
  if (bBatched && !batched) {
    throw new RangeError(`matmul: b ${describe(b)} is batched but a ${describe(a)} is not`);
  }
  const Bt = batched ? a.shape[0] : 1;
  const [aRows, aCols] = a.shape.slice(-2);
  const [bRows, bCols] = b.shape.slice(-2);
  const [M, K] = opts.transA ? [aCols, aRows] : [aRows, aCols];
  const [Kb, N] = opts.transB ? [bCols, bRows] : [bRows, bCols];
  if (K !== Kb) {
    throw new RangeError(
      `matmul: a ${describe(a)} as ${aLayout} and b ${
        describe(b)
      } as ${bLayout} disagree on K: ${K} vs ${Kb}`,
    );
  }
  if (bBatched && b.shape[0] !== Bt) {
    throw new RangeError(
      `matmul: a ${describe(a)} and b ${describe(b)} disagree on Bt: ${Bt} vs ${b.shape[0]}`,
    );
  }
  const want = batched ? [Bt, M, N] : [M, N];
  if (out.shape.length !== want.length || out.shape.some((d, i) => d !== want[i])) {
    throw new RangeError(
      `matmul: out ${describe(out)} must be [${want.join(", ")}] for a ${describe(a)} and b ${describe(b)}`,
    );
  }
  if (opts.bias && (opts.bias.shape.length !== 1 || opts.bias.shape[0] !== N)) {
    throw new RangeError(`matmul: bias ${describe(opts.bias)} must be [${N}] (N of out ${describe(out)})`);
  }
  if (opts.alpha !== undefined && !Number.isFinite(opts.alpha)) {
    throw new RangeError(`matmul: alpha ${opts.alpha} must be a finite number`);
  }
  return { Bt, M, N, K, bBatched };
}

/**
 * Why the texture path cannot run `dims`, or null when it can. Rows of A and B are split over as many
 * textures as needed, but one texture row must hold all ⌈K/4⌉ texels of K.
 */
function textureLimitText(facts: MatmulAdapterFacts, dims: MatmulDims): string | null {
  const max = facts.limits.maxTextureDimension2D;
  const K4 = Math.ceil(dims.K / 4);
  return K4 > max ? `⌈K/4⌉ = ${K4} exceeds maxTextureDimension2D ${max}` : null;
}

/**
 * The kernel a matmul of `dims` runs: the texture path on software adapters when ⌈K/4⌉ fits in a
 * texture's width, else the storage path. A forced "texture" that does not fit throws.
 * @example chooseMatmulPath(gpu, { Bt: 1, M: 64, N: 64, K: 64, bBatched: false }); // "texture" on llvmpipe
 */
export function chooseMatmulPath(
  facts: MatmulAdapterFacts,
  dims: MatmulDims,
  requested: MatmulPath = "auto",
): "storage" | "texture" {
  if (requested === "storage") return "storage";
  const unfit = textureLimitText(facts, dims);
  if (requested === "texture") {
    if (unfit) throw new RangeError(`matmul: the texture path cannot run this matmul: ${unfit}`);
    return "texture";
  }
  return facts.software && !unfit ? "texture" : "storage";
}

// Scratch textures of the texture path, per device and size: every matmul of one size shares them
// (its pack and multiply dispatches run in recording order), and a replayed recording reuses them.
const scratch = new WeakMap<GPUDevice, Map<string, GPUTextureView>>();
const unusedBias = new WeakMap<GPUDevice, Tensor>();

/**
 * A texture side of at least `d`: 16·j + 1, so never a power of two. llvmpipe specialises a shader on
 * whether each bound texture's sides are powers of two and recompiles (seconds for the multiply
 * kernel) on every new combination; keeping all of them odd leaves one compiled variant, and the
 * rounding lets nearby sizes share one scratch texture.
 */
export function textureSide(d: number, max: number): number {
  const side = Math.ceil(d / 16) * 16 + 1;
  return side <= max ? side : d;
}

function scratchTexture(gpu: Gpu, role: "a" | "b", minWidth: number, minHeight: number): GPUTextureView {
  let cache = scratch.get(gpu.device);
  if (!cache) scratch.set(gpu.device, cache = new Map());
  const max = gpu.limits.maxTextureDimension2D;
  const width = textureSide(minWidth, max);
  const height = textureSide(minHeight, max);
  const key = `${role}:${width}x${height}`;
  let view = cache.get(key);
  if (!view) {
    const texture = gpu.device.createTexture({
      label: `matmul ${role} texels ${key}`,
      size: [width, height],
      format: "rgba32float",
      usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.TEXTURE_BINDING,
    });
    view = texture.createView();
    cache.set(key, view);
  }
  return view;
}

// The kernels always declare bias; without one they bind this never-read element.
function noBias(gpu: Gpu): Tensor {
  let t = unusedBias.get(gpu.device);
  if (!t) unusedBias.set(gpu.device, t = createTensor(gpu, [1], { label: "matmul unused bias" }));
  return t;
}

/**
 * out = [out +] alpha · op(a) · op(b) [+ bias]. out: (Bt, M, N) or (M, N); a: (Bt, M, K), or
 * (Bt, K, M) with transA; b: (Bt, K, N) or (K, N), or (Bt, N, K) / (N, K) with transB; bias: (N,).
 * @example await matmul(rec, y, x, w, { transB: true, bias }); // y = x·Wᵀ + b, a linear layer
 */
export async function matmul(
  rec: Recorder,
  out: Tensor,
  a: Tensor,
  b: Tensor,
  opts: MatmulOptions = {},
): Promise<void> {
  const gpu = rec.gpu;
  const dims = matmulDims(out, a, b, opts);
  const { Bt, M, N, K, bBatched } = dims;
  for (const [role, t] of [["out", out], ["a", a], ["b", b]] as const) {
    checkBindable(gpu, `matmul: ${role} ${describe(t)}`, byteSize(t));
  }
  const maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;
  const path = chooseMatmulPath(gpu, dims, opts.path ?? "auto");
  const [aRowStride, aKStride] = opts.transA ? [1, M] : [K, 1];
  const [bColStride, bKStride] = opts.transB ? [K, 1] : [1, N];
  const aBatchStride = a.shape.length === 3 ? M * K : 0;
  const bBatchStride = bBatched ? K * N : 0;
  const alpha = f32(opts.alpha ?? 1);
  // The texture path runs in blocks (batch0.., rows × cols of out at m0, n0); the storage path in one.
  const uniforms = (batch0: number, m0: number, n0: number, rows: number, cols: number) => [
    M,
    N,
    K,
    batch0,
    m0,
    n0,
    rows,
    cols,
    aRowStride,
    aKStride,
    aBatchStride,
    bColStride,
    bKStride,
    bBatchStride,
    alpha,
    opts.bias ? 1 : 0,
    opts.accumulate ? 1 : 0,
  ];
  const bias = opts.bias ?? noBias(gpu);

  if (path === "storage") {
    const workgroups = [Math.ceil(N / STORAGE_TILE), Math.ceil(M / STORAGE_TILE), Bt] as const;
    if (workgroups.some((g) => g > maxGroups)) {
      throw new RangeError(
        `matmul: out ${describe(out)} needs [${workgroups.join(", ")}] workgroups, over this device's ` +
          `maxComputeWorkgroupsPerDimension ${maxGroups}`,
      );
    }
    // vec4 tile loads need every vec4 inside one row: each operand's contiguous side a multiple of 4.
    const aVec4 = opts.transA ? M % 4 === 0 : K % 4 === 0;
    const bVec4 = opts.transB ? K % 4 === 0 : N % 4 === 0;
    const entry = aVec4 && bVec4 ? "matmulStorageVec4" : "matmulStorage";
    const k = await kernel(gpu, { file: "matmul", entry });
    rec.dispatch(k, { uniforms: uniforms(0, 0, 0, M, N), outputs: [out], inputs: [a, b, bias], workgroups });
    return;
  }

  // Texture path. A texture holds at most maxRows rows, so A is packed in blocks of up to maxRows rows,
  // B in blocks of up to maxRows columns, and several batches share one texture when they fit.
  const limit = gpu.limits.maxTextureDimension2D;
  const maxRows = Math.min(opts.textureRows ?? limit, limit);
  if (!Number.isInteger(maxRows) || maxRows < 1) {
    throw new RangeError(`matmul: textureRows ${opts.textureRows} must be a positive integer`);
  }
  const rowBlock = Math.min(M, maxRows);
  const colBlock = Math.min(N, maxRows);
  const batchBlock = Math.min(
    Math.floor(maxRows / Math.max(rowBlock, bBatched ? colBlock : 1)),
    Bt,
    maxGroups,
  );
  const K4 = Math.ceil(K / 4);
  const aTex = scratchTexture(gpu, "a", K4, batchBlock * rowBlock);
  const bTex = scratchTexture(gpu, "b", K4, (bBatched ? batchBlock : 1) * colBlock);
  const pack = await kernel(gpu, { file: "matmul", entry: "packTexture" });
  const multiply = await kernel(gpu, {
    file: "matmul",
    entry: "matmulTexture",
    constants: { WGX: TEXTURE_WG, WGY: TEXTURE_WG },
  });
  // A packed block stays valid while only the other operand's block changes, so pack each once
  // per change: B blocks in the outer loop, A blocks inside (repacked per B block only when M is split).
  let packedB = "";
  let packedA = "";
  for (let batch0 = 0; batch0 < Bt; batch0 += batchBlock) {
    const count = Math.min(batchBlock, Bt - batch0);
    for (let n0 = 0; n0 < N; n0 += colBlock) {
      const cols = Math.min(colBlock, N - n0);
      const bKey = `${bBatched ? batch0 : 0}:${n0}`;
      if (bKey !== packedB) {
        rec.dispatch(pack, {
          uniforms: [cols, n0, K, bColStride, bKStride, bBatchStride, bBatched ? batch0 : 0],
          outputs: [bTex],
          inputs: [b],
          workgroups: [Math.ceil(K4 / PACK_WG), Math.ceil(cols / PACK_WG), bBatched ? count : 1],
        });
        packedB = bKey;
      }
      for (let m0 = 0; m0 < M; m0 += rowBlock) {
        const rows = Math.min(rowBlock, M - m0);
        const aKey = `${batch0}:${m0}`;
        if (aKey !== packedA) {
          rec.dispatch(pack, {
            uniforms: [rows, m0, K, aRowStride, aKStride, aBatchStride, batch0],
            outputs: [aTex],
            inputs: [a],
            workgroups: [Math.ceil(K4 / PACK_WG), Math.ceil(rows / PACK_WG), count],
          });
          packedA = aKey;
        }
        rec.dispatch(multiply, {
          uniforms: uniforms(batch0, m0, n0, rows, cols),
          outputs: [out],
          inputs: [aTex, bTex, bias],
          workgroups: [Math.ceil(cols / TEXTURE_TILE_N), Math.ceil(rows / TEXTURE_TILE_M), count],
        });
      }
    }
  }
}
