/** The optimizers' configurations and RoentGen-v2's defaults. */

export interface AdamWConfig {
  learningRate: number;
  beta1: number;
  beta2: number;
  weightDecay: number;
  epsilon: number;
  /** Names for the state keys (e.g. module paths); default "0", "1", ... in parameter order. */
  parameterNames?: readonly string[];
}

export const ADAMW_DEFAULTS: Readonly<AdamWConfig> = {
  learningRate: 1e-5,
  beta1: 0.9,
  beta2: 0.999,
  weightDecay: 1e-2,
  epsilon: 1e-8,
};

export interface EmaConfig {
  /** The decay the average approaches (diffusers' EMAModel default). */
  decay: number;
  /**
   * "diffusers": decay_n = min(decay, (1 + k) / (10 + k)) with k = n - 1 at the n-th update, so
   * the first update copies the parameters and early averages are not dominated by the
   * initialisation (diffusers' EMAModel, which RoentGen-v2's training script uses).
   * "constant": decay_n = decay.
   */
  schedule: "diffusers" | "constant";
  parameterNames?: readonly string[];
}

export const EMA_DEFAULTS: Readonly<EmaConfig> = { decay: 0.9999, schedule: "diffusers" };
