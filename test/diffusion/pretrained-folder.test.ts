/**
 * Loading a diffusers folder: model_index.json and component configs (zod, errors naming file and
 * key), safetensors single and sharded, F32/F16/BF16, pickles refused, strict name/shape check, and
 * the streaming reader's peak memory on a 256 MB file.
 */
import { execFileSync } from "node:child_process";
import { closeSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import {
  decodeToFloat16,
  findWeightFile,
  loadModuleWeights,
  PretrainedFolder,
  WeightSource,
  weightMismatches,
} from "@cxr/diffusion/pretrained";
import {
  float16BitsToFloat32,
  float32ToFloat16Bits,
  GroupNorm,
  Linear,
  Module,
  ParameterInit,
} from "@cxr/kernels";
import { afterAll, describe, expect, it } from "vitest";
import { gpu } from "../kernels/helpers.ts";
import {
  bfloat16BitsToFloat32,
  float32ToBfloat16Bits,
  SD21_MODEL_INDEX,
  SD21_SCHEDULER_CONFIG,
  SD21_UNET_CONFIG,
  SD21_VAE_CONFIG,
  temporaryFolder,
  writeFixtureSafetensors,
  writeJson,
  writeSd21Configs,
  writeShardedFixture,
} from "./pretrained-helpers.ts";

const folders: string[] = [];
function scratch(prefix: string): string {
  const folder = temporaryFolder(prefix);
  folders.push(folder);
  return folder;
}
afterAll(() => {
  for (const folder of folders) rmSync(folder, { recursive: true, force: true });
});

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error("expected an error");
}

describe("model_index.json and component configs", () => {
  it("opens an SD 2.1-shaped folder and parses every config", () => {
    const root = writeSd21Configs(scratch("sd21"));
    const folder = PretrainedFolder.open(root);
    const unet = folder.unetConfig();
    expect(unet.attention_head_dim).toEqual([5, 10, 20, 20]);
    expect(unet.use_linear_projection).toBe(true);
    expect(unet.cross_attention_dim).toBe(1024);
    const vae = folder.vaeConfig();
    expect(vae.scaling_factor).toBe(0.18215); // diffusers' default when the key is absent
    expect(vae.mid_block_add_attention).toBe(true);
    const text = folder.textEncoderConfig();
    expect([text.num_hidden_layers, text.hidden_size, text.hidden_act]).toEqual([23, 1024, "gelu"]);
    const scheduler = folder.schedulerConfig();
    expect([scheduler._class_name, scheduler.steps_offset, scheduler.timestep_spacing]).toEqual([
      "PNDMScheduler",
      1,
      "leading",
    ]);
  });

  it("names model_index.json and the component when one is missing, and the folder when it is absent", () => {
    const root = writeSd21Configs(scratch("missing"));
    const { unet: _unet, ...withoutUnet } = SD21_MODEL_INDEX;
    writeJson(join(root, "model_index.json"), withoutUnet);
    const message = errorOf(() => PretrainedFolder.open(root));
    expect(message).toContain(join(root, "model_index.json"));
    expect(message).toContain('component "unet" is missing');
    // Only the VAE asked for: opens.
    expect(PretrainedFolder.open(root, { require: ["vae"] }).vaeConfig().latent_channels).toBe(4);

    const root2 = writeSd21Configs(scratch("nofolder"));
    rmSync(join(root2, "text_encoder"), { recursive: true });
    const message2 = errorOf(() => PretrainedFolder.open(root2));
    expect(message2).toContain(join(root2, "text_encoder"));
    expect(message2).toContain("component folder is missing");
    expect(errorOf(() => PretrainedFolder.open(join(root2, "nowhere")))).toContain("not a folder");
  });

  it("names the file, key and value of an unsupported block type or scheduler", () => {
    const root = writeSd21Configs(scratch("blocks"));
    const folder = PretrainedFolder.open(root);
    writeJson(join(root, "unet", "config.json"), {
      ...SD21_UNET_CONFIG,
      down_block_types: [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "DownBlock2D",
      ],
    });
    const unet = errorOf(() => folder.unetConfig());
    expect(unet).toContain(join(root, "unet", "config.json"));
    expect(unet).toContain('key "down_block_types[2]" = "SimpleCrossAttnDownBlock2D"');
    expect(unet).toContain('"CrossAttnDownBlock2D", "DownBlock2D"');

    writeJson(join(root, "vae", "config.json"), {
      ...SD21_VAE_CONFIG,
      down_block_types: [
        "DownEncoderBlock2D",
        "AttnDownEncoderBlock2D",
        "DownEncoderBlock2D",
        "DownEncoderBlock2D",
      ],
    });
    expect(errorOf(() => folder.vaeConfig())).toContain(
      'key "down_block_types[1]" = "AttnDownEncoderBlock2D"',
    );

    writeJson(join(root, "scheduler", "scheduler_config.json"), {
      ...SD21_SCHEDULER_CONFIG,
      _class_name: "EulerDiscreteScheduler",
    });
    const scheduler = errorOf(() => folder.schedulerConfig());
    expect(scheduler).toContain("scheduler_config.json");
    expect(scheduler).toContain('key "_class_name" = "EulerDiscreteScheduler"');
    expect(scheduler).toContain("PNDMScheduler");

    writeJson(join(root, "model_index.json"), {
      ...SD21_MODEL_INDEX,
      scheduler: ["diffusers", "LMSDiscreteScheduler"],
    });
    expect(errorOf(() => PretrainedFolder.open(root))).toContain(
      'key "scheduler[1]" = "LMSDiscreteScheduler"',
    );
  });

  it("checks cross-key consistency and malformed JSON", () => {
    const root = writeSd21Configs(scratch("consistency"));
    const folder = PretrainedFolder.open(root);
    writeJson(join(root, "unet", "config.json"), { ...SD21_UNET_CONFIG, attention_head_dim: [5, 10, 20] });
    expect(errorOf(() => folder.unetConfig())).toContain(
      'key "attention_head_dim" lists 3 values for 4 levels',
    );
    writeJson(join(root, "vae", "config.json"), {
      ...SD21_VAE_CONFIG,
      block_out_channels: [128, 256, 500, 512],
    });
    expect(errorOf(() => folder.vaeConfig())).toContain("500 is not divisible by norm_num_groups 32");
    writeFileSync(join(root, "text_encoder", "config.json"), "{ not json");
    const message = errorOf(() => folder.textEncoderConfig());
    expect(message).toContain(join(root, "text_encoder", "config.json"));
    expect(message).toContain("not valid JSON");
    rmSync(join(root, "tokenizer", "merges.txt"));
    expect(errorOf(() => folder.tokenizerFiles())).toContain(join(root, "tokenizer", "merges.txt"));
  });
});

