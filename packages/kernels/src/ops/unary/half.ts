/**
 * The f16 variant of the pointwise activations (inference only): f16 in and out, the function itself
 * evaluated in f32 (the same expressions as the f32 kernels, functions.ts), one rounding at the store.
 */
import { grid, launch, wgsl } from "../../runtime/kernel.ts";
import { Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { checkHalfOperands } from "../common/half.ts";
import { unaryCost } from "./cost.ts";
import { unaryForwardTemplate } from "./elementwise.ts";
import { UNARY_FUNCTIONS } from "./functions.ts";
import type { UnaryKind } from "./reference.ts";

const HALF_TEMPLATE = unaryForwardTemplate("f16");

/** Each function's f16 forward kernel (`cxr kernels dump unary --variant f16`). */
export const UNARY_HALF_KERNELS: Readonly<Record<UnaryKind, string>> = Object.fromEntries(
  Object.entries(UNARY_FUNCTIONS).map(([kind, f]) => [kind, wgsl(HALF_TEMPLATE, { expression: f.forward })]),
) as Record<UnaryKind, string>;

/** y = f(x) on an f16 tensor. */
export function unaryHalf(kind: UnaryKind, x: Tensor, alpha: number): Tensor {
  const gpu = checkHalfOperands(kind, { x });
  const y = Tensor.empty(gpu, x.shape, "f16");
  const cost = unaryCost(kind, x.size);
  launch(
    gpu,
    { name: kind, variant: "f16", code: UNARY_HALF_KERNELS[kind] },
    {
      bindings: [x, y],
      params: new Params().u32(x.size).f32(alpha),
      workgroups: grid(x.size, 256),
      flops: cost.flops,
      bytes: cost.bytes / 2,
    },
  );
  return y;
}
