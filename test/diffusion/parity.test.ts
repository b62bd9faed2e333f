/**
 * Numerical parity with PyTorch: phantom-tiny's text encoder and UNet on our kernels against
 * packages/diffusion/reference/torch_reference.py (plain torch, Debian's python3-torch 1.13, which
 * .ci/run and setup.sh install), on the same weights (our safetensors, loaded by name after the script
 * checked every name and shape against the layout it derives from config.json itself) and inputs.
 * Compared: the text encoder's last_hidden_state, the UNet output, and the gradient of
 * sum(output * gradOutput) for every parameter of both networks.
 *
 * The reference runs twice: in float64 (the exact answer for these f32 weights; what the tolerances
 * are stated against) and in float32 (PyTorch's own rounding, reported beside ours).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createDiffusionModel,
  type DiffusionModelConfig,
  diffusionConfig,
  WordTokenizer,
} from "@cxr/diffusion";
import { backward, defaultGpu, readSafetensors, Tensor, writeSafetensors } from "@cxr/kernels";
import { afterAll, describe, expect, it } from "vitest";
import { randomValues } from "../kernels/helpers.ts";

const PYTHON = "/usr/bin/python3";
const SCRIPT = join(import.meta.dirname, "../../packages/diffusion/reference/torch_reference.py");

/**
 * Tolerances: max |ours - reference| <= RELATIVE * max |reference tensor| + FLOOR * max |reference|
 * over all tensors of the kind (outputs, gradients). The floor matters only for tensors whose exact
 * value is ~0: the text encoder's k_proj biases, whose gradient vanishes identically (a constant added
 * to every score of a softmax row changes nothing), come out as f32 rounding noise on both sides.
 */
const PARITY_TOLERANCE = {
  outputs: { relative: 2e-5, floor: 1e-7 },
  gradients: { relative: 1e-4, floor: 1e-6 },
};

const PROMPTS = [
  "72 year old BLACK female. Cardiomegaly and small left pleural effusion.",
  "45 year old WHITE male. No acute cardiopulmonary abnormality.",
  "60 year old ASIAN female. Right upper lobe consolidation with left pleural effusion.",
];

interface Comparison {
  name: string;
  error: number;
  scale: number;
  torch32Error: number;
}

function maxAbs(values: ArrayLike<number>): number {
  let m = 0;
  for (let index = 0; index < values.length; index++) m = Math.max(m, Math.abs(values[index]));
  return m;
}

function maxDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let m = 0;
  for (let index = 0; index < a.length; index++) m = Math.max(m, Math.abs(a[index] - b[index]));
  return m;
}

const folder = mkdtempSync(join(tmpdir(), "cxr-parity-"));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

/**
 * phantom-tiny (SD 2.x style: linear projections, quick_gelu, one layer per block), and a variant
 * in SD 1.x style with everything else changed too: 1x1-conv projections, erf GELU in the text
 * encoder, two resnets per level, two transformer blocks per attention, cross-attention at the top
 * level (SD's order) with 1 and 4 heads, no sin/cos flip and freqShift 1, 8 px, a 12-token context (prompts truncated).
 */
function variantConfig(): DiffusionModelConfig {
  const config = diffusionConfig("phantom-tiny");
  config.name = "parity-variant";
  config.resolution = 8;
  config.textEncoder = {
    ...config.textEncoder,
    hiddenAct: "gelu",
    numLayers: 1,
    numHeads: 4,
    maxPositions: 12,
  };
  config.unet = {
    ...config.unet,
    sampleSize: 8,
    blockOutChannels: [8, 16],
    normNumGroups: 4,
    layersPerBlock: 2,
    downBlockTypes: ["CrossAttnDownBlock2D", "DownBlock2D"],
    upBlockTypes: ["UpBlock2D", "CrossAttnUpBlock2D"],
    attentionHeadDim: [1, 4],
    useLinearProjection: false,
    transformerLayersPerBlock: 2,
    flipSinToCos: false,
    freqShift: 1,
  };
  return config;
}

/**
 * sd2-base's structure in miniature: four levels with SD 2.x's block types and order (cross-attention
 * at the top three, DownBlock2D / UpBlock2D at the bottom), two resnets per level, linear projections,
 * 4-channel latents, erf GELU text encoder; widths 320/640/1280 divided by 40, heads 5/10/20/20 -> 1/2/4/4
 * (8 channels each), 8x8 latents, 16 tokens.
 */
