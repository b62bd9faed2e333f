/**
 * Beta schedules of the forward diffusion process, as float64 arrays on the CPU, with the
 * cumulative products every sampler and the noising kernels use. Formulas follow diffusers
 * (`DDPMScheduler.__init__`), which computes in float32; float64 here differs from it by < 1e-6
 * relative, below what the f32 GPU kernels resolve.
 */

export type BetaScheduleKind = "linear" | "scaled_linear" | "squaredcos_cap_v2";

export interface BetaScheduleConfig {
  kind: BetaScheduleKind;
  numTrainTimesteps: number;
  /** First and last beta of "linear" and "scaled_linear" (unused by the cosine schedule). */
  betaStart: number;
  betaEnd: number;
}

/** Stable Diffusion 2.1-base and RoentGen-v2: scaled_linear 0.00085 -> 0.012 over 1000 steps. */
export const STABLE_DIFFUSION_BETAS: Readonly<BetaScheduleConfig> = {
  kind: "scaled_linear",
  numTrainTimesteps: 1000,
  betaStart: 0.00085,
  betaEnd: 0.012,
};

/** Nichol & Dhariwal's cosine schedule caps beta here so the last steps stay finite. */
export const COSINE_MAX_BETA = 0.999;

export interface NoiseSchedule {
  readonly config: Readonly<BetaScheduleConfig>;
  readonly betas: Float64Array;
  readonly alphas: Float64Array;
  /** abar_t = prod_{s <= t} (1 - beta_s). */
  readonly alphasCumprod: Float64Array;
}

/** `count` evenly spaced values from `start` to `end` inclusive (numpy/torch linspace). */
export function linspace(start: number, end: number, count: number): Float64Array {
  const values = new Float64Array(count);
  if (count === 1) {
    values[0] = start;
    return values;
  }
  const step = (end - start) / (count - 1);
  for (let index = 0; index < count; index++) values[index] = start + index * step;
  // Exact end point, as torch.linspace guarantees.
  values[count - 1] = end;
  return values;
}

/** alpha_bar(t) of the cosine schedule, t in [0, 1] (diffusers' betas_for_alpha_bar, "cosine"). */
export function cosineAlphaBar(t: number): number {
  return Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
}

export function betaSchedule(config: BetaScheduleConfig): Float64Array {
  const { kind, numTrainTimesteps: count, betaStart, betaEnd } = config;
  if (!Number.isInteger(count) || count < 2) {
    throw new RangeError(`beta schedule: numTrainTimesteps must be an integer >= 2, got ${count}`);
  }
  switch (kind) {
    case "linear":
    case "scaled_linear": {
      if (!(betaStart > 0 && betaEnd < 1 && betaStart <= betaEnd)) {
        throw new RangeError(
          `beta schedule ${kind}: need 0 < betaStart <= betaEnd < 1, got ${betaStart} -> ${betaEnd}`,
        );
      }
      if (kind === "linear") return linspace(betaStart, betaEnd, count);
      // "scaled_linear": linear in sqrt(beta), as Stable Diffusion's LDM config.
      return linspace(Math.sqrt(betaStart), Math.sqrt(betaEnd), count).map((value) => value * value);
    }
    case "squaredcos_cap_v2": {
      const betas = new Float64Array(count);
      for (let index = 0; index < count; index++) {
        const ratio = cosineAlphaBar((index + 1) / count) / cosineAlphaBar(index / count);
        betas[index] = Math.min(1 - ratio, COSINE_MAX_BETA);
      }
      return betas;
    }
    default:
      throw new RangeError(`beta schedule: unknown kind "${kind as string}"`);
  }
}

export function makeNoiseSchedule(config: Partial<BetaScheduleConfig> = {}): NoiseSchedule {
  const full: BetaScheduleConfig = { ...STABLE_DIFFUSION_BETAS, ...config };
  const betas = betaSchedule(full);
  const alphas = betas.map((beta) => 1 - beta);
  const alphasCumprod = new Float64Array(alphas.length);
  let product = 1;
  alphas.forEach((alpha, index) => {
    product *= alpha;
    alphasCumprod[index] = product;
  });
  return { config: full, betas, alphas, alphasCumprod };
}
