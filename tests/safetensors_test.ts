import assert from "node:assert/strict";
import {
  bf16ArrayToF32,
  bf16BitsToF32Bits,
  bf16ToF32,
  f16ArrayToF32,
  f16BitsToF32Bits,
  f16ToF32,
  f32ArrayToBf16,
  f32ArrayToF16,
  f32Bits,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  f32FromBits,
  f32ToBf16,
  f32ToF16,
} from "../src/model/dtypes.ts";
import { openSafetensors, readSafetensors, writeSafetensors } from "../src/model/safetensors.ts";
import { fillNormal } from "../src/random/philox.ts";

const hex16 = (h: number) => `0x${h.toString(16).padStart(4, "0")}`;

/** Value of an IEEE half from its fields, in f64: the textbook definition, sharing nothing with dtypes.ts. */
function f16Reference(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

function bf16Reference(b: number): number {
  const sign = b & 0x8000 ? -1 : 1;
  const exponent = (b >> 7) & 0xff;
  const mantissa = b & 0x7f;
  if (exponent === 0xff) return mantissa === 0 ? sign * Infinity : NaN;
  if (exponent === 0) return sign * mantissa * 2 ** -133;
  return sign * (1 + mantissa / 128) * 2 ** (exponent - 127);
}

Deno.test("f16 and bf16 decode every one of the 65536 patterns exactly", () => {
  for (let h = 0; h < 65536; h++) {
    const f16 = f16ToF32(h), f16Want = f16Reference(h);
    assert.ok(Object.is(f16, f16Want), `f16 ${hex16(h)}: got ${f16}, want ${f16Want}`);
    const bf16 = bf16ToF32(h), bf16Want = bf16Reference(h);
    assert.ok(Object.is(bf16, bf16Want), `bf16 ${hex16(h)}: got ${bf16}, want ${bf16Want}`);
  }
});

Deno.test("f16 and bf16 bit patterns survive decode → encode, NaN payloads included", () => {
  for (let h = 0; h < 65536; h++) {
    assert.equal(f32BitsToF16Bits(f16BitsToF32Bits(h)), h, `f16 ${hex16(h)}`);
    assert.equal(f32BitsToBf16Bits(bf16BitsToF32Bits(h)), h, `bf16 ${hex16(h)}`);
  }
  const all = new Uint16Array(65536).map((_, i) => i);
  assert.deepEqual(f32ArrayToF16(f16ArrayToF32(all)), all, "f16 array round trip");
  assert.deepEqual(f32ArrayToBf16(bf16ArrayToF32(all)), all, "bf16 array round trip");
});

/**
 * Between each pair of neighbouring positive finite values lo < hi (codes c, c + 1): the midpoint goes to
 * the even code, one f32 ulp below it to lo, one above to hi. The midpoint of the largest finite value
 * and the next power of two goes to ∞.
 */
function checkRoundToNearestEven(
  name: string,
  encode: (x: number) => number,
  decode: (h: number) => number,
  largestFinite: number,
  infinity: number,
  overflowMidpoint: number,
) {
  const ulpBelow = (x: number) => f32FromBits(f32Bits(x) - 1);
  const ulpAbove = (x: number) => f32FromBits(f32Bits(x) + 1);
  for (let code = 0; code <= largestFinite; code++) {
    const lo = decode(code);
    const hi = code === largestFinite ? overflowMidpoint * 2 - lo : decode(code + 1);
    const mid = (lo + hi) / 2;
    assert.equal(f32FromBits(f32Bits(mid)), mid, `${name}: midpoint ${mid} is an f32`);
    const even = code % 2 === 0 ? code : code + 1;
    assert.equal(encode(mid), even, `${name}: midpoint of ${hex16(code)} and its successor`);
    assert.equal(encode(ulpBelow(mid)), code, `${name}: just below the midpoint after ${hex16(code)}`);
    assert.equal(encode(ulpAbove(mid)), code + 1, `${name}: just above the midpoint after ${hex16(code)}`);
    assert.equal(encode(-lo), code | 0x8000, `${name}: sign of ${-lo}`);
  }
  assert.equal(encode(overflowMidpoint), infinity, `${name}: overflow midpoint → ∞`);
}

Deno.test("f16 encoding rounds to nearest even between every pair of neighbours", () => {
  checkRoundToNearestEven("f16", f32ToF16, f16ToF32, 0x7bff, 0x7c00, 65520);
});

Deno.test("bf16 encoding rounds to nearest even between every pair of neighbours", () => {
  checkRoundToNearestEven("bf16", f32ToBf16, bf16ToF32, 0x7f7f, 0x7f80, f32FromBits(0x7f7f8000));
});

Deno.test("f16 and bf16 encodings of hand-checked values", () => {
  const f16Cases: [number, number][] = [
    [1 / 3, 0x3555], // 0.333251953125
    [65504, 0x7bff], // largest finite
    [65519, 0x7bff], // just below the overflow midpoint
    [65520, 0x7c00], // the midpoint: ties to even, and the even neighbour is ∞
    [6.1e-5, 0x03ff], // just under the smallest normal 2⁻¹⁴ ≈ 6.1035e-5: largest subnormal
    [2 ** -14, 0x0400],
    [5.96e-8, 0x0001], // ≈ 2⁻²⁴, the smallest subnormal
    [2 ** -25, 0x0000], // half the smallest subnormal ties to even zero
    [1.5 * 2 ** -25, 0x0001],
    [2.98e-8, 0x0000],
    [0.1, 0x2e66],
    [1 + 2 ** -11, 0x3c00],
    [1 + 3 * 2 ** -11, 0x3c02],
    [-2, 0xc000],
    [-0, 0x8000],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [1e10, 0x7c00],
  ];
  for (const [x, want] of f16Cases) assert.equal(hex16(f32ToF16(x)), hex16(want), `f16 of ${x}`);
  assert.equal(hex16(f32ToF16(NaN) & 0x7e00), "0x7e00", "f16 NaN is a quiet NaN");
  const bf16Cases: [number, number][] = [
    [1 / 3, 0x3eab], // 0x3eaaaaab: the dropped half 0xaaab is above a tie
    [0.1, 0x3dcd],
    [1 + 2 ** -8, 0x3f80],
    [1 + 3 * 2 ** -8, 0x3f82],
    [3.4e38, 0x7f80], // beyond the midpoint between 3.3895e38 and 2¹²⁸
    [-0, 0x8000],
    [2 ** -133, 0x0001], // the smallest bf16 subnormal
  ];
  for (const [x, want] of bf16Cases) assert.equal(hex16(f32ToBf16(x)), hex16(want), `bf16 of ${x}`);
  assert.ok(Number.isNaN(bf16ToF32(f32ToBf16(NaN))), "bf16 NaN stays NaN");
});

// ---------------------------------------------------------------------------------------------------

/** A safetensors file assembled byte by byte: length field, header text, data; no writer code involved. */
function assemble(header: string, data: ArrayLike<number>, declaredLength?: number): Uint8Array {
  const headerBytes = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + headerBytes.length + data.length);
  const length = declaredLength ?? headerBytes.length;
  for (let i = 0; i < 8; i++) out[i] = Math.floor(length / 256 ** i) % 256;
  out.set(headerBytes, 8);
  out.set(Array.from(data), 8 + headerBytes.length);
  return out;
}

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "longtune-safetensors-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("reads a hand-assembled file: F16, BF16, F32, I64, I8, U8 and BOOL, metadata, padding", async () => {
  await withTempDir(async (dir) => {
    // Offsets are listed out of order on purpose; the header is padded with spaces as writers do.
    const header = JSON.stringify({
      half: { dtype: "F16", shape: [2, 2], data_offsets: [0, 8] },
      ids: { dtype: "I64", shape: [2], data_offsets: [22, 38] },
      brain: { dtype: "BF16", shape: [3], data_offsets: [8, 14] },
      single: { dtype: "F32", shape: [], data_offsets: [14, 18] },
      bytes: { dtype: "I8", shape: [2], data_offsets: [18, 20] },
      mask: { dtype: "BOOL", shape: [1, 1], data_offsets: [20, 21] },
      small: { dtype: "U8", shape: [1], data_offsets: [21, 22] },
      empty: { dtype: "F32", shape: [0, 4], data_offsets: [38, 38] },
      __metadata__: { format: "pt", note: "hand-made" },
    }) + "     ";
    const data = [
      // half: 1.0 = 0x3c00, -2.0 = 0xc000, 2⁻²⁴ = 0x0001, +∞ = 0x7c00 (little-endian pairs)
      0x00,
      0x3c,
      0x00,
      0xc0,
      0x01,
      0x00,
      0x00,
      0x7c,
      // brain: 1.0 = 0x3f80, 0.5 = 0x3f00, -3.0 = 0xc040
      0x80,
      0x3f,
      0x00,
      0x3f,
      0x40,
      0xc0,
      // single: 0.1f = 0x3dcccccd
      0xcd,
      0xcc,
      0xcc,
      0x3d,
      // bytes: -1, 127
      0xff,
      0x7f,
      // mask, small
      0x01,
      0xc8,
      // ids: 2⁴⁰ + 5, -2
      0x05,
      0x00,
      0x00,
      0x00,
      0x00,
      0x01,
      0x00,
      0x00,
      0xfe,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
    ];
    const path = `${dir}/hand.safetensors`;
    await Deno.writeFile(path, assemble(header, data));
    const { tensors, metadata } = await readSafetensors(path);
    assert.deepEqual(metadata, { format: "pt", note: "hand-made" });
    assert.deepEqual([...tensors.keys()].sort(), [
      "brain",
      "bytes",
      "empty",
      "half",
      "ids",
      "mask",
      "single",
      "small",
    ]);
    assert.deepEqual(tensors.get("half"), {
      dtype: "F16",
      shape: [2, 2],
      data: new Float32Array([1, -2, 2 ** -24, Infinity]),
    });
    assert.deepEqual(tensors.get("brain")?.data, new Float32Array([1, 0.5, -3]));
    assert.deepEqual(tensors.get("single"), { dtype: "F32", shape: [], data: new Float32Array([0.1]) });
    assert.deepEqual(tensors.get("bytes")?.data, new Int32Array([-1, 127]));
    assert.deepEqual(tensors.get("mask")?.data, new Int32Array([1]));
    assert.deepEqual(tensors.get("small")?.data, new Int32Array([200]));
    assert.deepEqual(tensors.get("ids")?.data, new BigInt64Array([2n ** 40n + 5n, -2n]));
    assert.deepEqual(tensors.get("empty"), { dtype: "F32", shape: [0, 4], data: new Float32Array(0) });
  });
});

