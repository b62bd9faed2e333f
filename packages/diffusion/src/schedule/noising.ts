/**
 * The forward process on the GPU: q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with a
 * timestep per sample (batched training), the v-prediction target, and conversions between the
 * three things a denoiser can predict (epsilon, x_0 = "sample", v), each beside its float64
 * reference.
 *
 * Layout: any tensor whose first dimension is the batch, e.g. latents [B, 4, 64, 64]; timesteps is
 * an f32 tensor [B] of integer timesteps. The GPU cannot report bad timesteps without a read-back,
 * so it truncates them to integers and clamps them to [0, T - 1]; callers draw them in range.
 */

import type { Gpu } from "@cxr/kernels";
import { grid, LINEAR_INDEX_WGSL, launch, OpError, Params, Tensor, wgsl } from "@cxr/kernels";
import type { NoiseSchedule } from "./betas.ts";

/** What a denoiser predicts, with diffusers' names ("sample" is x_0). */
export type PredictionType = "epsilon" | "sample" | "v_prediction";

/**
 * A schedule's per-timestep factors on the GPU: row 0 sqrt(abar_t), row 1 sqrt(1 - abar_t), both
 * computed in float64 (1 - abar_t in f32 would lose 4 digits near t = 0, where abar is ~0.999).
 */
export class GpuNoiseSchedule {
  readonly table: Tensor;
  readonly numTimesteps: number;

  private constructor(
    readonly schedule: NoiseSchedule,
    table: Tensor,
  ) {
    this.table = table;
    this.numTimesteps = schedule.alphasCumprod.length;
  }

  static upload(gpu: Gpu, schedule: NoiseSchedule): GpuNoiseSchedule {
    const count = schedule.alphasCumprod.length;
    const values = new Float64Array(2 * count);
    schedule.alphasCumprod.forEach((alphaBar, t) => {
      values[t] = Math.sqrt(alphaBar);
      values[count + t] = Math.sqrt(1 - alphaBar);
    });
    return new GpuNoiseSchedule(schedule, Tensor.upload(gpu, Float32Array.from(values), [2, count]));
  }

  release(): void {
    this.table.release();
  }
}

const SCHEDULE_LOOKUP_WGSL = `
fn timestepOf(element: u32) -> u32 {
  return min(u32(timesteps[element / params.perSample]), params.numTimesteps - 1u);
}
fn signalOf(t: u32) -> f32 { return table[t]; }
fn noiseOf(t: u32) -> f32 { return table[params.numTimesteps + t]; }`;

/** mode 0: x_t = a x_0 + s eps; mode 1: v = a eps - s x_0 (a = sqrt(abar_t), s = sqrt(1 - abar_t)). */
export const ADD_NOISE_WGSL = `
@group(0) @binding(0) var<storage, read> original: array<f32>;
@group(0) @binding(1) var<storage, read> noise: array<f32>;
@group(0) @binding(2) var<storage, read> timesteps: array<f32>;
@group(0) @binding(3) var<storage, read> table: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;
struct Params { size: u32, perSample: u32, numTimesteps: u32, mode: u32 }
@group(0) @binding(5) var<uniform> params: Params;
${SCHEDULE_LOOKUP_WGSL}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let t = timestepOf(index);
  let a = signalOf(t);
  let s = noiseOf(t);
  if (params.mode == 0u) {
    output[index] = a * original[index] + s * noise[index];
  } else {
    output[index] = a * noise[index] - s * original[index];
  }
}`;

/** The mode of CONVERT_PREDICTION_WGSL for each conversion "from>to". */
const CONVERSION_MODES: Record<string, number> = {
  "epsilon>sample": 0,
  "sample>epsilon": 1,
  "v_prediction>sample": 2,
  "v_prediction>epsilon": 3,
  "epsilon>v_prediction": 4,
  "sample>v_prediction": 5,
};

/** The conversions written out directly (the reference; the kernel uses the coefficient form). */
const REFERENCE_CONVERSIONS: Record<string, (x: number, p: number, a: number, s: number) => number> = {
  "epsilon>sample": (x, eps, a, s) => (x - s * eps) / a,
  "sample>epsilon": (x, x0, a, s) => (x - a * x0) / s,
  "v_prediction>sample": (x, v, a, s) => a * x - s * v,
  "v_prediction>epsilon": (x, v, a, s) => s * x + a * v,
  "epsilon>v_prediction": (x, eps, a, s) => a * eps - s * ((x - s * eps) / a),
  "sample>v_prediction": (x, x0, a, s) => a * ((x - a * x0) / s) - s * x0,
};

export const CONVERT_PREDICTION_WGSL = wgsl(
  `
@group(0) @binding(0) var<storage, read> sample: array<f32>;
@group(0) @binding(1) var<storage, read> prediction: array<f32>;
@group(0) @binding(2) var<storage, read> timesteps: array<f32>;
@group(0) @binding(3) var<storage, read> table: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;
struct Params { size: u32, perSample: u32, numTimesteps: u32, mode: u32 }
@group(0) @binding(5) var<uniform> params: Params;
{{lookup}}
{{linearIndex}}
fn coefficients(a: f32, s: f32) -> vec2<f32> {
  switch (params.mode) {
    case 0u: { return vec2<f32>(1.0 / a, -s / a); }
    case 1u: { return vec2<f32>(1.0 / s, -a / s); }
    case 2u: { return vec2<f32>(a, -s); }
    case 3u: { return vec2<f32>(s, a); }
    case 4u: { return vec2<f32>(-s / a, 1.0 / a); }
    default: { return vec2<f32>(a / s, -1.0 / s); }
  }
}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let t = timestepOf(index);
  let c = coefficients(signalOf(t), noiseOf(t));
  output[index] = c.x * sample[index] + c.y * prediction[index];
}`,
  { lookup: SCHEDULE_LOOKUP_WGSL, linearIndex: LINEAR_INDEX_WGSL },
);

