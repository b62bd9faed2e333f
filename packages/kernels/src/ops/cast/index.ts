/**
 * cast(x, dtype): f32 <-> f16 on the GPU, the entry and exit of a half-precision model (inputs go in
 * as f16, outputs come back to f32). Inference only: not recorded for autograd (an f32 -> f16 cast of
 * a tensor that needs a gradient is refused).
 *
 * Layout: `convert.ts` (the one variant's two kernels), `reference.ts` (float64 rounding).
 */
import { needsGrad } from "../../runtime/autograd.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { type DType, OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { requireHalfAdapter } from "../common/half.ts";
import { CAST_TO_FLOAT_WGSL, CAST_TO_HALF_WGSL } from "./convert.ts";

export { roundAllToHalf, roundToHalf } from "./reference.ts";

/** The kernels by variant and pass (`cxr kernels dump cast`). */
export const CAST_KERNELS = {
  default: { toF16: CAST_TO_HALF_WGSL, toF32: CAST_TO_FLOAT_WGSL },
} as const;

/** A new tensor holding x's values as `dtype` (f32 or f16); the same dtype returns a copy. */
export function cast(x: Tensor, dtype: "f32" | "f16"): Tensor {
  if (dtype !== "f32" && dtype !== "f16") {
    throw new OpError("cast", `can cast to f32 or f16, not ${String(dtype as DType)}`, { x });
  }
  if (x.dtype !== "f32" && x.dtype !== "f16") {
    throw new OpError("cast", `casts f32 and f16 tensors, got ${x.dtype}`, { x });
  }
  if (dtype === "f16" || x.dtype === "f16") requireHalfAdapter("cast", x.gpu, { x });
  if (needsGrad(x)) {
    throw new OpError("cast", "is inference only (no backward): run under noGrad(), or train in f32", { x });
  }
  const output = Tensor.empty(x.gpu, x.shape, dtype);
  if (dtype === x.dtype) {
    return output.copyFrom(x);
  }
  const toHalf = dtype === "f16";
  launch(
    x.gpu,
    { name: toHalf ? "castToF16" : "castToF32", code: toHalf ? CAST_TO_HALF_WGSL : CAST_TO_FLOAT_WGSL },
    {
      bindings: [x, output],
      params: new Params().u32(x.size),
      workgroups: grid(x.size, 256),
      flops: x.size,
      bytes: 6 * x.size,
    },
  );
  return output;
}
