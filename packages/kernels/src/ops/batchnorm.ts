/**
 * Batch normalisation over NCHW images (Ioffe & Szegedy 2015), with PyTorch's semantics:
 * - training: normalise with the batch's per-channel mean and biased variance, and update the
 *   running buffers in place on the GPU: running = (1 - momentum) * running + momentum * batch,
 *   using the unbiased variance (n / (n - 1)) for running_var;
 * - eval: normalise with the running buffers (an affine map per channel).
 * Backward in training mode goes through the batch statistics; in eval mode it is the affine map's.
 *
 * The kernels are group norm's channel-row kernels with one statistic per channel, merged over N.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import type { Gpu } from "../runtime/device.ts";
import { grid, LINEAR_INDEX_WGSL, launch } from "../runtime/kernel.ts";
import { OpError, type Shape, sizeOf, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";
import {
  type AccessStyle,
  accessStyleOf,
  type ChannelRows,
  channelParameterGradients,
  checkChannelParameter,
  checkEps,
  chooseNormVariant,
  fusedNormalize,
  type MomentsVariant,
  momentStatistics,
  type NormVariantOptions,
  naiveNormalize,
  normalizeChannels,
  normBackwardSums,
  normInputGradient,
  type StatisticRows,
} from "./norm-core/index.ts";

/**
 * As group norm's variants, with one statistic per channel: "cpu-chunked", "gpu-workgroup",
 * "cpu-fused" (one invocation per channel streams N x H x W values, one dispatch; chosen on lavapipe
 * when there are enough channels) and "naive" (one invocation per channel, scalar, three serial
 * passes: the benchmark baseline).
 */
export type BatchNormVariant = MomentsVariant | "cpu-fused" | "naive";

export interface BatchNormOptions extends NormVariantOptions<BatchNormVariant> {
  /** Batch statistics and running-buffer updates (true) or running statistics (false). */
  training: boolean;
  /** Weight of the new batch in the running averages. Default 0.1 (PyTorch). */
  momentum?: number;
  eps?: number;
}

export function chooseBatchNormVariant(gpu: Gpu, shape: Shape): BatchNormVariant {
  return chooseNormVariant(gpu, shape[1]);
}

/**
 * Training: folds the batch statistics into the running buffers. Eval: turns the running buffers
 * into the stats layout the normalise kernel reads (mean, 1/sqrt(var + eps), var, count).
 */
export const BATCH_NORM_RUNNING_WGSL = `
@group(0) @binding(0) var<storage, read_write> stats: array<f32>;
@group(0) @binding(1) var<storage, read_write> runningMean: array<f32>;
@group(0) @binding(2) var<storage, read_write> runningVar: array<f32>;
struct Params { channels: u32, training: u32, momentum: f32, eps: f32, count: f32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let channel = linearIndex(gid, groups, 64u);
  if (channel >= params.channels) { return; }
  if (params.training == 1u) {
    let count = stats[4u * channel + 3u];
    let unbiased = stats[4u * channel + 2u] * count / (count - 1.0);
    let keep = 1.0 - params.momentum;
    runningMean[channel] = keep * runningMean[channel] + params.momentum * stats[4u * channel];
    runningVar[channel] = keep * runningVar[channel] + params.momentum * unbiased;
  } else {
    stats[4u * channel] = runningMean[channel];
    stats[4u * channel + 1u] = inverseSqrt(runningVar[channel] + params.eps);
    stats[4u * channel + 2u] = runningVar[channel];
    stats[4u * channel + 3u] = params.count;
  }
}`;

/** Training-mode terms of dx per channel: k1 = gamma * Σdy / n, k2 = gamma * Σ(dy * x̂) / n. */
export const BATCH_NORM_COEFFICIENTS_WGSL = `
@group(0) @binding(0) var<storage, read> gradGamma: array<f32>;
@group(0) @binding(1) var<storage, read> gradBeta: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> coefficients: array<f32>;
struct Params { channels: u32 }
@group(0) @binding(5) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let channel = linearIndex(gid, groups, 64u);
  if (channel >= params.channels) { return; }
  let scale = gamma[channel] / stats[4u * channel + 3u];
  coefficients[2u * channel] = scale * gradBeta[channel];
  coefficients[2u * channel + 1u] = scale * gradGamma[channel];
}`;

export function batchNormCost(shape: Shape, training: boolean) {
  const size = sizeOf(shape);
  return training ? { flops: 7 * size, bytes: 12 * size } : { flops: 3 * size, bytes: 8 * size };
}

