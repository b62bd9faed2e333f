/**
 * softmax's f16 variant (inference only): f16 input and output, an f32 mask, and everything between
 * in f32: each load is widened, the running maximum and sum and every exponential are f32, and each
 * probability is rounded to f16 once when stored. The kernel is the "cpu-rows" forward (one
 * invocation per row, no workgroup memory) with f16 storage (`cpuRowsForward("f16")`), on every
 * adapter: the rows it serves (CLIP's causal attention, the VAE's single-head attention) are short
 * or few enough that the workgroup variant's reduction would not pay for a second copy of the WGSL.
 */
import { grid, launch } from "../../runtime/kernel.ts";
import { Tensor } from "../../runtime/tensor.ts";
import type { Params } from "../../runtime/uniforms.ts";
import { checkHalfOperands } from "../common/half.ts";
import { softmaxCost } from "./cost.ts";
import { cpuRowsForward } from "./cpu-rows.ts";
import type { SoftmaxLayout } from "./layout.ts";

export const SOFTMAX_HALF_WGSL = cpuRowsForward("f16");

/** y = softmax(scale * x) over `layout`'s rows for an f16 x (checked, params built by the caller). */
export function softmaxHalf(
  x: Tensor,
  mask: Tensor | undefined,
  layout: SoftmaxLayout,
  params: Params,
): Tensor {
  const gpu = checkHalfOperands("softmax", { x });
  const y = Tensor.empty(gpu, x.shape, "f16");
  const cost = softmaxCost(x.size);
  launch(
    gpu,
    { name: "softmax", variant: "f16", code: SOFTMAX_HALF_WGSL },
    {
      // Without a mask the mask slot binds x's buffer, never read (useMask 0).
      bindings: [x, mask ?? x, y],
      params,
      workgroups: grid(layout.rows, 64),
      flops: cost.flops,
      bytes: cost.bytes / 2,
    },
  );
  return y;
}
