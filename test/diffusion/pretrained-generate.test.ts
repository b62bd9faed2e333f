/**
 * Latent text-to-image with a tiny SD-2.x diffusers folder against diffusers' loop in plain torch
 * (reference/sd_reference.py sd-generate: tokenizer transliteration, torch_reference.py's text encoder
 * and UNet, PNDM transliterated from diffusers' PNDMScheduler, the VAE decoder): same initial
 * latents, 3 PNDM steps (4 UNet calls on the doubled batch, every PLMS history length up to 3),
 * guidance 3; final latents and decoded images compared, and the PNG checked. Then `cxr generate
 * --model FOLDER` (the one generate command, which detects the diffusers folder) with RoentGen-v2's
 * defaults, demographics flags, n, batch and 16-bit PNGs, and `cxr model generate` (its alias).
 */
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { registerCommands } from "@cxr/diffusion/cli";
import { modelGenerate } from "@cxr/diffusion/cli-pretrained";
import { generateLatent, loadPretrainedComponents, rgbPng } from "@cxr/diffusion/pretrained";
import { readSafetensors, writeSafetensors } from "@cxr/kernels";
import { Command } from "commander";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { captureOutput } from "../capture.ts";
import { expectClose, gpu, randomValues } from "../kernels/helpers.ts";
import { temporaryFolder } from "./pretrained-helpers.ts";

