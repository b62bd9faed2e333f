/**
 * The generator's model on our kernels: named configurations, parameter names in the diffusers /
 * transformers layouts, and a forward + backward pass of phantom-tiny through the text encoder and
 * the UNet with gradients reaching every parameter; saving and loading, and checkpoints that are
 * damaged or do not fit.
 */
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CheckpointError,
  configProblems,
  createDiffusionModel,
  DIFFUSION_CONFIGS,
  DiffusionModel,
  type DiffusionModelConfig,
  Downsample2D,
  diffusionConfig,
  MODEL_FILES,
  ResnetBlock2D,
  Upsample2D,
  WordTokenizer,
} from "@cxr/diffusion";
import {
  backward,
  defaultGpu,
  mseLoss,
  noGrad,
  ParameterInit,
  randomNormal,
  Tensor,
  tidy,
} from "@cxr/kernels";
import { afterAll, describe, expect, it } from "vitest";

const folder = mkdtempSync(join(tmpdir(), "cxr-model-"));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

const PROMPTS = [
  "72 year old BLACK female. Cardiomegaly and small left pleural effusion.",
  "45 year old WHITE male. No acute cardiopulmonary abnormality.",
  "60 year old ASIAN female. Right upper lobe consolidation.",
];

function tinyTokenizer(config: DiffusionModelConfig) {
  return WordTokenizer.fromPrompts(PROMPTS, { maxLength: config.textEncoder.maxPositions });
}

describe("diffusion model configs", () => {
  it("every named config is valid", () => {
    for (const [name, config] of Object.entries(DIFFUSION_CONFIGS)) {
      expect(configProblems(config), name).toEqual([]);
      expect(config.name).toBe(name);
    }
  });

  it("an unknown name lists the known ones; a broken config names each bad key", () => {
    expect(() => diffusionConfig("phantom-huge")).toThrow(
      /phantom-tiny, phantom-small, phantom-base, sd2-base/,
    );
    const broken = diffusionConfig("phantom-tiny");
    broken.unet.blockOutChannels = [16, 30];
    broken.unet.upBlockTypes = ["UpBlock2D"];
    broken.textEncoder.numHeads = 3;
    const problems = configProblems(broken);
    expect(problems.join("\n")).toMatch(/blockOutChannels\[1\] = 30 is not divisible by normNumGroups 8/);
    expect(problems.join("\n")).toMatch(/upBlockTypes must have one entry per level \(2\)/);
    expect(problems.join("\n")).toMatch(/hiddenSize 32 is not divisible by numHeads 3/);
  });

  it("a model's own sampling defaults: a known sampler and 1 to the training timesteps", () => {
    const config = diffusionConfig("phantom-tiny");
    expect(configProblems({ ...config, sampling: { sampler: "ddpm", steps: 20 } })).toEqual([]);
    const bad = (sampling: unknown) =>
      configProblems({ ...config, sampling: sampling as DiffusionModelConfig["sampling"] }).join("\n");
    expect(bad({ sampler: "euler", steps: 20 })).toMatch(
      /sampling.sampler must be one of ddpm, ddim, pndm, dpmpp-2m, got "euler"/,
    );
    expect(bad({ sampler: "ddpm", steps: 0 })).toMatch(/sampling.steps must be an integer from 1/);
    expect(bad({ sampler: "ddpm", steps: 1001 })).toMatch(/sampling.steps .* got 1001/);
    expect(bad({ sampler: "ddpm", steps: 2.5 })).toMatch(/sampling.steps .* got 2.5/);
    expect(bad("ddpm")).toMatch(/sampling must be an object/);
  });
});