function runningBuffers(
  gpu: Gpu,
  stats: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  training: boolean,
  momentum: number,
  eps: number,
  count: number,
): void {
  const channels = runningMean.size;
  launch(
    gpu,
    {
      name: "batchNorm2d",
      variant: training ? "running-update" : "running-stats",
      code: BATCH_NORM_RUNNING_WGSL,
    },
    {
      bindings: [stats, runningMean, runningVar],
      params: new Params().u32(channels, training ? 1 : 0).f32(momentum, eps, count),
      workgroups: grid(channels, 64),
      flops: 6 * channels,
      bytes: 32 * channels,
    },
  );
}

/**
 * Batch norm of x [N, C, H, W] with per-channel gamma, beta, runningMean, runningVar [C].
 * Training mode updates runningMean and runningVar in place. Differentiable in x, gamma and beta.
 */
export function batchNorm2d(
  x: Tensor,
  gamma: Tensor,
  beta: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  options: BatchNormOptions,
): Tensor {
  const op = "batchNorm2d";
  const { training } = options;
  const momentum = options.momentum ?? 0.1;
  const eps = options.eps ?? 1e-5;
  if (x.dtype !== "f32") throw new OpError(op, `needs f32 input, got ${x.dtype}`, { x });
  if (x.rank !== 4) throw new OpError(op, "needs x of shape [N, C, H, W]", { x });
  const [samples, channels, height, width] = x.shape;
  checkChannelParameter(op, "gamma", gamma, channels, x);
  checkChannelParameter(op, "beta", beta, channels, x);
  checkChannelParameter(op, "runningMean", runningMean, channels, x);
  checkChannelParameter(op, "runningVar", runningVar, channels, x);
  checkEps(op, eps);
  if (typeof training !== "boolean") throw new OpError(op, "options.training must be true or false", { x });
  if (!Number.isFinite(momentum) || momentum < 0 || momentum > 1) {
    throw new OpError(op, `momentum must lie in [0, 1], got ${momentum}`, { x });
  }
  if (runningMean.owner === runningVar.owner) {
    throw new OpError(
      op,
      "runningMean and runningVar must be different tensors (both are updated in place)",
      {
        runningMean,
        runningVar,
      },
    );
  }
  const spatial = height * width;
  const count = samples * spatial;
  if (training && count < 2) {
    throw new OpError(op, "training needs more than one value per channel (N * H * W >= 2)", { x });
  }
  const gpu = x.gpu;
  const variant = options.variant ?? chooseBatchNormVariant(gpu, x.shape);
  const style = accessStyleOf(gpu, variant);
  const rows: ChannelRows = { samples, channels, rowLength: spatial, statDivisor: 1, statModulus: channels };
  let y: Tensor;
  let stats: Tensor;
  if (!training) {
    stats = Tensor.empty(gpu, [channels, 4]);
    runningBuffers(gpu, stats, runningMean, runningVar, false, momentum, eps, count);
    y = normalizeChannels(op, "eval", style, x, stats, gamma, beta, rows);
  } else {
    if (variant === "naive" || variant === "cpu-fused") {
      const statisticRows: StatisticRows = {
        statistics: channels,
        rowLength: spatial,
        baseStride: 1,
        outer: samples,
        outerStride: channels,
        inner: 1,
        channels,
      };
      ({ y, stats } = (variant === "naive" ? naiveNormalize : fusedNormalize)(
        op,
        x,
        gamma,
        beta,
        eps,
        statisticRows,
      ));
    } else {
      stats = momentStatistics(
        op,
        x,
        samples * channels,
        spatial,
        { statistics: channels, outer: samples, outerStride: channels },
        eps,
        variant,
      );
      y = normalizeChannels(op, variant, style, x, stats, gamma, beta, rows);
    }
    runningBuffers(gpu, stats, runningMean, runningVar, true, momentum, eps, count);
  }
  if (needsGrad(x, gamma, beta)) {
    record(
      op,
      [x, gamma, beta],
      [y],
      ([gradOutput]) => batchNormBackward(x, gradOutput!, stats, gamma, beta, rows, training, style),
      [stats],
    );
  } else {
    stats.release();
  }
  return y;
}

