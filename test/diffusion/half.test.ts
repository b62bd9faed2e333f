/**
 * Half-precision generation (`--precision f16`): the text encoder, the UNet and (diffusers folders)
 * the VAE with f16 weights and activations on the f16 kernels, against the same generation in f32.
 * - our shipped phantom model (models/phantom-diffusion, phantom-small, 32 px): text states and
 *   images from the same seed and sampler in f32 and f16; the f16 model holds half the weight bytes;
 * - a tiny SD-2.x diffusers folder (reference/sd_reference.py sd-folder, the pretrained parity test's
 *   folder): text encoder output, VAE decode and encode, and a whole generation (latents and decoded
 *   images) f16 vs f32 from the same inputs; the pool's in-use bytes after a latent generation (also
 *   one whose onStep throws) equal those before, at both precisions, and the loop ends every step;
 * - `cxr generate --precision f16` prints the precision and the pool memory; an adapter without
 *   shader-f16 (the real device with the feature hidden) is refused with a clear message.
 * Tolerances: f16 rounds weights and every stored activation to 11 significant bits (2^-11 relative
 * each), and a UNet applies ~100 such roundings in sequence whose errors partly cancel; the test
 * bounds the f16-vs-f32 difference by a stated fraction of the output range (below) and requires it
 * to be far below what changing the seed does, so it cannot pass with a broken f16 path.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createPipeline, type GenerationMetadata } from "@cxr/diffusion";
import { registerCommands } from "@cxr/diffusion/cli";
import {
  generateLatent,
  loadPretrainedComponents,
  type PretrainedComponents,
} from "@cxr/diffusion/pretrained";
import { type Gpu, matmul, noGrad, scale, Tensor, tidy, uploadTokens } from "@cxr/kernels";
import { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { gpu, randomValues } from "../kernels/helpers.ts";

const MODEL = resolve(import.meta.dirname, "../../models/phantom-diffusion");
const PYTHON = "/usr/bin/python3";
const SCRIPT = join(import.meta.dirname, "../../packages/diffusion/reference/sd_reference.py");
const scratch = mkdtempSync(join(tmpdir(), "cxr-half-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The real device with `shader-f16` hidden. */
function withoutHalf(device: Gpu): Gpu {
  return Object.create(device, {
    features: { value: new Set([...device.features].filter((feature) => feature !== "shader-f16")) },
  });
}

