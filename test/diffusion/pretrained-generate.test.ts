/**
 * Latent text-to-image with a tiny SD-2.x diffusers folder against diffusers' loop in plain torch
 * (reference/sd_reference.py sd-generate: tokenizer transliteration, torch_reference.py's text encoder
 * and UNet, PNDM transliterated from diffusers' PNDMScheduler, the VAE decoder): same initial
 * latents, 3 PNDM steps (4 UNet calls on the doubled batch, every PLMS history length up to 3),
 * guidance 3; final latents and decoded images compared, and the PNG checked.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { modelGenerate } from "@cxr/diffusion/cli-pretrained";
import { generateLatent, loadPretrainedComponents, rgbPng } from "@cxr/diffusion/pretrained";
import { readSafetensors, writeSafetensors } from "@cxr/kernels";
import sharp from "sharp";
import { afterAll, describe, expect, it, vi } from "vitest";
import { expectClose, gpu, randomValues } from "../kernels/helpers.ts";
import { temporaryFolder } from "./pretrained-helpers.ts";

const PYTHON = "/usr/bin/python3";
const SCRIPT = join(import.meta.dirname, "../../packages/diffusion/reference/sd_reference.py");
const scratch = temporaryFolder("generate");
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("latent generation from a diffusers folder", () => {
  it("matches diffusers' StableDiffusionPipeline loop in torch (PNDM, guidance 3)", async () => {
    const g = await gpu();
    const folder = join(scratch, "sd");
    execFileSync(PYTHON, [SCRIPT, "sd-folder", folder, "--seed", "5"], { encoding: "utf8" });
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
    let guidanceEffect = 0;
    for (let i = 0; i < torchLatents.length; i++)
      guidanceEffect = Math.max(guidanceEffect, Math.abs(unguided.latents[i] - torchLatents[i]));
    expect(guidanceEffect).toBeGreaterThan(1e-2);
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
    const lines: string[] = [];
    const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
      lines.push(String(chunk));
      return true;
    });
    const quiet = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    let written: string[];
    try {
      written = await modelGenerate(
        folder,
        { prompt: prompts, out: join(scratch, "out"), steps: 2, guidance: 3, seed: 4 },
        g,
      );
    } finally {
      spy.mockRestore();
      quiet.mockRestore();
    }
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
    expect(lines.join("")).toMatch(
      /2 images in [\d.]+ s \(weights loaded in [\d.]+ s\); GPU pool: \d+ MB of weights, peak \d+ MB/,
    );
  });
});
