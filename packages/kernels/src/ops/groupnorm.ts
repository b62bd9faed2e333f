/**
 * Group normalisation (Wu & He 2018), as Stable Diffusion's UNet uses it: x [N, C, ...spatial] split
 * into `groups` groups of C / groups channels; each (n, group) is normalised by its own mean and
 * biased variance, then scaled and shifted per channel.
 *
 * Forward, by adapter: on a GPU the statistics pass splits each (n, group) span (40960 elements at
 * the 64x64x320 UNet level) into chunks reduced by one workgroup each and merged with Chan's parallel
 * variance formula, then a second kernel normalises; on lavapipe, with 32+ groups in the batch, one
 * fused dispatch gives each (n, group) to one invocation (already enough parallel work for its
 * threads and SIMD lanes), and with fewer groups the groups are split into per-invocation chunks.
 * Backward: per (n, channel) sums of dy and dy * x̂, from which one small kernel forms the per-group
 * terms and another the gamma/beta gradients, then an elementwise kernel writes dx.
 *
 * The channel-row kernels here (normalise, backward sums, input gradient, fused, naive) are shared
 * with batch norm, which is the same computation with statistics per channel across the batch.
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
 * "cpu-chunked": statistics split into contiguous chunks per invocation, merged, then a normalise
 * kernel (parallel within each group, no workgroup memory). "gpu-workgroup": the same with each
 * chunk reduced by a 256-invocation workgroup in workgroup memory. "cpu-fused": one invocation per
 * (n, group) streams its group (vec4, one-read statistics) and normalises, in one dispatch.
 * "naive": one invocation per (n, group), scalar loads, three serial passes: the benchmark baseline.
 */
export type GroupNormVariant = MomentsVariant | "cpu-fused" | "naive";

export function chooseGroupNormVariant(gpu: Gpu, shape: Shape, groups: number): GroupNormVariant {
  return chooseNormVariant(gpu, shape[0] * groups);
}

/** Group norm's per-(n, group) terms: k1 = mean of gamma * dy, k2 = mean of gamma * dy * x̂. */
export const GROUP_NORM_COEFFICIENTS_WGSL = `
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read_write> coefficients: array<f32>;
struct Params { statistics: u32, groups: u32, channelsPerGroup: u32, channels: u32, chunks: u32, hasGamma: u32 }
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let statistic = linearIndex(gid, groups, 64u);
  if (statistic >= params.statistics) { return; }
  let n = statistic / params.groups;
  let group = statistic % params.groups;
  var sumGrad = 0.0;
  var sumGradNormalized = 0.0;
  for (var k = 0u; k < params.channelsPerGroup; k++) {
    let channel = group * params.channelsPerGroup + k;
    var weight = 1.0;
    if (params.hasGamma == 1u) { weight = gamma[channel]; }
    let base = (n * params.channels + channel) * params.chunks;
    var channelGrad = 0.0;
    var channelGradNormalized = 0.0;
    for (var j = 0u; j < params.chunks; j++) {
      channelGrad += partials[2u * (base + j)];
      channelGradNormalized += partials[2u * (base + j) + 1u];
    }
    sumGrad += weight * channelGrad;
    sumGradNormalized += weight * channelGradNormalized;
  }
  let count = stats[4u * statistic + 3u];
  coefficients[2u * statistic] = sumGrad / count;
  coefficients[2u * statistic + 1u] = sumGradNormalized / count;
}`;

// ---------------------------------------------------------------------------------------------
// Group norm
// ---------------------------------------------------------------------------------------------

export function groupNormCost(shape: Shape) {
  const size = sizeOf(shape);
  // Statistics: 4 FLOPs per element (two passes); normalise: 3. Reads x twice, writes y once.
  return { flops: 7 * size, bytes: 12 * size };
}