describe("phantom-tiny on our kernels", () => {
  it("has the diffusers and CLIP parameter names", async () => {
    const gpu = await defaultGpu();
    const config = diffusionConfig("phantom-tiny");
    const model = createDiffusionModel(gpu, config, tinyTokenizer(config), 1);
    const text = [...model.textEncoder.namedParameters().keys()];
    for (const name of [
      "text_model.embeddings.token_embedding.weight",
      "text_model.embeddings.position_embedding.weight",
      "text_model.encoder.layers.1.self_attn.q_proj.weight",
      "text_model.encoder.layers.1.self_attn.out_proj.bias",
      "text_model.encoder.layers.0.layer_norm1.weight",
      "text_model.encoder.layers.0.mlp.fc2.bias",
      "text_model.final_layer_norm.weight",
    ]) {
      expect(text).toContain(name);
    }
    const unet = [...model.unet.namedParameters().keys()];
    for (const name of [
      "conv_in.weight",
      "time_embedding.linear_1.weight",
      "time_embedding.linear_2.bias",
      "down_blocks.0.resnets.0.norm1.weight",
      "down_blocks.0.resnets.0.time_emb_proj.weight",
      "down_blocks.0.downsamplers.0.conv.weight",
      "down_blocks.1.resnets.0.conv_shortcut.weight",
      "down_blocks.1.attentions.0.norm.weight",
      "down_blocks.1.attentions.0.proj_in.weight",
      "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
      "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
      "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.bias",
      "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
      "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.weight",
      "down_blocks.1.attentions.0.transformer_blocks.0.norm3.bias",
      "down_blocks.1.attentions.0.proj_out.weight",
      "mid_block.resnets.1.conv2.weight",
      "mid_block.attentions.0.transformer_blocks.0.attn1.to_v.weight",
      "up_blocks.0.resnets.1.conv_shortcut.weight",
      "up_blocks.0.attentions.1.proj_out.bias",
      "up_blocks.0.upsamplers.0.conv.weight",
      "up_blocks.1.resnets.0.conv1.weight",
      "conv_norm_out.weight",
      "conv_out.bias",
    ]) {
      expect(unet).toContain(name);
    }
    expect(unet.filter((name) => name.startsWith("down_blocks.0.attentions"))).toEqual([]);
    expect(unet.filter((name) => name.startsWith("up_blocks.1.upsamplers"))).toEqual([]);
    // Shapes that pin the layout: GEGLU doubles the projection, skip concatenation widens up resnets.
    const shapes = model.unet.namedParameters();
    expect(shapes.get("down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight")!.shape).toEqual(
      [256, 32],
    );
    expect(shapes.get("up_blocks.0.resnets.0.conv1.weight")!.shape).toEqual([32, 64, 3, 3]);
    expect(shapes.get("up_blocks.1.resnets.0.conv1.weight")!.shape).toEqual([16, 48, 3, 3]);
    expect(shapes.get("up_blocks.1.resnets.1.conv1.weight")!.shape).toEqual([16, 32, 3, 3]);
    expect(unet.filter((name) => name.startsWith("up_blocks.0.resnets.2"))).toEqual([]);
    model.dispose();
  });

  it("runs forward and backward: output shape, finite values, a gradient for every parameter", async () => {
    const gpu = await defaultGpu();
    const config = diffusionConfig("phantom-tiny");
    const model = createDiffusionModel(gpu, config, tinyTokenizer(config), 2);
    const batch = 2;
    const side = config.resolution;
    const sample = Tensor.upload(
      gpu,
      Float32Array.from({ length: batch * side * side }, (_, index) => Math.sin(index * 0.37)),
      [batch, 1, side, side],
    );
    const timesteps = Tensor.upload(gpu, new Float32Array([10, 900]), [batch]);
    const { hiddenStates } = model.encodePrompts([PROMPTS[0], ""]);
    expect(hiddenStates.shape).toEqual([
      batch,
      config.textEncoder.maxPositions,
      config.textEncoder.hiddenSize,
    ]);
    const output = model.unet.forward(sample, timesteps, hiddenStates);
    expect(output.shape).toEqual([batch, 1, side, side]);
    const target = Tensor.upload(gpu, new Float32Array(batch * side * side).fill(0.5), output.shape);
    const loss = mseLoss(output, target);
    const lossValue = (await loss.download())[0];
    expect(Number.isFinite(lossValue)).toBe(true);
    backward(loss);
    const missing: string[] = [];
    const nonFinite: string[] = [];
    let nonZero = 0; // tensors with a non-zero gradient entry
    const named = model.namedParameters();
    for (const [name, parameter] of named) {
      if (!parameter.grad) {
        missing.push(name);
        continue;
      }
      const values = await parameter.grad.download();
      if (values.some((value) => !Number.isFinite(value))) nonFinite.push(name);
      if (values.some((value) => value !== 0)) nonZero++;
    }
    expect(missing).toEqual([]);
    expect(nonFinite).toEqual([]);
    // Token embedding rows of unused words get no gradient, but every tensor has some non-zero entry,
    // except the text encoder's k_proj biases, whose exact gradient is 0 (a constant added to every
    // score of a softmax row): theirs is f32 rounding noise, which may or may not be exactly zero.
    const kBiases = [...named.keys()].filter((name) => name.endsWith("self_attn.k_proj.bias")).length;
    expect(nonZero).toBeGreaterThanOrEqual(named.size - kBiases);
    model.dispose();
  });
});

