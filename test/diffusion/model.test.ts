/**
 * The generator's model on our kernels: named configurations, parameter names in the diffusers /
 * transformers layouts, and a forward + backward pass of phantom-tiny through the text encoder and
 * the UNet with gradients reaching every parameter.
 */
import {
  configProblems,
  createDiffusionModel,
  DIFFUSION_CONFIGS,
  type DiffusionModelConfig,
  diffusionConfig,
  WordTokenizer,
} from "@cxr/diffusion";
import { backward, defaultGpu, mseLoss, Tensor } from "@cxr/kernels";
import { describe, expect, it } from "vitest";

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
    expect(() => diffusionConfig("phantom-huge")).toThrow(/phantom-tiny, phantom-small, sd2-base/);
    const broken = diffusionConfig("phantom-tiny");
    broken.unet.blockOutChannels = [16, 30];
    broken.unet.upBlockTypes = ["UpBlock2D"];
    broken.textEncoder.numHeads = 3;
    const problems = configProblems(broken);
    expect(problems.join("\n")).toMatch(/blockOutChannels\[1\] = 30 is not divisible by normNumGroups 8/);
    expect(problems.join("\n")).toMatch(/upBlockTypes must have one entry per level \(2\)/);
    expect(problems.join("\n")).toMatch(/hiddenSize 32 is not divisible by numHeads 3/);
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
    let nonZero = 0;
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
    // Token embedding rows of unused words get no gradient, but every tensor has some non-zero entry.
    expect(nonZero).toBe(named.size);
    model.dispose();
  });
});