function sd2MiniatureConfig(): DiffusionModelConfig {
  const config = diffusionConfig("sd2-base");
  config.name = "sd2-miniature";
  config.resolution = 64;
  config.textEncoder = {
    ...config.textEncoder,
    vocabSize: 512,
    hiddenSize: 32,
    intermediateSize: 128,
    numLayers: 2,
    numHeads: 2,
    maxPositions: 16,
  };
  config.unet = {
    ...config.unet,
    sampleSize: 8,
    blockOutChannels: [8, 16, 32, 32],
    attentionHeadDim: [1, 2, 4, 4],
    normNumGroups: 4,
    crossAttentionDim: 32,
  };
  return config;
}

describe("parity with PyTorch", () => {
  it.each([
    ["phantom-tiny", () => diffusionConfig("phantom-tiny")],
    ["SD 1.x-style variant", variantConfig],
    ["sd2-base structure in miniature", sd2MiniatureConfig],
  ])(
    "%s: text encoder output, UNet output and every parameter gradient match torch",
    async (label, makeConfig) => {
      const gpu = await defaultGpu();
      const config = makeConfig();
      const tokenizer = WordTokenizer.fromPrompts(PROMPTS, { maxLength: config.textEncoder.maxPositions });
      const model = createDiffusionModel(gpu, config, tokenizer, 7);
      const dir = join(folder, config.name);
      await model.save(join(dir, "model"));

      const batch = 3;
      const side = config.unet.sampleSize;
      const channels = config.unet.inChannels;
      const prompts = [PROMPTS[0], "", PROMPTS[2]];
      const sampleValues = Float32Array.from(randomValues(batch * channels * side * side, 21));
      const gradValues = Float32Array.from(randomValues(batch * channels * side * side, 22));
      const timestepValues = new Float32Array([17, 999, 430]);
      const { hiddenStates, tokens } = model.encodePrompts(prompts, { warn: () => {} });
      const sample = Tensor.upload(gpu, sampleValues, [batch, channels, side, side]);
      const timesteps = Tensor.upload(gpu, timestepValues, [batch]);
      const output = model.unet.forward(sample, timesteps, hiddenStates);
      const ours = new Map<string, Float32Array>([
        ["text_hidden", await hiddenStates.download()],
        ["unet_output", await output.download()],
      ]);
      backward(output, Tensor.upload(gpu, gradValues, output.shape));
      for (const [prefix, module] of [
        ["text_encoder", model.textEncoder],
        ["unet", model.unet],
      ] as const) {
        for (const [name, parameter] of module.namedParameters()) {
          ours.set(
            `grad.${prefix}.${name}`,
            parameter.grad ? await parameter.grad.download() : new Float32Array(parameter.size),
          );
        }
      }

      const inputs = join(dir, "inputs.safetensors");
      writeSafetensors(inputs, {
        ids: { shape: [batch, tokenizer.maxLength], data: Float32Array.from(tokens.ids) },
        sample: { shape: [batch, channels, side, side], data: sampleValues },
        timesteps: { shape: [batch], data: timestepValues },
        grad_output: { shape: [batch, channels, side, side], data: gradValues },
      });
      const run = (precision: "float32" | "float64") => {
        const out = join(dir, `torch-${precision}.safetensors`);
        const args = [SCRIPT, "parity", "--model", join(dir, "model"), "--inputs", inputs, "--out", out];
        if (precision === "float64") args.push("--float64");
        execFileSync(PYTHON, args, { stdio: ["ignore", "pipe", "pipe"] });
        return readSafetensors(out).tensors;
      };
      const reference = run("float64");
      const torch32 = run("float32");

      const comparisons: Comparison[] = [];
      for (const [name, values] of ours) {
        const expected = reference.get(name);
        expect(expected, `the reference has ${name}`).toBeDefined();
        comparisons.push({
          name,
          error: maxDifference(values, expected!.data),
          scale: maxAbs(expected!.data),
          torch32Error: maxDifference(torch32.get(name)!.data, expected!.data),
        });
      }
      // Every parameter of both networks was compared (plus the two outputs).
      expect(comparisons.length).toBe(model.parameters().length + 2);

      const failures: string[] = [];
      const isOutput = (c: Comparison) => !c.name.startsWith("grad.");
      const globalScale = (output: boolean) =>
        Math.max(...comparisons.filter((c) => isOutput(c) === output).map((c) => c.scale));
      const global = { outputs: globalScale(true), gradients: globalScale(false) };
      // Reported: errors relative to max(tensor scale, 1% of the global scale), ours and torch float32's.
      const worst = { outputs: 0, gradients: 0, torch32Outputs: 0, torch32Gradients: 0 };
      for (const c of comparisons) {
        const kind = isOutput(c) ? "outputs" : "gradients";
        const tolerance = PARITY_TOLERANCE[kind];
        const denominator = Math.max(c.scale, 0.01 * global[kind]);
        worst[kind] = Math.max(worst[kind], c.error / denominator);
        const torchKind = kind === "outputs" ? "torch32Outputs" : "torch32Gradients";
        worst[torchKind] = Math.max(worst[torchKind], c.torch32Error / denominator);
        if (!(c.error <= tolerance.relative * c.scale + tolerance.floor * global[kind])) {
          failures.push(
            `${c.name}: max |ours - torch| = ${c.error.toExponential(2)} (max |torch| ${c.scale.toExponential(2)})`,
          );
        }
      }
      const e = (value: number) => value.toExponential(2);
      console.log(
        `parity ${label}: ${comparisons.length} tensors vs torch float64; worst relative error: ours ` +
          `outputs ${e(worst.outputs)}, gradients ${e(worst.gradients)}; torch float32 outputs ` +
          `${e(worst.torch32Outputs)}, gradients ${e(worst.torch32Gradients)}`,
      );
      expect(failures).toEqual([]);
      model.dispose();
    },
  );
});