function groupLayout(op: string, x: Tensor, groups: number) {
  if (x.dtype !== "f32") throw new OpError(op, `needs f32 input, got ${x.dtype}`, { x });
  if (x.rank < 2) throw new OpError(op, "needs x of shape [N, C, ...spatial]", { x });
  const [samples, channels] = x.shape;
  if (!Number.isInteger(groups) || groups < 1 || channels % groups !== 0) {
    throw new OpError(op, `groups must be a positive divisor of the ${channels} channels, got ${groups}`, {
      x,
    });
  }
  const spatial = x.size / (samples * channels);
  const channelsPerGroup = channels / groups;
  const rows: ChannelRows = {
    samples,
    channels,
    rowLength: spatial,
    statDivisor: channelsPerGroup,
    statModulus: samples * groups,
  };
  return { samples, channels, spatial, channelsPerGroup, statistics: samples * groups, rows };
}

/**
 * y = (x - mean) / sqrt(var + eps) * gamma + beta, statistics over each (n, group).
 * x: [N, C, ...spatial]; gamma, beta: [C] or null (1 and 0). Differentiable in x, gamma and beta.
 */
export function groupNorm(
  x: Tensor,
  groups: number,
  gamma: Tensor | null = null,
  beta: Tensor | null = null,
  eps = 1e-5,
  options: NormVariantOptions<GroupNormVariant> = {},
): Tensor {
  const op = "groupNorm";
  const layout = groupLayout(op, x, groups);
  checkChannelParameter(op, "gamma", gamma, layout.channels, x);
  checkChannelParameter(op, "beta", beta, layout.channels, x);
  checkEps(op, eps);
  const gpu = x.gpu;
  const variant = options.variant ?? chooseGroupNormVariant(gpu, x.shape, groups);
  const style = accessStyleOf(gpu, variant);
  let y: Tensor;
  let stats: Tensor;
  if (variant === "naive" || variant === "cpu-fused") {
    const statisticRows: StatisticRows = {
      statistics: layout.statistics,
      rowLength: layout.spatial,
      baseStride: layout.channelsPerGroup,
      outer: 1,
      outerStride: 0,
      inner: layout.channelsPerGroup,
      channels: layout.channels,
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
    // Each (n, group) is one contiguous span of C/groups * spatial elements.
    stats = momentStatistics(
      op,
      x,
      layout.statistics,
      layout.channelsPerGroup * layout.spatial,
      { statistics: layout.statistics, outer: 1, outerStride: 0 },
      eps,
      variant,
    );
    y = normalizeChannels(op, variant, style, x, stats, gamma, beta, layout.rows);
  }
  const inputs = [x, gamma, beta].filter((tensor): tensor is Tensor => tensor !== null);
  if (needsGrad(...inputs)) {
    record(
      op,
      inputs,
      [y],
      ([gradOutput]) => {
        const grads = groupNormBackward(x, gradOutput!, stats, gamma, groups, layout, style, {
          input: x.requiresGrad,
          gamma: gamma?.requiresGrad ?? false,
          beta: beta?.requiresGrad ?? false,
        });
        const result: (Tensor | null)[] = [grads.gradInput];
        if (gamma) result.push(grads.gradGamma);
        if (beta) result.push(grads.gradBeta);
        return result;
      },
      [stats],
    );
  } else {
    stats.release();
  }
  return y;
}

function groupNormBackward(
  x: Tensor,
  gradOutput: Tensor,
  stats: Tensor,
  gamma: Tensor | null,
  groups: number,
  layout: ReturnType<typeof groupLayout>,
  style: AccessStyle,
  wanted: { input: boolean; gamma: boolean; beta: boolean },
): { gradInput: Tensor | null; gradGamma: Tensor | null; gradBeta: Tensor | null } {
  const op = "groupNorm";
  const gpu = x.gpu;
  const { partials, chunks } = normBackwardSums(op, style, x, gradOutput, stats, layout.rows);
  let gradInput: Tensor | null = null;
  let gradGamma: Tensor | null = null;
  let gradBeta: Tensor | null = null;
  if (wanted.input) {
    const coefficients = Tensor.empty(gpu, [layout.statistics, 2]);
    launch(
      gpu,
      { name: `${op}Backward`, variant: "group-coefficients", code: GROUP_NORM_COEFFICIENTS_WGSL },
      {
        bindings: [partials, stats, gamma ?? stats, coefficients],
        params: new Params().u32(
          layout.statistics,
          groups,
          layout.channelsPerGroup,
          layout.channels,
          chunks,
          gamma ? 1 : 0,
        ),
        workgroups: grid(layout.statistics, 64),
        flops: 2 * partials.size,
        bytes: 4 * partials.size,
      },
    );
    gradInput = normInputGradient(op, style, x, gradOutput, stats, gamma, coefficients, layout.rows);
    coefficients.release();
  }
  if (wanted.gamma || wanted.beta) {
    const grads = channelParameterGradients(op, partials, chunks, layout.rows);
    gradGamma = grads.gradGamma;
    gradBeta = grads.gradBeta;
    if (!wanted.gamma) gradGamma.release();
    if (!wanted.beta) gradBeta.release();
    if (!wanted.gamma) gradGamma = null;
    if (!wanted.beta) gradBeta = null;
  }
  partials.release();
  return { gradInput, gradGamma, gradBeta };
}

// ---------------------------------------------------------------------------------------------
// Float64 reference
// ---------------------------------------------------------------------------------------------

export const groupNormReference = {
  forward(
    x: Float64Array,
    shape: Shape,
    groups: number,
    gamma: Float64Array | null,
    beta: Float64Array | null,
    eps = 1e-5,
  ): { y: Float64Array; mean: Float64Array; rstd: Float64Array } {
    const [samples, channels] = shape;
    const spatial = x.length / (samples * channels);
    const perGroup = channels / groups;
    const span = perGroup * spatial;
    const y = new Float64Array(x.length);
    const mean = new Float64Array(samples * groups);
    const rstd = new Float64Array(samples * groups);
    for (let statistic = 0; statistic < samples * groups; statistic++) {
      const start = statistic * span;
      let sum = 0;
      for (let i = 0; i < span; i++) sum += x[start + i];
      const mu = sum / span;
      let squares = 0;
      for (let i = 0; i < span; i++) squares += (x[start + i] - mu) ** 2;
      const r = 1 / Math.sqrt(squares / span + eps);
      mean[statistic] = mu;
      rstd[statistic] = r;
      for (let i = 0; i < span; i++) {
        const channel = (statistic % groups) * perGroup + Math.floor(i / spatial);
        y[start + i] = (x[start + i] - mu) * r * (gamma ? gamma[channel] : 1) + (beta ? beta[channel] : 0);
      }
    }
    return { y, mean, rstd };
  },
  backward(
    x: Float64Array,
    shape: Shape,
    groups: number,
    gamma: Float64Array | null,
    gradOutput: Float64Array,
    eps = 1e-5,
  ): { gradInput: Float64Array; gradGamma: Float64Array; gradBeta: Float64Array } {
    const [samples, channels] = shape;
    const spatial = x.length / (samples * channels);
    const perGroup = channels / groups;
    const span = perGroup * spatial;
    const { mean, rstd } = groupNormReference.forward(x, shape, groups, gamma, null, eps);
    const gradInput = new Float64Array(x.length);
    const gradGamma = new Float64Array(channels);
    const gradBeta = new Float64Array(channels);
    for (let statistic = 0; statistic < samples * groups; statistic++) {
      const start = statistic * span;
      const channelOf = (i: number) => (statistic % groups) * perGroup + Math.floor(i / spatial);
      let sumGrad = 0;
      let sumGradNormalized = 0;
      for (let i = 0; i < span; i++) {
        const normalized = (x[start + i] - mean[statistic]) * rstd[statistic];
        const channel = channelOf(i);
        const gradNormalized = gradOutput[start + i] * (gamma ? gamma[channel] : 1);
        sumGrad += gradNormalized;
        sumGradNormalized += gradNormalized * normalized;
        gradGamma[channel] += gradOutput[start + i] * normalized;
        gradBeta[channel] += gradOutput[start + i];
      }
      for (let i = 0; i < span; i++) {
        const normalized = (x[start + i] - mean[statistic]) * rstd[statistic];
        const gradNormalized = gradOutput[start + i] * (gamma ? gamma[channelOf(i)] : 1);
        gradInput[start + i] =
          rstd[statistic] * (gradNormalized - sumGrad / span - (normalized * sumGradNormalized) / span);
      }
    }
    return { gradInput, gradGamma, gradBeta };
  },
};
