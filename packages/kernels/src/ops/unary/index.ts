/**
 * Pointwise activations: ReLU, SiLU, GELU (exact erf form, as Stable Diffusion's GEGLU), sigmoid,
 * tanh, and scaling by a constant. One WGSL template serves all; each function supplies its forward
 * and derivative expressions.
 *
 * Layout (ops/softmax/ is the worked example): `functions.ts` (the WGSL expressions, shared with
 * matmul's fused epilogue), `elementwise.ts` (the one variant's kernels), `reference.ts`, `cost.ts`.
 * No choose.ts (one variant) and no bench.ts (memory-bound copies; matmul fuses the hot ones).
 */

import { needsGrad, record } from "../../runtime/autograd.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { unaryBackwardCost, unaryCost } from "./cost.ts";
import { ELEMENTWISE } from "./elementwise.ts";
import { unaryHalf } from "./half.ts";
import type { UnaryKind } from "./reference.ts";

export { unaryBackwardCost, unaryCost } from "./cost.ts";
export { UNARY_FUNCTIONS, UNARY_KINDS, type UnaryFunction } from "./functions.ts";
export {
  referenceErf,
  type UnaryKind,
  type UnaryParams,
  unaryOpReference,
  unaryReference,
} from "./reference.ts";

/** The kernels by variant and pass (the launch names), exactly as launched (`cxr kernels dump unary`). */
export const UNARY_KERNELS = {
  default: Object.fromEntries(
    Object.entries(ELEMENTWISE).flatMap(([kind, { forward, backward }]) => [
      [kind, forward],
      [`${kind}Backward`, backward],
    ]),
  ),
} as const;

function unaryBackward(kind: UnaryKind, x: Tensor, gradOutput: Tensor, alpha: number): Tensor {
  const gradInput = Tensor.empty(x.gpu, x.shape);
  launch(
    x.gpu,
    { name: `${kind}Backward`, code: ELEMENTWISE[kind].backward },
    {
      bindings: [x, gradOutput, gradInput],
      params: new Params().u32(x.size).f32(alpha),
      workgroups: grid(x.size, 256),
      ...unaryBackwardCost(kind, x.size),
    },
  );
  return gradInput;
}

/** y = f(x) elementwise. `alpha` is the factor for "scale". */
export function unary(kind: UnaryKind, x: Tensor, alpha = 1): Tensor {
  if (x.dtype === "f16") return unaryHalf(kind, x, alpha); // half.ts: inference only
  if (x.dtype !== "f32") throw new OpError(kind, `needs f32 input, got ${x.dtype}`, { x });
  const y = Tensor.empty(x.gpu, x.shape);
  launch(
    x.gpu,
    { name: kind, code: ELEMENTWISE[kind].forward },
    {
      bindings: [x, y],
      params: new Params().u32(x.size).f32(alpha),
      workgroups: grid(x.size, 256),
      ...unaryCost(kind, x.size),
    },
  );
  if (needsGrad(x)) record(kind, [x], [y], ([gy]) => [unaryBackward(kind, x, gy!, alpha)]);
  return y;
}

export const relu = (x: Tensor) => unary("relu", x);
export const silu = (x: Tensor) => unary("silu", x);
export const gelu = (x: Tensor) => unary("gelu", x);
export const sigmoidOp = (x: Tensor) => unary("sigmoid", x);
export const tanh = (x: Tensor) => unary("tanh", x);
export const scale = (x: Tensor, alpha: number) => unary("scale", x, alpha);
