/**
 * The device-side loss log both trainers share: one or more rings of k f32 slots that a recorded step
 * writes its loss sums into (at slot step mod k, from a u32 uploaded before each submit), read back
 * every k steps without waiting, so the GPU stays busy. Ring 0 is the step's loss; trainers with more
 * losses per step (FocuSFT's inner passes) use further rings.
 */
import type { Gpu } from "../gpu/device.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { createTensor, readTensors, type Tensor, upload } from "../gpu/tensor.ts";
import { storeAt } from "../ops/scalar.ts";

/** A step-indexed log of loss sums kept on the device and read back in groups of k steps. */
export class LossLog {
  readonly rings: Tensor[];
  readonly slot: Tensor;
  /** Counted targets of every step (the per-token mean is sum / count). */
  counts: number[] = [];
  /** Per step, the sums of every ring, as far as read back. */
  sums: number[][] = [];
  #step = 0;
  #readUpTo = 0;
  #pending: Promise<void>[] = [];

  constructor(readonly gpu: Gpu, k: number, ringCount: number, label: string) {
    if (!Number.isInteger(k) || k < 1) throw new RangeError(`lossReadEvery ${k} must be a positive integer`);
    this.rings = Array.from(
      { length: ringCount },
      (_, i) => createTensor(gpu, [k], { label: `${label}.${i}` }),
    );
    this.slot = createTensor(gpu, [1], { label: `${label}.slot`, dtype: "u32" });
  }

  /** Records the store of `lossSum` (1,) into ring `ring` at this step's slot. */
  record(rec: Recorder, ring: number, lossSum: Tensor): Promise<void> {
    return storeAt(rec, this.rings[ring], lossSum, this.slot);
  }

  /** Before a step's submit: points the slot at it. */
  beforeSubmit(): void {
    upload(this.gpu, this.slot, [this.#step]);
  }

  /** After a step's submit: notes its counted targets and starts a readback every k steps. */
  afterSubmit(counted: number): void {
    this.#step++;
    this.counts.push(counted);
    if (this.#step - this.#readUpTo === this.rings[0].shape[0]) this.#startRead();
  }

  // Copies the rings now (queued after the last step, before the next) and converts them when mapped.
  #startRead(): void {
    const from = this.#readUpTo;
    const to = this.#step;
    if (to === from) return;
    const k = this.rings[0].shape[0];
    this.#readUpTo = to;
    this.#pending.push(
      readTensors(this.gpu, this.rings).then((rings) => {
        for (let s = from; s < to; s++) this.sums[s] = rings.map((r) => r[s % k]);
      }),
    );
  }

  /** Waits until every step so far is read back. */
  async settle(): Promise<void> {
    this.#startRead();
    await Promise.all(this.#pending);
    this.#pending = [];
  }

  /** Per step, ring `ring`'s sum divided by the step's counted targets (after `settle`). */
  means(ring = 0): number[] {
    return this.sums.map((row, s) => row[ring] / this.counts[s]);
  }

  /** Restores a log saved as (steps, ring-0 sums, counts); later rings are unknown for those steps. */
  restore(steps: number, sums: number[], counts: number[]): void {
    this.#step = steps;
    this.#readUpTo = steps;
    this.sums = sums.map((x) => [x]);
    this.counts = counts;
  }

  /** Frees the rings and the slot. */
  destroy(): void {
    for (const t of [...this.rings, this.slot]) t.buffer.destroy();
  }
}