describe("layout against the independent derivation", () => {
  const count = (args: string[]) =>
    JSON.parse(execFileSync(PYTHON, [SCRIPT, "count", ...args], { encoding: "utf8" })) as {
      text_encoder: number;
      unet: number;
      total: number;
      tensors: number;
    };

  for (const name of ["phantom-small", "phantom-base"] as const) {
    it(`${name}: our modules' names, shapes and counts are the ones torch_reference.py derives`, async () => {
      const gpu = await defaultGpu();
      const config = diffusionConfig(name);
      const tokenizer = WordTokenizer.fromPrompts(PROMPTS, { maxLength: config.textEncoder.maxPositions });
      const model = createDiffusionModel(gpu, config, tokenizer, 1);
      const dir = join(folder, name);
      await model.save(dir);
      const derived = count(["--config", dir, "--model", dir]);
      const ours = model.parameterCounts();
      expect(derived).toMatchObject({ text_encoder: ours.textEncoder, unet: ours.unet, total: ours.total });
      expect(derived.tensors).toBe(model.parameters().length);
      model.dispose();
    });
  }

  it("sd2-base: the derived layout has Stable Diffusion 2.x's published sizes", () => {
    const file = join(folder, "sd2-base.json");
    writeFileSync(file, JSON.stringify(diffusionConfig("sd2-base")));
    // stabilityai/stable-diffusion-2-1-base: unet 865,910,724 parameters in 686 tensors; text_encoder
    // (OpenCLIP ViT-H/14 to its penultimate layer) 340,387,840 in 23 x 16 + 4 = 372 tensors.
    expect(count(["--config", file])).toMatchObject({
      text_encoder: 340_387_840,
      unet: 865_910_724,
      tensors: 686 + 372,
    });
  });

  it("the script refuses a checkpoint whose layout differs, listing each difference", async () => {
    const gpu = await defaultGpu();
    const config = diffusionConfig("phantom-tiny");
    const tokenizer = WordTokenizer.fromPrompts(PROMPTS, { maxLength: config.textEncoder.maxPositions });
    const model = createDiffusionModel(gpu, config, tokenizer, 1);
    const dir = join(folder, "tiny-layout");
    await model.save(dir);
    model.dispose();
    const other = { ...config, unet: { ...config.unet, layersPerBlock: 2 } };
    const file = join(folder, "tiny-2-layers.json");
    writeFileSync(file, JSON.stringify(other));
    let stderr = "";
    try {
      execFileSync(PYTHON, [SCRIPT, "count", "--config", file, "--model", dir], {
        stdio: ["ignore", "pipe", "pipe"],
      });
    } catch (error) {
      const failed = error as { status: number; stderr: Buffer };
      expect(failed.status).toBe(2);
      stderr = failed.stderr.toString();
    }
    expect(stderr).toMatch(/does not match the layout derived from config.json/);
    expect(stderr).toMatch(/missing "down_blocks.0.resnets.1.conv1.weight" \[16, 16, 3, 3\]/);
    expect(stderr).toMatch(
      /"up_blocks.0.resnets.1.conv1.weight" is \[32, 48, 3, 3\], the config gives \[32, 64, 3, 3\]/,
    );
  });
});
