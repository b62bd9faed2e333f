/**
 * The scheduler settings of a model configuration: its training betas, its prediction type, and
 * SD 2.1's sampling conventions ("leading" spacing, steps_offset 1, abar_0 after the last step).
 * Pixel-space models clamp the predicted x_0 to the image range [-1, 1] in DDPM and DDIM (diffusers'
 * DDPMScheduler default, clip_sample True); latent models do not (SD's scheduler config).
 */
import type { DiffusionModelConfig } from "../model/config.ts";
import type { BetaScheduleConfig } from "./betas.ts";
import { type SchedulerConfig, STABLE_DIFFUSION_SCHEDULER } from "./samplers.ts";

export function betaScheduleOf(config: DiffusionModelConfig): BetaScheduleConfig {
  const { betaSchedule, betaStart, betaEnd, numTrainTimesteps } = config.schedule;
  return { kind: betaSchedule, betaStart, betaEnd, numTrainTimesteps };
}

export function schedulerConfigOf(config: DiffusionModelConfig): SchedulerConfig {
  return {
    ...STABLE_DIFFUSION_SCHEDULER,
    ...betaScheduleOf(config),
    predictionType: config.prediction,
    clipSample: config.space === "pixel",
    clipSampleRange: 1,
  };
}
