/**
 * layerNorm's f16 variant (inference only): f16 x, gamma, beta and output, statistics in f32; the
 * kernel is norm-core/half.ts (shared with groupNorm), one workgroup per row.
 */
import { OpError, type Tensor } from "../../runtime/tensor.ts";
import { checkHalfOperands } from "../common/half.ts";
import { NORM_HALF_WGSL, normalizeHalf } from "../norm-core/half.ts";
import { checkEps } from "../norm-core/index.ts";

export const LAYER_NORM_HALF_KERNELS = { forward: NORM_HALF_WGSL } as const;

export function layerNormHalf(x: Tensor, gamma: Tensor | null, beta: Tensor | null, eps: number): Tensor {
  const op = "layerNorm";
  checkHalfOperands(op, { x, gamma, beta });
  if (x.rank < 1) throw new OpError(op, "needs x of shape [..., D]", { x });
  const width = x.shape[x.rank - 1];
  for (const [name, parameter] of [
    ["gamma", gamma],
    ["beta", beta],
  ] as const) {
    if (parameter && (parameter.rank !== 1 || parameter.size !== width)) {
      throw new OpError(op, `${name} must have shape [${width}] (the last axis of x)`, {
        x,
        [name]: parameter,
      });
    }
  }
  checkEps(op, eps);
  return normalizeHalf(op, x, gamma, beta, eps, {
    spans: x.size / width,
    spanLength: width,
    spatial: 1,
    spanGroups: 1,
    channelsPerSpan: width,
  });
}
