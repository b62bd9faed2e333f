/**
 * Softmax along one axis, numerically stable (online max-and-sum, Milakov & Gimelshein 2018), with an
 * optional scale folded in (y = softmax(scale * x)) and an optional per-batch mask over the softmax axis
 * (what attention's key mask needs). The op family's layout, the worked example for every op:
 * - `index.ts` (this file): checks, the launch, the gradient;
 * - `choose.ts`: which variant runs (pure function of adapter kind and layout);
 * - `cpu-rows.ts`, `gpu-workgroup.ts`: one file per variant with its WGSL (shared parts in `common.ts`);
 * - `reference.ts`: the float64 reference; `cost.ts`: FLOPs and bytes; `bench.ts`: benchmark cases;
 * - `layout.ts`: how the axis splits into rows.
 */
import { needsGrad, record } from "../../runtime/autograd.ts";
import { launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { chooseSoftmaxVariant, type SoftmaxVariant } from "./choose.ts";
import type { SoftmaxKernels } from "./common.ts";
import { softmaxBackwardCost, softmaxCost } from "./cost.ts";
import { CPU_ROWS } from "./cpu-rows.ts";
import { GPU_WORKGROUP } from "./gpu-workgroup.ts";
import { softmaxHalf } from "./half.ts";
import { type SoftmaxLayout, softmaxLayout } from "./layout.ts";

export { chooseSoftmaxVariant, SOFTMAX_VARIANTS, type SoftmaxVariant } from "./choose.ts";
export type { SoftmaxKernels } from "./common.ts";
export { softmaxBackwardCost, softmaxCost } from "./cost.ts";
export { SOFTMAX_HALF_WGSL } from "./half.ts";
export { type SoftmaxLayout, softmaxLayout } from "./layout.ts";
export { type SoftmaxParams, softmaxOpReference, softmaxReference } from "./reference.ts";

/** Every variant's kernels, exactly as launched (`cxr kernels dump softmax`). */
export const SOFTMAX_KERNELS: Readonly<Record<SoftmaxVariant, SoftmaxKernels>> = {
  "cpu-rows": CPU_ROWS,
  "gpu-workgroup": GPU_WORKGROUP,
};

export interface SoftmaxOptions {
  /** Multiplies the input before the softmax (attention's 1/sqrt(D)). Default 1. */
  scale?: number;
  /**
   * [x.shape[0], length] of 1 (keep) / 0 (drop) over the softmax axis, which must be the last axis.
   * Masked entries get probability 0; a row with every entry masked is all zeros.
   */
  mask?: Tensor;
  /** Force a variant (tests, benchmarks); default `chooseSoftmaxVariant`. */
  variant?: SoftmaxVariant;
}

function normaliseAxis(op: string, x: Tensor, axis: number): number {
  if (!Number.isInteger(axis) || axis < -x.rank || axis >= x.rank) {
    throw new OpError(op, `axis ${axis} is out of range for a rank-${x.rank} tensor`, { x });
  }
  return axis < 0 ? axis + x.rank : axis;
}

function validateMask(x: Tensor, axis: number, mask: Tensor): void {
  if (mask.dtype !== "f32") throw new OpError("softmax", `needs an f32 mask, got ${mask.dtype}`, { x, mask });
  if (axis !== x.rank - 1) {
    throw new OpError("softmax", "a mask needs the softmax over the last axis", { x, mask });
  }
  if (x.rank < 2 || mask.rank !== 2 || mask.shape[0] !== x.shape[0] || mask.shape[1] !== x.shape[axis]) {
    throw new OpError("softmax", "mask must be [x.shape[0], length of the softmax axis]", { x, mask });
  }
}

function softmaxParams(layout: SoftmaxLayout, scale: number, mask: Tensor | undefined): Params {
  const rowsPerMaskRow = mask ? layout.rows / mask.shape[0] : 1;
  return new Params()
    .u32(layout.rows, layout.length, layout.stride, rowsPerMaskRow)
    .f32(scale)
    .u32(mask ? 1 : 0);
}

function softmaxBackward(
  y: Tensor,
  gradOutput: Tensor,
  layout: SoftmaxLayout,
  scale: number,
  variant: SoftmaxVariant,
): Tensor {
  const gradInput = Tensor.empty(y.gpu, y.shape);
  launch(
    y.gpu,
    { name: "softmaxBackward", variant, code: SOFTMAX_KERNELS[variant].backward },
    {
      bindings: [y, gradOutput, gradInput],
      params: softmaxParams(layout, scale, undefined),
      workgroups: SOFTMAX_KERNELS[variant].workgroups(layout.rows),
      ...softmaxBackwardCost(y.size),
    },
  );
  return gradInput;
}

/**
 * y = softmax(scale * x) along `axis` (default: the last). With `mask`, masked entries are excluded
 * from the normalisation and come out 0; an entirely masked row is all zeros. An f16 x runs the f16
 * variant (half.ts; f32 arithmetic, f16 storage, inference only; the mask stays f32).
 */
export function softmax(x: Tensor, axis = -1, options: SoftmaxOptions = {}): Tensor {
  const half = x.dtype === "f16";
  if (x.dtype !== "f32" && !half)
    throw new OpError("softmax", `needs f32 or f16 input, got ${x.dtype}`, { x });
  const resolvedAxis = normaliseAxis("softmax", x, axis);
  const scale = options.scale ?? 1;
  if (!Number.isFinite(scale)) throw new OpError("softmax", `scale must be finite, got ${scale}`, { x });
  const mask = options.mask;
  if (mask) validateMask(x, resolvedAxis, mask);
  const layout = softmaxLayout(x.shape, resolvedAxis);
  if (half) {
    if (options.variant !== undefined) {
      throw new OpError("softmax", `variant "${options.variant}" is f32 only (f16 runs its own kernel)`, {
        x,
      });
    }
    return softmaxHalf(x, mask, layout, softmaxParams(layout, scale, mask)); // half.ts: inference only
  }
  const variant = options.variant ?? chooseSoftmaxVariant(x.gpu, layout);
  const y = Tensor.empty(x.gpu, x.shape);
  launch(
    x.gpu,
    { name: "softmax", variant, code: SOFTMAX_KERNELS[variant].forward },
    {
      // A mask binding must always be present (pipelines use layout "auto"); x stands in when unused.
      bindings: [x, mask ?? x, y],
      params: softmaxParams(layout, scale, mask),
      workgroups: SOFTMAX_KERNELS[variant].workgroups(layout.rows),
      ...softmaxCost(x.size),
    },
  );
  if (needsGrad(x)) {
    record("softmax", [x], [y], ([gradOutput]) => [softmaxBackward(y, gradOutput!, layout, scale, variant)]);
  }
  return y;
}
