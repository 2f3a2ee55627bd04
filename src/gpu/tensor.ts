/**
 * Tensors are views into GPU buffers: a buffer, a byte offset, a shape and a dtype. Several tensors
 * may share one buffer (a parameter table, an activation arena); kernels bind their byte ranges.
 */
import { assertAlive, checked, type Gpu, GpuError } from "./device.ts";

/** Element types the kernels use; all are 4 bytes wide. */
export type DType = "f32" | "u32" | "i32";

/** A typed view of a byte range of a GPU buffer. */
export interface Tensor {
  buffer: GPUBuffer;
  /** Byte offset into `buffer`; a multiple of the device's storage offset alignment when bound. */
  offset: number;
  shape: readonly number[];
  dtype: DType;
  label: string;
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Size in bytes of a tensor's elements. */
export function byteSize(t: Tensor): number {
  return numel(t.shape) * 4;
}

const storageUsage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

let allocated = 0;

/**
 * Bytes of every buffer created through `createTensor` and `BufferPool` since the process started
 * (never decreased, so it bounds the peak of those buffers; kernels' own cached scratch is extra).
 */
export function allocatedBytes(): number {
  return allocated;
}

/** Refuses shapes with non-integer, negative or zero dimensions, naming the tensor. */
export function checkShape(label: string, shape: readonly number[]): void {
  if (shape.length === 0) throw new RangeError(`${label}: a shape needs at least one dimension`);
  for (const d of shape) {
    if (!Number.isInteger(d) || d <= 0) {
      throw new RangeError(
        `${label}: shape [${shape.join(", ")}] must hold positive integers (empty tensors are refused)`,
      );
    }
  }
}

/** Refuses a byte size the device cannot bind as one storage range, naming the limit. */
export function checkBindable(gpu: Gpu, label: string, bytes: number): void {
  const max = gpu.limits.maxStorageBufferBindingSize;
  if (bytes > max) {
    throw new RangeError(
      `${label}: ${bytes} bytes exceeds this device's maxStorageBufferBindingSize of ${max} bytes; ` +
        `split the tensor or use a smaller shape`,
    );
  }
}

/**
 * A new tensor in a buffer of its own.
 * @example const x = createTensor(gpu, [4, 7], { label: "x" });
 */
export function createTensor(
  gpu: Gpu,
  shape: readonly number[],
  opts: { label?: string; dtype?: DType; usage?: number } = {},
): Tensor {
  const label = opts.label ?? "tensor";
  checkShape(label, shape);
  const bytes = numel(shape) * 4;
  if (bytes > gpu.limits.maxBufferSize) {
    throw new RangeError(`${label}: ${bytes} bytes exceeds maxBufferSize ${gpu.limits.maxBufferSize}`);
  }
  assertAlive(gpu, `allocating ${label}`);
  const buffer = gpu.device.createBuffer({
    label,
    size: align(bytes, 16),
    usage: opts.usage ?? storageUsage,
  });
  allocated += buffer.size;
  return { buffer, offset: 0, shape: [...shape], dtype: opts.dtype ?? "f32", label };
}

/** Rounds `n` up to a multiple of `to`. */
export function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

type HostArray = Float32Array | Uint32Array | Int32Array;

function hostArrayFor(t: Tensor, buffer: ArrayBuffer): HostArray {
  return t.dtype === "f32"
    ? new Float32Array(buffer)
    : t.dtype === "u32"
    ? new Uint32Array(buffer)
    : new Int32Array(buffer);
}

/** Writes host data into a tensor (queued before the next submit). */
export function upload(gpu: Gpu, t: Tensor, data: ArrayLike<number>): void {
  const n = numel(t.shape);
  if (data.length !== n) {
    throw new RangeError(
      `${t.label}: upload of ${data.length} values into shape [${t.shape.join(", ")}] (${n} values)`,
    );
  }
  const bytes = new ArrayBuffer(n * 4);
  hostArrayFor(t, bytes).set(data);
  gpu.device.queue.writeBuffer(t.buffer, t.offset, bytes, 0, n * 4);
}

/** A tensor filled from host data. */
export function tensorFrom(
  gpu: Gpu,
  shape: readonly number[],
  data: ArrayLike<number>,
  opts: { label?: string; dtype?: DType } = {},
): Tensor {
  const t = createTensor(gpu, shape, opts);
  upload(gpu, t, data);
  return t;
}

/** Fills a f32 tensor with NaN so that any element a kernel fails to write shows up in tests. */
export function poison(gpu: Gpu, t: Tensor): void {
  const n = numel(t.shape);
  const bits = new Uint32Array(n).fill(t.dtype === "f32" ? 0x7fc00000 : 0xdeadbeef);
  gpu.device.queue.writeBuffer(t.buffer, t.offset, bits.buffer, 0, n * 4);
}

/**
 * Reads tensors back with one copy pass and one map (each readback costs ~12 ms on Deno, so read
 * several at once and rarely).
 */
export async function readTensors(gpu: Gpu, tensors: readonly Tensor[]): Promise<HostArray[]> {
  const sizes = tensors.map(byteSize);
  const offsets: number[] = [];
  let total = 0;
  for (const s of sizes) {
    offsets.push(total);
    total += align(s, 16);
  }
  const staging = gpu.device.createBuffer({
    label: "readback",
    size: Math.max(total, 16),
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  await checked(gpu, `reading back ${tensors.map((t) => t.label).join(", ")}`, () => {
    const encoder = gpu.device.createCommandEncoder({ label: "readback" });
    tensors.forEach((t, i) => encoder.copyBufferToBuffer(t.buffer, t.offset, staging, offsets[i], sizes[i]));
    gpu.device.queue.submit([encoder.finish()]);
  });
  await staging.mapAsync(GPUMapMode.READ);
  const mapped = staging.getMappedRange();
  const out = tensors.map((t, i) => hostArrayFor(t, mapped.slice(offsets[i], offsets[i] + sizes[i])));
  staging.unmap();
  staging.destroy();
  if (gpu.lost) throw new GpuError(`GPU device lost during readback: ${gpu.lost}`);
  return out;
}

/** Reads one f32 tensor back. */
export async function readF32(gpu: Gpu, t: Tensor): Promise<Float32Array> {
  if (t.dtype !== "f32") throw new TypeError(`${t.label}: readF32 of a ${t.dtype} tensor`);
  return (await readTensors(gpu, [t]))[0] as Float32Array;
}

/**
 * Reuses buffers of the same usage and size class, so evaluation loops that need scratch tensors
 * of varying lengths do not allocate on every call.
 */
export class BufferPool {
  #free = new Map<string, GPUBuffer[]>();
  #live = 0;
  constructor(readonly gpu: Gpu) {}

  /** Bytes held by buffers currently handed out. */
  get liveBytes(): number {
    return this.#live;
  }

  /** A tensor of `shape` in a pooled buffer; give it back with `release`. */
  acquire(shape: readonly number[], label = "scratch", dtype: DType = "f32"): Tensor {
    checkShape(label, shape);
    const size = sizeClass(numel(shape) * 4);
    const key = `${storageUsage}:${size}`;
    let buffer = this.#free.get(key)?.pop();
    if (!buffer) {
      buffer = this.gpu.device.createBuffer({ label: `pool:${size}`, size, usage: storageUsage });
      allocated += size;
    }
    this.#live += size;
    return { buffer, offset: 0, shape: [...shape], dtype, label };
  }

  release(t: Tensor): void {
    const key = `${storageUsage}:${t.buffer.size}`;
    let list = this.#free.get(key);
    if (!list) this.#free.set(key, list = []);
    list.push(t.buffer);
    this.#live -= t.buffer.size;
  }

  /** Destroys every free buffer. */
  trim(): void {
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.#free.clear();
  }
}

// Size classes: powers of two up to 1 MiB, then multiples of 1 MiB, so waste stays under 50%/1 MiB.
function sizeClass(bytes: number): number {
  const mib = 1 << 20;
  if (bytes >= mib) return align(bytes, mib);
  return Math.max(256, 2 ** Math.ceil(Math.log2(bytes)));
}