describe("memory", () => {
  it("a training step frees everything but the gradients; inference in tidy frees everything", async () => {
    const gpu = await defaultGpu();
    const config = diffusionConfig("phantom-tiny");
    const model = createDiffusionModel(gpu, config, tinyTokenizer(config), 8);
    const batch = 2;
    const side = config.resolution;
    const inputs = () => ({
      sample: Tensor.upload(gpu, new Float32Array(batch * side * side).fill(0.1), [batch, 1, side, side]),
      timesteps: Tensor.upload(gpu, new Float32Array([3, 500]), [batch]),
      noise: Tensor.upload(gpu, new Float32Array(batch * side * side).fill(0.2), [batch, 1, side, side]),
    });
    // No tidy: the pattern of a training loop that releases its own inputs.
    const trainingStep = () => {
      const { sample, timesteps, noise } = inputs();
      const { hiddenStates, ids } = model.encodePrompts([PROMPTS[0], ""]);
      const loss = mseLoss(model.unet.forward(sample, timesteps, hiddenStates), noise);
      backward(loss);
      for (const parameter of model.parameters()) {
        parameter.grad?.release();
        parameter.grad = null;
      }
      for (const tensor of [sample, timesteps, noise, ids, loss]) tensor.release();
    };
    const inference = () =>
      noGrad(() =>
        tidy(() => {
          const { sample, timesteps } = inputs();
          return model.unet.forward(sample, timesteps, model.encodePrompts(["", PROMPTS[1]]).hiddenStates);
        }),
      );
    trainingStep(); // first calls make what the kernels keep per device (the matmul's stand-in tensors)
    inference().release();
    await gpu.sync();
    const inUse = () => gpu.pool.snapshot().inUseBytes;
    const before = inUse();
    trainingStep();
    await gpu.sync();
    expect(inUse() - before, "bytes left by a training step").toBe(0);
    const output = inference();
    expect(output.shape).toEqual([batch, 1, side, side]);
    output.release();
    await gpu.sync();
    expect(inUse() - before, "bytes left by inference").toBe(0);
    model.dispose();
  });
});

