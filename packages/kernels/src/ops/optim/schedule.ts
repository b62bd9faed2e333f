/** The cosine learning-rate schedule with linear warm-up (CPU only). */

export interface CosineScheduleConfig {
  baseLearningRate: number;
  warmupSteps: number;
  totalSteps: number;
  /** Half-waves of the cosine over the decay phase; 0.5 decays once from base to zero. */
  cycles: number;
}

export const COSINE_SCHEDULE_DEFAULTS: Readonly<Omit<CosineScheduleConfig, "totalSteps">> = {
  baseLearningRate: 1e-5,
  warmupSteps: 500,
  cycles: 0.5,
};

/**
 * The learning rate at optimizer step `step` (0-based), as diffusers'
 * get_cosine_schedule_with_warmup: linear from 0 over the warm-up, then
 * base * max(0, (1 + cos(2 pi cycles progress)) / 2). Like PyTorch's LambdaLR, step 0 has rate 0.
 */
export function cosineLearningRate(
  step: number,
  config: Partial<CosineScheduleConfig> & Pick<CosineScheduleConfig, "totalSteps">,
): number {
  const { baseLearningRate, warmupSteps, totalSteps, cycles } = { ...COSINE_SCHEDULE_DEFAULTS, ...config };
  if (!Number.isInteger(step) || step < 0)
    throw new RangeError(`cosineLearningRate: step ${step} must be an integer >= 0`);
  if (!Number.isInteger(totalSteps) || totalSteps < 1 || !Number.isInteger(warmupSteps) || warmupSteps < 0) {
    throw new RangeError(
      `cosineLearningRate: totalSteps (${totalSteps}) must be an integer >= 1 and warmupSteps (${warmupSteps}) an integer >= 0`,
    );
  }
  if (step < warmupSteps) return (baseLearningRate * step) / Math.max(1, warmupSteps);
  const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
  return baseLearningRate * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * progress)));
}