describe("safetensors weights", () => {
  const values = [0.1, -2.5, 3.25, 65504, 1e-3, -0.0078125];

  it("reads F32, F16 and BF16 as f32, and as f16 bits when asked", () => {
    const path = join(scratch("dtypes"), "model.safetensors");
    writeFixtureSafetensors(path, {
      a: { dtype: "F32", shape: [2, 3], values },
      b: { dtype: "F16", shape: [6], values },
      c: { dtype: "BF16", shape: [3, 2], values },
      "text_model.embeddings.position_ids": { dtype: "I64", shape: [1, 6], values: [0, 1, 2, 3, 4, 5] },
    });
    const source = WeightSource.openFile(path);
    expect(source.read("a").data).toEqual(Float32Array.from(values));
    expect(source.read("b").data).toEqual(
      Float32Array.from(values, (v) => float16BitsToFloat32(float32ToFloat16Bits(v))),
    );
    expect(source.read("c").data).toEqual(
      Float32Array.from(values, (v) => bfloat16BitsToFloat32(float32ToBfloat16Bits(v))),
    );
    expect(source.read("c").storedAs).toBe("BF16");
    expect(source.read("c").shape).toEqual([3, 2]);
    expect(source.readHalf("a").data).toEqual(Uint16Array.from(values, float32ToFloat16Bits));
    expect(source.readHalf("b").data).toEqual(Uint16Array.from(values, float32ToFloat16Bits));
    expect(decodeToFloat16("BF16", new Uint8Array(Uint16Array.of(0x3f80).buffer))[0]).toBe(0x3c00); // 1.0
    expect(errorOf(() => source.read("text_model.embeddings.position_ids"))).toContain(
      "is stored as I64, not a floating-point weight",
    );
    expect(Object.fromEntries(source.dtypes())).toEqual({ F32: 1, F16: 1, BF16: 1, I64: 1 });
    source.close();
  });

  it("rejects truncated files, bad headers and unsupported dtypes, naming the file and tensor", () => {
    const dir = scratch("bad");
    const path = join(dir, "x.safetensors");
    writeFixtureSafetensors(path, { w: { dtype: "F32", shape: [4], values: [1, 2, 3, 4] } });
    const bytes = new Uint8Array(readFileSync(path));
    writeFileSync(path, bytes.subarray(0, bytes.length - 4));
    const truncated = errorOf(() => WeightSource.openFile(path));
    expect(truncated).toContain(path);
    expect(truncated).toContain('tensor "w"');
    writeFileSync(path, Buffer.concat([Buffer.from(new BigUint64Array([5n]).buffer), Buffer.from("{oops")]));
    expect(errorOf(() => WeightSource.openFile(path))).toContain("header is not valid JSON");
    const header = Buffer.from(JSON.stringify({ w: { dtype: "F8_E4M3", shape: [1], data_offsets: [0, 1] } }));
    writeFileSync(
      path,
      Buffer.concat([
        Buffer.from(new BigUint64Array([BigInt(header.length)]).buffer),
        header,
        Buffer.alloc(1),
      ]),
    );
    expect(errorOf(() => WeightSource.openFile(path))).toContain(
      'tensor "w" has unsupported dtype "F8_E4M3"',
    );
  });

  it("reads a sharded checkpoint through its index, and names a missing shard", () => {
    const dir = scratch("sharded");
    const indexPath = writeShardedFixture(dir, "diffusion_pytorch_model", [
      {
        "conv_in.weight": { dtype: "F16", shape: [2, 3], values },
        "conv_in.bias": { dtype: "F16", shape: [2], values: [1, 2] },
      },
      { "conv_out.weight": { dtype: "F32", shape: [3], values: [7, 8, 9] } },
    ]);
    expect(findWeightFile(dir)).toBe(indexPath);
    const source = WeightSource.openIndex(indexPath);
    expect(source.names.sort()).toEqual(["conv_in.bias", "conv_in.weight", "conv_out.weight"]);
    expect(source.read("conv_out.weight").data).toEqual(Float32Array.of(7, 8, 9));
    expect(source.read("conv_in.bias").data).toEqual(Float32Array.of(1, 2));
    source.close();
    const shard = join(dir, "diffusion_pytorch_model-00002-of-00002.safetensors");
    rmSync(shard);
    const message = errorOf(() => WeightSource.openIndex(indexPath));
    expect(message).toContain(indexPath);
    expect(message).toContain(`missing shard ${shard}`);
    expect(message).toContain('"conv_out.weight"');
  });

  it("refuses pickles with the conversion command, and says what it looked for", () => {
    const dir = scratch("pickle");
    writeFileSync(join(dir, "diffusion_pytorch_model.bin"), "PK\u0003\u0004");
    const message = errorOf(() => findWeightFile(dir));
    expect(message).toContain(join(dir, "diffusion_pytorch_model.bin"));
    expect(message).toContain(`cxr convert ${join(dir, "diffusion_pytorch_model.bin")}`);
    const empty = scratch("empty");
    expect(errorOf(() => findWeightFile(empty))).toContain(
      "diffusion_pytorch_model.safetensors or model.safetensors",
    );
    writeFixtureSafetensors(join(empty, "diffusion_pytorch_model.fp16.safetensors"), {
      w: { dtype: "F16", shape: [1], values: [1] },
    });
    expect(findWeightFile(empty, { variant: "fp16" })).toContain("diffusion_pytorch_model.fp16.safetensors");
  });
});

