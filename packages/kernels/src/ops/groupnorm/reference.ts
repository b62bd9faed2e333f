/**
 * The float64 CPU reference of group norm (PyTorch's F.group_norm: biased variance), forward with
 * its per-(n, group) mean and rstd, and backward for x, gamma and beta. `groupNormOpReference` is the
 * same behind the shared op-reference interface that the table-driven tests use.
 */
import type { Shape } from "../../runtime/tensor.ts";
import type { OpReference } from "../common/reference.ts";

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

/** What a group norm call is: x's shape, the groups and eps. Inputs: [x] or [x, gamma, beta]. */
export interface GroupNormParams {
  shape: Shape;
  groups: number;
  eps?: number;
}

/** `groupNormReference` behind the shared interface: inputs x (and gamma, beta), their gradients. */
export const groupNormOpReference: OpReference<GroupNormParams> = {
  forward: ([x, gamma, beta], { shape, groups, eps }) =>
    groupNormReference.forward(x, shape, groups, gamma ?? null, beta ?? null, eps).y,
  backward: ([x, gamma, beta], gradOutput, { shape, groups, eps }) => {
    const grads = groupNormReference.backward(x, shape, groups, gamma ?? null, gradOutput, eps);
    return beta ? [grads.gradInput, grads.gradGamma, grads.gradBeta] : [grads.gradInput];
  },
};
