/**
 * Text-to-image in latent space with a published Stable Diffusion folder, as diffusers'
 * StableDiffusionPipeline runs it: prompts (and the negative prompts, "" by default, for the unconditional branch) -> CLIP tokenizer ->
 * text encoder -> initial latents N(0, 1) [B, 4, h, w] -> per timestep: UNet on the doubled batch,
 * classifier-free guidance, sampler step (the folder's scheduler class and settings) -> latents /
 * scaling_factor -> VAE decode -> images in [0, 1] -> RGB PNG.
 */
import { Generator, type Gpu, noGrad, randomNormal, scale, Tensor, tidy, uploadTokens } from "@cxr/kernels";
import sharp from "sharp";
import { denoisingStep, guidanceRows, guidanceTexts } from "../pipeline/denoise.ts";
import { type GenerationMemory, weightBytes } from "../pipeline/memory.ts";
import { GUIDANCE_DEFAULTS } from "../schedule/guidance.ts";
import { createSampler, SAMPLING_DEFAULTS, type SamplerKind } from "../schedule/samplers.ts";
import type { PretrainedComponents } from "./wire.ts";

export interface LatentGenerateOptions {
  prompts: readonly string[];
  /** Inference steps (RoentGen-v2: 75). */
  steps?: number;
  /**
   * Classifier-free guidance scale in [0, 30]: eps_u + s (eps_c - eps_u) on the doubled batch; 1 runs
   * the conditional half alone (one UNet call per step), 0 is unconditional. (diffusers turns guidance
   * off for any s <= 1; here s < 1 is applied as the formula, like the pixel-space pipeline.)
   */
  guidance?: number;
  /** Guidance rescale phi in [0, 1] (diffusers' `guidance_rescale`; default 0: off). */
  guidanceRescale?: number;
  /**
   * The unconditional rows' texts (diffusers' `negative_prompt`), one per prompt; default "" for
   * each (the empty prompt). Unused when guidance is 1.
   */
  negativePrompts?: readonly string[];
  /** The sampler; default: the folder's scheduler class. */
  sampler?: SamplerKind;
  /** Seed of the initial latents (Philox normal) and of DDPM's noise. */
  seed?: number;
  /**
   * Index of the first image in a larger request (default 0): image i's initial latents are the
   * Philox stream of `seed` at offset i * C * h * w, so an image does not depend on how a request
   * is split into batches (the convention of the pixel-space pipeline too).
   */
  firstIndex?: number;
  /** Initial latents [B * 4 * h * w] instead of drawing them (diffusers' `latents` argument). */
  initialLatents?: Float32Array;
  onStep?: (step: number, steps: number) => void;
  onWarning?: (message: string) => void;
}

export interface LatentGenerateResult {
  /** Final latents [B, C, h, w] (before 1 / scaling_factor). */
  latents: Float32Array;
  latentShape: [number, number, number, number];
  /** Decoded images [B, 3, H, W] mapped to [0, 1] (diffusers' `image / 2 + 0.5`, clamped). */
  images: Float32Array;
  imageShape: [number, number, number, number];
  timesteps: number[];
  seconds: number;
  /**
   * GPU memory from the buffer pool (tensors; kernels' private scratch textures not included): in
   * use when generation started (the weights), the peak over the whole generation (text encoder,
   * every UNet step, the VAE decode), and each component's weight bytes.
   */
  memory: GenerationMemory;
}