function batchNormBackward(
  x: Tensor,
  gradOutput: Tensor,
  stats: Tensor,
  gamma: Tensor,
  beta: Tensor,
  rows: ChannelRows,
  training: boolean,
  style: AccessStyle,
): (Tensor | null)[] {
  const op = "batchNorm2d";
  const gpu = x.gpu;
  const wantParameters = gamma.requiresGrad || beta.requiresGrad;
  let gradGamma: Tensor | null = null;
  let gradBeta: Tensor | null = null;
  // Training-mode dx needs Σdy and Σdy·x̂ per channel, which are exactly beta's and gamma's gradients.
  if (wantParameters || (training && x.requiresGrad)) {
    const { partials, chunks } = normBackwardSums(op, style, x, gradOutput, stats, rows);
    ({ gradGamma, gradBeta } = channelParameterGradients(op, partials, chunks, rows));
    partials.release();
  }
  let gradInput: Tensor | null = null;
  if (x.requiresGrad) {
    let coefficients: Tensor;
    if (training) {
      coefficients = Tensor.empty(gpu, [rows.channels, 2]);
      launch(
        gpu,
        { name: `${op}Backward`, variant: "batch-coefficients", code: BATCH_NORM_COEFFICIENTS_WGSL },
        {
          bindings: [gradGamma!, gradBeta!, gamma, stats, coefficients],
          params: new Params().u32(rows.channels),
          workgroups: grid(rows.channels, 64),
          flops: 3 * rows.channels,
          bytes: 28 * rows.channels,
        },
      );
    } else {
      coefficients = Tensor.zeros(gpu, [rows.channels, 2]); // eval: dx = gamma * rstd * dy
    }
    gradInput = normInputGradient(op, style, x, gradOutput, stats, gamma, coefficients, rows);
    coefficients.release();
  }
  if (gradGamma && !gamma.requiresGrad) {
    gradGamma.release();
    gradGamma = null;
  }
  if (gradBeta && !beta.requiresGrad) {
    gradBeta.release();
    gradBeta = null;
  }
  return [gradInput, gradGamma, gradBeta];
}

// ---------------------------------------------------------------------------------------------
// Float64 reference
// ---------------------------------------------------------------------------------------------

export interface BatchNormReferenceState {
  runningMean: Float64Array;
  runningVar: Float64Array;
}

export const batchNormReference = {
  /** Returns y and the batch (training) or running (eval) statistics; updates `state` in training. */
  forward(
    x: Float64Array,
    shape: Shape,
    gamma: Float64Array,
    beta: Float64Array,
    state: BatchNormReferenceState,
    options: { training: boolean; momentum?: number; eps?: number },
  ): { y: Float64Array; mean: Float64Array; rstd: Float64Array } {
    const [samples, channels, height, width] = shape;
    const spatial = height * width;
    const count = samples * spatial;
    const momentum = options.momentum ?? 0.1;
    const eps = options.eps ?? 1e-5;
    const mean = new Float64Array(channels);
    const rstd = new Float64Array(channels);
    for (let channel = 0; channel < channels; channel++) {
      if (options.training) {
        let sum = 0;
        for (let n = 0; n < samples; n++) {
          for (let i = 0; i < spatial; i++) sum += x[(n * channels + channel) * spatial + i];
        }
        const mu = sum / count;
        let squares = 0;
        for (let n = 0; n < samples; n++) {
          for (let i = 0; i < spatial; i++) squares += (x[(n * channels + channel) * spatial + i] - mu) ** 2;
        }
        const variance = squares / count;
        mean[channel] = mu;
        rstd[channel] = 1 / Math.sqrt(variance + eps);
        state.runningMean[channel] = (1 - momentum) * state.runningMean[channel] + momentum * mu;
        state.runningVar[channel] =
          (1 - momentum) * state.runningVar[channel] + (momentum * squares) / (count - 1);
      } else {
        mean[channel] = state.runningMean[channel];
        rstd[channel] = 1 / Math.sqrt(state.runningVar[channel] + eps);
      }
    }
    const y = new Float64Array(x.length);
    for (let index = 0; index < x.length; index++) {
      const channel = Math.floor(index / spatial) % channels;
      y[index] = (x[index] - mean[channel]) * rstd[channel] * gamma[channel] + beta[channel];
    }
    return { y, mean, rstd };
  },
  /** Gradients given the statistics the forward used (batch in training, running in eval). */
  backward(
    x: Float64Array,
    shape: Shape,
    gamma: Float64Array,
    gradOutput: Float64Array,
    statistics: { mean: Float64Array; rstd: Float64Array },
    training: boolean,
  ): { gradInput: Float64Array; gradGamma: Float64Array; gradBeta: Float64Array } {
    const [samples, channels, height, width] = shape;
    const spatial = height * width;
    const count = samples * spatial;
    const { mean, rstd } = statistics;
    const gradGamma = new Float64Array(channels);
    const gradBeta = new Float64Array(channels);
    const channelOf = (index: number) => Math.floor(index / spatial) % channels;
    for (let index = 0; index < x.length; index++) {
      const channel = channelOf(index);
      gradBeta[channel] += gradOutput[index];
      gradGamma[channel] += gradOutput[index] * (x[index] - mean[channel]) * rstd[channel];
    }
    const gradInput = new Float64Array(x.length);
    for (let index = 0; index < x.length; index++) {
      const channel = channelOf(index);
      const normalized = (x[index] - mean[channel]) * rstd[channel];
      const through = training ? (gradBeta[channel] + normalized * gradGamma[channel]) / count : 0; // eval: the statistics are constants
      gradInput[index] = gamma[channel] * rstd[channel] * (gradOutput[index] - through);
    }
    return { gradInput, gradGamma, gradBeta };
  },
};
