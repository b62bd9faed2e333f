/**
 * packages/kernels/python/cxr_safetensors.py, the one safetensors reader/writer of the project's Python
 * scripts (PyTorch twins, converters), against the TypeScript one in @cxr/kernels: files written on
 * either side read back on the other with the same names, shapes, values and metadata; every dtype
 * round-trips in Python (BF16 from torch); malformed files get errors naming the file and tensor; a
 * failed write leaves the old file. Runs Debian's /usr/bin/python3 (numpy, torch), as the parity
 * tests do.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readSafetensors, writeSafetensors } from "@cxr/kernels";
import { afterAll, describe, expect, it } from "vitest";

const PYTHON = "/usr/bin/python3";
const MODULE_DIR = join(import.meta.dirname, "../../packages/kernels/python");
const folder = mkdtempSync(join(tmpdir(), "cxr-python-safetensors-"));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

/** Runs Python with cxr_safetensors importable; returns stdout, or throws with stderr. */
function python(script: string, ...args: string[]): string {
  return execFileSync(
    PYTHON,
    ["-c", `import sys; sys.path.insert(0, ${JSON.stringify(MODULE_DIR)})\n${script}`, ...args],
    {
      encoding: "utf8",
    },
  );
}

function pythonError(script: string, ...args: string[]): string {
  const result = spawnSync(
    PYTHON,
    ["-c", `import sys; sys.path.insert(0, ${JSON.stringify(MODULE_DIR)})\n${script}`, ...args],
    { encoding: "utf8" },
  );
  expect(result.status).not.toBe(0);
  return result.stderr;
}