const PYTHON = "/usr/bin/python3";
const SCRIPT = join(import.meta.dirname, "../../packages/diffusion/reference/sd_reference.py");
const scratch = temporaryFolder("generate");
const folder = join(scratch, "sd");
beforeAll(() => {
  execFileSync(PYTHON, [SCRIPT, "sd-folder", folder, "--seed", "5"], { encoding: "utf8" });
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("latent generation from a diffusers folder", () => {
  it("matches diffusers' StableDiffusionPipeline loop in torch (PNDM, guidance 3)", async () => {
    const g = await gpu();
    const components = loadPretrainedComponents(g, folder);
    const prompts = [
      "a photo of a cat",
      "74 year old BLACK male. No acute intrathoracic abnormalities identified.",
    ];
    const side = components.config.unet.sampleSize;
    const initial = Float32Array.from(randomValues(prompts.length * 4 * side * side, 11));
    const inputs = join(scratch, "inputs.safetensors");
    writeSafetensors(
      inputs,
      { latents: { shape: [prompts.length, 4, side, side], data: initial } },
      { prompts: JSON.stringify(prompts) },
    );
    const ours = await generateLatent(components, {
      prompts,
      steps: 3,
      guidance: 3,
      initialLatents: initial,
    });
    const out = join(scratch, "torch.safetensors");
    const printed = JSON.parse(
      execFileSync(PYTHON, [SCRIPT, "sd-generate", folder, inputs, out, "--steps", "3", "--guidance", "3"], {
        encoding: "utf8",
      }),
    ) as { timesteps: number[] };
    expect(ours.timesteps).toEqual(printed.timesteps);
    expect(ours.timesteps).toEqual([667, 334, 334, 1]);
    const reference = readSafetensors(out).tensors;
    const torchLatents = reference.get("latents")?.data ?? new Float32Array();
    const torchImages = reference.get("images")?.data ?? new Float32Array();
    let latentError = 0;
    let imageError = 0;
    for (let i = 0; i < torchLatents.length; i++)
      latentError = Math.max(latentError, Math.abs(ours.latents[i] - torchLatents[i]));
    for (let i = 0; i < torchImages.length; i++)
      imageError = Math.max(imageError, Math.abs(ours.images[i] - torchImages[i]));
    console.log(
      `latent generation vs torch: latents max |diff| ${latentError.toExponential(2)}, images ${imageError.toExponential(2)}`,
    );
    expect(ours.latentShape).toEqual([2, 4, side, side]);
    expect(ours.imageShape).toEqual([2, 3, 8 * side, 8 * side]);
    expectClose(ours.latents, torchLatents, { atol: 1e-4, rtol: 1e-4 }, "final latents");
    expectClose(ours.images, torchImages, { atol: 1e-4, rtol: 1e-4 }, "decoded images");
    // The guidance matters: without it the latents differ by far more than the tolerance.
    const unguided = await generateLatent(components, {
      prompts,
      steps: 3,
      guidance: 1,
      initialLatents: initial,
    });
    /** The largest |a - b| over two latents of one shape. */
    const largestDifference = (a: Float32Array, b: Float32Array) =>
      a.reduce((largest, value, i) => Math.max(largest, Math.abs(value - b[i])), 0);
    /** The torch loop's final latents for `inputsFile` with extra sd-generate flags. */
    const torchRun = (name: string, inputsFile: string, flags: string[] = []) => {
      const path = join(scratch, `torch-${name}.safetensors`);
      const args = [SCRIPT, "sd-generate", folder, inputsFile, path, "--steps", "3", "--guidance", "3"];
      execFileSync(PYTHON, args.concat(flags), { encoding: "utf8" });
      return readSafetensors(path).tensors.get("latents")?.data ?? new Float32Array();
    };
    expect(largestDifference(unguided.latents, torchLatents)).toBeGreaterThan(1e-2);
    // Guidance rescale (diffusers' rescale_noise_cfg) against the same loop in torch with it.
    const rescaled = await generateLatent(components, {
      prompts,
      steps: 3,
      guidance: 3,
      guidanceRescale: 0.7,
      initialLatents: initial,
    });
    const torchRescaled = torchRun("rescaled", inputs, ["--guidance-rescale", "0.7"]);
    expectClose(rescaled.latents, torchRescaled, { atol: 1e-4, rtol: 1e-4 }, "latents, guidance rescale 0.7");
    expect(largestDifference(torchRescaled, torchLatents)).toBeGreaterThan(1e-3);
    // A negative prompt per prompt (diffusers' negative_prompt: the unconditional rows' text) against
    // the same loop in torch fed the same negatives.
    const negativePrompts = ["a photo of a dog", "74 year old BLACK male."];
    const away = await generateLatent(components, {
      prompts,
      negativePrompts,
      steps: 3,
      guidance: 3,
      initialLatents: initial,
    });
    const negativeInputs = join(scratch, "inputs-negative.safetensors");
    writeSafetensors(
      negativeInputs,
      { latents: { shape: [prompts.length, 4, side, side], data: initial } },
      { prompts: JSON.stringify(prompts), negative_prompts: JSON.stringify(negativePrompts) },
    );
    const torchNegative = torchRun("negative", negativeInputs);
    expectClose(away.latents, torchNegative, { atol: 1e-4, rtol: 1e-4 }, "latents, negative prompts");
    expect(largestDifference(torchNegative, torchLatents)).toBeGreaterThan(1e-3);
    await expect(generateLatent(components, { prompts, negativePrompts: ["one"] })).rejects.toThrow(
      'generateLatent: negativePrompts must be 2 texts, one per prompt, got ["one"]',
    );
    await expect(generateLatent(components, { prompts, guidanceRescale: 2 })).rejects.toThrow(
      "generateLatent: guidance rescale must be a number in [0, 1], got 2",
    );
    const png = await rgbPng(ours.images, ours.imageShape, 1);
    const meta = await sharp(png).metadata();
    expect([meta.width, meta.height, meta.channels, meta.format]).toEqual([8 * side, 8 * side, 3, "png"]);
    await expect(
      generateLatent(components, { prompts, initialLatents: new Float32Array(3) }),
    ).rejects.toThrow(/initialLatents has 3 values/);
    components.textEncoder.dispose();
    components.unet.dispose();
    components.vae.dispose();

    // The command: PNG + JSON per prompt, timing and GPU memory printed.
    const { result: written, text: commandOutput } = await captureOutput(
      () =>
        modelGenerate(
          folder,
          { prompt: prompts, out: join(scratch, "out"), steps: 2, guidance: 3, seed: 4 },
          g,
        ),
      { quietStderr: true },
    );
    expect(written).toEqual([join(scratch, "out", "image-0000.png"), join(scratch, "out", "image-0001.png")]);
    expect((await sharp(readFileSync(written[1])).metadata()).width).toBe(8 * side);
    const sidecar = JSON.parse(readFileSync(written[1].replace(".png", ".json"), "utf8"));
    expect(sidecar).toMatchObject({
      prompt: prompts[1],
      index: 1,
      seed: 4,
      sampler: "pndm",
      steps: 2,
      guidance: 3,
    });
    expect(sidecar.timesteps).toEqual([501, 1, 1]);
    expect(commandOutput).toMatch(
      /2 images \(pndm, 2 steps, guidance 3\) in [\d.]+ s \(weights loaded in [\d.]+ s\); GPU pool: [\d.]+ MB in use at the start \(weights: text encoder [\d.]+ MB, UNet [\d.]+ MB, VAE [\d.]+ MB; f32\), peak [\d.]+ MB during generation \(text encoder, UNet steps, VAE decode\)/,
    );
  });

  /** Runs `cxr generate ARGS` in this process (the shared adapter); returns what it printed. */
  async function cxr(args: string[]): Promise<string> {
    const program = new Command("cxr").exitOverride();
    registerCommands(program, { bench: program.command("bench") });
    const { text } = await captureOutput(() => program.parseAsync(args, { from: "user" }), {
      quietStderr: true,
    });
    return text;
  }

  const sidecarOf = (path: string) => JSON.parse(readFileSync(path.replace(/\.png$/, ".json"), "utf8"));

  it("cxr generate --model <diffusers folder>: RoentGen-v2's defaults, demographics, n, batch, 16-bit", async () => {
    const side = 8 * 8; // the sd-folder UNet's sample_size 8 x the VAE's factor 8
    // Defaults: 75 PNDM steps (76 UNet calls), guidance 3, the folder's size, 8-bit RGB.
    const defaults = join(scratch, "defaults");
    const printed = await cxr([
      "generate",
      "--model",
      folder,
      "--prompt",
      "a photo of a cat",
      "--out",
      defaults,
    ]);
    expect(printed).toMatch(/^prompt: a photo of a cat\n1 images \(pndm, 75 steps, guidance 3\) in /);
    const first = sidecarOf(join(defaults, "image-0000.png"));
    expect(first).toMatchObject({
      prompt: "a photo of a cat",
      sampler: "pndm",
      steps: 75,
      guidance: 3,
      bits: 8,
      size: side,
      seed: 1,
    });
    expect(first.timesteps.slice(0, 4)).toEqual([963, 950, 950, 937]);
    expect(first.timesteps).toHaveLength(76);
    const meta8 = await sharp(readFileSync(join(defaults, "image-0000.png"))).metadata();
    expect([meta8.width, meta8.channels, meta8.depth]).toEqual([side, 3, "uchar"]);

    // Demographics flags, n = 2 in batches of 1, DDIM, 16-bit; then the same prompt as text in one batch of 2.
    const byOne = join(scratch, "by-one");
    const text = await cxr([
      "generate",
      "--model",
      folder,
      "--sex",
      "F",
      "--age",
      "70",
      "--findings",
      "Cardiomegaly",
      "--n",
      "2",
      "--batch",
      "1",
      "--steps",
      "3",
      "--sampler",
      "ddim",
      "--guidance",
      "2",
      "--seed",
      "9",
      "--bits",
      "16",
      "--out",
      byOne,
    ]);
    expect(text).toContain("prompt: 70 year old female. Cardiomegaly.");
    expect(text).toContain("2 images (ddim, 3 steps, guidance 2)");
    const second = sidecarOf(join(byOne, "image-0001.png"));
    expect(second).toMatchObject({
      prompt: "70 year old female. Cardiomegaly.",
      index: 1,
      n: 2,
      batch: 1,
      bits: 16,
      sampler: "ddim",
    });
    expect(second.noise).toContain(`offset ${4 * 8 * 8}`);
    const meta16 = await sharp(readFileSync(join(byOne, "image-0001.png"))).metadata();
    expect([meta16.width, meta16.channels, meta16.depth]).toEqual([side, 3, "ushort"]);
    const together = join(scratch, "together");
    await cxr([
      "generate",
      "--model",
      folder,
      "--prompt",
      "70 year old female. Cardiomegaly.",
      "--n",
      "2",
      "--steps",
      "3",
      "--sampler",
      "ddim",
      "--guidance",
      "2",
      "--seed",
      "9",
      "--bits",
      "16",
      "--out",
      together,
    ]);
    // Image 1 does not depend on the batching (to f32 rounding: batched kernels sum in another order).
    const a = await sharp(readFileSync(join(byOne, "image-0001.png")))
      .raw({ depth: "ushort" })
      .toBuffer();
    const b = await sharp(readFileSync(join(together, "image-0001.png")))
      .raw({ depth: "ushort" })
      .toBuffer();
    const wordsA = new Uint16Array(a.buffer, a.byteOffset, a.byteLength / 2);
    const wordsB = new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2);
    let largest = 0;
    for (let i = 0; i < wordsA.length; i++) largest = Math.max(largest, Math.abs(wordsA[i] - wordsB[i]));
    expect(largest).toBeLessThanOrEqual(2);
    // ... and the two images of a request differ (different noise offsets).
    const c = await sharp(readFileSync(join(together, "image-0000.png")))
      .raw({ depth: "ushort" })
      .toBuffer();
    expect(Buffer.compare(b, c)).not.toBe(0);

    // Bad input: contact sheets are for our own models; --variant for diffusers folders; a bad sampler.
    await expect(cxr(["generate", "--model", folder, "--grid", "--out", join(scratch, "x")])).rejects.toThrow(
      /is a diffusers folder: --grid and --prompts/,
    );
    await expect(
      cxr([
        "generate",
        "--model",
        scratch,
        "--prompt",
        "x",
        "--variant",
        "fp16",
        "--out",
        join(scratch, "x"),
      ]),
    ).rejects.toThrow(/--variant is for diffusers folders; .* has no model_index.json/);
    await expect(
      modelGenerate(folder, { prompt: ["x"], out: join(scratch, "x"), seed: 0, sampler: "euler" }),
    ).rejects.toThrow(/sampler must be one of ddpm, ddim, pndm, dpmpp-2m, got "euler"/);
  });
});
