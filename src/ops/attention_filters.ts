/**
 * Launchers of kernels/attention_filters.wgsl, the hybrid method's per-head attention noise filters:
 * a temperature τ that sets the logit scale exp(τ)/√D, and a sink logit whose parameter is read by the
 * attention kernels directly. The backward turns the attention kernels' dScale and dSink into parameter
 * gradients (accumulated, like every adapter gradient).
 */
import { kernel } from "../gpu/kernel.ts";
import { f32, type Recorder } from "../gpu/recorder.ts";
import { numel, type Tensor } from "../gpu/tensor.ts";

const WG = 64;

function heads(what: string, ...ts: Tensor[]): number {
  const H = numel(ts[0].shape);
  for (const t of ts) {
    if (t.dtype !== "f32") throw new TypeError(`${what}: ${t.label} is ${t.dtype}, expected f32`);
    if (t.shape.length !== 1 || t.shape[0] !== H) {
      throw new RangeError(`${what}: ${t.label} [${t.shape.join(", ")}] must be (H,) with H = ${H}`);
    }
  }
  return H;
}

/**
 * scale[h] = exp(τ[h])·fround(1/√D). scale, tau: (H,).
 * @example await temperatureForward(rec, logitScale, tau, 16);
 */
export async function temperatureForward(
  rec: Recorder,
  scale: Tensor,
  tau: Tensor,
  D: number,
): Promise<void> {
  const H = heads("temperatureForward", scale, tau);
  if (!Number.isInteger(D) || D < 1) {
    throw new RangeError(`temperatureForward: head size D = ${D} must be a positive integer`);
  }
  const k = await kernel(rec.gpu, {
    file: "attention_filters",
    entry: "temperatureForward",
    constants: { WG },
  });
  rec.dispatch(k, {
    uniforms: [H, f32(1 / Math.sqrt(D))],
    outputs: [scale],
    inputs: [tau],
    workgroups: [Math.ceil(H / WG)],
  });
}

/**
 * dτ[h] += dScale[h]·scale[h] (the chain rule of scale = exp(τ)/√D). dTau, dScale, scale: (H,).
 * @example await temperatureBackward(rec, dTau, dScale, logitScale);
 */
export async function temperatureBackward(
  rec: Recorder,
  dTau: Tensor,
  dScale: Tensor,
  scale: Tensor,
): Promise<void> {
  const H = heads("temperatureBackward", dTau, dScale, scale);
  const k = await kernel(rec.gpu, {
    file: "attention_filters",
    entry: "temperatureBackward",
    constants: { WG },
  });
  rec.dispatch(k, {
    uniforms: [H, f32(0)],
    outputs: [dTau],
    inputs: [dScale, scale],
    workgroups: [Math.ceil(H / WG)],
  });
}

/**
 * dσ[h] += dSink[h] (the sink logit is its own parameter). dSinkParam, dSink: (H,).
 * @example await sinkBackward(rec, dSigma, dSink);
 */
export async function sinkBackward(rec: Recorder, dSinkParam: Tensor, dSink: Tensor): Promise<void> {
  const H = heads("sinkBackward", dSinkParam, dSink);
  const k = await kernel(rec.gpu, { file: "attention_filters", entry: "sinkBackward", constants: { WG } });
  rec.dispatch(k, {
    uniforms: [H, f32(0)],
    outputs: [dSinkParam],
    inputs: [dSink],
    workgroups: [Math.ceil(H / WG)],
  });
}
