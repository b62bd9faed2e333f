/**
 * groupNorm's f16 variant (inference only): f16 x, gamma, beta and output, statistics in f32; the
 * kernel is norm-core/half.ts (shared with layerNorm), one workgroup per (n, group).
 */
import { OpError, type Tensor } from "../../runtime/tensor.ts";
import { checkHalfOperands } from "../common/half.ts";
import { NORM_HALF_WGSL, normalizeHalf } from "../norm-core/half.ts";
import { checkEps } from "../norm-core/index.ts";

export const GROUP_NORM_HALF_KERNELS = { forward: NORM_HALF_WGSL } as const;

export function groupNormHalf(
  x: Tensor,
  groups: number,
  gamma: Tensor | null,
  beta: Tensor | null,
  eps: number,
): Tensor {
  const op = "groupNorm";
  checkHalfOperands(op, { x, gamma, beta });
  if (x.rank < 2) throw new OpError(op, "needs x of shape [N, C, ...spatial]", { x });
  const [samples, channels] = x.shape;
  if (!Number.isInteger(groups) || groups < 1 || channels % groups !== 0) {
    throw new OpError(op, `groups must be a positive divisor of the ${channels} channels, got ${groups}`, {
      x,
    });
  }
  for (const [name, parameter] of [
    ["gamma", gamma],
    ["beta", beta],
  ] as const) {
    if (parameter && (parameter.rank !== 1 || parameter.size !== channels)) {
      throw new OpError(op, `${name} must have shape [${channels}] (one value per channel)`, {
        x,
        [name]: parameter,
      });
    }
  }
  checkEps(op, eps);
  const spatial = x.size / (samples * channels);
  const channelsPerGroup = channels / groups;
  return normalizeHalf(op, x, gamma, beta, eps, {
    spans: samples * groups,
    spanLength: channelsPerGroup * spatial,
    spatial,
    spanGroups: groups,
    channelsPerSpan: channelsPerGroup,
  });
}
