/**
 * Command recording: many dispatches, one command encoder, one submit. A Recorder is built once
 * (bind groups and uniforms are created then) and may be submitted any number of times, which is
 * how a training step is replayed without per-step allocation.
 *
 * Binding convention shared by every kernel: binding 0 is the uniform block when a launcher passes
 * uniforms, then the outputs in order, then the inputs in order.
 */
import { assertAlive, checked, type Gpu, GpuError } from "./device.ts";
import type { Kernel } from "./kernel.ts";
import { align, byteSize, checkBindable, type Tensor } from "./tensor.ts";

/** A float uniform value; plain numbers are packed as u32. */
export interface F32 {
  f32: number;
}
/** A signed integer uniform value. */
export interface I32 {
  i32: number;
}
/** Marks a uniform value as f32. */
export const f32 = (value: number): F32 => ({ f32: value });
/** Marks a uniform value as i32. */
export const i32 = (value: number): I32 => ({ i32: value });
/** One 4-byte field of a kernel's uniform struct, in declaration order. */
export type Uniform = number | F32 | I32;

/** A storage or texture resource a kernel binds. */
export type Resource = Tensor | GPUTextureView;

/** What a launcher asks for: the kernel, its uniforms, outputs, inputs and grid. */
export interface DispatchSpec {
  uniforms?: readonly Uniform[];
  outputs: readonly Resource[];
  inputs: readonly Resource[];
  /** Workgroup counts; each at most maxComputeWorkgroupsPerDimension. */
  workgroups: readonly [number, number?, number?];
}

interface PendingDispatch {
  kind: "dispatch";
  kernel: Kernel;
  uniformOffset: number;
  uniformSize: number;
  resources: Resource[];
  workgroups: [number, number, number];
  bindGroup?: GPUBindGroup;
}

interface CopyOp {
  kind: "copy";
  src: Tensor;
  dst: Tensor;
  bytes: number;
}

function isTensor(r: Resource): r is Tensor {
  return (r as Tensor).buffer !== undefined && (r as Tensor).shape !== undefined;
}

function packUniforms(values: readonly Uniform[], kernelName: string): Uint8Array {
  const bytes = new Uint8Array(align(Math.max(values.length * 4, 16), 16));
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => {
    if (typeof v === "number") {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
        throw new RangeError(`${kernelName}: uniform ${i} = ${v} is not a u32 (wrap floats in f32())`);
      }
      view.setUint32(i * 4, v, true);
    } else if ("f32" in v) view.setFloat32(i * 4, v.f32, true);
    else view.setInt32(i * 4, v.i32, true);
  });
  return bytes;
}

/**
 * Records dispatches and copies; `submit()` encodes them all in one command encoder.
 * @example
 * const rec = new Recorder(gpu, "step");
 * rec.dispatch(k, { uniforms: [n], outputs: [y], inputs: [x], workgroups: [Math.ceil(n / 256)] });
 * await rec.submit();
 */
export class Recorder {
  #ops: (PendingDispatch | CopyOp)[] = [];
  #uniformBytes: Uint8Array[] = [];
  #uniformSize = 0;
  #uniformBuffer: GPUBuffer | null = null;
  #sealed = false;
  #querySet: GPUQuerySet | null = null;
  #queryBuffers: { resolve: GPUBuffer; read: GPUBuffer } | null = null;

  constructor(readonly gpu: Gpu, readonly label = "commands") {}

  /** Number of dispatches recorded. */
  get dispatchCount(): number {
    return this.#ops.filter((op) => op.kind === "dispatch").length;
  }

