/**
 * One denoising step of classifier-free guided sampling, shared by the pixel-space pipeline
 * (pipeline.ts) and the latent pipeline of diffusers folders (pretrained/latent-pipeline.ts): the
 * UNet on the doubled batch [unconditional; conditional] (or the batch alone when guidance is 1),
 * guidance (optionally rescaled, `guidanceRescale`), the sampler's step.
 */
import { concat, noGrad, Tensor, tidy } from "@cxr/kernels";
import type { UNet2DConditionModel } from "../model/unet.ts";
import { classifierFreeGuidanceBatched, twoScaleGuidanceBatched } from "../schedule/guidance.ts";
import type { Sampler } from "../schedule/samplers.ts";

/**
 * How many text rows each image takes: three (empty, negative, conditional) when the negative prompt
 * has its own scale (negativeGuidance !== 1, `twoScaleGuidanceBatched`), two (negative or empty, then
 * conditional) when guided (guidance !== 1), else one.
 */
export function guidanceRows(guidance: number, negativeGuidance = 1): 1 | 2 | 3 {
  if (negativeGuidance !== 1) return 3;
  return guidance !== 1 ? 2 : 1;
}

/**
 * The texts the text encoder reads for `guidanceRows` parts, in the order `denoisingStep` expects:
 * [empty; negative; conditional] for three, [negative; conditional] for two, the prompts for one.
 */
export function guidanceTexts(
  parts: 1 | 2 | 3,
  negatives: readonly string[],
  prompts: readonly string[],
): string[] {
  if (parts === 3) return [...new Array<string>(prompts.length).fill(""), ...negatives, ...prompts];
  return parts === 2 ? [...negatives, ...prompts] : [...prompts];
}

/**
 * The latents after timestep `t`. `context` holds the text states of `guidanceRows` parts in turn:
 * the unconditional prompts then the conditional ones when guided (guidance !== 1), the empty, the
 * negative and the conditional prompts when the negative prompt has its own scale
 * (negativeGuidance !== 1), else the prompts alone. `latents` is
 * released once the next latents exist; when anything throws it is left to the caller, and the
 * step's own temporaries (timesteps, UNet activations, the prediction) go back to the pool.
 */
export function denoisingStep(
  unet: UNet2DConditionModel,
  sampler: Sampler,
  latents: Tensor,
  t: number,
  context: Tensor,
  guidance: number,
  rescale = 0,
  negativeGuidance = 1,
): Tensor {
  const parts = guidanceRows(guidance, negativeGuidance);
  const rows = parts * latents.shape[0];
  // tidy releases the UNet's temporaries, the timesteps included, also when it throws.
  const epsilon = noGrad(() =>
    tidy(() => {
      const timesteps = Tensor.upload(latents.gpu, new Float32Array(rows).fill(t), [rows]);
      const input = parts === 1 ? latents : concat(new Array<Tensor>(parts).fill(latents), 0);
      const prediction = unet.forward(input, timesteps, context);
      if (parts === 3) return twoScaleGuidanceBatched(prediction, negativeGuidance, guidance, rescale);
      return parts === 2 ? classifierFreeGuidanceBatched(prediction, guidance, rescale) : prediction;
    }),
  );
  let next: Tensor;
  try {
    next = sampler.step(epsilon, t, latents);
  } finally {
    epsilon.release();
  }
  latents.release();
  return next;
}
