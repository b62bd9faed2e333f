/**
 * The normalisation core that group, batch and layer norm share, in one place: the statistics
 * ("moments": mean, 1/sqrt(var + eps), var, count per statistic, from chunk partials merged with
 * Chan et al.'s formula), the channel-row kernels of group and batch norm (normalise, backward row
 * sums, input gradient, gamma/beta gradients), the fused and naive one-invocation-per-statistic
 * kernels, the checks and the variant choice. Layout:
 * - `index.ts` (this file): the launchers and the checks;
 * - `choose.ts`: which design runs (pure functions of adapter kind and statistics);
 * - `plan.ts`: chunks, row splits and loads per invocation;
 * - one file per design's WGSL: `statistics-cpu-chunked.ts`, `statistics-gpu-workgroup.ts` (+
 *   `statistics-combine.ts`), `cpu-fused.ts`, `naive.ts`, and `channel-rows.ts` shared by all;
 *   `vectors.ts`: the vec4/scalar placeholders.
 */
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import {
  CHANNEL_PARAMETER_GRADIENTS_WGSL,
  normalizeChannelsSource,
  normBackwardSumsSource,
  normInputGradientSource,
} from "./channel-rows.ts";
import type { AccessStyle, ChannelNormVariant, MomentsVariant } from "./choose.ts";
import { FUSED_WORKGROUP_SIZE, fusedNormSource } from "./cpu-fused.ts";
import { NAIVE_NORM_WGSL } from "./naive.ts";
import {
  type ChannelRows,
  loadsPerInvocation,
  type MomentsGrouping,
  planMoments,
  rowGeometry,
  rowSplit,
  type StatisticRows,
} from "./plan.ts";
import { MOMENTS_COMBINE_WGSL } from "./statistics-combine.ts";
import { momentsChunkedSource } from "./statistics-cpu-chunked.ts";
import { momentsWorkgroupSource } from "./statistics-gpu-workgroup.ts";
import { LANE_NAMES, lanesFor } from "./vectors.ts";

export {
  type AccessStyle,
  accessStyleOf,
  CHANNEL_NORM_VARIANTS,
  type ChannelNormVariant,
  chooseMomentsVariant,
  chooseNormVariant,
  FUSED_NORM_MIN_STATISTICS,
  MOMENTS_VARIANTS,
  type MomentsVariant,
} from "./choose.ts";
export {
  type ChannelRows,
  loadsPerInvocation,
  type MomentsGrouping,
  type MomentsPlan,
  planMoments,
  type RowSplit,
  rowGeometry,
  rowSplit,
  type StatisticRows,
} from "./plan.ts";
export { lanesFor } from "./vectors.ts";

/** WGSL of the statistics of a split variant, by pass name, exactly as launched (for `cxr kernels dump`). */
export function momentsPasses(variant: MomentsVariant): Record<string, string> {
  const source = variant === "cpu-chunked" ? momentsChunkedSource : momentsWorkgroupSource;
  return {
    "forward-statistics-vec4": source(4),
    "forward-statistics-scalar": source(1),
    "forward-statistics-combine": MOMENTS_COMBINE_WGSL,
  };
}

/** Passes over each load width: `${prefix}-vec4` and `${prefix}-scalar`. */
function byLanes(prefix: string, source: (lanes: 4 | 1) => string): Record<string, string> {
  return { [`${prefix}-${LANE_NAMES[4]}`]: source(4), [`${prefix}-${LANE_NAMES[1]}`]: source(1) };
}

/**
 * WGSL of group and batch norm's shared kernels for one variant, by pass name, exactly as launched:
 * the forward of the variant, and the backward (the same kernels for every variant). Each op adds its
 * own kernels (coefficients, running buffers) to these in its index.ts.
 */
export function channelNormPasses(variant: ChannelNormVariant): Record<string, string> {
  const forward: Record<string, string> =
    variant === "naive"
      ? { "forward-naive": NAIVE_NORM_WGSL }
      : variant === "cpu-fused"
        ? byLanes("forward-fused", fusedNormSource)
        : { ...momentsPasses(variant), ...byLanes("forward-normalize", normalizeChannelsSource) };
  return {
    ...forward,
    ...byLanes("backward-row-sums", normBackwardSumsSource),
    ...byLanes("backward-input-gradient", normInputGradientSource),
    "backward-parameter-gradients": CHANNEL_PARAMETER_GRADIENTS_WGSL,
  };
}

/** The normalise kernel over channel rows, by load width (batch norm's eval path uses it in every variant). */
export const normalizeChannelsPasses = (prefix: string) => byLanes(prefix, normalizeChannelsSource);