function differences(a: ArrayLike<number>, b: ArrayLike<number>): { max: number; mean: number } {
  let max = 0;
  let total = 0;
  for (let index = 0; index < a.length; index++) {
    const difference = Math.abs(a[index] - b[index]);
    max = Math.max(max, difference);
    total += difference;
  }
  return { max, mean: total / a.length };
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;

describe("--precision f16 on the shipped phantom model", async () => {
  const device = await gpu();
  const itHalf = device.features.has("shader-f16") ? it : it.skip;

  itHalf(
    "f16 images match f32 within 0.02 max / 0.003 mean (pixels in [0, 1]); half the weight bytes (text encoder and UNet), a lower pool peak; text states within 1%",
    async () => {
      const options = {
        prompt: "70 year old female. Cardiomegaly.",
        n: 2,
        steps: 8,
        sampler: "ddim" as const,
        guidance: 3,
        seed: 3,
      };
      // One pipeline at a time, so the pool's bytes at the start of a generation are its weights.
      const run = async (precision: "f32" | "f16") => {
        const before = device.pool.snapshot().inUseBytes;
        const pipeline = await createPipeline(MODEL, { gpu: device, precision });
        try {
          expect(pipeline.precision).toBe(precision);
          expect(pipeline.model.unet.convIn.weight.dtype).toBe(precision);
          expect(pipeline.model.textEncoder.precision).toBe(precision);
          expect(new Set(pipeline.model.parameters().map((t) => t.dtype))).toEqual(new Set([precision]));
          const { model } = pipeline;
          const weightBytes = model.parameters().reduce((total, t) => total + t.byteLength, 0);
          const states = await noGrad(() => tidy(() => model.encodePrompts(texts).hiddenStates)).download();
          const result = await pipeline.generate(options);
          const otherSeed = precision === "f32" ? await pipeline.generate({ ...options, seed: 4 }) : null;
          const parameters = model.parameterCounts().total;
          const tensors = model.parameters().length;
          return { result, otherSeed, weightBytes, parameters, tensors, before, states };
        } finally {
          pipeline.dispose();
        }
      };
      const texts = ["", options.prompt, "45 year old male. Pleural Effusion. Support Devices."];
      // The first matmul on a device makes the kernels' per-device stand-in tensors (512 B, kept for
      // the device's life): make them before measuring, so both runs start from the same pool.
      matmul(Tensor.zeros(device, [1, 1]), Tensor.zeros(device, [1, 1])).release();
      const full = await run("f32");
      const half = await run("f16");
      expect(full.weightBytes).toBe(4 * full.parameters);
      // f16: 2 bytes per parameter, each tensor's buffer rounded up to 4 bytes.
      expect(half.weightBytes).toBeLessThan(2 * half.parameters + 1000);
      // The text encoder's last hidden state (after its final layer norm: values of order 1): f16
      // rounds weights and each stored activation to 11 significant bits through 2 layers; bound the
      // difference by 1% of the states' largest magnitude and its mean by 0.1%.
      const stateRange = full.states.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const statesDiff = differences(half.states, full.states);
      expect(statesDiff.max).toBeGreaterThan(0); // the f16 kernels ran
      expect(statesDiff.max).toBeLessThan(0.01 * stateRange);
      expect(statesDiff.mean).toBeLessThan(0.001 * stateRange);
      const pixels = (result: typeof full.result) => result.images.flatMap((image) => [...image.pixels]);
      const halfVsFull = differences(pixels(half.result), pixels(full.result));
      const seedVsSeed = differences(pixels(full.otherSeed ?? full.result), pixels(full.result));
      const f32 = full.result.memory;
      const f16 = half.result.memory;
      console.log(
        `phantom-small 32 px, 8 DDIM steps, guidance 3, 2 images: text states f16 vs f32 max |diff| ${statesDiff.max.toExponential(2)}, mean ${statesDiff.mean.toExponential(2)} (range ${stateRange.toFixed(2)}); pixels max |diff| ${halfVsFull.max.toExponential(2)}, mean ${halfVsFull.mean.toExponential(2)} (another seed: mean ${seedVsSeed.mean.toExponential(2)}); ` +
          `weights (text encoder + UNet) f32 ${mib(full.weightBytes)}, f16 ${mib(half.weightBytes)}; pool at the start f32 ${mib(f32.startBytes - full.before)}, f16 ${mib(f16.startBytes - half.before)}; peak f32 ${mib(f32.peakBytes - full.before)}, f16 ${mib(f16.peakBytes - half.before)}`,
      );
      expect(halfVsFull.max).toBeGreaterThan(0); // the f16 kernels ran (f32 would be bit-identical)
      expect(halfVsFull.max).toBeLessThan(0.02);
      expect(halfVsFull.mean).toBeLessThan(0.003);
      expect(halfVsFull.mean).toBeLessThan(seedVsSeed.mean / 10);
      expect(half.result.images[0].metadata.precision).toBe("f16");
      expect(full.result.images[0].metadata.precision).toBe("f32");
      // The pool at the start holds the weights and the same few f32 constants at both precisions
      // (the UNet's timestep frequencies, the text encoder's causal mask and position ids), so the
      // f16 pipeline saves exactly the weight bytes it halves; the report names each component.
      const saved = f32.startBytes - full.before - (f16.startBytes - half.before);
      const reported = (m: typeof f32) => m.weights.textEncoder + m.weights.unet;
      expect(saved).toBe(reported(f32) - reported(f16));
      // Pool bytes: each tensor's buffer in its size class (256 B multiples below 1 MiB).
      expect(reported(f32)).toBeGreaterThanOrEqual(full.weightBytes);
      expect(reported(f32)).toBeLessThan(full.weightBytes * 1.125 + 256 * full.tensors);
      expect(f16.weights.unet).toBeLessThan(f32.weights.unet / 1.9);
      expect(f16.weights.textEncoder).toBeLessThan(f32.weights.textEncoder / 1.9);
      expect(f16.peakBytes - half.before).toBeLessThan(f32.peakBytes - full.before);
    },
    900_000,
  );

  itHalf(
    "cxr generate --precision f16 writes the images and prints the precision and the pool memory",
    async () => {
      const program = new Command("cxr").exitOverride();
      registerCommands(program, { bench: program.command("bench") });
      const lines: string[] = [];
      const log = vi.spyOn(console, "log").mockImplementation((...items: unknown[]) => {
        lines.push(items.join(" "));
      });
      const quiet = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
      const out = join(scratch, "cli");
      try {
        await program.parseAsync(
          ["generate", "--model", MODEL, "--prompt", "40 year old male. No Finding.", "--steps", "3"].concat([
            "--sampler",
            "ddim",
            "--precision",
            "f16",
            "--out",
            out,
          ]),
          { from: "user" },
        );
      } finally {
        log.mockRestore();
        quiet.mockRestore();
      }
      const text = lines.join("\n");
      expect(text).toMatch(
        /GPU pool: [\d.]+ MB in use at the start \(weights: text encoder [\d.]+ MB, UNet [\d.]+ MB; f16\), peak [\d.]+ MB during generation \(text encoder, UNet steps\)/,
      );
      const sidecar = JSON.parse(readFileSync(join(out, "image-0000.json"), "utf8")) as GenerationMetadata;
      expect(sidecar.precision).toBe("f16");
      const bad = new Command("cxr").exitOverride();
      registerCommands(bad, { bench: bad.command("bench") });
      const silent = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
      try {
        await expect(
          bad.parseAsync(["generate", "--model", MODEL, "--prompt", "x", "--precision", "f8", "--out", out], {
            from: "user",
          }),
        ).rejects.toThrow(/--precision.*f8.*is invalid.*f32, f16/);
      } finally {
        silent.mockRestore();
      }
    },
    900_000,
  );
});

describe("--precision f16 on a tiny SD-2.x diffusers folder", async () => {
  const device = await gpu();
  const itHalf = device.features.has("shader-f16") ? it : it.skip;
  const folder = join(scratch, "sd");
  beforeAll(() => {
    execFileSync(PYTHON, [SCRIPT, "sd-folder", folder, "--seed", "5"], { encoding: "utf8" });
  }, 900_000);
  const prompts = [
    "a photo of a cat",
    "74 year old BLACK male. No acute intrathoracic abnormalities identified.",
  ];
  const dispose = (components: PretrainedComponents) => {
    components.textEncoder.dispose();
    components.unet.dispose();
    components.vae.dispose();
  };
  const maxAbs = (values: ArrayLike<number>) => {
    let largest = 0;
    for (let index = 0; index < values.length; index++) largest = Math.max(largest, Math.abs(values[index]));
    return largest;
  };

  itHalf(
    "text encoder, VAE decode and VAE encode in f16 match f32 from the same inputs (within 1% of the outputs' range)",
    async () => {
      const run = async (precision: "f32" | "f16") => {
        const components = loadPretrainedComponents(device, folder, { precision });
        try {
          expect(components.textEncoder.precision).toBe(precision);
          expect(components.vae.precision).toBe(precision);
          expect(new Set(components.vae.parameters().map((t) => t.dtype))).toEqual(new Set([precision]));
          const { tokenizer, textEncoder, vae, config } = components;
          const table = textEncoder.textModel.embeddings.tokenEmbedding.weight;
          const ids = tokenizer.encodeBatch(["", ...prompts]);
          const text = noGrad(() =>
            tidy(() => textEncoder.forward(uploadTokens(table, ids, [3, tokenizer.options.maxLength]))),
          );
          const side = config.unet.sampleSize;
          const latents = Float32Array.from(randomValues(2 * 4 * side * side, 21));
          const decoded = noGrad(() =>
            tidy(() =>
              vae.decode(
                scale(Tensor.upload(device, latents, [2, 4, side, side]), 1 / vae.config.scalingFactor),
              ),
            ),
          );
          const pixels = 8 * side;
          const images = Float32Array.from(randomValues(2 * 3 * pixels * pixels, 22));
          const { mean, logvar } = noGrad(() =>
            tidy(() => vae.encode(Tensor.upload(device, images, [2, 3, pixels, pixels]))),
          );
          for (const t of [text, decoded, mean, logvar]) expect(t.dtype).toBe("f32"); // f32 out at either precision
          const values = await Promise.all([text, decoded, mean, logvar].map((t) => t.download()));
          for (const t of [text, decoded, mean, logvar]) t.release();
          return values;
        } finally {
          dispose(components);
        }
      };
      const full = await run("f32");
      const half = await run("f16");
      const names = ["text encoder", "VAE decode", "VAE encode mean", "VAE encode logvar"];
      const lines = names.map((name, index) => {
        const range = maxAbs(full[index]);
        const diff = differences(half[index], full[index]);
        // f16 rounds weights and stored activations to 11 significant bits (2^-11 = 4.9e-4 each)
        // through a few layers whose errors partly cancel: bound the difference by 1% of the
        // output's largest magnitude (max) and 0.1% (mean); a kernel that dropped a term or kept a
        // sum in f16 would miss this by far, and 0 would mean the f16 path never ran.
        expect(diff.max, name).toBeGreaterThan(0);
        expect(diff.max, name).toBeLessThan(0.01 * range);
        expect(diff.mean, name).toBeLessThan(0.001 * range);
        return `${name} max |diff| ${diff.max.toExponential(2)}, mean ${diff.mean.toExponential(2)} (range ${range.toFixed(2)})`;
      });
      console.log(`tiny SD-2.x folder, f16 vs f32: ${lines.join("; ")}`);
    },
    900_000,
  );

  itHalf(
    "a whole f16 generation (text encoder, UNet, VAE in f16): latents within 2% of their range and images within 0.02 of f32",
    async () => {
      const run = async (precision: "f32" | "f16") => {
        const before = device.pool.snapshot().inUseBytes;
        const components = loadPretrainedComponents(device, folder, { precision });
        expect(components.unet.precision).toBe(precision);
        expect(components.textEncoder.precision).toBe(precision);
        expect(components.vae.precision).toBe(precision);
        const side = components.config.unet.sampleSize;
        const initial = Float32Array.from(randomValues(prompts.length * 4 * side * side, 11));
        try {
          const result = await generateLatent(components, {
            prompts,
            steps: 3,
            guidance: 3,
            initialLatents: initial,
          });
          return {
            ...result,
            weights: result.memory.startBytes - before,
            peak: result.memory.peakBytes - before,
          };
        } finally {
          dispose(components);
        }
      };
      const f32 = await run("f32");
      const f16 = await run("f16");
      const range = maxAbs(f32.latents);
      const latents = differences(f16.latents, f32.latents);
      const images = differences(f16.images, f32.images);
      const { weights } = f16.memory;
      console.log(
        `tiny SD-2.x folder, 3 PNDM steps, guidance 3: f16 vs f32 latents max |diff| ${latents.max.toExponential(2)} (range ${range.toFixed(2)}), images max ${images.max.toExponential(2)} mean ${images.mean.toExponential(2)}; ` +
          `pool f32 ${mib(f32.weights)} weights, peak ${mib(f32.peak)}; f16 ${mib(f16.weights)} weights (text encoder ${mib(weights.textEncoder)}, UNet ${mib(weights.unet)}, VAE ${mib(weights.vae ?? 0)}), peak ${mib(f16.peak)}`,
      );
      expect(latents.max).toBeGreaterThan(0);
      expect(latents.max).toBeLessThan(0.02 * range);
      expect(images.max).toBeGreaterThan(0);
      expect(images.max).toBeLessThan(0.02);
      // Every component's weights shrink: half the bytes, but each tensor's buffer is in a 256 B
      // pool size class, which the tiny VAE's and text encoder's many small biases and norms fill.
      for (const part of ["textEncoder", "unet", "vae"] as const) {
        expect(f16.memory.weights[part], part).toBeLessThan(0.6 * (f32.memory.weights[part] ?? 0));
      }
      const allWeights = (m: typeof f32.memory) =>
        m.weights.textEncoder + m.weights.unet + (m.weights.vae ?? 0);
      expect(f32.weights - f16.weights).toBe(allWeights(f32.memory) - allWeights(f16.memory));
      expect(f16.peak).toBeLessThan(f32.peak);
    },
    900_000,
  );

  it("a latent generation returns every buffer to the pool, also when onStep throws; it ends every step (f32 and f16)", async () => {
    const precisions = device.features.has("shader-f16") ? (["f32", "f16"] as const) : (["f32"] as const);
    for (const precision of precisions) {
      const components = loadPretrainedComponents(device, folder, { precision });
      const endStep = vi.spyOn(device, "endStep");
      try {
        // A first generation lets the kernels make what they keep per device (the matmul's stand-ins).
        await generateLatent(components, { prompts: prompts.slice(0, 1), steps: 1, guidance: 1 });
        const before = device.pool.snapshot().inUseBytes;
        endStep.mockClear();
        const done = await generateLatent(components, { prompts, steps: 3, guidance: 3, sampler: "pndm" });
        expect(endStep, precision).toHaveBeenCalledTimes(done.timesteps.length);
        expect(device.pool.snapshot().inUseBytes, `${precision}: after a generation`).toBe(before);
        const seen: number[] = [];
        await expect(
          generateLatent(components, {
            prompts,
            steps: 6,
            guidance: 3,
            sampler: "dpmpp-2m", // keeps a history of model outputs: released by sampler.reset()
            onStep: (step) => {
              seen.push(step);
              if (step === 3) throw new Error("stop here");
            },
          }),
        ).rejects.toThrow("stop here");
        expect(seen).toEqual([1, 2, 3]);
        expect(device.pool.snapshot().inUseBytes, `${precision}: after onStep threw`).toBe(before);
      } finally {
        endStep.mockRestore();
        dispose(components);
      }
    }
  }, 900_000);

  itHalf("an adapter without shader-f16 is refused before anything is loaded, with the way out", async () => {
    const fake = withoutHalf(device);
    const message =
      /precision f16 needs the adapter feature 'shader-f16', which .* lacks \(cxr doctor lists the features\); use --precision f32/;
    const before = device.pool.snapshot().inUseBytes;
    expect(() => loadPretrainedComponents(fake, folder, { precision: "f16" })).toThrow(message);
    expect(device.pool.snapshot().inUseBytes).toBe(before); // nothing was loaded
    await expect(createPipeline(MODEL, { gpu: fake, precision: "f16" })).rejects.toThrow(message);
    await expect(createPipeline(MODEL, { gpu: device, precision: "f8" as "f16" })).rejects.toThrow(
      'precision must be f32 or f16, got "f8"',
    );
  });
});
