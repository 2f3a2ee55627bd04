/**
 * safetensors checkpoints (https://github.com/huggingface/safetensors): an 8-byte little-endian u64
 * header length N, N bytes of JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
 * {string: string}}`, then the data, offsets counted from its start. Floats come back as f32 whatever
 * their stored width; integers as Int32Array (I64 as BigInt64Array).
 *
 * The reader checks what the Rust reference implementation checks — offsets inside the data, matching
 * dtype × shape, no overlaps, no holes, no trailing bytes — plus duplicate names, which JSON.parse
 * would otherwise resolve silently to the last one. The writer saves through a temporary file in the
 * same directory and renames it, so an interrupted save leaves the previous file or none, never half of one.
 */

import { z } from "zod";
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16, f32ArrayToF16 } from "./dtypes.ts";

/** Float dtypes; they are read into a Float32Array and can be written from one. */
export const FLOAT_DTYPES = ["F32", "F16", "BF16"] as const;
/** Integer dtypes; I64 is read into a BigInt64Array, the others into an Int32Array. */
export const INT_DTYPES = ["BOOL", "U8", "I8", "I16", "I32", "I64"] as const;

/** A float dtype: "F32", "F16" or "BF16". */
export type FloatDtype = typeof FLOAT_DTYPES[number];
/** A supported safetensors dtype. */
export type SafetensorsDtype = FloatDtype | typeof INT_DTYPES[number];

const SUPPORTED_DTYPES: readonly string[] = [...FLOAT_DTYPES, ...INT_DTYPES];

const BYTES_PER_ELEMENT: Record<SafetensorsDtype, number> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  BOOL: 1,
  U8: 1,
  I8: 1,
  I16: 2,
  I32: 4,
  I64: 8,
};

/** Values of a tensor as held in memory. */
export type TensorData = Float32Array | Int32Array | BigInt64Array;

/** One tensor of a checkpoint, values converted to their in-memory type. */
export interface SafeTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: TensorData;
}

/** Where a tensor lies in the file: its dtype, shape and byte range within the data section. */
export interface SafetensorsEntry {
  dtype: SafetensorsDtype;
  shape: number[];
  dataOffsets: [number, number];
}

/** A whole checkpoint. */
export interface Safetensors {
  tensors: Map<string, SafeTensor>;
  metadata: Record<string, string>;
}

/** An open checkpoint whose tensors are read one at a time, for files too large to hold twice. */
export interface SafetensorsFile {
  readonly path: string;
  /** Tensors in file order. */
  readonly entries: Map<string, SafetensorsEntry>;
  readonly metadata: Record<string, string>;
  /** Reads and converts one tensor. */
  read(name: string): Promise<SafeTensor>;
  close(): void;
}

/** A tensor to save; float data is stored as `dtype`, else as the writer's default float dtype. */
export interface TensorToWrite {
  shape: readonly number[];
  data: TensorData;
  dtype?: FloatDtype;
}

/** Options of `writeSafetensors`. */
export interface WriteSafetensorsOptions {
  /** Stored dtype of float tensors that do not name their own (default "F32"). */
  dtype?: FloatDtype;
}

const HEADER_LENGTH_BYTES = 8;
const METADATA_KEY = "__metadata__";

const entrySchema = z.object({
  dtype: z.string(),
  shape: z.array(z.int().nonnegative()),
  data_offsets: z.tuple([z.int().nonnegative(), z.int().nonnegative()]),
});
const metadataSchema = z.record(z.string(), z.string());

function describeIssues(error: z.ZodError): string {
  return error.issues.map((issue) =>
    `${issue.path.length > 0 ? `${issue.path.join(".")}: ` : ""}${issue.message}`
  ).join("; ");
}

function assertLittleEndianHost(): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new Error("safetensors: this reader assumes a little-endian host");
  }
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((product, dim) => product * dim, 1);
}

/**
 * Keys of the top-level object of a JSON text already known to be valid, in order and with repeats:
 * JSON.parse keeps only the last of two equal keys, and two tensors under one name is a broken file.
 */