/** A gamma/beta operand must be an f32 vector of C values. */
export function checkChannelParameter(
  op: string,
  name: string,
  parameter: Tensor | null | undefined,
  channels: number,
  x: Tensor,
): void {
  if (!parameter) return;
  if (parameter.dtype !== "f32") {
    throw new OpError(op, `needs f32 ${name}, got ${parameter.dtype}`, { x, [name]: parameter });
  }
  if (parameter.rank !== 1 || parameter.size !== channels) {
    throw new OpError(op, `${name} must have shape [${channels}] (one value per channel)`, {
      x,
      [name]: parameter,
    });
  }
}

export function checkEps(op: string, eps: number): void {
  if (!Number.isFinite(eps) || eps < 0) throw new OpError(op, `eps must be a finite number >= 0, got ${eps}`);
}

export interface NormVariantOptions<Variant extends string> {
  /** Force a variant (tests run every one; benchmarks time the naive one). */
  variant?: Variant;
}

/**
 * Mean and variance over groups of rows of `x` (viewed as [rows, rowLength]). Returns a [statistics, 4]
 * tensor: mean, 1/sqrt(var + eps), biased var, count. Group norm: rows are (n, group) spans;
 * batch norm: rows are (n, channel) spans merged over n; layer norm: rows are rows.
 */
export function momentStatistics(
  op: string,
  x: Tensor,
  rows: number,
  rowLength: number,
  grouping: MomentsGrouping,
  eps: number,
  variant: MomentsVariant,
): Tensor {
  const gpu = x.gpu;
  const plan = planMoments(rows, rowLength, variant);
  const partialCount = rows * plan.chunks;
  const partials = Tensor.empty(gpu, [partialCount, 3]);
  const params = new Params().u32(rows, plan.rowUnits, plan.chunks, plan.chunkUnits);
  const cost = { flops: 4 * rows * rowLength, bytes: 4 * rows * rowLength + 12 * partialCount };
  if (variant === "cpu-chunked") {
    launch(
      gpu,
      { name: `${op}Statistics`, variant, code: momentsChunkedSource(plan.lanes) },
      { bindings: [x, partials], params, workgroups: grid(partialCount, 64), ...cost },
    );
  } else {
    launch(
      gpu,
      { name: `${op}Statistics`, variant, code: momentsWorkgroupSource(plan.lanes) },
      { bindings: [x, partials], params, workgroups: grid(partialCount, 1), ...cost },
    );
  }
  const stats = Tensor.empty(gpu, [grouping.statistics, 4]);
  launch(
    gpu,
    { name: `${op}Statistics`, variant: "combine", code: MOMENTS_COMBINE_WGSL },
    {
      bindings: [partials, stats],
      params: new Params()
        .u32(grouping.statistics, grouping.outer, grouping.outerStride, plan.chunks)
        .f32(eps),
      workgroups: grid(grouping.statistics, 64),
      flops: 10 * partialCount,
      bytes: 12 * partialCount + 16 * grouping.statistics,
    },
  );
  partials.release();
  return stats;
}

/** y = (x - mean) * rstd * gamma + beta per channel row. `gamma`/`beta` may be null (1 and 0). */
export function normalizeChannels(
  op: string,
  variant: string,
  style: AccessStyle,
  x: Tensor,
  stats: Tensor,
  gamma: Tensor | null,
  beta: Tensor | null,
  layout: ChannelRows,
): Tensor {
  const gpu = x.gpu;
  const geometry = rowGeometry(layout);
  const perInvocation = loadsPerInvocation(style, geometry.totalUnits);
  const y = Tensor.empty(gpu, x.shape);
  launch(
    gpu,
    { name: op, variant, code: normalizeChannelsSource(geometry.lanes) },
    {
      bindings: [x, stats, gamma ?? x, beta ?? x, y],
      params: new Params().u32(
        geometry.totalUnits,
        geometry.rowUnits,
        perInvocation,
        layout.channels,
        layout.statDivisor,
        layout.statModulus,
        gamma ? 1 : 0,
        beta ? 1 : 0,
      ),
      workgroups: grid(Math.ceil(geometry.totalUnits / perInvocation), 64),
      flops: 3 * x.size,
      bytes: 8 * x.size,
    },
  );
  return y;
}

/** The naive reference kernel; returns y and the [statistics, 4] stats backward needs. */
export function naiveNormalize(
  op: string,
  x: Tensor,
  gamma: Tensor | null,
  beta: Tensor | null,
  eps: number,
  layout: StatisticRows,
): { y: Tensor; stats: Tensor } {
  const gpu = x.gpu;
  const y = Tensor.empty(gpu, x.shape);
  const stats = Tensor.empty(gpu, [layout.statistics, 4]);
  launch(
    gpu,
    { name: op, variant: "naive", code: NAIVE_NORM_WGSL },
    {
      bindings: [x, gamma ?? x, beta ?? x, y, stats],
      params: new Params()
        .u32(
          layout.statistics,
          layout.rowLength,
          layout.baseStride,
          layout.outer,
          layout.outerStride,
          layout.inner,
          layout.channels,
          gamma ? 1 : 0,
          beta ? 1 : 0,
        )
        .f32(eps),
      workgroups: grid(layout.statistics, 64),
      flops: 7 * x.size,
      bytes: 12 * x.size,
    },
  );
  return { y, stats };
}

