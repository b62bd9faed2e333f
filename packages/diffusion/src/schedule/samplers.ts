/**
 * Reverse-process samplers on the GPU, transliterated from diffusers: DDPM (posterior mean plus
 * "fixed_small" variance), DDIM (with eta), and PNDM's linear multistep part (PLMS, diffusers'
 * PNDMScheduler with skip_prk_steps=True, which Stable Diffusion 2.1 and RoentGen-v2 sample with).
 * Timesteps use "leading" spacing with steps_offset, as SD 2.1's scheduler config.
 *
 * Every per-step coefficient depends only on the (scalar) timestep, so it is computed in float64 on
 * the CPU and reaches the kernel as a uniform; the kernels are elementwise over any shape. Each
 * sampler has a float64 reference written directly from diffusers' formulas, for the tests.
 */
import { type Generator, grid, LINEAR_INDEX_WGSL, launch, OpError, Params, Tensor } from "@cxr/kernels";
import {
  type BetaScheduleConfig,
  makeNoiseSchedule,
  type NoiseSchedule,
  STABLE_DIFFUSION_BETAS,
} from "./betas.ts";
import type { PredictionType } from "./noising.ts";

export interface SchedulerConfig extends BetaScheduleConfig {
  predictionType: PredictionType;
  /** Use abar = 1 after the last step (true) or abar_0 (false, SD 2.1's choice). DDIM and PNDM only. */
  setAlphaToOne: boolean;
  /** Added to every inference timestep ("leading" spacing ends at this value). */
  stepsOffset: number;
  /** How inference timesteps are spread over the training ones (diffusers' `timestep_spacing`). */
  timestepSpacing: TimestepSpacing;
  /** Clamp the predicted x_0 to [-clipSampleRange, clipSampleRange] (DDPM, DDIM). */
  clipSample: boolean;
  clipSampleRange: number;
}

/** Stable Diffusion 2.1-base's scheduler_config.json, which RoentGen-v2 keeps. */
export const STABLE_DIFFUSION_SCHEDULER: Readonly<SchedulerConfig> = {
  ...STABLE_DIFFUSION_BETAS,
  predictionType: "epsilon",
  setAlphaToOne: false,
  stepsOffset: 1,
  timestepSpacing: "leading",
  clipSample: false,
  clipSampleRange: 1,
};

export const TIMESTEP_SPACINGS = ["leading", "trailing", "linspace"] as const;
export type TimestepSpacing = (typeof TIMESTEP_SPACINGS)[number];

export const SAMPLER_KINDS = ["ddpm", "ddim", "pndm", "dpmpp-2m"] as const;
export type SamplerKind = (typeof SAMPLER_KINDS)[number];

/** RoentGen-v2 samples with PNDM, 75 steps. */
export const SAMPLING_DEFAULTS: Readonly<{ sampler: SamplerKind; inferenceSteps: number }> = {
  sampler: "pndm",
  inferenceSteps: 75,
};

function fullConfig(config: Partial<SchedulerConfig>): SchedulerConfig {
  const full = { ...STABLE_DIFFUSION_SCHEDULER, ...config };
  if (!TIMESTEP_SPACINGS.includes(full.timestepSpacing)) {
    throw new RangeError(
      `scheduler: unknown timestep spacing "${full.timestepSpacing}" (${TIMESTEP_SPACINGS.join(", ")})`,
    );
  }
  if (!["epsilon", "sample", "v_prediction"].includes(full.predictionType)) {
    throw new RangeError(`scheduler: unknown prediction type "${full.predictionType}"`);
  }
  if (!Number.isInteger(full.stepsOffset) || full.stepsOffset < 0) {
    throw new RangeError(`scheduler: stepsOffset must be an integer >= 0, got ${full.stepsOffset}`);
  }
  return full;
}

// ---------------------------------------------------------------------------------------------
// Timesteps

/** numpy's round: halves go to the even neighbour (np.linspace(0, 999, 11)[5] = 499.5 -> 500). */
export function roundHalfEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

function checkInferenceSteps(numTrainTimesteps: number, inferenceSteps: number): void {
  if (!Number.isInteger(inferenceSteps) || inferenceSteps < 1 || inferenceSteps > numTrainTimesteps) {
    throw new RangeError(
      `scheduler: inference steps must be an integer in [1, ${numTrainTimesteps}], got ${inferenceSteps}`,
    );
  }
}

/**
 * Descending inference timesteps as diffusers' DDPM/DDIM/PNDM `set_timesteps` spread them (T training
 * timesteps, n inference steps, k = 0 first):
 *  - "leading": (n-1-k) * floor(T/n) + steps_offset (SD 2.1: 981, 961, ..., 1 for 50 steps);
 *  - "trailing": round(T - k T/n) - 1 (np.arange(T, 0, -T/n) rounded, minus one: 999, 979, ..., 19);
 *  - "linspace": round(linspace(0, T-1, n)) reversed (999, 979, ..., 0).
 * For "trailing", numpy's float arange yields one extra element (whose timestep is -1) for a few n,
 * e.g. 61 (1000 / (1000/61) rounds above 61); diffusers would then fail, here the list stays n long.
 * `extraStep` (DPM-Solver's convention) spreads n + 1 points for "leading" and "linspace" and drops
 * the last (the one at 0), as DPMSolverMultistepScheduler does.
 */
