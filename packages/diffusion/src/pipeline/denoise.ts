/**
 * One denoising step of classifier-free guided sampling, shared by the pixel-space pipeline
 * (pipeline.ts) and the latent pipeline of diffusers folders (pretrained/latent-pipeline.ts): the
 * UNet on the doubled batch [unconditional; conditional] (or the batch alone when guidance is 1),
 * guidance (optionally rescaled, `guidanceRescale`), the sampler's step.
 */
import { concat, noGrad, Tensor, tidy } from "@cxr/kernels";
import type { UNet2DConditionModel } from "../model/unet.ts";
import { classifierFreeGuidanceBatched } from "../schedule/guidance.ts";
import type { Sampler } from "../schedule/samplers.ts";

/**
 * The latents after timestep `t`. `context` holds the text states of the unconditional prompts then
 * the conditional ones when guided (guidance !== 1), else of the prompts alone. `latents` is
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
): Tensor {
  const guided = guidance !== 1;
  const rows = guided ? 2 * latents.shape[0] : latents.shape[0];
  // tidy releases the UNet's temporaries, the timesteps included, also when it throws.
  const epsilon = noGrad(() =>
    tidy(() => {
      const timesteps = Tensor.upload(latents.gpu, new Float32Array(rows).fill(t), [rows]);
      const input = guided ? concat([latents, latents], 0) : latents;
      const prediction = unet.forward(input, timesteps, context);
      return guided ? classifierFreeGuidanceBatched(prediction, guidance, rescale) : prediction;
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