  /** Names of the recorded kernels, in order (used in error messages and profiles). */
  get kernelNames(): string[] {
    return this.#ops.map((op) =>
      op.kind === "dispatch" ? op.kernel.name : `copy ${op.src.label}→${op.dst.label}`
    );
  }

  /** Records one dispatch after checking its bindings against the device's limits. */
  dispatch(kernel: Kernel, spec: DispatchSpec): void {
    if (this.#sealed) throw new Error(`${this.label}: cannot record ${kernel.name} after the first submit`);
    const maxGroups = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    const wg: [number, number, number] = [
      spec.workgroups[0],
      spec.workgroups[1] ?? 1,
      spec.workgroups[2] ?? 1,
    ];
    for (const n of wg) {
      if (!Number.isInteger(n) || n < 1 || n > maxGroups) {
        throw new RangeError(`${kernel.name}: workgroup count [${wg.join(", ")}] outside 1..${maxGroups}`);
      }
    }
    const offsetAlign = this.gpu.limits.minStorageBufferOffsetAlignment;
    for (const r of [...spec.outputs, ...spec.inputs]) {
      if (!isTensor(r)) continue;
      if (r.offset % offsetAlign !== 0) {
        throw new RangeError(
          `${kernel.name}: ${r.label} is bound at byte offset ${r.offset}, not a multiple of ${offsetAlign}`,
        );
      }
      checkBindable(this.gpu, `${kernel.name}: ${r.label}`, byteSize(r));
    }
    // WebGPU refuses a buffer bound read-only and read-write in one dispatch, even for disjoint ranges.
    for (const out of spec.outputs) {
      if (!isTensor(out)) continue;
      for (const input of spec.inputs) {
        if (isTensor(input) && input.buffer === out.buffer) {
          throw new Error(
            `${kernel.name}: input ${input.label} and output ${out.label} share one GPU buffer; ` +
              `WebGPU forbids binding a buffer read-only and read-write in one dispatch`,
          );
        }
      }
    }
    let uniformOffset = -1;
    let uniformSize = 0;
    if (spec.uniforms) {
      const bytes = packUniforms(spec.uniforms, kernel.name);
      uniformOffset = this.#uniformSize;
      uniformSize = bytes.byteLength;
      const padded = align(bytes.byteLength, this.gpu.limits.minUniformBufferOffsetAlignment);
      this.#uniformBytes.push(bytes);
      if (padded > bytes.byteLength) this.#uniformBytes.push(new Uint8Array(padded - bytes.byteLength));
      this.#uniformSize += padded;
    }
    this.#ops.push({
      kind: "dispatch",
      kernel,
      uniformOffset,
      uniformSize,
      resources: [...spec.outputs, ...spec.inputs],
      workgroups: wg,
    });
  }

  /** Records a buffer-to-buffer copy of a whole tensor. */
  copy(dst: Tensor, src: Tensor): void {
    if (this.#sealed) throw new Error(`${this.label}: cannot record a copy after the first submit`);
    if (byteSize(dst) !== byteSize(src)) {
      throw new RangeError(`copy ${src.label} [${src.shape}] → ${dst.label} [${dst.shape}]: sizes differ`);
    }
    this.#ops.push({ kind: "copy", src, dst, bytes: byteSize(src) });
  }

  #seal(): void {
    if (this.#sealed) return;
    this.#sealed = true;
    const device = this.gpu.device;
    if (this.#uniformSize > 0) {
      this.#uniformBuffer = device.createBuffer({
        label: `${this.label}:uniforms`,
        size: this.#uniformSize,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      const all = new Uint8Array(this.#uniformSize);
      let at = 0;
      for (const b of this.#uniformBytes) {
        all.set(b, at);
        at += b.byteLength;
      }
      device.queue.writeBuffer(this.#uniformBuffer, 0, all);
      this.#uniformBytes = [];
    }
    for (const op of this.#ops) {
      if (op.kind !== "dispatch") continue;
      const entries: GPUBindGroupEntry[] = [];
      let binding = 0;
      if (op.uniformOffset >= 0) {
        entries.push({
          binding: binding++,
          resource: { buffer: this.#uniformBuffer!, offset: op.uniformOffset, size: op.uniformSize },
        });
      }
      for (const r of op.resources) {
        entries.push({
          binding: binding++,
          resource: isTensor(r) ? { buffer: r.buffer, offset: r.offset, size: align(byteSize(r), 4) } : r,
        });
      }
      op.bindGroup = device.createBindGroup({
        label: op.kernel.name,
        layout: op.kernel.pipeline.getBindGroupLayout(0),
        entries,
      });
    }
  }

  /** Encodes every recorded op into `encoder`; consecutive dispatches share one compute pass. */
  encode(encoder: GPUCommandEncoder, timestamps?: GPUQuerySet): void {
    this.#seal();
    const last = this.#ops.length - 1;
    let pass: GPUComputePassEncoder | null = null;
    this.#ops.forEach((op, i) => {
      if (op.kind === "copy") {
        pass?.end();
        pass = null;
        encoder.copyBufferToBuffer(op.src.buffer, op.src.offset, op.dst.buffer, op.dst.offset, op.bytes);
        return;
      }
      if (!pass) {
        // Timestamps cover the first pass's start to the last pass's end (written only where the
        // pass is the first or the last; a recording with copies between passes is timed whole).
        const isLastPass = this.#ops.slice(i).every((o) => o.kind === "dispatch");
        const timestampWrites: GPUComputePassTimestampWrites | undefined =
          timestamps && (i === 0 || isLastPass)
            ? {
              querySet: timestamps,
              ...(i === 0 ? { beginningOfPassWriteIndex: 0 } : {}),
              ...(isLastPass ? { endOfPassWriteIndex: 1 } : {}),
            }
            : undefined;
        pass = encoder.beginComputePass({ label: this.label, timestampWrites });
      }
      pass.setPipeline(op.kernel.pipeline);
      pass.setBindGroup(0, op.bindGroup!);
      pass.dispatchWorkgroups(...op.workgroups);
      if (i === last) {
        pass.end();
        pass = null;
      }
    });
    (pass as GPUComputePassEncoder | null)?.end();
  }

  /** Submits the recording once; validation errors are thrown naming the recorded kernels. */
  submit(): Promise<void> {
    assertAlive(this.gpu, this.label);
    if (this.#ops.length === 0) return Promise.resolve(); // never finish an empty encoder (deno#28966)
    return checked(this.gpu, `${this.label} [${this.describe()}]`, () => {
      const encoder = this.gpu.device.createCommandEncoder({ label: this.label });
      this.encode(encoder);
      this.gpu.device.queue.submit([encoder.finish()]);
    });
  }

  /**
   * Submits once and returns the GPU time in milliseconds from timestamp queries, or the wall time
   * to completion where the adapter has no timestamps. Reads back, so keep it out of hot loops.
   */
  async submitTimed(): Promise<{ ms: number; source: "timestamp" | "wall" }> {
    const gpu = this.gpu;
    if (!gpu.hasTimestamps || this.#ops.length === 0 || this.#ops[0].kind !== "dispatch") {
      const t0 = performance.now();
      await this.submit();
      await gpu.device.queue.onSubmittedWorkDone();
      return { ms: performance.now() - t0, source: "wall" };
    }
    this.#querySet ??= gpu.device.createQuerySet({ type: "timestamp", count: 2 });
    this.#queryBuffers ??= {
      resolve: gpu.device.createBuffer({
        size: 16,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      }),
      read: gpu.device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }),
    };
    const { resolve, read } = this.#queryBuffers;
    await checked(gpu, `${this.label} (timed)`, () => {
      const encoder = gpu.device.createCommandEncoder({ label: `${this.label}:timed` });
      this.encode(encoder, this.#querySet!);
      encoder.resolveQuerySet(this.#querySet!, 0, 2, resolve, 0);
      encoder.copyBufferToBuffer(resolve, 0, read, 0, 16);
      gpu.device.queue.submit([encoder.finish()]);
    });
    await read.mapAsync(GPUMapMode.READ);
    const [begin, end] = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    if (end <= begin) {
      throw new GpuError(`${this.label}: timestamp queries returned end ${end} ≤ begin ${begin}`);
    }
    return { ms: Number(end - begin) / 1e6, source: "timestamp" };
  }

  /** A short description of the recording for error messages. */
  describe(): string {
    const names = this.kernelNames;
    const shown = names.slice(0, 6).join(", ");
    return names.length > 6 ? `${shown}, … ${names.length} ops` : shown;
  }

  /** Frees the uniform and query buffers. */
  destroy(): void {
    this.#uniformBuffer?.destroy();
    this.#querySet?.destroy();
    this.#queryBuffers?.resolve.destroy();
    this.#queryBuffers?.read.destroy();
  }
}