export function spacedTimesteps(
  config: Partial<SchedulerConfig>,
  inferenceSteps: number,
  extraStep = false,
): number[] {
  const { numTrainTimesteps: total, stepsOffset, timestepSpacing } = fullConfig(config);
  checkInferenceSteps(total, inferenceSteps);
  const points = extraStep ? inferenceSteps + 1 : inferenceSteps;
  let timesteps: number[];
  switch (timestepSpacing) {
    case "leading": {
      const ratio = Math.floor(total / points);
      timesteps = Array.from({ length: inferenceSteps }, (_, k) => (points - 1 - k) * ratio + stepsOffset);
      break;
    }
    case "trailing": {
      const ratio = total / inferenceSteps;
      const second = total - ratio;
      const delta = second - total; // numpy's arange fills start + i * (second - start)
      timesteps = Array.from({ length: inferenceSteps }, (_, k) => roundHalfEven(total + k * delta) - 1);
      break;
    }
    case "linspace": {
      const step = (total - 1) / (points - 1 || 1);
      const ascending = Array.from({ length: points }, (_, k) =>
        k === points - 1 && points > 1 ? total - 1 : roundHalfEven(k * step),
      );
      timesteps = ascending.reverse().slice(0, inferenceSteps);
      break;
    }
  }
  if (timesteps[0] >= total) {
    // diffusers fails with an index error here (e.g. 1000 steps with steps_offset 1).
    throw new RangeError(
      `scheduler: ${inferenceSteps} steps with stepsOffset ${stepsOffset} reach timestep ${timesteps[0]}, beyond the ${total} training timesteps`,
    );
  }
  return timesteps;
}

/** The "leading" list (kept for callers that name it); `spacedTimesteps` follows the config. */
export function leadingTimesteps(config: Partial<SchedulerConfig>, inferenceSteps: number): number[] {
  return spacedTimesteps({ ...config, timestepSpacing: "leading" }, inferenceSteps);
}

export function ddpmTimesteps(config: Partial<SchedulerConfig>, inferenceSteps: number): number[] {
  return spacedTimesteps(config, inferenceSteps);
}
export const ddimTimesteps = ddpmTimesteps;

/** DPM-Solver++: n + 1 points for "leading" and "linspace" with the last dropped (diffusers). */
export function dpmSolverTimesteps(config: Partial<SchedulerConfig>, inferenceSteps: number): number[] {
  return spacedTimesteps(config, inferenceSteps, true);
}

/**
 * PNDM with skip_prk_steps: the spaced timesteps with the second-to-last (in ascending order)
 * repeated, reversed: 75 steps give [963, 950, 950, 937, ..., 14, 1] (76 model calls). The repeat
 * is the second-order start: the second call re-evaluates at the first step's target.
 */
export function pndmTimesteps(config: Partial<SchedulerConfig>, inferenceSteps: number): number[] {
  const ascending = spacedTimesteps(config, inferenceSteps).reverse();
  return [...ascending.slice(0, -1), ...ascending.slice(-2, -1), ...ascending.slice(-1)].reverse();
}

// ---------------------------------------------------------------------------------------------
// Kernels

/**
 * DDPM and DDIM share one update: x0 and eps from (x_t, model output) by the prediction type's
 * linear map, x0 optionally clamped, then x_prev = cX0 x0 + cEps eps + cSample x_t + cNoise noise.
 */
export const SAMPLER_STEP_WGSL = `
@group(0) @binding(0) var<storage, read> sample: array<f32>;
@group(0) @binding(1) var<storage, read> modelOutput: array<f32>;
@group(0) @binding(2) var<storage, read> noise: array<f32>;
@group(0) @binding(3) var<storage, read_write> previous: array<f32>;
struct Params {
  size: u32, clipRange: f32,
  x0FromSample: f32, x0FromOutput: f32, epsFromSample: f32, epsFromOutput: f32,
  prevFromX0: f32, prevFromEps: f32, prevFromSample: f32, prevFromNoise: f32,
}
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let x = sample[index];
  let output = modelOutput[index];
  var x0 = params.x0FromSample * x + params.x0FromOutput * output;
  if (params.clipRange > 0.0) { x0 = clamp(x0, -params.clipRange, params.clipRange); }
  let eps = params.epsFromSample * x + params.epsFromOutput * output;
  previous[index] = params.prevFromX0 * x0 + params.prevFromEps * eps + params.prevFromSample * x
    + params.prevFromNoise * noise[index];
}`;

/**
 * PLMS: combined = sum_k w_k history_k (unused slots get weight 0), eps from it by the prediction
 * type, then diffusers' _get_prev_sample: x_prev = cSample x_t + cEps eps.
 */
export const PNDM_STEP_WGSL = `
@group(0) @binding(0) var<storage, read> sample: array<f32>;
@group(0) @binding(1) var<storage, read> history0: array<f32>;
@group(0) @binding(2) var<storage, read> history1: array<f32>;
@group(0) @binding(3) var<storage, read> history2: array<f32>;
@group(0) @binding(4) var<storage, read> history3: array<f32>;
@group(0) @binding(5) var<storage, read_write> previous: array<f32>;
struct Params {
  size: u32, weight0: f32, weight1: f32, weight2: f32, weight3: f32,
  epsFromSample: f32, epsFromCombined: f32, prevFromSample: f32, prevFromEps: f32,
}
@group(0) @binding(6) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let x = sample[index];
  let combined = params.weight0 * history0[index] + params.weight1 * history1[index]
    + params.weight2 * history2[index] + params.weight3 * history3[index];
  let eps = params.epsFromSample * x + params.epsFromCombined * combined;
  previous[index] = params.prevFromSample * x + params.prevFromEps * eps;
}`;

