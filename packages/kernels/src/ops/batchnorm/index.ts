/**
 * Batch normalisation over NCHW images (Ioffe & Szegedy 2015), with PyTorch's semantics:
 * - training: normalise with the batch's per-channel mean and biased variance, and update the
 *   running buffers in place on the GPU: running = (1 - momentum) * running + momentum * batch,
 *   using the unbiased variance (n / (n - 1)) for running_var;
 * - eval: normalise with the running buffers (an affine map per channel).
 * Backward in training mode goes through the batch statistics; in eval mode it is the affine map's.
 *
 * The op family's layout (as ops/softmax/): `index.ts` (this file: checks, launches, gradient);
 * `choose.ts`; the variants' kernels are the norm core's (../norm-core/, group norm's channel-row
 * kernels with one statistic per channel, merged over N); `running.ts` and `coefficients.ts`: batch
 * norm's own WGSL; `reference.ts`: float64; `cost.ts`; `bench.ts`.
 */
import { needsGrad, record } from "../../runtime/autograd.ts";
import type { Gpu } from "../../runtime/device.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import {
  type AccessStyle,
  accessStyleOf,
  type ChannelRows,
  channelNormPasses,
  channelParameterGradients,
  checkChannelParameter,
  checkEps,
  fusedNormalize,
  momentStatistics,
  type NormVariantOptions,
  naiveNormalize,
  normalizeChannels,
  normalizeChannelsPasses,
  normBackwardSums,
  normInputGradient,
  type StatisticRows,
} from "../norm-core/index.ts";
import { type BatchNormVariant, chooseBatchNormVariant } from "./choose.ts";
import { BATCH_NORM_COEFFICIENTS_WGSL } from "./coefficients.ts";
import { BATCH_NORM_RUNNING_WGSL } from "./running.ts";

export { BATCH_NORM_VARIANTS, type BatchNormVariant, chooseBatchNormVariant } from "./choose.ts";
export { batchNormCost } from "./cost.ts";
export {
  type BatchNormParams,
  type BatchNormReferenceState,
  batchNormOpReference,
  batchNormReference,
  batchNormRunningOpReference,
} from "./reference.ts";

/**
 * A variant's WGSL by pass: the norm core's for training, the running-buffer kernel (training update
 * and eval statistics), eval's normalise (the same kernel in every variant) and the training-mode
 * coefficients.
 */
function batchNormPasses(variant: BatchNormVariant): Readonly<Record<string, string>> {
  return {
    ...channelNormPasses(variant),
    "running-buffers": BATCH_NORM_RUNNING_WGSL,
    ...normalizeChannelsPasses("eval-normalize"),
    "backward-batch-coefficients": BATCH_NORM_COEFFICIENTS_WGSL,
  };
}

/** Every variant's WGSL by pass, exactly as launched (`cxr kernels dump batchNorm2d`). */
export const BATCH_NORM_KERNELS: Readonly<Record<BatchNormVariant, Readonly<Record<string, string>>>> = {
  "cpu-chunked": batchNormPasses("cpu-chunked"),
  "gpu-workgroup": batchNormPasses("gpu-workgroup"),
  "cpu-fused": batchNormPasses("cpu-fused"),
  naive: batchNormPasses("naive"),
};

export interface BatchNormOptions extends NormVariantOptions<BatchNormVariant> {
  /** Batch statistics and running-buffer updates (true) or running statistics (false). */
  training: boolean;
  /** Weight of the new batch in the running averages. Default 0.1 (PyTorch). */
  momentum?: number;
  eps?: number;
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
