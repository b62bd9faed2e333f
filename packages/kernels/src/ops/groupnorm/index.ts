/**
 * Group normalisation (Wu & He 2018), as Stable Diffusion's UNet uses it: x [N, C, ...spatial] split
 * into `groups` groups of C / groups channels; each (n, group) is normalised by its own mean and
 * biased variance, then scaled and shifted per channel. The op family's layout (as ops/softmax/):
 * - `index.ts` (this file): checks, the launch, the gradient;
 * - `choose.ts`: which variant runs (pure function of adapter kind and shape);
 * - the variants' kernels are the norm core's (../norm-core/, one file per design, shared with batch
 *   norm); `coefficients.ts`: group norm's own backward kernel;
 * - `reference.ts`: float64; `cost.ts`; `bench.ts`.
 *
 * Forward, by adapter: on a GPU the statistics pass splits each (n, group) span (40960 elements at
 * the 64x64x320 UNet level) into chunks reduced by one workgroup each and merged with Chan's parallel
 * variance formula, then a second kernel normalises; on lavapipe, with 32+ groups in the batch, one
 * fused dispatch gives each (n, group) to one invocation (already enough parallel work for its
 * threads and SIMD lanes), and with fewer groups the groups are split into per-invocation chunks.
 * Backward: per (n, channel) sums of dy and dy * x̂, from which one small kernel forms the per-group
 * terms and another the gamma/beta gradients, then an elementwise kernel writes dx.
 */

import { needsGrad, record } from "../../runtime/autograd.ts";
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
  normBackwardSums,
  normInputGradient,
  type StatisticRows,
} from "../norm-core/index.ts";
import { chooseGroupNormVariant, type GroupNormVariant } from "./choose.ts";
import { GROUP_NORM_COEFFICIENTS_WGSL } from "./coefficients.ts";
import { groupNormHalf } from "./half.ts";

export { chooseGroupNormVariant, GROUP_NORM_VARIANTS, type GroupNormVariant } from "./choose.ts";
export { groupNormCost } from "./cost.ts";
export { type GroupNormParams, groupNormOpReference, groupNormReference } from "./reference.ts";

/** A variant's WGSL by pass: the norm core's, and group norm's coefficients kernel. */
function groupNormPasses(variant: GroupNormVariant): Readonly<Record<string, string>> {
  return { ...channelNormPasses(variant), "backward-group-coefficients": GROUP_NORM_COEFFICIENTS_WGSL };
}

/** Every variant's WGSL by pass, exactly as launched (`cxr kernels dump groupNorm`). */
export const GROUP_NORM_KERNELS: Readonly<Record<GroupNormVariant, Readonly<Record<string, string>>>> = {
  "cpu-chunked": groupNormPasses("cpu-chunked"),
  "gpu-workgroup": groupNormPasses("gpu-workgroup"),
  "cpu-fused": groupNormPasses("cpu-fused"),
  naive: groupNormPasses("naive"),
};

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
  if (x.dtype === "f16") return groupNormHalf(x, groups, gamma, beta, eps); // half.ts: inference only
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