describe("bad input to the networks", () => {
  it("wrong shapes and dtypes are OpErrors naming the network and the expected shape", async () => {
    const gpu = await defaultGpu();
    const config = diffusionConfig("phantom-tiny");
    const model = createDiffusionModel(gpu, config, tinyTokenizer(config), 6);
    const context = model.encodePrompts([""]).hiddenStates; // [1, 24, 32]
    const t = Tensor.upload(gpu, new Float32Array([5]), [1]);
    const image = (shape: number[]) =>
      Tensor.upload(gpu, new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
    expect(() => model.unet.forward(image([1, 1, 15, 16]), t, context)).toThrow(
      /UNet2DConditionModel: sample must be \[batch, 1, H, W\] with H and W divisible by 2/,
    );
    expect(() => model.unet.forward(image([1, 3, 16, 16]), t, context)).toThrow(
      /sample must be \[batch, 1, H, W\]/,
    );
    expect(() => model.unet.forward(image([1, 1, 16, 16]), image([2]), context)).toThrow(
      /timesteps must be an f32 tensor \[1\]/,
    );
    expect(() => model.unet.forward(image([1, 1, 16, 16]), t, image([1, 24, 16]))).toThrow(
      /encoderHiddenStates must be \[1, tokens, 32\]/,
    );
    // The UNet is fully convolutional: another size divisible by 2 runs.
    expect(model.unet.forward(image([1, 1, 8, 12]), t, context).shape).toEqual([1, 1, 8, 12]);
    const tooLong = Tensor.upload(gpu, new Uint32Array(25), [1, 25], "u32");
    expect(() => model.textEncoder.forward(tooLong)).toThrow(/25 tokens exceed the 24 positions/);
    expect(() => model.textEncoder.forward(image([1, 24]))).toThrow(/u32 tensor \[batch, length\]/);
    model.dispose();
  });
});

describe("DiffusionModel save and load", () => {
  it("round-trips: same weights, tokenizer and outputs; only the four files are written", async () => {
    const gpu = await defaultGpu();
    const config = diffusionConfig("phantom-tiny");
    const model = createDiffusionModel(gpu, config, tinyTokenizer(config), 3);
    const dir = join(folder, "round-trip");
    await model.save(dir, { step: "12" });
    expect(readdirSync(dir).sort()).toEqual(["config.json", "text_encoder", "tokenizer.json", "unet"]);
    expect(readdirSync(join(dir, "unet"))).toEqual(["diffusion_pytorch_model.safetensors"]);
    const loaded = DiffusionModel.load(gpu, dir);
    expect(loaded.config).toEqual(config);
    expect(loaded.tokenizer.vocabulary).toEqual(model.tokenizer.vocabulary);
    const original = await model.unet.state();
    const restored = await loaded.unet.state();
    for (const [name, entry] of original) expect(restored.get(name)!.data, name).toEqual(entry.data);
    const [a, b] = await Promise.all(
      [model, loaded].map((m) => m.encodePrompts([PROMPTS[1]]).hiddenStates.download()),
    );
    expect(b).toEqual(a);
    model.dispose();
    loaded.dispose();
  });

  it("a checkpoint that does not fit the config lists every mismatch, in both files", async () => {
    const gpu = await defaultGpu();
    const config = diffusionConfig("phantom-tiny");
    const model = createDiffusionModel(gpu, config, tinyTokenizer(config), 4);
    const dir = join(folder, "mismatch");
    await model.save(dir);
    model.dispose();
    const edited = JSON.parse(readFileSync(join(dir, MODEL_FILES.config), "utf8"));
    edited.unet.blockOutChannels = [16, 48];
    edited.textEncoder.numLayers = 3;
    writeFileSync(join(dir, MODEL_FILES.config), JSON.stringify(edited));
    let message = "";
    try {
      DiffusionModel.load(gpu, dir);
    } catch (error) {
      expect(error).toBeInstanceOf(CheckpointError);
      message = (error as Error).message;
    }
    expect(message).toMatch(/does not match the configuration "phantom-tiny"/);
    expect(message).toMatch(/text_encoder\/model.safetensors \(16 mismatches\)/);
    expect(message).toMatch(/missing "text_model.encoder.layers.2.mlp.fc1.weight" \[64, 32\]/);
    expect(message).toMatch(
      /"down_blocks.1.resnets.0.conv1.weight" is \[32, 16, 3, 3\] in the file, the config needs \[48, 16, 3, 3\]/,
    );
    // Not cut short: every misshapen UNet tensor is listed (far more than 20).
    const unetLines = message.split("\n").filter((line) => line.includes("in the file, the config needs"));
    expect(unetLines.length).toBeGreaterThan(60);
    expect(message).not.toMatch(/and \d+ more/);
  });

  it("truncated, corrupted or missing files are clear errors naming the file", async () => {
    const gpu = await defaultGpu();
    const config = diffusionConfig("phantom-tiny");
    const model = createDiffusionModel(gpu, config, tinyTokenizer(config), 5);
    const dir = join(folder, "damaged");
    await model.save(dir);
    model.dispose();
    const unetFile = join(dir, MODEL_FILES.unet);
    const size = statSync(unetFile).size;
    truncateSync(unetFile, size - 1000);
    expect(() => DiffusionModel.load(gpu, dir)).toThrow(
      new RegExp(`cannot load ${unetFile.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: .*`),
    );
    truncateSync(unetFile, 5);
    expect(() => DiffusionModel.load(gpu, dir)).toThrow(/diffusion_pytorch_model.safetensors/);
    writeFileSync(join(dir, MODEL_FILES.tokenizer), "{ not json");
    expect(() => DiffusionModel.load(gpu, dir)).toThrow(/tokenizer.json is not valid JSON/);
    writeFileSync(join(dir, MODEL_FILES.config), JSON.stringify({ format: "cxr-diffusion/1", name: "x" }));
    expect(() => DiffusionModel.load(gpu, dir)).toThrow(
      /config.json is invalid:\n {2}.*textEncoder is missing/s,
    );
    rmSync(join(dir, MODEL_FILES.config));
    expect(() => DiffusionModel.load(gpu, dir)).toThrow(/cannot read the model configuration .*config.json/);
  });

  it("refuses a tokenizer that does not fit the text encoder", async () => {
    const gpu = await defaultGpu();
    const config = diffusionConfig("phantom-tiny");
    const words = Array.from({ length: 600 }, (_, index) => `word${index}`).join(" "); // "word" and 600 numbers
    const big = WordTokenizer.fromPrompts([words], { maxLength: config.textEncoder.maxPositions });
    expect(() => createDiffusionModel(gpu, config, big)).toThrow(
      /605 tokens, more than textEncoder.vocabSize 512/,
    );
    const short = WordTokenizer.fromPrompts(PROMPTS, { maxLength: 10 });
    expect(() => createDiffusionModel(gpu, config, short)).toThrow(
      /context \(10\) differs from textEncoder.maxPositions 24/,
    );
  });
});

describe("ResnetBlock2D and the samplers of the blocks, shared with the VAE", () => {
  it("temb_channels = null: no time_emb_proj, no time embedding taken; Downsample2D padding 0 pads right/bottom", async () => {
    const gpu = await defaultGpu();
    const init = new ParameterInit(3);
    const timed = new ResnetBlock2D(gpu, 8, 16, 12, 4, 1e-5, init);
    const plain = new ResnetBlock2D(gpu, 8, 16, null, 4, 1e-6, init);
    const names = (module: ResnetBlock2D) => [...module.namedParameters().keys()].sort();
    expect(names(timed)).toContain("time_emb_proj.weight");
    expect(names(plain)).toEqual(names(timed).filter((name) => !name.startsWith("time_emb_proj")));
    const x = randomNormal(gpu, [2, 8, 5, 5], 1);
    const temb = randomNormal(gpu, [2, 12], 2);
    expect(noGrad(() => plain.forward(x)).shape).toEqual([2, 16, 5, 5]);
    expect(noGrad(() => timed.forward(x, temb)).shape).toEqual([2, 16, 5, 5]);
    expect(() => plain.forward(x, temb)).toThrow(/no time_emb_proj \(temb_channels=None\)/);
    expect(() => timed.forward(x)).toThrow(/needs a time embedding/);
    // diffusers' Downsample2D with padding 0: F.pad(x, (0, 1, 0, 1)) then a 3x3 stride-2 conv, so a
    // 5x5 input gives 2x2, equal to the conv of the explicitly padded 6x6 input.
    const down0 = new Downsample2D(gpu, 8, 0, new ParameterInit(4));
    const source = await x.download();
    const values = new Float32Array(2 * 8 * 6 * 6);
    for (let plane = 0; plane < 16; plane++)
      for (let row = 0; row < 5; row++)
        for (let column = 0; column < 5; column++)
          values[plane * 36 + row * 6 + column] = source[plane * 25 + row * 5 + column];
    const explicit = Tensor.upload(gpu, values, [2, 8, 6, 6]);
    const ours = await noGrad(() => down0.forward(x)).download();
    const reference = await noGrad(() => down0.conv.forward(explicit)).download();
    expect(ours.length).toBe(2 * 8 * 2 * 2);
    expect(Array.from(ours)).toEqual(Array.from(reference));
    const up = new Upsample2D(gpu, 8, init);
    expect(noGrad(() => up.forward(x)).shape).toEqual([2, 8, 10, 10]);
    for (const module of [timed, plain, down0, up]) module.dispose();
  });
});