class Tiny extends Module {
  readonly proj: Linear;
  readonly norm: GroupNorm;
  constructor(g: Awaited<ReturnType<typeof gpu>>) {
    super(g);
    const init = new ParameterInit(3);
    this.proj = this.child("proj", new Linear(g, 3, 2, init));
    this.norm = this.child("norm", new GroupNorm(g, 1, 2));
  }
}

describe("strict load into a module", () => {
  it("loads every tensor (F16 and BF16 converted) and matches the file", async () => {
    const g = await gpu();
    const path = join(scratch("load"), "model.safetensors");
    writeFixtureSafetensors(path, {
      "proj.weight": { dtype: "BF16", shape: [2, 3], values: [1, 2, 3, 4, 5, 6] },
      "proj.bias": { dtype: "F16", shape: [2], values: [0.5, -0.5] },
      "norm.weight": { dtype: "F32", shape: [2], values: [2, 3] },
      "norm.bias": { dtype: "F32", shape: [2], values: [-1, 1] },
    });
    const module = new Tiny(g);
    const source = WeightSource.openFile(path);
    const report = loadModuleWeights(module, source);
    expect(report.tensors).toBe(4);
    expect(report.storedAs).toEqual({ BF16: 1, F16: 1, F32: 2 });
    const state = await module.state();
    expect(state.get("proj.weight")?.data).toEqual(Float32Array.of(1, 2, 3, 4, 5, 6));
    expect(state.get("proj.bias")?.data).toEqual(Float32Array.of(0.5, -0.5));
    expect(state.get("norm.bias")?.data).toEqual(Float32Array.of(-1, 1));
    source.close();
    module.dispose();
  });

  it("lists every missing, unexpected and mis-shaped name and changes nothing", async () => {
    const g = await gpu();
    const path = join(scratch("mismatch"), "model.safetensors");
    writeFixtureSafetensors(path, {
      "proj.weight": { dtype: "F32", shape: [3, 2], values: [1, 2, 3, 4, 5, 6] },
      "norm.weight": { dtype: "F32", shape: [2], values: [9, 9] },
      "norm.bias": { dtype: "F32", shape: [2], values: [9, 9] },
      "extra.weight": { dtype: "F16", shape: [1], values: [1] },
      "proj.position_ids": { dtype: "I64", shape: [1], values: [0] },
    });
    const module = new Tiny(g);
    const before = await module.state();
    const source = WeightSource.openFile(path);
    const message = errorOf(() => loadModuleWeights(module, source));
    expect(message).toContain(path);
    expect(message).toContain("4 mismatches with Tiny");
    expect(message).toContain('"proj.weight" is [3, 2] in the file, the model needs [2, 3]');
    expect(message).toContain('missing "proj.bias" [2]');
    expect(message).toContain('unexpected "extra.weight"');
    expect(message).toContain('unexpected "proj.position_ids"');
    expect((await module.state()).get("norm.weight")?.data).toEqual(before.get("norm.weight")?.data);
    const ignoring = weightMismatches(
      new Map([...module.stateTensors()].map(([name, tensor]) => [name, tensor.shape] as const)),
      source,
      { ignore: (name) => name.endsWith("position_ids") || name.startsWith("extra.") },
    );
    expect(ignoring).toHaveLength(2);
    source.close();
    module.dispose();
  });
});

