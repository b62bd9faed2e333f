/**
 * The f16 variant of add, sub, mul, div (inference only): NumPy broadcasting through per-axis
 * strides as in broadcast.ts (equal shapes are the case where every stride is the natural one),
 * operands widened to f32, one rounding at the store.
 */
import { grid, launch } from "../../runtime/kernel.ts";
import { sizeOf, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { checkHalfOperands } from "../common/half.ts";
import { broadcastKernels } from "./broadcast.ts";
import type { BinaryKind } from "./expressions.ts";
import { broadcastShapes, broadcastStrides, MAX_BINARY_RANK } from "./shapes.ts";

/** The f16 kernels by op (`cxr kernels dump binary --variant f16`). */
export const BINARY_HALF_KERNELS: Readonly<Record<BinaryKind, string>> = broadcastKernels("f16");

const padded = (values: number[]) => [...values, ...new Array(MAX_BINARY_RANK - values.length).fill(0)];

/** out = a (op) b for f16 a and b, broadcasting. */
export function binaryHalf(kind: BinaryKind, a: Tensor, b: Tensor): Tensor {
  const gpu = checkHalfOperands(kind, { a, b });
  const outShape = broadcastShapes(kind, a.shape, b.shape);
  const size = sizeOf(outShape);
  const output = Tensor.empty(gpu, outShape, "f16");
  const params = new Params()
    .u32(size, outShape.length, 0, 0)
    .u32(...padded(outShape))
    .u32(...padded(broadcastStrides(a.shape, outShape)))
    .u32(...padded(broadcastStrides(b.shape, outShape)));
  launch(
    gpu,
    { name: kind, variant: "f16", code: BINARY_HALF_KERNELS[kind] },
    {
      bindings: [a, b, output],
      params,
      workgroups: grid(size, 256),
      flops: size,
      bytes: 2 * (a.size + b.size + size),
    },
  );
  return output;
}