/** x0 = x0FromSample x_t + x0FromOutput out, eps likewise, at abar = alphaBar. */
export function predictionCoefficients(type: PredictionType, alphaBar: number) {
  const a = Math.sqrt(alphaBar);
  const s = Math.sqrt(1 - alphaBar);
  switch (type) {
    case "epsilon":
      return { x0FromSample: 1 / a, x0FromOutput: -s / a, epsFromSample: 0, epsFromOutput: 1 };
    case "sample":
      return { x0FromSample: 0, x0FromOutput: 1, epsFromSample: 1 / s, epsFromOutput: -a / s };
    case "v_prediction":
      return { x0FromSample: a, x0FromOutput: -s, epsFromSample: s, epsFromOutput: a };
  }
}

interface StepCoefficients {
  prevFromX0: number;
  prevFromEps: number;
  prevFromSample: number;
  prevFromNoise: number;
}

function checkStepOperands(op: string, modelOutput: Tensor, sample: Tensor): void {
  const operands = { modelOutput, sample };
  if (modelOutput.dtype !== "f32" || sample.dtype !== "f32") {
    throw new OpError(op, `needs f32 tensors, got ${modelOutput.dtype} and ${sample.dtype}`, operands);
  }
  if (modelOutput.size !== sample.size || modelOutput.shape.some((dim, axis) => dim !== sample.shape[axis])) {
    throw new OpError(op, "model output and sample differ in shape", operands);
  }
}

function launchSamplerStep(
  op: string,
  config: SchedulerConfig,
  alphaBar: number,
  coefficients: StepCoefficients,
  modelOutput: Tensor,
  sample: Tensor,
  noise: Tensor | null,
): Tensor {
  const previous = Tensor.empty(sample.gpu, sample.shape);
  const prediction = predictionCoefficients(config.predictionType, alphaBar);
  launch(
    sample.gpu,
    { name: op, code: SAMPLER_STEP_WGSL },
    {
      // Without noise the model output is bound in its place and weighted by zero.
      bindings: [sample, modelOutput, noise ?? modelOutput, previous],
      params: new Params()
        .u32(sample.size)
        .f32(
          config.clipSample ? config.clipSampleRange : 0,
          prediction.x0FromSample,
          prediction.x0FromOutput,
          prediction.epsFromSample,
          prediction.epsFromOutput,
          coefficients.prevFromX0,
          coefficients.prevFromEps,
          coefficients.prevFromSample,
          noise ? coefficients.prevFromNoise : 0,
        ),
      workgroups: grid(sample.size, 256),
      flops: 14 * sample.size,
      bytes: 16 * sample.size,
    },
  );
  return previous;
}

function checkTimestep(op: string, timesteps: readonly number[], timestep: number): number {
  const index = timesteps.indexOf(timestep);
  if (index < 0) {
    throw new OpError(op, `timestep ${timestep} is not one of this sampler's ${timesteps.length} timesteps`);
  }
  return index;
}

/** One sampler interface for the pipeline: `step` returns x_prev as a new tensor (x_t is left alone). */
export interface Sampler {
  readonly kind: SamplerKind;
  readonly timesteps: readonly number[];
  step(modelOutput: Tensor, timestep: number, sample: Tensor): Tensor;
  /** Frees any history kept on the GPU and starts over. */
  reset(): void;
}

// ---------------------------------------------------------------------------------------------
// DDPM

export class DdpmSampler implements Sampler {
  readonly kind = "ddpm";
  readonly config: Readonly<SchedulerConfig>;
  readonly schedule: NoiseSchedule;
  readonly timesteps: readonly number[];

  constructor(
    config: Partial<SchedulerConfig>,
    inferenceSteps: number,
    readonly generator: Generator,
  ) {
    this.config = fullConfig(config);
    this.schedule = makeNoiseSchedule(this.config);
    this.timesteps = ddpmTimesteps(this.config, inferenceSteps);
  }

  /** The next timestep in the list, -1 after the last (diffusers' previous_timestep). */
  previousTimestep(timestep: number): number {
    const index = checkTimestep("ddpmStep", this.timesteps, timestep);
    return index + 1 < this.timesteps.length ? this.timesteps[index + 1] : -1;
  }

  coefficients(timestep: number): StepCoefficients {
    const previous = this.previousTimestep(timestep);
    const alphaBar = this.schedule.alphasCumprod[timestep];
    const alphaBarPrevious = previous >= 0 ? this.schedule.alphasCumprod[previous] : 1;
    const betaBar = 1 - alphaBar;
    const betaBarPrevious = 1 - alphaBarPrevious;
    const currentAlpha = alphaBar / alphaBarPrevious;
    const currentBeta = 1 - currentAlpha;
    // "fixed_small": the posterior variance, floored at 1e-20 as diffusers does.
    const variance = Math.max((betaBarPrevious / betaBar) * currentBeta, 1e-20);
    return {
      prevFromX0: (Math.sqrt(alphaBarPrevious) * currentBeta) / betaBar,
      prevFromEps: 0,
      prevFromSample: (Math.sqrt(currentAlpha) * betaBarPrevious) / betaBar,
      prevFromNoise: timestep > 0 ? Math.sqrt(variance) : 0,
    };
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor): Tensor {
    checkStepOperands("ddpmStep", modelOutput, sample);
    const coefficients = this.coefficients(timestep);
    const noise = timestep > 0 ? this.generator.normal(sample.shape) : null;
    const alphaBar = this.schedule.alphasCumprod[timestep];
    const previous = launchSamplerStep(
      "ddpmStep",
      this.config,
      alphaBar,
      coefficients,
      modelOutput,
      sample,
      noise,
    );
    noise?.release();
    return previous;
  }