export async function generateLatent(
  components: PretrainedComponents,
  options: LatentGenerateOptions,
): Promise<LatentGenerateResult> {
  const { tokenizer, textEncoder, unet, vae, scheduler, config } = components;
  const gpu: Gpu = unet.gpu;
  const batch = options.prompts.length;
  if (batch < 1) throw new RangeError("generateLatent: no prompts");
  const guidance = options.guidance ?? GUIDANCE_DEFAULTS.scale;
  if (!(guidance >= 0 && guidance <= 30))
    throw new RangeError(`generateLatent: guidance must be a number in [0, 30], got ${guidance}`);
  const guidanceRescale = options.guidanceRescale ?? 0;
  if (!(guidanceRescale >= 0 && guidanceRescale <= 1))
    throw new RangeError(
      `generateLatent: guidance rescale must be a number in [0, 1], got ${guidanceRescale}`,
    );
  const negatives = options.negativePrompts ?? new Array<string>(batch).fill("");
  if (negatives.length !== batch || negatives.some((text) => typeof text !== "string")) {
    throw new RangeError(
      `generateLatent: negativePrompts must be ${batch} texts, one per prompt, got ${JSON.stringify(negatives)}`,
    );
  }
  const steps = options.steps ?? SAMPLING_DEFAULTS.inferenceSteps;
  const seed = options.seed ?? 0;
  const firstIndex = options.firstIndex ?? 0;
  if (!Number.isSafeInteger(firstIndex) || firstIndex < 0)
    throw new RangeError(`generateLatent: firstIndex must be a non-negative integer, got ${firstIndex}`);
  const channels = config.unet.inChannels;
  const side = config.unet.sampleSize;
  const latentShape: [number, number, number, number] = [batch, channels, side, side];
  const latentSize = batch * channels * side * side;
  if (options.initialLatents && options.initialLatents.length !== latentSize) {
    throw new RangeError(
      `generateLatent: initialLatents has ${options.initialLatents.length} values, [${latentShape.join(", ")}] needs ${latentSize}`,
    );
  }
  const started = performance.now();
  gpu.pool.resetPeak();
  const startBytes = gpu.pool.snapshot().inUseBytes;
  const generator = new Generator(gpu, seed + 1);
  const sampler = createSampler({
    kind: options.sampler ?? scheduler.kind,
    inferenceSteps: steps,
    config: scheduler.config,
    generator,
  });
  const texts = guidanceTexts(guidanceRows(guidance), negatives, options.prompts);
  const ids = tokenizer.encodeBatch(texts, options.onWarning);
  const table = textEncoder.textModel.embeddings.tokenEmbedding.weight;
  const timesteps = [...sampler.timesteps];
  // Every tensor of the generation goes back to the pool on every way out (onStep may throw: a
  // service cancelling at the next step): tidy releases each part's temporaries, the finally the
  // text states, the latents, the decoded images and the sampler's history.
  let context: Tensor | null = null;
  let latents: Tensor | null = null;
  let decoded: Tensor | null = null;
  let latentValues: Float32Array;
  let decodedValues: Float32Array;
  try {
    context = noGrad(() =>
      tidy(() => textEncoder.forward(uploadTokens(table, ids, [texts.length, tokenizer.options.maxLength]))),
    );
    const encoded = context;
    let current = options.initialLatents
      ? Tensor.upload(gpu, options.initialLatents, latentShape)
      : randomNormal(gpu, latentShape, seed, firstIndex * channels * side * side);
    latents = current;
    for (const [index, t] of timesteps.entries()) {
      current = denoisingStep(unet, sampler, current, t, encoded, guidance, guidanceRescale);
      latents = current;
      // A step boundary for the kernels runtime (Gpu.endStep: every few steps it drains the queue and
      // collects garbage, its workaround for a crash inside Dawn in long runs), as the pixel pipeline.
      await gpu.endStep();
      options.onStep?.(index + 1, timesteps.length);
    }
    const final = current;
    decoded = noGrad(() => tidy(() => vae.decode(scale(final, 1 / vae.config.scalingFactor))));
    [latentValues, decodedValues] = await Promise.all([final.download(), decoded.download()]);
  } finally {
    sampler.reset();
    context?.release();
    latents?.release();
    decoded?.release();
  }
  const peakBytes = gpu.pool.snapshot().peakInUseBytes;
  const images = Float32Array.from(decodedValues, (value) => Math.min(1, Math.max(0, value / 2 + 0.5)));
  const imageShape = decoded.shape as [number, number, number, number];
  return {
    latents: latentValues,
    latentShape,
    images,
    imageShape,
    timesteps,
    seconds: (performance.now() - started) / 1000,
    memory: {
      startBytes,
      peakBytes,
      weights: { textEncoder: weightBytes(textEncoder), unet: weightBytes(unet), vae: weightBytes(vae) },
    },
  };
}

/** One image [3, H, W] in [0, 1] (planar) as an 8-bit (default) or 16-bit RGB PNG. */
export async function rgbPng(
  images: Float32Array,
  shape: readonly number[],
  index: number,
  bits: 8 | 16 = 8,
): Promise<Buffer> {
  const [, channels, height, width] = shape;
  if (channels !== 3) throw new RangeError(`rgbPng: expects 3 channels, got ${channels}`);
  if (bits !== 8 && bits !== 16) throw new RangeError(`rgbPng: bits must be 8 or 16, got ${bits}`);
  const plane = height * width;
  const offset = index * 3 * plane;
  const top = bits === 16 ? 65535 : 255;
  // sharp infers 16-bit from a Uint16Array (a Buffer would be read as 8-bit).
  const interleaved = bits === 16 ? new Uint16Array(3 * plane) : new Uint8Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const value = Math.min(1, Math.max(0, images[offset + c * plane + p]));
      interleaved[3 * p + c] = Math.round(top * value);
    }
  }
  return sharp(interleaved, { raw: { width, height, channels: 3 } })
    .toColourspace(bits === 16 ? "rgb16" : "srgb")
    .png()
    .toBuffer();
}