function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      const start = i;
      for (i++; json[i] !== '"'; i++) if (json[i] === "\\") i++;
      if (depth === 1) {
        let j = i + 1;
        while (json[j] === " " || json[j] === "\t" || json[j] === "\n" || json[j] === "\r") j++;
        if (json[j] === ":") keys.push(JSON.parse(json.slice(start, i + 1)));
      }
    } else if (c === "{" || c === "[") {
      depth++;
    } else if (c === "}" || c === "]") {
      depth--;
    }
  }
  return keys;
}

/** Parses and checks a header against the size of the data section that follows it. */
function parseHeader(
  path: string,
  headerBytes: Uint8Array,
  dataLength: number,
): { entries: Map<string, SafetensorsEntry>; metadata: Record<string, string> } {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw new Error(`${path}: safetensors header is not valid UTF-8`);
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (error) {
    throw new Error(`${path}: safetensors header is not valid JSON (${(error as Error).message})`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw new Error(
      `${path}: safetensors header must be a JSON object, got ${JSON.stringify(text.slice(0, 40))}`,
    );
  }
  const seen = new Set<string>();
  for (const key of topLevelKeys(text)) {
    if (seen.has(key)) throw new Error(`${path}: tensor name "${key}" appears twice in the header`);
    seen.add(key);
  }

  let metadata: Record<string, string> = {};
  const entries: [string, SafetensorsEntry][] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      const parsed = metadataSchema.safeParse(value);
      if (!parsed.success) {
        throw new Error(
          `${path}: __metadata__ must map strings to strings (${describeIssues(parsed.error)})`,
        );
      }
      metadata = parsed.data;
      continue;
    }
    const parsed = entrySchema.safeParse(value);
    if (!parsed.success) {
      throw new Error(`${path}: tensor "${name}": ${describeIssues(parsed.error)}`);
    }
    const { dtype, shape, data_offsets: [begin, end] } = parsed.data;
    if (!SUPPORTED_DTYPES.includes(dtype)) {
      throw new Error(
        `${path}: tensor "${name}": unsupported dtype "${dtype}" (supported: ${SUPPORTED_DTYPES.join(", ")})`,
      );
    }
    const bytes = elementCount(shape) * BYTES_PER_ELEMENT[dtype as SafetensorsDtype];
    if (begin > end) {
      throw new Error(`${path}: tensor "${name}": data_offsets [${begin}, ${end}] begin after they end`);
    }
    if (end > dataLength) {
      throw new Error(
        `${path}: tensor "${name}": data_offsets [${begin}, ${end}] reach beyond the data section's ` +
          `${dataLength} bytes (truncated file?)`,
      );
    }
    if (end - begin !== bytes) {
      throw new Error(
        `${path}: tensor "${name}": data_offsets [${begin}, ${end}] span ${end - begin} bytes but ${dtype} ` +
          `shape [${shape.join(", ")}] needs ${bytes}`,
      );
    }
    entries.push([name, { dtype: dtype as SafetensorsDtype, shape, dataOffsets: [begin, end] }]);
  }

  entries.sort(([, a], [, b]) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let covered = 0;
  let previous = "the start of the data";
  for (const [name, { dataOffsets: [begin, end] }] of entries) {
    if (begin < covered) {
      throw new Error(
        `${path}: tensor "${name}": data_offsets [${begin}, ${end}] overlap ${previous}, which ends at ${covered}`,
      );
    }
    if (begin > covered) {
      throw new Error(
        `${path}: tensor "${name}": data_offsets [${begin}, ${end}] leave a hole of ${
          begin - covered
        } bytes ` +
          `after ${previous}`,
      );
    }
    covered = end;
    previous = `tensor "${name}"`;
  }
  if (covered !== dataLength) {
    throw new Error(`${path}: ${dataLength - covered} bytes after ${previous} belong to no tensor`);
  }
  return { entries: new Map(entries), metadata };
}

async function readExactly(file: Deno.FsFile, bytes: Uint8Array, path: string, what: string): Promise<void> {
  let filled = 0;
  while (filled < bytes.length) {
    const n = await file.read(bytes.subarray(filled));
    if (n === null) throw new Error(`${path}: file ended while reading ${what}`);
    filled += n;
  }
}