describe("cxr_safetensors.py", () => {
  it("reads what the TypeScript writer wrote (F32, F16, metadata)", () => {
    const path = join(folder, "from-ts.safetensors");
    const weight = Float32Array.from({ length: 6 }, (_, i) => (i - 2.5) / 3);
    writeSafetensors(
      path,
      {
        "layer.weight": { shape: [2, 3], data: weight },
        "layer.bias": { shape: [3], data: Float32Array.from([0.5, -1, 2]), dtype: "F16" },
      },
      { config: '{"a":1}' },
    );
    const printed = python(
      `import cxr_safetensors, json
tensors, metadata = cxr_safetensors.read(sys.argv[1])
print(json.dumps({"names": list(tensors), "metadata": metadata,
  "dtypes": {k: str(v.dtype) for k, v in tensors.items()},
  "shapes": {k: list(v.shape) for k, v in tensors.items()},
  "values": {k: v.astype("float64").ravel().tolist() for k, v in tensors.items()},
  "writable": all(v.flags.writeable for v in tensors.values())}))`,
      path,
    );
    const read = JSON.parse(printed);
    expect(read.names).toEqual(["layer.bias", "layer.weight"]);
    expect(read.metadata).toEqual({ config: '{"a":1}' });
    expect(read.dtypes).toEqual({ "layer.bias": "float16", "layer.weight": "float32" });
    expect(read.shapes).toEqual({ "layer.bias": [3], "layer.weight": [2, 3] });
    expect(read.values["layer.weight"]).toEqual(Array.from(weight));
    expect(read.values["layer.bias"]).toEqual([0.5, -1, 2]);
    expect(read.writable).toBe(true);
  });

  it("writes every dtype (numpy and torch, BF16 included) so that both readers agree", () => {
    const path = join(folder, "from-python.safetensors");
    const printed = python(
      `import cxr_safetensors, json, numpy as np, torch
values = [1.5, -2.25, 3.0, 0.0, 7.0, -1.0]
arrays = {
  "f64": np.array(values, dtype=np.float64).reshape(2, 3), "f32": np.array(values, dtype=">f4"),
  "f16": np.array(values, dtype=np.float16), "i64": np.arange(6, dtype=np.int64) - 3,
  "i32": np.arange(6, dtype=np.int32), "i16": np.arange(6, dtype=np.int16), "i8": np.arange(6, dtype=np.int8) - 3,
  "u8": np.arange(6, dtype=np.uint8), "bool": np.array([True, False, True, True, False, False]),
  "bf16": torch.tensor(values, dtype=torch.bfloat16), "torch_f32": torch.tensor(values, requires_grad=True) * 2,
  "scalar": np.array(4.0, dtype=np.float32),
}
cxr_safetensors.write(sys.argv[1], arrays, {"format": "pt", "count": 12})
tensors, metadata = cxr_safetensors.read(sys.argv[1])
print(json.dumps({"metadata": metadata, "dtypes": {k: str(v.dtype) for k, v in tensors.items()},
  "same": {k: bool(np.array_equal(np.asarray(tensors[k], dtype=np.float64),
    (arrays[k].detach().float().numpy() if hasattr(arrays[k], "detach") else arrays[k]).astype(np.float64))) for k in arrays}}))`,
      path,
    );
    const read = JSON.parse(printed);
    expect(read.metadata).toEqual({ format: "pt", count: "12" });
    expect(read.dtypes).toMatchObject({
      f64: "float64",
      bf16: "float32",
      bool: "bool",
      u8: "uint8",
      i8: "int8",
    });
    expect(Object.values(read.same).every(Boolean)).toBe(true);
    expect(Object.keys(read.same)).toHaveLength(12);

    const file = readSafetensors(path);
    expect(file.metadata).toEqual({ format: "pt", count: "12" });
    const stored = (name: string) => file.tensors.get(name)!;
    expect(stored("f64").dtype).toBe("F64");
    expect(stored("f64").shape).toEqual([2, 3]);
    expect(Array.from(stored("f64").data)).toEqual([1.5, -2.25, 3, 0, 7, -1]);
    expect(stored("f32").dtype).toBe("F32"); // big-endian input stored little-endian
    expect(Array.from(stored("f32").data)).toEqual([1.5, -2.25, 3, 0, 7, -1]);
    expect(stored("bf16").dtype).toBe("BF16");
    expect(Array.from(stored("bf16").data)).toEqual([1.5, -2.25, 3, 0, 7, -1]);
    expect(Array.from(stored("torch_f32").data)).toEqual([3, -4.5, 6, 0, 14, -2]);
    expect(Array.from(stored("i64").data)).toEqual([-3, -2, -1, 0, 1, 2]);
    expect(Array.from(stored("bool").data)).toEqual([1, 0, 1, 1, 0, 0]);
    expect(stored("scalar").shape).toEqual([]);
    // The data starts 8-byte aligned, as the TypeScript writer also pads it.
    const bytes = readFileSync(path);
    expect((8 + Number(bytes.readBigUInt64LE(0))) % 8).toBe(0);
  });

  it("names the file and tensor of a malformed file", () => {
    const good = join(folder, "good.safetensors");
    writeSafetensors(good, { w: { shape: [4], data: Float32Array.from([1, 2, 3, 4]) } });
    const bytes = readFileSync(good);
    const header = (text: string) => {
      const body = Buffer.from(text);
      const length = Buffer.alloc(8);
      length.writeBigUInt64LE(BigInt(body.length));
      return Buffer.concat([length, body, Buffer.alloc(16)]);
    };
    const cases: [string, Buffer, string][] = [
      [
        "truncated",
        bytes.subarray(0, bytes.length - 4),
        "tensor w runs past the end of the file (truncated?)",
      ],
      ["short", bytes.subarray(0, 5), "5 bytes, shorter than the 8-byte header length"],
      ["not-json", header("{nope"), "header is not JSON"],
      [
        "wrong-size",
        header('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}'),
        "tensor w has 16 bytes but F32 [3] needs 12",
      ],
      [
        "bad-dtype",
        header('{"w":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}}'),
        "tensor w has unsupported dtype 'F8'",
      ],
      [
        "bad-shape",
        header('{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}'),
        "tensor w has shape [-1], not a list of sizes",
      ],
    ];
    const paths = cases.map(([name, content]) => {
      const path = join(folder, `${name}.safetensors`);
      writeFileSync(path, content);
      return path;
    });
    // One interpreter for all cases (Python starts slowly on a loaded machine).
    const printed = python(
      `import cxr_safetensors, json
messages = []
for path in sys.argv[1:]:
    try:
        cxr_safetensors.read(path)
        messages.append(None)
    except cxr_safetensors.SafetensorsError as error:
        messages.append(str(error))
print(json.dumps(messages))`,
      ...paths,
    );
    const messages = JSON.parse(printed) as (string | null)[];
    cases.forEach(([, , message], index) => {
      expect(messages[index]).toContain(`${paths[index]}: ${message}`);
    });
  });

  it("refuses a dtype safetensors cannot hold and leaves the existing file as it was", () => {
    const path = join(folder, "kept.safetensors");
    writeSafetensors(path, { w: { shape: [2], data: Float32Array.from([1, 2]) } });
    const before = readFileSync(path);
    const stderr = pythonError(
      `import cxr_safetensors, numpy as np, os
cxr_safetensors.write(sys.argv[1], {"a": np.zeros(2, dtype=np.float32), "z": np.zeros(2, dtype=np.complex64)})`,
      path,
    );
    expect(stderr).toContain("tensor z: dtype complex64 cannot be written");
    expect(readFileSync(path).equals(before)).toBe(true);
  });
});