  reset(): void {}
}

// ---------------------------------------------------------------------------------------------
// DDIM

export interface DdimOptions {
  /** 0 = deterministic DDIM, 1 = DDPM-like variance. */
  eta: number;
  /** Needed when eta > 0. */
  generator?: Generator;
}

export class DdimSampler implements Sampler {
  readonly kind = "ddim";
  readonly config: Readonly<SchedulerConfig>;
  readonly schedule: NoiseSchedule;
  readonly timesteps: readonly number[];
  readonly eta: number;
  private readonly generator: Generator | null;
  private readonly ratio: number;

  constructor(config: Partial<SchedulerConfig>, inferenceSteps: number, options: Partial<DdimOptions> = {}) {
    this.config = fullConfig(config);
    this.schedule = makeNoiseSchedule(this.config);
    this.timesteps = ddimTimesteps(this.config, inferenceSteps);
    this.ratio = Math.floor(this.config.numTrainTimesteps / inferenceSteps);
    this.eta = options.eta ?? 0;
    if (!(this.eta >= 0)) throw new OpError("DdimSampler", `eta must be >= 0, got ${this.eta}`);
    if (this.eta > 0 && !options.generator) {
      throw new OpError("DdimSampler", `eta ${this.eta} adds noise, so it needs a generator`);
    }
    this.generator = options.generator ?? null;
  }

  /** abar after the last step: 1 or abar_0, by setAlphaToOne. */
  get finalAlphaBar(): number {
    return this.config.setAlphaToOne ? 1 : this.schedule.alphasCumprod[0];
  }

  coefficients(timestep: number): StepCoefficients {
    checkTimestep("ddimStep", this.timesteps, timestep);
    const previous = timestep - this.ratio;
    const alphaBar = this.schedule.alphasCumprod[timestep];
    const alphaBarPrevious = previous >= 0 ? this.schedule.alphasCumprod[previous] : this.finalAlphaBar;
    const variance = ((1 - alphaBarPrevious) / (1 - alphaBar)) * (1 - alphaBar / alphaBarPrevious);
    const deviation = this.eta * Math.sqrt(variance);
    return {
      prevFromX0: Math.sqrt(alphaBarPrevious),
      // Floored at 0: rounding can make it a hair negative at eta = 1.
      prevFromEps: Math.sqrt(Math.max(0, 1 - alphaBarPrevious - deviation * deviation)),
      prevFromSample: 0,
      prevFromNoise: deviation,
    };
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor): Tensor {
    checkStepOperands("ddimStep", modelOutput, sample);
    const coefficients = this.coefficients(timestep);
    const noise = this.eta > 0 && this.generator ? this.generator.normal(sample.shape) : null;
    const alphaBar = this.schedule.alphasCumprod[timestep];
    const previous = launchSamplerStep(
      "ddimStep",
      this.config,
      alphaBar,
      coefficients,
      modelOutput,
      sample,
      noise,
    );
    noise?.release();
    return previous;
  }

  reset(): void {}
}

// ---------------------------------------------------------------------------------------------
// PNDM (PLMS part)

/** Adams-Bashforth weights for 1..4 model outputs, newest first (diffusers' step_plms). */
export const PLMS_WEIGHTS: readonly (readonly number[])[] = [
  [1],
  [3 / 2, -1 / 2],
  [23 / 12, -16 / 12, 5 / 12],
  [55 / 24, -59 / 24, 37 / 24, -9 / 24],
];

export class PndmSampler implements Sampler {
  readonly kind = "pndm";
  readonly config: Readonly<SchedulerConfig>;
  readonly schedule: NoiseSchedule;
  readonly timesteps: readonly number[];
  private readonly ratio: number;
  /** Past model outputs (copies, on the GPU), oldest first; at most 4. */
  private history: Tensor[] = [];
  /** x_t of the first step, which the second step restarts from. */
  private firstSample: Tensor | null = null;
  private counter = 0;

  constructor(config: Partial<SchedulerConfig> = {}, inferenceSteps = SAMPLING_DEFAULTS.inferenceSteps) {
    this.config = fullConfig(config);
    if (this.config.predictionType === "sample") {
      throw new OpError("PndmSampler", 'prediction type "sample" is not supported by PNDM (as in diffusers)');
    }
    this.schedule = makeNoiseSchedule(this.config);
    this.timesteps = pndmTimesteps(this.config, inferenceSteps);
    this.ratio = Math.floor(this.config.numTrainTimesteps / inferenceSteps);
  }

  /** How many steps have run since construction or `reset()`. */
  get stepsTaken(): number {
    return this.counter;
  }

