/**
 * The parameter table: every base tensor of a model by name, shape and element offset into one flat
 * buffer. Gradients and both AdamW moments use the same table, so zeroing, the global norm, the
 * optimizer step and checkpoints are one pass each over one buffer.
 *
 * Weights use the PyTorch nn.Linear layout (out, in), so a linear layer is y = x·Wᵀ + b. q, k and v
 * of a layer are consecutive rows of one (H·D + 2·Hkv·D, C) block (`h.N.qkv.w`), so one matmul
 * computes all three, while each keeps its own name for methods that target q, k or v alone.
 */
import { dims, type ModelConfig } from "./config.ts";

/** What a tensor is, which decides its AdamW decay group and its initialisation. */
export type ParamRole = "embedding" | "position" | "weight" | "bias" | "norm";

/** One named tensor of the table. */
export interface ParamEntry {
  name: string;
  shape: number[];
  /** Offset in elements into the flat buffer. */
  offset: number;
  numel: number;
  role: ParamRole;
  /** Layer index, or -1 for embeddings and the final norm. */
  layer: number;
}

/** A table of named tensors laid out in one flat f32 buffer. */
export interface ParamTable {
  entries: ParamEntry[];
  byName: Map<string, ParamEntry>;
  /** Total elements including alignment padding. */
  size: number;
}

/**
 * Alignment of every tensor that starts a binding: 64 elements = 256 bytes, the largest
 * minStorageBufferOffsetAlignment WebGPU allows, so any sub-range can be bound on any adapter.
 */
export const PARAM_ALIGN = 64;

/** One tensor to lay out in a table. */
export interface ParamSpec {
  name: string;
  shape: number[];
  role: ParamRole;
  layer: number;
}

/** Builds a table from specs, each tensor starting on a PARAM_ALIGN boundary. */
export function buildTable(specs: readonly ParamSpec[]): ParamTable {
  const entries: ParamEntry[] = [];
  let at = 0;
  for (const s of specs) {
    const numel = s.shape.reduce((a, b) => a * b, 1);
    at = Math.ceil(at / PARAM_ALIGN) * PARAM_ALIGN;
    entries.push({ name: s.name, shape: [...s.shape], offset: at, numel, role: s.role, layer: s.layer });
    at += numel;
  }
  const byName = new Map<string, ParamEntry>();
  for (const e of entries) {
    if (byName.has(e.name)) throw new Error(`parameter table: duplicate tensor name ${e.name}`);
    byName.set(e.name, e);
  }
  return { entries, byName, size: Math.ceil(at / PARAM_ALIGN) * PARAM_ALIGN };
}

/**
 * The base model's parameter table.
 * @example const table = paramTable(config); table.byName.get("h.0.qkv.w");
 */
export function paramTable(config: ModelConfig): ParamTable {
  const { V, C, L, H, Hkv, D, F, maxT, tied } = dims(config);
  const gpt2 = config.family === "gpt2";
  const specs: ParamSpec[] = [{ name: "wte", shape: [V, C], role: "embedding", layer: -1 }];
  if (gpt2) specs.push({ name: "wpe", shape: [maxT, C], role: "position", layer: -1 });
  const qkvRows = (H + 2 * Hkv) * D;
  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`;
    specs.push({ name: `${p}ln1.w`, shape: [C], role: "norm", layer: l });
    if (gpt2) specs.push({ name: `${p}ln1.b`, shape: [C], role: "norm", layer: l });
    // q, k and v are added afterwards as named views of this block (see addQkvViews).
    specs.push({ name: `${p}qkv.w`, shape: [qkvRows, C], role: "weight", layer: l });
    if (gpt2) specs.push({ name: `${p}qkv.b`, shape: [qkvRows], role: "bias", layer: l });
    specs.push({ name: `${p}attnOut.w`, shape: [C, H * D], role: "weight", layer: l });
    if (gpt2) specs.push({ name: `${p}attnOut.b`, shape: [C], role: "bias", layer: l });
    specs.push({ name: `${p}ln2.w`, shape: [C], role: "norm", layer: l });
    if (gpt2) {
      specs.push({ name: `${p}ln2.b`, shape: [C], role: "norm", layer: l });
      specs.push({ name: `${p}fc.w`, shape: [F, C], role: "weight", layer: l });
      specs.push({ name: `${p}fc.b`, shape: [F], role: "bias", layer: l });
      specs.push({ name: `${p}fcProj.w`, shape: [C, F], role: "weight", layer: l });
      specs.push({ name: `${p}fcProj.b`, shape: [C], role: "bias", layer: l });
    } else {
      specs.push({ name: `${p}gate.w`, shape: [F, C], role: "weight", layer: l });
      specs.push({ name: `${p}up.w`, shape: [F, C], role: "weight", layer: l });
      specs.push({ name: `${p}down.w`, shape: [C, F], role: "weight", layer: l });
    }
  }
  specs.push({ name: "lnf.w", shape: [C], role: "norm", layer: -1 });
  if (gpt2) specs.push({ name: "lnf.b", shape: [C], role: "norm", layer: -1 });
  if (!tied) specs.push({ name: "lmHead.w", shape: [V, C], role: "weight", layer: -1 });
  const table = buildTable(specs);
  for (let l = 0; l < L; l++) addQkvViews(table, l, H, Hkv, D, C);
  return table;
}

// q, k and v as named row blocks of the fused qkv tensors (they share its storage).
function addQkvViews(table: ParamTable, l: number, H: number, Hkv: number, D: number, C: number): void {
  const w = table.byName.get(`h.${l}.qkv.w`)!;
  const b = table.byName.get(`h.${l}.qkv.b`);
  const rows: [string, number, number][] = [
    ["q", 0, H * D],
    ["k", H * D, Hkv * D],
    ["v", (H + Hkv) * D, Hkv * D],
  ];
  for (const [part, start, count] of rows) {
    const view = (base: ParamEntry, suffix: string, shape: number[], stride: number): ParamEntry => ({
      name: `h.${l}.${part}.${suffix}`,
      shape,
      offset: base.offset + start * stride,
      numel: shape.reduce((a, c) => a * c, 1),
      role: base.role,
      layer: l,
    });
    const wv = view(w, "w", [count, C], C);
    table.byName.set(wv.name, wv);
    if (b) {
      const bv = view(b, "b", [count], 1);
      table.byName.set(bv.name, bv);
    }
  }
}

/** Whether AdamW decays a tensor: matrices and embeddings yes, biases and norm gains no (nanoGPT). */
export function decays(entry: ParamEntry): boolean {
  return entry.role === "weight" || entry.role === "embedding" || entry.role === "position";
}

/** Number of elements the table really holds (without alignment padding). */
export function parameterCount(table: ParamTable): number {
  return table.entries.reduce((n, e) => n + e.numel, 0);
}