function checkBatched(
  op: string,
  schedule: GpuNoiseSchedule,
  operands: Record<string, Tensor>,
  timesteps: Tensor,
): number {
  const entries = Object.entries(operands);
  const [firstName, first] = entries[0];
  for (const [name, tensor] of entries) {
    if (tensor.dtype !== "f32") throw new OpError(op, `${name} must be f32, got ${tensor.dtype}`, operands);
    if (
      tensor.shape.length !== first.shape.length ||
      tensor.shape.some((dim, axis) => dim !== first.shape[axis])
    ) {
      throw new OpError(op, `${name} and ${firstName} differ in shape`, operands);
    }
    if (tensor.gpu !== schedule.table.gpu) throw new OpError(op, `${name} lives on another device`, operands);
  }
  const batch = first.shape[0];
  if (timesteps.rank !== 1 || timesteps.shape[0] !== batch || timesteps.dtype !== "f32") {
    throw new OpError(op, `timesteps must be an f32 tensor [${batch}], one per sample`, {
      ...operands,
      timesteps,
    });
  }
  return first.size / batch;
}

function runScheduleKernel(
  op: string,
  code: string,
  schedule: GpuNoiseSchedule,
  first: Tensor,
  second: Tensor,
  timesteps: Tensor,
  perSample: number,
  mode: number,
): Tensor {
  const output = Tensor.empty(first.gpu, first.shape);
  launch(
    first.gpu,
    { name: op, code },
    {
      bindings: [first, second, timesteps, schedule.table, output],
      params: new Params().u32(first.size, perSample, schedule.numTimesteps, mode),
      workgroups: grid(first.size, 256),
      flops: 3 * first.size,
      bytes: 12 * first.size,
    },
  );
  return output;
}

/** x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, t per sample (diffusers' add_noise). */
export function addNoise(
  schedule: GpuNoiseSchedule,
  original: Tensor,
  noise: Tensor,
  timesteps: Tensor,
): Tensor {
  const perSample = checkBatched("addNoise", schedule, { original, noise }, timesteps);
  return runScheduleKernel("addNoise", ADD_NOISE_WGSL, schedule, original, noise, timesteps, perSample, 0);
}

/** The v-prediction target sqrt(abar_t) noise - sqrt(1 - abar_t) x_0 (diffusers' get_velocity). */
export function velocityTarget(
  schedule: GpuNoiseSchedule,
  original: Tensor,
  noise: Tensor,
  timesteps: Tensor,
): Tensor {
  const perSample = checkBatched("velocityTarget", schedule, { original, noise }, timesteps);
  return runScheduleKernel(
    "velocityTarget",
    ADD_NOISE_WGSL,
    schedule,
    original,
    noise,
    timesteps,
    perSample,
    1,
  );
}

/**
 * Turns a prediction of one kind into another, given the noisy sample x_t and t per sample:
 * x_0 = (x_t - s eps) / a, eps = (x_t - a x_0) / s, x_0 = a x_t - s v, eps = s x_t + a v, and back.
 */
export function convertPrediction(
  schedule: GpuNoiseSchedule,
  sample: Tensor,
  prediction: Tensor,
  timesteps: Tensor,
  from: PredictionType,
  to: PredictionType,
): Tensor {
  const op = "convertPrediction";
  const perSample = checkBatched(op, schedule, { sample, prediction }, timesteps);
  const mode = CONVERSION_MODES[`${from}>${to}`];
  if (mode === undefined) {
    throw new OpError(op, `cannot convert "${from}" to "${to}" (both must be different prediction types)`, {
      sample,
    });
  }
  return runScheduleKernel(
    op,
    CONVERT_PREDICTION_WGSL,
    schedule,
    sample,
    prediction,
    timesteps,
    perSample,
    mode,
  );
}

/** Float64 references; `timesteps` has one integer per sample, arrays are row-major with the batch first. */
export const noisingReference = {
  addNoise(
    schedule: NoiseSchedule,
    original: Float64Array,
    noise: Float64Array,
    timesteps: number[],
  ): Float64Array {
    const perSample = original.length / timesteps.length;
    return original.map((x0, index) => {
      const alphaBar = schedule.alphasCumprod[timesteps[Math.floor(index / perSample)]];
      return Math.sqrt(alphaBar) * x0 + Math.sqrt(1 - alphaBar) * noise[index];
    });
  },
  velocityTarget(
    schedule: NoiseSchedule,
    original: Float64Array,
    noise: Float64Array,
    timesteps: number[],
  ): Float64Array {
    const perSample = original.length / timesteps.length;
    return original.map((x0, index) => {
      const alphaBar = schedule.alphasCumprod[timesteps[Math.floor(index / perSample)]];
      return Math.sqrt(alphaBar) * noise[index] - Math.sqrt(1 - alphaBar) * x0;
    });
  },
  convertPrediction(
    schedule: NoiseSchedule,
    sample: Float64Array,
    prediction: Float64Array,
    timesteps: number[],
    from: PredictionType,
    to: PredictionType,
  ): Float64Array {
    const convert = REFERENCE_CONVERSIONS[`${from}>${to}`];
    if (!convert) throw new RangeError(`cannot convert "${from}" to "${to}"`);
    const perSample = sample.length / timesteps.length;
    return sample.map((x, index) => {
      const alphaBar = schedule.alphasCumprod[timesteps[Math.floor(index / perSample)]];
      return convert(x, prediction[index], Math.sqrt(alphaBar), Math.sqrt(1 - alphaBar));
    });
  },
};
