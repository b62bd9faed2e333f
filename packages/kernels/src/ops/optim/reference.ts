/**
 * Float64 references of the optimizers, a kind of their own (they update state in place rather than
 * map inputs to an output): one PyTorch AdamW step, torch.nn.utils.clip_grad_norm_, an EMA update.
 */
import type { AdamWConfig } from "./config.ts";

/** Float64 reference of one PyTorch AdamW step on one parameter, updating param, m and v in place. */
export const adamwReference = {
  step(
    parameter: Float64Array,
    gradient: Float64Array,
    firstMoment: Float64Array,
    secondMoment: Float64Array,
    step: number,
    config: Omit<AdamWConfig, "parameterNames">,
  ): void {
    const { learningRate, beta1, beta2, weightDecay, epsilon } = config;
    const biasCorrection1 = 1 - beta1 ** step;
    const biasCorrection2 = 1 - beta2 ** step;
    const stepSize = learningRate / biasCorrection1;
    for (let index = 0; index < parameter.length; index++) {
      parameter[index] *= 1 - learningRate * weightDecay;
      const g = gradient[index];
      firstMoment[index] += (g - firstMoment[index]) * (1 - beta1); // torch: exp_avg.lerp_(grad, 1 - beta1)
      secondMoment[index] = secondMoment[index] * beta2 + (1 - beta2) * g * g;
      const denominator = Math.sqrt(secondMoment[index]) / Math.sqrt(biasCorrection2) + epsilon;
      parameter[index] -= (stepSize * firstMoment[index]) / denominator;
    }
  },
};

/** Float64 reference of torch.nn.utils.clip_grad_norm_ (L2): scales the gradients in place, returns the norm. */
export const clipGradNormReference = {
  clip(gradients: Float64Array[], maxNorm: number): number {
    let total = 0;
    for (const gradient of gradients) for (const value of gradient) total += value * value;
    const norm = Math.sqrt(total);
    const factor = Math.min(1, maxNorm / (norm + 1e-6));
    for (const gradient of gradients)
      for (let index = 0; index < gradient.length; index++) gradient[index] *= factor;
    return norm;
  },
};

export const emaReference = {
  update(average: Float64Array, parameter: Float64Array, decay: number): void {
    for (let index = 0; index < average.length; index++) {
      average[index] -= (1 - decay) * (average[index] - parameter[index]);
    }
  },
};