/** The fused kernel (see FUSED_NORM_TEMPLATE); returns y and the [statistics, 4] stats. */
export function fusedNormalize(
  op: string,
  x: Tensor,
  gamma: Tensor | null,
  beta: Tensor | null,
  eps: number,
  layout: StatisticRows,
): { y: Tensor; stats: Tensor } {
  const gpu = x.gpu;
  const lanes = lanesFor(layout.rowLength);
  const y = Tensor.empty(gpu, x.shape);
  const stats = Tensor.empty(gpu, [layout.statistics, 4]);
  launch(
    gpu,
    { name: op, variant: "cpu-fused", code: fusedNormSource(lanes) },
    {
      bindings: [x, gamma ?? x, beta ?? x, y, stats],
      params: new Params()
        .u32(
          layout.statistics,
          layout.rowLength / lanes,
          layout.baseStride,
          layout.outer,
          layout.outerStride,
          layout.inner,
          layout.channels,
          gamma ? 1 : 0,
          beta ? 1 : 0,
        )
        .f32(eps),
      workgroups: grid(layout.statistics, FUSED_WORKGROUP_SIZE),
      flops: 7 * x.size,
      bytes: 8 * x.size,
    },
  );
  return { y, stats };
}

/** Per (row, chunk) sums of dy and dy * x̂: a [rows * chunks, 2] tensor. */
export function normBackwardSums(
  op: string,
  style: AccessStyle,
  x: Tensor,
  gradOutput: Tensor,
  stats: Tensor,
  layout: ChannelRows,
): { partials: Tensor; chunks: number } {
  const gpu = x.gpu;
  const geometry = rowGeometry(layout);
  const split = rowSplit(style, geometry.rows, geometry.rowUnits);
  const invocations = geometry.rows * split.chunks;
  const partials = Tensor.empty(gpu, [invocations, 2]);
  launch(
    gpu,
    { name: `${op}Backward`, variant: `row-sums-${style}`, code: normBackwardSumsSource(geometry.lanes) },
    {
      bindings: [x, gradOutput, stats, partials],
      params: new Params().u32(
        geometry.rows,
        geometry.rowUnits,
        split.chunks,
        split.chunkStep,
        split.unitStep,
        split.span,
        layout.statDivisor,
        layout.statModulus,
      ),
      workgroups: grid(invocations, 64),
      flops: 4 * x.size,
      bytes: 8 * x.size + 8 * invocations,
    },
  );
  return { partials, chunks: split.chunks };
}

/** gamma and beta gradients [C] from the backward row sums. */
export function channelParameterGradients(
  op: string,
  partials: Tensor,
  chunks: number,
  layout: ChannelRows,
): { gradGamma: Tensor; gradBeta: Tensor } {
  const gpu = partials.gpu;
  const gradGamma = Tensor.empty(gpu, [layout.channels]);
  const gradBeta = Tensor.empty(gpu, [layout.channels]);
  launch(
    gpu,
    { name: `${op}Backward`, variant: "parameter-gradients", code: CHANNEL_PARAMETER_GRADIENTS_WGSL },
    {
      bindings: [partials, gradGamma, gradBeta],
      params: new Params().u32(layout.channels, layout.samples, chunks),
      workgroups: grid(layout.channels, 64),
      flops: partials.size,
      bytes: 4 * partials.size + 8 * layout.channels,
    },
  );
  return { gradGamma, gradBeta };
}

/** dx = rstd * (gamma * dy - k1 - x̂ * k2) with (k1, k2) = coefficients[statistic]. */
export function normInputGradient(
  op: string,
  style: AccessStyle,
  x: Tensor,
  gradOutput: Tensor,
  stats: Tensor,
  gamma: Tensor | null,
  coefficients: Tensor,
  layout: ChannelRows,
): Tensor {
  const gpu = x.gpu;
  const geometry = rowGeometry(layout);
  const perInvocation = loadsPerInvocation(style, geometry.totalUnits);
  const gradInput = Tensor.empty(gpu, x.shape);
  launch(
    gpu,
    {
      name: `${op}Backward`,
      variant: `input-gradient-${style}`,
      code: normInputGradientSource(geometry.lanes),
    },
    {
      bindings: [x, gradOutput, stats, gamma ?? x, coefficients, gradInput],
      params: new Params().u32(
        geometry.totalUnits,
        geometry.rowUnits,
        perInvocation,
        layout.channels,
        layout.statDivisor,
        layout.statModulus,
        gamma ? 1 : 0,
      ),
      workgroups: grid(Math.ceil(geometry.totalUnits / perInvocation), 64),
      flops: 6 * x.size,
      bytes: 12 * x.size,
    },
  );
  return gradInput;
}