/** Values of raw little-endian bytes (in a buffer of their own, so aligned) in their in-memory type. */
function decodeData(dtype: SafetensorsDtype, raw: Uint8Array): TensorData {
  const buffer = raw.buffer as ArrayBuffer;
  switch (dtype) {
    case "F32":
      return new Float32Array(buffer, 0, raw.length / 4);
    case "F16":
      return f16ArrayToF32(new Uint16Array(buffer, 0, raw.length / 2));
    case "BF16":
      return bf16ArrayToF32(new Uint16Array(buffer, 0, raw.length / 2));
    case "I64":
      return new BigInt64Array(buffer, 0, raw.length / 8);
    case "I32":
      return new Int32Array(buffer, 0, raw.length / 4);
    case "I16":
      return Int32Array.from(new Int16Array(buffer, 0, raw.length / 2));
    case "I8":
      return Int32Array.from(new Int8Array(buffer, 0, raw.length));
    case "U8":
    case "BOOL":
      return Int32Array.from(raw);
  }
}

/**
 * Opens a checkpoint and checks its header; tensors are read on demand.
 * @example const file = await openSafetensors("model.safetensors"); const wte = await file.read("wte"); file.close();
 */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  assertLittleEndianHost();
  const file = await Deno.open(path, { read: true });
  try {
    const size = (await file.stat()).size;
    if (size < HEADER_LENGTH_BYTES) {
      throw new Error(
        `${path}: file is ${size} bytes, too short for the 8-byte header length (truncated file?)`,
      );
    }
    const lengthBytes = new Uint8Array(HEADER_LENGTH_BYTES);
    await readExactly(file, lengthBytes, path, "the header length");
    const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
    if (headerLength > BigInt(size - HEADER_LENGTH_BYTES)) {
      throw new Error(
        `${path}: header length ${headerLength} exceeds the ${size - HEADER_LENGTH_BYTES} bytes after it ` +
          `(truncated or not a safetensors file)`,
      );
    }
    const headerBytes = new Uint8Array(Number(headerLength));
    await readExactly(file, headerBytes, path, "the header");
    const dataStart = HEADER_LENGTH_BYTES + headerBytes.length;
    const { entries, metadata } = parseHeader(path, headerBytes, size - dataStart);

    const read = async (name: string): Promise<SafeTensor> => {
      const entry = entries.get(name);
      if (entry === undefined) throw new Error(`${path}: no tensor named "${name}"`);
      const [begin, end] = entry.dataOffsets;
      const raw = new Uint8Array(end - begin);
      await file.seek(dataStart + begin, Deno.SeekMode.Start);
      await readExactly(file, raw, path, `tensor "${name}"`);
      return { dtype: entry.dtype, shape: [...entry.shape], data: decodeData(entry.dtype, raw) };
    };
    return { path, entries, metadata, read, close: () => file.close() };
  } catch (error) {
    file.close();
    throw error;
  }
}

/**
 * Reads a whole checkpoint; F16/BF16/F32 come back as Float32Array.
 * @example const { tensors, metadata } = await readSafetensors("model.safetensors");
 */
export async function readSafetensors(path: string): Promise<Safetensors> {
  const file = await openSafetensors(path);
  try {
    const tensors = new Map<string, SafeTensor>();
    for (const name of file.entries.keys()) tensors.set(name, await file.read(name));
    return { tensors, metadata: file.metadata };
  } finally {
    file.close();
  }
}

function storedDtype(
  path: string,
  name: string,
  tensor: TensorToWrite,
  floatDtype: FloatDtype,
): SafetensorsDtype {
  if (tensor.data instanceof Float32Array) {
    const dtype = tensor.dtype ?? floatDtype;
    if (!(FLOAT_DTYPES as readonly string[]).includes(dtype)) {
      throw new Error(
        `${path}: tensor "${name}": float dtype "${dtype}" is not one of ${FLOAT_DTYPES.join(", ")}`,
      );
    }
    return dtype;
  }
  if (tensor.dtype !== undefined) {
    throw new Error(`${path}: tensor "${name}": dtype ${tensor.dtype} given for integer data`);
  }
  if (tensor.data instanceof Int32Array) return "I32";
  if (tensor.data instanceof BigInt64Array) return "I64";
  throw new Error(`${path}: tensor "${name}": data must be a Float32Array, Int32Array or BigInt64Array`);
}