describe("streaming reads keep memory near one tensor", () => {
  it("reads a 256 MB F16 file with RSS growth near one tensor (whole-file reading as the control)", () => {
    const dir = scratch("memory");
    const path = join(dir, "big.safetensors");
    const tensors = 32;
    const count = 4 * 1024 * 1024; // 8 MB of F16 each, 16 MB once decoded to f32
    const header: Record<string, unknown> = {};
    for (let index = 0; index < tensors; index++) {
      const begin = index * count * 2;
      header[`block.${index}.weight`] = {
        dtype: "F16",
        shape: [count / 1024, 1024],
        data_offsets: [begin, begin + count * 2],
      };
    }
    let json = JSON.stringify(header);
    json += " ".repeat((8 - ((8 + json.length) % 8)) % 8);
    const fd = openSync(path, "w");
    const length = new Uint8Array(8);
    new DataView(length.buffer).setBigUint64(0, BigInt(json.length), true);
    writeSync(fd, length);
    writeSync(fd, json);
    const chunk = new Uint16Array(count);
    for (let index = 0; index < tensors; index++) {
      chunk.fill(float32ToFloat16Bits(index + 1));
      writeSync(fd, chunk);
    }
    closeSync(fd);
    const child = join(import.meta.dirname, "pretrained-memory-child.ts");
    const runner = process.versions.bun ? [child] : ["--import", "tsx", child];
    const run = (mode: string) =>
      JSON.parse(execFileSync(process.execPath, [...runner, path, mode], { encoding: "utf8" })) as {
        growth: number;
        checksum: number;
        largest: number;
        peakGrowth: number;
        ms: number;
      };
    const fileBytes = tensors * count * 2;
    const streamed = run("stream");
    const whole = run("whole");
    console.log(
      `RSS growth reading ${fileBytes / 2 ** 20} MB of F16 (sampled per tensor / maxRSS): streamed ` +
        `${(streamed.growth / 2 ** 20).toFixed(0)} / ${(streamed.peakGrowth / 2 ** 20).toFixed(0)} MB in ${streamed.ms.toFixed(0)} ms, ` +
        `whole-file ${(whole.growth / 2 ** 20).toFixed(0)} / ${(whole.peakGrowth / 2 ** 20).toFixed(0)} MB in ${whole.ms.toFixed(0)} ms ` +
        `(${process.versions.bun ? "bun" : "node"})`,
    );
    // Sum over tensors of (first + last) = 2 * (1 + ... + 32).
    expect(streamed.checksum).toBe(tensors * (tensors + 1));
    expect(whole.checksum).toBe(streamed.checksum);
    expect(streamed.largest).toBe(count * 4);
    // One tensor's bytes (8 MB) and its f32 values (16 MB) in reused buffers, plus 16 MB of slack.
    expect(streamed.growth).toBeLessThan(count * 2 + count * 4 + 16 * 2 ** 20);
    expect(streamed.peakGrowth).toBeLessThan(count * 2 + count * 4 + 16 * 2 ** 20);
    // The control: reading the whole file at once holds all of it.
    expect(whole.growth).toBeGreaterThan(fileBytes);
    expect(whole.peakGrowth).toBeGreaterThan(fileBytes);
  });
});