  get finalAlphaBar(): number {
    return this.config.setAlphaToOne ? 1 : this.schedule.alphasCumprod[0];
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor): Tensor {
    const op = "pndmStep";
    checkStepOperands(op, modelOutput, sample);
    if (this.counter >= this.timesteps.length) {
      throw new OpError(op, `all ${this.timesteps.length} steps have run; call reset() to sample again`);
    }
    if (timestep !== this.timesteps[this.counter]) {
      throw new OpError(
        op,
        `step ${this.counter} expects timestep ${this.timesteps[this.counter]}, got ${timestep}`,
      );
    }
    const held = this.history.at(-1);
    if (held && held.size !== modelOutput.size) {
      throw new OpError(op, "the model output changed shape mid-sampling", { modelOutput, previous: held });
    }
    let from = timestep;
    let to = timestep - this.ratio;
    let inputs: Tensor[];
    let weights: readonly number[];
    let start = sample;
    if (this.counter !== 1) {
      if (this.history.length === 4) this.history.shift()?.release();
      this.history.push(Tensor.empty(modelOutput.gpu, modelOutput.shape).copyFrom(modelOutput));
      inputs = [...this.history].reverse();
      weights = PLMS_WEIGHTS[inputs.length - 1];
      if (this.counter === 0) {
        this.firstSample = Tensor.empty(sample.gpu, sample.shape).copyFrom(sample);
      }
    } else {
      // The second call re-does the first step from the first x_t with the average of both outputs.
      from = timestep + this.ratio;
      to = timestep;
      inputs = [modelOutput, this.history[0]];
      weights = [1 / 2, 1 / 2];
      start = this.firstSample!;
    }
    const alphaBar = this.schedule.alphasCumprod[from];
    const alphaBarPrevious = to >= 0 ? this.schedule.alphasCumprod[to] : this.finalAlphaBar;
    const denominator =
      alphaBar * Math.sqrt(1 - alphaBarPrevious) + Math.sqrt(alphaBar * (1 - alphaBar) * alphaBarPrevious);
    const toEpsilon =
      this.config.predictionType === "v_prediction"
        ? { fromSample: Math.sqrt(1 - alphaBar), fromCombined: Math.sqrt(alphaBar) }
        : { fromSample: 0, fromCombined: 1 };
    const previous = Tensor.empty(sample.gpu, sample.shape);
    const bound = [0, 1, 2, 3].map((slot) => inputs[Math.min(slot, inputs.length - 1)]);
    launch(
      sample.gpu,
      { name: op, code: PNDM_STEP_WGSL },
      {
        bindings: [start, ...bound, previous],
        params: new Params()
          .u32(sample.size)
          .f32(
            ...[0, 1, 2, 3].map((slot) => weights[slot] ?? 0),
            toEpsilon.fromSample,
            toEpsilon.fromCombined,
            Math.sqrt(alphaBarPrevious / alphaBar),
            -(alphaBarPrevious - alphaBar) / denominator,
          ),
        workgroups: grid(sample.size, 256),
        flops: 14 * sample.size,
        bytes: (2 + inputs.length) * 4 * sample.size,
      },
    );
    if (this.counter === 1) {
      this.firstSample?.release();
      this.firstSample = null;
    }
    this.counter++;
    return previous;
  }