function encodeData(dtype: SafetensorsDtype, data: TensorData): Uint8Array {
  let stored: ArrayBufferView = data;
  if (dtype === "F16") stored = f32ArrayToF16(data as Float32Array);
  if (dtype === "BF16") stored = f32ArrayToBf16(data as Float32Array);
  return new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength);
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) written += await file.write(bytes.subarray(written));
}

let temporaryCounter = 0;

/**
 * Saves tensors (in sorted name order, header padded to 8 bytes) atomically: a temporary file in the
 * same directory, flushed, then renamed over `path`.
 * @example await writeSafetensors("adapter.safetensors", { loraA: { shape: [4, 8], data } }, { rank: "4" }, { dtype: "BF16" });
 */
export async function writeSafetensors(
  path: string,
  tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>,
  metadata: Record<string, string> = {},
  options: WriteSafetensorsOptions = {},
): Promise<void> {
  assertLittleEndianHost();
  const floatDtype = options.dtype ?? "F32";
  const checkedMetadata = metadataSchema.safeParse(metadata);
  if (!checkedMetadata.success) {
    throw new Error(
      `${path}: metadata must map strings to strings (${describeIssues(checkedMetadata.error)})`,
    );
  }
  const named = [...(tensors instanceof Map ? tensors.entries() : Object.entries(tensors))];
  named.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

  // No prototype, so a tensor named "__proto__" is a key like any other.
  const header: Record<string, unknown> = Object.create(null);
  if (Object.keys(metadata).length > 0) header[METADATA_KEY] = metadata;
  const plan: { dtype: SafetensorsDtype; data: TensorData }[] = [];
  let offset = 0;
  for (const [name, tensor] of named) {
    if (name === "" || name === METADATA_KEY) throw new Error(`${path}: "${name}" cannot name a tensor`);
    if (!tensor.shape.every((dim) => Number.isSafeInteger(dim) && dim >= 0)) {
      throw new Error(`${path}: tensor "${name}": shape [${tensor.shape.join(", ")}] must be integers ≥ 0`);
    }
    const count = elementCount(tensor.shape);
    if (count !== tensor.data.length) {
      throw new Error(
        `${path}: tensor "${name}": shape [${tensor.shape.join(", ")}] holds ${count} values but data has ` +
          `${tensor.data.length}`,
      );
    }
    const dtype = storedDtype(path, name, tensor, floatDtype);
    const bytes = count * BYTES_PER_ELEMENT[dtype];
    header[name] = { dtype, shape: [...tensor.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
    plan.push({ dtype, data: tensor.data });
  }

  const json = JSON.stringify(header);
  const jsonBytes = new TextEncoder().encode(json);
  const headerLength = Math.ceil(jsonBytes.length / 8) * 8;
  const headerBytes = new Uint8Array(HEADER_LENGTH_BYTES + headerLength).fill(0x20);
  new DataView(headerBytes.buffer).setBigUint64(0, BigInt(headerLength), true);
  headerBytes.set(jsonBytes, HEADER_LENGTH_BYTES);

  const temporary = `${path}.tmp-${Deno.pid}-${temporaryCounter++}`;
  const file = await Deno.open(temporary, { write: true, createNew: true });
  try {
    await writeAll(file, headerBytes);
    for (const { dtype, data } of plan) await writeAll(file, encodeData(dtype, data));
    await file.syncData();
    file.close();
    await Deno.rename(temporary, path);
  } catch (error) {
    try {
      file.close();
    } catch {
      // Already closed when the failure was the rename.
    }
    await Deno.remove(temporary).catch(() => {});
    throw error;
  }
}
