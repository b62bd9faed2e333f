/**
 * Elementwise add, sub, mul, div with NumPy broadcasting (up to rank 8). Equal shapes take a flat
 * fast path; otherwise each input is read through broadcast strides (stride 0 on expanded axes).
 * Backward reduces each gradient back to its input's shape with `sumToShape`.
 *
 * Layout (ops/softmax/ is the worked example): `choose.ts` (flat or broadcast, from the sizes),
 * `flat.ts` and `broadcast.ts` (one file per variant), `expressions.ts`, `shapes.ts` (broadcasting),
 * `reference.ts`, `cost.ts`. No bench.ts (memory-bound; the hot adds are fused into matmul).
 */

import { needsGrad, record } from "../../runtime/autograd.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, type Shape, sizeOf, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { copyTensor } from "../common/copy.ts";
import { sumToShape } from "../reduce/index.ts";
import { unary } from "../unary/index.ts";
import { BROADCAST } from "./broadcast.ts";
import { type BinaryVariant, chooseBinaryVariant } from "./choose.ts";
import { binaryCost } from "./cost.ts";
import type { BinaryKind } from "./expressions.ts";
import { FLAT } from "./flat.ts";
import { binaryHalf } from "./half.ts";
import { broadcastShapes, broadcastStrides, MAX_BINARY_RANK } from "./shapes.ts";

export { BINARY_VARIANTS, type BinaryVariant, chooseBinaryVariant } from "./choose.ts";
export type { BinaryKind } from "./expressions.ts";
export { type BinaryParams, binaryOpReference, binaryReference } from "./reference.ts";
export { broadcastShapes, broadcastStrides } from "./shapes.ts";

/** The kernels by variant and pass (the launch names), exactly as launched (`cxr kernels dump binary`). */
export const BINARY_KERNELS: Readonly<Record<BinaryVariant, Readonly<Record<BinaryKind, string>>>> = {
  flat: FLAT,
  broadcast: BROADCAST,
};

export interface BinaryOptions {
  /** Force a variant (tests); default `chooseBinaryVariant`. "flat" needs equal shapes. */
  variant?: BinaryVariant;
}

function padded(values: number[]): number[] {
  return [...values, ...new Array(MAX_BINARY_RANK - values.length).fill(0)];
}

function binaryRaw(kind: BinaryKind, a: Tensor, b: Tensor, forced?: BinaryVariant): Tensor {
  for (const [name, tensor] of [
    ["a", a],
    ["b", b],
  ] as const) {
    if (tensor.dtype !== "f32")
      throw new OpError(kind, `needs f32 inputs, ${name} is ${tensor.dtype}`, { a, b });
  }
  if (a.gpu !== b.gpu) throw new OpError(kind, "inputs live on different devices", { a, b });
  const outShape = broadcastShapes(kind, a.shape, b.shape);
  const size = sizeOf(outShape);
  const chosen = chooseBinaryVariant(a.size, b.size, size);
  if (forced === "flat" && chosen !== "flat") {
    throw new OpError(kind, 'variant "flat" needs both inputs of the output\'s shape', { a, b });
  }
  const variant = forced ?? chosen;
  const output = Tensor.empty(a.gpu, outShape);
  const cost = binaryCost(a.size, b.size, size);
  if (variant === "flat") {
    launch(
      a.gpu,
      { name: kind, variant, code: BINARY_KERNELS.flat[kind] },
      { bindings: [a, b, output], params: new Params().u32(size), workgroups: grid(size, 256), ...cost },
    );
  } else {
    const params = new Params()
      .u32(size, outShape.length, 0, 0)
      .u32(...padded(outShape))
      .u32(...padded(broadcastStrides(a.shape, outShape)))
      .u32(...padded(broadcastStrides(b.shape, outShape)));
    launch(
      a.gpu,
      { name: kind, variant, code: BINARY_KERNELS.broadcast[kind] },
      { bindings: [a, b, output], params, workgroups: grid(size, 256), ...cost },
    );
  }
  return output;
}

/** Gradient of one input: reduce the broadcast gradient back to the input's shape. */
function reduced(grad: Tensor, shape: Shape): Tensor {
  if (sizeOf(shape) === grad.size) return grad.reshapeInto(shape);
  const result = sumToShape(grad, shape);
  grad.release();
  return result;
}

/** out = a (op) b, broadcasting. */
export function binary(kind: BinaryKind, a: Tensor, b: Tensor, options: BinaryOptions = {}): Tensor {
  if (a.dtype === "f16" || b.dtype === "f16") return binaryHalf(kind, a, b); // half.ts: inference only
  const output = binaryRaw(kind, a, b, options.variant);
  if (needsGrad(a, b)) {
    record(kind, [a, b], [output], ([gradOutput]) => {
      const gy = gradOutput!;
      const gradA = a.requiresGrad ? binaryGradA(kind, gy, a, b) : null;
      const gradB = b.requiresGrad ? binaryGradB(kind, gy, a, b) : null;
      return [gradA, gradB];
    });
  }
  return output;
}

function binaryGradA(kind: BinaryKind, gy: Tensor, a: Tensor, b: Tensor): Tensor {
  // d(a+b)/da = d(a-b)/da = 1; d(ab)/da = b; d(a/b)/da = 1/b
  if (kind === "add" || kind === "sub") return reduced(copyTensor(gy), a.shape);
  return reduced(binaryRaw(kind === "mul" ? "mul" : "div", gy, b), a.shape);
}

function binaryGradB(kind: BinaryKind, gy: Tensor, a: Tensor, b: Tensor): Tensor {
  if (kind === "add") return reduced(copyTensor(gy), b.shape);
  if (kind === "sub") return reduced(negate(gy), b.shape);
  if (kind === "mul") return reduced(binaryRaw("mul", gy, a), b.shape);
  // d(a/b)/db = -a / b^2 = -(a/b)/b
  const quotient = binaryRaw("div", a, b);
  const over = binaryRaw("div", quotient, b);
  quotient.release();
  const product = binaryRaw("mul", gy, over);
  over.release();
  const result = negate(product);
  product.release();
  return reduced(result, b.shape);
}

/** -x through the scale kernel: no scalar upload, so backward never flushes the batch midway. */
function negate(source: Tensor): Tensor {
  return unary("scale", source, -1);
}

export const add = (a: Tensor, b: Tensor) => binary("add", a, b);
export const sub = (a: Tensor, b: Tensor) => binary("sub", a, b);
export const mul = (a: Tensor, b: Tensor) => binary("mul", a, b);
export const div = (a: Tensor, b: Tensor) => binary("div", a, b);