Deno.test("writer output is byte-for-byte the documented layout", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/tiny.safetensors`;
    await writeSafetensors(path, {
      w: { shape: [2], data: new Float32Array([1, -2]) },
      b: { shape: [1], data: new Float32Array([0.5]), dtype: "F16" },
    }, { step: "3" });
    const header = '{"__metadata__":{"step":"3"},"b":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},' +
      '"w":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}}';
    const padded = header + " ".repeat((8 - (header.length % 8)) % 8);
    const want = assemble(padded, [0x00, 0x38, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0]);
    assert.deepEqual(await Deno.readFile(path), want);
    assert.equal((8 + padded.length) % 8, 0, "data starts 8-aligned");
  });
});

Deno.test("write → read round-trips F32 bit-exactly, F16/BF16 to nearest, and integers", async () => {
  await withTempDir(async (dir) => {
    const wte = fillNormal(new Float32Array(37 * 5), 11, 0, 0, 3);
    wte[0] = NaN;
    wte[1] = -0;
    wte[2] = 1e-40; // an f32 subnormal
    const tensors = {
      wte: { shape: [37, 5], data: wte },
      "h.0.attn.bias": { shape: [5], data: fillNormal(new Float32Array(5), 11, 1), dtype: "F32" as const },
      positions: { shape: [3], data: new Int32Array([0, -7, 2 ** 31 - 1]) },
      tokens: { shape: [2], data: new BigInt64Array([-(2n ** 62n), 9n]) },
      scalar: { shape: [], data: new Float32Array([0.25]) },
    };
    const metadata = { format: "pt", "ünïcode": "✓" };
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      const path = `${dir}/model-${dtype}.safetensors`;
      await writeSafetensors(path, tensors, metadata, { dtype });
      const back = await readSafetensors(path);
      assert.deepEqual(back.metadata, metadata);
      assert.deepEqual([...back.tensors.keys()].sort(), Object.keys(tensors).sort());
      const got = back.tensors.get("wte")!;
      assert.equal(got.dtype, dtype);
      assert.deepEqual(got.shape, [37, 5]);
      const want = dtype === "F32"
        ? wte
        : dtype === "F16"
        ? f16ArrayToF32(f32ArrayToF16(wte))
        : bf16ArrayToF32(f32ArrayToBf16(wte));
      assert.deepEqual(
        new Uint32Array((got.data as Float32Array).buffer),
        new Uint32Array(want.buffer),
        `wte ${dtype}`,
      );
      assert.equal(back.tensors.get("h.0.attn.bias")!.dtype, "F32", "a tensor's own dtype wins");
      assert.deepEqual(back.tensors.get("positions"), {
        dtype: "I32",
        shape: [3],
        data: tensors.positions.data,
      });
      assert.deepEqual(back.tensors.get("tokens"), { dtype: "I64", shape: [2], data: tensors.tokens.data });
      assert.deepEqual(back.tensors.get("scalar")?.data, new Float32Array([0.25]));
    }
    // Written in sorted name order, so the file layout does not depend on insertion order.
    const file = await openSafetensors(`${dir}/model-F32.safetensors`);
    try {
      assert.deepEqual([...file.entries.keys()], ["h.0.attn.bias", "positions", "scalar", "tokens", "wte"]);
      assert.deepEqual((await file.read("scalar")).data, new Float32Array([0.25]));
      await assert.rejects(file.read("nope"), /model-F32\.safetensors: no tensor named "nope"/);
    } finally {
      file.close();
    }
  });
});

Deno.test("reader errors name the file, the tensor and what was expected", async () => {
  await withTempDir(async (dir) => {
    let n = 0;
    const expectError = async (bytes: Uint8Array, pattern: RegExp) => {
      const path = `${dir}/bad${n++}.safetensors`;
      await Deno.writeFile(path, bytes);
      await assert.rejects(readSafetensors(path), (error: Error) => {
        assert.ok(error.message.startsWith(path), `"${error.message}" names ${path}`);
        assert.match(error.message, pattern);
        return true;
      });
    };
    const entry = (dtype: string, shape: number[], begin: number, end: number) => ({
      dtype,
      shape,
      data_offsets: [begin, end],
    });
    const file = (header: object, dataLength: number) =>
      assemble(JSON.stringify(header), new Uint8Array(dataLength));

    await expectError(new Uint8Array([1, 2, 3]), /3 bytes, too short for the 8-byte header length/);
    await expectError(assemble("{}", [], 500), /header length 500 exceeds the 2 bytes after it/);
    await expectError(assemble('{"a": ', []), /header is not valid JSON/);
    await expectError(assemble("[1, 2]", []), /header must be a JSON object/);
    await expectError(assemble("{}", [], 2).subarray(0, 9), /header length 2 exceeds the 1 bytes after it/);
    await expectError(assemble('{"\xff"}', []), /header is not valid JSON/);
    await expectError(
      file({ a: entry("F32", [2], 0, 8) }, 6),
      /tensor "a": data_offsets \[0, 8\] reach beyond the data section's 6 bytes/,
    );
    await expectError(
      file({ a: entry("F32", [2, 3], 0, 20) }, 20),
      /tensor "a": data_offsets \[0, 20\] span 20 bytes but F32 shape \[2, 3\] needs 24/,
    );
    await expectError(
      file({ a: entry("F32", [2], 0, 8), b: entry("F16", [2], 6, 10) }, 10),
      /tensor "b": data_offsets \[6, 10\] overlap tensor "a", which ends at 8/,
    );
    await expectError(
      file({ a: entry("F32", [1], 0, 4), b: entry("F32", [1], 8, 12) }, 12),
      /tensor "b": data_offsets \[8, 12\] leave a hole of 4 bytes after tensor "a"/,
    );
    await expectError(
      file({ a: entry("F32", [1], 0, 4) }, 7),
      /3 bytes after tensor "a" belong to no tensor/,
    );
    await expectError(
      file({ a: entry("F32", [0], 4, 0) }, 4),
      /tensor "a": data_offsets \[4, 0\] begin after/,
    );
    await expectError(
      file({ a: entry("F64", [1], 0, 8) }, 8),
      /tensor "a": unsupported dtype "F64" \(supported: F32, F16, BF16, BOOL, U8, I8, I16, I32, I64\)/,
    );
    await expectError(
      assemble(
        '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],' +
          '"data_offsets":[4,8]}}',
        new Uint8Array(8),
      ),
      /tensor name "w" appears twice/,
    );
    await expectError(file({ a: { dtype: "F32", data_offsets: [0, 4] } }, 4), /tensor "a": shape: /);
    await expectError(file({ a: entry("F32", [-1], 0, 4) }, 4), /tensor "a": shape\.0: /);
    await expectError(file({ __metadata__: { epoch: 3 } }, 0), /__metadata__ must map strings to strings/);
  });
});

Deno.test("a failed save names the tensor and leaves the previous file and no temporary behind", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/ckpt.safetensors`;
    await writeSafetensors(path, { w: { shape: [2], data: new Float32Array([1, 2]) } });
    const before = await Deno.readFile(path);
    await assert.rejects(
      writeSafetensors(path, { w: { shape: [2, 2], data: new Float32Array([1, 2, 3]) } }),
      /ckpt\.safetensors: tensor "w": shape \[2, 2\] holds 4 values but data has 3/,
    );
    await assert.rejects(
      writeSafetensors(path, { ids: { shape: [1], data: new Int32Array([1]), dtype: "F16" } }),
      /tensor "ids": dtype F16 given for integer data/,
    );
    await assert.rejects(
      writeSafetensors(`${dir}/missing-dir/x.safetensors`, { w: { shape: [1], data: new Float32Array(1) } }),
      Deno.errors.NotFound,
    );
    assert.deepEqual(await Deno.readFile(path), before);
    const names = [];
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
    assert.deepEqual(names, ["ckpt.safetensors"]);
  });
});
