import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  defaultGpu,
  Module,
  ModuleList,
  ParameterInit,
  readSafetensors,
  writeSafetensors,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";

const directory = mkdtempSync(join(tmpdir(), "cxr-safetensors-"));

class Block extends Module {
  constructor(gpu: Awaited<ReturnType<typeof defaultGpu>>, init: ParameterInit, width: number) {
    super(gpu);
    this.parameter("weight", [width, 3], init.uniform(width * 3, 1));
    this.buffer("running_mean", [width], init.uniform(width, 1));
  }
}

class Net extends Module {
  readonly blocks: ModuleList<Block>;
  constructor(gpu: Awaited<ReturnType<typeof defaultGpu>>, seed: number) {
    super(gpu);
    const init = new ParameterInit(seed);
    this.parameter("scale", [1], init.uniform(1, 1));
    this.blocks = this.child(
      "blocks",
      new ModuleList(gpu, [new Block(gpu, init, 2), new Block(gpu, init, 5)]),
    );
  }
}

describe("safetensors", () => {
  it("round-trips F32 and F16 tensors and metadata, byte-compatible with the reference layout", () => {
    const path = join(directory, "a.safetensors");
    const data = Float32Array.from([1.5, -2.25, 3e-3, 65504, 0]);
    writeSafetensors(
      path,
      { "z.last": { shape: [5], data }, "a.half": { shape: [1, 5], data, dtype: "F16" } },
      { step: "7" },
    );
    const file = readSafetensors(path);
    expect(file.metadata).toEqual({ step: "7" });
    expect([...file.tensors.keys()]).toEqual(["a.half", "z.last"]);
    expect(file.tensors.get("z.last")!.data).toEqual(data);
    expect(file.tensors.get("a.half")!.shape).toEqual([1, 5]);
    expect(Array.from(file.tensors.get("a.half")!.data)).toEqual([
      1.5, -2.25, 0.0030002593994140625, 65504, 0,
    ]);
    const bytes = readFileSync(path);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    expect((8 + headerLength) % 8).toBe(0);
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString());
    expect(header["a.half"]).toEqual({ dtype: "F16", shape: [1, 5], data_offsets: [0, 10] });
    expect(header["z.last"]).toEqual({ dtype: "F32", shape: [5], data_offsets: [10, 30] });
  });

  it("reads BF16 and I64 as float values", () => {
    const path = join(directory, "b.safetensors");
    const header = JSON.stringify({
      bf: { dtype: "BF16", shape: [2], data_offsets: [0, 4] },
      count: { dtype: "I64", shape: [1], data_offsets: [4, 12] },
    });
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(header.length));
    const data = Buffer.alloc(12);
    data.writeUInt16LE(0x3fc0, 0); // 1.5 in bfloat16
    data.writeUInt16LE(0xc020, 2); // -2.5
    data.writeBigInt64LE(16777215n, 4); // largest integer float32 holds exactly
    writeFileSync(path, Buffer.concat([length, Buffer.from(header), data]));
    const file = readSafetensors(path);
    expect(Array.from(file.tensors.get("bf")!.data)).toEqual([1.5, -2.5]);
    expect(file.tensors.get("count")!.data[0]).toBe(16777215);
  });

  it("reports truncated, malformed and inconsistent files with the file and tensor named", () => {
    const good = join(directory, "c.safetensors");
    writeSafetensors(good, { w: { shape: [4], data: new Float32Array(4) } });
    const bytes = readFileSync(good);
    const truncated = join(directory, "truncated.safetensors");
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 3));
    expect(() => readSafetensors(truncated)).toThrow(
      /truncated\.safetensors: tensor "w" data \[0, 16\) lies outside the 13 data bytes/,
    );
    const tiny = join(directory, "tiny.safetensors");
    writeFileSync(tiny, Buffer.from([1, 2]));
    expect(() => readSafetensors(tiny)).toThrow(/tiny\.safetensors: too short/);
    const badJson = join(directory, "json.safetensors");
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(5n);
    writeFileSync(badJson, Buffer.concat([length, Buffer.from("{oops")]));
    expect(() => readSafetensors(badJson)).toThrow(/json\.safetensors: header is not valid JSON/);
    const wrongSize = join(directory, "size.safetensors");
    const header = JSON.stringify({ w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } });
    length.writeBigUInt64LE(BigInt(header.length));
    writeFileSync(wrongSize, Buffer.concat([length, Buffer.from(header), Buffer.alloc(8)]));
    expect(() => readSafetensors(wrongSize)).toThrow(/tensor "w" has 8 bytes but F32 \[3\] needs 12/);
    expect(() => readSafetensors(join(directory, "absent.safetensors"))).toThrow(
      /absent\.safetensors: cannot read/,
    );
  });
});

describe("module checkpoints", () => {
  it("names parameters by module path and round-trips them through a file", async () => {
    const gpu = await defaultGpu();
    const net = new Net(gpu, 1);
    expect([...net.stateTensors().keys()].sort()).toEqual([
      "blocks.0.running_mean",
      "blocks.0.weight",
      "blocks.1.running_mean",
      "blocks.1.weight",
      "scale",
    ]);
    expect(net.parameters().length).toBe(3);
    const path = join(directory, "net.safetensors");
    await net.save(path, { note: "test" });
    const other = new Net(gpu, 2);
    const before = await other.state();
    expect(before.get("scale")!.data).not.toEqual((await net.state()).get("scale")!.data);
    expect(other.load(path)).toEqual({ format: "pt", note: "test" });
    const after = await other.state();
    for (const [name, entry] of await net.state()) expect(after.get(name)!.data, name).toEqual(entry.data);
  });

  it("refuses a checkpoint whose names or shapes differ, listing every problem and changing nothing", async () => {
    const gpu = await defaultGpu();
    const net = new Net(gpu, 3);
    const path = join(directory, "wrong.safetensors");
    writeSafetensors(path, {
      scale: { shape: [1], data: Float32Array.of(42) },
      "blocks.0.weight": { shape: [3, 2], data: new Float32Array(6) },
      "blocks.9.weight": { shape: [1], data: new Float32Array(1) },
    });
    const before = await net.state();
    expect(() => net.load(path)).toThrow(
      /wrong\.safetensors does not fit this Net:\n {2}"blocks\.0\.weight" has shape \[3, 2\], the model needs \[2, 3\]/,
    );
    expect(() => net.load(path)).toThrow(/missing "blocks\.1\.weight" \[5, 3\]/);
    expect(() => net.load(path)).toThrow(/unexpected "blocks\.9\.weight"/);
    const after = await net.state();
    expect(after.get("scale")!.data).toEqual(before.get("scale")!.data);
  });

  it("initialises reproducibly from a seed", async () => {
    const gpu = await defaultGpu();
    const a = await new Net(gpu, 5).state();
    const b = await new Net(gpu, 5).state();
    const c = await new Net(gpu, 6).state();
    expect(a.get("blocks.1.weight")!.data).toEqual(b.get("blocks.1.weight")!.data);
    expect(a.get("blocks.1.weight")!.data).not.toEqual(c.get("blocks.1.weight")!.data);
  });
});