  reset(): void {
    for (const tensor of this.history) tensor.release();
    this.history = [];
    this.firstSample?.release();
    this.firstSample = null;
    this.counter = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// DPM-Solver++(2M)

/**
 * One DPM-Solver++ step: x0 = x0FromSample x_t + x0FromOutput out (the data prediction, stored for
 * the next step), then x_prev = prevFromSample x_t + prevFromX0 x0 + prevFromPreviousX0 x0_prev.
 */
export const DPM_SOLVER_STEP_WGSL = `
@group(0) @binding(0) var<storage, read> sample: array<f32>;
@group(0) @binding(1) var<storage, read> modelOutput: array<f32>;
@group(0) @binding(2) var<storage, read> previousX0: array<f32>;
@group(0) @binding(3) var<storage, read_write> x0Out: array<f32>;
@group(0) @binding(4) var<storage, read_write> previous: array<f32>;
struct Params {
  size: u32, x0FromSample: f32, x0FromOutput: f32,
  prevFromSample: f32, prevFromX0: f32, prevFromPreviousX0: f32,
}
@group(0) @binding(5) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let x = sample[index];
  let x0 = params.x0FromSample * x + params.x0FromOutput * modelOutput[index];
  x0Out[index] = x0;
  previous[index] = params.prevFromSample * x + params.prevFromX0 * x0
    + params.prevFromPreviousX0 * previousX0[index];
}`;

/** alpha_t, sigma_t and lambda_t = log(alpha_t / sigma_t) of a DPM-Solver sigma (diffusers' _sigma_to_alpha_sigma_t). */
function dpmPoint(sigma: number): { alpha: number; sigma: number; lambda: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const scaled = sigma * alpha;
  return { alpha, sigma: scaled, lambda: Math.log(alpha) - Math.log(scaled) };
}

export interface DpmSolverCoefficients {
  order: 1 | 2;
  prevFromSample: number;
  prevFromX0: number;
  prevFromPreviousX0: number;
}

/**
 * DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast solver for guided sampling of diffusion
 * probabilistic models", Algorithm 2), as diffusers' DPMSolverMultistepScheduler with its defaults
 * (algorithm_type "dpmsolver++", solver_order 2, solver_type "midpoint", lower_order_final,
 * final_sigmas_type "zero"). sigma_i = sqrt((1 - abar)/abar) at each timestep, then 0 after the last;
 * lambda = log(alpha/sigma), h_i = lambda_{i+1} - lambda_i, r = h_{i-1} / h_i. The first step is
 * first order (x_next = sigma_{i+1}/sigma_i x - alpha_{i+1} (e^{-h} - 1) x0_i), the middle ones second
 * order with D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, and the last (to sigma = 0) first order, which
 * lands on x0 exactly. The model output is converted to x0 by the prediction type.
 */
export class DpmSolverSampler implements Sampler {
  readonly kind = "dpmpp-2m";
  readonly config: Readonly<SchedulerConfig>;
  readonly schedule: NoiseSchedule;
  readonly timesteps: readonly number[];
  /** sigma at each timestep, then 0 (final_sigmas_type "zero"). */
  readonly sigmas: Float64Array;
  private previousX0: Tensor | null = null;
  private counter = 0;

  constructor(config: Partial<SchedulerConfig> = {}, inferenceSteps = 20) {
    this.config = fullConfig(config);
    this.schedule = makeNoiseSchedule(this.config);
    this.timesteps = dpmSolverTimesteps(this.config, inferenceSteps);
    this.sigmas = new Float64Array(this.timesteps.length + 1);
    this.timesteps.forEach((t, index) => {
      const alphaBar = this.schedule.alphasCumprod[t];
      this.sigmas[index] = Math.sqrt((1 - alphaBar) / alphaBar);
    });
  }

  get stepsTaken(): number {
    return this.counter;
  }

  /** The coefficients of step `index` (0-based); `order` 1 at the first and the last step. */
  coefficients(index: number): DpmSolverCoefficients {
    const last = this.timesteps.length - 1;
    const target = dpmPoint(this.sigmas[index + 1]);
    const current = dpmPoint(this.sigmas[index]);
    const h = target.lambda - current.lambda;
    // e^{-h} - 1; with sigma_{i+1} = 0, h = inf and this is -1 (alpha = 1): x_next = x0.
    const expm = Math.exp(-h) - 1;
    const ratio = target.sigma / current.sigma;
    if (index === 0 || index === last) {
      return { order: 1, prevFromSample: ratio, prevFromX0: -target.alpha * expm, prevFromPreviousX0: 0 };
    }
    const before = dpmPoint(this.sigmas[index - 1]);
    const r = (current.lambda - before.lambda) / h;
    const factor = target.alpha * expm;
    return {
      order: 2,
      prevFromSample: ratio,
      prevFromX0: -factor * (1 + 1 / (2 * r)),
      prevFromPreviousX0: factor / (2 * r),
    };
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor): Tensor {
    const op = "dpmSolverStep";
    checkStepOperands(op, modelOutput, sample);
    if (this.counter >= this.timesteps.length) {
      throw new OpError(op, `all ${this.timesteps.length} steps have run; call reset() to sample again`);
    }
    if (timestep !== this.timesteps[this.counter]) {
      throw new OpError(
        op,
        `step ${this.counter} expects timestep ${this.timesteps[this.counter]}, got ${timestep}`,
      );
    }
    if (this.previousX0 && this.previousX0.size !== sample.size) {
      throw new OpError(op, "the sample changed shape mid-sampling", { sample, previous: this.previousX0 });
    }
    const coefficients = this.coefficients(this.counter);
    const current = dpmPoint(this.sigmas[this.counter]);
    // diffusers' convert_model_output for "dpmsolver++": the data prediction x0.
    const toX0 = (() => {
      switch (this.config.predictionType) {
        case "epsilon":
          return { fromSample: 1 / current.alpha, fromOutput: -current.sigma / current.alpha };
        case "sample":
          return { fromSample: 0, fromOutput: 1 };
        case "v_prediction":
          return { fromSample: current.alpha, fromOutput: -current.sigma };
      }
    })();
    const x0 = Tensor.empty(sample.gpu, sample.shape);
    const previous = Tensor.empty(sample.gpu, sample.shape);
    launch(
      sample.gpu,
      { name: op, code: DPM_SOLVER_STEP_WGSL },
      {
        // Without history, x_t stands in for x0_prev, weighted by zero.
        bindings: [sample, modelOutput, this.previousX0 ?? sample, x0, previous],
        params: new Params()
          .u32(sample.size)
          .f32(
            toX0.fromSample,
            toX0.fromOutput,
            coefficients.prevFromSample,
            coefficients.prevFromX0,
            coefficients.order === 2 ? coefficients.prevFromPreviousX0 : 0,
          ),
        workgroups: grid(sample.size, 256),
        flops: 9 * sample.size,
        bytes: 20 * sample.size,
      },
    );
    this.previousX0?.release();
    this.previousX0 = x0;
    this.counter++;
    return previous;
  }

  reset(): void {
    this.previousX0?.release();
    this.previousX0 = null;
    this.counter = 0;
  }
}

export interface SamplerOptions {
  kind: SamplerKind;
  inferenceSteps: number;
  config: Partial<SchedulerConfig>;
  /** DDIM's eta (default 0). */
  eta: number;
  /** Noise source of DDPM, and of DDIM with eta > 0. */
  generator: Generator;
}

/** A sampler by name, with SD 2.1's scheduler config and RoentGen-v2's PNDM, 75 steps, by default. */
export function createSampler(options: Partial<SamplerOptions> = {}): Sampler {
  const kind = options.kind ?? SAMPLING_DEFAULTS.sampler;
  const steps = options.inferenceSteps ?? SAMPLING_DEFAULTS.inferenceSteps;
  const config = options.config ?? {};
  switch (kind) {
    case "pndm":
      return new PndmSampler(config, steps);
    case "ddim":
      return new DdimSampler(config, steps, { eta: options.eta ?? 0, generator: options.generator });
    case "dpmpp-2m":
      return new DpmSolverSampler(config, steps);
    case "ddpm":
      if (!options.generator)
        throw new OpError("createSampler", "DDPM adds noise at every step, so it needs a generator");
      return new DdpmSampler(config, steps, options.generator);
    default:
      throw new OpError("createSampler", `unknown sampler "${kind as string}" (${SAMPLER_KINDS.join(", ")})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Float64 references, written from diffusers' step functions line by line

function referenceOriginalAndEpsilon(
  type: PredictionType,
  output: number,
  sample: number,
  alphaBar: number,
): [x0: number, eps: number] {
  const betaBar = 1 - alphaBar;
  if (type === "epsilon") return [(sample - Math.sqrt(betaBar) * output) / Math.sqrt(alphaBar), output];
  if (type === "sample") return [output, (sample - Math.sqrt(alphaBar) * output) / Math.sqrt(betaBar)];
  return [
    Math.sqrt(alphaBar) * sample - Math.sqrt(betaBar) * output,
    Math.sqrt(alphaBar) * output + Math.sqrt(betaBar) * sample,
  ];
}

export const samplerReference = {
  /** DDPMScheduler.step, variance_type "fixed_small"; `noise` is used when t > 0. */
  ddpmStep(
    config: SchedulerConfig,
    timesteps: readonly number[],
    output: Float64Array,
    t: number,
    sample: Float64Array,
    noise: Float64Array,
  ): Float64Array {
    const alphasCumprod = makeNoiseSchedule(config).alphasCumprod;
    const index = timesteps.indexOf(t);
    const prevT = index === timesteps.length - 1 ? -1 : timesteps[index + 1];
    const alphaProdT = alphasCumprod[t];
    const alphaProdTPrev = prevT >= 0 ? alphasCumprod[prevT] : 1;
    const betaProdT = 1 - alphaProdT;
    const betaProdTPrev = 1 - alphaProdTPrev;
    const currentAlphaT = alphaProdT / alphaProdTPrev;
    const currentBetaT = 1 - currentAlphaT;
    const predOriginalSampleCoeff = (alphaProdTPrev ** 0.5 * currentBetaT) / betaProdT;
    const currentSampleCoeff = (currentAlphaT ** 0.5 * betaProdTPrev) / betaProdT;
    const variance = Math.max(((1 - alphaProdTPrev) / (1 - alphaProdT)) * currentBetaT, 1e-20);
    return sample.map((x, i) => {
      let [x0] = referenceOriginalAndEpsilon(config.predictionType, output[i], x, alphaProdT);
      if (config.clipSample) x0 = Math.min(config.clipSampleRange, Math.max(-config.clipSampleRange, x0));
      const mean = predOriginalSampleCoeff * x0 + currentSampleCoeff * x;
      return t > 0 ? mean + variance ** 0.5 * noise[i] : mean;
    });
  },

  /** DDIMScheduler.step (use_clipped_model_output False); `noise` is used when eta > 0. */
  ddimStep(
    config: SchedulerConfig,
    inferenceSteps: number,
    output: Float64Array,
    t: number,
    sample: Float64Array,
    eta: number,
    noise?: Float64Array,
  ): Float64Array {
    const alphasCumprod = makeNoiseSchedule(config).alphasCumprod;
    const finalAlphaCumprod = config.setAlphaToOne ? 1 : alphasCumprod[0];
    const prevTimestep = t - Math.floor(config.numTrainTimesteps / inferenceSteps);
    const alphaProdT = alphasCumprod[t];
    const alphaProdTPrev = prevTimestep >= 0 ? alphasCumprod[prevTimestep] : finalAlphaCumprod;
    const betaProdT = 1 - alphaProdT;
    const betaProdTPrev = 1 - alphaProdTPrev;
    const variance = (betaProdTPrev / betaProdT) * (1 - alphaProdT / alphaProdTPrev);
    const stdDevT = eta * variance ** 0.5;
    return sample.map((x, i) => {
      let [x0, eps] = referenceOriginalAndEpsilon(config.predictionType, output[i], x, alphaProdT);
      if (config.clipSample) x0 = Math.min(config.clipSampleRange, Math.max(-config.clipSampleRange, x0));
      const direction = Math.max(0, 1 - alphaProdTPrev - stdDevT ** 2) ** 0.5 * eps;
      const previous = alphaProdTPrev ** 0.5 * x0 + direction;
      return eta > 0 && noise ? previous + stdDevT * noise[i] : previous;
    });
  },
};

/** PNDMScheduler.step_plms with skip_prk_steps=True, on Float64Arrays. */
export class PndmReference {
  private ets: Float64Array[] = [];
  private curSample: Float64Array | null = null;
  private counter = 0;
  private readonly alphasCumprod: Float64Array;
  private readonly finalAlphaCumprod: number;

  constructor(
    private readonly config: SchedulerConfig,
    private readonly inferenceSteps: number,
  ) {
    this.alphasCumprod = makeNoiseSchedule(config).alphasCumprod;
    this.finalAlphaCumprod = config.setAlphaToOne ? 1 : this.alphasCumprod[0];
  }

  step(modelOutput: Float64Array, timestep: number, sample: Float64Array): Float64Array {
    const ratio = Math.floor(this.config.numTrainTimesteps / this.inferenceSteps);
    let prevTimestep = timestep - ratio;
    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(modelOutput);
    } else {
      prevTimestep = timestep;
      timestep = timestep + ratio;
    }
    const ets = this.ets;
    const n = ets.length;
    let output: Float64Array;
    if (n === 1 && this.counter === 0) {
      output = modelOutput;
      this.curSample = sample;
    } else if (n === 1 && this.counter === 1) {
      output = modelOutput.map((value, i) => (value + ets[n - 1][i]) / 2);
      sample = this.curSample!;
      this.curSample = null;
    } else if (n === 2) {
      output = ets[1].map((_, i) => (3 * ets[n - 1][i] - ets[n - 2][i]) / 2);
    } else if (n === 3) {
      output = ets[2].map((_, i) => (23 * ets[n - 1][i] - 16 * ets[n - 2][i] + 5 * ets[n - 3][i]) / 12);
    } else {
      output = ets[3].map(
        (_, i) =>
          (1 / 24) * (55 * ets[n - 1][i] - 59 * ets[n - 2][i] + 37 * ets[n - 3][i] - 9 * ets[n - 4][i]),
      );
    }
    const previous = this.previousSample(sample, timestep, prevTimestep, output);
    this.counter++;
    return previous;
  }

  private previousSample(
    sample: Float64Array,
    timestep: number,
    prevTimestep: number,
    output: Float64Array,
  ): Float64Array {
    const alphaProdT = this.alphasCumprod[timestep];
    const alphaProdTPrev = prevTimestep >= 0 ? this.alphasCumprod[prevTimestep] : this.finalAlphaCumprod;
    const betaProdT = 1 - alphaProdT;
    const betaProdTPrev = 1 - alphaProdTPrev;
    if (this.config.predictionType === "v_prediction") {
      output = output.map((v, i) => alphaProdT ** 0.5 * v + betaProdT ** 0.5 * sample[i]);
    }
    const sampleCoeff = (alphaProdTPrev / alphaProdT) ** 0.5;
    const modelOutputDenomCoeff =
      alphaProdT * betaProdTPrev ** 0.5 + (alphaProdT * betaProdT * alphaProdTPrev) ** 0.5;
    return sample.map(
      (x, i) => sampleCoeff * x - ((alphaProdTPrev - alphaProdT) * output[i]) / modelOutputDenomCoeff,
    );
  }
}

/**
 * DPMSolverMultistepScheduler.step (dpmsolver++, order 2, midpoint, lower_order_final,
 * final_sigmas_type "zero") on Float64Arrays, written from diffusers' functions line by line.
 */
export class DpmSolverReference {
  private modelOutputs: (Float64Array | null)[] = [null, null];
  private lowerOrderNums = 0;
  private stepIndex = 0;
  readonly timesteps: number[];
  readonly sigmas: number[];

  constructor(
    private readonly config: SchedulerConfig,
    inferenceSteps: number,
  ) {
    const alphasCumprod = makeNoiseSchedule(config).alphasCumprod;
    this.timesteps = dpmSolverTimesteps(config, inferenceSteps);
    const allSigmas = Array.from(alphasCumprod, (abar) => ((1 - abar) / abar) ** 0.5);
    // np.interp at integer timesteps is the table entry; then sigma_last = 0.
    this.sigmas = [...this.timesteps.map((t) => allSigmas[t]), 0];
  }

  private alphaSigma(sigma: number): [number, number] {
    const alphaT = 1 / (sigma ** 2 + 1) ** 0.5;
    return [alphaT, sigma * alphaT];
  }

  private convertModelOutput(output: Float64Array, sample: Float64Array): Float64Array {
    const [alphaT, sigmaT] = this.alphaSigma(this.sigmas[this.stepIndex]);
    switch (this.config.predictionType) {
      case "epsilon":
        return sample.map((x, i) => (x - sigmaT * output[i]) / alphaT);
      case "sample":
        return output.slice();
      case "v_prediction":
        return sample.map((x, i) => alphaT * x - sigmaT * output[i]);
    }
  }

  step(modelOutput: Float64Array, timestep: number, sample: Float64Array): Float64Array {
    if (this.timesteps[this.stepIndex] !== timestep) throw new Error("DpmSolverReference: out of order");
    const lowerOrderFinal = this.stepIndex === this.timesteps.length - 1; // final_sigmas_type "zero"
    const x0 = this.convertModelOutput(modelOutput, sample);
    this.modelOutputs = [this.modelOutputs[1], x0];
    const [alphaT, sigmaT] = this.alphaSigma(this.sigmas[this.stepIndex + 1]);
    const [alphaS0, sigmaS0] = this.alphaSigma(this.sigmas[this.stepIndex]);
    const lambdaT = Math.log(alphaT) - Math.log(sigmaT);
    const lambdaS0 = Math.log(alphaS0) - Math.log(sigmaS0);
    const h = lambdaT - lambdaS0;
    let previous: Float64Array;
    if (this.lowerOrderNums < 1 || lowerOrderFinal) {
      // dpm_solver_first_order_update
      previous = sample.map((x, i) => (sigmaT / sigmaS0) * x - alphaT * (Math.exp(-h) - 1.0) * x0[i]);
    } else {
      // multistep_dpm_solver_second_order_update, "midpoint"
      const [alphaS1, sigmaS1] = this.alphaSigma(this.sigmas[this.stepIndex - 1]);
      const lambdaS1 = Math.log(alphaS1) - Math.log(sigmaS1);
      const m0 = x0;
      const m1 = this.modelOutputs[0]!;
      const h0 = lambdaS0 - lambdaS1;
      const r0 = h0 / h;
      previous = sample.map((x, i) => {
        const d0 = m0[i];
        const d1 = (1.0 / r0) * (m0[i] - m1[i]);
        return (
          (sigmaT / sigmaS0) * x -
          alphaT * (Math.exp(-h) - 1.0) * d0 -
          0.5 * (alphaT * (Math.exp(-h) - 1.0)) * d1
        );
      });
    }
    if (this.lowerOrderNums < 2) this.lowerOrderNums++;
    this.stepIndex++;
    return previous;
  }
}
